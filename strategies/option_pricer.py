"""``option_pricer``: a neural pricing model learned from a daily option chain.

Each day t an option chain is priced with Black–Scholes on the real spot path, with an implied
vol surface that moves with realized volatility::

    sigma(k, tau) = max(vol_floor, rv_t + skew * k + smile * k^2 + term_slope * sqrt(tau))

where ``k = log(K / S_t)`` (log-moneyness), ``tau`` the maturity in years (trading days / 252)
and ``rv_t`` the annualized realized vol of the last ``vol_window`` daily log returns up to t.
Rows are (date, moneyness, maturity): a seeded random subset of ``contracts_per_day`` grid points
per day (0: the whole grid; drawn per day in date order, so a day's draw never depends on later
days), out-of-the-money options by default (puts below the spot, calls at and above), dropping
quotes whose price/strike is below ``min_price``. The labels come from :meth:`OptionPricer.chain_prices`
(a subclass prices the same chain by another model: :mod:`strategies.heston_pricer`).

Inputs: ``log_moneyness``, ``maturity`` (years), and with their flags (what makes the map smooth;
off by default, on in ``configs/option_pricer.yaml``) ``sqrt_maturity``, ``log_maturity``,
``std_moneyness`` = k / (max(rv_t, vol_floor) sqrt(tau)); then the state: the trailing realized
vols, as ``rv_<w>`` or, with ``log_state``, ``log_rv_<w>``.
In log-vol and log-maturity the price of a near-the-money option is close to additive (price ~
sigma sqrt(tau) for small sigma sqrt(tau)), so a network extrapolates more gracefully to a vol
regime its train window has not seen.

Target: price / strike; with ``target_space: log`` (default ``price``) the network learns
log(price/strike) (:meth:`OptionPricer.target_transform`), so its squared loss weighs relative price
error: a deep out-of-the-money quote counts as much as an at-the-money one (in implied-vol terms the
error of a log price is about as large at every moneyness), and every prediction is a positive price.

Look-ahead: the label is the model price on day t given day t's state (spot and trailing
realized vol), so it uses no price after t: ``horizon = 0``. It is a pricing-function
approximation task, not a forecast.

Baseline: Black–Scholes with one flat vol, the mean implied vol of the train rows' targets.
Own metrics: ``iv_error_volpts`` and ``iv_fail_rate`` (see :meth:`OptionPricer.metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.pricing import bs_price, implied_vol
from strategies.base import Strategy, Table, adj_close, log_returns, realized_vol

DAYS_PER_YEAR = 252
STATE_FLOOR = 1e-4  # realized vols below this are floored before the log (a flat price path)


class OptionPricer(Strategy):
    """Learn price/strike of a Black–Scholes chain whose vol surface follows realized vol."""

    name = "option_pricer"
    params = {
        "moneyness": [0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2],  # K / S grid
        "maturities": [5, 10, 21, 42, 63, 126, 189, 252],  # trading days (1w .. 1y)
        "kind": "otm",  # otm (puts below spot, calls at/above) | call | put
        "r": 0.02,  # risk-free rate, continuous, annual
        "q": 0.0,  # dividend yield, continuous, annual
        "vol_window": 21,  # days of realized vol driving the surface level
        "state_windows": [5, 21, 63],  # trailing realized vols given as features
        "skew": -0.4,  # d sigma / d log-moneyness
        "smile": 0.5,  # curvature in log-moneyness
        "term_slope": 0.02,  # d sigma / d sqrt(tau)
        "vol_floor": 0.05,  # minimum surface vol
        "contracts_per_day": 8,  # grid points drawn per day (0 = the whole grid)
        "min_price": 1e-4,  # quotes with price/strike below this are dropped
        "seed": 0,  # seed of the per-day contract draw
        # The precision regime (configs/option_pricer.yaml) sets the five below to log / true;
        # the defaults keep the original table (price target, plain inputs).
        "target_space": "price",  # log: the net learns log(price/strike) | price: price/strike itself
        "sqrt_maturity": False,  # add the input sqrt(tau)
        "log_maturity": False,  # add the input log(tau)
        "std_moneyness": False,  # add the input k / (max(rv, vol_floor) * sqrt(tau)), standardized moneyness
        "log_state": False,  # state inputs as log_rv_<w> = log(max(rv, 1e-4)) instead of rv_<w>
    }
    better = {"iv_error_volpts": "min", "iv_fail_rate": "min"}
    headline = ("iv_error_volpts", "iv_fail_rate")
    baseline_name = "Black-Scholes at the train window's implied vol"

    def validate(self) -> None:
        self.require(all(m > 0 for m in self.moneyness), "moneyness", "must all be > 0")
        self.require(len(set(self.moneyness)) == len(self.moneyness), "moneyness", "must not repeat")
        self.require(all(d >= 1 for d in self.maturities), "maturities", "must all be >= 1 trading day")
        self.require(len(set(self.maturities)) == len(self.maturities), "maturities", "must not repeat")
        self.require(self.kind in ("otm", "call", "put"), "kind", "must be 'otm', 'call' or 'put'")
        self.require(self.vol_window >= 2, "vol_window", "must be >= 2")
        self.require(all(w >= 2 for w in self.state_windows), "state_windows", "must all be >= 2")
        self.require(self.vol_floor > 0, "vol_floor", "must be > 0")
        self.require(self.contracts_per_day >= 0, "contracts_per_day", "must be >= 0 (0 = whole grid)")
        self.require(self.min_price >= 0, "min_price", "must be >= 0")
        self.require(self.target_space in ("log", "price"), "target_space", "must be 'log' or 'price'")
        self.require(self.target_space == "price" or self.min_price > 0, "min_price",
                     "must be > 0 with target_space 'log' (log of a zero price)")

    @property
    def state_vols(self) -> dict[str, int]:
        """Feature name → trailing window (days) of the realized-vol state features."""
        return {f"rv_{w}": w for w in sorted({*self.state_windows, self.vol_window})}

    def surface(self, base_vol: np.ndarray, log_moneyness: np.ndarray, maturity: np.ndarray) -> np.ndarray:
        """The implied vol surface sigma(k, tau) given the base (realized) vol, all broadcast."""
        k = np.asarray(log_moneyness, dtype=np.float64)
        raw = base_vol + self.skew * k + self.smile * k * k + self.term_slope * np.sqrt(maturity)
        return np.maximum(self.vol_floor, raw)

    def is_call(self, log_moneyness: np.ndarray) -> np.ndarray:
        """Option type per row: calls (True) or puts; ``otm`` means a call iff K >= S."""
        k = np.asarray(log_moneyness, dtype=np.float64)
        if self.kind == "otm":
            return k >= 0
        return np.full(k.shape, self.kind == "call")

    def price_over_strike(self, log_moneyness: np.ndarray, maturity: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Black–Scholes price / strike: S/K = exp(-k), K = 1."""
        k = np.asarray(log_moneyness, dtype=np.float64)
        return bs_price(np.exp(-k), 1.0, maturity, self.r, sigma, self.q, self.is_call(k))

    def chain_prices(self, dates: pd.DatetimeIndex, base_vol: np.ndarray, log_moneyness: np.ndarray,
                     maturity: np.ndarray) -> np.ndarray:
        """The labels: price/strike of each quote (its date, the base realized vol of that date, k, tau)."""
        return self.price_over_strike(log_moneyness, maturity, self.surface(base_vol, log_moneyness, maturity))

    def implied_vols(self, price_over_strike: np.ndarray, test: Table) -> np.ndarray:
        """Implied vol of price/strike values on ``test``'s contracts (NaN where unpriceable)."""
        k, tau = self._contracts(test)
        return implied_vol(price_over_strike, np.exp(-k), 1.0, tau, self.r, self.q, self.is_call(k))

    def build(self, prices: pd.DataFrame) -> Table:
        warmup = max(self.vol_window, *self.state_windows)
        close = adj_close(prices, warmup + 2, self.name)
        returns = log_returns(close)
        state = pd.DataFrame(
            {column: realized_vol(returns, w, DAYS_PER_YEAR) for column, w in self.state_vols.items()},
            index=close.index,
        )
        day, point = np.nonzero(self._draw(len(close)) & np.isfinite(state.to_numpy()).all(axis=1)[:, None])
        moneyness = np.asarray(self.moneyness, dtype=np.float64)
        days = np.asarray(self.maturities, dtype=np.int64)
        m_of, d_of = np.repeat(moneyness, len(days)), np.tile(days, len(moneyness))
        k, tau = np.log(m_of[point]), d_of[point] / DAYS_PER_YEAR
        base = state[f"rv_{self.vol_window}"].to_numpy()[day]
        target = self.chain_prices(close.index[day], base, k, tau)
        keep = target >= self.min_price
        index = pd.MultiIndex.from_arrays(
            [close.index[day][keep], m_of[point][keep], d_of[point][keep]],
            names=["date", "moneyness", "maturity_days"],
        )
        X = pd.DataFrame({"log_moneyness": k[keep], "maturity": tau[keep]}, index=index)
        if self.sqrt_maturity:
            X["sqrt_maturity"] = np.sqrt(tau[keep])
        if self.log_maturity:
            X["log_maturity"] = np.log(tau[keep])
        if self.std_moneyness:
            X["std_moneyness"] = k[keep] / (np.maximum(base[keep], self.vol_floor) * np.sqrt(tau[keep]))
        for column in self.state_vols:
            values = state[column].to_numpy()[day][keep]
            if self.log_state:
                X[f"log_{column}"] = np.log(np.maximum(values, STATE_FLOOR))
            else:
                X[column] = values
        y = pd.Series(target[keep], index=index, name="target")
        if len(y) == 0:
            raise HarnessError("option_pricer: every quote is below min_price; lower strategy.params.min_price")
        return Table(X=X, y=y, dates=index.get_level_values("date"), horizon=0)

    def _draw(self, n_days: int) -> np.ndarray:
        """Mask [n_days, grid] of the contracts quoted each day (row i depends only on i and seed)."""
        n_grid = len(self.moneyness) * len(self.maturities)
        per_day = self.contracts_per_day or n_grid
        if per_day >= n_grid:
            return np.ones((n_days, n_grid), dtype=bool)
        keys = np.random.default_rng(self.seed).random((n_days, n_grid))
        mask = np.zeros((n_days, n_grid), dtype=bool)
        np.put_along_axis(mask, np.argsort(keys, axis=1)[:, :per_day], True, axis=1)
        return mask

    def _contracts(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        missing = {"log_moneyness", "maturity"} - set(table.X.columns)
        if missing:
            raise HarnessError(
                f"option_pricer metrics need the features {sorted(missing)}; pass the strategy table to the metrics"
            )
        return table.X["log_moneyness"].to_numpy(np.float64), table.X["maturity"].to_numpy(np.float64)

    def target_transform(self, y: np.ndarray) -> np.ndarray:
        """``target_space: log``: the net learns log(price/strike), so its squared loss weighs relative
        price error and deep out-of-the-money quotes count as much as at-the-money ones."""
        y = np.asarray(y, dtype=np.float64)
        return np.log(y) if self.target_space == "log" else y

    def target_inverse(self, z: np.ndarray) -> np.ndarray:
        """Network outputs back to price/strike (``exp`` in the log space: always a positive price)."""
        z = np.asarray(z, dtype=np.float64)
        return np.exp(z) if self.target_space == "log" else z

    def torch_target_inverse(self, z: Any) -> Any:
        """:meth:`target_inverse` in torch, for the exported production model."""
        return z.exp() if self.target_space == "log" else z

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """Black–Scholes at one flat vol: the mean implied vol of the train rows' targets."""
        vols = self.implied_vols(train.y.to_numpy(np.float64), train)
        if not np.isfinite(vols).any():
            raise HarnessError("option_pricer baseline: no train row has an implied vol; check min_price and the grid")
        k, tau = self._contracts(test)
        return self.price_over_strike(k, tau, np.full(len(k), np.nanmean(vols)))

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        """``iv_error_volpts``: mean |IV(pred) − IV(target)| × 100 over rows whose prediction inverts;
        ``iv_fail_rate``: share of rows whose predicted price has no implied vol in [1e-4, 5]
        (outside the no-arbitrage bounds, e.g. negative). Rows whose target does not invert are skipped."""
        iv_true, iv_pred = self.implied_vols(y, test), self.implied_vols(pred, test)
        valid = np.isfinite(iv_true)
        priced = valid & np.isfinite(iv_pred)
        n_valid = int(valid.sum())
        error = 100 * np.mean(np.abs(iv_pred - iv_true)[priced]) if priced.any() else np.nan
        return {
            "iv_error_volpts": float(error),
            "iv_fail_rate": float(1 - priced.sum() / n_valid) if n_valid else float("nan"),
        }
