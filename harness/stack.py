"""Model factories and the stacked model: M members of one architecture trained as one.

A member is a module built by the factory under ``torch.manual_seed(seed)``, exactly what a solo
torch run with that seed starts from. The members' parameters live in one flat buffer with a
leading member axis, ``flat[M, P]``; each named parameter is a view ``[M, *shape]`` into it, and
its ``.grad`` a view into a flat gradient buffer, so the optimizers update every member with a few
whole-buffer operations.

Two forward paths:

- the built-in MLP runs as batched matmuls (``torch.baddbmm``, one per layer for all members);
- any other ``nn.Module`` runs through ``torch.func.vmap(functional_call)`` over the member axis.
  Its forward must be made of vmap-able ops: ``nn.GRU``/``nn.LSTM`` are not (no batching rule for
  ``aten::gru``), which is why the built-in recurrent models below are written from ``F.linear``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from harness.errors import ConfigError, HarnessError, unknown_name

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
}
MODEL_TYPES = ("mlp", "gru", "lstm")
MODEL_KEYS = ("type", "hidden", "activation", "dropout")


class _Activation(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)


class MLP(nn.Module):
    """Linear → activation (→ dropout) per hidden width, then a linear head.

    Input ``[n, n_features]``; output ``[n]`` for one output, else ``[n, n_outputs]``.
    """

    def __init__(self, n_features: int, hidden: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, n_outputs: int = 1) -> None:
        super().__init__()
        sizes = [n_features, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(width_in, width_out), _Activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], n_outputs))
        self.net = nn.Sequential(*layers)
        self.activation = activation
        self.dropout = dropout
        self.n_outputs = n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.n_outputs == 1 else out

    def linear_names(self) -> list[str]:
        """Parameter-name prefixes of the Linear layers, input to output."""
        return [f"net.{k}" for k, layer in enumerate(self.net) if isinstance(layer, nn.Linear)]


class _RecurrentLayer(nn.Module):
    """One batch-first GRU or LSTM layer with ``nn.GRU``/``nn.LSTM``'s parameters and init.

    Written from ``F.linear`` so that ``vmap`` can batch it over members; the gate layout
    (GRU: r, z, n; LSTM: i, f, g, o) and the uniform(-1/sqrt(h), 1/sqrt(h)) init follow torch.
    """

    def __init__(self, cell: str, n_in: int, n_hidden: int) -> None:
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell = cell
        self.n_hidden = n_hidden
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates * n_hidden, n_in))
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates * n_hidden, n_hidden))
        self.bias_ih_l0 = nn.Parameter(torch.empty(gates * n_hidden))
        self.bias_hh_l0 = nn.Parameter(torch.empty(gates * n_hidden))
        bound = 1.0 / math.sqrt(n_hidden)
        for weight in self.parameters():  # same order and draws as nn.GRU.reset_parameters
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # all time steps at once
        h = x.new_zeros(x.shape[0], self.n_hidden)
        c = h
        outputs = []
        for t in range(x.shape[1]):
            hidden = F.linear(h, self.weight_hh_l0, self.bias_hh_l0)
            if self.cell == "gru":
                i_r, i_z, i_n = inputs[:, t].chunk(3, dim=-1)
                h_r, h_z, h_n = hidden.chunk(3, dim=-1)
                r = torch.sigmoid(i_r + h_r)
                z = torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = (1 - z) * n + z * h
            else:
                i, f, g, o = (inputs[:, t] + hidden).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class RecurrentNet(nn.Module):
    """Stacked GRU/LSTM layers over ``[n, seq, n_features]``, a linear head on the last step."""

    def __init__(self, cell: str, n_features: int, hidden: Sequence[int], dropout: float = 0.0,
                 n_outputs: int = 1) -> None:
        super().__init__()
        sizes = [n_features, *hidden]
        self.layers = nn.ModuleList(_RecurrentLayer(cell, a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(sizes[-1], n_outputs)
        self.n_outputs = n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(self.dropout(x) if k else x)
        out = self.head(x[:, -1])
        return out.squeeze(-1) if self.n_outputs == 1 else out


@dataclass(frozen=True)
class ModelFactory:
    """A picklable factory for the built-in models (the config's ``model`` section)."""

    type: str
    n_features: int
    hidden: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0
    n_outputs: int = 1

    def __call__(self) -> nn.Module:
        if self.type == "mlp":
            return MLP(self.n_features, self.hidden, self.activation, self.dropout, self.n_outputs)
        return RecurrentNet(self.type, self.n_features, self.hidden, self.dropout, self.n_outputs)


def make_model_factory(model: Mapping[str, Any] | Callable[[], nn.Module] | None, n_features: int,
                       n_outputs: int = 1) -> Callable[[], nn.Module]:
    """A factory of fresh, randomly initialised members.

    Parameters
    ----------
    model : the config's ``model`` section, e.g. ``{"hidden": [64, 64], "activation": "relu",
        "dropout": 0.0}`` (an MLP) or ``{"type": "gru", "hidden": [32]}`` (inputs
        ``[n, seq, features]``); or any callable returning an ``nn.Module``, returned as is.
        ``None`` means the default MLP. ``activation`` applies to the MLP only.
    n_features : width of the input's last axis.
    n_outputs : targets per row; with 1 the models return ``[n]``.
    """
    if model is None:
        model = {}
    if callable(model) and not isinstance(model, Mapping):
        return model
    if not isinstance(model, Mapping):
        raise ConfigError(f"model: expected a mapping or a module factory, got {type(model).__name__}")
    for key in model:
        if key not in MODEL_KEYS:
            raise unknown_name("model key", key, MODEL_KEYS)
    kind = model.get("type", "mlp")
    if kind not in MODEL_TYPES:
        raise unknown_name("model type", kind, MODEL_TYPES)
    activation = model.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise unknown_name("activation", activation, ACTIVATIONS)
    hidden = model.get("hidden", [64, 64])
    if isinstance(hidden, int):
        hidden = [hidden]
    if not hidden or any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ConfigError(f"model.hidden: must be a non-empty list of positive widths, got {hidden!r}")
    dropout = model.get("dropout", 0.0)
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
    return ModelFactory(kind, int(n_features), tuple(hidden), activation, float(dropout), int(n_outputs))


def build_member(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` under ``torch.manual_seed(seed)``; the caller's global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    if not isinstance(module, nn.Module):
        raise HarnessError(f"model: the factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


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
        members = [build_member(factory, seed) for seed in seeds]
        self.template = members[0]
        self.names, self.shapes = _layout(members)
        self.n_members = len(members)
        dtype = _common_dtype(self.template)
        self.flat = torch.stack([
            torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in members
        ]).to(device=device, dtype=dtype)
        self._link()
        self.buffers = {
            name: torch.stack([m.get_buffer(name) for m in members]).to(device)
            for name, _ in self.template.named_buffers()
        }
        self.path = _choose_path(self.template, path)

    def _link(self) -> None:
        """The gradient buffer and the per-parameter views into both buffers."""
        self.flat_grad = torch.zeros_like(self.flat)
        sizes = [math.prod(shape) for shape in self.shapes]
        self.params = dict(zip(self.names, _views(self.flat, self.flat_grad, self.shapes, sizes)))

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

    def forward(self, x: torch.Tensor, *, training: bool, shared: bool = False) -> torch.Tensor:
        """Member outputs ``[M, n, ...]`` for inputs ``[M, n, ...]`` (or ``[n, ...]`` if shared)."""
        if self.path == "bmm":
            return self._forward_mlp(x, training, shared)
        self.template.train(training)
        call = vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="different")
        try:
            return call(self.params, self.buffers, x)
        except RuntimeError as exc:
            if "Batching rule not implemented" not in str(exc):
                raise
            raise HarnessError(
                f"model: its forward cannot run under torch.func.vmap ({str(exc).splitlines()[0]}); "
                "use the built-in {type: gru|lstm} models or write the module from vmap-able ops"
            ) from None

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def _forward_mlp(self, x: torch.Tensor, training: bool, shared: bool) -> torch.Tensor:
        mlp: MLP = self.template  # type: ignore[assignment]
        h = x.expand(self.n_members, *x.shape) if shared else x
        prefixes = mlp.linear_names()
        activation = ACTIVATIONS[mlp.activation]
        for k, prefix in enumerate(prefixes):
            weight, bias = self.params[f"{prefix}.weight"], self.params[f"{prefix}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if k < len(prefixes) - 1:
                h = activation(h)
                if mlp.dropout > 0:
                    h = F.dropout(h, mlp.dropout, training)
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
        return {name: self.params[name].detach().to("cpu", copy=True) for name in self.names}

    @torch.no_grad()
    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace every member's parameters by ``state`` (as :meth:`state` returns it)."""
        if set(state) != set(self.names):
            raise HarnessError(
                f"init_state: parameter names {sorted(state)} do not match the model's {self.names}; "
                "pass the state of a result trained with the same model"
            )
        for name, shape in zip(self.names, self.shapes):
            value = torch.as_tensor(state[name])
            if tuple(value.shape) != (self.n_members, *shape):
                raise HarnessError(
                    f"init_state: '{name}' has shape {tuple(value.shape)}, expected "
                    f"{(self.n_members, *shape)}; pass the state of a result with the same members"
                )
            self.params[name].detach().copy_(value)


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


def _views(flat: torch.Tensor, flat_grad: torch.Tensor, shapes: list[tuple[int, ...]],
           sizes: list[int]) -> list[torch.Tensor]:
    """Leaf tensors viewing ``flat``; their ``.grad`` view ``flat_grad``.

    Autograd accumulates into an existing ``.grad`` in place, so backward fills ``flat_grad``.
    """
    m = flat.shape[0]
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        leaf = flat[:, start:start + size].view(m, *shape).detach().requires_grad_(True)
        leaf.grad = flat_grad[:, start:start + size].view(m, *shape)
        views.append(leaf)
        start += size
    return views


def _choose_path(template: nn.Module, path: str) -> str:
    if path not in ("auto", "bmm", "vmap"):
        raise unknown_name("stack path", path, ("auto", "bmm", "vmap"))
    is_mlp = type(template) is MLP
    if path == "bmm" and not is_mlp:
        raise HarnessError("stack path 'bmm' needs the built-in MLP; use path='vmap' for other modules")
    return "bmm" if path == "auto" and is_mlp else ("vmap" if path == "auto" else path)
