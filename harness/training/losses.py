"""The training losses (``training.loss``): each member's per-element loss on its batch.

- ``mse``: ``(out - y)²`` (``torch.nn.MSELoss``);
- ``mae``: ``|out - y|`` (``torch.nn.L1Loss``);
- ``huber``: ``0.5 e²`` where ``|e| <= δ``, else ``δ (|e| - 0.5 δ)`` (``torch.nn.HuberLoss(delta=δ)``),
  with one δ per member (a backtest gives each window its own, in that window's scaled units);
- ``bce``: binary cross-entropy on logits, ``max(out, 0) - out·y + log(1 + exp(-|out|))``
  (``torch.nn.BCEWithLogitsLoss``): the network outputs a logit, the target is a label in [0, 1].

The trainer averages these over a member's real rows (and outputs), as the torch losses do with
``reduction="mean"``; the validation loss is the same loss over the validation rows, in float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import DataError, unknown_name

LOSSES = ("mse", "mae", "huber", "bce")


class Loss:
    """One training loss for the members of a stack.

    Parameters
    ----------
    name : one of :data:`LOSSES`.
    delta : huber only: δ per member ``[M]`` (a tensor on the stack's device).
    """

    def __init__(self, name: str, delta: torch.Tensor | None = None) -> None:
        if name not in LOSSES:
            raise unknown_name("loss", name, LOSSES)
        self.name = name
        self.delta = delta

    def elements(self, out: torch.Tensor, y: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        """Per-element losses ``[members, n, ...]`` of outputs ``out`` against targets ``y``."""
        if self.name == "mse":
            return (out - y).square()
        if self.name == "mae":
            return (out - y).abs()
        if self.name == "bce":
            return F.binary_cross_entropy_with_logits(out, y.to(out.dtype).expand_as(out), reduction="none")
        error = (out - y).abs()
        delta = self.delta if members is None else self.delta[members]
        delta = delta.to(error.dtype).reshape(-1, *[1] * (error.dim() - 1))
        return torch.where(error <= delta, 0.5 * error.square(), delta * (error - 0.5 * delta))


def check_targets(name: str, *targets: object) -> None:
    """``bce`` trains on labels: every target must lie in [0, 1]."""
    if name != "bce":
        return
    for values in targets:
        if values is None:
            continue
        y = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=np.float64)
        if y.size and (np.nanmin(y) < 0 or np.nanmax(y) > 1):
            raise DataError(
                f"loss: bce trains a classifier on labels in [0, 1], but the targets run from {np.nanmin(y):.4g} "
                f"to {np.nanmax(y):.4g}; pass labels (e.g. (y > 0) for a sign classifier) or use mse, mae or huber"
            )
