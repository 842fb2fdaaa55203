"""The built-in MLP's training step written by hand: forward, per-member loss, backward, no autograd.

The stacked step of :mod:`harness.training.loop` for the built-in MLP (the batched-matmul path of
:class:`~harness.training.stack.Stack`) spends as much time building and walking autograd's graph
as computing: ~40 small nodes per step around six batched matmuls. :class:`MLPStep` runs the same
forward and computes the gradients itself, writing them straight into the stack's flat gradient.

It is the eager step, op for op: the backward calls exactly the aten ops autograd's formulas call
for ``baddbmm``, the narrow head's broadcast product and sum, the activations
(``threshold_backward``, ``tanh_backward``, ``gelu_backward``, ``silu_backward``), dropout masks,
``square``, the masks and the means, with the same shapes and the same reductions (``sum_to``
over the broadcast dimensions), and writes each gradient into the gradient buffer: what
``AccumulateGrad`` adding it into the zeroed buffer gives, without zeroing the buffer every
step (the training loop zeroes it only for autograd; a member outside a step's span keeps a
stale gradient it does not use). So every member's loss and gradient are bitwise autograd's
(the tests check it for every activation, dropout, partial batches, idle members and several
outputs), and everything autograd guaranteed still holds: a member computes the same whichever
members share its stack.

On the CPU, a stack of many windows takes each step in chunks of whole windows (:meth:`MLPStep.step`):
forward, loss and backward of one chunk, then the next, so that a chunk's activations stay in the
core's cache between its ops (a 480-member stack steps ~30% faster in chunks of ~64 members, its
whole training ~10%). Each member computes the same in any chunk, as in any stack.

Other modules (the vmap path) keep autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from harness.errors import HarnessError
from harness.training.models import ACTIVATIONS, MLP
from harness.training.stack import GroupStreams, Stack, is_narrow


def fused_step_applies(stack: Stack) -> bool:
    """Whether :class:`MLPStep` runs this stack: the built-in MLP on the batched-matmul path."""
    return stack.path == "bmm" and type(stack.template) is MLP and stack.template.activation in _BACKWARD


class MLPStep:
    """Forward, loss and backward of a stacked built-in MLP for one batch.

    :meth:`loss` runs the training forward of ``members`` (a slice of the stack) on their batch
    and returns each one's mean squared error over its real rows (what
    :func:`harness.training.loop._batch_loss` returns); :meth:`backward` then adds the gradient
    of ``sum(loss[m] for live m)`` into the stack's flat gradient, as
    ``torch.where(live, loss, 0).sum().backward()`` would.
    """

    def __init__(self, stack: Stack, groups: Sequence[slice] = (), batch_size: int = 64) -> None:
        if not fused_step_applies(stack):
            raise HarnessError("MLPStep: needs the built-in MLP on the batched-matmul path")
        mlp: MLP = stack.template  # type: ignore[assignment]
        self.stack = stack
        self.prefixes = mlp.linear_names()
        self.activation = ACTIVATIONS[mlp.activation]
        self.activation_backward = _BACKWARD[mlp.activation]
        self.dropout = mlp.dropout
        self.n_outputs = mlp.n_outputs
        self.views: dict[tuple[int, int], list[_Layer]] = {}  # each member slice's layer views, made once
        widest = max(layer.out_features for layer in mlp.net if isinstance(layer, torch.nn.Linear))
        self.bounds = _chunk_bounds(stack, groups, batch_size * widest)
        self._saved: tuple | None = None

    def _layers(self, members: slice) -> list[_Layer]:
        key = (members.start, members.stop)
        if key not in self.views:
            params = self.stack.params
            self.views[key] = [_Layer(params[f"{prefix}.weight"][members], params[f"{prefix}.bias"][members],
                                      params[f"{prefix}.weight"].grad[members], params[f"{prefix}.bias"].grad[members])
                               for prefix in self.prefixes]
        return self.views[key]

    def step(self, batch: tuple, streams: GroupStreams | None, span: slice, ready: np.ndarray,
             watch: Callable[[torch.Tensor, slice], np.ndarray]) -> np.ndarray:
        """One step's forward, loss and backward of the members in ``span``, chunk by chunk.

        ``batch`` = ``(xb, yb, keep, denominator)`` of the span's members (:meth:`loss`);
        ``ready`` (``[M]`` bool): who may update, so whose gradients are computed (active, with a
        batch). ``watch(loss, span)`` then takes all the span's losses at once (one call, not one
        a chunk) and returns who updates now: ``ready`` less the members whose loss just
        diverged. Those members' gradients were computed but are never used (the optimizers
        leave out whoever does not update), so every update is the eager step's."""
        xb, yb, keep, denominator = batch
        losses = []
        for part in _parts(span, self.bounds):
            rows = slice(part.start - span.start, part.stop - span.start)
            if streams is not None:
                streams.span = part
            losses.append(self.loss(xb[rows], yb[rows], None if keep is None else keep[rows], denominator[rows],
                                    streams, part))
            chosen = ready[part]
            self.backward(None if chosen.all() else torch.from_numpy(chosen).to(xb.device))
        if streams is not None:
            streams.span = span
        return watch(losses[0] if len(losses) == 1 else torch.cat(losses), span)

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, keep: torch.Tensor | None, denominator: torch.Tensor,
             streams: GroupStreams | None, members: slice) -> torch.Tensor:
        """Each of ``members``' MSE on its batch ``xb`` ``[S, B, ...]``: the mean over its real rows
        (``keep`` ``[S, B]``; None: every row), ``denominator`` = real rows x values per row. The
        tensors the backward needs are kept until :meth:`backward`."""
        layers = self._layers(members)
        last = len(layers) - 1
        saved = []
        h = xb
        for k, layer in enumerate(layers):
            inputs = h
            h = layer.forward(inputs)
            pre = out = mask = None
            if k < last:
                pre = h
                h = out = self.activation(pre)
                if self.dropout > 0:
                    if streams is None:
                        raise HarnessError("MLPStep: dropout needs the members' random streams")
                    mask = streams.dropout_masks(h, self.dropout)
                    h = h * mask
            saved.append((inputs, pre, out, mask))
        output = h.squeeze(-1) if self.n_outputs == 1 else h
        if output.shape != yb.shape:
            raise HarnessError(
                f"model: output shape {tuple(output.shape[1:])} per member does not match the target's "
                f"{tuple(yb.shape[1:])}; return [n] for a 1-d target, [n, k] for k targets"
            )
        diff = output - yb
        squares = diff.square()
        if keep is not None:
            keep = keep.reshape(*keep.shape, *[1] * (squares.dim() - 2))
            squares = torch.where(keep, squares, 0.0)
        self._saved = (layers, saved, diff, keep, denominator)
        return squares.flatten(1).sum(dim=1) / denominator

    @torch.no_grad()
    def backward(self, live: torch.Tensor | None = None) -> None:
        """Add the gradient of the live members' summed losses (``live``: ``[S]`` bool over the
        members of the last :meth:`loss`; None: all of them) into the stack's flat gradient."""
        assert self._saved is not None, "backward() before loss()"
        layers, saved, diff, keep, denominator = self._saved
        self._saved = None
        # autograd's chain: sum -> where(live, loss, 0) -> / denominator -> flatten(1).sum(1) -> where(keep, ., 0)
        # -> square (pow 2: grad * (2 * diff)); per element (keep and live ? 1 / denominator : 0) * (2 * diff)
        if live is None:
            seed = 1 / denominator
        else:
            seed = torch.where(live, torch.ones((), dtype=diff.dtype, device=diff.device).expand(live.shape), 0)
            seed = seed / denominator
        seed = seed.view(-1, *[1] * (diff.dim() - 1))
        if keep is not None:
            seed = torch.where(keep, seed, 0)
        g = seed * (2.0 * diff)
        if self.n_outputs == 1:
            g = g.unsqueeze(-1)
        for k in range(len(layers) - 1, -1, -1):
            inputs, pre, out, mask = saved[k]
            if k < len(layers) - 1:
                if mask is not None:
                    g = g * mask
                g = self.activation_backward(g, pre, out)
            g = layers[k].backward(g, inputs, needs_input=k > 0)


