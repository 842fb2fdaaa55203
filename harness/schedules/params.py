"""Schedule parameters: declaration, validation, resolution of lengths, and labels.

A check takes the raw config value and returns the normalised value, or raises ``ValueError``
with the reason ("must be > 0, got 0"); the caller prefixes the schedule and parameter name.

Lengths (step_size, milestones, period, warmup, decay_fraction...) are a number in (0, 1), a
fraction of the run's total steps T, or a whole number >= 1, a count of steps. A fraction
resolves to ``floor(fraction * T + 0.5)`` steps (round half up), at least 1 step (warmup: at
least 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from harness.errors import did_you_mean

Check = Callable[[Any], Any]


@dataclass(frozen=True)
class Param:
    """One declared parameter: its default, its check, and whether it is a length."""

    default: Any
    check: Check
    length: bool = False  # resolved against the total steps before the curve sees it


def number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def positive(value: Any) -> float:
    value = number(value)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return float(value)


def at_least(low: float) -> Check:
    def check(value: Any) -> float:
        value = number(value)
        if value < low:
            raise ValueError(f"must be >= {low:g}, got {value!r}")
        return float(value)

    return check


def interval(low: float, high: float, *, closed_low: bool, closed_high: bool) -> Check:
    """Check for a float in an interval; brackets in the message say which ends are allowed."""
    text = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"

    def check(value: Any) -> float:
        value = number(value)
        above = value >= low if closed_low else value > low
        below = value <= high if closed_high else value < high
        if not (above and below):
            raise ValueError(f"must be in {text}, got {value!r}")
        return float(value)

    return check


def whole(low: int = 0) -> Check:
    def check(value: Any) -> int:
        value = number(value)
        if value != int(value) or value < low:
            raise ValueError(f"must be a whole number >= {low}, got {value!r}")
        return int(value)

    return check


def choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(
                f"must be one of {', '.join(options)}, got {value!r}{did_you_mean(str(value), options)}"
            )
        return str(value)

    return check


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def optional(check: Check) -> Check:
    def maybe(value: Any) -> Any:
        return None if value is None else check(value)

    return maybe


def length(value: Any, *, allow_zero: bool = False) -> float | int:
    """A fraction of T in (0, 1) (returned as float) or a count of steps >= 1 (returned as int)."""
    value = number(value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    if 0 < value < 1:
        return float(value)
    if value != int(value):
        raise ValueError(
            f"must be a fraction of the run in (0, 1) or a whole number of steps, got {value!r}"
        )
    return int(value)


def warmup_length(value: Any) -> float | int:
    return length(value, allow_zero=True)


def increasing_lengths(value: Any) -> list[float | int]:
    """A non-empty, strictly increasing list of lengths, all fractions or all step counts."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"must be a non-empty list of lengths, got {value!r}")
    items = [length(item) for item in value]
    if len({isinstance(item, int) for item in items}) > 1:
        raise ValueError(f"must be all fractions of the run or all step counts, got {list(value)!r}")
    if any(later <= earlier for earlier, later in zip(items, items[1:], strict=False)):
        raise ValueError(f"must be strictly increasing, got {list(value)!r}")
    return items


def resolve_length(value: float | int, total_steps: int, minimum: int = 1) -> int:
    """Steps of a validated length over a run of ``total_steps`` steps."""
    if isinstance(value, Integral):
        return int(value)
    return max(minimum, math.floor(value * total_steps + 0.5))


def resolve_lengths(value: Any, total_steps: int) -> Any:
    if isinstance(value, list):
        return [resolve_length(item, total_steps) for item in value]
    return None if value is None else resolve_length(value, total_steps)


def format_value(value: Any) -> str:
    """Shortest text that round-trips, for labels and tables (``0.33``, ``[0.5, 0.75]``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def make_label(name: str, params: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``name`` when every parameter has its default, else ``name(p=v, ...)`` for the others."""
    changed = [f"{key}={format_value(val)}" for key, val in params.items() if val != defaults.get(key)]
    return f"{name}({', '.join(changed)})" if changed else name
