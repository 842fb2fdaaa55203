"""``harness bench --e2e``: the whole ``harness run`` process against the plain torch script a user
would write for the same walk-forward work, each as its own process, start to exit (design section 10).

The work (:data:`E2E`): S&P 500 daily returns (the bundled CSV), the ``return_forecast`` table with
``features - 4`` lagged returns (20 features), rolling windows of ``rows`` (484) train rows, purge 1,
test 21, stepped by 21, the last ``windows`` of them; an MLP 20-64-64-1; 3 schedules (constant,
cosine, step) x ``seeds`` (2); 20 epochs of batches of 64; AdamW at 1e-3; no validation split.

- the plain side: :mod:`harness.bench.plain_walkforward`, shipped with the bench and run as a
  script: pandas features, a ``DataLoader`` + ``AdamW`` + a torch LR scheduler per member, the
  test predictions; nothing logged, nothing drawn;
- the harness side: ``python -m harness run CONFIG --tracking-uri FRESH --no-progress`` with the
  same work as a config (``data.start`` chosen so that the table has exactly ``windows``
  windows), a new store each time: MLflow logging, figures, the selection, everything a user gets.

Both run at ``threads`` torch threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and the plain
script's ``--threads``), alternately, ``repeats`` times; the figure of each side is its best wall
time (best of: the least disturbed by the machine's other load), with its CPU seconds beside it.
``e2e_speedup`` = plain / harness. Also reported: ``python -c "import torch"`` (best of the same
repeats), the harness run's own timing line (training, the windows' other work, MLflow logging),
and the largest difference between the two sides' out-of-sample predictions (the same members:
float32 round-off).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

E2E = dict(windows=10, rows=484, test=21, purge=1, features=20, hidden=(64, 64), schedules=("constant", "cosine", "step"),
           seeds=2, epochs=20, batch_size=64, lr=1e-3)
SCHEDULE_SPECS = {"constant": "constant", "cosine": "cosine", "step": {"name": "step", "step_size": 0.33, "gamma": 0.1}}
EXPERIMENT = "bench-e2e"
TIMING = re.compile(r" in (?P<seconds>[\d.]+) s \((?:training (?P<training>[\d.]+) s, other window work "
                    r"(?P<other>[\d.]+) s; )?(?:opening the new store (?P<store>[\d.]+) s; )?"
                    r"MLflow logging (?P<logging>[\d.]+) s\)")


def bench_e2e(n_windows: int = 10, *, rows: int = 484, features: int = 20, hidden: Sequence[int] = (64, 64),
              seeds: int = 2, epochs: int = 20, batch_size: int = 64, threads: int = 1, repeats: int = 2,
              data_path: str | None = None, compare: bool = True) -> dict[str, Any]:
    """Wall and CPU seconds of the plain script and of ``harness run`` on the same walk-forward work.

    Returns a dict: the sizes, ``threads``, ``repeats``, ``plain_s`` and ``harness_s`` (best wall
    times), ``e2e_speedup`` (plain / harness), ``plain_cpu_s``/``harness_cpu_s`` (CPU seconds of
    those best runs, children included), ``torch_import_s`` (a bare ``import torch`` process),
    ``harness_beyond_torch_s`` (harness_s - torch_import_s), ``harness_timing`` (the run's timing
    line of its best run: ``seconds``, ``training``, ``other``, ``logging``), ``runs`` (every
    sample) and, with ``compare``, ``max_prediction_diff`` (relative to the largest prediction).
    """
    for name, value in dict(windows=n_windows, rows=rows, seeds=seeds, epochs=epochs, batch_size=batch_size,
                            threads=threads, repeats=repeats).items():
        if value <= 0:
            raise HarnessError(f"--{name.replace('_', '-')}: must be > 0, got {value}")
    if features < 5:
        raise HarnessError(f"--features: the return_forecast table has at least 5 features, got {features}")
    csv = _data_file(data_path)
    work = dict(rows=rows, lags=features - 4, hidden=list(hidden), seeds=seeds, epochs=epochs, batch_size=batch_size)
    start = _start_date(csv, n_windows, rows, features - 4)
    folder = Path(tempfile.mkdtemp(prefix="harness-e2e-"))
    try:
        config = _write_config(folder / "e2e.yaml", csv, start, **work)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        plain = [sys.executable, str(Path(__file__).with_name("plain_walkforward.py")), "--csv", str(csv),
                 "--start", start, "--windows", str(n_windows), "--train", str(rows), "--lags", str(features - 4),
                 "--hidden", *map(str, hidden), "--seeds", str(seeds), "--epochs", str(epochs),
                 "--batch-size", str(batch_size), "--threads", str(threads)]
        _warm_store_template()
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "harness": [], "torch_import": []}
        for r in range(repeats):
            sides = ("plain", "harness") if r % 2 == 0 else ("harness", "plain")  # alternate: drift hits both
            for side in sides:
                if side == "plain":
                    runs["plain"].append(_timed(plain, env))
                else:
                    store = folder / f"store-{r}"
                    runs["harness"].append(_timed([sys.executable, "-m", "harness", "run", str(config),
                                                   "--tracking-uri", str(store), "--no-progress"], env))
            runs["torch_import"].append(_timed([sys.executable, "-c", "import torch"], env))
        best = {side: min(samples, key=lambda s: s["wall_s"]) for side, samples in runs.items()}
        figures: dict[str, Any] = {
            "windows": n_windows, "rows": rows, "features": features, "hidden": list(hidden),
            "schedules": list(E2E["schedules"]), "seeds": seeds, "members": len(E2E["schedules"]) * seeds,
            "epochs": epochs, "batch_size": batch_size, "threads": threads, "repeats": repeats, "start": start,
            "plain_s": best["plain"]["wall_s"], "harness_s": best["harness"]["wall_s"],
            "e2e_speedup": best["plain"]["wall_s"] / best["harness"]["wall_s"],
            "plain_cpu_s": best["plain"]["cpu_s"], "harness_cpu_s": best["harness"]["cpu_s"],
            "torch_import_s": best["torch_import"]["wall_s"],
            "harness_beyond_torch_s": best["harness"]["wall_s"] - best["torch_import"]["wall_s"],
            "harness_timing": _timing(best["harness"]["stdout"]),
            "runs": {side: [{k: v for k, v in s.items() if k != "stdout"} for s in samples]
                     for side, samples in runs.items()},
        }
        if compare:
            figures["max_prediction_diff"] = _prediction_diff(plain, env, folder, n_windows, seeds)
        return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def format_e2e(figures: dict[str, Any]) -> str:
    """The figures of :func:`bench_e2e` as text."""
    f = figures
    mlp = f"{f['features']}-{'-'.join(map(str, f['hidden']))}-1"
    timing = f["harness_timing"]
    inside = ", ".join(f"{name} {timing[key]:.2f} s" for name, key in
                       (("training", "training"), ("other window work", "other"),
                        ("waiting for the new store", "store"), ("MLflow logging", "logging"))
                       if timing.get(key) is not None)
    lines = [
        f"whole process, start to exit, best of {f['repeats']}, {f['threads']} torch thread(s): {f['windows']} rolling "
        f"windows of {f['rows']} rows (S&P 500 returns, {f['features']} features), {len(f['schedules'])} schedules "
        f"x {f['seeds']} seeds, MLP {mlp}, {f['epochs']} epochs, batch {f['batch_size']}, AdamW",
        f"plain torch script (DataLoader + AdamW + scheduler per member)  {f['plain_s']:7.2f} s  "
        f"(cpu {f['plain_cpu_s']:.2f} s)",
        f"harness run (new store, MLflow, figures, selection)            {f['harness_s']:7.2f} s  "
        f"(cpu {f['harness_cpu_s']:.2f} s)   e2e_speedup {f['e2e_speedup']:.2f}x",
        f"import torch alone {f['torch_import_s']:.2f} s: harness run exits {f['harness_beyond_torch_s']:.2f} s after it",
        f"inside harness run ({timing.get('seconds', float('nan')):.2f} s of windows): {inside}",
    ]
    if "max_prediction_diff" in f:
        lines.append(f"same out-of-sample predictions: max difference {f['max_prediction_diff']:.1e} relative to the "
                     "largest (float32 round-off)")
    return "\n".join(lines)


def e2e_config(csv: str | Path, n_windows: int, *, rows: int = 484, lags: int = 16) -> dict[str, Any]:
    """The ``harness run`` config of the e2e work (a mapping, as YAML would give it)."""
    start = _start_date(Path(csv), n_windows, rows, lags)
    return _config(Path(csv), start, rows=rows, lags=lags, hidden=list(E2E["hidden"]), seeds=E2E["seeds"],
                   epochs=E2E["epochs"], batch_size=E2E["batch_size"])


def _config(csv: Path, start: str, *, rows: int, lags: int, hidden: list[int], seeds: int, epochs: int,
            batch_size: int) -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT,
        "data": {"source": "csv", "path": str(csv), "start": start},
        "strategy": {"name": "return_forecast", "params": {"horizon": 1, "lags": lags}},
        "model": {"hidden": hidden, "activation": "relu"},
        "training": {"optimizer": "adamw", "lr": E2E["lr"], "epochs": epochs, "batch_size": batch_size,
                     "seeds": seeds, "validation": 0.0},
        "windows": {"mode": "rolling", "train": rows, "test": E2E["test"], "step": E2E["test"], "purge": E2E["purge"]},
        "schedules": [SCHEDULE_SPECS[name] for name in E2E["schedules"]],
    }


def _write_config(path: Path, csv: Path, start: str, **work: Any) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(_config(csv, start, **work), sort_keys=False))
    return path


def _data_file(data_path: str | None) -> Path:
    from harness.data.files import DEFAULT_PATH, resolve

    csv = resolve(data_path or DEFAULT_PATH).resolve()
    if not csv.is_file():
        raise HarnessError(f"bench --e2e: no data file {csv}; pass the S&P 500 CSV")
    return csv


def _start_date(csv: Path, n_windows: int, rows: int, lags: int) -> str:
    """The ``data.start`` whose table holds exactly ``n_windows`` windows, the latest ones."""
    from harness.data import load_prices
    from strategies import get_strategy

    prices = load_prices("csv", path=str(csv))
    strategy = get_strategy("return_forecast", {"horizon": 1, "lags": lags})
    needed = rows + E2E["purge"] + E2E["test"] + (n_windows - 1) * E2E["test"]
    table = strategy.build(prices)
    if needed > len(table.X):
        raise HarnessError(f"--windows: {n_windows} windows of {rows} + {E2E['test']} rows need {needed} table rows, "
                           f"the data has {len(table.X)}; ask for fewer")
    lost = len(prices) - len(table.X)  # price rows the features' warm-up and the target's horizon take
    position = len(prices) - lost - needed
    for shift in (0, -1, 1, -2, 2, -3, 3):  # the arithmetic is exact; the search only guards it
        if 0 <= position + shift < len(prices):
            start = prices.index[position + shift]
            if len(strategy.build(prices.loc[start:]).X) == needed:
                return f"{start:%Y-%m-%d}"
    raise HarnessError("bench --e2e: could not place the windows in the data")


def _warm_store_template() -> None:
    """The schema template of new stores (built once per MLflow install; not what is measured)."""
    from harness.tracking.store import schema_template

    schema_template()


def _timed(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise HarnessError(f"bench --e2e: {Path(command[1]).name if command[1] != '-m' else 'harness run'} failed: {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout}


def _timing(stdout: str) -> dict[str, float | None]:
    match = TIMING.search(stdout)
    if match is None:
        return {}
    return {key: (float(value) if value is not None else None) for key, value in match.groupdict().items()}


def _prediction_diff(plain: list[str], env: dict[str, str], folder: Path, n_windows: int, seeds: int) -> float:
    """The two sides' out-of-sample predictions, largest difference over the largest prediction."""
    from harness import tracking

    path = folder / "plain.npy"
    subprocess.run([*plain, "--predictions", str(path)], env=env, check=True, capture_output=True)
    theirs = np.load(path)  # [windows, members, test]
    store = tracking.resolve_store(next(p for p in sorted(folder.glob("store-*"))), create=False)
    backtest = tracking.load_backtest(store, EXPERIMENT)
    ours = np.zeros_like(theirs)
    labels = backtest.labels
    for (window, label, seed), rows in backtest.predictions.groupby(["window", "schedule", "seed"]):
        ours[int(window), labels.index(label) * seeds + int(seed), :] = rows.sort_values("date")["prediction"]
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def write_json(figures: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(figures, indent=2, default=float))
