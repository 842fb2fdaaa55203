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

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.training.batches import MemberBatches, _Feed, _Rows
from harness.training.budget import reuse_freed_memory
from harness.training.checks import _check_settings, _schedules, _window_shapes
from harness.training.fused import MLPStep, fused_step_applies
from harness.training.models import make_model_factory
from harness.training.axes import Axes, check_epochs, check_lrs  # budget/LR axes, losses, user models
from harness.training.inputs import Inputs
from harness.training.results import DIVERGENCE_FACTOR, TrainResult, WindowData
from harness.training.stack import GroupStreams, Stack
from harness.training.updates import _Rates, _Updates



def train(
    X_train: Any,
    y_train: Any,
    X_val: Any = None,
    y_val: Any = None,
    *,
    init_state: Mapping[str, torch.Tensor] | TrainResult | None = None,
    lr_tables: np.ndarray | None = None,
    scale: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train every (schedule, seed) member on the same data in one batched pass.

    Parameters
    ----------
    X_train, y_train : ``[n, features]`` (``[n, seq, features]`` for gru/lstm) and ``[n]``, a
        column ``[n, 1]`` (the same as ``[n]``: predictions are ``[M, n]``) or ``[n, outputs]``;
        arrays, frames or tensors. A DataFrame's column names are remembered: :meth:`TrainResult.predict`
        (and ``X_val``) match columns by name.
    scale : False (the default): the data is used as given; the network sees raw feature values,
        so standardize them yourself. True: every feature and the target are standardized with the
        mean and std of the **train rows** (``X_train``, ``y_train``; a zero std counts as 1), the
        validation rows with the same numbers, and :meth:`TrainResult.predict` scales its input and
        returns predictions in target units; the numbers are in ``result.inputs``.
    X_val, y_val : validation rows (both or neither): per-epoch validation loss, early stopping,
        plateau schedules. Without them plateau schedules watch the epoch's mean training loss.
    init_state : a previous result (or its ``state``) to start from instead of a fresh init.
    lr_tables : ``[M, T]`` learning rates replacing each member's schedule table (e.g. a schedule
        spanning windows, ``harness.schedules.window_lr_table``); plateau multipliers still apply;
        a schedule-free member's optimizer takes its row's LR at each step in place of its own
        warmup (so a warmup spanning windows runs once).
    **settings : the training settings of :func:`train_windows` (``model``, ``schedules``,
        ``seeds``, ``epochs``, ``batch_size``, ``lr``, ``optimizer``, ...).
    """
    if not isinstance(scale, bool):
        raise HarnessError(f"scale: must be True or False, got {scale!r}")
    inputs = Inputs.fit(X_train, y_train, scale)
    X_train, y_train = inputs.features(X_train, "X_train"), inputs.target(y_train, "y_train")
    if X_val is not None:
        X_val = inputs.features(X_val, "X_val")
    if y_val is not None:
        y_val = inputs.target(y_val, "y_val")
    window = WindowData(X_train, y_train, X_val, y_val, init_state=init_state, lr_tables=lr_tables)
    result = train_windows([window], **settings)[0]
    result.inputs = inputs
    return result


def train_windows(
    windows: Sequence[WindowData],
    *,
    model: Mapping[str, Any] | Callable[[], torch.nn.Module] | None = None,
    schedules: Sequence[str | Mapping[str, Any]] = ("constant",),
    seeds: int = 3,
    epochs: int | Sequence[int] = 40,
    batch_size: int = 128,
    lr: float | Sequence[float] = 1e-3,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    grad_clip: float | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    stack_path: str = "auto",
    loss: str = "mse",
    huber_delta: float = 1.0,
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
    epochs : the training budget, or a list of budgets: every schedule trains at each (members
        of several budgets share the stack; a member whose budget is spent stops, as an
        early-stopped one does, so it equals a training at its budget alone).
    lr : base learning rate, or a list of them (an axis like ``epochs``). With lists, members are
        candidates (schedule x budget x LR, :mod:`harness.schedules.candidates`) x seeds, labelled
        ``(candidate label, seed)``, e.g. ``("cosine@e80,lr1e-3", 0)``.
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
    loss : ``mse``, ``mae``, ``huber`` (with ``huber_delta``) or ``bce`` (logits against labels in
        [0, 1]), the training and validation loss (:mod:`harness.training.losses`).
    """
    _check_settings(seeds=seeds, epochs=max(check_epochs(epochs)), batch_size=batch_size, lr=min(check_lrs(lr)),
                    optimizer=optimizer,
                    weight_decay=weight_decay, momentum=momentum, grad_clip=grad_clip, patience=patience)
    if not windows:
        raise HarnessError("train_windows: no windows; pass at least one WindowData")
    reuse_freed_memory()
    specs = _schedules(schedules, optimizer)
    axes = Axes(specs, epochs, lr, seeds, loss, huber_delta)  # candidates: schedules x budgets x LRs
    labels = [(label, seed + s) for label in axes.labels for s in range(seeds)]
    epochs = axes.epochs  # the longest budget
    x_shape, y_shape = _window_shapes(windows)
    factory = make_model_factory(model, n_features=x_shape[-1], n_outputs=1 if len(y_shape) == 1 else y_shape[1])
    axes.check_model(factory, x_shape[1:], sorted({member_seed for _, member_seed in labels}))
    stack = Stack(factory, [member_seed for _, member_seed in labels] * len(windows), device, path=stack_path)
    data = _Rows(windows, len(labels), batch_size, stack)
    for w, window in enumerate(windows):
        if window.init_state is not None:
            state = window.init_state
            stack.load_state(state.state if isinstance(state, TrainResult) else state, members=data.groups[w])

    window_specs = axes.member_specs()  # one window's members
    rates = _Rates(window_specs, axes.lr, epochs, data.steps, data.width, axes.tables(windows, data.steps))
    updates = _Updates(stack, optimizer, window_specs, epochs, data.steps, [val is not None for val in data.val],
                       lr=axes.lr, weight_decay=weight_decay, momentum=momentum,
                       tabled=[w.lr_tables is not None for w in windows])
    axes.schedule_free(updates)
    criterion = axes.criterion(windows, data, stack)  # None: mse
    batches = MemberBatches(data.member_rows(), [member_seed for _, member_seed in labels] * len(windows),
                            width=data.width * batch_size)
    streams = GroupStreams(data.groups, seed, stack.device)
    book = _Book(stack, epochs, data, keep_best=patience is not None and data.any_validation)
    book.criterion = criterion
    feed = _Feed(data, batches.mask, batch_size)
    # the MLP's step by hand (windows in cache-sized chunks), else autograd
    fused = MLPStep(stack, data.groups, batch_size) if fused_step_applies(stack) and criterion is None else None

    fork = [stack.device.index or 0] if stack.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)  # other global-RNG draws reproducible; the caller's RNG left alone
        for epoch in range(epochs):
            feed.epoch(batches.epoch())
            lr_block = rates.block(epoch)
            for i in range(data.width):
                span = data.spans[i]
                streams.live, streams.span = data.live[i], span
                if fused is not None:
                    live = fused.step(feed.step(i), streams, span, book.ready(slice(None), i),
                                      functools.partial(book.watch, epoch=epoch, i=i))
                else:
                    xb, yb, keep, denominator = feed.step(i)
                    loss = _batch_loss(stack, xb, yb, keep, denominator, streams, span, criterion)
                    live = book.watch(loss, span, epoch, i)
                    stack.backward(loss.sum() if live[span].all() else
                                   torch.where(torch.from_numpy(live[span]).to(stack.device), loss, 0.0).sum())
                if grad_clip is not None:
                    _clip_grad_norms(stack, grad_clip)
                book.lr[:, epoch, i] = updates.step(lr_block[:, i], live, i)
                if fused is None:  # autograd adds into the gradient; the fused step writes it
                    stack.zero_grad()
            monitor = book.end_epoch(epoch, updates, patience)
            axes.spend(book, updates, epoch)  # members whose budget is spent stop
            rates.end_epoch(monitor)
            if not book.any_active():
                break
    updates.eval()  # schedule-free members end at their averaged weights
    book.restore_best()
    return [axes.describe(book.result(w, labels)) for w in range(len(windows))]


