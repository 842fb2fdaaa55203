"""``harness bench``: the batched trainer against the plain torch loop, as ratios in one process.

Two workloads: :func:`bench_members` (one window's schedules × seeds) and :func:`bench_windows`
(a walk-forward: many windows, trained by a plain loop, window by window, or all in one stack).

The plain loop is what one would write per member: ``torch.manual_seed(seed)``, the model,
``torch.optim.AdamW`` + a ``LambdaLR`` scheduler over the schedule's LR table, a ``DataLoader``
over a ``TensorDataset`` shuffled by a generator seeded with the member's seed; the batched run
trains the same members on the same batches with the same steps (their final weights agree,
reported as ``max_rel_diff``). Times are medians over ``repeats``, measured interleaved so that
machine noise hits both sides alike, at one thread count for every side. The FLOP/s figure counts
the matmul work of training (forward, and backward for the weights and hidden activations),
against this machine's fp32 ``torch.matmul`` peak measured in the same run at the same thread
count (``peak_fraction``).

The reference workload (issue 4, :data:`REFERENCE`): 30 members = 10 schedules
(:data:`BENCH_SCHEDULES`) × 3 seeds, MLP 20-64-64-1, 1000 rows, batch 64, 50 epochs; plus the
batched trainer alone on a wider MLP (:data:`WIDE`: 3×256, batch 512, 10 epochs) for throughput.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import HarnessError
from harness.schedules import lr_table
from harness.stack import make_model_factory
from harness.trainer import WindowData, train, train_windows, training_bytes

LR = 1e-3

# The reference workload of ``harness bench`` (issue 4): 10 schedules x 3 seeds, MLP 2x64.
BENCH_SCHEDULES = ("constant", "step", "multistep", "exponential", "inverse_sqrt", "linear", "polynomial",
                   "cosine", "cosine_restarts", "onecycle")
REFERENCE = dict(n_members=30, rows=1000, features=20, width=64, depth=2, epochs=50, batch_size=64)
# The wider workload, batched only, for throughput: 3x256, batch 512, fewer epochs (same rows).
WIDE = dict(width=256, depth=3, batch_size=512, epochs=10)


def member_grid(n_members: int) -> tuple[tuple[str, ...], int]:
    """The schedules and seeds per schedule of ``n_members`` bench members.

    ``n_members = S x seeds`` with ``S`` the largest divisor of ``n_members`` up to 10, the
    schedules the first ``S`` of :data:`BENCH_SCHEDULES`: 30 -> 10 x 3, 15 -> 5 x 3, 12 -> 6 x 2,
    7 -> 7 x 1, 11 -> 1 x 11.
    """
    if n_members <= 0:
        raise HarnessError(f"--members: must be > 0, got {n_members}")
    n_schedules = max(d for d in range(1, min(n_members, len(BENCH_SCHEDULES)) + 1) if n_members % d == 0)
    return BENCH_SCHEDULES[:n_schedules], n_members // n_schedules


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


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if value <= 0:
            option = {"n_members": "members"}.get(name, name).replace("_", "-")
            raise HarnessError(f"--{option}: must be > 0, got {value}")


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


WINDOW_SCHEDULES = ("constant", "cosine", {"name": "step", "step_size": 0.33, "gamma": 0.1})


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

    code = "import sys, json; from harness.bench import _measure_peak; print(_measure_peak(**json.load(sys.stdin)))"
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


def format_windows_report(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_windows` as text."""
    f = figures
    peak = f["peak_mb"]
    rows = [
        ("plain torch loop with a DataLoader, one member at a time", f["plain_s"], peak["plain"]),
        ("members of one window stacked, windows in turn", f["per_window_s"], peak["per_window"]),
        (f"all {f['windows'] * f['members']} members of all windows in one stack", f["stacked_s"], peak["stacked"]),
    ]
    lines = [
        f"{f['windows']} rolling windows of {f['rows']} rows (S&P 500 returns), {f['members']} members each "
        f"(3 schedules x {f['members'] // 3} seeds), MLP {f['features']}-{'-'.join(map(str, f['hidden']))}-1, "
        f"{f['epochs']} epochs, batch {f['batch_size']}, threads {f['threads']}, medians of {f['repeats']}",
        f"{'way':<58} {'seconds':>8} {'vs stack':>9} {'peak MB':>8}",
    ]
    for name, secs, mb in rows:
        memory = "       -" if mb is None else f"{mb:8.1f}"
        lines.append(f"{name:<58} {secs:8.3f} {secs / f['stacked_s']:8.1f}x {memory}")
    lines += [
        f"speedup_windows (plain / all-window stack) {f['speedup_windows']:.1f}x; "
        f"stack_gain (per-window / all-window) {f['stack_gain']:.2f}x",
        f"memory: all-window stack estimated {f['stack_estimate_mb']:.1f} MB (training_bytes); "
        f"process peak RSS {f['max_rss_mb']:.0f} MB",
        f"same out-of-sample predictions: max difference {f['max_prediction_diff']:.1e} relative to the largest "
        f"(plain loop vs stacks: float32 roundoff over {f['steps']} steps); per-window vs all-window stack "
        f"{f['stack_prediction_diff']:.1e}",
    ]
    return "\n".join(lines)


