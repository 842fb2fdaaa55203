"""``harness bench`` smoke test: tiny sizes, no time assertions (the machine is noisy)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.bench import _training_flops, bench_members, bench_scaling, format_report


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
