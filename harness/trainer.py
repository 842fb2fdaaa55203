"""Batched training of members: all schedules × seeds, of one window or many, in one pass (design section 6).

Members differ only in init seed and learning-rate schedule, so they train together as one
stack (:mod:`harness.stack`) with one optimizer step per batch and a per-member LR vector
(:mod:`harness.optim`). Independent windows (the ``fresh`` boundary policy) join the same stack:
:func:`train_windows` trains windows × schedules × seeds members, each reading its own window's
rows. Each member equals the same model trained alone:

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

import ctypes
import functools
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.errors import DataError, HarnessError, unknown_name
from harness.optim import OPTIMIZERS, ScheduleFreeMembers, make_optimizer
from harness.schedules import get_schedule
from harness.stack import GroupStreams, Stack, make_model_factory

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
                      for s in range(0, len(x), chunk_rows)]
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
    progress: Callable[[int, int], None] | None = None,
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
    progress : called as ``progress(epochs_done, epochs)`` after every epoch.
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
            if progress is not None:
                progress(epoch + 1, epochs)
            if not book.any_active():
                break
    updates.eval()  # schedule-free members end at their averaged weights
    book.restore_best()
    return [book.result(w, labels) for w in range(len(windows))]


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (once per process; True if it did).

    Every training step allocates and frees activation tensors of ~1 MB. By default glibc hands
    such blocks back to the kernel, so each step faults in fresh (zeroed, often huge) pages, which
    cost more than the arithmetic on them (~30% of a step for a 60-member stack). Raising the
    mmap and trim thresholds keeps that memory in the process: its peak resident size is held
    instead of returned. Nothing happens outside Linux/glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**30))


def training_bytes(model: Mapping[str, Any] | Callable[[], torch.nn.Module] | None,
                   n_features: int | Sequence[int], batch_size: int, rows: int, members: int,
                   n_outputs: int = 1) -> int:
    """Estimated peak memory (bytes) of training ``members`` members of one window on ``rows`` rows.

    Per member: its parameters ~10 times (weights, gradient, two optimizer moments, best weights
    and the optimizer step's temporaries), one batch's saved activations twice (forward and their
    gradients, measured on one member) and its epoch order (int64 positions); plus the window's
    rows. What a stack of many windows needs is the sum over its windows. ``n_features``: the
    features of a row, or a row's shape (``(seq, features)`` for gru/lstm).
    """
    row_shape = (int(n_features),) if isinstance(n_features, (int, np.integer)) else tuple(n_features)
    module = make_model_factory(model, n_features=row_shape[-1], n_outputs=n_outputs)()
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    x = torch.zeros(batch_size, *row_shape, dtype=next(module.parameters()).dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x).square().sum()
    padded_rows = -(-rows // batch_size) * batch_size
    per_member = 10 * parameters + 2 * (saved[0] + x.numel() * x.element_size()) + 3 * 8 * padded_rows
    return members * per_member + rows * (math.prod(row_shape) + n_outputs) * x.element_size()


class _Rows:
    """The windows' rows side by side in one ``X``/``y``, and who reads what.

    Window ``w``'s members are ``groups[w]`` (consecutive); its rows are ``starts[w] + [0, n[w])``.
    An epoch is ``width`` steps (the most batches any window has); window ``w`` has a batch on
    steps ``i < steps[w]``.
    """

    def __init__(self, windows: Sequence[WindowData], n_members: int, batch_size: int, stack: Stack) -> None:
        several = len(windows) > 1
        named = (lambda w, name: f"window {w}: {name}") if several else (lambda w, name: name)
        dtype, device = stack.dtype, stack.device
        xs = [_tensor(named(w, "X_train"), window.X_train, dtype, device) for w, window in enumerate(windows)]
        ys = [_tensor(named(w, "y_train"), window.y_train, dtype, device) for w, window in enumerate(windows)]
        self.val = [None if window.X_val is None else (_tensor(named(w, "X_val"), window.X_val, dtype, device),
                                                       _tensor(named(w, "y_val"), window.y_val, dtype, device))
                    for w, window in enumerate(windows)]
        self.any_validation = any(val is not None for val in self.val)
        self.X, self.y = torch.cat(xs), torch.cat(ys)
        self.n = np.array([len(x) for x in xs])
        self.starts = np.concatenate([[0], np.cumsum(self.n)[:-1]])
        self.steps = -(-self.n // batch_size)
        self.width = int(self.steps.max())
        self.groups = [slice(w * n_members, (w + 1) * n_members) for w in range(len(windows))]
        self.n_members = n_members
        live = np.arange(self.width)[None, :] < self.steps[:, None]  # [windows, width]
        self.live = [row.tolist() for row in live.T]
        present = np.repeat(live, n_members, axis=0)
        self.present = torch.as_tensor(present, device=device)
        self.n_total = len(present)
        self.spans = [_span(column) for column in present.T]
        rows_in_batch = np.clip(self.n[:, None] - np.arange(self.width)[None, :] * batch_size, 0, batch_size)
        self.counts = torch.as_tensor(np.repeat(np.maximum(rows_in_batch, 1), n_members, axis=0), dtype=dtype,
                                      device=device)

    def widen(self, values: torch.Tensor, span: slice) -> torch.Tensor:
        """Per-member ``values`` of the members in ``span`` as ``[M]`` (zeros elsewhere)."""
        if values.shape[0] == self.n_total:
            return values
        full = values.new_zeros(self.n_total)
        full[span] = values
        return full

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` and ``y`` at ``rows`` ``[M, B]``: ``[M, B, ...]`` each."""
        flat = rows.reshape(-1)
        return (self.X.index_select(0, flat).view(*rows.shape, *self.X.shape[1:]),
                self.y.index_select(0, flat).view(*rows.shape, *self.y.shape[1:]))

    def member_rows(self) -> list[torch.Tensor]:
        """Each member's rows (positions in ``X``)."""
        window_rows = [torch.arange(start, start + n, device=self.X.device) for start, n in zip(self.starts, self.n)]
        return [rows for rows in window_rows for _ in range(self.n_members)]


def _span(present: np.ndarray) -> slice:
    """The members a step computes: those with a batch when they are consecutive (expanding
    windows in order: the longer ones), else all (the others' losses are masked out)."""
    members = np.flatnonzero(present)
    if len(members) and members[-1] - members[0] + 1 == len(members):
        return slice(int(members[0]), int(members[-1]) + 1)
    return slice(0, len(present))


class MemberBatches:
    """Each member's shuffled batches, drawn from its own generator.

    Every epoch draws exactly what a full pass of ``DataLoader(..., shuffle=True, generator=g)``
    draws from ``g``: the iterator's base seed (one int64), ``randperm(n)`` (the order), and the
    ``RandomSampler``'s remainder draw, a second ``randperm(n)`` sliced to nothing. Members with
    the same seed and row count draw the same permutations, so they share one generator.

    Parameters
    ----------
    rows : each member's rows (1-d positions in the shared X); members may have different counts.
    seeds : one generator seed per member.
    width : positions per epoch (at least the longest row set); a member's order fills its first
        ``len(rows[m])`` positions and the rest repeat its first row, masked out by :attr:`mask`.
    """

    def __init__(self, rows: Sequence[torch.Tensor], seeds: Sequence[int], width: int | None = None) -> None:
        lengths = [len(r) for r in rows]
        self.width = max(lengths) if width is None else width
        if self.width < max(lengths):
            raise HarnessError(f"MemberBatches: width {self.width} is shorter than the longest row set "
                               f"({max(lengths)}); pass width >= every member's row count")
        keys = list(dict.fromkeys(zip(map(int, seeds), lengths)))
        self.generators = [torch.Generator().manual_seed(key_seed) for key_seed, _ in keys]
        self.lengths = [n for _, n in keys]
        self.key = torch.as_tensor([keys.index(key) for key in zip(map(int, seeds), lengths)], dtype=torch.long)
        device = rows[0].device
        self.rows = torch.stack([torch.cat([r, r[:1].expand(self.width - len(r))]) for r in rows])
        positions = torch.arange(self.width, device=device)
        self.mask = positions[None, :] < torch.as_tensor(lengths, device=device)[:, None]

    def epoch(self) -> torch.Tensor:
        """``[M, width]`` row positions in this epoch's order; batch ``i`` is columns ``i*B:(i+1)*B``."""
        orders = []
        for generator, n in zip(self.generators, self.lengths):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.randperm(n, generator=generator)
            torch.randperm(n, generator=generator)
            orders.append(torch.cat([order, order.new_zeros(self.width - n)]))
        local = torch.stack(orders)[self.key].to(self.rows.device)
        return torch.gather(self.rows, 1, local)


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
                if rows is not None and spec.kind != "schedule_free":
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
                 validated: Sequence[bool], *, lr: float, weight_decay: float, momentum: float) -> None:
        member_specs = list(specs) * len(steps)
        self.grads = stack.flat_grad
        self.optimizer = make_optimizer(optimizer, stack.flat, weight_decay=weight_decay, momentum=momentum)
        self.batched = torch.tensor([spec.kind != "schedule_free" for spec in member_specs], device=stack.device)
        self.schedule_free: list[tuple[int, bool, ScheduleFreeMembers]] = []
        windows = list(zip(steps.tolist(), validated))
        for k, spec in enumerate(specs):
            if spec.kind != "schedule_free":
                continue
            for window_steps, has_val in dict.fromkeys(windows):
                members = [w * len(specs) + k for w, key in enumerate(windows) if key == (window_steps, has_val)]
                group = ScheduleFreeMembers(stack.flat, members, lr=lr, weight_decay=weight_decay,
                                            warmup_steps=spec.warmup_steps(epochs * window_steps))
                self.schedule_free.append((window_steps, has_val, group))

    def step(self, lr: torch.Tensor, live: torch.Tensor, i: int) -> torch.Tensor:
        """Update the live members (``live`` ``[M]``) at step ``i`` of the epoch with ``lr``
        ``[M]``; returns the LR each used (NaN if it sat out)."""
        self.optimizer.step(self.grads, lr, live & self.batched)
        for steps, _, members in self.schedule_free:
            if i < steps:
                lr = lr.index_fill(0, members.index, members.step(self.grads, live))
        return torch.where(live, lr, torch.nan)

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


