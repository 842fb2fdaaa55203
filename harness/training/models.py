"""Model factories and the built-in models: an MLP and GRU/LSTM nets, built one member at a time.

A member is a module built by the factory under ``torch.manual_seed(seed)`` (:func:`build_member`),
exactly what a solo torch run with that seed starts from. The stack (:mod:`harness.training.stack`)
runs the built-in MLP as batched matmuls and any other module through ``torch.func.vmap``;
``nn.GRU``/``nn.LSTM`` are not vmap-able (no batching rule for ``aten::gru``), which is why the
built-in recurrent models below are written from ``F.linear``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, HarnessError, did_you_mean, first_line, unknown_name

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
        ``[n, seq, features]``), or a user's class ``{"type": "pkg.mod:Class", "params": {...}}``
        (:class:`UserModelFactory`); or any callable returning an ``nn.Module``, returned as is.
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
    if is_class_path(model.get("type")):  # a user's own network (see the end of this module)
        return user_model_factory(model, n_features, n_outputs)
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


# --- a user's own network: model: {type: "package.module:Class", params: {...}} --------------------


def is_class_path(kind: Any) -> bool:
    """Whether a ``model.type`` names a user's class (``"package.module:Class"``)."""
    return isinstance(kind, str) and ":" in kind


@dataclass(frozen=True)
class UserModelFactory:
    """A picklable factory of a user's ``nn.Module`` class: ``Class(n_features=..., n_outputs=...,
    **params)``, the class imported from ``path`` (``"package.module:Class"``) with the working
    folder on ``sys.path`` (so a module next to the config imports), then ``PYTHONPATH``.

    It trains through the vmap path (:class:`harness.training.stack.Stack`); a forward that
    returns ``[n]`` for one output and ``[n, n_outputs]`` otherwise, as the built-in models do.
    """

    path: str
    n_features: int
    n_outputs: int = 1
    params: tuple[tuple[str, Any], ...] = ()

    def __call__(self) -> nn.Module:
        cls = load_model_class(self.path)
        kwargs = dict(self.params)
        try:
            return cls(n_features=self.n_features, n_outputs=self.n_outputs, **kwargs)
        except Exception as exc:  # a wrong parameter or a bug in __init__: one line, not a traceback
            shown = ", ".join([f"n_features={self.n_features}", f"n_outputs={self.n_outputs}",
                               *(f"{key}={value!r}" for key, value in kwargs.items())])
            raise HarnessError(
                f"model '{self.path}': {cls.__name__}({shown}) failed with {type(exc).__name__}: {first_line(exc)}; "
                "its __init__ must take n_features and n_outputs, and model.params the rest"
            ) from None


def user_model_factory(model: Mapping[str, Any], n_features: int, n_outputs: int = 1) -> UserModelFactory:
    """The factory of ``model = {"type": "pkg.mod:Class", "params": {...}}`` (checked: the class imports)."""
    unknown = [key for key in model if key not in USER_MODEL_KEYS]
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: a user's model ({model['type']}) takes only "
                          f"{', '.join(USER_MODEL_KEYS)}; pass its own settings in model.params")
    params = model.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"model.params: must be a mapping of keyword arguments, got {params!r}")
    clash = sorted(set(params) & {"n_features", "n_outputs"})
    if clash:
        raise ConfigError(f"model.params.{clash[0]}: set by the harness from the data; leave it out")
    load_model_class(model["type"])
    return UserModelFactory(str(model["type"]), int(n_features), int(n_outputs),
                            tuple(sorted((str(k), _frozen(v)) for k, v in params.items())))


USER_MODEL_KEYS = ("type", "params", "sequence")