class _Layer:
    """One linear layer of the stacked MLP: its parameter and gradient views, forward and backward."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, g_weight: torch.Tensor, g_bias: torch.Tensor) -> None:
        self.weight, self.g_weight, self.g_bias = weight, g_weight, g_bias
        self.narrow = is_narrow(weight.shape[1])
        self.bias_row = bias.unsqueeze(1)
        self.weight_t = weight.transpose(1, 2)
        self.weight_row = weight.unsqueeze(1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """:func:`harness.training.stack._linear`, op for op."""
        if self.narrow:
            return (h.unsqueeze(2) * self.weight_row).sum(-1) + self.bias_row
        return torch.baddbmm(self.bias_row, h, self.weight_t)

    def backward(self, g: torch.Tensor, inputs: torch.Tensor, needs_input: bool) -> torch.Tensor | None:
        """Write the weight and bias gradients for output gradient ``g`` ``[S, B, out]`` into the
        gradient views; return the input's gradient (when ``needs_input``)."""
        torch.sum(g, 1, out=self.g_bias)
        if self.narrow:  # (h.unsqueeze(2) * w.unsqueeze(1)).sum(-1): a broadcast product
            expanded = g.unsqueeze(-1).expand(*g.shape, inputs.shape[-1])
            h = inputs.unsqueeze(2)
            torch.sum(expanded * h, 1, out=self.g_weight)
            return _sum_to(expanded * self.weight_row, tuple(h.shape)).squeeze(2) if needs_input else None
        # baddbmm(bias, h, w^T): batch2 = w^T, so d batch2 = h^T @ g and d h = g @ batch2^T (= w)
        # written by a copy: bmm(out=) into the strided view takes another kernel for small shapes (other bits)
        self.g_weight.copy_(torch.bmm(inputs.transpose(1, 2), g).transpose(1, 2))
        return torch.bmm(g, self.weight) if needs_input else None


