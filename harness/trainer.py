"""Batched training of members: all schedules × seeds in one pass (design section 6).

Members differ only in init seed and learning-rate schedule, so they train together as one
stack (:mod:`harness.stack`) with one optimizer step per batch and a per-member LR vector
(:mod:`harness.optim`). Each member equals the same model trained alone:

- init: the model factory under ``torch.manual_seed(seed)``;
- batches: those of ``DataLoader(TensorDataset(X, y), batch_size, shuffle=True,
  generator=torch.Generator().manual_seed(seed))`` (reshuffled every epoch, last partial batch
  kept), drawn from the member's own generator, so a member never depends on its neighbours;
- updates: ``torch.optim.AdamW``/``SGD`` with the schedule's LR at step ``t`` (the loop owns
  ``t``), or ``schedulefree.AdamWScheduleFree`` for ``schedule_free`` members;
- loss: MSE; validation MSE after every epoch (schedule-free members in eval mode).

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

from harness.errors import DataError, HarnessError, unknown_name
from harness.optim import OPTIMIZERS, ScheduleFreeMembers, make_optimizer
from harness.schedules import get_schedule
from harness.stack import Stack, make_model_factory

DIVERGENCE_FACTOR = 1e3  # a loss this many times the first-step loss marks a member diverged


@dataclass
class TrainResult:
    """Everything one batched training produced; arrays have one row per member.

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


def train(
    X_train: Any,
    y_train: Any,
    X_val: Any = None,
    y_val: Any = None,
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
    init_state: Mapping[str, torch.Tensor] | TrainResult | None = None,
    lr_tables: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    stack_path: str = "auto",
) -> TrainResult:
    """Train every (schedule, seed) member on the same data in one batched pass.

    Parameters
    ----------
    X_train, y_train : ``[n, features]`` (``[n, seq, features]`` for gru/lstm) and ``[n]`` or
        ``[n, outputs]``; arrays, frames or tensors.
    X_val, y_val : validation rows (both or neither): per-epoch validation loss, early stopping,
        plateau schedules. Without them plateau schedules watch the epoch's mean training loss.
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
    init_state : a previous result (or its ``state``) to start from instead of a fresh init.
    lr_tables : ``[M, T]`` learning rates replacing each member's schedule table (e.g. a schedule
        spanning windows, ``harness.schedules.window_lr_table``); plateau multipliers still apply;
        rows of schedule-free members are ignored.
    device : where to train (``"cpu"``, ``"cuda"``).
    progress : called as ``progress(epochs_done, epochs)`` after every epoch.
    stack_path : member batching: ``"auto"`` (batched matmuls for the built-in MLP, vmap for any
        other module), ``"bmm"`` or ``"vmap"`` (to compare them).
    """
    _check_settings(seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    weight_decay=weight_decay, momentum=momentum, grad_clip=grad_clip, patience=patience)
    specs = _schedules(schedules, optimizer)
    member_specs = [spec for spec in specs for _ in range(seeds)]
    labels = [(spec.label, seed + s) for spec in specs for s in range(seeds)]

    x_shape, y_shape = _shapes(X_train, y_train, X_val, y_val)
    factory = make_model_factory(model, n_features=x_shape[-1], n_outputs=1 if len(y_shape) == 1 else y_shape[1])
    stack = Stack(factory, [member_seed for _, member_seed in labels], device, path=stack_path)
    if init_state is not None:
        stack.load_state(init_state.state if isinstance(init_state, TrainResult) else init_state)
    X = _tensor("X_train", X_train, stack.dtype, stack.device)
    y = _tensor("y_train", y_train, stack.dtype, stack.device)
    val = None if X_val is None else (_tensor("X_val", X_val, stack.dtype, stack.device),
                                      _tensor("y_val", y_val, stack.dtype, stack.device))

    steps = math.ceil(len(X) / batch_size)
    rates = _Rates(member_specs, lr, epochs * steps, lr_tables)
    updates = _Updates(stack, optimizer, member_specs, epochs * steps, lr=lr, weight_decay=weight_decay,
                       momentum=momentum)
    batches = MemberBatches(torch.arange(len(X), device=stack.device).expand(len(labels), -1),
                            [member_seed for _, member_seed in labels])
    book = _Book(len(labels), epochs, steps, stack, keep_best=patience is not None and val is not None)

    fork = [stack.device.index or 0] if stack.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)  # dropout masks: reproducible, and the caller's RNG is left alone
        for epoch in range(epochs):
            order = batches.epoch()
            lr_block = torch.as_tensor(rates.block(epoch, steps), device=stack.device)
            for i in range(steps):
                t = epoch * steps + i
                rows = order[:, i * batch_size:(i + 1) * batch_size]
                loss = _batch_loss(stack, X[rows], y[rows])
                book.watch(loss.detach(), t)
                stack.backward(torch.where(book.active, loss, 0.0).sum())
                if grad_clip is not None:
                    _clip_grad_norms(stack, grad_clip)
                book.lr[:, t] = updates.step(lr_block[:, i], book.active)
                stack.zero_grad()
            monitor = book.end_epoch(epoch, updates, val, patience)
            rates.end_epoch(monitor)
            if progress is not None:
                progress(epoch + 1, epochs)
            if not book.any_active():
                break
    updates.eval()  # schedule-free members end at their averaged weights
    book.restore_best()
    return book.result(labels, stack)


