"""Config specs to :class:`Schedule` values, and schedules to LR tables (per run, per window)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

from harness.errors import HarnessError, did_you_mean, unknown_name
from harness.schedules import curves as C
from harness.schedules import params as P
from harness.schedules import torch_path
from harness.schedules.catalogue import SCHEDULES, Entry
from harness.schedules.plateau import PLATEAU_DEFAULTS, PlateauState

BOUNDARIES = ("fresh", "warm_restart", "warm_continue")
PLATEAU_KEYS = tuple(PLATEAU_DEFAULTS)


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: plain data (picklable), computed into tables on demand.

    Attributes
    ----------
    name : catalogue name, or a ``torch.optim.lr_scheduler`` class path.
    params : validated parameters with defaults filled in (lengths as given: fraction or count).
    label : unique display label: ``name`` when every parameter has its default, else
        ``name(p=v, ...)`` listing the others, e.g. ``step(gamma=0.5)``.
    kind : ``"table"`` (a fixed curve), ``"plateau"`` (follows validation loss) or
        ``"schedule_free"`` (the optimizer replaces the schedule).
    """

    name: str
    params: dict[str, Any] = field(hash=False)
    label: str
    kind: str

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup length in steps for a run of ``total_steps`` steps (0 when there is none)."""
        return P.resolve_length(self.params.get("warmup", 0), _total(total_steps), minimum=0)

    def table(self, total_steps: int, base_lr: float = 1.0) -> np.ndarray:
        """LR at each optimizer step ``t = 0..total_steps-1``: float64, shape ``[total_steps]``."""
        if self.kind != "table":
            raise HarnessError(
                f"schedule '{self.label}' has no fixed LR table ({self.kind}); "
                "use nominal_table() for its warmup ramp"
                + (" and plateau_state() for its multipliers" if self.kind == "plateau" else "")
            )
        total = _total(total_steps)
        curve = C.with_warmup(self._curve(total), self.warmup_steps(total))
        try:
            multipliers = curve(np.arange(total, dtype=np.int64), total)
        except HarnessError as exc:
            raise HarnessError(f"schedule '{self.label}': {exc}") from None
        return np.asarray(multipliers, dtype=np.float64) * _base_lr(base_lr)

    def nominal_table(self, total_steps: int, base_lr: float = 1.0) -> np.ndarray:
        """:meth:`table` for table kinds; for the others, the warmup ramp then the base LR.

        plateau: the ramp is :func:`~harness.schedules.curves.with_warmup`'s, and the LR a member
        uses is ``nominal_table[t] * PlateauState multiplier``. schedule_free: the ramp is
        ``AdamWScheduleFree``'s own, ``min(1, (t + 1) / warmup_steps)``.
        """
        if self.kind == "table":
            return self.table(total_steps, base_lr)
        total = _total(total_steps)
        steps, warmup = np.arange(total, dtype=np.int64), self.warmup_steps(total)
        if self.kind == "schedule_free":
            ramp = np.minimum(1.0, (steps + 1) / warmup) if warmup else np.ones(total)
        else:
            ramp = C.with_warmup(functools.partial(C.constant, p={}), warmup)(steps, total)
        return ramp * _base_lr(base_lr)

    def plateau_state(self, n_members: int) -> PlateauState:
        """A fresh :class:`PlateauState` with this schedule's settings (plateau only)."""
        if self.kind != "plateau":
            raise HarnessError(f"schedule '{self.label}' is not a plateau schedule")
        return PlateauState(n_members, **{key: self.params[key] for key in PLATEAU_KEYS})

    def _curve(self, total_steps: int) -> C.Curve:
        if torch_path.is_class_path(self.name):
            kwargs = {key: value for key, value in self.params.items() if key != "warmup"}
            return lambda steps, span: torch_path.table(self.name, kwargs, span)[steps]
        entry = SCHEDULES[self.name]
        resolved = {
            key: P.resolve_lengths(value, total_steps) if entry.params[key].length else value
            for key, value in self.params.items()
        }
        return functools.partial(entry.curve, p=resolved)


def get_schedule(spec: str | Mapping[str, Any] | Schedule) -> Schedule:
    """Validate a config spec: ``"cosine"`` or ``{"name": "step", "step_size": 0.33, "gamma": 0.1}``.

    Parameters may also sit under a ``params`` key. Unknown names get "did you mean"; bad
    parameters raise a one-line :class:`HarnessError` naming the schedule and the parameter.
    """
    if isinstance(spec, Schedule):
        return spec
    name, given = _parse(spec)
    if torch_path.is_class_path(name):
        return _class_path_schedule(name, given)
    entry = SCHEDULES.get(name)
    if entry is None:
        raise unknown_name("schedule", name, SCHEDULES)
    params = _validate(name, entry, given)
    return Schedule(name, params, P.make_label(name, params, entry.defaults), entry.kind)


