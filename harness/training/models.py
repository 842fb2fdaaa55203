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