class _Book:
    """Per-member bookkeeping: who is active, losses, LRs, best epochs, best weights.

    Kept on the host (a few numbers per member per step: numpy costs far less per operation than
    tensor ops do). Step losses and LRs are laid out ``[M, epochs, width]``; a window's members
    fill the first ``steps`` columns of each epoch.
    """

    def __init__(self, stack: Stack, epochs: int, rows: _Rows, keep_best: bool) -> None:
        n_members = stack.n_members
        self.stack, self.rows, self.epochs = stack, rows, epochs
        dtype = torch.empty((), dtype=stack.dtype).numpy().dtype
        self.active = np.ones(n_members, dtype=bool)
        self.diverged = np.zeros(n_members, dtype=bool)
        self.threshold = np.zeros(n_members, dtype=dtype)  # DIVERGENCE_FACTOR x each member's first-step loss
        self.factor = np.asarray(DIVERGENCE_FACTOR, dtype=dtype)
        self.present = rows.present.cpu().numpy()
        self.step_loss = np.full((n_members, epochs, rows.width), np.nan, dtype=dtype)
        self.lr = np.full((n_members, epochs, rows.width), np.nan)
        self.validated = np.repeat([val is not None for val in rows.val], rows.n_members)
        self.val_loss = np.full((n_members, epochs), np.nan)
        self.best_val = np.full(n_members, np.inf)
        self.best_epoch = np.full(n_members, -1)
        self.stale_epochs = np.zeros(n_members, dtype=int)
        self.stopped_epoch = np.full(n_members, epochs)
        self.running = np.ones(n_members, dtype=bool)  # `active` at the last epoch end
        self.best_flat = stack.flat.clone() if keep_best else None

    def ready(self, members: slice, i: int) -> np.ndarray:
        """Who of ``members`` may update at step ``i``: active, with a batch."""
        return self.active[members] & self.present[members, i]

    def watch(self, loss: torch.Tensor, span: slice, epoch: int, i: int) -> np.ndarray:
        """Record the losses of the members in ``span`` (every member with a batch at step ``i``
        of ``epoch`` is in the span of one call), freeze those that diverge (before their update);
        returns who updates now, ``[M]`` bool: active members of ``span`` with a batch."""
        values = loss.detach().cpu().numpy()
        if epoch == 0 and i == 0:
            self.threshold[span] = self.factor * values
        watched = self.ready(span, i)
        self.step_loss[span, epoch, i] = np.where(watched, values, np.nan)
        bad = watched & ~(values <= self.threshold[span])  # NaN, +inf too (losses are >= 0)
        if bad.any():
            self.diverged[span] |= bad
            self.active[span] &= ~bad
            watched &= ~bad
        live = np.zeros(self.stack.n_members, dtype=bool)
        live[span] = watched
        return live

    def end_epoch(self, epoch: int, updates: _Updates, patience: int | None) -> np.ndarray:
        """Validate, early-stop, and return each member's epoch metric for plateau schedules."""
        active = self.active.copy()
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
            self.active &= ~stop
        return np.where(self.validated, loss, monitor)

    def _training_loss(self, epoch: int) -> np.ndarray:
        """Each member's mean batch loss over its steps of ``epoch`` (NaN once frozen)."""
        means = [torch.nanmean(torch.from_numpy(self.step_loss[group, epoch, :steps]).double(), dim=1)
                 for group, steps in zip(self.rows.groups, self.rows.steps)]
        return torch.cat(means).cpu().numpy()

    def _validation_loss(self) -> np.ndarray:
        """Each member's MSE on its window's validation rows (NaN without them)."""
        losses = [np.full(self.rows.n_members, np.nan) if val is None else _mse(self.stack, *val, members=group, loss=getattr(self, "criterion", None))
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

        def per_step(values: np.ndarray) -> np.ndarray:  # [M, epochs, width] -> the window's [K, epochs * steps]
            return values[group, :, :steps].astype(np.float64).reshape(len(labels), -1)

        return TrainResult(
            labels=list(labels),
            step_loss=per_step(self.step_loss),
            val_loss=self.val_loss[group].copy(),
            lr=per_step(self.lr),
            diverged=self.diverged[group].copy(),
            best_epoch=self.best_epoch[group].copy(),
            stopped_epoch=self.stopped_epoch[group].copy(),
            state=stack.state(),
            steps_per_epoch=steps,
            stack=stack,
        )


def _batch_loss(stack: Stack, xb: torch.Tensor, yb: torch.Tensor, keep: torch.Tensor | None,
                denominator: torch.Tensor, streams: GroupStreams, members: slice, criterion: Any = None) -> torch.Tensor:
    """The MSE of each of ``members`` on its batch: the mean over its real rows (``keep``; None:
    every row), ``denominator`` = real rows x values per row."""
    whole = members.start == 0 and members.stop == stack.n_members
    out = stack.forward(xb, training=True, streams=streams, members=None if whole else members)
    if out.shape != yb.shape:
        raise HarnessError(
            f"model: output shape {tuple(out.shape[1:])} per member does not match the target's "
            f"{tuple(yb.shape[1:])}; return [n] for a 1-d target, [n, k] for k targets"
        )
    squares = (out - yb).square() if criterion is None else criterion.elements(out, yb, None if whole else members)
    if keep is not None:
        squares = torch.where(keep.reshape(*keep.shape, *[1] * (squares.dim() - 2)), squares, 0.0)
    return squares.flatten(1).sum(dim=1) / denominator


@torch.no_grad()
def _mse(stack: Stack, X: torch.Tensor, y: torch.Tensor, members: slice | None = None,
         chunk_rows: int = 8192, loss: Any = None) -> np.ndarray:
    """MSE (or ``loss``'s mean) of each member (of ``members``) on shared rows (eval mode), accumulated in float64."""
    total = None
    for start in range(0, len(X), chunk_rows):
        out = stack.forward(X[start:start + chunk_rows], training=False, shared=True, members=members)
        target = y[start:start + chunk_rows].double()
        part = ((out.double() - target).square() if loss is None else loss.elements(out.double(), target, members)
                ).flatten(1).sum(dim=1)
        total = part if total is None else total + part
    return (total / y.numel()).cpu().numpy()


def _clip_grad_norms(stack: Stack, max_norm: float) -> None:
    """``clip_grad_norm_`` per member: the norm of the per-parameter gradient norms."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in stack.param_grads()])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    stack.flat_grad.mul_(coef[:, None])