def _schedules(schedules: Sequence[Any], optimizer: str) -> list[Any]:
    if isinstance(schedules, (str, Mapping)):
        schedules = [schedules]
    if not schedules:
        raise HarnessError("schedules: empty; give at least one schedule, e.g. ['constant']")
    specs = [get_schedule(spec) for spec in schedules]
    labels = [spec.label for spec in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise HarnessError(f"schedules: '{label}' is listed twice; give each schedule once (seeds repeat it)")
    if optimizer != "adamw" and any(spec.kind == "schedule_free" for spec in specs):
        raise HarnessError("schedules: schedule_free is an AdamW variant; use optimizer 'adamw'")
    return specs


def _check_settings(**settings: Any) -> None:
    for name in ("seeds", "epochs", "batch_size", "patience"):
        value = settings[name]
        if value is None and name == "patience":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            none = " or None" if name == "patience" else ""
            raise HarnessError(f"{name}: must be a whole number > 0{none}, got {value!r}")
    if not settings["lr"] > 0 or not math.isfinite(settings["lr"]):
        raise HarnessError(f"lr: must be > 0, got {settings['lr']!r}")
    if settings["optimizer"] not in OPTIMIZERS:
        raise unknown_name("optimizer", settings["optimizer"], OPTIMIZERS)
    if not settings["weight_decay"] >= 0:
        raise HarnessError(f"weight_decay: must be >= 0, got {settings['weight_decay']!r}")
    if not 0 <= settings["momentum"] < 1:
        raise HarnessError(f"momentum: must be in [0, 1), got {settings['momentum']!r}")
    if settings["grad_clip"] is not None and not settings["grad_clip"] > 0:
        raise HarnessError(f"grad_clip: must be > 0 or None, got {settings['grad_clip']!r}")


def _shapes(X_train: Any, y_train: Any, X_val: Any, y_val: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the data's shapes and return those of ``X_train`` and ``y_train``."""
    if (X_val is None) != (y_val is None):
        raise DataError("X_val and y_val: give both for validation, or neither")
    pairs = [("train", X_train, y_train)] + ([] if X_val is None else [("val", X_val, y_val)])
    shapes = []
    for name, X, y in pairs:
        x_shape, y_shape = tuple(np.shape(X)), tuple(np.shape(y))
        if len(x_shape) < 2 or len(y_shape) not in (1, 2):
            raise DataError(f"X_{name}, y_{name}: expected X [n, features] (or [n, seq, features]) and y [n] "
                            f"or [n, outputs], got {list(x_shape)} and {list(y_shape)}")
        if x_shape[0] != y_shape[0] or x_shape[0] == 0:
            raise DataError(f"X_{name}, y_{name}: {x_shape[0]} rows of features but {y_shape[0]} targets; "
                            "give one target per row (and at least one row)")
        shapes.append((x_shape, y_shape))
    if len(shapes) == 2 and (shapes[0][0][1:] != shapes[1][0][1:] or shapes[0][1][1:] != shapes[1][1][1:]):
        raise DataError(f"X_val, y_val: shapes {list(shapes[1][0])}, {list(shapes[1][1])} do not match the "
                        f"training data's {list(shapes[0][0])}, {list(shapes[0][1])} beyond the row count")
    return shapes[0]


def _window_shapes(windows: Sequence[WindowData]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check every window's data; all windows must agree beyond the row count."""
    shapes = [_shapes(w.X_train, w.y_train, w.X_val, w.y_val) for w in windows]
    x_first, y_first = shapes[0]
    for w, (x_shape, y_shape) in enumerate(shapes):
        if x_shape[1:] != x_first[1:] or y_shape[1:] != y_first[1:]:
            raise DataError(f"window {w}: X_train, y_train shapes {list(x_shape)}, {list(y_shape)} do not match "
                            f"window 0's {list(x_first)}, {list(y_first)} beyond the row count; give every "
                            "window the same features and targets")
    return x_first, y_first


def _tensor(name: str, values: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().to(device=device, dtype=dtype)
    else:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device)
    if not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{name}: contains NaN or inf values; drop or fill them before training")
    return tensor
