"""Parameter grids in schedule specs: a list where the schedule expects one value expands.

``{name: cosine, min_lr_ratio: [0, 0.01, 0.1]}`` becomes three specs, one per value; several
listed parameters expand to their Cartesian product. A parameter whose own value is a list
(``multistep``'s ``milestones``) expands only when given a list of lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from harness.schedules.catalogue import SCHEDULES


def expand_grid(specs: list[Any]) -> list[Any]:
    """Every spec of ``specs``, with grid parameters expanded in place (order kept)."""
    out: list[Any] = []
    for spec in specs:
        out.extend(_expand(spec))
    return out


def _expand(spec: Any) -> list[Any]:
    if not isinstance(spec, Mapping) or spec.get("name") not in SCHEDULES:
        return [spec]
    params = {**dict(spec.get("params") or {}), **{k: v for k, v in spec.items() if k not in ("name", "params")}}
    declared = SCHEDULES[spec["name"]].params
    axes = {key: value for key, value in params.items() if _is_axis(value, declared.get(key))}
    if not axes:
        return [spec]
    fixed = {key: value for key, value in params.items() if key not in axes}
    return [
        {"name": spec["name"], **fixed, **dict(zip(axes, values))}
        for values in itertools.product(*axes.values())
    ]


def _is_axis(value: Any, param: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    default = getattr(param, "default", None)
    if isinstance(default, list):  # the parameter itself is a list: a grid is a list of lists
        return all(isinstance(item, list) for item in value)
    return True
