"""Panels: the adjusted closes of several assets in one frame (design section 3, "Many assets").

A **panel** is a ``DataFrame`` indexed by a sorted, unique ``DatetimeIndex`` named ``date``, with
one float column per asset (the columns' name is ``ticker``; columns sorted by ticker) holding the
asset's adjusted close (its close where the source has no adjusted close). A cell is NaN where the
asset has no price: before its first row (it has not entered yet) and after its last (it left).
Between its first and last row an asset has a price on every date of the panel: a missing one is
carried forward over at most ``max_gap`` dates (a logged repair naming the asset) or is an error.

Three ways in, the same numbers either way:

- a **wide** file: a date column and one price column per ticker (``data/sp500_panel.csv``);
- a **long** file: a date column, a ``ticker`` (or ``symbol``/``asset``) column and price columns
  as in a one-asset file (``close``, ``adj_close``, ...), several rows a date;
- **yfinance** with several ``data.tickers``: one cached file per ticker.

Each asset is validated on its own (:func:`~harness.data.cleaning.validate_prices`, its messages
naming the asset); problems of the file as a whole (unsorted or duplicated dates of a wide file,
unknown columns) are reported once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.cleaning import (
    REPAIR_HINT,
    _longest_run,
    _numeric,
    _ordered,
    _repair_or_raise,
    _trim,
    as_timestamp,
    canonical_column,
    validate_prices,
)
from harness.data.files import date_indexed
from harness.data.yfinance import yfinance_raw
from harness.errors import ConfigError, DataError

log = logging.getLogger("harness.data")  # the package's one logger, for every module

PANEL_AXIS = "ticker"
"""The name of a panel's columns axis: how a panel is told from a one-asset price frame."""
TICKER_NAMES = ("ticker", "symbol", "asset")
"""Headers (any case) of a long file's ticker column."""


def is_panel(prices: pd.DataFrame) -> bool:
    """True for a panel (one column per asset), False for a one-asset price frame."""
    return isinstance(prices, pd.DataFrame) and prices.columns.name == PANEL_AXIS


# --------------------------------------------------------------------------------------------
# Layouts of a file


def file_layout(raw: pd.DataFrame, origin: str) -> tuple[str, pd.DataFrame]:
    """``("single" | "wide" | "long", frame indexed by date)`` for a file as read.

    ``long``: a ticker column (:data:`TICKER_NAMES`) with at least two tickers, and dates that
    repeat. ``wide``: at least two columns besides the date and none of them a price-column name
    (``close``, ``adj_close``, ``volume``, ...; see :data:`~harness.data.cleaning.ALIASES`).
    Anything else is one asset (a ticker column of a file whose dates do not repeat is dropped as
    an unknown column, as before). Date problems raise here, with the usual messages.
    """
    frame = date_indexed(raw, origin)
    ticker = ticker_column(frame)
    if ticker is not None and not frame.index.is_unique and frame[ticker].nunique() > 1:
        return "long", frame
    named = [canonical_column(column) for column in frame.columns]
    if len(named) >= 2 and all(name is None for name in named):
        return "wide", frame
    return "single", frame


def ticker_column(frame: pd.DataFrame) -> Any:
    """The long layout's ticker column, or None."""
    for column in frame.columns:
        if str(column).strip().lower() in TICKER_NAMES:
            return column
    return None


def file_panel(kind: str, frame: pd.DataFrame, origin: str, *, repair: bool = True, max_gap: int = 5,
               start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """The panel of a ``wide`` or ``long`` file (``frame`` from :func:`file_layout`)."""
    if kind == "wide":
        return _wide(frame, origin, repair, max_gap, start, end)
    if kind == "long":
        return _long(frame, origin, repair, max_gap, start, end)
    raise ValueError(f"file_panel: kind must be 'wide' or 'long', got {kind!r}")


def _wide(frame: pd.DataFrame, origin: str, repair: bool, max_gap: int, start: str | None,
          end: str | None) -> pd.DataFrame:
    unnamed = [str(column) for column in frame.columns if str(column).startswith("Unnamed:")]
    if unnamed:  # a saved pandas index, or an empty header: no ticker
        _repair_or_raise(repair, f"{origin}: columns without a ticker name {unnamed}", "dropped them",
                         f"name or remove them {REPAIR_HINT}")
        frame = frame.drop(columns=unnamed)
    names = [str(column).strip() for column in frame.columns]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"{origin}: tickers {twice} have more than one column; keep one column per ticker")
    frame = pd.DataFrame({name: _numeric(frame[column], name, origin)
                          for name, column in zip(names, frame.columns, strict=True)}, index=frame.index)
    frame = _trim(_ordered(frame, origin, repair), start, end, origin)  # the file's dates: checked once
    closes = {}
    for ticker in frame.columns:
        own = frame[[ticker]].rename(columns={ticker: "adj_close"}).dropna()  # NaN: no price (yet) that date
        if own.empty:
            log.warning("%s: asset %s has no prices%s; left out", origin, ticker, _span(start, end))
            continue
        closes[ticker] = validate_prices(own, repair=repair, max_gap=max_gap, origin=f"{origin}, asset {ticker}"
                                         )["adj_close"]
    return panel_frame(closes, origin, repair=repair, max_gap=max_gap)


