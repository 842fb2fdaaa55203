"""``harness bench`` smoke test: tiny sizes, no time assertions (the machine is noisy)."""

from __future__ import annotations

import json
import math
import numpy as np
import pytest
import torch

from harness.bench import (
    BENCH_SCHEDULES,
    REFERENCE,
    bench_members,
    bench_scaling,
    bench_windows,
    format_report,
    format_windows_report,
    member_grid,
)
from harness.bench.measure import _peak_rss_above, _training_flops
from harness.bench.windows import _peak_in_child
from harness.cli import main
from harness.errors import HarnessError

@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(rows=40, features=3, hidden=(4,), epochs=2, batch_size=16, repeats=1)


@pytest.mark.slow
def test_bench_members_measures_both_sides_of_the_same_work():
    figures = bench_members(n_members=6, **TINY, wide=None)
    for key in ("seconds_batched", "seconds_vmap", "seconds_loop", "peak_gflops", "gflops"):
        assert figures[key] > 0 and math.isfinite(figures[key]), key
    assert figures["speedup"] == pytest.approx(figures["seconds_loop"] / figures["seconds_batched"])
    assert figures["peak_fraction"] == pytest.approx(figures["gflops"] / figures["peak_gflops"])
    assert figures["steps"] == 2 * 3 and figures["threads"] == 1
    assert figures["schedules"] == list(BENCH_SCHEDULES[:6]) and figures["seeds"] == 1
    assert figures["max_rel_diff"] < 1e-5  # the plain loop trained the same members
    assert list(figures["rel_diff_by_schedule"]) == list(BENCH_SCHEDULES[:6])
    # per schedule relative to its own largest weight, overall to the largest of all: never below it
    assert max(figures["rel_diff_by_schedule"].values()) >= figures["max_rel_diff"] * (1 - 1e-12)
    assert "wide" not in figures
    figures["scaling"] = bench_scaling(n_members=2, rows=20, features=3, hidden=(4,), epochs=1,
                                       batch_size=16, repeats=1, factors=(1, 2))
    assert [e["members"] for e in figures["scaling"]["members"]] == [2, 4]
    assert [e["rows"] for e in figures["scaling"]["rows"]] == [20, 40]
    assert figures["scaling"]["rows"][0]["ratio"] == 1.0
    report = format_report(figures)
    assert "speedup" in report and "6 members (6 schedules x 1 seeds)" in report
    assert "cost as members grow (2 -> 4)" in report


def test_the_plain_loop_trains_each_schedule_and_seed_as_the_batched_trainer_does():
    # 10 schedules x 2 seeds: a member's LR table, init and batch order all follow its (schedule, seed)
    figures = bench_members(n_members=20, **{**TINY, "epochs": 3}, wide=None)
    assert figures["schedules"] == list(BENCH_SCHEDULES) and figures["seeds"] == 2
    assert figures["max_rel_diff"] < 1e-5


@pytest.mark.parametrize("members, grid", [(30, 10 * [3]), (15, 5 * [3]), (12, 6 * [2]), (7, 7 * [1]),
                                           (11, 1 * [11]), (1, [1])])
def test_members_are_the_largest_grid_of_up_to_10_schedules(members, grid):
    schedules, seeds = member_grid(members)
    assert schedules == BENCH_SCHEDULES[:len(grid)] and [seeds] * len(schedules) == grid


def test_the_wide_workload_reports_its_throughput():
    figures = bench_members(n_members=2, **TINY, wide={"width": 8, "depth": 3, "batch_size": 32, "epochs": 1})
    wide = figures["wide"]
    assert wide["hidden"] == [8, 8, 8] and wide["batch_size"] == 32 and wide["epochs"] == 1 and wide["steps"] == 2
    # the throughput is the wide workload's own FLOPs (3 -> 8 -> 8 -> 8 -> 1, 40 rows, 1 epoch, 2 members)
    # over its own seconds, and its fraction of the same peak as the main workload's
    assert math.isfinite(wide["seconds"]) and wide["seconds"] > 0
    wide_flops = _training_flops(3, (8, 8, 8), samples=40 * 1 * 2)
    assert figures["wide_gflops"] == pytest.approx(wide_flops / wide["seconds"] / 1e9)
    assert figures["wide_peak_fraction"] == pytest.approx(figures["wide_gflops"] / figures["peak_gflops"])
    report = format_report(figures)
    assert f"MLP 3-8-8-8-1, batch 32, 1 epochs: {wide['seconds']:.3f} s, {figures['wide_gflops']:.2f} GFLOP/s" in report
    assert f"wide_peak_fraction {figures['wide_peak_fraction']:.3f}" in report


