"""``cross_section``: one network scores every asset of a panel each date; judged by rank IC and a
long-short portfolio.

Input: a panel (:mod:`harness.data.panel`: one column of adjusted closes per ticker, NaN where an
asset has no price). Rows are (date, asset), sorted by date then ticker; the table's index is
``(date, asset, next_return)``, so every slice of the table knows its assets and the realised
next-h return the portfolio earns (the network reads ``X``'s columns only).

Features of (t, a), from asset a's prices up to t: the last ``lags`` daily log returns
``ret_lag0`` (= log P_t/P_{t-1}) ..., the trailing volatility ``vol_<vol_window>`` (annualized, as the
book's Sharpe ratio, by ``periods_per_year`` bars a year: 252 for daily prices) and
momentum ``mom_<w>`` = log P_t/P_{t-w}; with ``ranks``, also each one's cross-sectional rank
``rank_<feature>`` on date t, scaled to [-0.5, 0.5], among the assets whose features are known at t
(never among those with a target: which assets have a future price is not known at t).
An asset enters once it has the warm-up rows (max of lags, vol_window and the momentum windows);
a date enters the table when at least ``min_assets`` assets have features and a target.

Target (``target``): ``return``, the next-h log return log P_{t+h}/P_t; or ``rank``, its
cross-sectional rank on date t in [-0.5, 0.5]. ``horizon`` = h.

Baseline (``baseline_model``, fitted on the train rows): ``momentum``, OLS of the target on the
cross-sectional rank of ``mom_<longest window>`` (so the train rows decide momentum or reversal);
or ``mean``, the train-mean target (the zero-skill forecast; it ranks nothing, so its rank IC is NaN).

Own metrics (:meth:`CrossSection.metrics`): per-date rank IC (``rank_ic``, HAC ``rank_ic_t``,
``ic_ir``) and the long-short book (:func:`long_short`): ``ls_sharpe``, ``ls_return``,
``ls_turnover``, ``ls_max_drawdown``, ``ls_hit_rate``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from harness.data import is_panel
from harness.errors import DataError, HarnessError
from harness.evaluation import metrics as M  # the module, not its names: it imports strategies.base
from strategies.base import Strategy, Table, future_sum, return_features

log = logging.getLogger("harness.strategies")

PERIODS_PER_YEAR = 252  # bars a year of daily prices, unless the harness sets ``periods_per_year``
COST_MULTIPLES = (0.0, 1.0, 5.0)  # the trading view's cost sensitivity, as return_forecast's
EQUAL_WEIGHT = "buy and hold (equal weight)"
INDEX_NAMES = ("date", "asset", "next_return")


class CrossSection(Strategy):
    """Score every asset each date; rank IC per date and a top/bottom-quantile long-short book."""

    name = "cross_section"
    params = {
        "horizon": 1,  # h: days ahead the target return spans
        "lags": 5,  # daily log returns used as features
        "vol_window": 21,  # days in the trailing volatility feature
        "momentum": [21, 63, 252],  # momentum windows (days)
        "ranks": True,  # add each feature's cross-sectional rank on its date
        "target": "return",  # return | rank (the next-h return's cross-sectional rank)
        "baseline_model": "momentum",  # momentum | mean
        "quantile": 0.2,  # the long (short) leg: this top (bottom) share of each date's assets
        "cost_bps": 5.0,  # trading cost per unit of turnover (sum of |weight changes|), basis points
        "min_assets": 5,  # a date enters the table with at least this many assets
    }
    better = {"rank_ic": "max", "rank_ic_t": "max", "ic_ir": "max", "ls_sharpe": "max", "ls_return": "max",
              "ls_turnover": "min", "ls_max_drawdown": "min", "ls_hit_rate": "max"}
    baseline_name = "momentum"
    needs_panel = True
    """Reads a panel (several assets), not one asset's price frame: tests over single-series
    strategies leave it out by this flag."""

    def validate(self) -> None:
        self.require(self.horizon >= 1, "horizon", "must be >= 1")
        self.require(self.lags >= 1, "lags", "must be >= 1")
        self.require(self.vol_window >= 2, "vol_window", "must be >= 2")
        self.require(all(w >= 1 for w in self.momentum), "momentum", "windows must be >= 1")
        self.require(self.target in ("return", "rank"), "target", "must be 'return' or 'rank'")
        self.require(self.baseline_model in ("momentum", "mean"), "baseline_model", "must be 'momentum' or 'mean'")
        self.require(0 < self.quantile <= 0.5, "quantile", "must be in (0, 0.5]")
        self.require(self.cost_bps >= 0, "cost_bps", "must be >= 0")
        self.require(self.min_assets >= 2, "min_assets", "must be >= 2 (a cross-section ranks assets)")
        self.baseline_name = ("OLS on the momentum rank" if self.baseline_model == "momentum"
                              else "train-mean target (zero skill)")

    @property
    def per_year(self) -> float:
        """Bars a year: the harness's ``periods_per_year`` for the data when it sets one, else 252."""
        return float(getattr(self, "periods_per_year", PERIODS_PER_YEAR))

    @property
    def momentum_column(self) -> str:
        return f"mom_{max(self.momentum)}"

    # --- the table --------------------------------------------------------------------------

    def build(self, prices: pd.DataFrame) -> Table:
        close = self._closes(prices)
        warmup = max(self.lags, self.vol_window, *self.momentum)
        if len(close) < warmup + self.horizon + 2:
            raise DataError(f"cross_section needs at least {warmup + self.horizon + 2} dates with these params, "
                            f"got {len(close)}; use more data")
        log_close = np.log(close)
        returns = log_close.diff()  # per asset: NaN on its first date (and before)
        wide = return_features(log_close, returns, self.lags, self.vol_window, self.momentum, self.per_year)
        forward = future_sum(returns, self.horizon).to_numpy(np.float64)
        base = np.stack([frame.to_numpy(np.float64) for frame in wide.values()], axis=-1)  # [dates, assets, F]
        date_of, asset_of = np.nonzero(np.isfinite(base).all(axis=-1))  # known at t: (date, asset) row-major
        features = {name: base[date_of, asset_of, j] for j, name in enumerate(wide)}
        if self.ranks:  # among the assets known at t only
            ranks = {f"rank_{name}": M.rank_within_dates(date_of, values) for name, values in features.items()}
            features.update(ranks)
        next_return = forward[date_of, asset_of]
        keep = np.isfinite(next_return)
        counts = np.bincount(date_of[keep], minlength=len(close))
        keep &= counts[date_of] >= self.min_assets
        if not keep.any():
            raise DataError(
                f"cross_section: no date has {self.min_assets} assets with {warmup} dates of prices and a target; "
                "use more data or lower strategy.params.min_assets"
            )
        dates, assets = close.index[date_of[keep]], close.columns[asset_of[keep]]
        self._report_entries(close.columns, assets)
        index = pd.MultiIndex.from_arrays([dates, assets.astype(str), next_return[keep]], names=list(INDEX_NAMES))
        X = pd.DataFrame({name: values[keep] for name, values in features.items()}, index=index)
        target = next_return[keep] if self.target == "return" else M.rank_within_dates(dates, next_return[keep])
        y = pd.Series(target, index=index, name="target")
        return Table(X=X, y=y, dates=dates, horizon=self.horizon)

    def _closes(self, prices: pd.DataFrame) -> pd.DataFrame:
        if not is_panel(prices):
            raise DataError(
                "cross_section scores several assets a date, but the prices are one asset's; load a panel: a wide "
                "or long file (data: {source: csv, path: data/sp500_panel.csv}) or several data.tickers"
            )
        close = prices.astype(np.float64)
        values = close.to_numpy()
        bad = np.isfinite(values) & (values <= 0)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"asset {close.columns[col]}: non-positive price {values[row, col]:g} on "
                            f"{close.index[row]:%Y-%m-%d}; load the panel with harness.data (it checks and repairs)")
        return close

    def _report_entries(self, tickers: pd.Index, assets: pd.Index) -> None:
        absent = sorted(set(map(str, tickers)) - set(map(str, assets)))
        if absent:
            log.warning("cross_section: assets %s never enter the table (too few dates of prices for the "
                        "features and a target, or on dates with fewer than %d assets)", absent, self.min_assets)

    # --- baseline and metrics ---------------------------------------------------------------

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """``momentum``: OLS of the target on the momentum rank, fitted on the train rows; ``mean``:
        the train rows' mean target, for every test row."""
        y = train.y.to_numpy(dtype=np.float64)
        if self.baseline_model == "mean":
            return np.full(len(test), float(np.mean(y)))
        design = self._momentum_design(train)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        return self._momentum_design(test) @ coef

    def _momentum_design(self, table: Table) -> np.ndarray:
        if self.momentum_column not in table.X.columns:
            raise HarnessError(f"cross_section baseline needs the '{self.momentum_column}' feature; "
                               "pass the strategy table")
        signal = M.rank_within_dates(table.dates, table.X[self.momentum_column].to_numpy(np.float64))
        return np.column_stack([np.ones(len(signal)), signal])

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        out = M.rank_ic_summary(self.rank_ic(pred, test, y), self.horizon)
        out.update(long_short_summary(self.book(pred, test), self.horizon, self.per_year))
        return out

    def rank_ic(self, pred: np.ndarray, test: Table, y: np.ndarray | None = None) -> pd.Series:
        """The per-date rank IC of ``pred`` on ``test``'s rows (see
        :func:`harness.evaluation.metrics.per_date_rank_ic`)."""
        target = test.y.to_numpy(np.float64) if y is None else y
        return M.per_date_rank_ic(test.dates, target, pred)

    def book(self, pred: np.ndarray, test: Table) -> pd.DataFrame:
        """The long-short book of ``pred`` on ``test``'s rows: :func:`long_short` per rebalance date."""
        dates, assets, returns = _row_labels(test)
        return long_short(dates, assets, pred, returns, self.quantile, self.horizon, self.cost_bps)

    def equity(self, pred: np.ndarray, test: Table) -> pd.Series:
        """The long-short book's equity (start 1, after costs) after each holding, by rebalance date."""
        return equity_from(self.book(pred, test))

    def benchmark_equity(self, test: Table) -> pd.Series:
        """The equal-weight long portfolio of each date's assets (same rebalancing and costs)."""
        return equity_from(self._benchmark_book(test, self.cost_bps))

    def _benchmark_book(self, test: Table, cost_bps: float) -> pd.DataFrame:
        dates, assets, returns = _row_labels(test)
        return book(dates, assets, equal_weights(dates, self.horizon), returns, self.horizon, cost_bps)

    def trading_summary(self, predictions: dict[str, np.ndarray], test: Table,
                        cost_multiples: tuple[float, ...] = COST_MULTIPLES) -> pd.DataFrame:
        """The selection report's trading view: each candidate's long-short book (its name →
        predictions ``[n]``) beside the panel's equal-weight long, with the Sharpe ratio at each
        multiple of ``cost_bps`` and max drawdown and turnover at the configured cost."""
        dates, assets, returns = _row_labels(test)
        weights = {name: quantile_weights(dates, pred, self.quantile, self.horizon)
                   for name, pred in predictions.items()}
        weights[EQUAL_WEIGHT] = equal_weights(dates, self.horizon)
        rows = []
        for name, w in weights.items():
            row = {"candidate": name}
            for multiple in cost_multiples:
                ledger = book(dates, assets, w, returns, self.horizon, self.cost_bps * multiple)
                view = long_short_summary(ledger, self.horizon, self.per_year)
                row[f"sharpe_{multiple:g}x_cost"] = view["ls_sharpe"]
                if multiple == 1:
                    row.update(max_drawdown=view["ls_max_drawdown"], turnover=view["ls_turnover"])
            rows.append(row)
        return pd.DataFrame(rows)


