"""Validation and logged repairs: from a frame as read to the six-column price frame.

Each step takes and returns a frame. A problem is either a one-line
:class:`~harness.errors.DataError` naming the fix, or a repair logged as a warning on the
``harness.data`` logger (with ``repair=False`` every repair becomes an error instead).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from harness.data.files import NA_STRINGS, date_indexed
from harness.data.spikes import without_spikes
from harness.errors import ConfigError, DataError

log = logging.getLogger("harness.data")  # the package's one logger, for every module

COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
# Normalised header (lower case, spaces/hyphens → "_") → canonical column.
ALIASES = {
    **{name: name for name in COLUMNS},
    "adjclose": "adj_close", "adjusted_close": "adj_close", "adj_price": "adj_close",
    "price": "close", "last": "close", "px_last": "close",
    "vol": "volume",
}
REPAIR_HINT = "or set data.repair: true"


def validate_prices(
    raw: pd.DataFrame,
    *,
    repair: bool = True,
    max_gap: int = 5,
    origin: str = "prices",
    start: str | None = None,
    end: str | None = None,
) -> pd.DataFrame:
    """The checks and repairs of :func:`~harness.data.load_prices` on a frame already in memory.

    ``raw`` has a date column (``date``/``datetime``/``timestamp`` in any case, or a first column
    of dates) or a ``DatetimeIndex``, and at least a close or adjusted-close column. Date strings
    are read in one format, day or month first as the dates make unambiguous
    (:func:`harness.data.files.parse_dates`; write YYYY-MM-DD to be safe). Rows outside
    ``[start, end)`` are dropped right after sorting, so problems there do not matter. Missing
    prices are filled; missing volumes stay NaN; one-day price spikes are repaired
    (:mod:`harness.data.spikes`).
    """
    found = [str(col) for col in raw.columns]
    frame = date_indexed(raw, origin)
    frame = _price_columns(frame, origin, repair, found)
    frame = _ordered(frame, origin, repair)
    frame = _trim(frame, start, end, origin)
    frame = _gaps_filled(frame, origin, repair, max_gap)
    _check_positive(frame, origin)
    frame = without_spikes(frame, [col for col in PRICE_COLUMNS if col in frame.columns], origin, repair)
    return _completed(frame)


# --------------------------------------------------------------------------------------------
# Validation steps (each takes and returns a frame)


def canonical_column(column: Any) -> str | None:
    """The price column a header means (``Adj Close`` → ``adj_close``), or None for an unknown one."""
    return ALIASES.get(re.sub(r"[\s\-]+", "_", str(column).strip().lower()))


def _price_columns(frame: pd.DataFrame, origin: str, repair: bool, found: list[str]) -> pd.DataFrame:
    names = {col: canonical_column(col) for col in frame.columns}
    kept = {col: name for col, name in names.items() if name is not None}
    if not {"close", "adj_close"} & set(kept.values()):
        raise DataError(
            f"{origin}: no price column among {found}; name one 'Close' or 'Adj Close' "
            "(Yahoo layout: Date, Open, High, Low, Close, Adj Close, Volume)"
        )
    if len(set(kept.values())) < len(kept):
        raise DataError(f"{origin}: several columns mean the same thing ({list(map(str, kept))}); keep one of each")
    unknown = [str(col) for col in names if col not in kept]
    if unknown:
        _repair_or_raise(repair, f"{origin}: unknown columns {unknown}", "dropped them", f"remove them {REPAIR_HINT}")
    frame = pd.DataFrame({name: _numeric(frame[col], name, origin) for col, name in kept.items()}, index=frame.index)
    frame = frame.dropna(axis=1, how="all")
    if not {"close", "adj_close"} & set(frame.columns):
        raise DataError(f"{origin}: the price columns are empty; fill 'Close' or 'Adj Close'")
    return frame


def _numeric(values: pd.Series, name: str, origin: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(np.float64)
    numbers = pd.to_numeric(values, errors="coerce")
    text = values.astype(str).str.strip().str.lower()
    bad = np.flatnonzero((numbers.isna() & values.notna() & ~text.isin(NA_STRINGS)).to_numpy())
    if len(bad):
        raise DataError(
            f"{origin}: non-numeric value '{values.iloc[bad[0]]}' in column '{name}' on "
            f"{values.index[bad[0]]:%Y-%m-%d}; fix or remove that row"
        )
    return numbers.astype(np.float64)


def _ordered(frame: pd.DataFrame, origin: str, repair: bool) -> pd.DataFrame:
    dates = frame.index
    if not dates.is_monotonic_increasing:
        first = int(np.flatnonzero(np.diff(dates.to_numpy()) < np.timedelta64(0))[0]) + 1
        _repair_or_raise(
            repair,
            f"{origin}: dates are not sorted ({dates[first]:%Y-%m-%d} comes after {dates[first - 1]:%Y-%m-%d})",
            "sorted them", f"sort the file {REPAIR_HINT}",
        )
        frame = frame.sort_index(kind="stable")  # stable: "keep last" below means last in the file
    duplicated = frame.index.duplicated(keep="last")
    if duplicated.any():
        _repair_or_raise(
            repair,
            f"{origin}: {int(duplicated.sum())} duplicated dates (first {frame.index[duplicated][0]:%Y-%m-%d})",
            "kept the last row of each", f"remove the duplicates {REPAIR_HINT}",
        )
        frame = frame[~duplicated]
    return frame


def _gaps_filled(frame: pd.DataFrame, origin: str, repair: bool, max_gap: int) -> pd.DataFrame:
    prices = [col for col in PRICE_COLUMNS if col in frame.columns]
    missing = frame[prices].isna().to_numpy()
    complete = np.flatnonzero(~missing.any(axis=1))
    if not len(complete):
        raise DataError(f"{origin}: no row has all of {prices}; fill the missing prices or drop the sparse column")
    lead = int(complete[0])
    if lead:
        _repair_or_raise(
            repair, f"{origin}: {lead} leading rows with missing prices (before {frame.index[lead]:%Y-%m-%d})",
            "dropped them", f"remove them {REPAIR_HINT}",
        )
        frame, missing = frame.iloc[lead:], missing[lead:]
    if not missing.any():
        return frame
    row, col = np.argwhere(missing)[0]
    longest, where = _longest_run(missing)
    if longest > max_gap:
        raise DataError(
            f"{origin}: {longest} missing prices in a row in '{prices[where[1]]}' from "
            f"{frame.index[where[0]]:%Y-%m-%d}; at most {max_gap} are filled: fix the file or trim data.start/end"
        )
    _repair_or_raise(
        repair,
        f"{origin}: {int(missing.sum())} missing prices (first in '{prices[col]}' on {frame.index[row]:%Y-%m-%d})",
        f"carried the last price forward (longest gap {longest} rows)", f"fill them {REPAIR_HINT}",
    )
    return frame.assign(**{col: frame[col].ffill() for col in prices})


def _longest_run(missing: np.ndarray) -> tuple[int, tuple[int, int]]:
    """Length and (start row, column) of the longest run of True down any column."""
    best, where = 0, (0, 0)
    for col in range(missing.shape[1]):
        padded = np.concatenate([[0], missing[:, col].astype(np.int8), [0]])
        edges = np.diff(padded)
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if len(starts):
            k = int(np.argmax(stops - starts))
            if stops[k] - starts[k] > best:
                best, where = int(stops[k] - starts[k]), (int(starts[k]), col)
    return best, where


def _check_positive(frame: pd.DataFrame, origin: str) -> None:
    checks = [(col, frame[col].to_numpy() <= 0) for col in PRICE_COLUMNS if col in frame.columns]
    if "volume" in frame.columns:
        checks.append(("volume", frame["volume"].to_numpy() < 0))
    bad = [(int(np.argmax(mask)), col) for col, mask in checks if mask.any()]
    if bad:
        row, col = min(bad, key=lambda item: item[0])
        what, rule = ("negative volume", "volume must be >= 0") if col == "volume" else (
            "non-positive price", "prices must be > 0")
        raise DataError(
            f"{origin}: {what} {frame[col].iloc[row]:g} in '{col}' on {frame.index[row]:%Y-%m-%d}; "
            f"{rule}: fix or remove that row"
        )


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    """All six columns, in order: missing ones synthesised from close (see :func:`~harness.data.load_prices`)."""
    close = frame["close"] if "close" in frame else frame["adj_close"]
    adj_close = frame["adj_close"] if "adj_close" in frame else close
    open_ = frame["open"] if "open" in frame else close.shift(1).fillna(close)
    out = pd.DataFrame({
        "open": open_,
        "high": frame["high"] if "high" in frame else np.maximum(open_, close),
        "low": frame["low"] if "low" in frame else np.minimum(open_, close),
        "close": close,
        "adj_close": adj_close,
        "volume": frame["volume"] if "volume" in frame else np.nan,
    }, index=frame.index)
    return out.astype(np.float64)


def _repair_or_raise(repair: bool, problem: str, done: str, fix: str) -> None:
    if not repair:
        raise DataError(f"{problem}; {fix}")
    log.warning("%s; %s (data.repair: false makes this an error)", problem, done)


def _trim(prices: pd.DataFrame, start: str | None, end: str | None, origin: str) -> pd.DataFrame:
    keep = np.ones(len(prices), dtype=bool)
    if start is not None:
        keep &= prices.index >= as_timestamp(start, "data.start")
    if end is not None:
        keep &= prices.index < as_timestamp(end, "data.end")
    if not keep.any():
        raise DataError(
            f"{origin}: no rows in [{start}, {end}); the data spans "
            f"{prices.index[0]:%Y-%m-%d} to {prices.index[-1]:%Y-%m-%d}: change data.start/end"
        )
    return prices[keep]


def as_timestamp(value: Any, field: str) -> pd.Timestamp:
    """A config date as a tz-naive ``Timestamp``; a :class:`ConfigError` naming ``field`` otherwise."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{field}: cannot read {value!r} as a date; use YYYY-MM-DD") from None
    if pd.isna(stamp):
        raise ConfigError(f"{field}: cannot read {value!r} as a date; use YYYY-MM-DD")
    return stamp.tz_localize(None) if stamp.tz is not None else stamp
