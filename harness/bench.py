"""``harness bench``: the batched trainer against the plain torch loop, as ratios in one process.

The plain loop is what one would write per member: ``torch.manual_seed(seed)``, the model,
``torch.optim.AdamW`` + a ``LambdaLR`` scheduler, a ``DataLoader`` over a ``TensorDataset``; the
batched run trains the same members on the same batches with the same steps (their final
weights agree, reported as ``max_weight_diff``). Times are medians over ``repeats``, measured
interleaved so that machine noise hits both sides alike. The FLOP/s figure counts the matmul work
of training (forward, and backward for the weights and hidden activations), against this
machine's fp32 ``torch.matmul`` peak measured in the same run at the same thread count.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from harness.schedules import lr_table
from harness.stack import make_model_factory
from harness.trainer import train

SCHEDULE = "cosine"
LR = 1e-3


def bench_members(n_members: int = 15, rows: int = 756, features: int = 20, hidden: Sequence[int] = (64, 64),
                  epochs: int = 20, batch_size: int = 128, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Seconds of the batched trainer (batched-matmul and vmap paths) and of the plain loop.

    Returns a dict: the sizes, ``threads``, ``steps`` (per member), ``batched_s``, ``vmap_s``,
    ``plain_s`` (medians), ``speedup`` (plain / batched), ``vmap_speedup`` (plain / vmap),
    ``batched_gflops``, ``peak_gflops``, ``peak_fraction`` (batched / peak) and
    ``max_weight_diff`` (largest relative difference of final weights, batched vs plain).
    """
    X, y = _data(rows, features, seed)
    model = {"hidden": list(hidden)}
    runs = {
        "batched_s": lambda: _batched(X, y, model, n_members, epochs, batch_size, seed, "bmm"),
        "vmap_s": lambda: _batched(X, y, model, n_members, epochs, batch_size, seed, "vmap"),
        "plain_s": lambda: _plain(X, y, model, n_members, epochs, batch_size, seed),
    }
    seconds, outputs = _timed(runs, repeats)
    steps = epochs * math.ceil(rows / batch_size)
    flops = _training_flops(features, hidden, rows * epochs * n_members)
    peak = peak_flops(repeats=max(repeats, 3))
    return {
        "members": n_members, "rows": rows, "features": features, "hidden": list(hidden),
        "epochs": epochs, "batch_size": batch_size, "steps": steps, "repeats": repeats,
        "threads": torch.get_num_threads(),
        **seconds,
        "speedup": seconds["plain_s"] / seconds["batched_s"],
        "vmap_speedup": seconds["plain_s"] / seconds["vmap_s"],
        "batched_gflops": flops / seconds["batched_s"] / 1e9,
        "peak_gflops": peak / 1e9,
        "peak_fraction": flops / seconds["batched_s"] / peak,
        "max_weight_diff": _max_relative_diff(outputs["batched_s"], outputs["plain_s"]),
    }


def bench_scaling(n_members: int = 15, rows: int = 756, features: int = 20, hidden: Sequence[int] = (64, 64),
                  epochs: int = 20, batch_size: int = 128, repeats: int = 3, factors: Sequence[int] = (1, 2, 4),
                  seed: int = 0) -> dict[str, list[dict[str, float]]]:
    """How the batched trainer's time grows with members and with rows.

    Each entry: the size, ``seconds`` (median) and ``ratio`` (seconds over the first size's);
    a ratio below the size factor is sub-linear growth (members should be; rows are ~linear).
    """
    model = {"hidden": list(hidden)}
    X, y = _data(rows * max(factors), features, seed)
    member_runs = {
        n: (lambda n=n: _batched(X[:rows], y[:rows], model, n, epochs, batch_size, seed, "auto"))
        for n in (n_members * f for f in factors)
    }
    row_runs = {
        r: (lambda r=r: _batched(X[:r], y[:r], model, n_members, epochs, batch_size, seed, "auto"))
        for r in (rows * f for f in factors)
    }
    return {"members": _ratios("members", member_runs, repeats), "rows": _ratios("rows", row_runs, repeats)}


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