CHUNK_BYTES = 1 << 20  # a chunk's widest activation, [members, batch rows, width], in ~1 MiB of cache a thread


def _chunk_bounds(stack: Stack, groups: Sequence[slice], values: int) -> list[int]:
    """Where the member chunks of a step start and end: whole groups (windows), each chunk's
    widest activation (``values`` per member: batch rows x width) within :data:`CHUNK_BYTES` per
    torch thread (each core has its own cache), or one group; one chunk (the whole stack) off the
    CPU, where one wide launch beats many."""
    if stack.device.type != "cpu" or len(groups) < 2:
        return [0, stack.n_members]
    per_member = values * torch.empty((), dtype=stack.dtype).element_size()
    most = max(CHUNK_BYTES * torch.get_num_threads() // per_member, 1)
    bounds, start = [0], 0
    for group in groups:
        if group.stop - start > most and group.start > start:
            bounds.append(group.start)
            start = group.start
    return bounds + [stack.n_members]


def _parts(span: slice, bounds: list[int]) -> list[slice]:
    """``span`` cut at the chunk ``bounds`` inside it."""
    cuts = [span.start] + [b for b in bounds if span.start < b < span.stop] + [span.stop]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def _sum_to(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``at::sum_to``: what autograd does to a gradient of a broadcast input (same number of dims)."""
    dims = [i for i, (size, target) in enumerate(zip(tensor.shape, shape)) if target == 1 and size != 1]
    return tensor.sum(dims, keepdim=True) if dims else tensor


_BACKWARD = {  # activation gradient from the output gradient, the pre-activation and the activation
    "relu": lambda g, pre, out: torch.ops.aten.threshold_backward(g, out, 0),
    "tanh": lambda g, pre, out: torch.ops.aten.tanh_backward(g, out),
    "gelu": lambda g, pre, out: torch.ops.aten.gelu_backward(g, pre),
    "silu": lambda g, pre, out: torch.ops.aten.silu_backward(g, pre),
}
