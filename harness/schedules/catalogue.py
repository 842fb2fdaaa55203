"""The schedule registry: every name, its parameters with defaults, and the anchor it matches.

This dict is the one place a schedule's parameters are declared. Every entry also takes
``warmup`` (linear from 0, written once in :func:`~harness.schedules.curves.with_warmup`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.schedules import curves as C
from harness.schedules import params as P
from harness.schedules.plateau import PLATEAU_CHECKS, PLATEAU_DEFAULTS

CrossCheck = Callable[[dict[str, Any], set[str]], None]  # raises ValueError("param reason")


@dataclass(frozen=True)
class Entry:
    """A registry row. ``curve`` is None for the kinds that have no fixed table."""

    curve: C.CurveFn | None
    params: dict[str, P.Param]
    anchor: str
    description: str
    kind: str = "table"
    cross_check: CrossCheck | None = field(default=None)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: param.default for key, param in self.params.items()}


def _entry(
    curve: C.CurveFn | None,
    anchor: str,
    description: str,
    *,
    kind: str = "table",
    warmup: float = 0,
    cross_check: CrossCheck | None = None,
    **params: P.Param,
) -> Entry:
    params["warmup"] = P.Param(warmup, P.warmup_length, length=True)
    return Entry(curve, params, anchor, description, kind, cross_check)


def _length(default: Any, *, optional: bool = False) -> P.Param:
    return P.Param(default, P.optional(P.length) if optional else P.length, length=True)


def _value(default: Any, check: P.Check) -> P.Param:
    return P.Param(default, check)


DECAY = P.interval(0.0, 1.0, closed_low=False, closed_high=True)  # gamma-like factors
RATIO = P.interval(0.0, 1.0, closed_low=True, closed_high=True)
BELOW_ONE = P.interval(0.0, 1.0, closed_low=True, closed_high=False)
OPEN_UNIT = P.interval(0.0, 1.0, closed_low=False, closed_high=False)


def _gamma_or_final_ratio(params: dict[str, Any], given: set[str]) -> None:
    if {"gamma", "final_ratio"} <= given:
        raise ValueError("gamma and final_ratio both given; give one of them")
    if "gamma" in given:
        params["final_ratio"] = None  # the decay is set by gamma


def _half_life_needs_exp(params: dict[str, Any], given: set[str]) -> None:
    if "half_life" in given and params["decay"] != "exp":
        raise ValueError(f"half_life only applies to decay: exp, got decay: {params['decay']}")


def _gamma_needs_exp_range(params: dict[str, Any], given: set[str]) -> None:
    if "gamma" in given and params["mode"] != "exp_range":
        raise ValueError(f"gamma only applies to mode: exp_range, got mode: {params['mode']}")


SCHEDULES: dict[str, Entry] = {
    "constant": _entry(C.constant, "-", "the base LR throughout"),
    "step": _entry(
        C.step, "torch StepLR", "multiply by gamma every step_size steps",
        step_size=_length(0.33),
        gamma=_value(0.1, DECAY),
    ),
    "multistep": _entry(
        C.multistep, "torch MultiStepLR", "multiply by gamma at each milestone",
        milestones=P.Param([0.5, 0.75], P.increasing_lengths, length=True),
        gamma=_value(0.1, DECAY),
    ),
    "exponential": _entry(
        C.exponential, "torch ExponentialLR", "multiply by gamma every step (or reach final_ratio at T)",
        gamma=_value(None, P.optional(DECAY)),
        final_ratio=_value(0.01, P.optional(DECAY)),
        cross_check=_gamma_or_final_ratio,
    ),
    "inverse_time": _entry(
        C.inverse_time, "Keras InverseTimeDecay", "1 / (1 + decay_rate * t / decay_steps)",
        decay_rate=_value(1.0, P.positive),
        decay_steps=_length(0.1),
        staircase=_value(False, P.flag),
    ),
    "inverse_sqrt": _entry(
        C.inverse_sqrt, "transformers inverse_sqrt", "1 / sqrt((t + timescale) / timescale)",
        timescale=_length(0.1),
    ),
    "linear": _entry(
        C.linear, "torch LinearLR / PolynomialLR(power=1)", "straight line to end_ratio at T",
        end_ratio=_value(0.0, RATIO),
    ),
    "polynomial": _entry(
        C.polynomial, "torch PolynomialLR", "end + (1 - end) * (1 - t/T) ** power",
        power=_value(2.0, P.positive),
        end_ratio=_value(0.0, RATIO),
    ),
    "cosine": _entry(
        C.cosine, "torch CosineAnnealingLR (eta_min)", "half cosine from 1 to min_lr_ratio at T",
        min_lr_ratio=_value(0.0, RATIO),
    ),
    "cosine_restarts": _entry(
        C.cosine_restarts, "torch CosineAnnealingWarmRestarts, Keras CosineDecayRestarts",
        "cosine cycles (SGDR); cycle i lasts period * t_mult**i and peaks at m_mul**i",
        period=_length(0.25),
        t_mult=_value(1.0, P.at_least(1.0)),
        m_mul=_value(1.0, P.positive),
        min_lr_ratio=_value(0.0, RATIO),
    ),
    "cyclic": _entry(
        C.cyclic, "torch CyclicLR", "triangle waves between base_ratio and 1 (CLR)",
        base_ratio=_value(0.1, BELOW_ONE),
        step_size=_length(0.1),
        step_size_down=_length(None, optional=True),
        mode=_value("triangular", P.choice("triangular", "triangular2", "exp_range")),
        gamma=_value(1.0, DECAY),
        cross_check=_gamma_needs_exp_range,
    ),
    "onecycle": _entry(
        C.onecycle, "torch OneCycleLR", "1/div_factor up to 1 over pct_start, then down to 1/(div*final_div)",
        pct_start=_value(0.3, OPEN_UNIT),
        div_factor=_value(25.0, P.at_least(1.0)),
        final_div_factor=_value(1e4, P.at_least(1.0)),
        anneal=_value("cos", P.choice("cos", "linear")),
        three_phase=_value(False, P.flag),
    ),
    "wsd": _entry(
        C.wsd, "transformers warmup_stable_decay; MiniCPM exp",
        "warmup, hold at 1, cool down over the last decay_fraction",
        warmup=0.05,
        decay_fraction=_length(0.2),
        decay=_value("linear", P.choice("linear", "cosine", "1-sqrt", "exp")),
        half_life=_length(0.02),
        min_lr_ratio=_value(0.0, RATIO),
        cross_check=_half_life_needs_exp,
    ),
    "plateau": _entry(
        None, "torch ReduceLROnPlateau",
        "cut by factor after patience epochs without a better validation loss",
        kind="plateau",
        **{key: _value(default, PLATEAU_CHECKS[key]) for key, default in PLATEAU_DEFAULTS.items()},
    ),
    "schedule_free": _entry(
        None, "schedulefree AdamWScheduleFree", "no decay: iterate averaging (an optimizer, not a curve)",
        kind="schedule_free",
        warmup=0.05,
    ),
}


def catalogue() -> list[dict[str, Any]]:
    """One row per name: ``name``, ``kind``, ``params`` (defaults), ``anchor``, ``description``."""
    return [
        {"name": name, "kind": entry.kind, "params": entry.defaults, "anchor": entry.anchor,
         "description": entry.description}
        for name, entry in SCHEDULES.items()
    ]


def format_catalogue() -> str:
    """The catalogue as a plain-text table (cells wrapped, ~115 columns), for ``harness schedules``."""
    header = ("name", "params (defaults)", "matches", "what it does")
    rows = [header] + [
        (row["name"], ", ".join(f"{k}={P.format_value(v)}" for k, v in row["params"].items()),
         row["anchor"], row["description"])
        for row in catalogue()
    ]
    lines = []
    for number, row in enumerate(rows):
        lines += _table_lines(row)
        if number == 0:
            lines.append("  ".join("-" * width for width in COLUMN_WIDTHS))
    return "\n".join(lines + ["", *CATALOGUE_NOTES])


COLUMN_WIDTHS = (15, 36, 28, 30)
CATALOGUE_NOTES = (
    "Lengths (step_size, milestones, period, warmup, decay_fraction, ...): a number in (0, 1) is a",
    "fraction of the run's T optimizer steps, a whole number >= 1 a count of steps. Every schedule",
    "takes warmup (linear from 0, then the schedule over the remaining steps).",
    "Any torch.optim.lr_scheduler class works too: {name: torch.optim.lr_scheduler.StepLR, step_size: 30}.",
)


def _table_lines(row: tuple[str, ...]) -> list[str]:
    """One table row as lines, each cell wrapped to its column."""
    columns = list(zip(row, COLUMN_WIDTHS, strict=True))
    cells = [(textwrap.wrap(text, width, break_long_words=False) or [""], width) for text, width in columns]
    height = max(len(cell) for cell, _ in cells)
    padded = [(cell + [""] * (height - len(cell)), width) for cell, width in cells]
    return ["  ".join(cell[i].ljust(width) for cell, width in padded).rstrip() for i in range(height)]
