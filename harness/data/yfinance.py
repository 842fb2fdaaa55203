"""The yfinance source, with a parquet cache. The only module in the repository that imports yfinance.

A cached file is always used first; without one the download needs the network, which
``HARNESS_OFFLINE`` (see :func:`offline`) or an unreachable Yahoo host turns off.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from harness.data.files import DEFAULT_PATH, read_file
from harness.errors import ConfigError, DataError, first_line
from harness.provenance import reachable

log = logging.getLogger("harness.data")  # the package's one logger, for every module

YAHOO_HOST = "query2.finance.yahoo.com"
CSV_HINT = f"data: {{source: csv, path: {DEFAULT_PATH}}}"


def cache_path(ticker: str, interval: str, start: str | None, end: str | None, cache_dir: str | os.PathLike) -> Path:
    """Where a yfinance download is cached: ``cache_dir/<ticker>_<interval>_<start>_<end>.parquet``."""
    parts = [ticker, interval, str(start).lower() if start is None else str(start),
             str(end).lower() if end is None else str(end)]
    name = "_".join(re.sub(r"[^A-Za-z0-9^.=\-]", "-", part) for part in parts)
    return Path(cache_dir) / f"{name}.parquet"


def yfinance_raw(
    tickers: str | list[str] | None, start: str | None, end: str | None, interval: str, cache_dir: Path
) -> tuple[pd.DataFrame, str]:
    """The cached or downloaded frame for one ticker, and its origin for messages (several tickers
    are read one by one into a panel: :func:`harness.data.panel.yfinance_panel`)."""
    ticker = _one_ticker(tickers)
    cache = cache_path(ticker, interval, start, end, cache_dir)
    origin = f"yfinance {ticker}"
    if cache.is_file():
        log.info("%s: using the cache %s", origin, cache)
        return read_file(cache), origin
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
        log.warning("%s: could not write the cache %s (%s); continuing without it", origin, cache, first_line(exc))
    return raw, origin


def _one_ticker(tickers: str | list[str] | None) -> str:
    names = [tickers] if isinstance(tickers, str) else list(tickers or [])
    if len(names) != 1:
        raise ConfigError(
            f"data.tickers: one ticker per file, got {names}; "
            "several tickers load as a panel through harness.data.load_prices"
        )
    return str(names[0])


def offline() -> bool:
    """True when ``HARNESS_OFFLINE`` is set (1/true/yes): the yfinance path never uses the network."""
    return os.environ.get("HARNESS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _download(ticker: str, start: str | None, end: str | None, interval: str) -> pd.DataFrame | None:
    """The raw yfinance frame (a Date column and Yahoo's price columns), or None when offline."""
    if offline() or reachable(YAHOO_HOST, 443, timeout=3.0) is not None:
        return None
    import yfinance

    span = {"start": start, "end": end} if start is not None else {"period": "max", "end": end}
    try:
        raw = yfinance.download(
            ticker, **span, interval=interval, auto_adjust=False,
            actions=False, progress=False, threads=False, multi_level_index=False,
        )
    except Exception as exc:  # noqa: BLE001 - yfinance surfaces network failures as many types
        log.warning("yfinance %s: download failed (%s)", ticker, first_line(exc))
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
