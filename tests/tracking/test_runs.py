"""MLflow tracking against a real SQLite store in a temp folder: layout, round trip, failures."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness import tracking
from harness.backtest import frames
from harness.backtest.result import Backtest
from harness.config import parse_config
from harness.errors import HarnessError
from strategies.volatility_forecast import VolatilityForecast
from tests.conftest import ROOT

EXPERIMENT = "spx-test"
LABELS = ("constant", "multistep", "wsd")
METRIC_NAMES = ("rmse", "mae", "r2_oos", "mse")
PAIR = ("constant", "wsd")
# each label's spec in the config: every parameter at its default, so the label is the bare name
SPECS = {"constant": "constant", "multistep": {"name": "multistep", "milestones": [0.5, 0.75]},
         "wsd": {"name": "wsd", "warmup": 0.05}}
TAGS = {"strategy": "volatility_forecast", "data_hash": "d" * 16, "harness_version": "0.1.0", "git_commit": "abc123"}


class ManyParams(VolatilityForecast):
    """``volatility_forecast`` with 130 more parameters and a long note: a config of > 100 params
    (several param batches), one value over MLflow's 500-character limit."""

    params = {**VolatilityForecast.params, **{f"p{i:03d}": 0 for i in range(130)}, "note": ""}


def make_payload(labels=LABELS, seeds=2, windows=5, rows=4, metric_names=METRIC_NAMES, seed=0,
                 config_hash="c0ffee") -> Backtest:
    """A synthetic backtest in the engine's tidy layout (values random, shapes real)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=windows * rows)
    target = rng.normal(size=dates.size)
    baseline = target + rng.normal(scale=0.5, size=dates.size)
    position = np.arange(dates.size)
    predictions = pd.concat(
        [
            pd.DataFrame({
                "date": dates, "window": position // rows, "schedule": label, "seed": s,
                "prediction": target + rng.normal(scale=0.3, size=dates.size),
                "target": target, "baseline": baseline,
            })
            for label in labels for s in range(seeds)
        ],
        ignore_index=True,
    )
    grid = pd.MultiIndex.from_product(
        [range(windows), labels, range(seeds), metric_names], names=["window", "schedule", "seed", "metric"]
    )
    metrics = grid.to_frame(index=False).assign(value=rng.normal(size=len(grid)))
    mean_grid = pd.MultiIndex.from_product(
        [range(windows), labels, metric_names], names=["window", "schedule", "metric"]
    )
    seed_mean = mean_grid.to_frame(index=False).assign(value=rng.normal(size=len(mean_grid)))
    aggregates = pd.DataFrame(
        [(label, name, value) for label in labels
         for name, value in (("pooled_rmse", rng.random()), ("window_std_rmse", rng.random()), ("churn", np.nan))],
        columns=["schedule", "metric", "value"],
    )
    train_grid = pd.MultiIndex.from_product(
        [range(windows), labels, range(seeds)], names=["window", "schedule", "seed"]
    )
    training = train_grid.to_frame(index=False).assign(
        diverged=rng.random(len(train_grid)) < 0.2, end_oscillation=rng.random(len(train_grid)),
        train_loss=rng.random(len(train_grid)), val_loss=rng.random(len(train_grid)),
        best_epoch=rng.integers(1, 40, len(train_grid)),
    )
    curve_grid = pd.MultiIndex.from_product(
        [range(windows), labels, range(seeds), range(3)], names=["window", "schedule", "seed", "epoch"]
    )
    curves = curve_grid.to_frame(index=False).assign(val_loss=rng.random(len(curve_grid)))
    curves.loc[curves.index[::7], "val_loss"] = np.nan  # a member that stopped early
    churn_grid = pd.MultiIndex.from_product(
        [range(1, windows), labels, range(seeds), range(rows)], names=["window", "schedule", "seed", "row"]
    )
    churn = churn_grid.to_frame(index=False).drop(columns="row").assign(
        prev_prediction=rng.normal(size=len(churn_grid)), prediction=rng.normal(size=len(churn_grid)))
    config = parse_config({
        "experiment": EXPERIMENT,
        "model": {"hidden": [64, 64], "activation": "relu"},
        "training": {"lr": 0.001, "epochs": 40, "seeds": seeds, "boundary": "fresh"},
        "schedules": [SPECS[label] for label in labels],
        "selection": {"metric": "rmse", "alpha": 0.1},
        "strategy": {"name": "tests.tracking.test_runs:ManyParams",
                     "params": {**{f"p{i:03d}": i for i in range(130)}, "note": "x" * 700}},
    })
    assert config.schedule_labels() == list(labels)
    return Backtest(
        config=config, data_hash=TAGS["data_hash"], predictions=predictions, training=training, curves=curves,
        churn=churn, lr_curves=frames.lr_curves({label: 1e-3 * np.linspace(1.0, 0.1 * (k + 1), 50)
                                                for k, label in enumerate(labels)}),
        metrics=metrics, seed_mean_metrics=seed_mean, aggregates=aggregates,
        tags={**TAGS, "config_hash": config_hash},
    )


def start(store, experiment, run_name, backtest: Backtest) -> str:
    """The backtest's parent run opened, as ``harness.backtest.resume.begin`` opens it."""
    return tracking.start_backtest(store, experiment, run_name=run_name,
                                   config=backtest.config.model_dump(mode="json"), tags=backtest.tags)


