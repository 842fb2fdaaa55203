"""The walk-forward workload (:func:`bench_windows`): many windows trained by a plain loop, window by
window in stacks, or all in one stack; seconds, peak memory and prediction agreement."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from harness.bench.measure import _peak_rss_above, _timed
from harness.bench.plain import _plain_windows
from harness.bench.workloads import LR, WINDOW_SCHEDULES, _walk_forward
from harness.errors import HarnessError
from harness.training import WindowData, train_windows, training_bytes


def bench_windows(n_windows: int = 10, rows: int = 504, features: int = 20, hidden: Sequence[int] = (64, 64),
                  epochs: int = 20, batch_size: int = 64, seeds: int = 2, test_rows: int = 21, repeats: int = 3,
                  data_path: str | None = None, seed: int = 0, measure_memory: bool = True) -> dict[str, Any]:
    """The walk-forward workload trained three ways: seconds, peak memory, prediction agreement.

    Data: S&P 500 daily ``return_forecast`` features (``features - 4`` lagged returns, trailing
    volatility, three momenta) from the bundled CSV; ``n_windows`` rolling windows of ``rows``
    train rows (the latest ones), each scaled on its own train rows and predicting the
    ``test_rows`` after its purge gap. Members: 3 schedules × ``seeds``, trained on all train rows.

    Ways: ``plain_s``, a torch loop per member (``AdamW`` + ``LambdaLR`` + a ``DataLoader``);
    ``per_window_s``, each window's members in one stack, windows in turn; ``stacked_s``, every
    window's members in one stack. Returns those medians, ``speedup_windows`` (plain /
    stacked), ``stack_gain`` (per-window / stacked), ``peak_mb`` (each way's peak resident memory
    above what its process held before it, each way run once in a fresh interpreter; skipped
    without ``measure_memory``), ``stack_estimate_mb`` (what ``training_bytes`` estimates for the
    all-window stack), ``max_rss_mb`` (this process's peak), ``max_prediction_diff`` (largest
    difference of out-of-sample predictions between any two ways, relative to the largest
    prediction) and ``stack_prediction_diff`` (the same, per-window vs all-window stack: 0, bitwise).
    """
    workload = dict(n_windows=n_windows, rows=rows, features=features, hidden=tuple(hidden), epochs=epochs,
                    batch_size=batch_size, seeds=seeds, test_rows=test_rows, data_path=data_path, seed=seed)
    runs = _window_runs(**workload)
    peaks = {name: _peak_in_child(name, workload) if measure_memory else None for name in runs}
    _warm_up(workload)
    seconds, outputs = _timed(runs, repeats, warm_up=())
    scale = float(np.max(np.abs(outputs["plain_s"])))
    diffs = {(a, b): float(np.max(np.abs(outputs[a] - outputs[b]))) / scale
             for a, b in (("plain_s", "per_window_s"), ("plain_s", "stacked_s"), ("per_window_s", "stacked_s"))}
    estimate = n_windows * training_bytes({"hidden": list(hidden)}, features, batch_size, rows,
                                          len(WINDOW_SCHEDULES) * seeds)
    import resource

    return {
        "windows": n_windows, "rows": rows, "features": features, "hidden": list(hidden), "epochs": epochs,
        "batch_size": batch_size, "members": len(WINDOW_SCHEDULES) * seeds, "test_rows": test_rows,
        "steps": epochs * math.ceil(rows / batch_size), "repeats": repeats, "threads": torch.get_num_threads(),
        **seconds,
        "speedup_windows": seconds["plain_s"] / seconds["stacked_s"],
        "stack_gain": seconds["per_window_s"] / seconds["stacked_s"],
        "peak_mb": {name.removesuffix("_s"): None if value is None else value / 2**20 for name, value in peaks.items()},
        "stack_estimate_mb": estimate / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_prediction_diff": max(diffs.values()),
        "stack_prediction_diff": diffs[("per_window_s", "stacked_s")],
    }


def _window_runs(n_windows: int, rows: int, features: int, hidden: tuple[int, ...], epochs: int, batch_size: int,
                 seeds: int, test_rows: int, data_path: str | None, seed: int) -> dict[str, Callable[[], np.ndarray]]:
    """The three ways of :func:`bench_windows`, each returning ``[windows, members, test rows]`` predictions."""
    windows = _walk_forward(n_windows, rows, features, test_rows, data_path)
    model = {"hidden": list(hidden)}
    settings = dict(model=model, schedules=list(WINDOW_SCHEDULES), seeds=seeds, epochs=epochs,
                    batch_size=batch_size, lr=LR, seed=seed)
    data = [WindowData(X, y) for X, y, _ in windows]
    tests = [X_test for _, _, X_test in windows]
    return {
        "plain_s": lambda: _plain_windows(windows, model, seeds, epochs, batch_size, seed),
        "per_window_s": lambda: _stacked_predictions([train_windows([d], **settings)[0] for d in data], tests),
        "stacked_s": lambda: _stacked_predictions(train_windows(data, **settings), tests),
    }


def _peak_in_child(name: str, workload: dict[str, Any]) -> float:
    """Peak memory (bytes) of one way, measured in a fresh interpreter, so that memory another way
    freed (and the allocator kept) cannot hide it."""
    import json
    import os
    import subprocess
    import sys

    code = ("import sys, json; from harness.bench.windows import _measure_peak; "
            "print(_measure_peak(**json.load(sys.stdin)))")
    request = json.dumps({"name": name, "workload": workload, "threads": torch.get_num_threads()})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], input=request, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise HarnessError(f"bench: measuring the memory of '{name}' failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _measure_peak(name: str, workload: dict[str, Any], threads: int) -> float:
    torch.set_num_threads(threads)
    _warm_up(workload)  # torch's kernels and the data loaded first: that memory is not the way's
    return _peak_rss_above(_window_runs(**workload)[name])


def _warm_up(workload: dict[str, Any]) -> None:
    """Every way once on one window for one epoch (first calls load kernels and modules)."""
    for run in _window_runs(**{**workload, "n_windows": 1, "epochs": 1}).values():
        run()


def _stacked_predictions(results: list[Any], tests: list[np.ndarray]) -> np.ndarray:
    return np.stack([result.predict(X_test) for result, X_test in zip(results, tests)])
