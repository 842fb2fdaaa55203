"""What a backtest will do: the data, the strategy table and the windows (no training)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.config import Config
from harness.data import fingerprint, load_data
from harness.data.frequency import periods_per_year
from harness.errors import HarnessError
from harness.evaluation.losses import loss_view, resolve_delta
from harness.windows import WalkForward, parse_size
from strategies import get_strategy

log = logging.getLogger("harness.backtest")


@dataclass
class Window:
    """One walk-forward window as row positions of the strategy table."""

    index: int
    train_rows: np.ndarray
    test_rows: np.ndarray


@dataclass
class Plan:
    """The data, the strategy and its table, and the windows cut over the table's dates."""

    config: Config
    prices: pd.DataFrame
    strategy: Any
    table: Any
    windows: list[Window]
    data_hash: str

    @property
    def dates(self) -> pd.DatetimeIndex:
        """The date of every table row."""
        return pd.DatetimeIndex(self.table.dates)


def plan(config: Config, prices: pd.DataFrame | None = None) -> Plan:
    """Load data, build the strategy table and cut the windows; raise on anything unusable."""
    prices = load_data(config) if prices is None else prices
    config = with_periods(config, prices)
    strategy = loss_view(get_strategy(config.strategy.name, config.strategy.params,
                                      periods_per_year=config.data.periods_per_year), config.training)  # training.loss
    config = with_metric(config, strategy)
    table = strategy.build(prices)
    _check_purge(config, table.horizon)
    _check_sequences(config, table)
    windows = cut_windows(config, pd.DatetimeIndex(table.dates))
    if windows:
        resolve_delta(strategy, table, windows[0].train_rows)  # huber: one delta, from the first train window
    _check_model(config, table.X.shape[1])
    return Plan(config, prices, strategy, table, windows, fingerprint(prices))


def with_periods(config: Config, prices: pd.DataFrame) -> Config:
    """``config`` with ``data.periods_per_year`` resolved: inferred from the price dates when null
    (:func:`harness.data.frequency.periods_per_year`), so the logged config says what annualised."""
    if config.data.periods_per_year is not None:
        return config
    periods = periods_per_year(prices.index)
    log.info("data: %g bars a year, from the spacing of the dates (set data.periods_per_year to change it)", periods)
    return config.model_copy(update={"data": config.data.model_copy(update={"periods_per_year": periods})})


def with_metric(config: Config, strategy: Any) -> Config:
    """``config`` with ``selection.metric`` resolved: the strategy's default when none is named."""
    if config.selection.metric is not None:
        return config
    selection = config.selection.model_copy(update={"metric": strategy.default_metric})
    return config.model_copy(update={"selection": selection})


def cut_windows(config: Config, row_dates: pd.DatetimeIndex) -> list[Window]:
    """Windows over the table's unique dates, mapped back to row positions.

    Several rows may share a date (option chains): a date is never split between train and test.
    """
    dates = pd.DatetimeIndex(np.unique(row_dates.values))
    spec = config.windows
    splitter = WalkForward(
        train=spec.train, test=spec.test, step=spec.step, purge=spec.purge,
        embargo=spec.embargo, mode=spec.mode, dates=dates,
    )
    date_pos = np.searchsorted(dates.values, row_dates.values)
    return [
        Window(k, np.flatnonzero(np.isin(date_pos, train)), np.flatnonzero(np.isin(date_pos, test)))
        for k, (train, test) in enumerate(splitter.split(np.arange(len(dates))))
    ]


def production_window(the_plan: Plan) -> Window:
    """The production model's train window: the most recent one, ending at the table's last row.

    The strategy table holds only labelled rows, so its last row is the data's last labelled row;
    the window's train rows end there (no purge, no test slice: ``test_rows`` is empty). Its
    length is the config's: ``windows.mode: rolling`` takes the last ``windows.train`` dates (a
    calendar size such as ``"3Y"`` converted through the table's unique dates, as the backtest's
    windows are, :func:`harness.windows.parse_size`), ``expanding`` every row from the first.
    ``windows.embargo`` removes nothing (there are no later test slices to keep apart). Dates are
    never split: every row of a taken date is in. The index is one past the backtest's last window.
    """
    row_dates = the_plan.dates
    dates = pd.DatetimeIndex(np.unique(row_dates.values))
    spec = the_plan.config.windows
    first = 0
    if spec.mode == "rolling":
        size = parse_size(spec.train, dates, "windows.train")
        if size > len(dates):
            raise HarnessError(
                f"windows.train: {spec.train!r} is {size} dates but the data has {len(dates)}; shorten it or use more data"
            )
        first = len(dates) - size
    date_pos = np.searchsorted(dates.values, row_dates.values)
    return Window(len(the_plan.windows), np.flatnonzero(date_pos >= first), np.empty(0, dtype=np.int64))


def _check_model(config: Config, n_features: int) -> None:
    """A user's network (``model.type: "package.module:Class"``) imports, builds and runs under vmap
    before any run opens (one-line errors otherwise)."""
    if not config.model.custom:
        return
    from harness.training.models import check_module, make_model_factory

    factory = make_model_factory(config.model.network(), n_features=n_features)
    rows = (config.model.sequence, n_features) if config.model.recurrent else (n_features,)
    training = config.training
    check_module(factory, rows, [training.seed + s for s in range(training.seeds)])


def _check_sequences(config: Config, table: Any) -> None:
    """A recurrent model reads each row's preceding rows as a time series: one row per date, or one
    row per date and asset (a cross-section: each asset's own rows, ``window.previous_rows``)."""
    dates = pd.DatetimeIndex(table.dates)
    if not config.model.recurrent or dates.is_unique:
        return
    index = table.X.index
    if "asset" in (index.names or ()) and not pd.MultiIndex.from_arrays(
            [dates, index.get_level_values("asset")]).duplicated().any():
        return
    raise HarnessError(
        f"model.type: {config.model.type} reads the preceding table rows as a time series, but strategy "
        f"'{config.strategy.name}' has several rows per date; use model.type: mlp for it"
    )


def _check_purge(config: Config, horizon: int) -> None:
    purge = config.windows.purge
    if purge >= horizon:
        return
    message = (
        f"windows.purge: {purge} is shorter than the label horizon {horizon} of strategy "
        f"'{config.strategy.name}', so train labels overlap the test slice; set windows.purge >= {horizon}"
    )
    if config.windows.short_purge == "error":
        raise HarnessError(message + " (or windows.short_purge: warn to accept it)")
    log.warning(message)