def format_report(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_members` (and ``figures["scaling"]``) as text."""
    f = figures
    lines = [
        f"members {f['members']}, rows {f['rows']}, features {f['features']}, "
        f"MLP {'-'.join(map(str, f['hidden']))}, "
        f"epochs {f['epochs']}, batch {f['batch_size']} ({f['steps']} steps/member), threads {f['threads']}, "
        f"medians of {f['repeats']}",
        f"plain loop (AdamW + LambdaLR + DataLoader per member)  {f['plain_s']:8.3f} s",
        f"batched, batched matmuls                               {f['batched_s']:8.3f} s"
        f"   speed-up {f['speedup']:5.1f}x",
        f"batched, vmap(functional_call)                         {f['vmap_s']:8.3f} s"
        f"   speed-up {f['vmap_speedup']:5.1f}x",
        f"batched matmul throughput {f['batched_gflops']:.2f} GFLOP/s = {100 * f['peak_fraction']:.1f}% of this "
        f"machine's fp32 matmul peak ({f['peak_gflops']:.1f} GFLOP/s)",
        f"same members: final weights agree to {f['max_weight_diff']:.1e} (relative)",
    ]
    for axis, entries in f.get("scaling", {}).items():
        base = entries[0][axis]
        cells = ", ".join(f"x{e[axis] / base:g}: {e['ratio']:.2f}x time" for e in entries)
        lines.append(f"cost as {axis} grow ({base} -> {entries[-1][axis]}): {cells}")
    return "\n".join(lines)


def _data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = (np.tanh(X @ rng.normal(size=features) / math.sqrt(features)) + 0.1 * rng.normal(size=rows))
    return X, y.astype(np.float32)


def _batched(X: np.ndarray, y: np.ndarray, model: dict, n_members: int, epochs: int, batch_size: int,
             seed: int, path: str) -> np.ndarray:
    result = train(X, y, model=model, schedules=[SCHEDULE], seeds=n_members, epochs=epochs,
                   batch_size=batch_size, lr=LR, seed=seed, stack_path=path)
    return torch.cat([value.flatten(1) for value in result.state.values()], dim=1).numpy()


def _plain(X: np.ndarray, y: np.ndarray, model: dict, n_members: int, epochs: int, batch_size: int,
           seed: int) -> np.ndarray:
    """The per-member loop the batched trainer replaces."""
    factory = make_model_factory(model, X.shape[1])
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    total = epochs * math.ceil(len(X) / batch_size)
    table = lr_table(SCHEDULE, total, LR)
    weights = []
    for member_seed in range(seed, seed + n_members):
        torch.manual_seed(member_seed)
        net = factory()
        optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)  # torch's default is 0.01
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: table[min(t, total - 1)] / LR)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(member_seed))
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                F.mse_loss(net(xb), yb).backward()
                optimizer.step()
                scheduler.step()
        weights.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return torch.stack(weights).numpy()


def _timed(runs: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each run, interleaved; plus each run's last output. One untimed warm-up each."""
    outputs = {name: run() for name, run in runs.items()}
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


def _training_flops(features: int, hidden: Sequence[int], samples: int) -> float:
    """Matmul FLOPs of training on ``samples`` row-passes: 2·in·out forward, 2·in·out for the weight
    gradient, and 2·in·out for the input gradient of every layer but the first."""
    sizes = [features, *hidden, 1]
    per_row = sum((4 if k == 0 else 6) * a * b for k, (a, b) in enumerate(zip(sizes, sizes[1:])))
    return float(per_row) * samples


def _max_relative_diff(batched: np.ndarray, plain: np.ndarray) -> float:
    return float(np.max(np.abs(batched - plain)) / np.max(np.abs(plain)))
