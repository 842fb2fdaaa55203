"""The tidy frames one window contributes to a backtest (layouts in ``docs/ARCHITECTURE.md``).

Members are ordered schedule-major, as the trainer labels them: ``labels[m] = (schedule, seed)``
(``schedule`` is the candidate's label when ``training.epochs`` or ``training.lr`` lists several;
a member of a shorter budget contributes its own epochs and steps only, as if trained alone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PREDICTION_COLUMNS = ("date", "window", "schedule", "seed", "prediction", "target", "baseline")
TRAINING_COLUMNS = ("window", "schedule", "seed", "diverged", "end_oscillation", "train_loss", "val_loss",
                    "best_epoch")
CURVE_COLUMNS = ("window", "schedule", "seed", "epoch", "val_loss")
CHURN_COLUMNS = ("window", "schedule", "seed", "prev_prediction", "prediction")
LR_COLUMNS = ("schedule", "step", "lr")


def _members(labels: list, n_rows: int) -> dict[str, np.ndarray]:
    """The ``schedule`` and ``seed`` columns of ``n_rows`` rows per member."""
    return {"schedule": np.repeat([label for label, _ in labels], n_rows),
            "seed": np.repeat([seed for _, seed in labels], n_rows).astype(np.int64)}


def predictions(window: int, labels: list, dates: pd.DatetimeIndex, target: np.ndarray,
                baseline: np.ndarray, preds: np.ndarray,
                extra: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per test row per member: date, window, schedule, seed, prediction, target, baseline,
    then one column per ``extra`` entry (a value per test row, e.g. the ``asset`` of a cross-section)."""
    n_members, n_rows = preds.shape
    return pd.DataFrame({
        "date": np.tile(dates.values, n_members), "window": window, **_members(labels, n_rows),
        "prediction": preds.reshape(-1), "target": np.tile(target, n_members),
        "baseline": np.tile(baseline, n_members),
        **{name: np.tile(np.asarray(values), n_members) for name, values in (extra or {}).items()},
    })


def training(window: int, result: Any) -> pd.DataFrame:
    """Per-member training diagnostics of one window."""
    epochs = np.arange(result.val_loss.shape[1])
    best = np.asarray(result.best_epoch)
    val = result.val_loss[np.arange(len(best)), np.clip(best, 0, len(epochs) - 1)] if len(epochs) else np.nan
    oscillation, train_loss = _per_budget(result, end_oscillation), _per_budget(result, _last_finite)
    return pd.DataFrame({
        "window": window, **_members(result.labels, 1),
        "diverged": np.asarray(result.diverged, dtype=bool),
        "end_oscillation": oscillation,
        "train_loss": train_loss,
        "val_loss": val,
        "best_epoch": best,
    })


def curves(window: int, result: Any) -> pd.DataFrame:
    """Validation loss per epoch per member (NaN after a member stopped, or without validation)."""
    val = np.asarray(result.val_loss, dtype=np.float64)
    n_members, n_epochs = val.shape
    frame = pd.DataFrame({"window": window, **_members(result.labels, n_epochs),
                          "epoch": np.tile(np.arange(n_epochs, dtype=np.int64), n_members),
                          "val_loss": val.reshape(-1)})
    budget = _budgets(result)
    if budget is None:
        return frame
    return frame[frame["epoch"].to_numpy() < np.repeat(budget, n_epochs)].reset_index(drop=True)


def _budgets(result: Any) -> np.ndarray | None:
    """Each member's budget (epochs) when the members have several, else None."""
    budget = getattr(result, "budget", None)
    if budget is None or len(set(np.asarray(budget).tolist())) <= 1:
        return None
    return np.asarray(budget, dtype=np.int64)


def _per_budget(result: Any, summary: Any) -> np.ndarray:
    """``summary`` of each member's step losses over its own budget's steps."""
    budget = _budgets(result)
    if budget is None:
        return summary(result.step_loss)
    out = np.full(len(budget), np.nan)
    for epochs in np.unique(budget):
        rows = budget == epochs
        out[rows] = summary(result.step_loss[rows, :int(epochs) * int(result.steps_per_epoch)])
    return out


def churn(window: int, labels: list, previous: np.ndarray, current: np.ndarray) -> pd.DataFrame:
    """Window k's test inputs through window k-1's models (``previous``) and window k's (``current``)."""
    n_members, n_rows = current.shape
    return pd.DataFrame({"window": window, **_members(labels, n_rows),
                         "prev_prediction": previous.reshape(-1), "prediction": current.reshape(-1)})


def lr_curves(curves_by_label: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each schedule's LR per optimizer step as one frame ``schedule, step, lr``."""
    parts = [pd.DataFrame({"schedule": label, "step": np.arange(len(lr), dtype=np.int64),
                           "lr": np.asarray(lr, dtype=np.float64)}) for label, lr in curves_by_label.items()]
    return concat(parts, LR_COLUMNS)


def concat(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """The frames one after another; an empty frame with ``columns`` when there are none."""
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(columns))


def end_oscillation(step_loss: np.ndarray, tail: float = 0.1) -> np.ndarray:
    """std/mean of each member's last ``tail`` share of step losses (NaN for diverged members)."""
    n_tail = max(2, int(np.ceil(step_loss.shape[1] * tail)))
    last = step_loss[:, -n_tail:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return last.std(axis=1) / last.mean(axis=1)


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
