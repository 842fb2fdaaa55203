"""The stacked model: M members of one architecture trained as one.

A member is a module built by the factory under ``torch.manual_seed(seed)``
(:func:`harness.training.models.build_member`), exactly what a solo torch run with that seed
starts from. The members' parameters live in one flat buffer with a leading member axis,
``flat[M, P]``; each named parameter is a view ``[M, *shape]`` into it, and its ``.grad`` a view
into a flat gradient buffer, so the optimizers update every member with a few whole-buffer
operations.

Two forward paths:

- the built-in MLP runs as batched matmuls (``torch.baddbmm``, one per layer for all members);
- any other ``nn.Module`` runs through ``torch.func.vmap(functional_call)`` over the member axis.
  Its forward must be made of vmap-able ops: ``nn.GRU``/``nn.LSTM`` are not (no batching rule for
  ``aten::gru``), which is why the built-in recurrent models (:mod:`harness.training.models`) are
  written from ``F.linear``.

Every computation is per member (one matrix of a batched matmul, one row of an elementwise op),
so a member's numbers do not depend on which other members share its stack; the stack of many
windows' members relies on that. Random draws are the exception, hence :class:`GroupStreams`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from harness.errors import HarnessError, unknown_name
from harness.training.models import ACTIVATIONS, MLP, build_member


class Stack:
    """M members' parameters in one ``[M, P]`` buffer, with a batched forward.

    Parameters
    ----------
    factory : builds one member (see :func:`make_model_factory`).
    seeds : one init seed per member.
    device : where the stacked parameters live.
    path : ``"auto"`` (batched matmuls for the built-in MLP, vmap otherwise), ``"bmm"`` or
        ``"vmap"``.
    """

    def __init__(self, factory: Callable[[], nn.Module], seeds: Sequence[int],
                 device: str | torch.device = "cpu", path: str = "auto") -> None:
        # members of one seed start alike (many windows share seeds): each seed is built once
        built = {seed: build_member(factory, seed) for seed in dict.fromkeys(int(s) for s in seeds)}
        distinct = list(built.values())
        index = torch.as_tensor([list(built).index(int(seed)) for seed in seeds], dtype=torch.long)
        self.template = distinct[0]
        self.names, self.shapes = _layout(distinct)
        self.n_members = len(index)
        self.path = _choose_path(self.template, path)
        self.transposed = _stored_transposed(self.template, self.path)
        dtype = _common_dtype(self.template)
        self.flat = torch.stack([
            torch.cat([(p.detach().t() if name in self.transposed else p.detach()).reshape(-1)
                       for name, p in m.named_parameters()]) for m in distinct
        ])[index].to(device=device, dtype=dtype)
        self._link()
        self.buffers = {
            name: torch.stack([m.get_buffer(name) for m in distinct])[index].to(device)
            for name, _ in self.template.named_buffers()
        }
        self.stochastic = _draws_random_numbers(self.template)

    def _link(self) -> None:
        """The gradient buffer and the per-parameter views into both buffers."""
        self.flat_grad = torch.zeros_like(self.flat)
        sizes = [math.prod(shape) for shape in self.shapes]
        self.params = dict(zip(self.names, _views(self.flat, self.flat_grad, self.shapes, sizes,
                                                  [name in self.transposed for name in self.names])))

    def __getstate__(self) -> dict[str, Any]:
        # the views would pickle as copies detached from the buffer; they are rebuilt instead
        return {key: value for key, value in self.__dict__.items() if key not in ("flat_grad", "params")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._link()

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    def forward(self, x: torch.Tensor, *, training: bool, shared: bool = False, members: slice | None = None,
                streams: GroupStreams | None = None) -> torch.Tensor:
        """Member outputs ``[M, n, ...]`` for inputs ``[M, n, ...]`` (or ``[n, ...]`` if shared).

        ``members``: only these members (a slice of the member axis), e.g. one window's.
        ``streams``: in training, each group of members draws its random numbers (dropout masks)
        from its own stream (its ``span`` must be ``members``); None: everything from torch's
        global RNG.
        """
        params = self.params if members is None else {k: v[members] for k, v in self.params.items()}
        buffers = self.buffers if members is None else {k: v[members] for k, v in self.buffers.items()}
        if self.path == "bmm":
            return self._forward_mlp(params, x, training, shared, streams if training else None)
        self.template.train(training)
        if streams is None or not training or not self.stochastic:
            return self._forward_vmap(params, buffers, x, shared)
        outputs = []
        for group, generator, live in streams.in_span():
            with streams.global_rng(generator, keep=live):
                outputs.append(self._forward_vmap({k: v[group] for k, v in params.items()},
                                                  {k: v[group] for k, v in buffers.items()},
                                                  x if shared else x[group], shared))
        return torch.cat(outputs)

    def _forward_vmap(self, params: dict, buffers: dict, x: torch.Tensor, shared: bool) -> torch.Tensor:
        call = vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="different")
        try:
            return call(params, buffers, x)
        except RuntimeError as exc:
            if "Batching rule not implemented" not in str(exc):
                raise
            raise HarnessError(
                f"model: its forward cannot run under torch.func.vmap ({str(exc).splitlines()[0]}); "
                "use the built-in {type: gru|lstm} models or write the module from vmap-able ops"
            ) from None

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _forward_mlp(self, params: dict, x: torch.Tensor, training: bool, shared: bool,
                     streams: GroupStreams | None) -> torch.Tensor:
        mlp: MLP = self.template  # type: ignore[assignment]
        n_members = next(iter(params.values())).shape[0]
        h = x.expand(n_members, *x.shape) if shared else x
        prefixes = mlp.linear_names()
        activation = ACTIVATIONS[mlp.activation]
        for k, prefix in enumerate(prefixes):
            weight, bias = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
            h = _linear(h, weight, bias)
            if k < len(prefixes) - 1:
                h = activation(h)
                if mlp.dropout > 0 and training:
                    h = F.dropout(h, mlp.dropout) if streams is None else h * streams.dropout_masks(h, mlp.dropout)
        return h.squeeze(-1) if mlp.n_outputs == 1 else h

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, accumulating every member's gradient into ``flat_grad``."""
        with warnings.catch_warnings():
            # The views are strided over the member axis, which autograd's layout check flags
            # (a performance hint for DDP buckets, not an error); the in-place add is what we want.
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")
            loss.backward()

    def zero_grad(self) -> None:
        self.flat_grad.zero_()

    def param_grads(self) -> list[torch.Tensor]:
        """Each named parameter's gradient ``[M, *shape]`` (views into the flat gradient)."""
        return [self.params[name].grad for name in self.names]

    def state(self) -> dict[str, torch.Tensor]:
        """Stacked parameters ``{name: [M, *shape]}`` on the CPU (a copy)."""
        return {name: self.params[name].detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
                for name in self.names}

    def select(self, members: slice) -> Stack:
        """A new stack of some of the members (copies), e.g. one window's after a joint training."""
        part = object.__new__(Stack)
        part.__dict__.update({key: value for key, value in self.__getstate__().items() if key != "buffers"})
        part.flat = self.flat[members].clone()
        part.buffers = {name: value[members].clone() for name, value in self.buffers.items()}
        part.n_members = part.flat.shape[0]
        part._link()
        return part

    @torch.no_grad()
    def load_state(self, state: Mapping[str, torch.Tensor], members: slice | None = None) -> None:
        """Replace the parameters of every member (or of ``members``) by ``state`` (as :meth:`state` returns it)."""
        if set(state) != set(self.names):
            raise HarnessError(
                f"init_state: parameter names {sorted(state)} do not match the model's {self.names}; "
                "pass the state of a result trained with the same model"
            )
        rows = slice(None) if members is None else members
        n_members = self.flat[rows].shape[0]
        for name, shape in zip(self.names, self.shapes):
            value = torch.as_tensor(state[name])
            if tuple(value.shape) != (n_members, *shape):
                raise HarnessError(
                    f"init_state: '{name}' has shape {tuple(value.shape)}, expected "
                    f"{(n_members, *shape)}; pass the state of a result with the same members"
                )
            self.params[name].detach()[rows].copy_(value)


