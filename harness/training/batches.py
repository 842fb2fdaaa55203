"""What every member reads: the windows' rows side by side, and each member's shuffled batches.

Every batch is laid out ``batch_size`` rows wide (pad rows masked), and a member draws its batch
order from its own generator exactly as ``DataLoader(..., shuffle=True, generator=g)`` does, so a
member reads the same rows whichever members share its stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from harness.errors import HarnessError
from harness.training.checks import _tensor
from harness.training.stack import Stack

if TYPE_CHECKING:
    from harness.training.loop import WindowData


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


class _Feed:
    """Each step's batch: ``X`` and ``y`` at the members' rows, which of them are real, and the
    loss denominators (real rows x values per row), for the members the step computes.

    The epoch's rows are gathered a few steps at a time (at most ``budget`` bytes of features per
    gather), which costs fewer operations than a gather per step and gives the same tensors. The
    real-row mask is None on steps where every computed member has a full batch.
    """

    def __init__(self, rows: _Rows, mask: torch.Tensor, batch_size: int, budget: int = 8 * 2**20) -> None:
        self.rows, self.batch_size = rows, batch_size
        per_row = math.prod(rows.y.shape[1:])
        self.keep, self.denominators = [], []
        for i, span in enumerate(rows.spans):
            keep = mask[span, i * batch_size:(i + 1) * batch_size]
            self.keep.append(None if bool(keep.all()) else keep)
            self.denominators.append(rows.counts[span, i] * per_row)
        row_bytes = rows.X[:1].numel() * rows.X.element_size() + rows.y[:1].numel() * rows.y.element_size()
        self.chunk = max(1, min(rows.width, budget // max(1, row_bytes * rows.n_total * batch_size)))
        self.order = None
        self.first: int | None = None  # the first step of the gathered chunk
        self.X = self.y = None

    def epoch(self, order: torch.Tensor) -> None:
        """This epoch's row order ``[M, width * batch_size]`` (:meth:`MemberBatches.epoch`)."""
        self.order = order.view(self.rows.n_total, self.rows.width, self.batch_size).transpose(0, 1).contiguous()
        self.first = None

    def step(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Step ``i``'s ``(X [S, B, ...], y [S, B, ...], real-row mask [S, B] or None, denominators
        [S])`` for the members ``S`` the step computes (:attr:`_Rows.spans`)."""
        if self.first is None or not self.first <= i < self.first + self.chunk:
            self.first = i
            positions = self.order[i:i + self.chunk]
            flat = positions.reshape(-1)
            self.X = self.rows.X.index_select(0, flat).view(*positions.shape, *self.rows.X.shape[1:])
            self.y = self.rows.y.index_select(0, flat).view(*positions.shape, *self.rows.y.shape[1:])
        span = self.rows.spans[i]
        xb, yb = self.X[i - self.first], self.y[i - self.first]
        if span.start != 0 or span.stop != self.rows.n_total:
            xb, yb = xb[span], yb[span]
        return xb, yb, self.keep[i], self.denominators[i]


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
