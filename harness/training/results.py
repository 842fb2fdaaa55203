"""What a batched training takes per window (:class:`WindowData`) and gives back (:class:`TrainResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.training.checks import _tensor
from harness.training.inputs import Inputs
from harness.training.stack import Stack

DIVERGENCE_FACTOR = 1e3  # a loss this many times the first-step loss marks a member diverged


@dataclass
class TrainResult:
    """Everything one batched training of one window produced; arrays have one row per member.

    Members are ordered schedule-major: ``labels[m] = (schedule label, seed)``. ``T`` is
    ``epochs * steps_per_epoch``. After a member is frozen (diverged or early-stopped) its
    ``step_loss``, ``lr`` and ``val_loss`` entries are NaN.

    Attributes
    ----------
    labels : ``(schedule label, seed)`` per member.
    step_loss : ``[M, T]`` training batch loss (MSE) at each step.
    val_loss : ``[M, epochs]`` validation MSE after each epoch (all NaN without validation data).
    lr : ``[M, T]`` learning rate each member's update used.
    diverged : ``[M]`` bool.
    best_epoch : ``[M]`` epoch (0-based) of the lowest validation loss; -1 without validation.
    stopped_epoch : ``[M]`` epochs the member trained before it was frozen (``epochs`` if never).
    state : stacked parameters ``{name: [M, *shape]}`` (CPU) the members end with; pass it as
        ``init_state`` to warm-start the next window.
    steps_per_epoch : optimizer steps per epoch.
    stack : the trained members (what :meth:`predict` runs); picklable with a picklable model.
    budget, base_lr : ``[M]`` each member's training budget (epochs) and base LR. With several
        budgets ``T`` is the longest one's steps, and a member's entries after its own are NaN.
    inputs : what :func:`train` was given (feature shape, DataFrame columns, scaling), so that
        :meth:`predict` checks its ``X`` against it; None from :func:`train_windows`.
    """

    labels: list[tuple[str, int]]
    step_loss: np.ndarray
    val_loss: np.ndarray
    lr: np.ndarray
    diverged: np.ndarray
    best_epoch: np.ndarray
    stopped_epoch: np.ndarray
    state: dict[str, torch.Tensor]
    steps_per_epoch: int
    stack: Stack = field(repr=False)
    budget: np.ndarray | None = None  # [M] epochs of each member's candidate: its training budget
    base_lr: np.ndarray | None = None  # [M] base LR of each member's candidate
    inputs: Inputs | None = None  # set by train(): what predict checks X against

    def predict(self, X: Any, chunk_rows: int = 8192) -> np.ndarray:
        """Every member's predictions for ``X``: ``[M, n]`` (``[M, n, outputs]`` for several).

        Eval mode (no dropout, schedule-free members at their averaged weights), no gradients,
        in chunks of ``chunk_rows`` rows. After :func:`train`, ``X`` must have the training
        features' shape (a one-line error names it otherwise); a DataFrame's columns are matched
        by name (reordered; missing or unknown columns are an error); with ``scale=True`` the
        predictions are in the target's own units.
        """
        if self.inputs is not None:
            X = self.inputs.features(X, "X")
        x = _tensor("X", X, self.stack.dtype, self.stack.device)
        with torch.no_grad():
            chunks = [self.stack.forward(x[s:s + chunk_rows], training=False, shared=True)
                      for s in range(0, max(len(x), 1), chunk_rows)]  # zero rows: one empty chunk, [M, 0]
        out = torch.cat(chunks, dim=1).cpu().numpy()
        return out if self.inputs is None else self.inputs.unscale(out)


@dataclass
class WindowData:
    """One window's data for :func:`train_windows`; its schedules × seeds members train on it alone.

    Attributes
    ----------
    X_train, y_train, X_val, y_val : as for :func:`train` (validation: both or neither).
    init_state : a previous result (or its ``state``, ``{name: [members, *shape]}``) to start this
        window's members from; None: a fresh init.
    lr_tables : ``[members, epochs * steps]`` learning rates replacing each member's schedule
        table, as for :func:`train`.
    """

    X_train: Any
    y_train: Any
    X_val: Any = None
    y_val: Any = None
    init_state: Mapping[str, torch.Tensor] | TrainResult | None = None
    lr_tables: np.ndarray | None = None
    huber_delta: float | None = None  # loss huber: this window's delta (None: the setting's)
