"""The strategy protocol: prices → supervised table, a naive baseline, and the strategy's own metrics.

A strategy is a small class. Its parameters and their defaults are declared in one place, the
``params`` class dict; ``Strategy(**params)`` checks names (unknown → "did you mean") and types
against those defaults, then :meth:`Strategy.validate` checks ranges. Resolved values are
attributes (``self.horizon``) and ``self.values`` (a dict, for logging).

``self.periods_per_year`` is how many bars a year the prices have (252 for daily bars, 252 x bars
a day for intraday ones): annualise volatilities and Sharpe ratios with it, not with 252. The
harness sets it before :meth:`Strategy.build` from ``data.periods_per_year`` or, when that is
null, from the spacing of the dates (:func:`harness.data.frequency.periods_per_year`).

A minimal user strategy::

    class MyStrategy(Strategy):
        name = "my_strategy"
        params = {"horizon": 1}

        def build(self, prices):          # features at or before each date, future target
            ...
            return Table(X=X, y=y, dates=X.index, horizon=self.horizon)

        def baseline(self, train, test):  # fitted on train rows only
            return np.full(len(test.y), train.y.mean())

and in the config ``strategy: {name: "mypackage.mymodule:MyStrategy", params: {horizon: 2}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from harness.errors import DataError, HarnessError, did_you_mean

PERIODS_PER_YEAR = 252
"""Bars a year of daily prices: :attr:`Strategy.periods_per_year` until the harness sets the data's."""


@dataclass
class Table:
    """A strategy's supervised table.

    Attributes
    ----------
    X : DataFrame, shape [n, n_features]
        Float features; row i uses only prices at or before ``dates[i]``.
    y : Series, shape [n]
        Float target; needs prices up to ``horizon`` observations after ``dates[i]``.
    dates : DatetimeIndex, shape [n]
        The date each row's prediction is made. Sorted; several rows may share a date.
    horizon : int
        Label horizon in observations; the engine requires ``windows.purge >= horizon``.
    """

    X: pd.DataFrame
    y: pd.Series
    dates: pd.DatetimeIndex
    horizon: int

    def __post_init__(self) -> None:
        self.dates = pd.DatetimeIndex(self.dates)
        if not (len(self.X) == len(self.y) == len(self.dates)):
            raise HarnessError(
                f"strategy table: X has {len(self.X)} rows, y {len(self.y)}, dates {len(self.dates)}; "
                "build() must return one target and one date per feature row"
            )
        if int(self.horizon) < 0:
            raise HarnessError(f"strategy table: horizon must be >= 0, got {self.horizon}")

    def __len__(self) -> int:
        return len(self.y)