def lr_table(spec: str | Mapping[str, Any] | Schedule, total_steps: int, base_lr: float = 1.0) -> np.ndarray:
    """LRs a member uses at steps ``0..total_steps-1`` (float64, shape ``[total_steps]``)."""
    return get_schedule(spec).table(total_steps, base_lr)


def window_lr_table(
    spec: str | Mapping[str, Any] | Schedule,
    steps_per_window: int | Sequence[int],
    window_index: int,
    boundary: str,
    n_windows: int,
    base_lr: float = 1.0,
) -> np.ndarray:
    """LRs for window ``window_index`` under a boundary policy (design section 5).

    ``fresh`` and ``warm_restart``: the schedule restarts at t=0 in every window.
    ``warm_continue``: one schedule spans every window's steps (fractions, warmup included,
    are of that whole span) and window k gets its slice ``[k*S, (k+1)*S)``.
    ``steps_per_window`` is one count for all windows, or one per window (expanding windows
    grow); the result has that window's length. Adaptive kinds (plateau, schedule_free) span the
    windows with their nominal curve (:meth:`Schedule.nominal_table`: the warmup ramp once, in
    window 0, then the base LR); the backtest's ``warm_continue`` members use exactly this table.
    """
    if boundary not in BOUNDARIES:
        raise unknown_name("boundary policy", boundary, BOUNDARIES)
    n_windows = _whole("n_windows", n_windows, 1)
    sizes = _window_sizes(steps_per_window, n_windows)
    if not isinstance(window_index, Integral) or not 0 <= window_index < n_windows:
        raise HarnessError(f"window_index must be in [0, {n_windows}), got {window_index!r}")
    schedule = get_schedule(spec)
    if boundary != "warm_continue":
        return schedule.table(sizes[window_index], base_lr)
    start = sum(sizes[:window_index])
    return schedule.nominal_table(sum(sizes), base_lr)[start:start + sizes[window_index]]


def _parse(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping):
        raise HarnessError(f"a schedule is a name or a mapping with a 'name' key, got {spec!r}")
    given = dict(spec)
    name = given.pop("name", None)
    if not isinstance(name, str) or not name:
        raise HarnessError(f"schedule {dict(spec)!r} needs a 'name' key, e.g. {{name: cosine}}")
    nested = given.pop("params", None)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise HarnessError(f"schedule '{name}': params must be a mapping, got {nested!r}")
        clash = sorted(set(nested) & set(given))
        if clash:
            raise HarnessError(f"schedule '{name}': {clash[0]} given twice (inside and outside params)")
        given.update(nested)
    return name, given


def _validate(name: str, entry: Entry, given: dict[str, Any]) -> dict[str, Any]:
    for key in given:
        if key not in entry.params:
            valid = list(entry.params)
            raise HarnessError(
                f"schedule '{name}': unknown parameter '{key}'{did_you_mean(key, valid)}; "
                f"valid: {', '.join(valid)}"
            )
    params = {
        key: _check(name, key, param.check, given[key]) if key in given else copy.deepcopy(param.default)
        for key, param in entry.params.items()
    }
    if entry.cross_check is not None:
        try:
            entry.cross_check(params, set(given))
        except ValueError as exc:
            raise HarnessError(f"schedule '{name}': {exc}") from None
    return params


def _check(name: str, key: str, check: P.Check, value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise HarnessError(f"schedule '{name}': {key} {exc}") from None


def _class_path_schedule(name: str, given: dict[str, Any]) -> Schedule:
    kwargs = dict(given)
    warmup = _check(name, "warmup", P.warmup_length, kwargs.pop("warmup", 0))
    torch_path.check(name, kwargs)
    params = {**kwargs, "warmup": warmup}
    return Schedule(name, params, P.make_label(name, params, {"warmup": 0}), "table")


def _whole(what: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise HarnessError(f"{what} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _total(total_steps: Any) -> int:
    return _whole("total_steps", total_steps, 1)


def _window_sizes(steps_per_window: int | Sequence[int], n_windows: int) -> list[int]:
    if isinstance(steps_per_window, Integral):
        return [_whole("steps_per_window", steps_per_window, 1)] * n_windows
    sizes = [_whole("steps_per_window", size, 1) for size in steps_per_window]
    if len(sizes) != n_windows:
        raise HarnessError(f"steps_per_window lists {len(sizes)} windows, n_windows is {n_windows}")
    return sizes


def _base_lr(base_lr: Any) -> float:
    if isinstance(base_lr, bool) or not isinstance(base_lr, Real) or not np.isfinite(base_lr) or base_lr <= 0:
        raise HarnessError(f"base_lr must be a finite number > 0, got {base_lr!r}")
    return float(base_lr)
