"""``return_forecast``: lagged returns, volatility and momentum → the next-h log return.

Features at date t (all from adjusted closes up to t): the last ``lags`` daily log returns
``ret_lag0`` (= log P_t/P_{t-1}) ... , the annualized trailing volatility ``vol_<vol_window>``
(annualized, as the trading view's Sharpe ratio, by ``self.periods_per_year`` bars a year), and
momentum ``mom_<w>`` = log P_t/P_{t-w} for each window w. Target: log P_{t+h}/P_t (the sum of the
next h daily log returns); ``horizon`` = h. Baseline: the mean target of the train rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from strategies.base import (
    PERIODS_PER_YEAR,
    Strategy,
    Table,
    adj_close,
    finite_rows,
    future_sum,
    log_returns,
    return_features,
)

COST_MULTIPLES = (0.0, 1.0, 5.0)  # the trading view's cost sensitivity: Sharpe at 0, 1x and 5x cost_bps
BUY_AND_HOLD = "buy and hold"


class ReturnForecast(Strategy):
    """Forecast the next-h log return; judged by precision, hit rate, IC and a trading view."""

    name = "return_forecast"
    params = {
        "horizon": 1,  # h: days ahead the target return spans
        "lags": 5,  # daily log returns used as features
        "vol_window": 21,  # days in the trailing volatility feature
        "momentum": [21, 63, 252],  # momentum windows (days)
        "cost_bps": 1.0,  # trading cost per unit of turnover, basis points
        "position": "sign",  # sign | vol_scaled
        "target_vol": 0.10,  # vol_scaled: annualized volatility the position aims at
        "max_leverage": 2.0,  # vol_scaled: cap on |position|
    }
    better = {"hit_rate": "max", "ic": "max", "sharpe": "max", "max_drawdown": "min", "turnover": "min"}
    baseline_name = "train-mean return"

    def validate(self) -> None:
        self.require(self.horizon >= 1, "horizon", "must be >= 1")
        self.require(self.lags >= 1, "lags", "must be >= 1")
        self.require(self.vol_window >= 2, "vol_window", "must be >= 2")
        self.require(all(w >= 1 for w in self.momentum), "momentum", "windows must be >= 1")
        self.require(self.cost_bps >= 0, "cost_bps", "must be >= 0")
        self.require(self.position in ("sign", "vol_scaled"), "position", "must be 'sign' or 'vol_scaled'")
        self.require(self.target_vol > 0, "target_vol", "must be > 0")
        self.require(self.max_leverage > 0, "max_leverage", "must be > 0")

    @property
    def vol_column(self) -> str:
        return f"vol_{self.vol_window}"

    def build(self, prices: pd.DataFrame) -> Table:
        warmup = max(self.lags, self.vol_window, *self.momentum)
        close = adj_close(prices, warmup + self.horizon + 2, self.name)
        returns = log_returns(close)
        log_close = np.log(close)
        columns = return_features(log_close, returns, self.lags, self.vol_window, self.momentum, self.periods_per_year)
        X = pd.DataFrame(columns, index=close.index)
        y = future_sum(returns, self.horizon).rename("target")
        keep = finite_rows(X, y)
        X, y = X[keep], y[keep]
        return Table(X=X, y=y, dates=X.index, horizon=self.horizon)

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """Historical mean: the mean target over the train rows, for every test row."""
        return np.full(len(test), float(np.mean(train.y.to_numpy(dtype=np.float64))))

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        out = {"hit_rate": hit_rate(y, pred), "ic": spearman_ic(y, pred)}
        out.update(trading_view(pred, y, **self._trading_args(test), periods_per_year=self.periods_per_year))
        return out

    def pointwise_loss(self, metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
        """``sharpe``: minus the trade's net return per row (positions ``sign``, horizon 1 only: a
        vol-scaled position needs the vol feature, and h-day holdings do not give one return a row)."""
        if metric != "sharpe":
            return None
        if self.horizon != 1 or self.position != "sign":
            raise HarnessError(
                "selection.metric: sharpe selects on per-day net returns, which needs strategy.params "
                f"horizon: 1 and position: sign (got horizon {self.horizon}, position {self.position}); "
                "use selection.metric: mse for this strategy"
            )
        net, _ = _trade(pred, y, 1, "sign", None, self.cost_bps, self.target_vol, self.max_leverage)
        return -net

    def trading_summary(self, predictions: dict[str, np.ndarray], test: Table,
                        cost_multiples: tuple[float, ...] = COST_MULTIPLES) -> pd.DataFrame:
        """The trading view of each candidate's out-of-sample predictions (its name → ``[n]``) beside a
        buy-and-hold benchmark (always long one unit): Sharpe at each multiple of the configured cost,
        max drawdown and turnover at the configured cost."""
        args = self._trading_args(test)
        y = test.y.to_numpy(dtype=np.float64)
        rows = []
        for name, pred in {**predictions, BUY_AND_HOLD: np.ones(len(y))}.items():
            hold = {**args, "position": "sign", "vol": None} if name == BUY_AND_HOLD else args
            row = {"candidate": name}
            for multiple in cost_multiples:
                view = trading_view(pred, y, **{**hold, "cost_bps": self.cost_bps * multiple},
                                    periods_per_year=self.periods_per_year)
                row[f"sharpe_{multiple:g}x_cost"] = view["sharpe"]
                if multiple == 1:
                    row.update(max_drawdown=view["max_drawdown"], turnover=view["turnover"])
            rows.append(row)
        return pd.DataFrame(rows)

    def benchmark_equity(self, test: Table) -> pd.Series:
        """Buy and hold on ``test``: always long one unit (the entry pays the configured cost)."""
        args = {**self._trading_args(test), "position": "sign", "vol": None}
        return equity_curve(np.ones(len(test.y)), test.y.to_numpy(), dates=test.dates, **args)

    def equity(self, pred: np.ndarray, test: Table) -> pd.Series:
        """The trading view's equity curve on ``test`` (for plots)."""
        return equity_curve(pred, test.y.to_numpy(), dates=test.dates, **self._trading_args(test))

    def _trading_args(self, test: Table) -> dict:
        vol = None
        if self.position == "vol_scaled":
            if self.vol_column not in test.X.columns:
                raise HarnessError(
                    f"return_forecast with position: vol_scaled needs the '{self.vol_column}' feature; "
                    "pass the strategy table to the metrics"
                )
            vol = test.X[self.vol_column].to_numpy(dtype=np.float64)
        return {
            "horizon": self.horizon, "position": self.position, "vol": vol, "cost_bps": self.cost_bps,
            "target_vol": self.target_vol, "max_leverage": self.max_leverage,
        }


