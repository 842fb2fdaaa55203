"""Batched training of members: all schedules × seeds, of one window or many, in one pass (design section 6).

The public API (imported lazily, so that ``import harness.training`` and
``from harness.training.budget import STACK_MEMORY_BUDGET`` do not import torch):

- :func:`train`, :func:`train_windows`, :class:`TrainResult`, :class:`WindowData`, :class:`Inputs`
  (:mod:`harness.training.loop`: the training loop and its per-member bookkeeping; ``Inputs`` is
  what :func:`train` remembers of its data: feature shape, DataFrame columns, ``scale=True``);
- :func:`training_bytes`, :func:`reuse_freed_memory`, :data:`STACK_MEMORY_BUDGET`
  (:mod:`harness.training.budget`: the memory model);
- :func:`make_model_factory`, :func:`build_member`, :class:`ModelFactory`, :class:`MLP`,
  :class:`RecurrentNet`, ``MODEL_TYPES``, ``MODEL_KEYS``, ``ACTIVATIONS``
  (:mod:`harness.training.models`);
- :class:`Stack`, :class:`GroupStreams` (:mod:`harness.training.stack`: the stacked members);
- :class:`MemberBatches` (:mod:`harness.training.batches`: the rows and batches members read);
- :class:`BatchedAdamW`, :class:`BatchedSGD`, :class:`ScheduleFreeMembers`, :func:`make_optimizer`,
  ``OPTIMIZERS`` (:mod:`harness.training.optimizers`).

:mod:`harness.training.checks` holds the argument checks of :func:`train_windows`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.lazy import lazy_exports

_LAZY = {
    "train": "loop",
    "train_windows": "loop",
    "TrainResult": "loop",
    "WindowData": "loop",
    "Inputs": "loop",
    "DIVERGENCE_FACTOR": "loop",
    "training_bytes": "budget",
    "reuse_freed_memory": "budget",
    "STACK_MEMORY_BUDGET": "budget",
    "make_model_factory": "models",
    "build_member": "models",
    "ModelFactory": "models",
    "MLP": "models",
    "RecurrentNet": "models",
    "MODEL_TYPES": "models",
    "MODEL_KEYS": "models",
    "ACTIVATIONS": "models",
    "Stack": "stack",
    "GroupStreams": "stack",
    "MemberBatches": "batches",
    "BatchedAdamW": "optimizers",
    "BatchedSGD": "optimizers",
    "BatchedOptimizer": "optimizers",
    "ScheduleFreeMembers": "optimizers",
    "make_optimizer": "optimizers",
    "OPTIMIZERS": "optimizers",
}

if TYPE_CHECKING:
    from harness.training.batches import MemberBatches
    from harness.training.budget import (
        STACK_MEMORY_BUDGET,
        reuse_freed_memory,
        training_bytes,
    )
    from harness.training.loop import (
        DIVERGENCE_FACTOR,
        Inputs,
        TrainResult,
        WindowData,
        train,
        train_windows,
    )
    from harness.training.models import (
        ACTIVATIONS,
        MLP,
        MODEL_KEYS,
        MODEL_TYPES,
        ModelFactory,
        RecurrentNet,
        build_member,
        make_model_factory,
    )
    from harness.training.optimizers import (
        OPTIMIZERS,
        BatchedAdamW,
        BatchedOptimizer,
        BatchedSGD,
        ScheduleFreeMembers,
        make_optimizer,
    )
    from harness.training.stack import GroupStreams, Stack


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [  # the names of _LAZY
    "train", "train_windows", "TrainResult", "WindowData", "Inputs", "DIVERGENCE_FACTOR", "training_bytes",
    "reuse_freed_memory", "STACK_MEMORY_BUDGET", "make_model_factory", "build_member", "ModelFactory", "MLP",
    "RecurrentNet", "MODEL_TYPES", "MODEL_KEYS", "ACTIVATIONS", "Stack", "GroupStreams", "MemberBatches",
    "BatchedAdamW", "BatchedSGD", "BatchedOptimizer", "ScheduleFreeMembers", "make_optimizer", "OPTIMIZERS",
]
