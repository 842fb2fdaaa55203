"""``heston_pricer``: a neural pricing model of a stochastic-volatility (Heston) option chain.

The chain is that of :mod:`strategies.option_pricer` (a moneyness x maturity grid quoted each day on
the real spot path, out-of-the-money by default, the same inputs and target space), but each quote
is priced by the Heston (1993) model (:func:`harness.heston.heston_price`, by the characteristic
function) with

- the initial variance ``v0 = max(rv_t, vol_floor)^2``, ``rv_t`` the realized vol of the last
  ``vol_window`` daily returns up to day t: the state the network sees;
- the model parameters (``kappa``, ``theta``, ``vol_of_vol``, ``rho``) drifting slowly with calendar
  time, each a seeded sinusoid of period around ``drift_period`` years and relative amplitude
  ``drift`` (see :meth:`HestonPricer.parameters`). The network never sees them, so the map from
  (contract, state) to price moves: a model trained two years ago prices today's chain worse than
  one retrained on the last window, which is what a walk-forward retrain is for.

Day t's labels use nothing after day t (``horizon = 0``); the drift is a function of the date alone.

Baseline: Black–Scholes at one flat vol, the train window's at-the-money implied vol (the mean
implied vol of the train quotes at the grid moneyness closest to 1). Own metrics as the option
pricer: ``iv_error_volpts``, ``iv_fail_rate``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.heston import heston_price
from strategies.base import Table
from strategies.option_pricer import OptionPricer

EPOCH = pd.Timestamp("2000-01-01")  # calendar origin of the parameter drift
_SHARED = ("moneyness", "maturities", "kind", "r", "q", "vol_window", "state_windows", "vol_floor",
           "contracts_per_day", "min_price", "seed", "target_space", "sqrt_maturity", "log_maturity",
           "std_moneyness", "log_state")


class HestonPricer(OptionPricer):
    """Learn price/strike of a Heston chain whose variance starts at realized variance and whose
    parameters drift slowly over time."""

    name = "heston_pricer"
    params = {
        **{key: OptionPricer.params[key] for key in _SHARED},
        # a new strategy starts in the precision regime (the option pricer keeps its original defaults)
        "target_space": "log",
        "log_maturity": True,
        "std_moneyness": True,
        "log_state": True,
        "kappa": 2.0,  # mean-reversion speed of the variance (per year)
        "theta": 0.04,  # long-run variance (0.2^2)
        "vol_of_vol": 0.5,  # volatility of the variance
        "rho": -0.7,  # spot-variance correlation
        "drift": 0.3,  # relative amplitude of the parameters' drift (rho: drift / 2, absolute)
        "drift_period": 4.0,  # years; each parameter's period is this times a fixed factor in [0.7, 1.4]
    }
    baseline_name = "Black-Scholes at the train window's ATM implied vol"

    def validate(self) -> None:
        super().validate()
        self.require(self.kappa > 0, "kappa", "must be > 0")
        self.require(self.theta > 0, "theta", "must be > 0")
        self.require(self.vol_of_vol > 0, "vol_of_vol", "must be > 0")
        self.require(-1 < self.rho < 1, "rho", "must be in (-1, 1)")
        self.require(0 <= self.drift < 1, "drift", "must be in [0, 1)")
        self.require(-1 < self.rho - self.drift / 2 and self.rho + self.drift / 2 < 1, "drift",
                     "keeps rho +- drift / 2 inside (-1, 1); lower it")
        self.require(self.drift_period > 0, "drift_period", "must be > 0 (years)")

    def parameters(self, dates: pd.DatetimeIndex) -> pd.DataFrame:
        """The Heston parameters on ``dates``: ``kappa, theta, vol_of_vol, rho``, one row per date.

        Each is its base value moved by a sinusoid of calendar time with a seeded phase:
        ``kappa, theta, vol_of_vol`` multiplied by ``exp(drift * sin(.))``, ``rho`` shifted by
        ``drift / 2 * sin(.)``. A function of the date alone, so no price enters it.
        """
        years = (pd.DatetimeIndex(dates) - EPOCH).days.to_numpy(np.float64) / 365.25
        phases = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, 4)
        factors = np.array([1.0, 0.7, 1.4, 1.15])  # distinct periods, so the parameters do not move in lockstep
        wave = np.sin(2 * np.pi * years[:, None] / (self.drift_period * factors[None, :]) + phases[None, :])
        return pd.DataFrame({
            "kappa": self.kappa * np.exp(self.drift * wave[:, 0]),
            "theta": self.theta * np.exp(self.drift * wave[:, 1]),
            "vol_of_vol": self.vol_of_vol * np.exp(self.drift * wave[:, 2]),
            "rho": self.rho + self.drift / 2 * wave[:, 3],
        }, index=pd.DatetimeIndex(dates))

    def chain_prices(self, dates: pd.DatetimeIndex, base_vol: np.ndarray, log_moneyness: np.ndarray,
                     maturity: np.ndarray) -> np.ndarray:
        """Heston price/strike of each quote: spot ``exp(-k)``, strike 1, ``v0 = max(rv, vol_floor)^2``."""
        k = np.asarray(log_moneyness, dtype=np.float64)
        p = self.parameters(dates)
        v0 = np.square(np.maximum(np.asarray(base_vol, dtype=np.float64), self.vol_floor))
        return heston_price(np.exp(-k), 1.0, maturity, self.r, self.q, v0, p["kappa"].to_numpy(),
                            p["theta"].to_numpy(), p["vol_of_vol"].to_numpy(), p["rho"].to_numpy(), self.is_call(k))

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """Black–Scholes at one flat vol: the mean implied vol of the train quotes nearest the money."""
        k_train, _ = self._contracts(train)
        nearest = np.isclose(np.abs(k_train), np.abs(k_train).min(), rtol=0.0, atol=1e-12)
        vols = self.implied_vols(train.y.to_numpy(np.float64), train)[nearest]
        if not np.isfinite(vols).any():
            raise HarnessError("heston_pricer baseline: no at-the-money train quote has an implied vol; check the grid")
        k, tau = self._contracts(test)
        return self.price_over_strike(k, tau, np.full(len(k), np.nanmean(vols)))