def _walk_forward(n_windows: int, rows: int, features: int, test_rows: int,
                  data_path: str | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scaled X_train, scaled y_train, scaled X_test) of the latest ``n_windows`` rolling windows."""
    from harness.data import load_prices
    from harness.window_run import Scaler
    from strategies import get_strategy

    if features < 5:
        raise HarnessError(f"--features: the return_forecast table has at least 5 features, got {features}")
    strategy = get_strategy("return_forecast", {"lags": features - 4})
    table = strategy.build(load_prices("csv", path=data_path))
    X, y = table.X.to_numpy(np.float64), table.y.to_numpy(np.float64)
    span, purge = rows + test_rows, table.horizon
    first = len(X) - span - purge - (n_windows - 1) * test_rows
    if first < 0:
        raise HarnessError(f"--windows: {n_windows} windows of {rows} + {test_rows} rows need "
                           f"{len(X) - first} table rows, the data has {len(X)}; ask for fewer or shorter windows")
    windows = []
    for k in range(n_windows):
        train_rows = slice(first + k * test_rows, first + k * test_rows + rows)
        test = slice(train_rows.stop + purge, train_rows.stop + purge + test_rows)
        x_scaler, y_scaler = Scaler.fit(X[train_rows]), Scaler.fit(y[train_rows])
        windows.append((x_scaler.transform(X[train_rows]), y_scaler.transform(y[train_rows]),
                        x_scaler.transform(X[test])))
    return windows


def _plain_windows(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], model: dict, seeds: int,
                   epochs: int, batch_size: int, seed: int) -> np.ndarray:
    """The per-member loop over every window: ``[windows, members, test rows]`` predictions."""
    out = []
    for X, y, X_test in windows:
        members = [_plain_member(X, y, X_test, model, spec, member_seed, epochs, batch_size)
                   for spec in WINDOW_SCHEDULES for member_seed in range(seed, seed + seeds)]
        out.append(np.stack(members))
    return np.stack(out)


def _plain_member(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, model: dict, schedule: Any, seed: int,
                  epochs: int, batch_size: int) -> np.ndarray:
    """One member trained as one would write it by hand; its test predictions."""
    torch.manual_seed(seed)
    net = make_model_factory(model, X.shape[1])()
    table = lr_table(schedule, epochs * math.ceil(len(X) / batch_size), LR)
    _fit_plain(net, TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), table, epochs, batch_size, seed)
    net.eval()
    with torch.no_grad():
        return net(torch.as_tensor(X_test)).numpy()


def _stacked_predictions(results: list[Any], tests: list[np.ndarray]) -> np.ndarray:
    return np.stack([result.predict(X_test) for result, X_test in zip(results, tests)])


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


def format_report(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_members` (and ``figures["scaling"]``) as text."""
    f = figures
    mlp = f"{f['features']}-{'-'.join(map(str, f['hidden']))}-1"
    lines = [
        f"{f['members']} members ({len(f['schedules'])} schedules x {f['seeds']} seeds), MLP {mlp} "
        f"({f['depth']}x{f['width']}), {f['rows']} rows, batch {f['batch_size']}, {f['epochs']} epochs "
        f"({f['steps']} steps/member), threads {f['threads']}, medians of {f['repeats']}",
        f"plain loop (AdamW + LambdaLR + DataLoader per member)  {f['seconds_loop']:8.3f} s",
        f"batched trainer, batched matmuls                       {f['seconds_batched']:8.3f} s"
        f"   speedup {f['speedup']:5.1f}x",
        f"batched trainer, vmap(functional_call)                 {f['seconds_vmap']:8.3f} s"
        f"   speedup {f['vmap_speedup']:5.1f}x",
        f"achieved {f['gflops']:.2f} GFLOP/s; fp32 matmul peak {f['peak_gflops']:.1f} GFLOP/s "
        f"({f['threads']} threads); peak_fraction {f['peak_fraction']:.3f}",
        f"max_rel_diff {f['max_rel_diff']:.1e} (final weights, batched vs loop, relative to the largest; "
        f"float32 roundoff, amplified over the run by schedules that keep a high LR)",
    ]
    if "rel_diff_by_schedule" in f:
        lines.append("  by schedule: " + ", ".join(f"{name} {d:.0e}" for name, d in f["rel_diff_by_schedule"].items()))
    if "wide" in f:
        w = f["wide"]
        lines.append(
            f"wider, batched only: MLP {f['features']}-{'-'.join(map(str, w['hidden']))}-1, batch {w['batch_size']}, "
            f"{w['epochs']} epochs: {w['seconds']:.3f} s, {f['wide_gflops']:.2f} GFLOP/s, "
            f"wide_peak_fraction {f['wide_peak_fraction']:.3f}"
        )
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


