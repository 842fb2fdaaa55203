"""The hand-written plain torch loops the batched trainer is measured against: per member,
``torch.manual_seed(seed)``, the model, ``AdamW`` + ``LambdaLR`` over the schedule's LR table, and a
``DataLoader`` shuffled by a generator seeded with the member's seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from harness.bench.workloads import LR, WINDOW_SCHEDULES
from harness.schedules import lr_table
from harness.training import make_model_factory


def _fit_plain(net: torch.nn.Module, dataset: TensorDataset, table: np.ndarray, epochs: int, batch_size: int,
               seed: int) -> None:
    """Train ``net`` as one writes it by hand: ``AdamW`` (no weight decay; torch's default is 0.01),
    the LR ``table`` through ``LambdaLR``, a ``DataLoader`` shuffled by a generator seeded ``seed``."""
    total = len(table)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: table[min(t, total - 1)] / LR)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.mse_loss(net(xb), yb).backward()
            optimizer.step()
            scheduler.step()


def _plain(X: np.ndarray, y: np.ndarray, model: dict, schedules: Sequence[Any], seeds: int, epochs: int,
           batch_size: int, seed: int) -> np.ndarray:
    """The per-member loop the batched trainer replaces, over the same members in the same order."""
    factory = make_model_factory(model, X.shape[1])
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    total = epochs * math.ceil(len(X) / batch_size)
    weights = []
    for schedule in schedules:
        table = lr_table(schedule, total, LR)
        for member_seed in range(seed, seed + seeds):
            torch.manual_seed(member_seed)
            net = factory()
            _fit_plain(net, dataset, table, epochs, batch_size, member_seed)
            weights.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    return torch.stack(weights).numpy()


def _plain_windows(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], model: dict, seeds: int,
                   epochs: int, batch_size: int, seed: int) -> np.ndarray:
    """The per-member loop over every window: ``[windows, members, test rows]`` predictions."""
    out = []
    for X, y, X_test in windows:
        members = [_plain_member(X, y, X_test, model, spec, member_seed, epochs, batch_size)
                   for spec in WINDOW_SCHEDULES for member_seed in range(seed, seed + seeds)]
        out.append(np.stack(members))
    return np.stack(out)


def _plain_member(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, model: dict, schedule: Any, seed: int,
                  epochs: int, batch_size: int) -> np.ndarray:
    """One member trained as one would write it by hand; its test predictions."""
    torch.manual_seed(seed)
    net = make_model_factory(model, X.shape[1])()
    table = lr_table(schedule, epochs * math.ceil(len(X) / batch_size), LR)
    _fit_plain(net, TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), table, epochs, batch_size, seed)
    net.eval()
    with torch.no_grad():
        return net(torch.as_tensor(X_test)).numpy()
