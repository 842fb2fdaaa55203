"""One window's work: scale on its train rows, train all members in one batched pass, predict.

Everything fitted here (feature and target scalers, the baseline, the networks and their
early-stopping choices) sees only the window's train rows; the test slice is used once, to predict.
Which windows train together, and from which weights, is the boundary policy's decision
(:mod:`harness.backtest.boundary`), not this module's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.backtest import frames
from harness.backtest.planning import Window
from harness.config import Config
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.training import WindowData


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
    curves: pd.DataFrame
    lr: np.ndarray
    labels: list
    next_predictions: np.ndarray | None = None
    fitted: Fitted | None = field(default=None, repr=False)
    train_seconds: float = 0.0  # this window's share of its stack's training (wall seconds in the trainer)
    work_seconds: float = 0.0   # its own work around the training: scalers, baseline, predictions, frames


@dataclass(frozen=True)
class Start:
    """How a window's members start: from fresh weights, or ``init`` (the previous window's), with
    the schedule from t=0 or ``lr_tables`` (``[members, T]``, a slice of a schedule spanning windows)."""

    init: Fitted | None = None
    lr_tables: np.ndarray | None = None


class WindowTrainer:
    """The window work of one backtest: the config, the strategy and its table, arrays made once."""

    def __init__(self, config: Config, strategy: Any, table: Any) -> None:
        self.config, self.strategy, self.table = config, strategy, table
        self.X = table.X.to_numpy(dtype=np.float64)
        self.y = strategy.target_transform(table.y.to_numpy(dtype=np.float64))
        self.previous = previous_rows(table)

    def train(self, windows: list[Window], starts: list[Start], next_test_rows: dict[int, np.ndarray]
              ) -> list[WindowResult]:
        """Train ``windows`` in one stack (each member reading its own window's own-scaled rows) and
        predict their test slices; bitwise the same as training each window alone."""
        from harness.training import train_windows  # torch: imported by what trains, not by what reads results

        started = time.perf_counter()
        prepared = [self._prepare(window, start) for window, start in zip(windows, starts)]
        training = time.perf_counter()
        trained = train_windows([data for data, _, _ in prepared], **train_settings(self.config))
        finishing = time.perf_counter()
        results = [self._finish(window, Fitted(result, x_scaler, y_scaler), next_test_rows.get(window.index))
                   for window, (_, x_scaler, y_scaler), result in zip(windows, prepared, trained)]
        around = (training - started) + (time.perf_counter() - finishing)
        for result in results:  # the stack's seconds shared out evenly: what each window cost
            result.train_seconds = (finishing - training) / len(results)
            result.work_seconds = around / len(results)
        return results

    def _prepare(self, window: Window, start: Start) -> tuple[WindowData, Scaler, Scaler]:
        """A window's training data, scaled by scalers fitted on its train rows only."""
        from harness.training import WindowData

        X, y = self.X, self.y
        fit_rows, val_rows = split_validation(window.train_rows, self.config.training.validation)
        x_scaler, y_scaler = Scaler.fit(X[window.train_rows]), Scaler.fit(y[window.train_rows])
        if getattr(self.strategy, "classifier", False):  # training.loss: bce trains on the labels themselves
            y_scaler = Scaler(np.asarray(0.0), np.asarray(1.0))
        validation = ((x_scaler.transform(self.inputs(val_rows)), y_scaler.transform(y[val_rows]))
                      if len(val_rows) else (None, None))
        init = start.init.result if start.init is not None else None
        data = WindowData(x_scaler.transform(self.inputs(fit_rows)), y_scaler.transform(y[fit_rows]), *validation,
                          init_state=init, lr_tables=start.lr_tables, huber_delta=self._huber_delta(y_scaler))
        return data, x_scaler, y_scaler

    def _huber_delta(self, y_scaler: Scaler) -> float | None:
        """training.loss huber: the backtest's delta (target units) in this window's scaled units."""
        delta = getattr(self.strategy, "huber_delta", None) if self.config.training.loss == "huber" else None
        return None if delta is None else float(delta / np.max(y_scaler.std))

    def _finish(self, window: Window, fitted: Fitted, next_test_rows: np.ndarray | None) -> WindowResult:
        """Predict a trained window's test rows (and the next window's), as tidy frames."""
        result, table = fitted.result, self.table
        test = take(table, window.test_rows)
        baseline = np.asarray(self.strategy.baseline(take(table, window.train_rows), test), dtype=np.float64)
        upcoming = None if next_test_rows is None else self.predict(fitted, next_test_rows)
        return WindowResult(
            index=window.index,
            predictions=frames.predictions(window.index, result.labels, test.dates, test.y.to_numpy(), baseline,
                                           self.predict(fitted, window.test_rows), extra=row_columns(test)),
            training=frames.training(window.index, result),
            curves=frames.curves(window.index, result),
            lr=result.lr, labels=result.labels, next_predictions=upcoming, fitted=fitted,
        )

    def predict(self, fitted: Fitted, rows: np.ndarray) -> np.ndarray:
        """``fitted``'s members' predictions for table ``rows``, in target units, ``[members, n]``."""
        return self.strategy.target_inverse(fitted.predict(self.inputs(rows)))

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """What the network reads for ``rows``: see :func:`model_inputs`."""
        return model_inputs(self.config, self.X, rows, self.previous)


def train_settings(config: Config) -> dict[str, Any]:
    """The config's training settings as keyword arguments of ``harness.training.train_windows``."""
    training = config.training
    return dict(
        model=config.model.network(), schedules=config.schedules, seeds=training.seeds,
        epochs=training.epochs, batch_size=training.batch_size, lr=training.lr,
        optimizer=training.optimizer, weight_decay=training.weight_decay, momentum=training.momentum,
        grad_clip=training.grad_clip, patience=training.patience, seed=training.seed, loss=training.loss,
    )


def model_inputs(config: Config, X: np.ndarray, rows: np.ndarray,
                 previous: np.ndarray | None = None) -> np.ndarray:
    """What the network reads for ``rows`` of the table's features ``X``: an MLP the rows themselves,
    ``[n, F]``; a GRU/LSTM each row's last ``model.sequence`` rows, oldest first, ``[n, L, F]``
    (the table's first row repeated where a sequence would start before it). With ``previous``
    (:func:`previous_rows`: a cross-section's table), a row's sequence is its own asset's rows,
    the asset's first row repeated before it entered. Only rows at or before each row, so no
    look-ahead; scaled later by the window's train-row scaler."""
    rows = np.asarray(rows, dtype=np.int64)
    if not config.model.recurrent:
        return X[rows]
    if previous is None:
        lags = np.arange(1 - config.model.sequence, 1)
        return X[np.maximum(rows[:, None] + lags[None, :], 0)]
    chain = [rows]
    for _ in range(config.model.sequence - 1):
        chain.append(previous[chain[-1]])
    return X[np.stack(chain[::-1], axis=1)]


def previous_rows(table: Any) -> np.ndarray | None:
    """For a table with an ``asset`` level in its index (a cross-section, rows in date order): the
    position of each row's previous row of the same asset (the row itself for the asset's first
    row), ``[n]``; None for other tables (there a row's previous row is the table's previous row)."""
    index = table.X.index
    if "asset" not in (index.names or ()):
        return None
    codes = pd.factorize(index.get_level_values("asset"))[0]
    order = np.argsort(codes, kind="stable")  # each asset's rows, in table order
    before = np.concatenate([order[:1], order[:-1]])
    first = np.concatenate([[True], codes[order][1:] != codes[order][:-1]])
    previous = np.empty(len(codes), dtype=np.int64)
    previous[order] = np.where(first, order, before)
    return previous


def row_columns(table: Any) -> dict[str, np.ndarray] | None:
    """Extra per-row columns of a table's predictions: the ``asset`` of a cross-section, else none."""
    index = table.X.index
    if "asset" not in (index.names or ()):
        return None
    return {"asset": index.get_level_values("asset").to_numpy()}


def steps_per_window(config: Config, windows: list[Window], epochs: int | None = None) -> list[int]:
    """Optimizer steps each window's members take (epochs x batches of the fit rows); ``epochs``:
    a budget (default the longest of ``training.epochs``)."""
    training = config.training
    epochs = max(training.budgets) if epochs is None else epochs
    return [
        epochs * int(np.ceil(len(split_validation(w.train_rows, training.validation)[0]) / training.batch_size))
        for w in windows
    ]


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
