"""The memory model of training: what a stack of members needs, and the budget one stack may take.

Importing this module does not import torch (:data:`STACK_MEMORY_BUDGET` is read when a backtest
is planned); :func:`training_bytes` imports it when called.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# Training memory (bytes) one chunk of independent windows may take (harness.engine.chunk_windows).
# On a CPU a bigger stack stops paying off once a step's tensors outgrow the caches and the
# allocator's reuse range (32 MiB, reuse_freed_memory below): 8 to 64 windows of the
# default config train equally fast per window, all 202 in one stack 2-5x slower. 512 MiB is ~60.
STACK_MEMORY_BUDGET = 512 * 2**20


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (once per process; True if it did).

    Every training step allocates and frees activation tensors of ~1 MB. By default glibc hands
    such blocks back to the kernel, so each step faults in fresh (zeroed, often huge) pages, which
    cost more than the arithmetic on them (~30% of a step for a 60-member stack). Raising the
    mmap and trim thresholds keeps that memory in the process: its peak resident size is held
    instead of returned. Nothing happens outside Linux/glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**30))


def training_bytes(model: Mapping[str, Any] | Callable[[], torch.nn.Module] | None,
                   n_features: int | Sequence[int], batch_size: int, rows: int, members: int,
                   n_outputs: int = 1) -> int:
    """Estimated peak memory (bytes) of training ``members`` members of one window on ``rows`` rows.

    Per member: its parameters ~10 times (weights, gradient, two optimizer moments, best weights
    and the optimizer step's temporaries), one batch's saved activations twice (forward and their
    gradients, measured on one member) and its epoch order (int64 positions); plus the window's
    rows. What a stack of many windows needs is the sum over its windows. ``n_features``: the
    features of a row, or a row's shape (``(seq, features)`` for gru/lstm).
    """
    import torch

    from harness.training.models import make_model_factory

    row_shape = (int(n_features),) if isinstance(n_features, (int, np.integer)) else tuple(n_features)
    module = make_model_factory(model, n_features=row_shape[-1], n_outputs=n_outputs)()
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    x = torch.zeros(batch_size, *row_shape, dtype=next(module.parameters()).dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x).square().sum()
    padded_rows = -(-rows // batch_size) * batch_size
    per_member = 10 * parameters + 2 * (saved[0] + x.numel() * x.element_size()) + 3 * 8 * padded_rows
    return members * per_member + rows * (math.prod(row_shape) + n_outputs) * x.element_size()
