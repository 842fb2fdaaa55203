"""The bad-input contract (design section 12), as a user meets it: ``harness run`` in a subprocess
(slow), and each case through ``harness.cli.main`` in-process (the fast tier).

Every bad input gives exactly one line on stderr naming the problem and the fix, exit status 2 and
no traceback; it leaves no run RUNNING (a run that had started is FAILED) and leaves the results
already in the store untouched. A member that diverges is not an error: the backtest finishes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from harness import tracking
from harness.backtest import run_and_log
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from strategies.volatility_forecast import VolatilityForecast
from tests.conftest import ROOT, small_config

GOOD = "good"          # the experiment of the backtest run before all the bad ones
DELETED = "deleted-experiment"


class NoBaseline(VolatilityForecast):
    """A user strategy that refuses its first window: the error comes from a worker, mid-run."""

    def baseline(self, train, test):
        raise HarnessError("strategy.params: this baseline needs 500 train rows; raise windows.train")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the socket is


# (id, config: sections merged into the small config, a raw YAML text, or None for no file;
#  extra CLI args; words expected in the one stderr line). {tmp} is a folder with the files below.
CASES = [
    # config
    ("missing-config", None, ["{tmp}/does-not-exist.yaml"], "does-not-exist.yaml does not exist"),
    ("invalid-yaml", "training: {epochs: [1,\n", [], "is not valid YAML at line"),
    ("yaml-not-a-mapping", "- run\n- fast\n", [], "must hold a mapping of sections"),
    ("unknown-key", {"trainig": {"epochs": 3}}, [], "trainig: unknown key (did you mean 'training'?)"),
    ("wrong-type", {"training": {"epochs": "five"}}, [], "training.epochs: must be an integer"),
    ("negative-train", {"windows": {"train": -5}}, [], "windows.train: must be > 0, got -5"),
    ("unreadable-size", {"windows": {"train": "3X"}}, [], "windows.train: cannot read '3X' as a size"),
    ("lr-zero", {"training": {"lr": 0}}, [], "training.lr: must be > 0"),
    ("bad-set", None, ["--set", "training.epochs"], "expected KEY=VALUE"),
    ("zero-workers", {"execution": {"workers": 0}}, [], "execution.workers: must be > 0, got 0"),
    ("validation-leaves-nothing", {"training": {"validation": 0.999}}, [], "training.validation: 0.999 leaves no rows"),
    # schedules
    ("unknown-schedule", {"schedules": ["cosin"]}, [], "did you mean 'cosine'"),
    ("bad-schedule-param", {"schedules": [{"name": "step", "gamma": -1}]}, [], "gamma"),
    ("duplicate-schedule", {"schedules": ["cosine", "cosine"]}, [], "lists cosine twice"),
    ("no-schedule", {"schedules": []}, [], "schedules: must list at least one schedule"),
    ("schedule-free-with-sgd", {"schedules": ["schedule_free"], "training": {"optimizer": "sgd"}}, [],
     "schedule_free is an AdamW variant"),
    # strategy
    ("unknown-strategy", {"strategy": {"name": "volatility_forecst", "params": {}}}, [],
     "did you mean 'volatility_forecast'"),
    ("unknown-strategy-param", {"strategy": {"name": "volatility_forecast", "params": {"lookbak": 22}}}, [],
     "did you mean 'lookback'"),
    ("missing-plugin", {"strategy": {"name": "nopkg.mod:Strategy", "params": {}}}, [], "cannot import module 'nopkg.mod'"),
    ("plugin-fails-mid-run", {"strategy": {"name": "tests.cli.test_bad_input:NoBaseline", "params": {}},
                              "execution": {"executor": "process", "workers": 2}}, [],
     "this baseline needs 500 train rows"),
    # data
    ("missing-data-file", {"data": {"path": "nope.csv"}}, [], "nope.csv: not found"),
    ("empty-csv", {"data": {"path": "{tmp}/empty.csv"}}, [], "empty.csv: empty file"),
    ("csv-without-dates", {"data": {"path": "{tmp}/nodate.csv"}}, [], "no date column"),
    ("no-rows-in-range", {"data": {"start": "2030-01-01", "end": None}}, [], "no rows in [2030-01-01"),
    ("windows-too-long", {"windows": {"train": 100000}}, [], "100000"),
    ("short-purge", {"windows": {"purge": 1}}, [], "windows.purge: 1 is shorter than the label horizon 5"),
    # tracking
    ("tracking-folder-is-a-file", {"tracking": {"uri": "{tmp}/a-file/mlruns"}}, [], "is not writable"),
    ("tracking-scheme-unknown", {"tracking": {"uri": "ftp://example.invalid/store"}}, [], "cannot open tracking store"),
    ("deleted-experiment", {"experiment": DELETED}, [], f"experiment '{DELETED}' is deleted"),
    # network
    ("offline-no-cache", {"data": {"source": "yfinance", "tickers": ["^NOPE"], "cache_dir": "{tmp}/cache"}}, [],
     "network"),
    ("tracking-server-down", {"tracking": {"uri": "http://127.0.0.1:{port}"}}, [], "does not answer"),
    ("ray-cluster-down", {"execution": {"executor": "ray", "address": "127.0.0.1:{port}"}}, [], "execution."),
]


def _fill(value, tmp: Path, port: int):
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp)).replace("{port}", str(port))
    if isinstance(value, dict):
        return {key: _fill(item, tmp, port) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, tmp, port) for item in value]
    return value


def _command(case, tmp: Path, store: Path, port: int) -> list[str]:
    name, config, args, _ = case
    files = tmp / name
    files.mkdir()
    command = ["run", "--no-progress"]
    if isinstance(config, str):
        (files / "c.yaml").write_text(config)
        command.append(str(files / "c.yaml"))
    elif config is not None:
        raw = small_config(files, **{"tracking": {"uri": str(store)}, **_fill(config, tmp, port)})
        (files / "c.yaml").write_text(yaml.safe_dump(raw))
        command.append(str(files / "c.yaml"))
    return command + _fill(args, tmp, port)


def _run(command: list[str], store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_TRACKING_URI": str(store)}
    return subprocess.run([sys.executable, "-m", "harness", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _snapshot(store: Path) -> dict:
    """Everything the store holds of the good backtest: runs, metric histories (as text: NaN equals
    NaN), artifact bytes."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name(GOOD)
    runs = {}
    for run in client.search_runs([experiment.experiment_id]):
        histories = {key: [(m.step, repr(m.value)) for m in client.get_metric_history(run.info.run_id, key)]
                     for key in run.data.metrics}
        runs[run.info.run_id] = (run.info.status, run.info.end_time, run.info.lifecycle_stage,
                                 run.data.params, run.data.tags, histories)
    folder = Path(experiment.artifact_location.removeprefix("file://"))
    files = {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
             for path in sorted(folder.rglob("*")) if path.is_file()}
    return {"runs": runs, "files": files}


