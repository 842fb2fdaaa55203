"""Resume: killed at any moment (Ctrl-C, SIGKILL, a crash in a window) and started again, a
backtest finishes with the numbers of an uninterrupted run, retraining nothing it had saved and
logging nothing twice. Real subprocesses, a real MLflow store read back with ``mlflow.search_runs``."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from harness import provenance, tracking
from harness.backtest import Backtest, run_and_log, run_backtest, run_windows
from harness.backtest import resume
from harness.backtest.boundary import policy
from harness.backtest.planning import plan
from harness.backtest.run import run_tags
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from strategies.volatility_forecast import VolatilityForecast
from tests.conftest import ROOT, small_config

EXPERIMENT = "resume"


def _long_config(tmp_path: Path, store: Path) -> str:
    """About 30 windows (4 jobs of at most 8): long enough to be killed between checkpoints."""
    raw = small_config(
        tmp_path, experiment=EXPERIMENT, data={"start": "2007-01-01", "end": "2012-12-31"},
        training={"epochs": 4, "seeds": 2}, tracking={"uri": str(store)},
    )
    path = tmp_path / f"{store.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _start(config: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", config, "--no-progress", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved(store: Path) -> list[Path]:
    """The window checkpoints written in full: a kill while one is copied into the store leaves it
    cut short, and resume ignores it and trains that window again (as it must)."""
    complete = []
    for path in sorted(store.glob(f"artifacts/{EXPERIMENT}/*/artifacts/checkpoint/window_*.pkl")):
        try:
            with path.open("rb") as file:
                pickle.load(file)
        except Exception:  # being written, or cut short
            continue
        complete.append(path)
    return complete


def _wait_for_saved(process: subprocess.Popen, store: Path, more_than: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the backtest ended before it could be interrupted: {process.communicate()}")
        if len(_saved(store)) > more_than:
            return len(_saved(store))
        time.sleep(0.02)
    pytest.fail("no window was saved in time")


def _runs(store: Path) -> pd.DataFrame:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    try:
        return mlflow.search_runs(experiment_names=[EXPERIMENT])
    finally:
        mlflow.set_tracking_uri(previous)


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rfind(")") + 2:].split()[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _gone(pids: list[int], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [pid for pid in pids if Path(f"/proc/{pid}").exists() and provenance._proc_stat(pid)[0] != "Z"]:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker processes from /proc")
def test_ctrl_c_then_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    store, reference_store = tmp_path / "interrupted", tmp_path / "reference"
    reference = _start(_long_config(tmp_path, reference_store))  # uninterrupted, meanwhile
    config = _long_config(tmp_path, store)
    n_windows = len(plan(parse_config(yaml.safe_load(Path(config).read_text()))).windows)

    # 1. Ctrl-C: one line saying what is saved and how to resume, exit 130, the parent KILLED.
    first = _start(config)
    _wait_for_saved(first, store, 0)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    found = re.fullmatch(rf"harness: interrupted: (\d+) of {n_windows} windows are saved in run (\w+); "
                         "run the same command again to resume", lines[0])
    assert found, lines[0]
    parent_id = found.group(2)
    runs = _runs(store)
    assert list(runs["run_id"]) == [parent_id] and list(runs["status"]) == ["KILLED"]
    assert int(found.group(1)) <= len(_saved(store)) < n_windows

    # 2. Resumed on a process pool, then SIGKILL: the parent stays RUNNING, the workers exit.
    second = _start(config, "--set", "execution.executor=process", "--set", "execution.workers=2")
    before = len(_saved(store))
    _wait_for_saved(second, store, before)
    workers = _children_of(second.pid)
    assert workers  # the pool (and multiprocessing's resource tracker)
    second.kill()
    second.communicate(timeout=60)
    assert _gone(workers), "pool workers outlived their killed driver"
    runs = _runs(store)
    assert list(runs["run_id"]) == [parent_id] and list(runs["status"]) == ["RUNNING"]
    saved = {path: path.stat().st_mtime_ns for path in _saved(store)}
    assert before < len(saved) < n_windows
    # A kill during the final logging would leave a partial schedule run under the parent.
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    partial = client.create_run(runs["experiment_id"].iloc[0], run_name="constant", tags={
        "mlflow.parentRunId": parent_id, "kind": "schedule", "schedule": "constant"}).info.run_id

    # 3. The same command again: saved windows are loaded, the rest trained, all logged once.
    third = _start(config)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert f"resumed run {parent_id}: {len(saved)} windows loaded from the interrupted run, " \
           f"{n_windows - len(saved)} trained now" in out
    assert {path: path.stat().st_mtime_ns for path in saved} == saved  # not retrained, not rewritten
    runs = _runs(store)
    parents, children = runs[runs["tags.kind"] == "backtest"], runs[runs["tags.kind"] == "schedule"]
    assert list(parents["run_id"]) == [parent_id] and set(runs["status"]) == {"FINISHED"}
    assert len(children) == 2 and partial not in set(children["run_id"])
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    assert client.get_run(partial).info.lifecycle_stage == "deleted"

    # 4. The numbers equal an uninterrupted run's, in another store.
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    _assert_same_backtest(tracking.load_backtest(tracking.resolve_store(store), EXPERIMENT),
                          tracking.load_backtest(tracking.resolve_store(reference_store), EXPERIMENT))
    metrics = ["metrics.pooled_rmse", "metrics.window_std_rmse", "metrics.churn", "metrics.rmse"]
    pd.testing.assert_frame_equal(
        children.sort_values("tags.schedule")[metrics].reset_index(drop=True),
        _runs(reference_store).query("`tags.kind` == 'schedule'").sort_values("tags.schedule")[metrics]
        .reset_index(drop=True))

    # 5. Once more: nothing to do, nothing logged.
    again = _start(config)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"already finished as run {parent_id}; nothing trained" in out
    assert len(_runs(store)) == 3


@pytest.mark.slow
def test_two_backtests_at_once_into_one_new_store_both_finish_complete_and_separate(tmp_path):
    store = tmp_path / "shared"
    paths = []
    for seed in (0, 1):
        raw = small_config(tmp_path, experiment=EXPERIMENT, training={"epochs": 2, "seed": seed},
                           tracking={"uri": str(store)})
        paths.append(tmp_path / f"seed{seed}.yaml")
        paths[-1].write_text(yaml.safe_dump(raw))
    processes = [_start(str(path)) for path in paths]  # both create the schema and the experiment
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    runs = _runs(store)
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 6
    parents = runs[runs["tags.kind"] == "backtest"]
    assert parents["tags.config_hash"].nunique() == 2
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    n_windows = len(plan(parse_config(yaml.safe_load(paths[0].read_text()))).windows)
    for parent in parents["run_id"]:
        children = runs[runs["tags.mlflow.parentRunId"] == parent]
        assert sorted(children["tags.schedule"]) == ["constant", "cosine(warmup=0.1)"]
        for child in children["run_id"]:
            assert sorted(m.step for m in client.get_metric_history(child, "rmse")) == list(range(n_windows))
    a, b = (tracking.load_backtest(tracking.resolve_store(store), parent) for parent in parents["run_id"])
    assert len(a.predictions) == len(b.predictions)
    assert not a.predictions["prediction"].equals(b.predictions["prediction"])  # other seeds, own results


def _assert_same_backtest(a: Backtest, b: Backtest) -> None:
    for name in ("predictions", "training", "metrics", "seed_mean_metrics", "aggregates"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True, obj=name)
    assert a.labels == b.labels
    for label in a.labels:
        assert (a.lr_curve(label) == b.lr_curve(label)).all()
    assert a.tags["config_hash"] == b.tags["config_hash"]


# --- a crash in one window of a chained backtest, in process ------------------------------------

CRASH_AT = "HARNESS_TEST_CRASH_AT"  # the environment, not a global: the config imports its own module copy


class CrashingVolatility(VolatilityForecast):
    """Crashes (a bug, not a user error) on the window whose test slice starts on ``$HARNESS_TEST_CRASH_AT``."""

    def baseline(self, train, test):
        if os.environ.get(CRASH_AT) == str(pd.Timestamp(test.dates[0]).date()):
            raise RuntimeError("simulated crash")
        return super().baseline(train, test)


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


def _chained(tmp_path, store: str):
    return parse_config(small_config(
        tmp_path, strategy={"name": "tests.backtest.test_resume:CrashingVolatility", "params": {}},
        training={"epochs": 2, "seeds": 1, "boundary": "warm_continue"}, tracking={"uri": str(tmp_path / store)},
    ))


@pytest.mark.slow
@pytest.mark.parametrize("side", ["1", "0"])  # the store's calls in the side process (checkpoints deferred), or here
def test_a_crash_in_a_window_of_a_chain_fails_the_run_and_the_rerun_continues_the_chain(tmp_path, prices, monkeypatch,
                                                                                         side):
    monkeypatch.setenv("HARNESS_SIDE_PROCESS", side)
    config = _chained(tmp_path, "crashed")
    the_plan = plan(config, prices)
    monkeypatch.setenv(CRASH_AT, str(pd.Timestamp(the_plan.table.dates[the_plan.windows[3].test_rows[0]]).date()))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_and_log(config, progress=False, prices=prices)
    store = tracking.resolve_store(config.tracking.uri)
    runs = tracking.find_runs(store, config.experiment)
    assert list(runs["status"]) == ["FAILED"]
    monkeypatch.delenv(CRASH_AT)
    outcome = run_and_log(config, progress=False, prices=prices)
    assert outcome.resumed == 3 and outcome.run_id == runs["run_id"].iloc[0]
    reference = run_backtest(_chained(tmp_path, "reference"), prices=prices, progress=False)
    pd.testing.assert_frame_equal(outcome.backtest.predictions, reference.predictions, check_exact=True)
    pd.testing.assert_frame_equal(outcome.backtest.churn, reference.churn, check_exact=True)
    assert list(tracking.find_runs(store, config.experiment, {"kind": "backtest"})["status"]) == ["FINISHED"]


@pytest.mark.slow
def test_rerun_starts_a_new_backtest_beside_a_finished_one(tmp_path, prices):
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    first = run_and_log(config, progress=False, prices=prices)
    again = run_and_log(config, progress=False, prices=prices)
    assert again.trained is False and again.run_id == first.run_id  # already finished: read back, not run
    second = run_and_log(config, progress=False, prices=prices, rerun=True)
    assert second.trained and second.run_id != first.run_id and second.resumed == 0
    runs = tracking.find_runs(tracking.resolve_store(config.tracking.uri), config.experiment, {"kind": "backtest"})
    assert sorted(runs["run_id"]) == sorted([first.run_id, second.run_id])
    pd.testing.assert_frame_equal(first.backtest.predictions, second.backtest.predictions, check_exact=True)


# --- which earlier run is taken over ------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return tracking.resolve_store(tmp_path / "mlruns")


def _open(store, config, owner: dict[str, str]) -> str:
    tags = {**run_tags(config, "d" * 16), **owner}
    return tracking.start_backtest(store, config.experiment, run_name="t", config={}, tags=tags)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_live_owner_is_an_error_a_dead_one_is_taken_over(tmp_path, store):
    config = parse_config(small_config(tmp_path))
    tags = run_tags(config, "d" * 16)
    live = _open(store, config, provenance.process_tags())
    with pytest.raises(HarnessError, match=f"already running in experiment 'test-small' as run {live}"):
        resume.find_earlier(store, config.experiment, tags)
    tracking.end_run(store, live, "FINISHED")
    assert resume.find_earlier(store, config.experiment, tags).finished == live

    dead = _open(store, config, {**provenance.process_tags(), "process.pid": str(_dead_pid())})
    earlier = resume.find_earlier(store, config.experiment, tags)
    assert earlier.resumable == dead and earlier.closed == [dead] and earlier.finished is None
    assert tracking.find_runs(store, config.experiment).set_index("run_id").loc[dead, "status"] == "KILLED"

    reused = _open(store, config, {**provenance.process_tags(), "process.started": "1"})  # same pid, other process
    assert resume.find_earlier(store, config.experiment, tags).closed == [reused]

    elsewhere = _open(store, config, {**provenance.process_tags(), "process.host": "another-host"})
    with pytest.raises(HarnessError, match=f"as run {elsewhere} .*on another-host.*pass --rerun"):
        resume.find_earlier(store, config.experiment, tags)
    earlier = resume.find_earlier(store, config.experiment, tags, rerun=True)
    assert (earlier.finished, earlier.resumable, earlier.closed) == (None, None, [])


def test_other_configs_data_or_code_are_other_backtests(tmp_path, store):
    config = parse_config(small_config(tmp_path))
    _open(store, config, provenance.process_tags())
    tags = run_tags(config, "d" * 16)
    for key in resume.IDENTITY:
        assert resume.find_earlier(store, config.experiment, {**tags, key: "other"}) == resume.Earlier()


@pytest.mark.parametrize("side", ["1", "0"])
def test_a_checkpoint_cut_short_is_ignored_and_that_work_redone(tmp_path, store, prices, monkeypatch, side):
    from harness.backtest import sidecar

    monkeypatch.setenv("HARNESS_SIDE_PROCESS", side)
    assert sidecar.start() == (side == "1")  # with one, the window files' save is deferred, the state's is not
    for boundary in ("fresh", "warm_restart"):
        config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1, "boundary": boundary}))
        the_plan = plan(config, prices)
        windows = run_windows(the_plan, progress=False, keep_fitted=True)
        the_policy = policy(config, the_plan.windows)
        assert the_policy.chained == (boundary != "fresh")
        run_id = _open(store, config, provenance.process_tags())
        checkpoint = resume.Checkpoint(store, run_id, the_policy)
        checkpoint.save(windows[:2])
        checkpoint.save(windows[2:3])
        folder = Path(MlflowClient(store.tracking_uri).get_run(run_id).info.artifact_uri.removeprefix("file://"))
        loaded = resume.Checkpoint.load(store, run_id, config, policy(config, the_plan.windows))
        chained = loaded.boundary.chained
        assert sorted(loaded.done) == [0, 1, 2] and (loaded.state is not None) == chained  # the state after window 2
        pd.testing.assert_frame_equal(loaded.done[1].predictions, windows[1].predictions)
        if chained:
            for key, value in loaded.state.result.state.items():
                assert (value == windows[2].fitted.result.state[key]).all()
        cut = folder / "checkpoint" / (resume.STATE_FILE if chained else resume.window_file(1))
        cut.write_bytes(cut.read_bytes()[:100])
        loaded = resume.Checkpoint.load(store, run_id, config, policy(config, the_plan.windows))
        assert sorted(loaded.done) == ([] if chained else [0, 2])  # a chain restarts from window 0


# --- the logging and the selection are resumable steps -------------------------------------------


def test_a_taken_over_parent_keeps_its_complete_schedule_runs_and_trashes_the_rest(tmp_path, store):
    """What a kill during the final logging leaves: complete (FINISHED) schedule runs, kept; a
    partial one (RUNNING, or ended KILLED by a Ctrl-C), trashed; a second FINISHED run of one
    schedule (written by an older version), trashed: one run per schedule stays."""
    config = parse_config(small_config(tmp_path))
    parent = _open(store, config, {**provenance.process_tags(), "process.pid": str(_dead_pid())})
    client = MlflowClient(store.tracking_uri)
    experiment_id = client.get_run(parent).info.experiment_id

    def child(schedule: str, status: str | None) -> str:
        run_id = client.create_run(experiment_id, run_name=schedule, tags={
            "mlflow.parentRunId": parent, "kind": "schedule", "schedule": schedule}).info.run_id
        if status:
            client.set_terminated(run_id, status)
        return run_id

    older = child("constant", "FINISHED")
    time.sleep(0.01)  # newest first by start time
    newer = child("constant", "FINISHED")
    running, killed = child("cosine(warmup=0.1)", None), child("wsd", "KILLED")
    assert tracking.logged_schedules(store, parent) == {"constant": newer}
    earlier = resume.find_earlier(store, config.experiment, run_tags(config, "d" * 16))
    assert earlier.resumable == parent
    checkpoint = resume.begin(store, config, run_tags(config, "d" * 16), earlier,
                              policy(config, plan(config).windows), run_name="t")
    assert checkpoint.run_id == parent and checkpoint.done == {}
    assert {run_id: client.get_run(run_id).info.lifecycle_stage for run_id in (older, newer, running, killed)} == {
        older: "deleted", newer: "active", running: "deleted", killed: "deleted"}
    assert client.get_run(running).info.status == "KILLED"  # never left RUNNING
    assert client.get_run(parent).info.status == "RUNNING"
    assert client.get_run(parent).data.params["experiment"] == config.experiment  # params logged again


@pytest.mark.slow
def test_a_finished_backtest_without_its_selection_gets_it_on_rerun(tmp_path, prices):
    """An older version ended the parent FINISHED before its selection: a kill then left a finished
    backtest without `selected_schedule`. The same command logs the selection, trains nothing."""
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    first = run_and_log(config, progress=False, prices=prices)
    store = tracking.resolve_store(config.tracking.uri)
    client = MlflowClient(store.tracking_uri)
    tags = client.get_run(first.run_id).data.tags
    selection = {key: value for key, value in tags.items() if key.startswith("select")}
    assert selection["selected_schedule"] == first.selection.selected
    for key in selection:
        client.delete_tag(first.run_id, key)
    artifacts = Path(client.get_run(first.run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / "selection.md").unlink()
    again = run_and_log(config, progress=False, prices=prices)
    assert again.trained is False and again.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert {key: run.data.tags.get(key) for key in selection} == selection
    assert (artifacts / "selection.md").is_file() and run.info.status == "FINISHED"
    assert len(tracking.find_runs(store, config.experiment)) == 3  # nothing else logged
