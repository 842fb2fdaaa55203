"""Windows' work: scale on each window's train rows, train all members in one batched pass, predict.

:func:`run_chunk` trains a chunk of independent (``fresh``) windows together, all windows ×
schedules × seeds members in one stack; chained boundary policies run window by window
(:func:`run_window`), each window's schedules × seeds still in one stack.

Everything fitted here (feature and target scalers, the baseline, the networks and their
early-stopping choices) sees only the window's train rows; the test slice is used once, to predict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.config import Config
from harness.errors import HarnessError

# Training memory (bytes) one chunk of independent windows may take (harness.engine.chunk_windows).
# On a CPU a bigger stack stops paying off once a step's tensors outgrow the caches and the
# allocator's reuse range (32 MiB, harness.trainer.reuse_freed_memory): 8 to 64 windows of the
# default config train equally fast per window, all 202 in one stack 2-5x slower. 512 MiB is ~60.
STACK_MEMORY_BUDGET = 512 * 2**20


@dataclass
class Window:
    """One walk-forward window as row positions of the strategy table."""

    index: int
    train_rows: np.ndarray
    test_rows: np.ndarray


@dataclass
class Scaler:
    """Standardisation fitted on one window's train rows only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Scaler":
        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.std + self.mean


@dataclass
class Fitted:
    """A window's trained members with the scalers they were trained under."""

    result: Any
    x_scaler: Scaler
    y_scaler: Scaler

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions in target units, shape [members, n]."""
        return self.y_scaler.inverse(self.result.predict(self.x_scaler.transform(X)))


@dataclass
class WindowResult:
    """Everything one window produced, as tidy frames.

    ``next_predictions`` are this window's models' predictions on the *next* window's test inputs
    (``[members, n_next]``), so churn needs no model to travel between windows: window k's churn
    compares them with window k+1's own predictions. They are never used for anything else.
    ``seconds`` is the wall time of the window's work; windows trained together in one stack each
    count an equal share of the joint training.
    """

    index: int
    predictions: pd.DataFrame
    training: pd.DataFrame
    lr: np.ndarray
    labels: list
    next_predictions: np.ndarray | None = None
    seconds: float = 0.0
    fitted: Fitted | None = field(default=None, repr=False)


@dataclass
class Chunk:
    """Windows trained by one job, a self-contained (picklable) unit of work.

    ``fresh`` windows are independent: a chunk of them trains in one stack. Chained boundary
    policies (``warm_restart``, ``warm_continue``) need each window's weights for the next, so
    their chunk is a sequence trained window after window.
    """

    windows: list[Window]
    next_test_rows: dict[int, np.ndarray]  # window index -> test rows of the window after it


def run_chunk(config: Config, strategy: Any, table: Any, chunk: Chunk, sizes: list[int],
              previous: Fitted | None = None, keep_fitted: bool = False) -> list[WindowResult]:
    """Train a chunk's windows; one result per window, in the chunk's order.

    ``fresh``: all windows × schedules × seeds members in one stack, each member reading its own
    window's (own-scaled) rows; the numbers are bitwise those of :func:`run_window` one window at
    a time. Chained policies: window after window (each window's members still in one stack),
    each starting from the previous window's weights (``previous`` for the first).
    ``fitted`` is kept on the results for chained policies or with ``keep_fitted``.
    """
    if config.training.boundary == "fresh":
        return _run_together(config, strategy, table, chunk, keep_fitted)
    results = []
    for window in chunk.windows:
        result = run_window(config, strategy, table, window, previous, sizes, chunk.next_test_rows.get(window.index))
        previous = result.fitted
        results.append(result)
    return results


def run_window(config: Config, strategy: Any, table: Any, window: Window, previous: Fitted | None,
               sizes: list[int], next_test_rows: np.ndarray | None = None) -> WindowResult:
    """Train all members on one window's train rows and predict its test rows.

    With a chained boundary policy and a ``previous`` window, its members start from
    ``previous``'s weights (and ``warm_continue`` takes window k's slice of a schedule spanning
    all windows, from ``sizes``, the steps per window).
    """
    from harness.trainer import train_windows

    started = time.perf_counter()
    training = config.training
    X, y = _arrays(strategy, table)
    init = previous.result if training.boundary != "fresh" and previous is not None else None
    tables = continued_lr_tables(config, window.index, sizes) if training.boundary == "warm_continue" else None
    data, x_scaler, y_scaler = _prepare(config, X, y, window, init, tables)
    result = train_windows([data], **train_settings(config))[0]
    return _finish(config, strategy, table, X, window, Fitted(result, x_scaler, y_scaler), next_test_rows, started)


def _run_together(config: Config, strategy: Any, table: Any, chunk: Chunk, keep_fitted: bool) -> list[WindowResult]:
    """Independent windows in one stack; training time is shared out evenly between them."""
    from harness.trainer import train_windows

    started = time.perf_counter()
    X, y = _arrays(strategy, table)
    prepared = [_prepare(config, X, y, window) for window in chunk.windows]
    trained = train_windows([data for data, _, _ in prepared], **train_settings(config))
    share = (time.perf_counter() - started) / len(chunk.windows)
    results = []
    for window, (_, x_scaler, y_scaler), result in zip(chunk.windows, prepared, trained):
        began = time.perf_counter() - share  # its seconds: a share of the joint training, then its own predictions
        outcome = _finish(config, strategy, table, X, window, Fitted(result, x_scaler, y_scaler),
                          chunk.next_test_rows.get(window.index), began)
        if not keep_fitted:
            outcome.fitted = None
        results.append(outcome)
    return results


def train_settings(config: Config) -> dict[str, Any]:
    """The config's training settings as keyword arguments of ``harness.trainer.train_windows``."""
    training = config.training
    return dict(
        model=config.model.network(), schedules=config.schedules, seeds=training.seeds,
        epochs=training.epochs, batch_size=training.batch_size, lr=training.lr,
        optimizer=training.optimizer, weight_decay=training.weight_decay, momentum=training.momentum,
        grad_clip=training.grad_clip, patience=training.patience, seed=training.seed,
    )


