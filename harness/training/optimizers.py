"""Batched AdamW and SGD over stacked parameters, with one learning rate per member.

torch's optimizers take one LR per param group, and the members of a stack differ by LR at every
step, so these are the harness's own. Each reproduces torch's single-tensor update formula for
every member (row of the leading axis), with that member's LR:

- :class:`BatchedAdamW` = ``torch.optim.AdamW`` (amsgrad off): decoupled decay
  ``p *= 1 - lr*wd``, moments ``m.lerp_(g, 1-b1)``, ``v = b2*v + (1-b2)*g*g``, bias corrections
  per member step count, ``p += -(lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)``. On the CPU it runs
  torch's own fused AdamW kernel (``torch.optim.AdamW(fused=True)``'s) over each member's row,
  one call per distinct LR: one pass over the buffers instead of ten, each row bitwise what that
  optimizer gives the member alone;
- :class:`BatchedSGD` = ``torch.optim.SGD`` (dampening 0, nesterov off): ``g += wd*p``,
  ``buf = momentum*buf + g`` (``buf = g`` on the first step), ``p -= lr*buf``.

Updates are in place over the whole buffer (no fresh allocations per step). A member whose
``active`` flag is False gets no update at all (the fused kernel is not given its rows; the
whole-buffer ops save them before and put them back after), so they stay bitwise as they were,
even when its gradient is NaN or inf, and its step count does not move.

Per-member scalars (``1 - lr*wd``, ``lr/bc1``, ``sqrt(bc2)``) are computed on the host in float64,
the bias corrections' powers ``beta**t`` as Python floats (as torch's AdamW computes them), and
rounded to the parameter dtype, as torch does with its Python-float scalars. LRs and who is active
come as tensors or host arrays; the training loop keeps them on the host, so a step issues only
the few whole-buffer operations.

:class:`ScheduleFreeMembers` runs the ``schedulefree`` package's ``AdamWScheduleFree`` for the
members that use it, as one param group over their rows.

For the training loop, :mod:`harness.training.updates` holds every member's LR at every step and
takes one step for all members (the batched optimizer and the schedule-free groups).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from harness.errors import unknown_name


class BatchedOptimizer(Protocol):
    def step(self, grads: torch.Tensor, lr: Any, active: Any = None) -> None: ...


def _host(values: Any, dtype: Any) -> np.ndarray:
    """Per-member values (a tensor on any device, an array or a list) as a host array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _column(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-member host values ``[M]`` as a ``[M, 1, ...]`` tensor of ``like``'s dtype and device,
    to broadcast against it (rounded from float64 to that dtype, as torch rounds its Python-float
    scalars)."""
    column = torch.from_numpy(np.ascontiguousarray(values, dtype=_NUMPY_DTYPES[like.dtype]))
    return column.to(like.device).view(-1, *([1] * (like.dim() - 1)))


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


class _Frozen:
    """Rows of inactive members, saved before an in-place update and put back after it.

    The optimizers update the whole buffer in place (no fresh allocations per step), so an
    inactive member's row is restored bitwise afterwards, even when its gradient was NaN or inf.
    Only the inactive rows are copied (who is inactive is known on the host).
    """

    def __init__(self, active: np.ndarray, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.index = torch.from_numpy(np.flatnonzero(~active)).to(tensors[0].device)
        self.saved = [t.index_select(0, self.index) for t in tensors]

    def restore(self) -> None:
        for tensor, saved in zip(self.tensors, self.saved):
            tensor.index_copy_(0, self.index, saved)


def _frozen(active: np.ndarray | None, tensors: list[torch.Tensor]) -> _Frozen | None:
    """The inactive rows' saved copies, or None when every member updates."""
    return None if active is None or active.all() else _Frozen(active, tensors)


class _Powers:
    """``base ** k`` for whole step counts ``k``, as Python floats compute them (what torch's
    single-tensor AdamW uses for its bias corrections), kept in a table that grows as needed."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.table = np.ones(1)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        top = int(counts.max(initial=0))
        if top >= len(self.table):
            size = max(top + 1, 2 * len(self.table))
            self.table = np.array([self.base ** float(k) for k in range(size)])
        return self.table[counts.astype(np.int64)]


class BatchedAdamW:
    """``torch.optim.AdamW`` for every row of ``params`` ``[M, ...]``, each with its own LR.

    Parameters
    ----------
    params : stacked parameters, updated in place by :meth:`step`.
    betas, eps, weight_decay : as in ``torch.optim.AdamW`` (shared by all members).
    """

    def __init__(self, params: torch.Tensor, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params = params
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self.steps = np.zeros(params.shape[0])  # each member's step count (float64, on the host)
        self._beta1_powers, self._beta2_powers = _Powers(self.beta1), _Powers(self.beta2)
        self._rows = _FusedRows(self) if _FusedRows.applies(params) else None
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None  # the ops path's denominator and delta

    @torch.no_grad()
    def step(self, grads: torch.Tensor, lr: Any, active: Any = None) -> None:
        """One update of the active members; ``lr`` ``[M]`` and ``active`` ``[M]`` bool (None:
        every member) as tensors or host arrays."""
        lr = _host(lr, np.float64)
        active = None if active is None else _host(active, bool)
        if active is not None and active.all():
            active = None
        steps = self.steps + 1 if active is None else np.where(active, self.steps + 1, self.steps)
        if self._rows is not None:
            self._rows.step(grads, lr, active, steps)
        else:
            self._step_by_ops(grads, lr, active, steps)
        self.steps = steps

    def _step_by_ops(self, grads: torch.Tensor, lr: np.ndarray, active: np.ndarray | None, steps: np.ndarray) -> None:
        """The update as whole-buffer tensor ops (any device): torch's single-tensor AdamW, op for op."""
        p = self.params
        if self._scratch is None:
            self._scratch = (torch.empty_like(p), torch.empty_like(p))
        denom_out, delta_out = self._scratch
        counted = np.maximum(steps, 1)  # inactive members that never stepped: any finite value
        # torch's scalars, per member: step_size = lr / (1 - beta1**t), sqrt(1 - beta2**t), 1 - lr*wd
        neg_step_size = _column(-(lr / (1 - self._beta1_powers(counted))), p)
        bc2_sqrt = _column(np.sqrt(1 - self._beta2_powers(counted)), p)

        frozen = _frozen(active, [p, self.exp_avg, self.exp_avg_sq])
        if self.weight_decay:  # without decay the factor is exactly 1
            p.mul_(_column(1 - lr * self.weight_decay, p))
        self.exp_avg.lerp_(grads, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grads, grads, value=1 - self.beta2)
        denom = torch.sqrt(self.exp_avg_sq, out=denom_out).div_(bc2_sqrt).add_(self.eps)
        p.add_(torch.mul(self.exp_avg, neg_step_size, out=delta_out).div_(denom))
        if frozen is not None:
            frozen.restore()


class _FusedRows:
    """:class:`BatchedAdamW`'s update by torch's fused AdamW kernel (``torch._fused_adamw_``, what
    ``torch.optim.AdamW(fused=True)`` calls), over each member's row as a tensor of its own.

    The kernel takes one LR per call and a list of tensors, each with its own step count: the
    active members are grouped by LR (one call per distinct value, a few per step: members of one
    schedule share it), each row a view of the stacked buffers. Every element's update reads only
    its own values and its member's LR and count, so a row is bitwise what the fused optimizer
    gives that member alone, whatever the grouping; an inactive member is simply left out.

    Rows, not blocks of consecutive rows: the kernel rounds an element in a vector's body and in
    the scalar tail differently, so a member's numbers would depend on who sits beside it.
    """

    @staticmethod
    def applies(params: torch.Tensor) -> bool:
        return (params.device.type == "cpu" and params.dim() == 2 and params.is_contiguous()
                and params.dtype in (torch.float32, torch.float64) and hasattr(torch, "_fused_adamw_"))

    def __init__(self, optimizer: BatchedAdamW) -> None:
        self.optimizer = optimizer
        self.rows = [list(t.unbind(0)) for t in (optimizer.params, optimizer.exp_avg, optimizer.exp_avg_sq)]
        self.counts = torch.zeros(optimizer.params.shape[0], dtype=torch.float32)  # the kernel reads them
        self.count_rows = list(self.counts.unbind(0))
        self.counts_host = self.counts.numpy()  # the same memory, written from the host's float64 counts
        self.grads: torch.Tensor | None = None
        self.calls: dict[bytes, list[tuple[list[torch.Tensor], ...]]] = {}
        self.everyone = np.arange(optimizer.params.shape[0])
        self.last_grouping: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (members, first of each group, group)

    def _calls(self, grads: torch.Tensor, members: np.ndarray, group: np.ndarray) -> list[tuple[list[torch.Tensor], ...]]:
        """The kernel's tensor lists for each LR group (``group``: each of ``members``' group), made
        once per grouping and kept: from step to step the LRs change, who shares one rarely does."""
        if grads is not self.grads:  # the training loop passes one gradient buffer every step
            self.grads, self.calls = grads, {}
        key = members.tobytes() + group.tobytes()
        calls = self.calls.get(key)
        if calls is None:
            if len(self.calls) >= _GROUPINGS_KEPT:
                self.calls.clear()
            grad_rows = list(grads.unbind(0))
            params, exp_avg, exp_avg_sq = self.rows
            calls = []
            for k in range(int(group.max(initial=-1)) + 1):
                chosen = members[group == k].tolist()
                calls.append(tuple([rows[m] for m in chosen]
                                   for rows in (params, grad_rows, exp_avg, exp_avg_sq, self.count_rows)))
            self.calls[key] = calls
        return calls

    def _grouping(self, members: np.ndarray, lrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The members' LR groups: one LR per group (``values``) and each member's group; the last
        step's groups while the same members still share their LRs (``np.unique`` costs more than
        the rest of a step's bookkeeping). A group's LR may equal another's: they stay two calls."""
        last = self.last_grouping
        if last is not None and (last[0] is members or np.array_equal(last[0], members)):
            _, first, group = last
            values = lrs[first]
            if np.array_equal(values[group], lrs):
                return values, group
        values, first, group = np.unique(lrs, return_index=True, return_inverse=True)
        self.last_grouping = (members, first, group)
        return values, group

    def step(self, grads: torch.Tensor, lr: np.ndarray, active: np.ndarray | None, steps: np.ndarray) -> None:
        opt = self.optimizer
        self.counts_host[:] = steps
        members = self.everyone if active is None else np.flatnonzero(active)
        values, group = self._grouping(members, lr[members])
        calls = self._calls(grads, members, group)
        with _ONE_THREAD:  # the kernel splits every row over the threads: a fork and join per member
            threads = torch.get_num_threads()
            if threads > 1:
                torch.set_num_threads(1)
            try:
                for value, (params, grad_rows, exp_avg, exp_avg_sq, counts) in zip(values.tolist(), calls):
                    torch._fused_adamw_(params, grad_rows, exp_avg, exp_avg_sq, [], counts, lr=value,
                                        beta1=opt.beta1, beta2=opt.beta2, weight_decay=opt.weight_decay,
                                        eps=opt.eps, amsgrad=False, maximize=False)
            finally:
                if threads > 1:
                    torch.set_num_threads(threads)


_GROUPINGS_KEPT = 256  # LR groupings whose tensor lists are kept (a run meets a handful)
_ONE_THREAD = threading.Lock()  # trainings in several Python threads restore the thread count they found


class BatchedSGD:
    """``torch.optim.SGD`` (dampening 0, nesterov off) for every row of ``params``, each with its own LR.

    torch computes ``p + (-lr) * buf`` as one fused multiply-add (its LR is a scalar); with a
    per-member LR it takes two roundings here, so rows agree with torch to an ulp per step.
    """

    def __init__(self, params: torch.Tensor, *, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = params
        self.momentum = momentum
        self.weight_decay = weight_decay
        # torch starts the buffer as a copy of the first gradient; 0 * momentum + g is that, exactly.
        self.buffer = torch.zeros_like(params) if momentum else None

    @torch.no_grad()
    def step(self, grads: torch.Tensor, lr: Any, active: Any = None) -> None:
        """One update of the active members; ``lr`` ``[M]`` and ``active`` ``[M]`` bool (None:
        every member) as tensors or host arrays."""
        p = self.params
        neg_lr = _column(-_host(lr, np.float64), p)
        active = None if active is None else _host(active, bool)
        frozen = _frozen(active, [p] if self.buffer is None else [p, self.buffer])
        direction = grads.add(p, alpha=self.weight_decay) if self.weight_decay else grads
        if self.buffer is not None:
            direction = self.buffer.mul_(self.momentum).add_(direction)
        p.add_(direction * neg_lr)
        if frozen is not None:
            frozen.restore()


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(name: str, params: torch.Tensor, *, weight_decay: float = 0.0,
                   momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8) -> BatchedOptimizer:
    """The batched optimizer called ``name`` (``adamw`` or ``sgd``) over ``params``."""
    if name == "adamw":
        return BatchedAdamW(params, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "sgd":
        return BatchedSGD(params, momentum=momentum, weight_decay=weight_decay)
    raise unknown_name("optimizer", name, OPTIMIZERS)


class ScheduleFreeMembers:
    """``schedulefree.AdamWScheduleFree`` for some rows of a stacked parameter buffer.

    Their rows are copied into one parameter of one param group. The optimizer's group scalars
    (step ``k``, ``lr_max``, ``weight_sum``, hence the averaging weight) depend only on the LR
    sequence, which these members share, and the rest of its update is elementwise, so each row
    evolves exactly as it would alone. The buffer holds the optimizer's ``y`` (train mode) or
    ``x`` (eval mode) for these rows; call :meth:`eval` before evaluating and :meth:`train` after.
    """

    def __init__(self, flat: torch.Tensor, members: Sequence[int], *, lr: float, warmup_steps: int,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        from schedulefree import AdamWScheduleFree

        self.flat = flat
        self.index = torch.as_tensor(list(members), dtype=torch.long, device=flat.device)
        self.param = flat.index_select(0, self.index)
        self.optimizer = AdamWScheduleFree(
            [self.param], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
        )
        # The state step() would create lazily; creating it now lets frozen rows be restored from step one.
        self.state = self.optimizer.state[self.param]
        self.state.update(z=self.param.clone(), exp_avg_sq=torch.zeros_like(self.param))
        self.optimizer.train()

    follows_table = False
    """Set by :class:`_Updates` for a window given its own LR table (``warm_continue``: one schedule
    spanning all windows): each step's LR comes from the table, warmup included, not from the
    optimizer's own warmup, so the warmup runs once over all windows."""

    @torch.no_grad()
    def step(self, grads: torch.Tensor, active: Any, lr: float | None = None) -> float:
        """Update the active schedule-free members (``active`` ``[M]`` bool over the whole stack,
        a tensor or a host array); ``lr``: this step's LR from a table, used as given (no warmup).

        Returns the LR the optimizer used (its warmed-up ``scheduled_lr``).
        """
        if lr is not None:
            self.optimizer.param_groups[0].update(lr=float(lr), warmup_steps=0)
        tensors = (self.param, self.state["z"], self.state["exp_avg_sq"])
        before = [tensor.clone() for tensor in tensors]
        self.param.grad = grads.index_select(0, self.index)
        self.optimizer.step()
        active = torch.as_tensor(active, device=self.flat.device)
        keep = active.index_select(0, self.index).view(-1, *([1] * (self.param.dim() - 1)))
        for tensor, old in zip(tensors, before):
            tensor.copy_(torch.where(keep, tensor, old))
        self.flat.index_copy_(0, self.index, self.param)
        return float(self.optimizer.param_groups[0]["scheduled_lr"])

    @torch.no_grad()
    def eval(self) -> None:
        """Put the averaged weights ``x`` into the buffer (for validation and prediction)."""
        self.optimizer.eval()
        self.flat.index_copy_(0, self.index, self.param)

    @torch.no_grad()
    def train(self) -> None:
        """Put the gradient-evaluation weights ``y`` back into the buffer."""
        self.optimizer.train()
        self.flat.index_copy_(0, self.index, self.param)