def log_backtest(store, experiment, run_name, backtest: Backtest, *, draw=False, parent_files=None,
                 schedule_files=None):
    """A backtest logged as ``harness.backtest.run_and_log`` logs it: the parent opened, the figures
    drawn (``draw``; else only the given files), the schedules logged; the parent ended FAILED on an error."""
    parent = start(store, experiment, run_name, backtest)
    try:
        with tempfile.TemporaryDirectory() as folder:
            if draw:
                from harness.figures import backtest_figures

                parent_files, schedule_files = backtest_figures(backtest, folder)
            return tracking.finish_backtest(store, parent, backtest, tags=backtest.tags, parent_files=parent_files,
                                            schedule_files=schedule_files)
    except BaseException:
        tracking.end_run(store, parent, "FAILED")
        raise


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (a new SQLite schema costs a second); tests use own experiments."""
    return tracking.resolve_store(tmp_path_factory.mktemp("store") / "mlruns")


@pytest.fixture
def experiment(request):
    return request.node.name


@pytest.fixture(scope="module")
def logged(store):
    """One backtest logged once and read by several tests (they must not write to it)."""
    payload = make_payload()
    log = log_backtest(store, EXPERIMENT, "backtest", payload, draw=True)
    return store, payload, log


@contextmanager
def global_tracking_uri(uri, monkeypatch):
    """mlflow's fluent API reads a process-wide URI; set it for a block and put it back."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def runs_of(store, monkeypatch, experiment=EXPERIMENT):
    with global_tracking_uri(store.tracking_uri, monkeypatch):
        return mlflow.search_runs(experiment_names=[experiment])


# --- store -------------------------------------------------------------------------------------


def test_a_folder_means_sqlite_inside_it_with_artifacts_beside(tmp_path):
    store = tracking.resolve_store(tmp_path / "runs")
    folder = (tmp_path / "runs").resolve()
    assert store.tracking_uri == f"sqlite:///{folder.as_posix()}/mlflow.db"
    assert store.folder == folder and store.artifact_root == folder / "artifacts"
    assert folder.is_dir()


def test_store_precedence_argument_then_environment_then_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_store(None).folder == (tmp_path / "mlruns").resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "from_env"))
    assert tracking.resolve_store(None).folder == (tmp_path / "from_env").resolve()
    assert tracking.resolve_store(tmp_path / "explicit").folder == (tmp_path / "explicit").resolve()


