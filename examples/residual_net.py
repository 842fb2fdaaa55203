"""A user network: a residual MLP with layer norm, trained by the harness like its built-in models.

The config names it as ``model: {type: "examples.residual_net:ResidualMLP", params: {...}}``; the
harness builds every member as ``ResidualMLP(n_features=..., n_outputs=..., **params)`` (the folder
you run from is importable, then ``PYTHONPATH``) and trains all schedules x seeds of a window in one
stack through ``torch.func.vmap``. What that asks of a module:

- ``__init__`` takes ``n_features`` and ``n_outputs`` (the harness passes them from the data) and
  draws nothing but the initial values from torch's RNG, so every seed builds the same parameters;
- ``forward`` maps ``[n, n_features]`` to ``[n]`` for one output (``[n, n_outputs]`` otherwise) with
  vmap-able ops: no ``.item()``, no Python branches on tensor values, no ``nn.GRU``/``nn.LSTM``,
  and no buffers the training forward updates (BatchNorm's running statistics; LayerNorm is fine).

Run it with ``harness run examples/residual_net.yaml`` from the repository root.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + W2 act(W1 LayerNorm(x))`` (pre-norm), with optional dropout."""

    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(self.dropout(torch.nn.functional.silu(self.inner(self.norm(x)))))


class ResidualMLP(nn.Module):
    """An input layer to ``width``, ``blocks`` residual blocks, a linear head."""

    def __init__(self, n_features: int, n_outputs: int = 1, width: int = 32, blocks: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.embed = nn.Linear(n_features, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.embed(x)))
        return out.squeeze(-1) if self.n_outputs == 1 else out
