"""``harness bench --e2e``: the whole ``harness run`` process against the shipped plain script, on the
same work. Tiny sizes; no time is asserted (the machine is shared and noisy)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.backtest import plan, run_backtest
from harness.bench.e2e import TIMING, _data_file, e2e_config, format_e2e
from harness.config import parse_config
from harness.errors import HarnessError
from tests.conftest import ROOT

PLAIN = ROOT / "harness" / "bench" / "plain_walkforward.py"


@pytest.mark.parametrize("windows", [1, 3])
def test_the_config_holds_exactly_the_windows_asked_for(windows, tmp_path):
    raw = e2e_config(_data_file(None), windows, rows=200)
    raw["tracking"] = {"uri": str(tmp_path / "mlruns")}
    the_plan = plan(parse_config(raw))
    assert len(the_plan.windows) == windows
    assert the_plan.table.X.shape[1] == 20 and all(len(w.train_rows) == 200 for w in the_plan.windows)
    assert the_plan.windows[-1].test_rows[-1] == len(the_plan.table.X) - 1  # the latest windows


@pytest.mark.slow
def test_the_plain_script_trains_the_members_harness_run_trains(tmp_path):
    windows, rows = 2, 120
    raw = e2e_config(_data_file(None), windows, rows=rows)
    raw["training"].update(epochs=2)
    raw["tracking"] = {"uri": str(tmp_path / "mlruns")}
    backtest = run_backtest(parse_config(raw), progress=False)
    out = tmp_path / "plain.npy"
    subprocess.run([sys.executable, str(PLAIN), "--csv", str(_data_file(None)), "--start", raw["data"]["start"],
                    "--windows", str(windows), "--train", str(rows), "--epochs", "2", "--predictions", str(out)],
                   check=True, capture_output=True)
    theirs = np.load(out)
    assert theirs.shape == (windows, 6, 21)
    ours = np.zeros_like(theirs)
    for (window, label, seed), frame in backtest.predictions.groupby(["window", "schedule", "seed"]):
        ours[int(window), backtest.labels.index(label) * 2 + int(seed)] = frame.sort_values("date")["prediction"]
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-5  # float32 round-off only


@pytest.mark.slow
def test_cli_bench_e2e_times_both_processes_and_writes_the_figures(cli, tmp_path):
    path = tmp_path / "e2e.json"
    done = cli("bench", "--e2e", "--windows", "1", "--rows", "120", "--epochs", "1", "--repeats", "1",
               "--json", str(path))
    assert done.returncode == 0, done.stderr
    figures = json.loads(path.read_text())
    for key in ("plain_s", "harness_s", "plain_cpu_s", "harness_cpu_s", "torch_import_s", "e2e_speedup"):
        assert figures[key] > 0 and math.isfinite(figures[key]), key
    assert figures["e2e_speedup"] == pytest.approx(figures["plain_s"] / figures["harness_s"])
    assert figures["windows"] == 1 and figures["members"] == 6 and figures["threads"] == 1
    timing = figures["harness_timing"]
    assert 0 <= timing["training"] <= timing["seconds"] and timing["logging"] > 0 and timing["other"] >= 0
    assert figures["max_prediction_diff"] < 1e-5
    assert "e2e_speedup" in done.stdout and "plain torch script" in done.stdout


def test_the_timing_line_of_harness_run_is_what_the_bench_reads():
    from harness.cli.render import timing_text

    class Config:
        class execution:  # noqa: N801 - a stand-in for the config's section
            executor = "local"

    class Backtest:
        config = Config

    class Outcome:
        backtest, seconds, log_seconds, train_seconds, store_seconds = Backtest, 3.5, 1.25, 2.0, 0.0

    line = f"exp: 10 windows x 3 schedules x 2 seeds in 3.5 s ({timing_text(Outcome)})"
    assert "new store" not in line
    Outcome.store_seconds = 0.44  # a new store, opened while the first windows trained
    line = f"exp: 10 windows x 3 schedules x 2 seeds in 3.5 s ({timing_text(Outcome)})"
    match = TIMING.search(line)
    assert match is not None and "opening the new store 0.4 s; MLflow logging" in line
    assert {k: float(v) for k, v in match.groupdict().items()} == {
        "seconds": 3.5, "training": 2.0, "other": 1.5, "store": 0.4, "logging": 1.2}
    figures = {"windows": 10, "rows": 484, "features": 20, "hidden": [64, 64], "schedules": ["a", "b", "c"],
               "seeds": 2, "epochs": 20, "batch_size": 64, "threads": 1, "repeats": 2, "plain_s": 6.0,
               "harness_s": 3.0, "e2e_speedup": 2.0, "plain_cpu_s": 5.9, "harness_cpu_s": 4.0,
               "torch_import_s": 1.2, "harness_beyond_torch_s": 1.8,
               "harness_timing": {k: float(v) for k, v in match.groupdict().items()}}
    text = format_e2e(figures)
    assert "e2e_speedup 2.00x" in text and "exits 1.80 s after it" in text and "training 2.00 s" in text
    assert "waiting for the new store 0.40 s" in text


@pytest.mark.parametrize(("option", "value"), [("--windows", "0"), ("--rows", "0"), ("--threads", "0"),
                                               ("--repeats", "0"), ("--epochs", "-1")])
def test_cli_bench_e2e_rejects_bad_sizes_in_one_line(cli, option, value):
    done = cli("bench", "--e2e", option, value)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"harness: error: {option}: must be > 0, got {value}"


def test_bench_e2e_rejects_more_windows_than_the_data_holds():
    with pytest.raises(HarnessError, match="--windows: 1000 windows"):
        e2e_config(_data_file(None), 1000)


def test_the_plain_script_is_a_plain_script():
    """It imports numpy, pandas and torch only: the baseline owes nothing to the harness."""
    source = Path(PLAIN).read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "json", "math", "sys", "time", "numpy", "pandas", "torch"}