class MemberBatches:
    """Each member's shuffled batches, drawn from its own generator.

    Every epoch draws exactly what a full pass of ``DataLoader(..., shuffle=True, generator=g)``
    draws from ``g``: the iterator's base seed (one int64), ``randperm(n)`` (the order), and the
    ``RandomSampler``'s remainder draw, a second ``randperm(n)`` sliced to nothing.

    Parameters
    ----------
    rows : ``[M, n]`` each member's rows (positions in the shared X); a member's batch indices
        are drawn into its own row set, so members reading different windows are a change of
        ``rows`` only.
    seeds : one generator seed per member.
    """

    def __init__(self, rows: torch.Tensor, seeds: Sequence[int]) -> None:
        self.rows = rows
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def epoch(self) -> torch.Tensor:
        """``[M, n]`` row positions in this epoch's order; batch ``i`` is columns ``i*B:(i+1)*B``."""
        n = self.rows.shape[1]
        orders = []
        for generator in self.generators:
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            orders.append(torch.randperm(n, generator=generator))
            torch.randperm(n, generator=generator)
        return torch.gather(self.rows, 1, torch.stack(orders).to(self.rows.device))


class _Rates:
    """Per-member LR at every step: schedule tables × plateau multipliers (host-side, float64)."""

    def __init__(self, specs: list[Any], base_lr: float, total_steps: int, lr_tables: np.ndarray | None) -> None:
        # plateau: base LR x warmup ramp (multipliers come per epoch); schedule_free: its optimizer's own
        self.table = np.stack([spec.nominal_table(total_steps, base_lr) for spec in specs]).astype(np.float64)
        if lr_tables is not None:
            override = _lr_override(lr_tables, self.table.shape)
            table_rows = np.array([spec.kind != "schedule_free" for spec in specs])
            self.table[table_rows] = override[table_rows]
        self.multiplier = np.ones(len(specs))
        self.plateaus = []
        for label in dict.fromkeys(spec.label for spec in specs if spec.kind == "plateau"):
            rows = np.array([m for m, spec in enumerate(specs) if spec.label == label])
            self.plateaus.append((rows, specs[rows[0]].plateau_state(len(rows))))

    def block(self, epoch: int, steps: int) -> np.ndarray:
        """``[M, steps]`` LRs of one epoch."""
        return self.table[:, epoch * steps:(epoch + 1) * steps] * self.multiplier[:, None]

    def end_epoch(self, monitor: np.ndarray) -> None:
        """Plateau members react to their own epoch metric (validation loss, else training loss)."""
        for rows, state in self.plateaus:
            self.multiplier[rows] = state.step(monitor[rows])


def _lr_override(lr_tables: Any, shape: tuple[int, int]) -> np.ndarray:
    table = np.asarray(lr_tables, dtype=np.float64)
    if table.shape != shape:
        raise HarnessError(f"lr_tables: shape {table.shape} does not match [members, steps] = {list(shape)}")
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise HarnessError("lr_tables: learning rates must be finite and >= 0")
    return table


