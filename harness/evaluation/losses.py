"""The training loss as the backtest scores it (``training.loss``): the strategy seen through it.

The networks train on ``training.loss`` (:mod:`harness.training.losses`); this module makes the
metrics and the selection's per-observation loss agree with it. :func:`loss_view` wraps the
strategy (nothing changes for ``mse``):

- ``mae``: the selection metric defaults to ``mae`` (per-observation loss: the absolute error);
- ``huber``: a ``huber`` metric (the mean Huber loss of prediction − target, δ in target units)
  joins the precision metrics and is the default selection metric, with the same per-observation
  loss. δ is ``training.huber_delta``, or the target's std over the first window's train rows
  (known before any test row). The networks train on each window's standardised target with
  δ / (that window's target std): the same loss, scaled by a constant per window;
- ``bce``: a **sign classifier**. The target becomes the label ``1{target > 0}``; the network
  outputs a logit, the predictions are the probability ``sigmoid(logit)`` that the target is
  positive; the baseline is the train window's share of positive labels (the naive classifier).
  Metrics: ``bce`` (log loss, the default selection metric and its per-observation loss),
  ``accuracy`` (share of rows where ``p > 0.5`` matches the label), and the precision metrics on
  (probability, label): ``mse`` is the Brier score, ``r2_oos`` the Brier skill score against the
  baseline. The strategy's own metrics and trading views read the target in its own units, which
  the label no longer is, so they are left out.

For strategies that transform their target (``option_pricer`` with ``target_space: log``) the
networks train in the transformed space and the scores are in target units, as for ``mse``.
No torch at import (the exported model's sigmoid imports it when asked).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from harness.errors import HarnessError
from strategies.base import Strategy, Table

CLIP = 1e-7  # probabilities are clipped to [CLIP, 1 - CLIP] in the log loss
LOSS_METRICS = {"mae": "mae", "huber": "huber", "bce": "bce"}
"""The default selection metric of each non-mse training loss."""


def huber(error: np.ndarray, delta: float) -> np.ndarray:
    """Per-observation Huber loss: ``0.5 e²`` where ``|e| <= δ``, else ``δ (|e| − 0.5 δ)``."""
    a = np.abs(np.asarray(error, dtype=np.float64))
    return np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))


def log_loss(label: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Per-observation binary cross-entropy of probabilities against labels in [0, 1]."""
    y = np.asarray(label, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), CLIP, 1.0 - CLIP)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def torch_sigmoid(z: Any) -> Any:
    """The exported model's inverse for bce: logits to probabilities (a module-level function, so
    the model pickles)."""
    import torch

    return torch.sigmoid(z)


def loss_view(strategy: Strategy, training: Any) -> Strategy:
    """``strategy`` as the backtest scores it under ``training.loss`` (itself for ``mse``)."""
    loss = getattr(training, "loss", "mse")
    if loss == "mse" or isinstance(strategy, LossView):
        return strategy
    return LossView(strategy, loss, getattr(training, "huber_delta", None))


def resolve_delta(strategy: Strategy, table: Table, first_train_rows: np.ndarray) -> None:
    """A huber view without ``training.huber_delta`` takes the std of the (network-space) target over
    the first window's train rows; every window and the scores use that one δ."""
    if not isinstance(strategy, LossView) or strategy.loss != "huber" or strategy.huber_delta is not None:
        return
    y = strategy.target_transform(table.y.to_numpy(np.float64)[first_train_rows])
    std = float(np.std(y))
    strategy.huber_delta = std if std > 0 else 1.0


