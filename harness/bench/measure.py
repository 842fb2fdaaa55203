"""How ``harness bench`` measures: interleaved median timings, peak resident memory, matmul FLOPs."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def _timed(runs: dict[str, Callable[[], Any]], repeats: int,
           warm_up: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each run, interleaved; plus each run's last output. One untimed warm-up
    of each run (of those named in ``warm_up``, when given)."""
    outputs = {name: run() for name, run in runs.items() if warm_up is None or name in warm_up}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, outputs


def _ratios(axis: str, runs: dict[int, Callable[[], Any]], repeats: int) -> list[dict[str, float]]:
    seconds, _ = _timed({str(size): run for size, run in runs.items()}, repeats)
    first = seconds[str(next(iter(runs)))]
    return [{axis: size, "seconds": seconds[str(size)], "ratio": seconds[str(size)] / first} for size in runs]


def _peak_rss_above(run: Callable[[], Any], interval: float = 0.002) -> float:
    """Peak resident memory (bytes) while ``run`` runs, above the resident memory before it.

    Sampled from ``/proc/self/statm`` by a thread (torch releases the GIL in its kernels); 0 where
    ``/proc`` is missing.
    """
    try:
        statm = open("/proc/self/statm", "rb")
    except OSError:
        run()
        return 0.0
    page = __import__("os").sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        statm.seek(0)
        return int(statm.read().split()[1]) * page

    before, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], resident())
        statm.close()
    return float(max(peak[0] - before, 0))


def peak_flops(size: int = 1024, repeats: int = 3) -> float:
    """This machine's fp32 matmul FLOP/s (best of ``repeats``) at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _training_flops(features: int, hidden: Sequence[int], samples: int) -> float:
    """Matmul FLOPs of training on ``samples`` row-passes: 2·in·out forward, 2·in·out for the weight
    gradient, and 2·in·out for the input gradient of every layer but the first."""
    sizes = [features, *hidden, 1]
    per_row = sum((4 if k == 0 else 6) * a * b for k, (a, b) in enumerate(zip(sizes, sizes[1:])))
    return float(per_row) * samples


def _max_relative_diff(batched: np.ndarray, plain: np.ndarray) -> float:
    return float(np.max(np.abs(batched - plain)) / np.max(np.abs(plain)))