@pytest.mark.parametrize(
    ("uri", "artifacts"),
    [
        ("http://localhost:5000", None),
        ("sqlite:///db/store.db", "db/artifacts"),
        ("sqlite:///:memory:", None),
    ],
)
def test_mlflow_uris_are_used_as_given(tmp_path, monkeypatch, uri, artifacts):
    monkeypatch.chdir(tmp_path)
    store = tracking.resolve_store(uri)
    assert store.tracking_uri == uri and store.folder is None
    expected = None if artifacts is None else (tmp_path / artifacts).resolve()
    assert store.artifact_root == expected


def test_unwritable_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(HarnessError) as info:
        tracking.resolve_store(blocker / "mlruns")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"tracking folder {blocker / 'mlruns'} is not writable: ")
    assert message.endswith("choose another with tracking.uri or --tracking-uri")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HarnessError, match="is not writable"):
            tracking.resolve_store(folder)
    finally:
        folder.chmod(0o700)


def test_a_store_mlflow_refuses_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tracking.resolve_store(f"file:{tmp_path / 'old_file_store'}")
    with pytest.raises(HarnessError) as info:
        tracking.ensure_experiment(store, EXPERIMENT)
    message = str(info.value)
    assert message.startswith(f"cannot open tracking store file:{tmp_path / 'old_file_store'}: ")
    assert "\n" not in message and message.endswith("fix or change it with tracking.uri or --tracking-uri")


def test_ensure_experiment_is_idempotent_and_places_artifacts_in_the_folder(store):
    first = tracking.ensure_experiment(store, "exp one")
    assert tracking.ensure_experiment(store, "exp one") == first
    other = tracking.ensure_experiment(store, "exp/two")
    assert other != first
    client = MlflowClient(tracking_uri=store.tracking_uri)
    location = client.get_experiment(first).artifact_location
    assert location == (store.artifact_root / "exp-one").as_uri()
    assert client.get_experiment(other).artifact_location == (store.artifact_root / "exp-two").as_uri()


def test_a_deleted_experiment_is_a_clear_error(store):
    experiment_id = tracking.ensure_experiment(store, "gone")
    MlflowClient(tracking_uri=store.tracking_uri).delete_experiment(experiment_id)
    with pytest.raises(HarnessError, match="experiment 'gone' is deleted.*restore"):
        tracking.ensure_experiment(store, "gone")


# --- the layout --------------------------------------------------------------------------------


def test_one_parent_and_one_nested_finished_run_per_schedule(logged, monkeypatch):
    store, payload, log = logged
    runs = runs_of(store, monkeypatch)
    assert len(runs) == 1 + len(LABELS)
    assert set(runs["status"]) == {"FINISHED"}
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert list(parents["run_id"]) == [log.parent_run_id]
    assert set(children["tags.mlflow.parentRunId"]) == {log.parent_run_id}
    assert dict(zip(children["tags.schedule"], children["run_id"], strict=True)) == log.child_run_ids
    assert set(children["tags.mlflow.runName"]) == set(LABELS)
    for key, value in payload.tags.items():
        assert set(runs[f"tags.{key}"]) == {value}
    assert list(parents["tags.kind"]) == ["backtest"] and set(children["tags.kind"]) == {"schedule"}
    assert children.sort_values("tags.schedule_index")["tags.schedule"].tolist() == list(LABELS)
    assert (runs["end_time"] >= runs["start_time"]).all()
    client = MlflowClient(tracking_uri=store.tracking_uri)
    assert {a.path for a in client.list_artifacts(log.parent_run_id)} == {
        "config.yaml", "summary.csv", "comparison.png", "errors.png"}
    for run_id in log.child_run_ids.values():
        assert {a.path for a in client.list_artifacts(run_id)} == {
            "lr_curve.npy", "lr_curve.png", "window_metrics.parquet", "window_metrics.png", "predictions.parquet",
            "training.parquet", "curves.parquet", "churn.parquet"}