class LossView(Strategy):
    """A strategy seen through a non-mse training loss (see the module docstring).

    Everything not defined here is the wrapped strategy's (its parameters, ``horizon``, its own
    methods), except, for ``bce``, its callables: its trading views read returns.
    """

    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, inner: Strategy, loss: str, huber_delta: float | None = None) -> None:
        self.__dict__.update(inner=inner, loss=loss, huber_delta=huber_delta, values=dict(inner.values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        value = getattr(self.__dict__["inner"], name)
        if self.__dict__["loss"] == "bce" and callable(value):
            raise AttributeError(f"{name}: the strategy's own views are off for a sign classifier (training.loss: bce)")
        return value

    def __reduce__(self) -> Any:
        return (LossView, (self.inner, self.loss, self.huber_delta))

    # --- what the reports read -------------------------------------------------------------------

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def default_metric(self) -> str:  # type: ignore[override]
        return LOSS_METRICS[self.loss]

    @property
    def better(self) -> dict[str, str]:  # type: ignore[override]
        if self.loss == "bce":
            return {"bce": "min", "accuracy": "max"}
        own = dict(self.inner.better)
        return {**own, "huber": "min"} if self.loss == "huber" else own

    @property
    def baseline_name(self) -> str:  # type: ignore[override]
        return "train-window up share" if self.loss == "bce" else self.inner.baseline_name

    @property
    def classifier(self) -> bool:
        """bce: the target is a label, not scaled before training."""
        return self.loss == "bce"

    # --- the strategy protocol -------------------------------------------------------------------

    def build(self, prices: Any) -> Table:
        table = self.inner.build(prices)
        if self.loss != "bce":
            return table
        y = table.y.to_numpy(np.float64)
        positive = float(np.mean(y > 0)) if len(y) else 0.0
        if not 0.0 < positive < 1.0:
            raise HarnessError(
                f"training.loss: bce trains a sign classifier (label: target > 0), but {positive:.0%} of strategy "
                f"'{self.inner.name}''s targets are positive; use bce with a target that takes both signs "
                "(return_forecast, cross_section) or another loss"
            )
        labels = table.y.copy()
        labels[:] = (y > 0).astype(np.float64)
        return Table(X=table.X, y=labels.rename("label"), dates=table.dates, horizon=table.horizon)

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        if self.loss != "bce":
            return self.inner.baseline(train, test)
        share = float(np.mean(train.y.to_numpy(np.float64)))
        return np.full(len(test.y), share)

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        if self.loss == "bce":
            y, p = np.asarray(y, np.float64), np.asarray(pred, np.float64)
            if not len(y):
                return {"bce": float("nan"), "accuracy": float("nan")}
            return {"bce": float(np.mean(log_loss(y, p))), "accuracy": float(np.mean((p > 0.5) == (y > 0.5)))}
        own = self.inner.metrics(y, pred, baseline, test)
        if self.loss == "huber":
            error = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
            own = {**own, "huber": float(np.mean(huber(error, self.huber_delta))) if len(error) else float("nan")}
        return own

    def pointwise_loss(self, metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
        if self.loss == "bce" and metric == "bce":
            return log_loss(y, pred)
        if self.loss == "huber" and metric == "huber":
            return huber(np.asarray(pred, np.float64) - np.asarray(y, np.float64), self.huber_delta)
        if self.loss == "bce":
            return None
        return self.inner.pointwise_loss(metric, y, pred)

    def target_transform(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float64) if self.loss == "bce" else self.inner.target_transform(y)

    def target_inverse(self, z: np.ndarray) -> np.ndarray:
        return sigmoid(z) if self.loss == "bce" else self.inner.target_inverse(z)

    @property
    def torch_target_inverse(self) -> Any:
        """bce: the sigmoid; otherwise the strategy's own (None when it trains on the target as is)."""
        if self.loss == "bce":
            return torch_sigmoid
        inner = self.inner
        if type(inner).target_inverse is Strategy.target_inverse:
            return _identity
        return getattr(inner, "torch_target_inverse", None)

    def validate(self) -> None:
        self.inner.validate()

    def __repr__(self) -> str:
        return f"LossView({self.inner!r}, loss={self.loss!r})"


def _identity(z: Any) -> Any:
    return z