class Strategy:
    """Base class of strategies; subclasses set ``name`` and ``params`` and implement the methods."""

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    better: ClassVar[dict[str, str]] = {}
    """Which direction is better for each of the strategy's own metrics: ``"min"`` or ``"max"``."""
    headline: ClassVar[tuple[str, ...]] = ()
    """Own metrics the ranking prints beside the selection metric, the baseline's row too."""
    baseline_name: ClassVar[str] = "naive"
    """What the baseline is, in the words the reports use: ``baseline (<baseline_name>)``."""
    default_metric: ClassVar[str] = "mse"
    """The selection metric when the config names none (``selection.metric: null``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        clashes = sorted(p for p in cls.params if hasattr(Strategy, p) or p in ("values", "periods_per_year"))
        if clashes:
            raise TypeError(f"{cls.__name__}.params: {clashes} clash with Strategy attributes; rename them")

    def __init__(self, **params: Any) -> None:
        label = self.name or type(self).__name__
        for key in params:
            if key not in self.params:
                valid = ", ".join(self.params) or "none"
                raise HarnessError(
                    f"strategy.params.{key}: unknown parameter of '{label}'{did_you_mean(key, self.params)}; "
                    f"valid: {valid}"
                )
        self.values: dict[str, Any] = {}
        self.periods_per_year: float = float(PERIODS_PER_YEAR)  # bars a year; the harness sets the data's
        for key, default in self.params.items():
            value = _coerce(label, key, params.get(key, default), default)
            self.values[key] = value
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check parameter ranges; raise :class:`HarnessError` naming ``strategy.params.<name>``."""

    def build(self, prices: pd.DataFrame) -> Table:
        """Features (information at or before each row's date) and the future target."""
        raise NotImplementedError

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        """The naive baseline's predictions for the test rows, fitted on the train rows only."""
        raise NotImplementedError

    def metrics(self, y: np.ndarray, pred: np.ndarray, baseline: np.ndarray, test: Table) -> dict[str, float]:
        """The strategy's own metrics on one out-of-sample series (beyond mse, rmse, mae, r2_oos)."""
        return {}

    def pointwise_loss(self, metric: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray | None:
        """Per-observation loss for ``metric`` (for the loss matrix), or None if it has none."""
        return None

    def target_transform(self, y: np.ndarray) -> np.ndarray:
        """Map the target to the space the network is trained in (identity by default)."""
        return np.asarray(y, dtype=np.float64)

    def target_inverse(self, z: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`target_transform`: network outputs back to target units."""
        return np.asarray(z, dtype=np.float64)

    def require(self, ok: bool, key: str, rule: str) -> None:
        """Raise the one-line error for an invalid parameter value unless ``ok``."""
        if not ok:
            raise HarnessError(f"strategy.params.{key}: {rule}, got {self.values[key]!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{type(self).__name__}({args})"


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          list: "a non-empty list", tuple: "a non-empty list"}


def _coerce(label: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` has the type of its declared default (ints accepted for floats)."""
    where = f"strategy.params.{key}"
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        if ok:
            return tuple(_coerce(label, f"{key}[{i}]", v, default[0]) for i, v in enumerate(value)) \
                if default else tuple(value)
    else:
        ok = True
    if not ok:
        kind = _KINDS.get(type(default), f"a {type(default).__name__}")
        raise HarnessError(f"{where}: must be {kind} (like the default {default!r}) for '{label}', got {value!r}")
    return value


def adj_close(prices: pd.DataFrame, needed: int, label: str) -> pd.Series:
    """The ``adj_close`` column as floats, checked: positive, finite and at least ``needed`` rows."""
    if "adj_close" not in prices.columns:
        raise DataError(
            f"prices have no 'adj_close' column (columns: {list(prices.columns)}); load them with harness.data"
        )
    close = prices["adj_close"].astype(np.float64)
    bad = ~np.isfinite(close.to_numpy()) | (close.to_numpy() <= 0)
    if bad.any():
        raise DataError(
            f"adj_close has {int(bad.sum())} missing or non-positive values (first at {close.index[bad][0]}); "
            "repair the data (data.repair: true) or drop those rows"
        )
    if len(close) < needed:
        raise DataError(
            f"{label} needs at least {needed} price rows with these params, got {len(close)}; use more data"
        )
    return close


def log_returns(close: pd.Series) -> pd.Series:
    """r_t = log(P_t / P_{t-1}); the first value is NaN."""
    return np.log(close).diff()


def realized_vol(returns: pd.Series, window: int, periods: float = PERIODS_PER_YEAR) -> pd.Series:
    """Annualized root-mean-square of the last ``window`` returns, ending at (and including) each date.

    ``sqrt(periods / window * sum(r^2))``: the realized-volatility convention (no demeaning);
    ``periods`` is bars a year (a strategy passes ``self.periods_per_year``).
    """
    return np.sqrt(np.square(returns).rolling(window, min_periods=window).mean() * periods)


def return_features(log_close: pd.Series, returns: pd.Series, lags: int, vol_window: int, momentum: list[int],
                    periods: float) -> dict[str, pd.Series]:
    """The price features known at t, by name: ``ret_lag<k>`` (the log return k bars back),
    ``vol_<vol_window>`` (:func:`realized_vol`) and ``mom_<w>`` = log P_t/P_{t-w}; for one asset
    (Series) or a panel (frames, assets as columns) alike."""
    features = {f"ret_lag{lag}": returns.shift(lag) for lag in range(lags)}
    features[f"vol_{vol_window}"] = realized_vol(returns, vol_window, periods)
    features.update({f"mom_{w}": log_close - log_close.shift(w) for w in momentum})
    return features


def future_sum(values: pd.Series, horizon: int) -> pd.Series:
    """At t: values[t+1] + ... + values[t+horizon] (NaN where the future is not available)."""
    return values.rolling(horizon, min_periods=horizon).sum().shift(-horizon)


def finite_rows(X: pd.DataFrame, y: pd.Series) -> np.ndarray:
    """Mask of rows where every feature and the target are finite (warm-up and tail rows drop)."""
    return np.isfinite(X.to_numpy(dtype=np.float64)).all(axis=1) & np.isfinite(y.to_numpy(dtype=np.float64))
