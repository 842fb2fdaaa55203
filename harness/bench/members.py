"""One window's schedules × seeds: the batched trainer against the plain loop (:func:`bench_members`),
the batched trainer alone on a wider MLP, and how its time grows with members and rows
(:func:`bench_scaling`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from harness.bench.measure import (
    _max_relative_diff,
    _ratios,
    _timed,
    _training_flops,
    peak_flops,
)
from harness.bench.plain import _plain
from harness.bench.workloads import LR, WIDE, _check_sizes, _data, member_grid
from harness.errors import HarnessError
from harness.training import train


def bench_members(n_members: int = 30, rows: int = 1000, features: int = 20, hidden: Sequence[int] = (64, 64),
                  epochs: int = 50, batch_size: int = 64, repeats: int = 3, seed: int = 0,
                  wide: Mapping[str, Any] | None = WIDE) -> dict[str, Any]:
    """Seconds of the batched trainer (batched-matmul and vmap paths) and of the plain loop on the
    same members: ``n_members`` = schedules x seeds (:func:`member_grid`), each member trained on
    the same ``rows`` x ``features`` rows for ``epochs`` epochs of batches of ``batch_size``.

    The plain loop trains member (schedule, seed) as a user would: ``torch.manual_seed(seed)``,
    the model, ``AdamW`` + ``LambdaLR`` over the schedule's LR table, a ``DataLoader`` shuffled by
    a generator seeded with ``seed``; the batched trainer draws the same batches, so both end
    with the same weights up to float32 roundoff (``max_rel_diff``).

    ``wide``: also time the batched trainer alone on a wider workload (keys ``width``, ``depth``,
    ``batch_size``, ``epochs`` overriding the main workload's; None: skip), for its matmul
    throughput (``wide_gflops``, ``wide_peak_fraction``).

    Returns a dict: the sizes, ``schedules``, ``seeds``, ``threads``, ``steps`` (per member),
    ``seconds_batched``, ``seconds_vmap``, ``seconds_loop`` (medians), ``speedup`` (loop /
    batched), ``vmap_speedup`` (loop / vmap), ``gflops`` (batched), ``peak_gflops`` (this
    machine's fp32 matmul peak at this thread count), ``peak_fraction`` (gflops / peak),
    ``max_rel_diff`` (largest difference of final weights, batched vs loop, relative to the
    largest weight) and, with ``wide``, ``wide`` (its sizes and seconds), ``wide_gflops`` and
    ``wide_peak_fraction``.
    """
    _check_sizes(n_members=n_members, rows=rows, features=features, epochs=epochs, batch_size=batch_size,
                 repeats=repeats)
    hidden = list(hidden)
    if not hidden or any(w <= 0 for w in hidden):
        raise HarnessError(f"--width, --depth: must be > 0, got hidden layers {hidden}")
    schedules, seeds = member_grid(n_members)
    X, y = _data(rows, features, seed)
    model = {"hidden": hidden}
    work = dict(model=model, schedules=schedules, seeds=seeds, epochs=epochs, batch_size=batch_size, seed=seed)
    runs = {
        "seconds_batched": lambda: _batched(X, y, **work, path="bmm"),
        "seconds_vmap": lambda: _batched(X, y, **work, path="vmap"),
        "seconds_loop": lambda: _plain(X, y, **work),
    }
    seconds, outputs = _timed(runs, repeats)
    flops = _training_flops(features, hidden, rows * epochs * n_members)
    peak = peak_flops(repeats=max(repeats, 5))  # best of: more tries, less noise
    figures = {
        "members": n_members, "schedules": list(schedules), "seeds": seeds, "rows": rows, "features": features,
        "hidden": hidden, "width": hidden[0], "depth": len(hidden), "epochs": epochs, "batch_size": batch_size,
        "steps": epochs * math.ceil(rows / batch_size), "repeats": repeats, "threads": torch.get_num_threads(),
        **seconds,
        "speedup": seconds["seconds_loop"] / seconds["seconds_batched"],
        "vmap_speedup": seconds["seconds_loop"] / seconds["seconds_vmap"],
        "gflops": flops / seconds["seconds_batched"] / 1e9,
        "peak_gflops": peak / 1e9,
        "peak_fraction": flops / seconds["seconds_batched"] / peak,
        "max_rel_diff": _max_relative_diff(outputs["seconds_batched"], outputs["seconds_loop"]),
        # float32 roundoff (different matmul kernels) grows over a long run at a high LR: per schedule
        "rel_diff_by_schedule": {
            str(name): _max_relative_diff(outputs["seconds_batched"][k * seeds:(k + 1) * seeds],
                                          outputs["seconds_loop"][k * seeds:(k + 1) * seeds])
            for k, name in enumerate(schedules)},
    }
    if wide is not None:
        figures.update(_bench_wide(X, y, n_members, features, {**dict(width=hidden[0], depth=len(hidden),
                                   batch_size=batch_size, epochs=epochs), **wide}, repeats, seed, peak))
    return figures


def _bench_wide(X: np.ndarray, y: np.ndarray, n_members: int, features: int, sizes: dict[str, int], repeats: int,
                seed: int, peak: float) -> dict[str, Any]:
    """The batched trainer alone on a wider MLP: its seconds and matmul throughput."""
    hidden = [int(sizes["width"])] * int(sizes["depth"])
    schedules, seeds = member_grid(n_members)
    work = dict(model={"hidden": hidden}, schedules=schedules, seeds=seeds, epochs=int(sizes["epochs"]),
                batch_size=int(sizes["batch_size"]), seed=seed)
    seconds, _ = _timed({"seconds": lambda: _batched(X, y, **work, path="bmm")}, repeats)
    flops = _training_flops(features, hidden, len(X) * work["epochs"] * n_members)
    return {
        "wide": {"hidden": hidden, "batch_size": work["batch_size"], "epochs": work["epochs"],
                 "steps": work["epochs"] * math.ceil(len(X) / work["batch_size"]), "seconds": seconds["seconds"]},
        "wide_gflops": flops / seconds["seconds"] / 1e9,
        "wide_peak_fraction": flops / seconds["seconds"] / peak,
    }


def bench_scaling(n_members: int = 30, rows: int = 1000, features: int = 20, hidden: Sequence[int] = (64, 64),
                  epochs: int = 50, batch_size: int = 64, repeats: int = 3, factors: Sequence[int] = (1, 2, 4),
                  seed: int = 0) -> dict[str, list[dict[str, float]]]:
    """How the batched trainer's time grows with members and with rows.

    Each entry: the size, ``seconds`` (median) and ``ratio`` (seconds over the first size's);
    a ratio below the size factor is sub-linear growth (members should be; rows are ~linear).
    Members are schedules x seeds as in :func:`bench_members` (:func:`member_grid`).
    """
    model = {"hidden": list(hidden)}
    X, y = _data(rows * max(factors), features, seed)

    def run(n: int, r: int) -> np.ndarray:
        schedules, seeds = member_grid(n)
        return _batched(X[:r], y[:r], model, schedules, seeds, epochs, batch_size, seed, "auto")

    member_runs = {n: (lambda n=n: run(n, rows)) for n in (n_members * f for f in factors)}
    row_runs = {r: (lambda r=r: run(n_members, r)) for r in (rows * f for f in factors)}
    return {"members": _ratios("members", member_runs, repeats), "rows": _ratios("rows", row_runs, repeats)}


def _batched(X: np.ndarray, y: np.ndarray, model: dict, schedules: Sequence[Any], seeds: int, epochs: int,
             batch_size: int, seed: int, path: str) -> np.ndarray:
    """The batched trainer's final weights, ``[members, parameters]`` (members schedule-major)."""
    result = train(X, y, model=model, schedules=list(schedules), seeds=seeds, epochs=epochs,
                   batch_size=batch_size, lr=LR, seed=seed, stack_path=path)
    return torch.cat([value.flatten(1) for value in result.state.values()], dim=1).numpy()