def hit_rate(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of rows where ``sign(pred) == sign(y)`` (a zero only agrees with a zero)."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.mean(np.sign(pred) == np.sign(y))) if len(y) else float("nan")


def spearman_ic(y: np.ndarray, pred: np.ndarray) -> float:
    """Information coefficient: Spearman rank correlation of prediction and target (average ranks
    for ties). NaN when either side is constant (a constant forecast carries no ranking)."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if len(y) < 2:
        return float("nan")
    ry, rp = _ranks(y) - (len(y) + 1) / 2, _ranks(pred) - (len(y) + 1) / 2
    denom = np.sqrt(np.sum(ry * ry) * np.sum(rp * rp))
    return float(np.sum(ry * rp) / denom) if denom > 0 else float("nan")


def positions(pred: np.ndarray, position: str = "sign", vol: np.ndarray | None = None,
              target_vol: float = 0.10, max_leverage: float = 2.0) -> np.ndarray:
    """Position per rebalance: ``sign(pred)``, or ``sign(pred) * min(max_leverage, target_vol / vol)``
    with ``vol`` the annualized trailing volatility known at the date."""
    side = np.sign(np.asarray(pred, dtype=np.float64))
    if position == "sign":
        return side
    if vol is None:
        raise ValueError("position='vol_scaled' needs vol")
    with np.errstate(divide="ignore"):
        scale = np.minimum(max_leverage, target_vol / np.asarray(vol, dtype=np.float64))
    return side * scale


def _trade(pred: np.ndarray, y: np.ndarray, horizon: int, position: str, vol: np.ndarray | None,
           cost_bps: float, target_vol: float, max_leverage: float) -> tuple[np.ndarray, np.ndarray]:
    """(net simple return, |position change|) per rebalance, holding each position h days.

    Rebalances every ``horizon`` rows (rows 0, h, 2h, ...) so h-day returns do not overlap. The
    return over a holding is ``pos * (exp(y) - 1)`` (y is a log return) minus
    ``cost_bps / 1e4 * |pos - previous pos|``; the first position is entered from flat.
    """
    every = slice(None, None, max(1, int(horizon)))
    pred, y = np.asarray(pred, dtype=np.float64)[every], np.asarray(y, dtype=np.float64)[every]
    vol = None if vol is None else np.asarray(vol, dtype=np.float64)[every]
    pos = positions(pred, position, vol, target_vol, max_leverage)
    turnover = np.abs(np.diff(pos, prepend=0.0))
    return pos * np.expm1(y) - cost_bps * 1e-4 * turnover, turnover


def trading_view(pred: np.ndarray, y: np.ndarray, horizon: int = 1, position: str = "sign",
                 vol: np.ndarray | None = None, cost_bps: float = 1.0, target_vol: float = 0.10,
                 max_leverage: float = 2.0, periods_per_year: float = PERIODS_PER_YEAR) -> dict[str, float]:
    """Trade the forecast and summarize it.

    Returns ``sharpe`` (mean / std of net returns per holding, ddof=1, times
    sqrt(periods_per_year / horizon); NaN if fewer than 2 holdings or zero std), ``max_drawdown``
    (largest fall of the compounded equity from its running peak, a fraction in [0, 1], the start
    counting as a peak of 1) and ``turnover`` (mean |position change| per rebalance).
    """
    net, turnover = _trade(pred, y, horizon, position, vol, cost_bps, target_vol, max_leverage)
    std = np.std(net, ddof=1) if len(net) > 1 else 0.0
    sharpe = float(np.mean(net) / std * np.sqrt(periods_per_year / horizon)) if std > 0 else float("nan")
    equity = np.concatenate([[1.0], np.cumprod(1.0 + net)])
    drawdown = 1.0 - equity / np.maximum.accumulate(equity)
    return {
        "sharpe": sharpe,
        "max_drawdown": float(np.max(drawdown)),
        "turnover": float(np.mean(turnover)) if len(turnover) else float("nan"),
    }


def equity_curve(pred: np.ndarray, y: np.ndarray, horizon: int = 1, position: str = "sign",
                 vol: np.ndarray | None = None, cost_bps: float = 1.0, target_vol: float = 0.10,
                 max_leverage: float = 2.0, dates: pd.DatetimeIndex | None = None) -> pd.Series:
    """Compounded equity (start 1) after each holding of :func:`trading_view`'s trades; indexed by
    the rebalance dates when ``dates`` (one per row) is given."""
    net, _ = _trade(pred, y, horizon, position, vol, cost_bps, target_vol, max_leverage)
    index = None if dates is None else pd.DatetimeIndex(dates)[:: max(1, int(horizon))]
    return pd.Series(np.cumprod(1.0 + net), index=index, name="equity")


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged (``scipy.stats.rankdata``'s algorithm, without importing scipy.stats):
    each run of equal sorted values gets the mean of its positions. NaNs: pandas' rank (NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        return pd.Series(values).rank(method="average").to_numpy(np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.ones(len(values), dtype=bool)  # where a run of equal sorted values starts
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(values))
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(first) - 1]
    return ranks
