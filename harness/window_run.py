"""One window's work: scale on its train rows, train all members in one batched pass, predict.

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
    """Windows trained by one job: independent windows (``fresh``) or a chained sequence."""

    windows: list[Window]
    next_test_rows: dict[int, np.ndarray]  # window index -> test rows of the window after it


def run_chunk(config: Config, strategy: Any, table: Any, chunk: Chunk, sizes: list[int],
              previous: Fitted | None = None, keep_fitted: bool = False) -> list[WindowResult]:
    """Train a chunk's windows in order; chained boundary policies pass each window's weights on."""
    results = []
    for window in chunk.windows:
        result = run_window(config, strategy, table, window, previous, sizes, chunk.next_test_rows.get(window.index))
        previous = result.fitted
        if not keep_fitted and config.training.boundary == "fresh":
            result.fitted = None
        results.append(result)
    return results


def run_window(config: Config, strategy: Any, table: Any, window: Window, previous: Fitted | None,
               sizes: list[int], next_test_rows: np.ndarray | None = None) -> WindowResult:
    """Train all members on one window's train rows and predict its test rows."""
    from harness.trainer import train

    started = time.perf_counter()
    training = config.training
    fit_rows, val_rows = split_validation(window.train_rows, training.validation)
    X = table.X.to_numpy(dtype=np.float64)
    y = strategy.target_transform(table.y.to_numpy(dtype=np.float64))
    x_scaler = Scaler.fit(X[window.train_rows])
    y_scaler = Scaler.fit(y[window.train_rows])
    warm = training.boundary != "fresh" and previous is not None
    result = train(
        x_scaler.transform(X[fit_rows]), y_scaler.transform(y[fit_rows]),
        x_scaler.transform(X[val_rows]) if len(val_rows) else None,
        y_scaler.transform(y[val_rows]) if len(val_rows) else None,
        model=config.model.model_dump(), schedules=config.schedules, seeds=training.seeds,
        epochs=training.epochs, batch_size=training.batch_size, lr=training.lr,
        optimizer=training.optimizer, weight_decay=training.weight_decay, momentum=training.momentum,
        grad_clip=training.grad_clip, patience=training.patience, seed=training.seed,
        init_state=previous.result if warm else None,
        lr_tables=continued_lr_tables(config, window.index, sizes) if training.boundary == "warm_continue" else None,
    )
    fitted = Fitted(result, x_scaler, y_scaler)
    test = take(table, window.test_rows)
    preds = _in_target_units(strategy, fitted, X[window.test_rows])
    baseline = np.asarray(strategy.baseline(take(table, window.train_rows), test), dtype=np.float64)
    upcoming = None if next_test_rows is None else _in_target_units(strategy, fitted, X[next_test_rows])
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
    n_tail = max(1, int(np.ceil(step_loss.shape[1] * tail)))
    with np.errstate(invalid="ignore"):
        return np.nanmean(step_loss[:, -n_tail:], axis=1) if step_loss.size else np.full(len(step_loss), np.nan)


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