def _batched(X: np.ndarray, y: np.ndarray, model: dict, schedules: Sequence[Any], seeds: int, epochs: int,
             batch_size: int, seed: int, path: str) -> np.ndarray:
    """The batched trainer's final weights, ``[members, parameters]`` (members schedule-major)."""
    result = train(X, y, model=model, schedules=list(schedules), seeds=seeds, epochs=epochs,
                   batch_size=batch_size, lr=LR, seed=seed, stack_path=path)
    return torch.cat([value.flatten(1) for value in result.state.values()], dim=1).numpy()


def _fit_plain(net: torch.nn.Module, dataset: TensorDataset, table: np.ndarray, epochs: int, batch_size: int,
               seed: int) -> None:
    """Train ``net`` as one writes it by hand: ``AdamW`` (no weight decay; torch's default is 0.01),
    the LR ``table`` through ``LambdaLR``, a ``DataLoader`` shuffled by a generator seeded ``seed``."""
    total = len(table)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: table[min(t, total - 1)] / LR)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.mse_loss(net(xb), yb).backward()
            optimizer.step()
            scheduler.step()


def _plain(X: np.ndarray, y: np.ndarray, model: dict, schedules: Sequence[Any], seeds: int, epochs: int,
           batch_size: int, seed: int) -> np.ndarray:
    """The per-member loop the batched trainer replaces, over the same members in the same order."""
    factory = make_model_factory(model, X.shape[1])
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    total = epochs * math.ceil(len(X) / batch_size)
    weights = []
    for schedule in schedules:
        table = lr_table(schedule, total, LR)
        for member_seed in range(seed, seed + seeds):
            torch.manual_seed(member_seed)
            net = factory()
            _fit_plain(net, dataset, table, epochs, batch_size, member_seed)
            weights.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return torch.stack(weights).numpy()


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


def _training_flops(features: int, hidden: Sequence[int], samples: int) -> float:
    """Matmul FLOPs of training on ``samples`` row-passes: 2·in·out forward, 2·in·out for the weight
    gradient, and 2·in·out for the input gradient of every layer but the first."""
    sizes = [features, *hidden, 1]
    per_row = sum((4 if k == 0 else 6) * a * b for k, (a, b) in enumerate(zip(sizes, sizes[1:])))
    return float(per_row) * samples


def _max_relative_diff(batched: np.ndarray, plain: np.ndarray) -> float:
    return float(np.max(np.abs(batched - plain)) / np.max(np.abs(plain)))