class GroupStreams:
    """One random stream per group of consecutive members, for what training forwards draw.

    A group is one window's members (many windows can share a stack, design section 6). Every
    group's stream starts from the same ``seed``, and a group draws its dropout masks only from
    its own stream and only on steps where it is ``live`` (has a batch), so it draws exactly what
    it would draw in a stack of its own. A forward over some members only (``members`` of
    :meth:`Stack.forward`) sets :attr:`span` to them; it must hold whole groups.

    Parameters
    ----------
    groups : member slices, one per group, covering the stack in order.
    seed : the seed every stream starts from.
    device : the stack's device.
    """

    def __init__(self, groups: Sequence[slice], seed: int, device: str | torch.device = "cpu") -> None:
        self.groups = list(groups)
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for _ in self.groups]
        self.live = [True] * len(self.groups)
        self.span = slice(0, self.groups[-1].stop if self.groups else 0)

    def in_span(self) -> Iterator[tuple[slice, torch.Generator, bool]]:
        """``(members relative to the span, generator, live)`` of each group inside :attr:`span`."""
        start, stop = self.span.start or 0, self.span.stop
        for group, generator, live in zip(self.groups, self.generators, self.live):
            if group.start >= start and group.stop <= stop:
                yield slice(group.start - start, group.stop - start), generator, live

    def dropout_masks(self, like: torch.Tensor, p: float) -> torch.Tensor:
        """Inverted-dropout multipliers shaped like ``like`` ``[span members, ...]`` (ones for idle groups)."""
        masks = torch.ones_like(like)
        for group, generator, live in self.in_span():
            if live:
                masks[group].bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)
        return masks

    @contextmanager
    def global_rng(self, generator: torch.Generator, keep: bool) -> Iterator[None]:
        """torch's global RNG set to ``generator``'s state for modules that draw from it
        (``nn.Dropout`` under vmap); the draws advance ``generator`` when ``keep``."""
        cuda = self.device.type == "cuda"
        index = self.device.index or 0
        with torch.random.fork_rng(devices=[index] if cuda else []):
            if cuda:
                torch.cuda.set_rng_state(generator.get_state(), index)
            else:
                torch.set_rng_state(generator.get_state())
            yield
            if keep:
                generator.set_state(torch.cuda.get_rng_state(index) if cuda else torch.get_rng_state())


