"""``volatility_forecast``: realized-volatility (HAR) features → next-h realized volatility.

Units: every volatility here is **annualized realized volatility** from log returns,
``RV(n) = sqrt(P / n * sum of the n squared returns)`` (no demeaning), with ``P`` the bars a year
(``self.periods_per_year``: 252 for daily prices, 252 x bars a day for intraday ones).

Features at date t (returns up to and including r_t = log P_t/P_{t-1}): the HAR components
``rv_1`` = sqrt(P) |r_t| (daily), ``rv_5`` (weekly), ``rv_<lookback>`` (monthly, default 22), and
the signed return ``ret_lag0`` (leverage effect). Target: RV over the next ``horizon`` returns
r_{t+1} .. r_{t+h}. Baseline: HAR-RV (Corsi 2009), OLS of the target on
``[1, rv_1, rv_5, rv_<lookback>]`` fitted on the train rows (numpy ``lstsq``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from strategies.base import (  # noqa: F401 - PERIODS_PER_YEAR: kept importable from here
    PERIODS_PER_YEAR,
    Strategy,
    Table,
    adj_close,
    finite_rows,
    future_sum,
    log_returns,
    realized_vol,
)

WEEK = 5
VOL_FLOOR = 1e-4
"""QLIKE floors both the forecast and the realized volatility at this annualized vol (0.01 %), so a
non-positive forecast (or a zero-return stretch) gives a large finite loss instead of inf/NaN."""


class VolatilityForecast(Strategy):
    """Forecast next-h realized volatility; judged by precision and QLIKE."""

    name = "volatility_forecast"
    params = {
        "lookback": 22,  # days in the monthly HAR component
        "horizon": 5,  # days of future returns in the target
    }
    better = {"qlike": "min"}
    baseline_name = "HAR-RV"
    default_metric = "qlike"  # robust to the noisy realized-vol proxy (Patton 2011)

    def validate(self) -> None:
        self.require(self.lookback > WEEK, "lookback", f"must be > {WEEK} (the weekly HAR component)")
        self.require(self.horizon >= 1, "horizon", "must be >= 1")

    @property
    def har_columns(self) -> list[str]:
        return ["rv_1", f"rv_{WEEK}", f"rv_{self.lookback}"]

    def build(self, prices: pd.DataFrame) -> Table:
        close = adj_close(prices, self.lookback + self.horizon + 2, self.name)
        returns = log_returns(close)
        X = pd.DataFrame(
            {name: realized_vol(returns, n, self.periods_per_year)
             for name, n in zip(self.har_columns, (1, WEEK, self.lookback))},
            index=close.index,
        )
        X["ret_lag0"] = returns
        target = np.sqrt(future_sum(np.square(returns), self.horizon) * self.periods_per_year / self.horizon)
        y = target.rename("target")
        keep = finite_rows(X, y)
        X, y = X[keep], y[keep]
        return Table(X=X, y=y, dates=X.index, horizon=self.horizon)

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """HAR-RV: OLS coefficients from the train rows, applied to the test rows' HAR components."""
        coef = np.linalg.lstsq(self._design(train), train.y.to_numpy(dtype=np.float64), rcond=None)[0]
        return self._design(test) @ coef

    def _design(self, table: Table) -> np.ndarray:
        har = table.X[self.har_columns].to_numpy(dtype=np.float64)
        return np.column_stack([np.ones(len(har)), har])

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        return {"qlike": float(np.mean(qlike_loss(y, pred))) if len(y) else float("nan")}

    def pointwise_loss(self, metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
        return qlike_loss(y, pred) if metric == "qlike" else None


def qlike_loss(vol_true: np.ndarray, vol_pred: np.ndarray, floor: float = VOL_FLOOR) -> np.ndarray:
    """QLIKE per observation on variances: ``s2_true / s2_pred - log(s2_true / s2_pred) - 1``.

    Inputs are volatilities; both are floored at ``floor`` before squaring. Zero when the forecast
    is exact, positive otherwise; robust to noise in the realized proxy (Patton 2011).
    """
    ratio = np.square(np.maximum(np.asarray(vol_true, dtype=np.float64), floor)) / np.square(
        np.maximum(np.asarray(vol_pred, dtype=np.float64), floor)
    )
    return ratio - np.log(ratio) - 1.0
