"""Any ``torch.optim.lr_scheduler`` class as a schedule: its table comes from stepping it.

The class steps a throwaway SGD optimizer (lr 1.0, momentum 0.9, so momentum-cycling
schedulers work), so LR-valued kwargs (``eta_min``, CyclicLR's ``base_lr``/``max_lr``,
OneCycleLR's ``max_lr``) are multipliers of the base LR. A class that takes ``total_steps`` or
``T_max`` gets the run's length when the kwargs give neither it nor ``epochs``. torch is
imported only here, and only when such a schedule is used.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

import numpy as np

from harness.errors import HarnessError, did_you_mean

SET_BY_HARNESS = ("optimizer", "last_epoch")
RUN_LENGTH_ARGS = ("total_steps", "T_max")
PROBE_STEPS = 100  # length used to try the kwargs when the schedule is named, before any run


def is_class_path(name: str) -> bool:
    return "." in name


def check(path: str, kwargs: dict[str, Any]) -> None:
    """Fail now, with one line, on a bad class path or bad kwargs (by building it once)."""
    cls = load_class(path)
    _check_names(path, cls, kwargs)
    try:
        _build(cls, kwargs, PROBE_STEPS)
    except HarnessError as exc:
        raise HarnessError(f"schedule '{path}': {exc}") from None


def table(path: str, kwargs: dict[str, Any], total_steps: int) -> np.ndarray:
    """Multipliers at steps ``0..total_steps-1``: the optimizer's lr before each ``step()``."""
    optimizer, scheduler = _build(load_class(path), kwargs, total_steps)
    lrs = np.empty(total_steps)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(total_steps):
                lrs[i] = float(optimizer.param_groups[0]["lr"])
                if i < total_steps - 1:
                    optimizer.step()
                    scheduler.step()
    except Exception as exc:  # whatever a user's scheduler raises, the user gets one line
        raise HarnessError(f"stepping it failed at step {i}: {_one_line(exc)}") from None
    return lrs


def load_class(path: str) -> type:
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HarnessError(
            f"schedule '{path}': cannot import {module_name} ({_one_line(exc)}); "
            "give a class path such as torch.optim.lr_scheduler.StepLR"
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        valid = [n for n, obj in vars(module).items() if _is_scheduler(obj, LRScheduler) and n[0] != "_"]
        raise HarnessError(
            f"schedule '{path}': {module_name} has no class '{attr}'{did_you_mean(attr, valid)}"
        )
    if not _is_scheduler(cls, LRScheduler):
        raise HarnessError(f"schedule '{path}': not a torch.optim.lr_scheduler.LRScheduler class")
    if issubclass(cls, ReduceLROnPlateau):
        raise HarnessError(
            f"schedule '{path}': it follows validation loss, not the step; use the 'plateau' schedule"
        )
    return cls


def _is_scheduler(obj: Any, base: type) -> bool:
    return isinstance(obj, type) and issubclass(obj, base)


def _check_names(path: str, cls: type, kwargs: dict[str, Any]) -> None:
    for key in SET_BY_HARNESS:
        if key in kwargs:
            raise HarnessError(f"schedule '{path}': {key} is set by the harness; remove it")
    signature = inspect.signature(cls)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    valid = [name for name in signature.parameters if name not in SET_BY_HARNESS]
    for key in kwargs:
        if key not in valid:
            raise HarnessError(
                f"schedule '{path}': unknown parameter '{key}'{did_you_mean(key, valid)}; "
                f"valid: {', '.join(valid)}"
            )


def _build(cls: type, kwargs: dict[str, Any], total_steps: int) -> tuple[Any, Any]:
    import torch

    args = dict(kwargs)
    accepted = inspect.signature(cls).parameters
    for key in RUN_LENGTH_ARGS:
        if key in accepted and key not in args and "epochs" not in args:
            args[key] = total_steps
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optimizer, cls(optimizer, **args)
    except Exception as exc:  # torch raises TypeError/ValueError/KeyError for bad kwargs
        raise HarnessError(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