def test_logging_leaves_the_global_tracking_uri_alone(store, experiment, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    log_backtest(store, experiment, "b", make_payload(labels=("constant",)))
    assert mlflow.get_tracking_uri() == before
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_per_window_metrics_are_step_histories_and_aggregates_single_values(logged):
    store, payload, log = logged
    client = MlflowClient(tracking_uri=store.tracking_uri)
    seed_mean = payload.seed_mean_metrics
    for label, run_id in log.child_run_ids.items():
        for name in METRIC_NAMES:
            expected = seed_mean[(seed_mean["schedule"] == label) & (seed_mean["metric"] == name)].sort_values("window")
            history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
            assert [m.step for m in history] == expected["window"].tolist()
            np.testing.assert_array_equal([m.value for m in history], expected["value"].to_numpy())
        logged_metrics = client.get_run(run_id).data.metrics
        aggregates = payload.aggregates[payload.aggregates["schedule"] == label]
        for name, value in zip(aggregates["metric"], aggregates["value"], strict=True):
            np.testing.assert_equal(logged_metrics[name], value)  # NaN round-trips as NaN
            assert len(client.get_metric_history(run_id, name)) == 1
        seed_keys = [key for key in logged_metrics if "seed" in key]
        assert seed_keys == []  # per-seed metrics live in window_metrics.parquet, not the charts


def test_config_is_flattened_to_dotted_params_in_batches(logged):
    store, payload, log = logged
    client = MlflowClient(tracking_uri=store.tracking_uri)
    params = client.get_run(log.parent_run_id).data.params
    assert params["training.lr"] == "0.001"
    assert params["model.hidden"] == "[64, 64]"
    assert params["schedules.0"] == "constant"
    assert params["schedules.1.name"] == "multistep" and params["schedules.1.milestones"] == "[0.5, 0.75]"
    assert params["schedules.2.name"] == "wsd" and params["schedules.2.warmup"] == "0.05"
    assert params["strategy.params.p129"] == "129"
    note = params["strategy.params.note"]
    assert len(note) == 500 and note.endswith("...")
    config = payload.config.model_dump(mode="json")
    leaves = {section: _leaves(value) for section, value in config.items()}
    assert leaves["schedules"] == 5 and leaves["strategy"] == 1 + 130 + 1
    assert len(params) == sum(leaves.values()) > 100  # needed two batches
    child = client.get_run(log.child_run_ids["multistep"]).data.params
    assert child["schedule.name"] == "multistep"
    assert child["schedule.milestones"] == "[0.5, 0.75]"
    constant = client.get_run(log.child_run_ids["constant"]).data.params
    assert {key: value for key, value in constant.items() if key.startswith("schedule.")} == {
        "schedule.name": "constant", "schedule.warmup": "0"}  # constant has no parameter of its own
    assert child["training.lr"] == "0.001"


def _leaves(value) -> int:
    """How many params a config value flattens to: a mapping or a list of mappings by leaf, else one."""
    if isinstance(value, dict) and value:
        return sum(_leaves(item) for item in value.values())
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        return sum(_leaves(item) for item in value)
    return 1


def test_the_drawn_figures_are_real_pngs(logged, tmp_path):
    import matplotlib.image

    store, _, log = logged
    client = MlflowClient(tracking_uri=store.tracking_uri)
    for name in ("comparison.png", "errors.png"):
        image = matplotlib.image.imread(client.download_artifacts(log.parent_run_id, name, str(tmp_path)))
        assert image.shape[:2] == (750, 800) and image[..., :3].std() > 0.01
    for run_id in log.child_run_ids.values():
        for name in ("lr_curve.png", "window_metrics.png"):
            image = matplotlib.image.imread(client.download_artifacts(run_id, name, str(tmp_path / run_id)))
            assert image.shape[:2] == (450, 800) and image[..., :3].std() > 0.01


def test_artifacts_are_logged_and_predictions_round_trip(logged, tmp_path):
    store, payload, log = logged
    client = MlflowClient(tracking_uri=store.tracking_uri)
    parent_files = {a.path for a in client.list_artifacts(log.parent_run_id)}
    assert {"config.yaml", "summary.csv", "comparison.png", "errors.png"} <= parent_files
    config_file = Path(client.download_artifacts(log.parent_run_id, "config.yaml", str(tmp_path)))
    config = yaml.safe_load(config_file.read_text())
    assert config == payload.config.model_dump(mode="json")
    summary = pd.read_csv(client.download_artifacts(log.parent_run_id, "summary.csv", str(tmp_path)))
    assert sorted(summary["schedule"]) == sorted(LABELS)
    pd.testing.assert_frame_equal(summary, payload.summary(), check_dtype=False)
    for label, run_id in log.child_run_ids.items():
        files = {a.path for a in client.list_artifacts(run_id)}
        assert {"lr_curve.png", "window_metrics.png", "predictions.parquet", "window_metrics.parquet",
                "training.parquet", "curves.parquet", "churn.parquet", "lr_curve.npy"} <= files
        local = client.download_artifacts(run_id, "predictions.parquet", str(tmp_path / run_id))
        got = pd.read_parquet(local)
        expected = payload.predictions
        expected = expected[expected["schedule"] == label].drop(columns="schedule").reset_index(drop=True)
        assert list(got.columns[:5]) == ["date", "window", "seed", "prediction", "target"]
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
        artifact_folder = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        assert artifact_folder.is_relative_to(store.artifact_root)  # artifacts live in <folder>/artifacts
        assert (artifact_folder / "predictions.parquet").is_file()


def test_the_callers_files_go_to_the_runs_they_name_byte_for_byte(store, experiment, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    picture = tmp_path / "any.bin"
    picture.write_bytes(bytes(range(256)))
    log = log_backtest(store, experiment, "b", make_payload(labels=("constant", "wsd")),
                       parent_files={"selection/report.md": report, "notes": tmp_path / "notes"},
                       schedule_files={"wsd": {"figures/lr.png": picture}})
    client = MlflowClient(tracking_uri=store.tracking_uri)
    assert [a.path for a in client.list_artifacts(log.parent_run_id, "selection")] == ["selection/report.md"]
    assert [a.path for a in client.list_artifacts(log.parent_run_id, "notes")] == ["notes/a.txt"]
    assert not {"comparison.png", "errors.png"} & {a.path for a in client.list_artifacts(log.parent_run_id)}
    assert [a.path for a in client.list_artifacts(log.child_run_ids["wsd"], "figures")] == ["figures/lr.png"]
    assert "figures" not in {a.path for a in client.list_artifacts(log.child_run_ids["constant"])}
    back = client.download_artifacts(log.child_run_ids["wsd"], "figures/lr.png", str(tmp_path / "back"))
    assert Path(back).read_bytes() == picture.read_bytes()


def test_bad_files_are_refused_before_any_schedule_run_exists(store, experiment, tmp_path):
    file, missing = tmp_path / "file.png", tmp_path / "missing.png"
    file.write_bytes(b"png")
    cases = [
        ({"parent_files": {"config.yaml": file}}, "reserved for a table"),
        ({"parent_files": {"../up.png": file}}, "not a relative path"),
        ({"parent_files": {"gone.png": missing}}, "does not exist"),
        ({"schedule_files": {"constant": {"predictions.parquet": file}}}, "reserved for a table"),
        ({"schedule_files": {"cosin": {"x.png": file}}}, "schedules ['cosin'] missing from schedule_params"),
    ]
    for files, message in cases:
        with pytest.raises(ValueError) as info:
            log_backtest(store, experiment, "bad", make_payload(labels=("constant",)), **files)
        assert message in str(info.value)
    runs = tracking.find_runs(store, experiment)  # only the parents, ended FAILED by the caller
    assert len(runs) == len(cases) and set(runs["tags.kind"]) == {"backtest"} and set(runs["status"]) == {"FAILED"}


def test_load_backtest_returns_what_was_logged(logged):
    store, payload, log = logged
    for key in (EXPERIMENT, log.parent_run_id):
        back = tracking.load_backtest(store, key)
        assert isinstance(back, Backtest)
        assert back.run_id == log.parent_run_id
        children = tracking.find_runs(store, EXPERIMENT, {MLFLOW_PARENT_RUN_ID: back.run_id})
        assert dict(zip(children["tags.schedule"], children["run_id"], strict=True)) == log.child_run_ids
        assert back.config == payload.config and back.labels == list(LABELS)
        assert back.tags == payload.tags and back.data_hash == payload.data_hash
        assert back.schedule_params() == payload.schedule_params()
        for name, keys in [
            ("metrics", ["window", "schedule", "seed", "metric"]),
            ("seed_mean_metrics", ["window", "schedule", "metric"]),
            ("aggregates", ["schedule", "metric"]),
            ("predictions", ["schedule", "seed", "date"]),
            ("training", ["window", "schedule", "seed"]),
            ("curves", ["window", "schedule", "seed", "epoch"]),
            ("churn", ["window", "schedule", "seed"]),
            ("lr_curves", ["schedule", "step"]),
        ]:
            expected = getattr(payload, name).sort_values(keys, kind="stable").reset_index(drop=True)
            got = getattr(back, name).sort_values(keys, kind="stable").reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, obj=name)
        for label in LABELS:
            np.testing.assert_array_equal(back.lr_curve(label), payload.lr_curve(label))
        pd.testing.assert_frame_equal(back.summary(), payload.summary())


def test_load_backtest_takes_the_latest_finished_backtest(store, experiment):
    log_backtest(store, experiment, "old", make_payload(labels=("constant",)))
    newer = log_backtest(store, experiment, "new", make_payload(labels=("wsd",)))
    assert tracking.load_backtest(store, experiment).run_id == newer.parent_run_id
    with pytest.raises(HarnessError, match="no experiment or backtest run 'nope'"):
        tracking.load_backtest(store, "nope")


def test_a_child_over_1000_metrics_is_split_into_batches(store, experiment):
    payload = make_payload(labels=("multistep",), seeds=1, windows=130, rows=1,
                           metric_names=tuple(f"m{i}" for i in range(8)))
    log = log_backtest(store, experiment, "big", payload)
    client = MlflowClient(tracking_uri=store.tracking_uri)
    run_id = log.child_run_ids["multistep"]
    # 1040 per-window values and > 100 params in one run: the store refuses more than 1000
    # metrics or 100 params in one request, so this passes only if the payload was split
    assert len(client.get_run(run_id).data.params) > 100
    for name in ("m0", "m7"):
        assert sorted(m.step for m in client.get_metric_history(run_id, name)) == list(range(130))


# --- finding, failures, stale runs, concurrency -------------------------------------------------


@pytest.mark.slow
def test_find_runs_matches_mlflow_search_runs_and_filters_by_tag(store, experiment, monkeypatch):
    log_backtest(store, experiment, "a", make_payload(labels=("constant",), config_hash="aaa"))
    log_backtest(store, experiment, "b", make_payload(labels=LABELS, config_hash="bbb"))
    found = tracking.find_runs(store, experiment)
    reference = runs_of(store, monkeypatch, experiment)
    assert set(found["run_id"]) == set(reference["run_id"])
    assert set(found.columns) == set(reference.columns)
    assert len(tracking.find_runs(store, experiment, {"config_hash": "aaa"})) == 2
    assert len(tracking.find_runs(store, experiment, {"config_hash": "bbb", "schedule": "wsd"})) == 1
    assert tracking.find_runs(store, experiment, {"config_hash": "it's none"}).empty
    assert tracking.find_runs(store, "no such experiment").empty


def test_a_failure_mid_logging_ends_runs_failed_not_running(store, experiment, monkeypatch):
    tracking.ensure_experiment(store, experiment)
    # the experiment's artifact folder becomes a file: the database accepts params and metrics,
    # the first artifact copy fails, as a full or vanished disk would
    blocked = store.artifact_root / experiment
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("in the way")
    with pytest.raises(OSError):
        log_backtest(store, experiment, "doomed", make_payload())
    runs = runs_of(store, monkeypatch, experiment)
    assert len(runs) == 2  # the parent and the first schedule's run, then it stopped
    assert set(runs["status"]) == {"FAILED"}
    assert runs["params.training.lr"].notna().all()  # it did fail mid-way, after logging began


def test_a_bad_payload_is_refused_before_any_schedule_run_exists(store, experiment):
    payload = make_payload()
    parent = start(store, experiment, "bad", payload)
    payload.lr_curves = payload.lr_curves[payload.lr_curves["schedule"] != "wsd"]
    with pytest.raises(ValueError, match="lr_curves lacks schedules"):
        tracking.finish_backtest(store, parent, payload, tags=payload.tags)
    clash = make_payload()
    clash.aggregates.loc[0, "metric"] = "rmse"
    with pytest.raises(ValueError, match="would overwrite the per-window history"):
        tracking.finish_backtest(store, parent, clash, tags=clash.tags)
    runs = tracking.find_runs(store, experiment)
    assert list(runs["run_id"]) == [parent] and list(runs["status"]) == ["RUNNING"]  # the caller ends it


def test_a_resumed_parent_is_reopened_and_only_its_partial_children_trashed(store, experiment):
    payload = make_payload(labels=("constant",), config_hash="mine")
    parent = start(store, experiment, "mine", payload)
    tracking.end_run(store, parent, "KILLED")
    client = MlflowClient(tracking_uri=store.tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id
    # what a kill during the final logging leaves behind: a RUNNING schedule run under the parent
    partial = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent, "kind": "schedule"}).info.run_id
    other = log_backtest(store, experiment, "theirs", make_payload(labels=("wsd",), config_hash="theirs"))
    tracking.reopen_run(store, parent, {"process.pid": "123"})
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["process.pid"] == "123"
    assert run.data.tags["config_hash"] == "mine"
    assert tracking.delete_child_runs(store, parent) == [partial]
    assert client.get_run(partial).info.status == "KILLED"
    assert client.get_run(partial).info.lifecycle_stage == "deleted"
    assert {client.get_run(r).info.lifecycle_stage for r in other.child_run_ids.values()} == {"active"}
    done = tracking.finish_backtest(store, parent, payload, tags=payload.tags)
    assert client.get_run(parent).info.status == "FINISHED"
    mine = tracking.find_runs(store, experiment, {"config_hash": "mine"})
    assert set(mine["run_id"]) == {parent, *done.child_run_ids.values()} and set(mine["status"]) == {"FINISHED"}


