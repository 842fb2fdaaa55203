"""``harness run``'s MLflow store in its side process (:mod:`harness.backtest.sidecar`): the run's own
process never imports MLflow, logs what a run without a side process logs, and carries on here when
the side process dies; a deferred call's error or kill moment reaches the run. Real stores, real
processes; :func:`harness.figures.common.shared_pngs` splits the PNGs between processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from harness.backtest import sidecar
from harness.figures.common import save_png, shared_pngs
from tests.conftest import ROOT, small_config

ONE_RUN = """
import sys
from harness.cli import main
code = main(["run", sys.argv[1], "--no-progress"])
print("IMPORTED", sorted(m for m in ("torch", "mlflow") if m in sys.modules))
sys.exit(code)
"""


def _run_here_or_aside(tmp: Path, side: str) -> tuple[list[str], object]:
    store = tmp / f"store-{side}"
    config = tmp / f"config-{side}.yaml"
    raw = small_config(tmp, training={"epochs": 2, "seeds": 2}, tracking={"uri": str(store)})
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, sidecar.ENV: side, "HARNESS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", ONE_RUN, str(config)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning, no traceback, from either process
    imported = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    try:
        runs = mlflow.search_runs(search_all_experiments=True)
    finally:
        mlflow.set_tracking_uri(previous)
    return imported, runs


@pytest.mark.slow
def test_the_run_process_never_imports_mlflow_and_logs_what_a_single_process_logs(tmp_path):
    imported_aside, aside = _run_here_or_aside(tmp_path, "1")
    imported_here, here = _run_here_or_aside(tmp_path, "0")
    assert imported_aside == "IMPORTED ['torch']"  # MLflow only in the side process
    assert imported_here == "IMPORTED ['mlflow', 'torch']"
    assert set(aside["status"]) == set(here["status"]) == {"FINISHED"} and len(aside) == len(here) == 3
    key = ["tags.kind", "tags.schedule"]
    metrics = sorted(c for c in here.columns if c.startswith(("metrics.", "tags.selected")))
    left = aside.sort_values(key, na_position="first")[metrics].reset_index(drop=True)
    right = here.sort_values(key, na_position="first")[metrics].reset_index(drop=True)
    assert left.equals(right)  # the same numbers and the same selection, bit for bit


def test_a_dead_side_process_leaves_the_store_calls_to_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv(sidecar.ENV, "1")
    assert sidecar.start()
    try:
        side = sidecar._SIDE
        store = sidecar.tracking.resolve_store(tmp_path / "s")
        first = sidecar.tracking.ensure_experiment(store, "e")
        side.process.kill()
        side.process.wait()
        assert sidecar.tracking.ensure_experiment(store, "e") == first  # made here, the same store
        assert sidecar._SIDE is None
    finally:
        sidecar.stop()


def test_a_deferred_call_runs_then_and_its_error_comes_at_the_next_call(tmp_path, monkeypatch):
    monkeypatch.setenv(sidecar.ENV, "1")
    assert sidecar.start()
    try:
        store = sidecar.tracking.resolve_store(tmp_path / "s")
        sidecar.tracking.ensure_experiment(store, "e")
        folder = tmp_path / "files"
        folder.mkdir()
        (folder / "a.txt").write_text("a")
        made: list[bool] = []
        sidecar.tracking.defer(made.append, "save_files", store, "0" * 32, str(folder), "x")  # no such run
        assert made == []  # not waited for
        with pytest.raises(Exception, match="(?i)run .*not found|no run"):
            sidecar.tracking.ensure_experiment(store, "e")
        assert made == [False]
        assert sidecar._SIDE is not None  # an error of the call, not of the side process
        run_id = mlflow.MlflowClient(store.tracking_uri).create_run(sidecar.tracking.ensure_experiment(store, "e"))
        sidecar.tracking.defer(made.append, "save_files", store, run_id.info.run_id, str(folder), "x")
        assert sidecar.tracking.fetch_files(store, run_id.info.run_id, "x", tmp_path / "back") is not None
        assert made == [False, True] and (tmp_path / "back" / "x" / "a.txt").read_text() == "a"
    finally:
        sidecar.stop()


def test_shared_pngs_write_each_png_once_between_the_parts(tmp_path):
    from harness.figures.common import new_figure

    def draw(folder: Path) -> list[Path]:
        paths = []
        for k in range(5):
            fig = new_figure()
            fig.add_subplot().plot([0, k])
            paths.append(save_png(fig, folder / f"{k}.png"))
        return paths

    whole = draw(tmp_path / "whole")
    with shared_pngs(0, 2):
        first = draw(tmp_path / "split")
    with shared_pngs(1, 2):
        second = draw(tmp_path / "split")
    assert [p.name for p in first] == [p.name for p in second] == [p.name for p in whole]  # every path returned
    for path in whole:
        assert (tmp_path / "split" / path.name).read_bytes() == path.read_bytes()  # each written by one part
    with shared_pngs(0, 2):
        draw(tmp_path / "half")
    assert sorted(p.name for p in (tmp_path / "half").iterdir()) == ["0.png", "2.png", "4.png"]
    draw(tmp_path / "after")  # the block is over: all written again
    assert len(list((tmp_path / "after").iterdir())) == 5


def test_draw_png_draws_only_the_figures_of_its_own_part(tmp_path):
    from harness.figures.common import draw_png, new_figure

    made = []

    def make(k: int, *, title: str):
        made.append(k)
        fig = new_figure()
        fig.add_subplot().plot([0, k])
        fig.axes[0].set_title(title)
        return fig

    def draw(folder: Path) -> list[Path]:
        return [draw_png(folder / f"{k}.png", make, k, title=f"t{k}") for k in range(5)]

    whole = draw(tmp_path / "whole")
    assert made == [0, 1, 2, 3, 4]
    for part, own in ((0, [0, 2, 4]), (1, [1, 3])):
        made.clear()
        with shared_pngs(part, 2):
            paths = draw(tmp_path / "split")
        assert made == own  # the other part's figures are not even made
        assert [p.name for p in paths] == [p.name for p in whole]  # every path returned
    for path in whole:
        assert (tmp_path / "split" / path.name).read_bytes() == path.read_bytes()