CLI_TINY = ["--rows", "40", "--features", "3", "--epochs", "2", "--batch-size", "16", "--repeats", "1",
            "--threads", "1"]


def test_cli_bench_honours_its_options_and_writes_the_figures(cli, tmp_path):
    out = tmp_path / "bench.json"
    done = cli("bench", "--members", "4", "--width", "5", "--depth", "3", *CLI_TINY, "--no-wide", "--json", str(out))
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    for key in ("speedup", "peak_fraction", "max_rel_diff", "members", "seconds_batched", "seconds_loop"):
        assert key in figures, key
    assert figures["members"] == 4 and figures["hidden"] == [5, 5, 5] and figures["threads"] == 1
    assert figures["rows"] == 40 and figures["features"] == 3 and figures["epochs"] == 2
    assert figures["batch_size"] == 16 and figures["steps"] == 2 * 3 and "wide" not in figures
    assert figures["speedup"] > 0 and 0 < figures["peak_fraction"] and figures["max_rel_diff"] < 1e-4
    assert "speedup" in done.stdout and "peak_fraction" in done.stdout and "max_rel_diff" in done.stdout


def test_cli_bench_defaults_are_the_reference_workload():
    from harness.cli import build_parser

    args = build_parser().parse_args(["bench"])
    assert (args.members, args.width, args.depth, args.features) == (30, 64, 2, 20)
    assert args.threads is None and not args.no_wide  # None: torch's default, all cores
    assert REFERENCE == dict(n_members=30, rows=1000, features=20, width=64, depth=2, epochs=50, batch_size=64)
    assert member_grid(30) == (BENCH_SCHEDULES, 3)


@pytest.mark.parametrize("option, value", [("--width", "0"), ("--depth", "0"), ("--members", "0"),
                                           ("--batch-size", "-1"), ("--threads", "0"), ("--epochs", "0")])
def test_cli_bench_rejects_bad_sizes_in_one_line(cli, option, value):
    done = cli("bench", option, value, "--json", "/tmp/never-written.json")
    assert done.returncode == 2
    assert done.stderr.strip() == f"harness: error: {option}: must be > 0, got {value}"
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_bench_rejects_a_json_path_in_a_missing_folder_before_measuring(cli, tmp_path):
    done = cli("bench", "--json", str(tmp_path / "no" / "b.json"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"harness: error: --json: the folder of {tmp_path / 'no' / 'b.json'} does not exist\n"


def test_training_flops_count_forward_and_backward_matmuls():
    # 3 -> 4 -> 1: first layer 2*12 forward + 2*12 weight grads; last 2*4 * 3 (plus input grads)
    assert _training_flops(3, (4,), samples=10) == 10 * (4 * 12 + 6 * 4)


TINY_WINDOWS = dict(n_windows=3, rows=40, features=6, hidden=(4,), epochs=2, batch_size=16, seeds=1, test_rows=5)


def test_bench_windows_measures_three_ways_of_the_same_walk_forward():
    figures = bench_windows(**TINY_WINDOWS, repeats=1, measure_memory=False)
    for key in ("plain_s", "per_window_s", "stacked_s", "stack_estimate_mb", "max_rss_mb"):
        assert figures[key] > 0 and math.isfinite(figures[key]), key
    assert figures["speedup_windows"] == pytest.approx(figures["plain_s"] / figures["stacked_s"])
    assert figures["stack_gain"] == pytest.approx(figures["per_window_s"] / figures["stacked_s"])
    assert figures["members"] == 3 and figures["steps"] == 2 * 3 and figures["threads"] == 1
    assert figures["stack_prediction_diff"] == 0.0  # stacking windows changes no bit
    assert 0 < figures["max_prediction_diff"] < 1e-5  # the plain loop trained the same members
    report = format_windows_report(figures)
    assert "all 9 members of all windows in one stack" in report and "speedup_windows" in report


@pytest.mark.slow
def test_peak_memory_is_what_a_run_allocates_above_what_was_held():
    held = []
    peak = _peak_rss_above(lambda: held.append(np.ones(40 * 2**20 // 8)))  # 40 MiB, kept alive
    assert 35 * 2**20 < peak < 200 * 2**20
    workload = {**TINY_WINDOWS, "n_windows": 1, "data_path": None, "seed": 0}
    assert 0 <= _peak_in_child("stacked_s", workload) < 200 * 2**20


def test_bench_windows_rejects_more_windows_than_the_data_holds(capsys):
    with pytest.raises(HarnessError, match="--windows: 400 windows of 504 \\+ 21 rows need"):
        bench_windows(n_windows=400, repeats=1, measure_memory=False)
    assert main(["bench", "--windows", "0"]) == 2
    assert "--windows: must be > 0, got 0" in capsys.readouterr().err
