"""Batched training of members: all schedules × seeds, of one window or many, in one pass (design section 6).

Members differ only in init seed and learning-rate schedule, so they train together as one
stack (:mod:`harness.training.stack`) with one optimizer step per batch and a per-member LR vector
(:mod:`harness.training.optimizers`). Independent windows (the ``fresh`` boundary policy) join
the same stack: :func:`train_windows` trains windows × schedules × seeds members, each reading its
own window's rows. Each member equals the same model trained alone:

- init: the model factory under ``torch.manual_seed(seed)``;
- batches: those of ``DataLoader(TensorDataset(X, y), batch_size, shuffle=True,
  generator=torch.Generator().manual_seed(seed))`` over its window's rows (reshuffled every
  epoch, last partial batch kept), drawn from the member's own generator;
- updates: ``torch.optim.AdamW``/``SGD`` with the schedule's LR at step ``t`` (the loop owns
  ``t``), or ``schedulefree.AdamWScheduleFree`` for ``schedule_free`` members;
- loss: MSE; validation MSE after every epoch (schedule-free members in eval mode).

Every batch is laid out ``batch_size`` rows wide: a partial batch is padded and its pad rows
masked out of the loss, and a window with fewer batches per epoch than the longest (expanding
windows) sits out the steps it has no batch for (no update, no LR step, no random draws; when
the windows with a batch are consecutive, as expanding windows in order are, the step computes
only them). So a member computes exactly the same thing, bit for bit, whichever members share its
stack: training windows one by one or all together gives the same numbers.

A member whose batch loss is NaN/inf or above ``1e3`` × its first-step loss is frozen before
that step's update and flagged ``diverged``; the others carry on unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.training.batches import MemberBatches, _Rows
from harness.training.budget import reuse_freed_memory
from harness.training.checks import _check_settings, _schedules, _tensor, _window_shapes
from harness.training.models import make_model_factory
from harness.training.optimizers import _Rates, _Updates
from harness.training.stack import GroupStreams, Stack

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

    def predict(self, X: Any, chunk_rows: int = 8192) -> np.ndarray:
        """Every member's predictions for ``X``: ``[M, n]`` (``[M, n, outputs]`` for several).

        Eval mode (no dropout, schedule-free members at their averaged weights), no gradients,
        in chunks of ``chunk_rows`` rows.
        """
        x = _tensor("X", X, self.stack.dtype, self.stack.device)
        with torch.no_grad():
            chunks = [self.stack.forward(x[s:s + chunk_rows], training=False, shared=True)
                      for s in range(0, max(len(x), 1), chunk_rows)]  # zero rows: one empty chunk, [M, 0]
        return torch.cat(chunks, dim=1).cpu().numpy()


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


def train(
    X_train: Any,
    y_train: Any,
    X_val: Any = None,
    y_val: Any = None,
    *,
    init_state: Mapping[str, torch.Tensor] | TrainResult | None = None,
    lr_tables: np.ndarray | None = None,
    **settings: Any,
) -> TrainResult:
    """Train every (schedule, seed) member on the same data in one batched pass.

    Parameters
    ----------
    X_train, y_train : ``[n, features]`` (``[n, seq, features]`` for gru/lstm) and ``[n]`` or
        ``[n, outputs]``; arrays, frames or tensors.
    X_val, y_val : validation rows (both or neither): per-epoch validation loss, early stopping,
        plateau schedules. Without them plateau schedules watch the epoch's mean training loss.
    init_state : a previous result (or its ``state``) to start from instead of a fresh init.
    lr_tables : ``[M, T]`` learning rates replacing each member's schedule table (e.g. a schedule
        spanning windows, ``harness.schedules.window_lr_table``); plateau multipliers still apply;
        rows of schedule-free members are ignored.
    **settings : the training settings of :func:`train_windows` (``model``, ``schedules``,
        ``seeds``, ``epochs``, ``batch_size``, ``lr``, ``optimizer``, ...).
    """
    window = WindowData(X_train, y_train, X_val, y_val, init_state=init_state, lr_tables=lr_tables)
    return train_windows([window], **settings)[0]


def train_windows(
    windows: Sequence[WindowData],
    *,
    model: Mapping[str, Any] | Callable[[], torch.nn.Module] | None = None,
    schedules: Sequence[str | Mapping[str, Any]] = ("constant",),
    seeds: int = 3,
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    grad_clip: float | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    stack_path: str = "auto",
) -> list[TrainResult]:
    """Train the members of several independent windows in one stack; one result per window.

    Every window gets the same schedules × seeds members, each reading only its window's rows;
    all members take one forward/backward/optimizer step together. Windows may have different
    row counts (expanding windows): a window with fewer batches per epoch skips the steps it has
    none for. Each window's result is bitwise what ``train`` on that window alone returns.

    The windows must be independent (the ``fresh`` boundary policy). Chained policies
    (``warm_restart``, ``warm_continue``) start each window from the previous one's trained
    weights, so their windows train one call at a time, in order (each window's schedules × seeds
    still in one stack).

    Parameters
    ----------
    windows : the windows' data (features and targets of the same shapes beyond the row count).
    model : the config's model section, a module factory, or None (MLP 64-64 relu).
    schedules : schedule specs as in the config (``"cosine"``, ``{"name": "step", ...}``).
    seeds : members per schedule; member seeds are ``seed, seed+1, ...``.
    lr : base learning rate.
    optimizer : ``adamw`` or ``sgd`` (with ``momentum``); ``schedule_free`` members always use
        ``AdamWScheduleFree`` with ``lr``, ``weight_decay`` and the schedule's warmup.
    grad_clip : per-member gradient-norm clipping (``clip_grad_norm_`` semantics), or None.
    patience : early stopping (needs validation data): a member stops updating after ``patience``
        epochs without a lower validation loss, and every member ends with its best-epoch
        weights. None: no early stopping, last weights.
    seed : seed of the random draws of training forwards (dropout), one stream per window.
    device : where to train (``"cpu"``, ``"cuda"``).
    stack_path : member batching: ``"auto"`` (batched matmuls for the built-in MLP, vmap for any
        other module), ``"bmm"`` or ``"vmap"`` (to compare them).
    """
    _check_settings(seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    weight_decay=weight_decay, momentum=momentum, grad_clip=grad_clip, patience=patience)
    if not windows:
        raise HarnessError("train_windows: no windows; pass at least one WindowData")
    reuse_freed_memory()
    specs = _schedules(schedules, optimizer)
    labels = [(spec.label, seed + s) for spec in specs for s in range(seeds)]
    x_shape, y_shape = _window_shapes(windows)
    factory = make_model_factory(model, n_features=x_shape[-1], n_outputs=1 if len(y_shape) == 1 else y_shape[1])
    stack = Stack(factory, [member_seed for _, member_seed in labels] * len(windows), device, path=stack_path)
    data = _Rows(windows, len(labels), batch_size, stack)
    for w, window in enumerate(windows):
        if window.init_state is not None:
            state = window.init_state
            stack.load_state(state.state if isinstance(state, TrainResult) else state, members=data.groups[w])

    window_specs = [spec for spec in specs for _ in range(seeds)]  # one window's members
    rates = _Rates(window_specs, lr, epochs, data.steps, data.width, [w.lr_tables for w in windows])
    updates = _Updates(stack, optimizer, window_specs, epochs, data.steps, [val is not None for val in data.val],
                       lr=lr, weight_decay=weight_decay, momentum=momentum)
    batches = MemberBatches(data.member_rows(), [member_seed for _, member_seed in labels] * len(windows),
                            width=data.width * batch_size)
    streams = GroupStreams(data.groups, seed, stack.device)
    book = _Book(stack, epochs, data, keep_best=patience is not None and data.any_validation)

    fork = [stack.device.index or 0] if stack.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)  # other global-RNG draws reproducible; the caller's RNG left alone
        for epoch in range(epochs):
            order = batches.epoch()
            lr_block = torch.as_tensor(rates.block(epoch), device=stack.device)
            for i in range(data.width):
                columns, span = slice(i * batch_size, (i + 1) * batch_size), data.spans[i]
                streams.live, streams.span = data.live[i], span
                loss = _batch_loss(stack, *data.batch(order[span, columns]), batches.mask[span, columns],
                                   data.counts[span, i], streams, span)
                live = book.watch(data.widen(loss.detach(), span), epoch, i, data.present[:, i])
                stack.backward(torch.where(live[span], loss, 0.0).sum())
                if grad_clip is not None:
                    _clip_grad_norms(stack, grad_clip)
                book.lr[:, epoch, i] = updates.step(lr_block[:, i], live, i)
                stack.zero_grad()
            monitor = book.end_epoch(epoch, updates, patience)
            rates.end_epoch(monitor)
            if not book.any_active():
                break
    updates.eval()  # schedule-free members end at their averaged weights
    book.restore_best()
    return [book.result(w, labels) for w in range(len(windows))]


class _Book:
    """Per-member bookkeeping: who is active, losses, LRs, best epochs, best weights.

    Step losses and LRs are laid out ``[M, epochs, width]``; a window's members fill the first
    ``steps`` columns of each epoch.
    """

    def __init__(self, stack: Stack, epochs: int, rows: _Rows, keep_best: bool) -> None:
        n_members, device = stack.n_members, stack.device
        self.stack, self.rows, self.epochs = stack, rows, epochs
        self.active = torch.ones(n_members, dtype=torch.bool, device=device)
        self.diverged = torch.zeros(n_members, dtype=torch.bool, device=device)
        self.first_loss = torch.zeros(n_members, dtype=stack.dtype, device=device)
        self.step_loss = torch.full((n_members, epochs, rows.width), torch.nan, dtype=stack.dtype, device=device)
        self.lr = torch.full((n_members, epochs, rows.width), torch.nan, dtype=torch.float64, device=device)
        self.validated = np.repeat([val is not None for val in rows.val], rows.n_members)
        self.val_loss = np.full((n_members, epochs), np.nan)
        self.best_val = np.full(n_members, np.inf)
        self.best_epoch = np.full(n_members, -1)
        self.stale_epochs = np.zeros(n_members, dtype=int)
        self.stopped_epoch = np.full(n_members, epochs)
        self.running = np.ones(n_members, dtype=bool)  # host copy of `active` at the last epoch end
        self.best_flat = stack.flat.clone() if keep_best else None

    def watch(self, loss: torch.Tensor, epoch: int, i: int, present: torch.Tensor) -> torch.Tensor:
        """Record the losses of step ``i`` of ``epoch``, freeze members that diverge (before their
        update); returns who updates now: active members with a batch."""
        if epoch == 0 and i == 0:
            self.first_loss.copy_(loss)
        watched = self.active & present
        self.step_loss[:, epoch, i] = torch.where(watched, loss, torch.nan)
        bad = watched & (~torch.isfinite(loss) | (loss > DIVERGENCE_FACTOR * self.first_loss))
        self.diverged |= bad
        self.active &= ~bad
        return watched & ~bad

    def end_epoch(self, epoch: int, updates: _Updates, patience: int | None) -> np.ndarray:
        """Validate, early-stop, and return each member's epoch metric for plateau schedules."""
        active = self.active.cpu().numpy()
        self.stopped_epoch[self.running & ~active] = epoch  # diverged during this epoch
        self.running = active
        monitor = self._training_loss(epoch)
        if not self.rows.any_validation:
            return monitor
        updates.eval(validating=True)  # schedule-free members validate (and are kept) at their averaged weights
        loss = np.where(active, self._validation_loss(), np.nan)
        self.val_loss[:, epoch] = loss
        improved = active & (loss < self.best_val)
        self.best_val[improved] = loss[improved]
        self.best_epoch[improved] = epoch
        self.stale_epochs = np.where(improved, 0, self.stale_epochs + (active & self.validated))
        if self.best_flat is not None:
            keep = torch.as_tensor(improved, device=self.best_flat.device)[:, None]
            self.best_flat.copy_(torch.where(keep, self.stack.flat, self.best_flat))
        updates.train()
        if patience is not None:
            stop = active & self.validated & (self.stale_epochs >= patience)
            self.stopped_epoch[stop] = epoch + 1
            self.running = active & ~stop
            self.active &= torch.as_tensor(~stop, device=self.active.device)
        return np.where(self.validated, loss, monitor)

    def _training_loss(self, epoch: int) -> np.ndarray:
        """Each member's mean batch loss over its steps of ``epoch`` (NaN once frozen)."""
        means = [torch.nanmean(self.step_loss[group, epoch, :steps].double(), dim=1)
                 for group, steps in zip(self.rows.groups, self.rows.steps)]
        return torch.cat(means).cpu().numpy()

    def _validation_loss(self) -> np.ndarray:
        """Each member's MSE on its window's validation rows (NaN without them)."""
        losses = [np.full(self.rows.n_members, np.nan) if val is None else _mse(self.stack, *val, members=group)
                  for group, val in zip(self.rows.groups, self.rows.val)]
        return np.concatenate(losses)

    def any_active(self) -> bool:
        return bool(self.running.any())

    @torch.no_grad()
    def restore_best(self) -> None:
        """Early stopping: every member that validated ends with its best-epoch weights."""
        if self.best_flat is None:
            return
        keep = torch.as_tensor(self.best_epoch >= 0, device=self.best_flat.device)[:, None]
        self.stack.flat.copy_(torch.where(keep, self.best_flat, self.stack.flat))

    def result(self, w: int, labels: list[tuple[str, int]]) -> TrainResult:
        """Window ``w``'s result, with a stack of its own members."""
        group, steps = self.rows.groups[w], int(self.rows.steps[w])
        stack = self.stack if len(self.rows.groups) == 1 else self.stack.select(group)

        def per_step(values: torch.Tensor) -> np.ndarray:  # [M, epochs, width] -> the window's [K, epochs * steps]
            return values[group, :, :steps].reshape(len(labels), -1).cpu().numpy()

        return TrainResult(
            labels=list(labels),
            step_loss=per_step(self.step_loss.double()),
            val_loss=self.val_loss[group].copy(),
            lr=per_step(self.lr),
            diverged=self.diverged[group].cpu().numpy(),
            best_epoch=self.best_epoch[group].copy(),
            stopped_epoch=self.stopped_epoch[group].copy(),
            state=stack.state(),
            steps_per_epoch=steps,
            stack=stack,
        )