def _draws_random_numbers(template: nn.Module) -> bool:
    """Whether the module's training forward draws random numbers (dropout with p > 0)."""
    if isinstance(template, MLP):
        return template.dropout > 0
    return any(isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 for module in template.modules())


NARROW = 4  # layers with at most this many outputs skip the batched matmul


def is_narrow(out_features: int) -> bool:
    """Whether a layer with ``out_features`` outputs is narrow (the head): a broadcast product and
    a sum, not a batched matmul."""
    return out_features <= NARROW


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each member's ``h @ weight.T + bias``: ``[M, n, in]``, ``[M, out, in]``, ``[M, out]``.

    A narrow layer (the head) is a broadcast product and a sum: a batched matmul would run one
    matrix-vector product per member, far slower than the arithmetic it does.
    """
    if is_narrow(weight.shape[1]):
        return (h.unsqueeze(2) * weight.unsqueeze(1)).sum(-1) + bias.unsqueeze(1)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


def _layout(members: list[nn.Module]) -> tuple[list[str], list[tuple[int, ...]]]:
    names = [name for name, _ in members[0].named_parameters()]
    shapes = [tuple(p.shape) for p in members[0].parameters()]
    for member in members[1:]:
        if [(n, tuple(p.shape)) for n, p in member.named_parameters()] != list(zip(names, shapes)):
            raise HarnessError("model: the factory built members with different parameters; make it deterministic")
    if not names:
        raise HarnessError("model: the module has no parameters to train")
    return names, shapes


def _common_dtype(module: nn.Module) -> torch.dtype:
    dtypes = {p.dtype for p in module.parameters()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise HarnessError(f"model: parameters must share one floating dtype, got {sorted(map(str, dtypes))}")
    return dtypes.pop()


def _stored_transposed(template: nn.Module, path: str) -> frozenset[str]:
    """The weights the flat buffer holds transposed, ``[in, out]`` per member: the built-in MLP's
    batched-matmul layers (not the narrow head) on the bmm path.

    Their forward multiplies by ``weight^T`` and their gradient arrives as ``(h^T g)^T``: stored
    so, both are contiguous per member, and adding the gradient into the buffer is a straight
    pass instead of a transposing copy (~5% of a step). The parameter views keep the module's
    ``[out, in]`` shape (as strided views); only the buffer's order of elements changes."""
    if path != "bmm":
        return frozenset()
    return frozenset(f"{prefix}.weight" for prefix in template.linear_names()
                     if not is_narrow(template.get_submodule(prefix).out_features))


def _views(flat: torch.Tensor, flat_grad: torch.Tensor, shapes: list[tuple[int, ...]],
           sizes: list[int], transposed: list[bool]) -> list[torch.Tensor]:
    """Leaf tensors viewing ``flat``; their ``.grad`` view ``flat_grad``. A ``transposed``
    parameter ``[out, in]`` views its segment, stored ``[in, out]``, through a transpose.

    Autograd accumulates into an existing ``.grad`` in place, so backward fills ``flat_grad``.
    """
    views, start = [], 0
    for shape, size, flipped in zip(shapes, sizes, transposed):
        leaf = _segment(flat, start, size, shape, flipped).detach().requires_grad_(True)
        leaf.grad = _segment(flat_grad, start, size, shape, flipped)
        views.append(leaf)
        start += size
    return views


def _segment(buffer: torch.Tensor, start: int, size: int, shape: tuple[int, ...], flipped: bool) -> torch.Tensor:
    """Columns ``start:start + size`` of ``buffer`` ``[M, P]`` as ``[M, *shape]`` (``flipped``: stored
    as the transpose of a 2-d ``shape``)."""
    segment = buffer[:, start:start + size]
    return segment.view(len(buffer), *shape[::-1]).transpose(1, 2) if flipped else segment.view(len(buffer), *shape)


def _choose_path(template: nn.Module, path: str) -> str:
    if path not in ("auto", "bmm", "vmap"):
        raise unknown_name("stack path", path, ("auto", "bmm", "vmap"))
    is_mlp = type(template) is MLP
    if path == "bmm" and not is_mlp:
        raise HarnessError("stack path 'bmm' needs the built-in MLP; use path='vmap' for other modules")
    return "bmm" if path == "auto" and is_mlp else ("vmap" if path == "auto" else path)