@pytest.mark.slow
def test_two_stores_in_one_process_do_not_mix(store, experiment, tmp_path):
    other = tracking.resolve_store(tmp_path / "other")
    a = log_backtest(store, experiment, "a", make_payload(labels=("constant",)))
    b = log_backtest(other, experiment, "b", make_payload(labels=("wsd", "multistep")))
    assert set(tracking.find_runs(store, experiment)["run_id"]) == {a.parent_run_id, *a.child_run_ids.values()}
    assert set(tracking.find_runs(other, experiment)["run_id"]) == {b.parent_run_id, *b.child_run_ids.values()}


def _log_in_child_process(folder, name, barrier, results):
    try:
        store = tracking.resolve_store(folder)
        barrier.wait(timeout=60)  # both open the new store at the same moment
        tracking.ensure_experiment(store, EXPERIMENT)
        log = log_backtest(store, EXPERIMENT, name, make_payload(labels=PAIR, config_hash=name))
        results.put((name, "ok", log.parent_run_id))
    except BaseException as exc:  # report, don't hang the parent
        results.put((name, "error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_two_processes_create_and_log_into_one_new_store(tmp_path, monkeypatch):
    folder = tmp_path / "shared"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_log_in_child_process, args=(folder, name, barrier, results))
               for name in ("first", "second")]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(outcome[:2] for outcome in outcomes) == [("first", "ok"), ("second", "ok")], outcomes
    runs = runs_of(tracking.resolve_store(folder), monkeypatch)
    assert len(runs) == 2 * (1 + len(PAIR))
    assert set(runs["status"]) == {"FINISHED"}


def test_tracking_imports_neither_figures_nor_matplotlib():
    code = ("import sys, harness.tracking; "
            "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'harness.figures'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