class _Updates:
    """One optimizer step for all members: the batched optimizer, and one schedule-free
    optimizer per schedule-free spec (its members share one LR sequence)."""

    def __init__(self, stack: Stack, optimizer: str, specs: list[Any], total_steps: int, *, lr: float,
                 weight_decay: float, momentum: float) -> None:
        self.grads = stack.flat_grad
        self.optimizer = make_optimizer(optimizer, stack.flat, weight_decay=weight_decay, momentum=momentum)
        self.batched = torch.tensor([spec.kind != "schedule_free" for spec in specs], device=stack.device)
        self.schedule_free = []
        for label in dict.fromkeys(spec.label for spec in specs if spec.kind == "schedule_free"):
            rows = [m for m, spec in enumerate(specs) if spec.label == label]
            members = ScheduleFreeMembers(stack.flat, rows, lr=lr, weight_decay=weight_decay,
                                          warmup_steps=specs[rows[0]].warmup_steps(total_steps))
            self.schedule_free.append(members)

    def step(self, lr: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Update the active members with ``lr`` ``[M]``; returns the LR each used (NaN if frozen)."""
        self.optimizer.step(self.grads, lr, active & self.batched)
        for members in self.schedule_free:
            lr = lr.index_fill(0, members.index, members.step(self.grads, active))
        return torch.where(active, lr, torch.nan)

    def eval(self) -> None:
        for members in self.schedule_free:
            members.eval()

    def train(self) -> None:
        for members in self.schedule_free:
            members.train()


class _Book:
    """Per-member bookkeeping: who is active, losses, LRs, best epochs, best weights."""

    def __init__(self, n_members: int, epochs: int, steps: int, stack: Stack, keep_best: bool) -> None:
        device = stack.device
        self.stack = stack
        self.steps = steps
        self.active = torch.ones(n_members, dtype=torch.bool, device=device)
        self.diverged = torch.zeros(n_members, dtype=torch.bool, device=device)
        self.first_loss = torch.zeros(n_members, dtype=stack.dtype, device=device)
        self.step_loss = torch.full((n_members, epochs * steps), torch.nan, dtype=stack.dtype, device=device)
        self.lr = torch.full((n_members, epochs * steps), torch.nan, dtype=torch.float64, device=device)
        self.val_loss = np.full((n_members, epochs), np.nan)
        self.best_val = np.full(n_members, np.inf)
        self.best_epoch = np.full(n_members, -1)
        self.stale_epochs = np.zeros(n_members, dtype=int)
        self.stopped_epoch = np.full(n_members, epochs)
        self.running = np.ones(n_members, dtype=bool)  # host copy of `active` at the last epoch end
        self.best_flat = stack.flat.clone() if keep_best else None

    def watch(self, loss: torch.Tensor, t: int) -> None:
        """Record step ``t``'s losses and freeze members that diverge (before their update)."""
        if t == 0:
            self.first_loss.copy_(loss)
        bad = ~torch.isfinite(loss) | (loss > DIVERGENCE_FACTOR * self.first_loss)
        self.step_loss[:, t] = torch.where(self.active, loss, torch.nan)
        self.diverged |= self.active & bad
        self.active &= ~bad

    def end_epoch(self, epoch: int, updates: _Updates, val: tuple[torch.Tensor, torch.Tensor] | None,
                  patience: int | None) -> np.ndarray:
        """Validate, early-stop, and return each member's epoch metric for plateau schedules."""
        active = self.active.cpu().numpy()
        self.stopped_epoch[self.running & ~active] = epoch  # diverged during this epoch
        self.running = active
        if val is None:
            epoch_steps = self.step_loss[:, epoch * self.steps:(epoch + 1) * self.steps]
            return torch.nanmean(epoch_steps.double(), dim=1).cpu().numpy()
        updates.eval()  # schedule-free members validate (and are kept) at their averaged weights
        loss = np.where(active, _mse(self.stack, *val), np.nan)
        self.val_loss[:, epoch] = loss
        improved = active & (loss < self.best_val)
        self.best_val[improved] = loss[improved]
        self.best_epoch[improved] = epoch
        self.stale_epochs = np.where(improved, 0, self.stale_epochs + active)
        if self.best_flat is not None:
            keep = torch.as_tensor(improved, device=self.best_flat.device)[:, None]
            self.best_flat.copy_(torch.where(keep, self.stack.flat, self.best_flat))
        updates.train()
        if patience is not None:
            stop = active & (self.stale_epochs >= patience)
            self.stopped_epoch[stop] = epoch + 1
            self.running = active & ~stop
            self.active &= torch.as_tensor(~stop, device=self.active.device)
        return loss

    def any_active(self) -> bool:
        return bool(self.running.any())

    @torch.no_grad()
    def restore_best(self) -> None:
        """Early stopping: every member that validated ends with its best-epoch weights."""
        if self.best_flat is None:
            return
        keep = torch.as_tensor(self.best_epoch >= 0, device=self.best_flat.device)[:, None]
        self.stack.flat.copy_(torch.where(keep, self.best_flat, self.stack.flat))

    def result(self, labels: list[tuple[str, int]], stack: Stack) -> TrainResult:
        return TrainResult(
            labels=labels,
            step_loss=self.step_loss.double().cpu().numpy(),
            val_loss=self.val_loss,
            lr=self.lr.cpu().numpy(),
            diverged=self.diverged.cpu().numpy(),
            best_epoch=self.best_epoch,
            stopped_epoch=self.stopped_epoch,
            state=stack.state(),
            steps_per_epoch=self.steps,
            stack=stack,
        )


def _batch_loss(stack: Stack, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Each member's MSE on its batch, ``[M]``."""
    out = stack.forward(xb, training=True)
    if out.shape != yb.shape:
        raise HarnessError(
            f"model: output shape {tuple(out.shape[1:])} per member does not match the target's "
            f"{tuple(yb.shape[1:])}; return [n] for a 1-d target, [n, k] for k targets"
        )
    return (out - yb).square().flatten(1).mean(dim=1)


@torch.no_grad()
def _mse(stack: Stack, X: torch.Tensor, y: torch.Tensor, chunk_rows: int = 8192) -> np.ndarray:
    """Each member's MSE on shared rows (eval mode), accumulated in float64, ``[M]``."""
    total = torch.zeros(stack.n_members, dtype=torch.float64, device=stack.device)
    for start in range(0, len(X), chunk_rows):
        out = stack.forward(X[start:start + chunk_rows], training=False, shared=True)
        total += (out.double() - y[start:start + chunk_rows].double()).square().flatten(1).sum(dim=1)
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


def _tensor(name: str, values: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().to(device=device, dtype=dtype)
    else:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=device)
    if not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{name}: contains NaN or inf values; drop or fill them before training")
    return tensor