def _long(frame: pd.DataFrame, origin: str, repair: bool, max_gap: int, start: str | None,
          end: str | None) -> pd.DataFrame:
    column = ticker_column(frame)
    tickers = frame[column]
    frame = frame.drop(columns=column)
    missing = np.flatnonzero(tickers.isna().to_numpy() | (tickers.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        raise DataError(f"{origin}: row {missing[0] + 1} has no ticker in column '{column}'; fill or remove that row")
    unknown = [str(c) for c in frame.columns if canonical_column(c) is None]
    if unknown:
        _repair_or_raise(repair, f"{origin}: unknown columns {unknown}", "dropped them", f"remove them {REPAIR_HINT}")
        frame = frame.drop(columns=[c for c in frame.columns if canonical_column(c) is None])
    names = tickers.astype(str).str.strip().to_numpy()
    in_span = _in_span(frame.index, start, end)
    closes = {}
    for ticker in sorted(set(names)):
        own = names == ticker
        if not (own & in_span).any():
            log.warning("%s: asset %s has no prices%s; left out", origin, ticker, _span(start, end))
            continue
        closes[ticker] = validate_prices(frame[own], repair=repair, max_gap=max_gap, origin=f"{origin}, asset {ticker}",
                                         start=start, end=end)["adj_close"]
    return panel_frame(closes, origin, repair=repair, max_gap=max_gap)


def _in_span(dates: pd.DatetimeIndex, start: str | None, end: str | None) -> np.ndarray:
    keep = np.ones(len(dates), dtype=bool)
    if start is not None:
        keep &= dates >= as_timestamp(start, "data.start")
    if end is not None:
        keep &= dates < as_timestamp(end, "data.end")
    return keep


def _span(start: str | None, end: str | None) -> str:
    return "" if start is None and end is None else f" in [{start}, {end})"


# --------------------------------------------------------------------------------------------
# yfinance


def ticker_list(tickers: str | list[str] | None) -> list[str]:
    """``data.tickers`` as a list of distinct names (a :class:`ConfigError` for none or repeats)."""
    names = [tickers] if isinstance(tickers, str) else [str(name) for name in (tickers or [])]
    if not names:
        raise ConfigError("data.tickers: no ticker given; list one (tickers: [^GSPC]) or several for a panel")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"data.tickers: {twice} listed more than once; list each ticker once")
    return names


def yfinance_panel(tickers: list[str], start: str | None, end: str | None, interval: str, cache_dir: Path, *,
                   repair: bool = True, max_gap: int = 5) -> pd.DataFrame:
    """The panel of several yfinance tickers, each read from its own cache file (or downloaded once)."""
    closes = {}
    for ticker in tickers:
        raw, origin = yfinance_raw([ticker], start, end, interval, cache_dir)
        closes[ticker] = validate_prices(raw, repair=repair, max_gap=max_gap, origin=origin, start=start,
                                         end=end)["adj_close"]
    return panel_frame(closes, f"yfinance {','.join(tickers)}", repair=repair, max_gap=max_gap)


# --------------------------------------------------------------------------------------------
# The panel


def panel_frame(closes: dict[str, pd.Series], origin: str, *, repair: bool = True, max_gap: int = 5) -> pd.DataFrame:
    """Each asset's validated closes (ticker → series by date) aligned on the union of their dates.

    Inside an asset's span (its first to its last date) a date of the panel where the asset has no
    price is a gap: carried forward over at most ``max_gap`` dates, logged naming the asset
    (``repair=False``: an error); a longer gap is an error. Outside its span a cell stays NaN.
    """
    if not closes:
        raise DataError(f"{origin}: no asset has prices; check the file or data.start/end")
    panel = pd.DataFrame({ticker: closes[ticker] for ticker in sorted(closes)}).sort_index()
    panel.index = pd.DatetimeIndex(panel.index, name="date").as_unit("us")
    panel.columns = pd.Index([str(t) for t in panel.columns], name=PANEL_AXIS)
    values = panel.to_numpy(dtype=np.float64, copy=True)
    for j, ticker in enumerate(panel.columns):
        known = np.flatnonzero(np.isfinite(values[:, j]))
        first, last = int(known[0]), int(known[-1])
        holes = ~np.isfinite(values[first:last + 1, j])
        if not holes.any():
            continue
        longest, (where, _) = _longest_run(holes[:, None])
        where_date = panel.index[first + where]
        what = f"{origin}, asset {ticker}"
        if longest > max_gap:
            raise DataError(
                f"{what}: no price on {longest} dates of the panel in a row from {where_date:%Y-%m-%d}; at most "
                f"{max_gap} are filled: fix the data or trim data.start/end"
            )
        first_hole = panel.index[first + int(np.argmax(holes))]
        _repair_or_raise(
            repair,
            f"{what}: no price on {int(holes.sum())} dates where other assets have one (first {first_hole:%Y-%m-%d})",
            f"carried the last price forward (longest gap {longest} dates)", f"fill them {REPAIR_HINT}",
        )
        values[first:last + 1, j] = pd.Series(values[first:last + 1, j]).ffill().to_numpy()
    return pd.DataFrame(values, index=panel.index, columns=panel.columns)
