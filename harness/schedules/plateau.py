"""Reduce-on-plateau, vectorised over members: one call per epoch with every member's loss."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.schedules import params as P

# The plateau schedule's defaults (torch's patience is 10 epochs; retrains here run ~40 epochs).
PLATEAU_DEFAULTS = {"factor": 0.1, "patience": 5, "threshold": 1e-4, "cooldown": 0, "min_lr_ratio": 0.0}
PLATEAU_CHECKS: dict[str, P.Check] = {
    "factor": P.interval(0.0, 1.0, closed_low=False, closed_high=False),
    "patience": P.whole(0),
    "threshold": P.at_least(0.0),
    "cooldown": P.whole(0),
    "min_lr_ratio": P.interval(0.0, 1.0, closed_low=True, closed_high=True),
    "eps": P.at_least(0.0),
}


class PlateauState:
    """torch ``ReduceLROnPlateau`` (``mode="min"``, ``threshold_mode="rel"``) for many members.

    Each member keeps its own best loss, bad-epoch count, cooldown counter and multiplier (of
    the base LR, starting at 1). :meth:`step` applies, member by member, exactly torch's rule:
    an epoch is an improvement when ``loss < best * (1 - threshold)``; cooldown epochs do not
    count as bad; after more than ``patience`` bad epochs the multiplier becomes
    ``max(multiplier * factor, min_lr_ratio)`` unless that changes it by ``eps`` or less, and
    the cooldown starts. A NaN loss is never an improvement (as in torch).

    Parameters
    ----------
    n_members : number of members (the vector length of every call to :meth:`step`).
    factor, patience, threshold, cooldown : as torch's.
    min_lr_ratio : floor of the multiplier (torch's ``min_lr`` over the base LR).
    eps : smallest change of the multiplier that is applied (torch's ``eps`` at base LR 1).
    """

    def __init__(
        self,
        n_members: int,
        factor: float = 0.1,
        patience: int = 5,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_lr_ratio: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        settings = _checked(
            factor=factor, patience=patience, threshold=threshold, cooldown=cooldown,
            min_lr_ratio=min_lr_ratio, eps=eps,
        )
        if isinstance(n_members, bool) or not isinstance(n_members, Integral) or n_members < 1:
            raise ValueError(f"n_members must be a whole number >= 1, got {n_members!r}")
        self.n_members = int(n_members)
        self.factor = settings["factor"]
        self.patience = settings["patience"]
        self.threshold = settings["threshold"]
        self.cooldown = settings["cooldown"]
        self.min_lr_ratio = settings["min_lr_ratio"]
        self.eps = settings["eps"]
        self.best = np.full(self.n_members, np.inf)
        self.bad_epochs = np.zeros(self.n_members, dtype=np.int64)
        self.cooldown_left = np.zeros(self.n_members, dtype=np.int64)
        self.multiplier = np.ones(self.n_members)

    def step(self, val_loss: np.ndarray) -> np.ndarray:
        """Take one epoch's validation losses, shape ``[n_members]``; return the multipliers
        (shape ``[n_members]``, a copy) to use from the next epoch on."""
        loss = np.asarray(val_loss, dtype=np.float64)
        if loss.shape != (self.n_members,):
            raise ValueError(f"val_loss must have shape ({self.n_members},), got {loss.shape}")
        better = loss < self.best * (1.0 - self.threshold)
        self.best = np.where(better, loss, self.best)
        self.bad_epochs = np.where(better, 0, self.bad_epochs + 1)
        cooling = self.cooldown_left > 0
        self.cooldown_left = np.where(cooling, self.cooldown_left - 1, self.cooldown_left)
        self.bad_epochs = np.where(cooling, 0, self.bad_epochs)
        reduce = self.bad_epochs > self.patience
        lowered = np.maximum(self.multiplier * self.factor, self.min_lr_ratio)
        self.multiplier = np.where(reduce & (self.multiplier - lowered > self.eps), lowered, self.multiplier)
        self.cooldown_left = np.where(reduce, self.cooldown, self.cooldown_left)
        self.bad_epochs = np.where(reduce, 0, self.bad_epochs)
        return self.multiplier.copy()


def _checked(**values: Any) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        try:
            out[key] = PLATEAU_CHECKS[key](value)
        except ValueError as exc:
            raise HarnessError(f"schedule 'plateau': {key} {exc}") from None
    return out
