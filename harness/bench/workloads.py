"""The workloads of ``harness bench``: their sizes and schedules, their data, and the checks of the sizes."""

from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessError

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


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if value <= 0:
            option = {"n_members": "members"}.get(name, name).replace("_", "-")
            raise HarnessError(f"--{option}: must be > 0, got {value}")


WINDOW_SCHEDULES = ("constant", "cosine", {"name": "step", "step_size": 0.33, "gamma": 0.1})


def _data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = (np.tanh(X @ rng.normal(size=features) / math.sqrt(features)) + 0.1 * rng.normal(size=rows))
    return X, y.astype(np.float32)


def _walk_forward(n_windows: int, rows: int, features: int, test_rows: int,
                  data_path: str | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(scaled X_train, scaled y_train, scaled X_test) of the latest ``n_windows`` rolling windows."""
    from harness.data import load_prices
    from harness.backtest.window import Scaler
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
