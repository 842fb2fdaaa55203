"""The checks of what :func:`harness.training.train_windows` is given: settings, schedules, data.

Each mistake raises one line saying what to change (:class:`harness.errors.HarnessError`, or
:class:`harness.errors.DataError` for the data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness.errors import DataError, HarnessError, unknown_name
from harness.schedules import get_schedule
from harness.training.optimizers import OPTIMIZERS

if TYPE_CHECKING:
    from harness.training.loop import WindowData


def _schedules(schedules: Sequence[Any], optimizer: str) -> list[Any]:
    if isinstance(schedules, (str, Mapping)):
        schedules = [schedules]
    if not schedules:
        raise HarnessError("schedules: empty; give at least one schedule, e.g. ['constant']")
    specs = [get_schedule(spec) for spec in schedules]
    labels = [spec.label for spec in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise HarnessError(f"schedules: '{label}' is listed twice; give each schedule once (seeds repeat it)")
    if optimizer != "adamw" and any(spec.kind == "schedule_free" for spec in specs):
        raise HarnessError("schedules: schedule_free is an AdamW variant; use optimizer 'adamw'")
    return specs


def _check_settings(**settings: Any) -> None:
    for name in ("seeds", "epochs", "batch_size", "patience"):
        value = settings[name]
        if value is None and name == "patience":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            none = " or None" if name == "patience" else ""
            raise HarnessError(f"{name}: must be a whole number > 0{none}, got {value!r}")
    if not settings["lr"] > 0 or not math.isfinite(settings["lr"]):
        raise HarnessError(f"lr: must be > 0, got {settings['lr']!r}")
    if settings["optimizer"] not in OPTIMIZERS:
        raise unknown_name("optimizer", settings["optimizer"], OPTIMIZERS)
    if not settings["weight_decay"] >= 0:
        raise HarnessError(f"weight_decay: must be >= 0, got {settings['weight_decay']!r}")
    if not 0 <= settings["momentum"] < 1:
        raise HarnessError(f"momentum: must be in [0, 1), got {settings['momentum']!r}")
    if settings["grad_clip"] is not None and not settings["grad_clip"] > 0:
        raise HarnessError(f"grad_clip: must be > 0 or None, got {settings['grad_clip']!r}")


def _shapes(X_train: Any, y_train: Any, X_val: Any, y_val: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the data's shapes and return those of ``X_train`` and ``y_train``."""
    if (X_val is None) != (y_val is None):
        raise DataError("X_val and y_val: give both for validation, or neither")
    pairs = [("train", X_train, y_train)] + ([] if X_val is None else [("val", X_val, y_val)])
    shapes = []
    for name, X, y in pairs:
        x_shape, y_shape = tuple(np.shape(X)), tuple(np.shape(y))
        if len(x_shape) < 2 or len(y_shape) not in (1, 2):
            raise DataError(f"X_{name}, y_{name}: expected X [n, features] (or [n, seq, features]) and y [n] "
                            f"or [n, outputs], got {list(x_shape)} and {list(y_shape)}")
        if x_shape[0] != y_shape[0] or x_shape[0] == 0:
            raise DataError(f"X_{name}, y_{name}: {x_shape[0]} rows of features but {y_shape[0]} targets; "
                            "give one target per row (and at least one row)")
        shapes.append((x_shape, y_shape))
    if len(shapes) == 2 and (shapes[0][0][1:] != shapes[1][0][1:] or shapes[0][1][1:] != shapes[1][1][1:]):
        raise DataError(f"X_val, y_val: shapes {list(shapes[1][0])}, {list(shapes[1][1])} do not match the "
                        f"training data's {list(shapes[0][0])}, {list(shapes[0][1])} beyond the row count")
    return shapes[0]


def _window_shapes(windows: Sequence[WindowData]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check every window's data; all windows must agree beyond the row count."""
    shapes = [_shapes(w.X_train, w.y_train, w.X_val, w.y_val) for w in windows]
    x_first, y_first = shapes[0]
    for w, (x_shape, y_shape) in enumerate(shapes):
        if x_shape[1:] != x_first[1:] or y_shape[1:] != y_first[1:]:
            raise DataError(f"window {w}: X_train, y_train shapes {list(x_shape)}, {list(y_shape)} do not match "
                            f"window 0's {list(x_first)}, {list(y_first)} beyond the row count; give every "
                            "window the same features and targets")
    return x_first, y_first


def _tensor(name: str, values: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().to(device=device, dtype=dtype)
    else:
        array = np.asarray(values, dtype=np.float64)
        array = array if array.flags.writeable else array.copy()  # torch warns on read-only arrays
        tensor = torch.as_tensor(array, dtype=dtype, device=device)
    if not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{name}: contains NaN or inf values; drop or fill them before training")
    return tensor