def _arrays(strategy: Any, table: Any) -> tuple[np.ndarray, np.ndarray]:
    """The table's features and (strategy-transformed) targets as float64 arrays."""
    return table.X.to_numpy(dtype=np.float64), strategy.target_transform(table.y.to_numpy(dtype=np.float64))


def model_inputs(config: Config, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """What the network reads for ``rows`` of the table's features ``X``: an MLP the rows themselves,
    ``[n, F]``; a GRU/LSTM each row's last ``model.sequence`` rows, oldest first, ``[n, L, F]``
    (the table's first row repeated where a sequence would start before it). Only rows at or
    before each row, so no look-ahead; scaled later by the window's train-row scaler."""
    rows = np.asarray(rows, dtype=np.int64)
    if not config.model.recurrent:
        return X[rows]
    lags = np.arange(1 - config.model.sequence, 1)
    return X[np.maximum(rows[:, None] + lags[None, :], 0)]


def _prepare(config: Config, X: np.ndarray, y: np.ndarray, window: Window, init_state: Any = None,
             lr_tables: np.ndarray | None = None) -> tuple[Any, Scaler, Scaler]:
    """A window's training data, scaled by scalers fitted on its train rows only."""
    from harness.trainer import WindowData

    fit_rows, val_rows = split_validation(window.train_rows, config.training.validation)
    x_scaler = Scaler.fit(X[window.train_rows])
    y_scaler = Scaler.fit(y[window.train_rows])
    validation = ((x_scaler.transform(model_inputs(config, X, val_rows)), y_scaler.transform(y[val_rows]))
                  if len(val_rows) else (None, None))
    data = WindowData(x_scaler.transform(model_inputs(config, X, fit_rows)), y_scaler.transform(y[fit_rows]),
                      *validation,
                      init_state=init_state, lr_tables=lr_tables)
    return data, x_scaler, y_scaler


def _finish(config: Config, strategy: Any, table: Any, X: np.ndarray, window: Window, fitted: Fitted,
            next_test_rows: np.ndarray | None, started: float) -> WindowResult:
    """Predict a trained window's test rows (and the next window's), as tidy frames."""
    result = fitted.result
    test = take(table, window.test_rows)
    preds = _in_target_units(strategy, fitted, model_inputs(config, X, window.test_rows))
    baseline = np.asarray(strategy.baseline(take(table, window.train_rows), test), dtype=np.float64)
    upcoming = (None if next_test_rows is None
                else _in_target_units(strategy, fitted, model_inputs(config, X, next_test_rows)))
    return WindowResult(
        index=window.index,
        predictions=predictions_frame(window.index, result.labels, test.dates, test.y.to_numpy(), baseline, preds),
        training=training_frame(window.index, result),
        lr=result.lr,
        labels=result.labels,
        next_predictions=upcoming,
        fitted=fitted,
        seconds=time.perf_counter() - started,
    )


def _in_target_units(strategy: Any, fitted: Fitted, X: np.ndarray) -> np.ndarray:
    return strategy.target_inverse(fitted.predict(X))


def steps_per_window(config: Config, windows: list[Window]) -> list[int]:
    """Optimizer steps each window's members take (epochs x batches of the fit rows)."""
    training = config.training
    return [
        training.epochs * int(np.ceil(len(split_validation(w.train_rows, training.validation)[0]) / training.batch_size))
        for w in windows
    ]


def continued_lr_tables(config: Config, k: int, sizes: list[int]) -> np.ndarray:
    """``warm_continue``: window k's slice of one schedule spanning all windows, ``[members, T_k]``.

    Adaptive kinds (plateau, schedule_free) span the windows with their nominal curve (the
    warmup ramp once, in window 0; then the base LR).
    """
    from harness.schedules import get_schedule

    start, total = sum(sizes[:k]), sum(sizes)
    rows = []
    for spec in config.schedules:
        curve = get_schedule(spec).nominal_table(total, config.training.lr)[start:start + sizes[k]]
        rows.extend([curve] * config.training.seeds)
    return np.stack(rows)


def take(table: Any, rows: np.ndarray) -> Any:
    """The table restricted to ``rows`` (positions)."""
    return type(table)(
        X=table.X.iloc[rows], y=table.y.iloc[rows],
        dates=pd.DatetimeIndex(table.dates)[rows], horizon=table.horizon,
    )


def split_validation(rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The train window's rows as (fit, validation): validation is the tail ``fraction``."""
    n_val = int(round(len(rows) * fraction))
    if n_val == 0:
        return rows, rows[:0]
    if n_val >= len(rows):
        raise HarnessError(
            f"training.validation: {fraction} leaves no rows to fit in a {len(rows)}-row train window; lower it"
        )
    return rows[:-n_val], rows[-n_val:]


def end_oscillation(step_loss: np.ndarray, tail: float = 0.1) -> np.ndarray:
    """std/mean of each member's last ``tail`` share of step losses (NaN for diverged members)."""
    n_tail = max(2, int(np.ceil(step_loss.shape[1] * tail)))
    last = step_loss[:, -n_tail:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return last.std(axis=1) / last.mean(axis=1)


def predictions_frame(window: int, labels: list, dates: pd.DatetimeIndex, target: np.ndarray,
                      baseline: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    """One row per test row per member: date, window, schedule, seed, prediction, target, baseline."""
    n_members, n_rows = preds.shape
    return pd.DataFrame({
        "date": np.tile(dates.values, n_members),
        "window": window,
        "schedule": np.repeat([label for label, _ in labels], n_rows),
        "seed": np.repeat([seed for _, seed in labels], n_rows).astype(np.int64),
        "prediction": preds.reshape(-1),
        "target": np.tile(target, n_members),
        "baseline": np.tile(baseline, n_members),
    })


def training_frame(window: int, result: Any) -> pd.DataFrame:
    """Per-member training diagnostics of one window."""
    epochs = np.arange(result.val_loss.shape[1])
    best = np.asarray(result.best_epoch)
    val = result.val_loss[np.arange(len(best)), np.clip(best, 0, len(epochs) - 1)] if len(epochs) else np.nan
    return pd.DataFrame({
        "window": window,
        "schedule": [label for label, _ in result.labels],
        "seed": [seed for _, seed in result.labels],
        "diverged": np.asarray(result.diverged, dtype=bool),
        "end_oscillation": end_oscillation(result.step_loss),
        "train_loss": _last_finite(result.step_loss),
        "val_loss": val,
        "best_epoch": best,
    })


def _last_finite(step_loss: np.ndarray, tail: float = 0.1) -> np.ndarray:
    """Each member's mean finite loss over the last ``tail`` of its steps; NaN where none is finite
    (a member frozen early for divergence)."""
    if not step_loss.size:
        return np.full(len(step_loss), np.nan)
    last = step_loss[:, -max(1, int(np.ceil(step_loss.shape[1] * tail))):]
    finite = np.isfinite(last)
    count = finite.sum(axis=1)
    return np.divide(np.where(finite, last, 0.0).sum(axis=1), count, out=np.full(len(step_loss), np.nan),
                     where=count > 0)


def churn_frame(window: int, labels: list, previous: np.ndarray, current: np.ndarray) -> pd.DataFrame:
    """Window k's test inputs through window k-1's models (``previous``) and window k's (``current``)."""
    n_members, n_rows = current.shape
    return pd.DataFrame({
        "window": window,
        "schedule": np.repeat([label for label, _ in labels], n_rows),
        "seed": np.repeat([seed for _, seed in labels], n_rows).astype(np.int64),
        "prev_prediction": previous.reshape(-1),
        "prediction": current.reshape(-1),
    })