def _row_labels(table: Table) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Dates, assets and realised next-h log returns of a cross-section table's rows."""
    index = table.X.index
    if not {"asset", "next_return"} <= set(index.names):
        raise HarnessError("cross_section metrics need the table's (date, asset, next_return) index; "
                           "pass the strategy table")
    return (pd.DatetimeIndex(table.dates), index.get_level_values("asset").to_numpy(),
            index.get_level_values("next_return").to_numpy(np.float64))


# --- the long-short book -----------------------------------------------------------------------


def rebalance_rows(dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
    """Mask of the rows on rebalance dates: the first date and every h-th after it (holdings of h
    days do not overlap)."""
    codes = pd.factorize(pd.DatetimeIndex(dates), sort=True)[0]
    return codes % max(1, int(horizon)) == 0


def quantile_weights(dates: pd.DatetimeIndex, score: np.ndarray, quantile: float, horizon: int) -> np.ndarray:
    """Per-row weights of the top/bottom-quantile book: on each rebalance date with n ranked assets,
    the k = max(1, floor(quantile·n)) highest scores get +1/k, the k lowest −1/k (ties broken by row
    order), so the book is dollar-neutral with gross exposure 2. Other rows 0; a date whose scores
    are all equal (or with fewer than 2 finite scores) holds nothing."""
    dates = pd.DatetimeIndex(dates)
    score = np.asarray(score, dtype=np.float64)
    codes = pd.factorize(dates, sort=True)[0]
    live = rebalance_rows(dates, horizon) & np.isfinite(score)
    weights = np.zeros(len(score))
    rows = np.flatnonzero(live)
    if not len(rows):
        return weights
    frame = pd.DataFrame({"code": codes[rows], "score": score[rows]}, index=rows)
    grouped = frame.groupby("code")["score"]
    n = grouped.transform("count").to_numpy()
    spread = (grouped.transform("max") - grouped.transform("min")).to_numpy()
    top = grouped.rank(method="first", ascending=False).to_numpy()
    bottom = grouped.rank(method="first", ascending=True).to_numpy()
    k = np.maximum(1, np.floor(quantile * n))
    held = (n >= 2) & (spread > 0)
    weights[rows] = np.where(held & (top <= k), 1.0 / k, 0.0) - np.where(held & (bottom <= k), 1.0 / k, 0.0)
    return weights


def equal_weights(dates: pd.DatetimeIndex, horizon: int) -> np.ndarray:
    """Per-row weights 1/n of the n rows of each rebalance date (the panel's equal-weight long)."""
    dates = pd.DatetimeIndex(dates)
    live = rebalance_rows(dates, horizon)
    codes = pd.factorize(dates, sort=True)[0]
    n = np.bincount(codes[live], minlength=codes.max() + 1 if len(codes) else 0)
    return np.where(live, 1.0 / np.maximum(n[codes], 1), 0.0)


def book(dates: pd.DatetimeIndex, assets: np.ndarray, weights: np.ndarray, returns: np.ndarray,
         horizon: int = 1, cost_bps: float = 5.0) -> pd.DataFrame:
    """Per rebalance date: ``gross`` = Σ w·(e^r − 1) over the date's rows (r: the next-h log
    return), ``turnover`` = Σ |w − previous w| over all assets (the first book is entered from
    flat; an asset that leaves is sold), ``net`` = gross − cost_bps/10⁴·turnover, and for the hit
    rate ``picks`` (rows with a weight) and ``hits`` (longs above the date's median return, shorts
    below). Indexed by the rebalance dates."""
    dates = pd.DatetimeIndex(dates)
    weights, returns = np.asarray(weights, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    live = rebalance_rows(dates, horizon)
    day_codes, days = pd.factorize(dates[live], sort=True)
    asset_codes, names = pd.factorize(np.asarray(assets)[live])
    w, r = weights[live], returns[live]
    holdings = np.zeros((len(days), len(names)))
    holdings[day_codes, asset_codes] = w
    turnover = np.abs(np.diff(holdings, axis=0, prepend=0.0)).sum(axis=1)
    gross = np.bincount(day_codes, w * np.expm1(r), minlength=len(days))
    median = pd.Series(r).groupby(day_codes).transform("median").to_numpy()
    hit = ((w > 0) & (r > median)) | ((w < 0) & (r < median))
    return pd.DataFrame({
        "gross": gross, "turnover": turnover, "net": gross - cost_bps * 1e-4 * turnover,
        "picks": np.bincount(day_codes, w != 0, minlength=len(days)),
        "hits": np.bincount(day_codes, hit, minlength=len(days)),
    }, index=pd.DatetimeIndex(days, name="date"))


def long_short(dates: pd.DatetimeIndex, assets: np.ndarray, score: np.ndarray, returns: np.ndarray,
               quantile: float = 0.2, horizon: int = 1, cost_bps: float = 5.0) -> pd.DataFrame:
    """The top/bottom-quantile book of ``score`` (:func:`quantile_weights`) traded on ``returns``
    (:func:`book`)."""
    return book(dates, assets, quantile_weights(dates, score, quantile, horizon), returns, horizon, cost_bps)


def long_short_summary(ledger: pd.DataFrame, horizon: int = 1,
                       periods_per_year: float = PERIODS_PER_YEAR) -> dict[str, float]:
    """``ls_sharpe``: mean / std (ddof=1) of the net returns per holding × sqrt(periods_per_year / h);
    ``ls_return``: mean net return × periods_per_year / h (annualised, arithmetic); ``ls_turnover``:
    mean turnover per rebalance; ``ls_max_drawdown``: largest fall of the compounded equity from its
    running peak (start 1); ``ls_hit_rate``: hits / picks. NaN where undefined."""
    net = ledger["net"].to_numpy(np.float64)
    nan = float("nan")
    if not len(net):
        return dict.fromkeys(("ls_sharpe", "ls_return", "ls_turnover", "ls_max_drawdown", "ls_hit_rate"), nan)
    per_year = periods_per_year / max(1, int(horizon))
    std = float(np.std(net, ddof=1)) if len(net) > 1 else 0.0
    equity = np.concatenate([[1.0], np.cumprod(1.0 + net)])
    picks = float(ledger["picks"].sum())
    return {
        "ls_sharpe": float(np.mean(net) / std * np.sqrt(per_year)) if std > 0 else nan,
        "ls_return": float(np.mean(net) * per_year),
        "ls_turnover": float(ledger["turnover"].mean()),
        "ls_max_drawdown": float(np.max(1.0 - equity / np.maximum.accumulate(equity))),
        "ls_hit_rate": float(ledger["hits"].sum() / picks) if picks else nan,
    }


def equity_from(ledger: pd.DataFrame) -> pd.Series:
    """Compounded equity (start 1) after each holding of a :func:`book`, by rebalance date."""
    return pd.Series(np.cumprod(1.0 + ledger["net"].to_numpy(np.float64)), index=ledger.index, name="equity")
