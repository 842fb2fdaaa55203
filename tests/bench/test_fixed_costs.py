"""What ``harness run`` costs around its training, kept small without changing what it produces:
a new store copied from a schema template, the figures and the selection in a side process (the same
PNGs, the same statistics), and imports made by what needs them. No time is asserted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import tracking
from harness.backtest import run_backtest, sidecar
from harness.config import parse_config
from harness.tracking import store as stores
from tests.conftest import ROOT, small_config


def _tables(path: Path) -> dict[str, list[str]]:
    """Each table's and index's definition, its lines sorted (MLflow's migrations list a table's
    constraints in an order that varies from process to process)."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    return {name: sorted(line.strip().rstrip(",") for line in sql.splitlines()) for name, sql in rows}


def test_a_new_store_is_a_copy_of_the_schema_mlflow_itself_creates(tmp_path, monkeypatch):
    monkeypatch.setenv(stores.SCHEMA_CACHE_ENV, str(tmp_path / "cache"))
    template = stores.schema_template()
    assert template is not None and template.parent == tmp_path / "cache"
    assert stores.schema_template() == template  # built once, then reused

    copied = stores.resolve_store(tmp_path / "copied")
    experiment = stores.ensure_experiment(copied, "e")
    monkeypatch.setattr(stores, "schema_template", lambda: None)  # MLflow's own migrations, for comparison
    made = stores.resolve_store(tmp_path / "made")
    stores.ensure_experiment(made, "e")
    assert _tables(copied.database) == _tables(made.database)  # the same schema
    with sqlite3.connect(copied.database) as a, sqlite3.connect(made.database) as b:
        query = "SELECT version_num FROM alembic_version"
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    client = stores.open_client(copied)
    names = {e.name: e for e in client.search_experiments()}
    assert set(names) == {"Default", "e"} and names["e"].experiment_id == experiment
    # the Default experiment is the opening process's, as MLflow makes it for any new store
    assert names["Default"].artifact_location == client.get_experiment("0").artifact_location
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_an_unusable_cache_folder_leaves_the_schema_to_mlflow(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(stores.SCHEMA_CACHE_ENV, str(blocker / "cache"))
    assert stores.schema_template() is None
    store = stores.resolve_store(tmp_path / "s")
    assert stores.ensure_experiment(store, "e")


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("side")
    config = parse_config(small_config(tmp, training={"epochs": 2, "seeds": 2}))
    return run_backtest(config, progress=False)


def _files(mapping: dict) -> dict[str, bytes]:
    return {name: Path(path).read_bytes() for name, path in mapping.items()}


def _drawer_of(side_pid: int) -> int:
    """The drawer: the side process's one child (Linux's /proc), there once the side process has started it."""
    children = Path(f"/proc/{side_pid}/task/{side_pid}/children")
    for _ in range(200):
        pids = children.read_text().split()
        if pids:
            assert len(pids) == 1, pids
            return int(pids[0])
        time.sleep(0.05)
    raise AssertionError("the side process has no drawer")


def _gone(pid: int) -> bool:
    for _ in range(100):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
        except FileNotFoundError:
            return True
        if state in "ZX":  # ended, not yet reaped
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("drawer", ["draws", "died before the job"])
def test_the_side_process_draws_the_same_pngs_and_makes_the_same_selection(backtest, tmp_path, monkeypatch, drawer):
    """By its drawer, or by itself when the drawer is gone: the same files, the same selection."""
    here = tmp_path / "here"
    parent_here, schedules_here = sidecar.draw_backtest(backtest, here)
    report_here = sidecar.select_here(backtest)
    selection_here = sidecar.draw_selection(report_here, tmp_path / "here-selection")

    monkeypatch.setenv(sidecar.ENV, "1")  # whatever the machine's load
    assert sidecar.start()
    try:
        side = sidecar._SIDE
        if drawer != "draws":
            os.kill(_drawer_of(side.process.pid), signal.SIGKILL)
        parent, schedules = sidecar.figures(backtest, tmp_path / "aside")
        assert sidecar._SIDE is side and side.job is not None  # drawn there, not here
        report = sidecar.select(backtest)
        files = sidecar.selection_files(report, tmp_path / "aside-selection")
        assert side.job is None  # collected
    finally:
        sidecar.stop()
    assert _files(parent) == _files(parent_here) and parent  # byte for byte
    assert {k: _files(v) for k, v in schedules.items()} == {k: _files(v) for k, v in schedules_here.items()}
    assert report.table.equals(report_here.table) and report.tags() == report_here.tags()
    assert report.backtest is backtest  # the report reads this process's backtest, as one made here does
    assert _files(files) == _files(selection_here) and all(Path(p).parent.is_relative_to(tmp_path) for p in files.values())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the drawer in Linux's /proc")
def test_the_drawer_ends_with_its_side_process_whether_it_exits_or_is_killed(monkeypatch):
    monkeypatch.setenv(sidecar.ENV, "1")
    for ending in ("exits", "killed"):
        assert sidecar.start()
        side = sidecar._SIDE
        drawer = _drawer_of(side.process.pid)
        if ending == "exits":
            sidecar.stop()
        else:
            side.process.kill()
            side.process.wait()
            sidecar.stop()
        assert _gone(drawer), ending


def test_without_a_side_process_the_figures_and_selection_are_made_here(backtest, tmp_path, monkeypatch):
    monkeypatch.setenv(sidecar.ENV, "0")
    assert not sidecar.start() and sidecar._SIDE is None
    parent, schedules = sidecar.figures(backtest, tmp_path)
    assert parent and all(Path(p).is_file() for p in parent.values())
    assert sidecar.select(backtest).tags()["selected_schedule"]


@pytest.mark.slow
def test_a_side_process_that_died_leaves_the_work_to_this_process(backtest, tmp_path, monkeypatch):
    monkeypatch.setenv(sidecar.ENV, "1")
    assert sidecar.start()
    sidecar._SIDE.process.kill()
    sidecar._SIDE.process.wait()
    parent, _ = sidecar.figures(backtest, tmp_path)
    assert parent and all(Path(p).is_file() for p in parent.values())
    assert sidecar._SIDE is None
    assert sidecar.select(backtest).tags()["selected_schedule"]


def test_reading_a_backtest_and_planning_import_neither_torch_nor_mlflow():
    code = ("import sys; import harness.backtest.result, harness.figures, harness.evaluation.selection; "
            "from harness.backtest import plan; import harness.cli; "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_process_that_trains_imports_no_scipy():
    """The statistics and the pricing import scipy's special functions (~0.2 s) where they use them:
    ``harness run``'s own process, which trains, loads none of them."""
    code = ("import sys; import harness.backtest.run, harness.cli.render, strategies; "
            "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_run_logs_the_figures_and_selection_the_side_process_made(tmp_path, monkeypatch):
    """``harness run``'s outcome with the side process: figures and selection logged, the split timed."""
    from harness.backtest import run_and_log

    monkeypatch.setenv(sidecar.ENV, "1")
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    try:
        outcome = run_and_log(config, progress=False)
    finally:
        sidecar.stop()
    assert outcome.selection is not None and outcome.train_seconds > 0
    assert 0 < outcome.train_seconds <= outcome.seconds
    client = tracking.store.open_client(outcome.store)
    names = {item.path for item in client.list_artifacts(outcome.run_id)}
    assert {"comparison.png", "errors.png", "selection.md"} <= names
    assert client.get_run(outcome.run_id).data.tags["selected_schedule"] == outcome.selection.tags()["selected_schedule"]