def _batch_loss(stack: Stack, xb: torch.Tensor, yb: torch.Tensor, keep: torch.Tensor, count: torch.Tensor,
                streams: GroupStreams, members: slice) -> torch.Tensor:
    """The MSE of each of ``members`` on its batch: the mean over its ``count`` real rows (``keep``)."""
    whole = members.start == 0 and members.stop == stack.n_members
    out = stack.forward(xb, training=True, streams=streams, members=None if whole else members)
    if out.shape != yb.shape:
        raise HarnessError(
            f"model: output shape {tuple(out.shape[1:])} per member does not match the target's "
            f"{tuple(yb.shape[1:])}; return [n] for a 1-d target, [n, k] for k targets"
        )
    squares = (out - yb).square()
    keep = keep.reshape(*keep.shape, *[1] * (squares.dim() - 2))
    per_row = math.prod(squares.shape[2:])
    return torch.where(keep, squares, 0.0).flatten(1).sum(dim=1) / (count * per_row)


@torch.no_grad()
def _mse(stack: Stack, X: torch.Tensor, y: torch.Tensor, members: slice | None = None,
         chunk_rows: int = 8192) -> np.ndarray:
    """MSE of each member (of ``members``) on shared rows (eval mode), accumulated in float64."""
    total = None
    for start in range(0, len(X), chunk_rows):
        out = stack.forward(X[start:start + chunk_rows], training=False, shared=True, members=members)
        part = (out.double() - y[start:start + chunk_rows].double()).square().flatten(1).sum(dim=1)
        total = part if total is None else total + part
    return (total / y.numel()).cpu().numpy()


def _clip_grad_norms(stack: Stack, max_norm: float) -> None:
    """``clip_grad_norm_`` per member: the norm of the per-parameter gradient norms."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in stack.param_grads()])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    stack.flat_grad.mul_(coef[:, None])
