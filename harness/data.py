"""Prices: loading, validation and repair (design section 3). The only module that imports yfinance.

Every source ends in the same frame: a sorted, unique ``DatetimeIndex`` named ``date`` and float
columns ``open, high, low, close, adj_close, volume``. Each problem in the input is either a
one-line :class:`~harness.errors.DataError` naming the fix, or an explicit repair logged on the
``harness.data`` logger (with ``repair=False`` every repair becomes an error instead).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError, DataError, did_you_mean, unknown_name

log = logging.getLogger("harness.data")

COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
DATE_NAMES = ("date", "datetime", "timestamp")
# Normalised header (lower case, spaces/hyphens → "_") → canonical column.
ALIASES = {
    **{name: name for name in COLUMNS},
    "adjclose": "adj_close", "adjusted_close": "adj_close", "adj_price": "adj_close",
    "price": "close", "last": "close", "px_last": "close",
    "vol": "volume",
}
NA_STRINGS = frozenset({"", "null", "nan", "na", "n/a", "none", "-", "."})
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = "data/sp500.csv"
CSV_HINT = f"data: {{source: csv, path: {DEFAULT_PATH}}}"
REPAIR_HINT = "or set data.repair: true"
TRADING_DAYS = 252


# --------------------------------------------------------------------------------------------
# Entry point


def load_prices(
    source: str = "csv",
    *,
    path: str | os.PathLike | None = None,
    tickers: str | list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    interval: str = "1d",
    cache_dir: str | os.PathLike = "data/cache",
    synthetic: dict | None = None,
    repair: bool = True,
    min_rows: int = 2,
    max_gap: int = 5,
) -> pd.DataFrame:
    """Load, validate and (where allowed) repair daily prices.

    Parameters
    ----------
    source
        ``csv`` or ``parquet`` (a file; the reader follows the file's suffix, so either name
        reads either format), ``yfinance`` (one ticker, cached) or ``synthetic`` (seeded paths).
    path
        The file for ``csv``/``parquet``; default the bundled ``data/sp500.csv``. A relative path
        that does not exist under the working directory is also looked up under the repository.
    tickers, interval, cache_dir
        For ``yfinance``: exactly one ticker; the download is cached as
        ``cache_dir/<ticker>_<interval>_<start>_<end>.parquet`` and a cached file is always
        used first (delete it to download again).
    start, end
        Keep rows with ``start <= date < end`` (``end`` exclusive, as in yfinance), for every source.
    synthetic
        For ``synthetic``: ``{"model": "gbm" | "heston" | "regime", "seed": 0, ...}``; see
        :func:`simulate` for the parameters.
    repair
        Sort unsorted dates, keep the last of duplicated dates, drop leading rows with missing
        prices, carry prices forward over gaps of at most ``max_gap`` rows and drop unknown
        columns, each logged as a warning. ``False`` makes each of these an error.
    min_rows
        Fewer rows than this (after repairs and trimming) is an error.

    Returns
    -------
    DataFrame indexed by ``date`` with float columns ``open, high, low, close, adj_close, volume``.
    Missing columns are synthesised from what the source has, for sources with one price column:
    ``adj_close`` and ``close`` stand in for each other, ``open`` is the previous close (the first
    row's own close), ``high``/``low`` are the max/min of open and close, ``volume`` is NaN.
    """
    if source in ("csv", "parquet"):
        path = DEFAULT_PATH if path is None else path
        raw, origin = _read_file(_resolve(path)), str(path)
    elif source == "yfinance":
        raw, origin = _yfinance_raw(tickers, start, end, interval, Path(cache_dir))
    elif source == "synthetic":
        raw, origin = _synthetic_raw(synthetic), f"synthetic {(synthetic or {}).get('model', 'gbm')}"
    else:
        raise unknown_name("data source", source, ("csv", "parquet", "yfinance", "synthetic"))
    prices = validate_prices(raw, repair=repair, max_gap=max_gap, origin=origin, start=start, end=end)
    if len(prices) < min_rows:
        raise DataError(
            f"{origin}: {len(prices)} rows, but at least {min_rows} are needed; "
            "use a longer file or date range, or shorter windows"
        )
    return prices


def validate_prices(
    raw: pd.DataFrame,
    *,
    repair: bool = True,
    max_gap: int = 5,
    origin: str = "prices",
    start: str | None = None,
    end: str | None = None,
) -> pd.DataFrame:
    """The checks and repairs of :func:`load_prices` on a frame already in memory.

    ``raw`` has a date column (``date``/``datetime``/``timestamp`` in any case, or a first column
    of dates) or a ``DatetimeIndex``, and at least a close or adjusted-close column. Date strings
    are read in the format of the first one; an ambiguous ``01/02/2000`` is month first, as in
    the bundled Yahoo files (write YYYY-MM-DD to be safe). Rows outside
    ``[start, end)`` are dropped right after sorting, so problems there do not matter. Missing
    prices are filled; missing volumes stay NaN.
    """
    found = [str(col) for col in raw.columns]
    frame = _date_indexed(raw, origin)
    frame = _price_columns(frame, origin, repair, found)
    frame = _ordered(frame, origin, repair)
    frame = _trim(frame, start, end, origin)
    frame = _gaps_filled(frame, origin, repair, max_gap)
    _check_positive(frame, origin)
    return _completed(frame)


def fingerprint(df: pd.DataFrame) -> str:
    """A short, stable sha256 hex (16 chars) of the frame's columns, dates and values."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, df.columns)).encode())
    index = df.index
    if isinstance(index, pd.DatetimeIndex):
        digest.update(index.as_unit("us").to_numpy().view("i8").astype("<i8").tobytes())
    else:
        digest.update("\x1f".join(map(str, index)).encode())
    values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.where(np.isnan(values), np.nan, values)  # one NaN bit pattern
    digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Files


def _resolve(path: str | os.PathLike) -> Path:
    file = Path(path).expanduser()
    if not file.exists() and not file.is_absolute() and (ROOT / file).exists():
        return ROOT / file
    return file


def _read_file(file: Path) -> pd.DataFrame:
    """The file as read, any columns; errors for missing, empty or unreadable files."""
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "not found"
        raise DataError(f"{file}: {what}; check data.path (bundled: data/sp500.csv, data/nasdaq.csv)")
    if file.stat().st_size == 0:
        raise DataError(f"{file}: empty file; point data.path at a CSV or parquet file with dates and prices")
    if file.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(file)
    return _read_csv(file)


def _read_parquet(file: Path) -> pd.DataFrame:
    import pyarrow

    try:
        raw = pd.read_parquet(file)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise DataError(f"{file}: not a readable parquet file ({_first_line(exc)}); check the file") from None
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis(raw.index.name or "date").reset_index()
    return raw


def _read_csv(file: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(file, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: empty file; point data.path at a CSV with a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{file}: malformed CSV ({_first_line(exc)}); fix the file or export it again") from None
    if raw.empty:
        raise DataError(f"{file}: the CSV has a header but no rows; add data or use data/sp500.csv")
    return raw


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(". ") if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Validation steps (each takes and returns a frame)


def _date_indexed(raw: pd.DataFrame, origin: str) -> pd.DataFrame:
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis(raw.index.name or "date").reset_index()
    column = _date_column(raw, origin)
    dates = _parse_dates(raw[column], column, origin)
    frame = raw.drop(columns=[column])
    frame.index = pd.DatetimeIndex(dates, name="date").as_unit("us")
    return frame


def _date_column(raw: pd.DataFrame, origin: str) -> Any:
    lower = {str(col).strip().lower(): col for col in raw.columns}
    for name in DATE_NAMES:
        if name in lower:
            return lower[name]
    if len(raw.columns) and _all_dates(raw[raw.columns[0]]):
        return raw.columns[0]
    raise DataError(
        f"{origin}: no date column among {[str(c) for c in raw.columns]}; "
        "name the date column 'date' (or put the dates first)"
    )


def _all_dates(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values) or values.isna().any():
        return False
    try:
        pd.to_datetime(values)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _parse_dates(values: pd.Series, column: Any, origin: str) -> pd.Series:
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise DataError(f"{origin}: row {missing[0] + 1} has no date in column '{column}'; fill or remove that row")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        raise DataError(f"{origin}: column '{column}' holds numbers, not dates; write dates as YYYY-MM-DD")
    try:
        dates = pd.to_datetime(values)
    except (ValueError, TypeError, OverflowError):
        # pandas infers the format from the first value; name the first value that breaks it.
        coerced = pd.to_datetime(values, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy())
        row = bad[0] if len(bad) else 0
        raise DataError(
            f"{origin}: unparseable date '{values.iloc[row]}' in column '{column}' (row {row + 1}); "
            "write all dates in one format, e.g. YYYY-MM-DD"
        ) from None
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)  # keep the exchange's wall-clock date
    return dates


def _price_columns(frame: pd.DataFrame, origin: str, repair: bool, found: list[str]) -> pd.DataFrame:
    names = {col: ALIASES.get(re.sub(r"[\s\-]+", "_", str(col).strip().lower())) for col in frame.columns}
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
    """All six columns, in order: missing ones synthesised from close (see :func:`load_prices`)."""
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
        keep &= prices.index >= _timestamp(start, "data.start")
    if end is not None:
        keep &= prices.index < _timestamp(end, "data.end")
    if not keep.any():
        raise DataError(
            f"{origin}: no rows in [{start}, {end}); the data spans "
            f"{prices.index[0]:%Y-%m-%d} to {prices.index[-1]:%Y-%m-%d}: change data.start/end"
        )
    return prices[keep]


def _timestamp(value: Any, field: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{field}: cannot read {value!r} as a date; use YYYY-MM-DD") from None
    if pd.isna(stamp):
        raise ConfigError(f"{field}: cannot read {value!r} as a date; use YYYY-MM-DD")
    return stamp.tz_localize(None) if stamp.tz is not None else stamp


# --------------------------------------------------------------------------------------------
# yfinance (with a parquet cache)


def cache_path(ticker: str, interval: str, start: str | None, end: str | None, cache_dir: str | os.PathLike) -> Path:
    """Where a yfinance download is cached: ``cache_dir/<ticker>_<interval>_<start>_<end>.parquet``."""
    parts = [ticker, interval, str(start).lower() if start is None else str(start),
             str(end).lower() if end is None else str(end)]
    name = "_".join(re.sub(r"[^A-Za-z0-9^.=\-]", "-", part) for part in parts)
    return Path(cache_dir) / f"{name}.parquet"


def _yfinance_raw(
    tickers: str | list[str] | None, start: str | None, end: str | None, interval: str, cache_dir: Path
) -> tuple[pd.DataFrame, str]:
    ticker = _one_ticker(tickers)
    cache = cache_path(ticker, interval, start, end, cache_dir)
    origin = f"yfinance {ticker}"
    if cache.is_file():
        log.info("%s: using the cache %s", origin, cache)
        return _read_file(cache), origin
    raw = _download(ticker, start, end, interval)
    if raw is None:
        raise DataError(
            f"{origin}: no network (or no data for this ticker) and no cache at {cache}; "
            f"connect once to fill the cache, or use the bundled data: {CSV_HINT}"
        )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        raw.to_parquet(cache)
    except OSError as exc:
        log.warning("%s: could not write the cache %s (%s); continuing without it", origin, cache, _first_line(exc))
    return raw, origin


def _one_ticker(tickers: str | list[str] | None) -> str:
    names = [tickers] if isinstance(tickers, str) else list(tickers or [])
    if len(names) != 1:
        raise ConfigError(
            f"data.tickers: one ticker per backtest, got {names}; "
            "run one backtest per ticker (e.g. tickers: [^GSPC])"
        )
    return str(names[0])


def offline() -> bool:
    """True when ``HARNESS_OFFLINE`` is set (1/true/yes): the yfinance path never uses the network."""
    return os.environ.get("HARNESS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _reachable(host: str = "query2.finance.yahoo.com", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download(ticker: str, start: str | None, end: str | None, interval: str) -> pd.DataFrame | None:
    """The raw yfinance frame (a Date column and Yahoo's price columns), or None when offline."""
    if offline() or not _reachable():
        return None
    import yfinance

    span = {"start": start, "end": end} if start is not None else {"period": "max", "end": end}
    try:
        raw = yfinance.download(
            ticker, **span, interval=interval, auto_adjust=False,
            actions=False, progress=False, threads=False, multi_level_index=False,
        )
    except Exception as exc:  # noqa: BLE001 - yfinance surfaces network failures as many types
        log.warning("yfinance %s: download failed (%s)", ticker, _first_line(exc))
        return None
    if raw is None or raw.empty:
        return None
    return yfinance_frame(raw, ticker)


def yfinance_frame(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """A ``yfinance.download`` result for one ticker as a flat frame with a ``Date`` column."""
    if isinstance(raw.columns, pd.MultiIndex):
        level = next((i for i in range(raw.columns.nlevels) if ticker in raw.columns.get_level_values(i)), None)
        raw = raw.xs(ticker, axis=1, level=level) if level is not None else raw.droplevel(-1, axis=1)
    raw = raw.rename_axis("Date").reset_index()
    raw.columns = [str(col) for col in raw.columns]
    return raw


# --------------------------------------------------------------------------------------------
# Synthetic paths

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
    dates = pd.bdate_range(_timestamp(params["start"], "data.synthetic.start"), periods=n, name="date")
    return SyntheticPath(dates=dates.as_unit("us"), close=close, state=state)


def _synthetic_raw(spec: dict | None) -> pd.DataFrame:
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
