"""The catalogue's curves: pure functions of the step, no state.

Every curve has the signature ``curve(s, n, p) -> multipliers``: ``s`` an int64 array of steps
in ``[0, n)``, ``n`` the number of steps the curve spans, ``p`` the validated parameters with
every length already resolved to a step count. It returns float64 multipliers of the base LR.
:func:`with_warmup` is the one place warmup is written; it wraps any curve.

Where a curve has an anchor, the docstring says which behaviour of the anchor it follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from harness.errors import HarnessError

Curve = Callable[[np.ndarray, int], np.ndarray]  # (steps, span) -> multipliers
CurveFn = Callable[[np.ndarray, int, Mapping[str, Any]], np.ndarray]


def with_warmup(curve: Curve, warmup: int) -> Curve:
    """Linear warmup from 0 over ``warmup`` steps, then ``curve`` on its own clock.

    For ``t < warmup`` the multiplier is ``t / warmup * curve(0)``; from ``t = warmup`` on it is
    ``curve(t - warmup)`` over the remaining ``total - warmup`` steps (transformers' convention:
    ``get_cosine_schedule_with_warmup`` and friends decay over ``T - warmup`` steps).
    """
    if warmup == 0:
        return curve

    def warmed(t: np.ndarray, total: int) -> np.ndarray:
        span = total - warmup
        if span < 1:
            raise HarnessError(
                f"warmup of {warmup} steps leaves no steps of a {total}-step run; lower warmup"
            )
        start = curve(np.zeros(1, dtype=np.int64), span)[0]
        after = curve(np.maximum(t - warmup, 0), span)
        return np.where(t < warmup, t / warmup * start, after)

    return warmed


def constant(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    return np.ones(len(s))


def step(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``StepLR``: ``gamma ** (s // step_size)``."""
    return p["gamma"] ** (s // p["step_size"]).astype(np.float64)


def multistep(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``MultiStepLR``: ``gamma ** (number of milestones <= s)``."""
    passed = np.searchsorted(np.asarray(p["milestones"]), s, side="right")
    return p["gamma"] ** passed.astype(np.float64)


def exponential(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``ExponentialLR``: ``gamma ** s``; ``final_ratio`` sets ``gamma = final_ratio ** (1/n)``."""
    gamma = p["gamma"] if p["gamma"] is not None else p["final_ratio"] ** (1.0 / n)
    return gamma ** s.astype(np.float64)


def inverse_time(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """Keras ``InverseTimeDecay``: ``1 / (1 + decay_rate * s / decay_steps)`` (floored if staircase)."""
    progress = s / p["decay_steps"]
    if p["staircase"]:
        progress = np.floor(progress)
    return 1.0 / (1.0 + p["decay_rate"] * progress)


def inverse_sqrt(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """transformers ``get_inverse_sqrt_schedule`` after its warmup: ``1/sqrt((s + timescale)/timescale)``."""
    timescale = p["timescale"]
    return 1.0 / np.sqrt((s + timescale) / timescale)


def _decay_fraction(s: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(s, n) / n


def linear(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``LinearLR(start_factor=1, end_factor=end_ratio, total_iters=n)``: reaches
    ``end_ratio`` at ``s = n``, one step after the last step of the run (as transformers'
    linear schedule does)."""
    return 1.0 + (p["end_ratio"] - 1.0) * _decay_fraction(s, n)


def polynomial(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``PolynomialLR(total_iters=n, power)`` lifted to ``end_ratio``:
    ``end + (1 - end) * (1 - s/n) ** power`` (optax ``polynomial_schedule``)."""
    end = p["end_ratio"]
    return end + (1.0 - end) * (1.0 - _decay_fraction(s, n)) ** p["power"]


def _half_cosine(progress: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.cos(np.pi * progress))


def cosine(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``CosineAnnealingLR(T_max=n, eta_min=min_lr_ratio)``, its closed form.

    Stepped past ``T_max``, torch's recursive form climbs back up (the cosine's next half
    period); a run never gets there because ``s < n = T_max``.
    """
    low = p["min_lr_ratio"]
    return low + (1.0 - low) * _half_cosine(s / n)


def cosine_restarts(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """SGDR: cycle ``i`` lasts ``period * t_mult**i`` steps and peaks at ``m_mul**i``.

    Equals torch ``CosineAnnealingWarmRestarts(T_0=period, T_mult, eta_min)`` (integer
    ``t_mult``, ``m_mul = 1``) and Keras ``CosineDecayRestarts(first_decay_steps=period, t_mul,
    m_mul, alpha=min_lr_ratio)``: ``alpha + (1 - alpha) * m_mul**i * (1 + cos(pi * x)) / 2``.
    Cycle boundaries are found by summing cycle lengths, not by Keras' ``floor(log(...))``,
    so a step that starts a cycle always starts it, whatever float rounding ``log`` does.
    """
    period, t_mult = p["period"], p["t_mult"]
    if t_mult == 1:
        cycle = s // period
        progress = (s - cycle * period) / period
    else:
        starts, lengths = [0.0], [float(period)]
        while starts[-1] + lengths[-1] <= s.max(initial=0):
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * t_mult)
        cycle = np.searchsorted(np.asarray(starts), s, side="right") - 1
        progress = (s - np.asarray(starts)[cycle]) / np.asarray(lengths)[cycle]
    low = p["min_lr_ratio"]
    return low + (1.0 - low) * p["m_mul"] ** cycle.astype(np.float64) * _half_cosine(progress)


def cyclic(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``CyclicLR(base_lr=base_ratio, max_lr=1, step_size_up, step_size_down, mode, gamma)``.

    Written with torch's own float expressions (``cycle = floor(1 + s/total)``,
    ``x = 1 + s/total - cycle``) so its rounding is reproduced, not corrected.
    """
    up = float(p["step_size"])
    down = float(p["step_size_down"]) if p["step_size_down"] is not None else up
    total = up + down
    ratio = up / total
    cycle = np.floor(1 + s / total)
    x = 1.0 + s / total - cycle
    height = (1.0 - p["base_ratio"]) * np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    if p["mode"] == "triangular2":
        height = height * (1 / (2.0 ** (cycle - 1)))
    elif p["mode"] == "exp_range":
        height = height * p["gamma"] ** s.astype(np.float64)
    return p["base_ratio"] + height


def onecycle(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """torch ``OneCycleLR(max_lr=1, total_steps=n, ...)``, two phases by default (fastai's),
    three with ``three_phase: true`` (the paper's). Unlike the decays above, the last step
    ``n - 1`` reaches the final value ``1 / (div_factor * final_div_factor)``, as in torch.
    Where torch divides by a zero-length phase (``pct_start * n == 1``) the phase counts as done.
    """
    pct, initial = p["pct_start"], 1.0 / p["div_factor"]
    final = initial / p["final_div_factor"]
    if p["three_phase"]:
        phases = [(pct * n - 1, initial, 1.0), (2 * pct * n - 2, 1.0, initial), (n - 1, initial, final)]
    else:
        phases = [(pct * n - 1, initial, 1.0), (n - 1, 1.0, final)]
    ends = np.array([end for end, _, _ in phases], dtype=np.float64)
    index = np.full(len(s), len(phases) - 1)
    for i in reversed(range(len(phases) - 1)):  # torch takes the first phase with s <= its end
        index = np.where(s <= ends[i], i, index)
    begins = np.concatenate([[0.0], ends[:-1]])[index]
    width = ends[index] - begins
    frac = np.divide(s - begins, width, out=np.ones(len(s)), where=width != 0)
    start = np.array([a for _, a, _ in phases])[index]
    end = np.array([b for _, _, b in phases])[index]
    if p["anneal"] == "linear":
        return (end - start) * frac + start
    return end + (start - end) / 2.0 * (np.cos(np.pi * frac) + 1)


def wsd(s: np.ndarray, n: int, p: Mapping[str, Any]) -> np.ndarray:
    """Warmup-stable-decay: 1 until the last ``decay_fraction`` of the run, then a cooldown.

    Cooldowns ``linear``, ``cosine``, ``1-sqrt`` follow transformers' ``get_wsd_schedule``
    (``factor * (1 - min_lr_ratio) + min_lr_ratio`` with ``progress`` over the decay steps);
    ``exp`` is MiniCPM's ``0.5 ** (steps into the decay / half_life)`` (Hu et al. 2024, sec. 4).
    """
    decay = p["decay_fraction"]
    stable = n - decay
    if stable < 0:
        raise HarnessError(
            f"decay_fraction is {decay} steps but only {n} steps follow the warmup; "
            "lower decay_fraction or warmup"
        )
    into = np.maximum(s - stable, 0)
    progress = into / decay
    kind = p["decay"]
    if kind == "linear":
        factor = 1.0 - progress
    elif kind == "cosine":
        factor = _half_cosine(progress)
    elif kind == "1-sqrt":
        factor = 1.0 - np.sqrt(progress)
    else:
        factor = 0.5 ** (into / p["half_life"])
    low = p["min_lr_ratio"]
    return np.where(s < stable, 1.0, factor * (1.0 - low) + low)
