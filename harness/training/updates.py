"""Every member's LR at every step, and one optimizer step for all members, for the training loop.

:class:`_Rates` holds every member's LR at every step (schedule tables times plateau
multipliers); :class:`_Updates` takes one step for all members: the batched optimizer of
:mod:`harness.training.optimizers` and the schedule-free groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.training.optimizers import ScheduleFreeMembers, make_optimizer

if TYPE_CHECKING:
    from harness.training.stack import Stack


class _Rates:
    """Per-member LR at every step, ``[M, epochs, width]``: schedule tables × plateau multipliers
    (host-side, float64); window ``w``'s members use the first ``steps[w]`` columns of each epoch."""

    def __init__(self, specs: list[Any], base_lr: float, epochs: int, steps: np.ndarray, width: int,
                 lr_tables: Sequence[np.ndarray | None]) -> None:
        per_window = len(specs)
        self.table = np.zeros((len(steps) * per_window, epochs, width))
        nominal: dict[tuple[int, int], np.ndarray] = {}
        for w, (window_steps, override) in enumerate(zip(steps, lr_tables)):
            total = epochs * int(window_steps)
            rows = None if override is None else _lr_override(override, (per_window, total))
            for k, spec in enumerate(specs):
                if rows is not None:  # schedule-free members take theirs as they step (_Updates)
                    curve = rows[k]
                else:
                    curve = nominal.setdefault((k, total), np.asarray(spec.nominal_table(total, base_lr), np.float64))
                self.table[w * per_window + k, :, :window_steps] = curve.reshape(epochs, int(window_steps))
        member_specs = list(specs) * len(steps)
        self.multiplier = np.ones(len(member_specs))
        self.plateaus = []
        for label in dict.fromkeys(spec.label for spec in specs if spec.kind == "plateau"):
            members = np.array([m for m, spec in enumerate(member_specs) if spec.label == label])
            spec = next(spec for spec in specs if spec.label == label)
            self.plateaus.append((members, spec.plateau_state(len(members))))

    def block(self, epoch: int) -> np.ndarray:
        """``[M, width]`` LRs of one epoch."""
        return self.table[:, epoch] * self.multiplier[:, None]

    def end_epoch(self, monitor: np.ndarray) -> None:
        """Plateau members react to their own epoch metric (validation loss, else training loss)."""
        for members, state in self.plateaus:
            self.multiplier[members] = state.step(monitor[members])


def _lr_override(lr_tables: Any, shape: tuple[int, int]) -> np.ndarray:
    table = np.asarray(lr_tables, dtype=np.float64)
    if table.shape != shape:
        raise HarnessError(f"lr_tables: shape {table.shape} does not match [members, steps] = {list(shape)}")
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise HarnessError("lr_tables: learning rates must be finite and >= 0")
    return table


class _Updates:
    """One optimizer step for all members: the batched optimizer, and one schedule-free
    optimizer per (schedule-free spec, steps per epoch, has validation): its members step
    together, share one LR sequence and switch to eval mode together, as each would alone."""

    def __init__(self, stack: Stack, optimizer: str, specs: list[Any], epochs: int, steps: np.ndarray,
                 validated: Sequence[bool], *, lr: float, weight_decay: float, momentum: float,
                 tabled: Sequence[bool] | None = None) -> None:
        member_specs = list(specs) * len(steps)
        self.grads = stack.flat_grad
        self.optimizer = make_optimizer(optimizer, stack.flat, weight_decay=weight_decay, momentum=momentum)
        self.batched = np.array([spec.kind != "schedule_free" for spec in member_specs])
        self.schedule_free: list[tuple[int, bool, ScheduleFreeMembers]] = []
        # A window given its own LR table (``tabled``) gets groups of its own that follow it.
        tabled = [False] * len(steps) if tabled is None else list(tabled)
        windows = [(n, has_val, w if own else -1) for w, (n, has_val, own) in enumerate(zip(steps.tolist(), validated,
                                                                                             tabled))]
        for k, spec in enumerate(specs):
            if spec.kind != "schedule_free":
                continue
            for key in dict.fromkeys(windows):
                window_steps, has_val, own = key
                members = [w * len(specs) + k for w, other in enumerate(windows) if other == key]
                group = ScheduleFreeMembers(stack.flat, members, lr=lr, weight_decay=weight_decay,
                                            warmup_steps=spec.warmup_steps(epochs * window_steps))
                group.follows_table = own >= 0
                self.schedule_free.append((window_steps, has_val, group))

    def step(self, lr: np.ndarray, live: np.ndarray, i: int) -> np.ndarray:
        """Update the live members (``live`` ``[M]`` bool) at step ``i`` of the epoch with ``lr``
        ``[M]`` (host arrays); returns the LR each used (NaN if it sat out)."""
        if not self.schedule_free:
            self.optimizer.step(self.grads, lr, live)
            return np.where(live, lr, np.nan)
        self.optimizer.step(self.grads, lr, live & self.batched)
        lr = np.array(lr, dtype=np.float64)
        live_tensor = torch.from_numpy(live).to(self.grads.device)
        for steps, _, members in self.schedule_free:
            if i < steps:
                rows = members.index.cpu().numpy()
                lr[rows] = members.step(self.grads, live_tensor, lr[rows[0]] if members.follows_table else None)
        return np.where(live, lr, np.nan)

    def eval(self, validating: bool = False) -> None:
        """Schedule-free members to their averaged weights (only those that validate, when
        ``validating``: the round trip to eval mode and back is not bitwise exact)."""
        for _, has_val, members in self.schedule_free:
            if has_val or not validating:
                members.eval()

    def train(self) -> None:
        """Back to training mode after validating."""
        for _, has_val, members in self.schedule_free:
            if has_val:
                members.train()