def _frozen(value: Any) -> Any:
    """Lists as tuples, so the factory stays hashable (the class gets tuples for lists)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def load_model_class(path: str) -> type[nn.Module]:
    """Import ``"package.module:Class"`` (working folder first on ``sys.path``) and check it is an
    ``nn.Module`` subclass; one-line errors otherwise."""
    import importlib
    import inspect
    import os
    import sys

    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"model.type: write a user's network as 'package.module:Class', got {path!r}")
    if os.getcwd() not in sys.path:  # a module next to the config imports as-is
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HarnessError(f"model '{path}': cannot import module '{module_name}' ({exc}); run from the folder "
                           "that holds it or put its folder on PYTHONPATH") from None
    except Exception as exc:  # a user module that fails while importing
        raise HarnessError(f"model '{path}': importing '{module_name}' failed with {type(exc).__name__}: "
                           f"{first_line(exc)}; fix that module") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = sorted(n for n, obj in vars(module).items() if inspect.isclass(obj) and issubclass(obj, nn.Module)
                         and obj.__module__ == module.__name__)
        raise HarnessError(f"model '{path}': module '{module_name}' has no class '{class_name}'"
                           f"{did_you_mean(class_name, classes)}; nn.Module classes there: {', '.join(classes) or 'none'}")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise HarnessError(f"model '{path}': '{class_name}' is not a torch.nn.Module subclass; subclass nn.Module")
    return cls


def check_module(factory: Callable[[], nn.Module], row_shape: Sequence[int], seeds: Sequence[int]) -> None:
    """Probe a module factory that is not a built-in model before it trains as a stack.

    One-line :class:`HarnessError` s when the members of ``seeds`` differ in their parameters
    (names or shapes: the stack needs one layout), when the forward fails on a small batch of
    rows shaped ``row_shape``, or when it cannot run (forward and backward) under
    ``torch.func.vmap`` over two members, as the stack runs it. Built-in models are not probed.
    """
    if isinstance(factory, ModelFactory):
        return
    from torch.func import functional_call, vmap

    name = f" '{factory.path}'" if isinstance(factory, UserModelFactory) else ""
    members = {int(seed): build_member(factory, int(seed)) for seed in dict.fromkeys(seeds)}
    layouts = {seed: [(n, tuple(p.shape)) for n, p in m.named_parameters()] for seed, m in members.items()}
    (first, reference), *others = layouts.items()
    for seed, layout in others:
        if layout != reference:
            where = next(((a, b) for a, b in zip(reference, layout) if a != b), None)
            detail = (f"{where[0][0]} {list(where[0][1])} vs {where[1][0]} {list(where[1][1])}" if where else
                      f"{len(reference)} vs {len(layout)} parameters")
            raise HarnessError(
                f"model{name}: seed {first} and seed {seed} build different parameters ({detail}); the members of "
                "a stack must share names and shapes, so draw only the initial values from torch's RNG"
            )
    template = next(iter(members.values()))
    if not reference:
        raise HarnessError(f"model{name}: the module has no parameters to train")
    dtype = next(template.parameters()).dtype
    x = torch.zeros(3, *[int(s) for s in row_shape], dtype=dtype)
    template.train(True)
    before = {n: b.clone() for n, b in template.named_buffers()}
    try:
        with torch.no_grad():
            template(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(dtype))
    except Exception as exc:
        template.train(False)
        raise HarnessError(f"model{name}: its forward fails on a batch of rows shaped {[3, *map(int, row_shape)]} "
                           f"({type(exc).__name__}: {first_line(exc)}); fix the module") from None
    changed = [n for n, b in template.named_buffers() if n in before and not torch.equal(before[n], b)]
    if changed:
        template.train(False)
        raise HarnessError(
            f"model{name}: its training forward updates the buffer '{changed[0]}' (BatchNorm's running statistics "
            "do), which the stack cannot keep per member; use LayerNorm or GroupNorm, or track no statistics"
        )
    pair = list(members.values())[:2] * (2 if len(members) == 1 else 1)
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in pair[:2]]).requires_grad_(True)
              for n, _ in reference}
    buffers = {n: torch.stack([m.get_buffer(n) for m in pair[:2]]) for n, _ in template.named_buffers()}

    def call(p: dict, b: dict, rows: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (p, b), (rows,))

    try:
        out = vmap(call, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
        out.float().sum().backward()
    except Exception as exc:
        raise HarnessError(
            f"model{name}: its forward cannot run under torch.func.vmap ({type(exc).__name__}: {first_line(exc)}); "
            "the stack trains members through vmap, so write it from vmap-able ops (no .item() or data-dependent "
            "Python branches, no nn.GRU/nn.LSTM: use the built-in {type: gru|lstm} models)"
        ) from None
    finally:
        template.train(False)
