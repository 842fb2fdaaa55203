"""``harness bench`` smoke test: tiny sizes, no time assertions (the machine is noisy)."""

from __future__ import annotations

import math

import pytest
import torch

import numpy as np

from harness.bench import (
    _peak_in_child,
    _peak_rss_above,
    _training_flops,
    bench_members,
    bench_scaling,
    bench_windows,
    format_report,
    format_windows_report,
)
from harness.cli import main
from harness.errors import HarnessError


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_members_measures_both_sides_of_the_same_work():
    figures = bench_members(n_members=3, rows=40, features=3, hidden=(4,), epochs=2, batch_size=16, repeats=1)
    for key in ("batched_s", "vmap_s", "plain_s", "peak_gflops", "batched_gflops"):
        assert figures[key] > 0 and math.isfinite(figures[key]), key
    assert figures["speedup"] == pytest.approx(figures["plain_s"] / figures["batched_s"])
    assert figures["peak_fraction"] == pytest.approx(figures["batched_gflops"] / figures["peak_gflops"])
    assert figures["steps"] == 2 * 3 and figures["threads"] == 1
    assert figures["max_weight_diff"] < 1e-5  # the plain loop trained the same members
    figures["scaling"] = bench_scaling(n_members=2, rows=20, features=3, hidden=(4,), epochs=1,
                                       batch_size=16, repeats=1, factors=(1, 2))
    assert [e["members"] for e in figures["scaling"]["members"]] == [2, 4]
    assert [e["rows"] for e in figures["scaling"]["rows"]] == [20, 40]
    assert figures["scaling"]["rows"][0]["ratio"] == 1.0
    report = format_report(figures)
    assert "speed-up" in report and "cost as members grow (2 -> 4)" in report


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