def _bad_files(tmp: Path) -> None:
    """The files the cases name as ``{tmp}/...``."""
    (tmp / "empty.csv").write_text("")
    (tmp / "nodate.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp / "a-file").write_text("not a folder")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """A good backtest first, then every bad input (two at a time); the store before and after."""
    tmp = tmp_path_factory.mktemp("bad")
    store = tmp / "mlruns"
    _bad_files(tmp)
    good = parse_config(small_config(tmp, experiment=GOOD, training={"epochs": 1, "seeds": 1},
                                     tracking={"uri": str(store)}))
    run_and_log(good, progress=False)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    client.delete_experiment(client.create_experiment(DELETED))
    before = _snapshot(store)
    port = _closed_port()
    commands = [_command(case, tmp, store, port) for case in CASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip([case[0] for case in CASES], pool.map(lambda command: _run(command, store), commands)))
    return {"done": done, "before": before, "after": _snapshot(store), "store": store}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A store with no runs, only the deleted experiment of the ``deleted-experiment`` case."""
    store = tmp_path_factory.mktemp("empty") / "mlruns"
    client = MlflowClient(tracking.resolve_store(store).tracking_uri)
    client.delete_experiment(client.create_experiment(DELETED))
    return store


# In-process, the one case that trains (in a process pool) is the slow one.
IN_PROCESS = [pytest.param(case, id=case[0], marks=[pytest.mark.slow] if case[0] == "plugin-fails-mid-run" else [])
              for case in CASES]


@pytest.mark.parametrize("case", IN_PROCESS)
def test_a_bad_input_through_main_is_its_one_line_exit_2_and_opens_no_run(cli, tmp_path, empty_store, monkeypatch,
                                                                           case):
    """Every case through ``harness.cli.main`` in this process (the fast tier's copy of the table below)."""
    _bad_files(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(empty_store))
    done = cli(*_command(case, tmp_path, empty_store, _closed_port()))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("harness: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert case[3] in done.stderr, done.stderr
    client = MlflowClient(tracking.resolve_store(empty_store).tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [run for run in runs if run.info.status == "RUNNING"]
    for run in runs:  # only the plugin that failed mid-run opened a run, and it is FAILED
        assert (run.data.tags["kind"], run.info.status) == ("backtest", "FAILED") and case[0] == "plugin-fails-mid-run"
        client.delete_run(run.info.run_id)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected"), [(case[0], case[3]) for case in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_on_stderr_and_exit_2(outcomes, name, expected):
    done = outcomes["done"][name]
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("harness: error: ") and expected in lines[0], lines[0]


@pytest.mark.slow
def test_bad_inputs_leave_no_run_running_and_earlier_results_untouched(outcomes):
    assert outcomes["after"] == outcomes["before"]
    client = MlflowClient(f"sqlite:///{outcomes['store']}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert not [run for run in runs if run.info.status == "RUNNING"]
    # Only the plugin that failed mid-run had opened a run: it is FAILED, with no schedule runs.
    others = [run for run in runs if run.info.run_id not in outcomes["before"]["runs"]]
    assert [(run.info.status, run.data.tags["kind"]) for run in others] == [("FAILED", "backtest")]


@pytest.mark.slow
def test_a_diverging_member_is_recorded_and_the_backtest_finishes(tmp_path):
    prices = load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")
    config = parse_config(small_config(tmp_path, training={"epochs": 2, "seeds": 1, "optimizer": "sgd", "lr": 1e3},
                                       schedules=["constant"]))
    outcome = run_and_log(config, progress=False, prices=prices)
    training = outcome.backtest.training
    assert training["diverged"].all()
    rate = outcome.backtest.aggregates.query("metric == 'divergence_rate'")["value"].to_numpy()
    np.testing.assert_array_equal(rate, [1.0])
    runs = tracking.find_runs(outcome.store, config.experiment)
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 2
