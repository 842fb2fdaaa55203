"""``harness bench --scale``: wall time of whole backtests as windows, members and rows double, and
the executors against each other on this machine (design sections 10 and 11).

Every figure is one ``run_plan`` (windows trained and predicted, no MLflow) on a seeded synthetic
GBM path, so the data are the same on every machine. Sizes double one at a time from a base
backtest; ``ratio`` is the time over the base's (1.0 doubles nothing; 2.0 is linear growth). The
executor rows run the doubled-windows backtest: ``local`` at the caller's torch threads and at
this machine's core count, ``process`` with ``workers`` one-thread processes (pool start-up included).
Times are medians of ``repeats``; no figure is asserted anywhere, the machine is shared and noisy.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from harness.config import Config, parse_config

LOOKBACK, HORIZON = 22, 5
SCHEDULES = ["constant", {"name": "step", "step_size": 0.33, "gamma": 0.1},
             {"name": "cosine", "min_lr_ratio": 0.01, "warmup": 0.05}, "wsd", "schedule_free"]
"""The five schedules of the design's example config (fixed, so figures stay comparable)."""


@dataclass(frozen=True)
class Sizes:
    """One backtest's size: windows, members (:data:`SCHEDULES`, 5, x seeds), train rows per window;
    the other defaults are the default config's (design section 2)."""

    windows: int = 16
    seeds: int = 3
    train: int = 756
    test: int = 21
    epochs: int = 40
    hidden: int = 64

    def config(self, executor: str = "local", workers: int = 1) -> Config:
        # rows of the strategy table = days minus the lookback and the label horizon
        n_days = LOOKBACK + HORIZON + self.train + HORIZON + self.test * self.windows
        return parse_config({
            "experiment": "bench-scale",
            "data": {"source": "synthetic", "synthetic": {"model": "gbm", "n_days": n_days, "seed": 0}},
            "strategy": {"name": "volatility_forecast", "params": {"lookback": LOOKBACK, "horizon": HORIZON}},
            "model": {"hidden": [self.hidden, self.hidden]},
            "training": {"epochs": self.epochs, "batch_size": 128, "seeds": self.seeds},
            "windows": {"train": self.train, "test": self.test, "purge": HORIZON},
            "schedules": list(SCHEDULES),
            "execution": {"executor": executor, "workers": workers},
        })


def bench_scale(base: Sizes = Sizes(), *, workers: int = 2, repeats: int = 1) -> dict[str, Any]:
    """Seconds per backtest as each size doubles, and per executor.

    Returns ``{"base": {...sizes}, "axes": [{"axis", "windows", "members", "rows", "seconds",
    "ratio"}], "executors": [{"executor", "workers", "threads", "windows", "seconds", "speedup"}]}``
    where ``speedup`` is the first row's seconds (``local`` at the caller's torch threads) over the row's.
    """
    import torch

    threads = torch.get_num_threads()
    first = _seconds(base, repeats)
    axes = [_row("base", base, first, first)]
    doubled = {
        "windows": Sizes(**{**base.__dict__, "windows": 2 * base.windows}),
        "members": Sizes(**{**base.__dict__, "seeds": 2 * base.seeds}),
        "rows": Sizes(**{**base.__dict__, "train": 2 * base.train}),
    }
    for axis, sizes in doubled.items():
        axes.append(_row(axis, sizes, _seconds(sizes, repeats), first))
    wide = doubled["windows"]
    here = axes[1]["seconds"]
    executors = [{"executor": "local", "workers": 1, "threads": threads, "windows": wide.windows,
                  "seconds": here, "speedup": 1.0}]
    cores = os.cpu_count() or 1
    if cores != threads:
        torch.set_num_threads(cores)
        try:
            seconds = _seconds(wide, repeats)
        finally:
            torch.set_num_threads(threads)
        executors.append({"executor": "local", "workers": 1, "threads": cores, "windows": wide.windows,
                          "seconds": seconds, "speedup": here / seconds})
    seconds = _seconds(wide, repeats, "process", workers)
    executors.append({"executor": "process", "workers": workers, "threads": 1, "windows": wide.windows,
                      "seconds": seconds, "speedup": here / seconds})
    return {"base": {**base.__dict__, "members": _members(base)}, "cores": cores, "axes": axes,
            "executors": executors}


def format_scale(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_scale` as two markdown tables."""
    base = figures["base"]
    lines = [
        f"whole backtests (volatility_forecast on synthetic GBM, MLP {base['hidden']}-{base['hidden']}, "
        f"{base['epochs']} epochs, test {base['test']} rows per window; no MLflow), "
        f"{figures['cores']} cores",
        "",
        "| doubled | windows | members | train rows | seconds | x base |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {r['axis']} | {r['windows']} | {r['members']} | {r['rows']} | {r['seconds']:.2f} | {r['ratio']:.2f} |"
          for r in figures["axes"]),
        "",
        "| executor | workers | torch threads | windows | seconds | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {r['executor']} | {r['workers']} | {r['threads']} | {r['windows']} | {r['seconds']:.2f} | "
          f"{r['speedup']:.2f}x |" for r in figures["executors"]),
    ]
    return "\n".join(lines)


def _row(axis: str, sizes: Sizes, seconds: float, first: float) -> dict[str, Any]:
    return {"axis": axis, "windows": sizes.windows, "members": _members(sizes), "rows": sizes.train,
            "seconds": seconds, "ratio": seconds / first}


def _members(sizes: Sizes) -> int:
    return len(SCHEDULES) * sizes.seeds


def _seconds(sizes: Sizes, repeats: int, executor: str = "local", workers: int = 1) -> float:
    """Median wall seconds of training and predicting every window (data and plan excluded)."""
    from harness.backtest import plan, run_windows

    the_plan = plan(sizes.config(executor, workers))
    if len(the_plan.windows) != sizes.windows:  # the arithmetic above is the window plan's
        raise RuntimeError(f"expected {sizes.windows} windows, the plan has {len(the_plan.windows)}")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_windows(the_plan, progress=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
