"""Seeded synthetic price paths: GBM, Heston and a two-state regime switch (see :func:`simulate`).

Parameters are validated here, each error naming its ``data.synthetic.<key>`` field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.data.cleaning import as_timestamp
from harness.errors import ConfigError, did_you_mean, unknown_name

TRADING_DAYS = 252
COMMON = {"model": "gbm", "seed": 0, "n_days": 2520, "s0": 100.0, "start": "2000-01-03"}
MODELS: dict[str, dict[str, Any]] = {
    "gbm": {"mu": 0.05, "sigma": 0.2},
    "heston": {"mu": 0.05, "kappa": 2.0, "theta": 0.04, "xi": 0.3, "rho": -0.7, "v0": 0.04},
    "regime": {"mus": [0.10, -0.20], "sigmas": [0.10, 0.35],
               "transition": [[0.99, 0.01], [0.03, 0.97]], "state0": 0},
}


@dataclass(frozen=True)
class SyntheticPath:
    """A simulated path: business-day ``dates``, ``close`` and the latent ``state`` per day
    (Heston: the variance; regime: the state 0/1; GBM: None)."""

    dates: pd.DatetimeIndex
    close: np.ndarray
    state: np.ndarray | None


def simulate(spec: dict | None = None) -> SyntheticPath:
    """Simulate one seeded price path.

    ``spec`` keys (defaults in brackets); rates are annual, one row is one business day,
    ``dt = 1/252``, and ``n_days`` counts prices (the first is ``s0``):

    - all models: ``model`` [gbm], ``seed`` [0], ``n_days`` [2520], ``s0`` [100], ``start`` [2000-01-03]
    - ``gbm``: ``mu`` [0.05], ``sigma`` [0.2]; exact log-normal steps.
    - ``heston``: ``mu`` [0.05], ``kappa`` [2], ``theta`` [0.04], ``xi`` [0.3], ``rho`` [-0.7],
      ``v0`` [0.04]. The variance is drawn exactly from the CIR transition (non-central
      chi-square, so it never goes negative); the log price uses the trapezoid integrated
      variance and the variance increment for the correlated part (Andersen 2008, "simple"
      Broadie–Kaya scheme).
    - ``regime``: two states, ``mus`` [0.10, -0.20], ``sigmas`` [0.10, 0.35], row-stochastic daily
      ``transition`` [[0.99, 0.01], [0.03, 0.97]], ``state0`` [0]; GBM steps with the day's state.

    The same spec gives the same path, bit for bit.
    """
    params = _synthetic_params(spec)
    rng = np.random.default_rng(params["seed"])
    n, dt = params["n_days"], 1.0 / TRADING_DAYS
    step = {"gbm": _gbm_steps, "heston": _heston_steps, "regime": _regime_steps}[params["model"]]
    log_returns, state = step(params, n - 1, dt, rng)
    close = params["s0"] * np.exp(np.concatenate([[0.0], np.cumsum(log_returns)]))
    dates = pd.bdate_range(as_timestamp(params["start"], "data.synthetic.start"), periods=n, name="date")
    return SyntheticPath(dates=dates.as_unit("us"), close=close, state=state)


def synthetic_raw(spec: dict | None) -> pd.DataFrame:
    """The simulated path as a frame with one ``close`` column, indexed by its dates."""
    path = simulate(spec)
    return pd.DataFrame({"close": path.close}, index=path.dates)


def _gbm_steps(p: dict, n: int, dt: float, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    z = rng.standard_normal(n)
    return (p["mu"] - 0.5 * p["sigma"] ** 2) * dt + p["sigma"] * math.sqrt(dt) * z, None


def _heston_steps(p: dict, n: int, dt: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    kappa, theta, xi, rho = p["kappa"], p["theta"], p["xi"], p["rho"]
    decay = math.exp(-kappa * dt)
    scale = xi**2 * (1.0 - decay) / (4.0 * kappa)
    dof = 4.0 * kappa * theta / xi**2
    v = np.empty(n + 1)
    v[0] = p["v0"]
    for t in range(n):
        v[t + 1] = scale * rng.noncentral_chisquare(dof, v[t] * decay / scale)
    integrated = 0.5 * (v[:-1] + v[1:]) * dt
    z = rng.standard_normal(n)
    vol_part = (rho / xi) * (np.diff(v) - kappa * theta * dt + kappa * integrated)
    log_returns = p["mu"] * dt - 0.5 * integrated + vol_part + np.sqrt((1 - rho**2) * integrated) * z
    return log_returns, v


def _regime_steps(p: dict, n: int, dt: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    stay = np.array([p["transition"][0][0], p["transition"][1][1]])
    u = rng.random(n)
    state = np.empty(n + 1, dtype=np.int64)
    state[0] = p["state0"]
    for t in range(n):
        state[t + 1] = state[t] if u[t] < stay[state[t]] else 1 - state[t]
    mus, sigmas = np.asarray(p["mus"])[state[1:]], np.asarray(p["sigmas"])[state[1:]]
    z = rng.standard_normal(n)
    return (mus - 0.5 * sigmas**2) * dt + sigmas * math.sqrt(dt) * z, state


def _synthetic_params(spec: dict | None) -> dict[str, Any]:
    spec = dict(spec or {})
    model = spec.get("model", "gbm")
    if model not in MODELS:
        raise unknown_name("synthetic model (data.synthetic.model)", model, MODELS)
    params = {**COMMON, **MODELS[model]}
    for key in spec:
        if key not in params:
            raise ConfigError(
                f"data.synthetic.{key}: not a parameter of model '{model}'{did_you_mean(key, params)}; "
                f"valid: {', '.join(sorted(params))}"
            )
    params.update(spec)
    for key, rule in _RULES.items():
        if key in params:
            params[key] = rule(key, params[key])
    return params


def _field(key: str) -> str:
    return f"data.synthetic.{key}"


def _number(key: str, value: Any, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{_field(key)}: must be a number, got {value!r}") from None
    too_low = number <= low if open_low else number < low
    if math.isnan(number) or too_low or number > high:
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        if high < math.inf:
            bound = f"in [{low:g}, {high:g}]"
        raise ConfigError(f"{_field(key)}: must be {bound}, got {value!r}")
    return number


def _integer(key: str, value: Any, low: int, high: int | None = None) -> int:
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if wrong_type or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {list(range(low, high + 1))}"
        raise ConfigError(f"{_field(key)}: must be an integer {bound}, got {value!r}")
    return int(value)


def _pair(key: str, value: Any, **bounds: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{_field(key)}: must be a list of two numbers (one per regime), got {value!r}")
    return [_number(key, v, **bounds) for v in value]


def _transition(key: str, value: Any) -> list[list[float]]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{_field(key)}: must be a 2x2 list of daily probabilities, got {value!r}")
    rows = [_pair(key, row, low=0.0, high=1.0) for row in value]
    if any(abs(sum(row) - 1.0) > 1e-9 for row in rows):
        raise ConfigError(f"{_field(key)}: each row must sum to 1, got {value!r}")
    return rows


_RULES: dict[str, Any] = {
    "seed": lambda k, v: _integer(k, v, 0),
    "n_days": lambda k, v: _integer(k, v, 2),
    "s0": lambda k, v: _number(k, v, 0.0, open_low=True),
    "mu": lambda k, v: _number(k, v),
    "sigma": lambda k, v: _number(k, v, 0.0, open_low=True),
    "kappa": lambda k, v: _number(k, v, 0.0, open_low=True),
    "theta": lambda k, v: _number(k, v, 0.0, open_low=True),
    "xi": lambda k, v: _number(k, v, 0.0, open_low=True),
    "rho": lambda k, v: _number(k, v, -1.0, 1.0),
    "v0": lambda k, v: _number(k, v, 0.0),
    "mus": lambda k, v: _pair(k, v),
    "sigmas": lambda k, v: _pair(k, v, low=0.0, open_low=True),
    "transition": _transition,
    "state0": lambda k, v: _integer(k, v, 0, 1),
}
