"""What :func:`harness.training.train_windows` adds to the stacked step, kept out of the step itself:
the budget and LR axes (candidates), the training loss, and the checks of a user's own network.

**Budget and LR axes.** ``epochs`` and ``lr`` may be lists; every schedule trains at every budget
and every base LR (:func:`harness.schedules.candidates.candidates`), all in the one stack. The
loop runs the longest budget. A member's LR table is its schedule's table for *its* budget and
base LR (zeros after its budget), handed to the loop as the ``lr_tables`` it already takes; a
schedule-free member's optimizer gets its own LR and warmup; and at the end of its last epoch a
member stops, exactly as an early-stopped one does (``stopped_epoch`` = its budget). Batches are
each member's own draws and every update is per member, so a member's numbers equal those of a
training at its budget and LR alone (bitwise; with dropout, masks are drawn per window stack, so
only in distribution).

**Loss.** ``mse`` keeps the step as it is; ``mae``, ``huber`` and ``bce`` are a
:class:`~harness.training.losses.Loss` the loss and the validation use.

**A user's network.** :func:`harness.training.models.check_module` probes a module factory that
is not a built-in model before the stack is built: one-line errors when members of different
seeds differ in their parameters or the forward cannot run under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.errors import HarnessError, unknown_name
from harness.schedules.candidates import Candidate, candidates, check_epochs, check_lrs
from harness.training.losses import LOSSES, Loss, check_targets
from harness.training.models import check_module

if TYPE_CHECKING:
    from harness.training.loop import TrainResult, WindowData

__all__ = ["Axes", "check_epochs", "check_lrs"]


class Axes:
    """The candidates (schedules × budgets × base LRs) and the loss of one training.

    Members are ``candidates × seeds`` per window (candidate-major); ``budget`` and ``base_lr``
    hold one window's members' values.
    """

    def __init__(self, specs: Sequence[Any], epochs: int | Sequence[int], lr: float | Sequence[float],
                 seeds: int, loss: str, huber_delta: float) -> None:
        if loss not in LOSSES:
            raise unknown_name("loss", loss, LOSSES)
        if loss == "huber" and not (isinstance(huber_delta, (int, float)) and math.isfinite(huber_delta)
                                    and huber_delta > 0):
            raise HarnessError(f"huber_delta: must be a finite number > 0, got {huber_delta!r}")
        self.candidates: list[Candidate] = candidates(list(specs), epochs, lr)
        self.labels = [c.label for c in self.candidates]
        self.seeds, self.loss, self.huber_delta = seeds, loss, huber_delta
        self.epochs = max(c.epochs for c in self.candidates)
        self.lr = self.candidates[0].lr
        self.budget = np.array([c.epochs for c in self.candidates for _ in range(seeds)])
        self.base_lr = np.array([c.lr for c in self.candidates for _ in range(seeds)])
        self.budgets_vary = len(set(self.budget.tolist())) > 1
        self.varied = self.budgets_vary or len(set(self.base_lr.tolist())) > 1
        self.n_windows = 1

    def member_specs(self) -> list[Any]:
        """The schedule of each of one window's members."""
        return [c.schedule for c in self.candidates for _ in range(self.seeds)]

    def check_model(self, factory: Any, row_shape: tuple[int, ...], seeds: list[int]) -> None:
        """A user's module factory, probed before the stack is built (built-in models skip it)."""
        check_module(factory, row_shape, seeds)

    def tables(self, windows: Sequence[WindowData], steps: np.ndarray) -> list[np.ndarray | None]:
        """Each window's ``lr_tables`` for the loop: the windows' own when nothing varies, else one
        row per member: its schedule at its budget and base LR (or its row of the window's own
        ``lr_tables``, whose columns past its budget are ignored), zeros after its budget."""
        self.n_windows = len(windows)
        if not self.varied:
            return [window.lr_tables for window in windows]
        out: list[np.ndarray | None] = []
        nominal: dict[tuple[int, int], np.ndarray] = {}
        for window, window_steps in zip(windows, np.asarray(steps).tolist()):
            total = self.epochs * int(window_steps)
            given = None if window.lr_tables is None else np.asarray(window.lr_tables, dtype=np.float64)
            if given is not None and given.shape != (len(self.budget), total):
                raise HarnessError(f"lr_tables: shape {given.shape} does not match [members, steps of the longest "
                                   f"budget] = {[len(self.budget), total]}")
            table = np.zeros((len(self.budget), total))
            for m in range(len(self.budget)):
                own = int(self.budget[m]) * int(window_steps)
                k = m // self.seeds
                if given is not None:
                    table[m, :own] = given[m, :own]
                else:
                    if (k, own) not in nominal:
                        candidate = self.candidates[k]
                        nominal[(k, own)] = np.asarray(candidate.schedule.nominal_table(own, candidate.lr), np.float64)
                    table[m, :own] = nominal[(k, own)]
            out.append(table)
        return out

    def schedule_free(self, updates: Any) -> None:
        """Give each schedule-free optimizer its candidate's base LR and warmup (its budget's steps)."""
        if not self.varied:
            return
        per_window = len(self.budget)
        for window_steps, _, group in updates.schedule_free:
            candidate = self.candidates[(int(group.index[0]) % per_window) // self.seeds]
            settings = group.optimizer.param_groups[0]
            settings["lr"] = candidate.lr
            settings["warmup_steps"] = candidate.schedule.warmup_steps(candidate.epochs * int(window_steps))

    def criterion(self, windows: Sequence[WindowData], rows: Any, stack: Any) -> Loss | None:
        """The training loss (None for ``mse``: the step's own squares), with each window's Huber δ."""
        check_targets(self.loss, *[values for w in windows for values in (w.y_train, w.y_val)])
        if self.loss == "mse":
            return None
        if self.loss != "huber":
            return Loss(self.loss)
        deltas = [self.huber_delta if w.huber_delta is None else w.huber_delta for w in windows]
        for w, delta in enumerate(deltas):
            if not (isinstance(delta, (int, float, np.floating)) and math.isfinite(delta) and delta > 0):
                raise HarnessError(f"window {w}: huber_delta must be a finite number > 0, got {delta!r}")
        per_member = np.repeat(np.asarray(deltas, dtype=np.float64), rows.n_members)
        return Loss("huber", torch.as_tensor(per_member, dtype=stack.dtype, device=stack.device))

    def spend(self, book: Any, updates: Any, epoch: int) -> None:
        """After ``epoch``: members whose budget it ended stop (as early-stopped ones do), and a
        schedule-free group whose members are all spent takes its averaged weights now, as it would
        at the end of a training of that budget (later eval/train round trips would move them)."""
        if not self.budgets_vary:
            return
        budgets = np.tile(self.budget, self.n_windows)
        spent = np.asarray(book.running) & (budgets == epoch + 1)
        if not spent.any():
            return
        book.stopped_epoch[spent] = epoch + 1
        book.running = np.asarray(book.running) & ~spent
        if isinstance(book.active, torch.Tensor):
            book.active &= torch.as_tensor(~spent, device=book.active.device)
        else:
            book.active &= ~spent
        keep = []
        for entry in updates.schedule_free:
            members = entry[2].index.cpu().numpy()
            if (budgets[members] <= epoch + 1).all():
                entry[2].eval()
            else:
                keep.append(entry)
        updates.schedule_free = keep

    def describe(self, result: TrainResult) -> TrainResult:
        """A window's result with each member's budget and base LR."""
        result.budget, result.base_lr = self.budget.copy(), self.base_lr.copy()
        return result
