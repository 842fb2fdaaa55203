"""Candidates: the schedule × training budget × base LR combinations a backtest compares.

``training.epochs`` and ``training.lr`` take one value or a list. Every schedule (after its own
parameter grids expand) is combined with every listed budget and every listed LR, in that order:
schedule-major, then epochs, then LR. Each combination is one **candidate**, the unit that the
frames (their ``schedule`` column), the ranking, the selection and the MLflow nested runs are
keyed by. Its label is the schedule's own label, followed by the axes that vary:

- one budget and one LR (plain numbers, or lists of one): ``cosine`` (as without axes);
- several budgets: ``cosine@e80``; several LRs: ``cosine@lr1e-3``; both: ``cosine@e80,lr1e-3``.

LRs are written in short scientific notation (``3e-4``, ``1e-3``, ``2.5e-3``), with as many
digits as they were given (up to 6 significant ones), so distinct LRs get distinct labels.
No torch here: the config, the trainer and the reports all use this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from harness.errors import HarnessError
from harness.schedules.schedule import Schedule, get_schedule


@dataclass(frozen=True)
class Candidate:
    """One schedule at one training budget and one base LR.

    Attributes
    ----------
    schedule : the validated schedule.
    epochs : the training budget (epochs every member of this candidate trains, at most).
    lr : the base LR the schedule multiplies.
    label : the candidate's label (see the module docstring).
    spec : the schedule's spec as given (a name or a mapping), for configs built from it.
    """

    schedule: Schedule
    epochs: int
    lr: float
    label: str
    spec: Any = None

    def tags(self) -> dict[str, str]:
        """What a candidate's MLflow run is tagged with: its budget, LR and schedule label."""
        return {"epochs": str(self.epochs), "lr": f"{self.lr:g}", "base_schedule": self.schedule.label}


def as_list(value: Any) -> list[Any]:
    """One value or a list of values, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def lr_text(lr: float) -> str:
    """A base LR in short scientific notation: ``0.001`` -> ``1e-3``, ``0.00025`` -> ``2.5e-4``."""
    mantissa, exponent = f"{float(lr):.5e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def candidate_label(schedule_label: str, epochs: int, lr: float, *, show_epochs: bool, show_lr: bool) -> str:
    """The candidate's label: the schedule label, then ``@e<epochs>`` and/or ``lr<lr>`` when shown."""
    axes = ([f"e{int(epochs)}"] if show_epochs else []) + ([f"lr{lr_text(lr)}"] if show_lr else [])
    return f"{schedule_label}@{','.join(axes)}" if axes else schedule_label


def check_epochs(epochs: Any, name: str = "epochs") -> list[int]:
    """The budgets as a list of whole numbers > 0, each listed once."""
    values = as_list(epochs)
    if not values:
        raise HarnessError(f"{name}: an empty list; give a number of epochs or a list of them, e.g. [20, 80]")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
            raise HarnessError(f"{name}: must be a whole number > 0 (or a list of them), got {value!r}")
    _once(name, [int(v) for v in values])
    return [int(v) for v in values]


def check_lrs(lr: Any, name: str = "lr") -> list[float]:
    """The base LRs as a list of finite numbers > 0, each listed once."""
    values = as_list(lr)
    if not values:
        raise HarnessError(f"{name}: an empty list; give a base LR or a list of them, e.g. [3e-4, 1e-3]")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
            raise HarnessError(f"{name}: must be > 0 (or a list of such numbers), got {value!r}")
    _once(name, [lr_text(v) for v in values])
    return [float(v) for v in values]


def _once(name: str, values: list[Any]) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise HarnessError(f"{name}: lists {repeated[0]} twice; give each value once")


def candidates(schedules: Sequence[str | Mapping[str, Any] | Schedule] | str | Mapping[str, Any],
               epochs: int | Sequence[int], lr: float | Sequence[float]) -> list[Candidate]:
    """Every schedule × budget × LR, schedule-major (then epochs, then LR), labelled."""
    specs = [schedules] if isinstance(schedules, (str, Mapping, Schedule)) else list(schedules)
    budgets, rates = check_epochs(epochs), check_lrs(lr)
    show_epochs, show_lr = len(budgets) > 1, len(rates) > 1
    out = []
    for spec in specs:
        schedule = get_schedule(spec)
        for budget in budgets:
            for rate in rates:
                label = candidate_label(schedule.label, budget, rate, show_epochs=show_epochs, show_lr=show_lr)
                out.append(Candidate(schedule, budget, rate, label, spec))
    return out


def find(candidates_: Sequence[Candidate], label: str) -> Candidate:
    """The candidate labelled ``label``; a one-line error naming the valid labels otherwise."""
    for candidate in candidates_:
        if candidate.label == label:
            return candidate
    from harness.errors import unknown_name

    raise unknown_name("schedule", label, [c.label for c in candidates_])  # the frames call candidates schedules
