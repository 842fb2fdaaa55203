"""Prices: loading, validation and repair (design section 3).

Every one-asset source ends in the same frame: a sorted, unique ``DatetimeIndex`` named ``date``
and float columns ``open, high, low, close, adj_close, volume``; several assets end in a panel
(:mod:`harness.data.panel`): the same index, one float column of adjusted closes per ticker.
Each problem in the input is either a one-line :class:`~harness.errors.DataError` naming the fix,
or an explicit repair logged on the ``harness.data`` logger (with ``repair=False`` every repair
becomes an error instead).

The modules follow the data flow:

- :mod:`harness.data.files`: reading CSV/parquet files and their date column;
- :mod:`harness.data.cleaning`: validation and the logged repairs (:func:`validate_prices`);
- :mod:`harness.data.yfinance`: the yfinance download and its parquet cache, the only module in
  the repository that imports yfinance;
- :mod:`harness.data.synthetic`: seeded GBM/Heston/regime paths (:func:`simulate`);
- :mod:`harness.data.panel`: several assets in one frame (wide or long files, several yfinance
  tickers): the panel, one column of adjusted closes per ticker (:func:`is_panel`);
- this module: the entry points :func:`load_prices` and :func:`load_data`, and :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harness.data.cleaning import COLUMNS, PRICE_COLUMNS, validate_prices
from harness.data.files import DEFAULT_PATH, read_file, resolve
from harness.data.panel import (
    PANEL_AXIS,
    file_layout,
    file_panel,
    is_panel,
    ticker_list,
    yfinance_panel,
)
from harness.data.synthetic import TRADING_DAYS, SyntheticPath, simulate, synthetic_raw
from harness.data.yfinance import cache_path, offline, yfinance_frame, yfinance_raw
from harness.errors import DataError, unknown_name

if TYPE_CHECKING:
    from harness.config import Config

__all__ = [
    "COLUMNS",
    "DEFAULT_PATH",
    "PANEL_AXIS",
    "PRICE_COLUMNS",
    "TRADING_DAYS",
    "SyntheticPath",
    "cache_path",
    "fingerprint",
    "is_panel",
    "load_data",
    "load_prices",
    "offline",
    "simulate",
    "validate_prices",
    "yfinance_frame",
]


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
    delimiter: str | None = None,
    decimal: str | None = None,
    dayfirst: bool | None = None,
) -> pd.DataFrame:
    """Load, validate and (where allowed) repair daily prices.

    Parameters
    ----------
    source
        ``csv`` or ``parquet`` (a file; the reader follows the file's suffix, so either name
        reads either format), ``yfinance`` (cached) or ``synthetic`` (seeded paths).
    path
        The file for ``csv``/``parquet``; default the bundled ``data/sp500.csv``. A relative path
        that does not exist under the working directory is also looked up under the repository.
        A wide file (a date column and one price column per ticker, e.g. ``data/sp500_panel.csv``)
        or a long one (date, ticker and price columns, dates repeating) gives a panel
        (:mod:`harness.data.panel` says how the layout is told).
    tickers, interval, cache_dir
        For ``yfinance``: one ticker, or several for a panel; each download is cached as
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
    delimiter, decimal, dayfirst
        For files: the CSV field separator, decimal mark and date order; None reads each from the
        file, or names the option when the file leaves it open (:func:`harness.data.files.read_file`).

    Returns
    -------
    One asset: a DataFrame indexed by ``date`` with float columns ``open, high, low, close,
    adj_close, volume``. Several (a wide or long file, several tickers): a panel, indexed by
    ``date`` with one float column of adjusted closes per ticker (NaN before an asset's first
    price and after its last), validated and repaired asset by asset (:func:`is_panel` tells it).
    Missing columns are synthesised from what the source has, for sources with one price column:
    ``adj_close`` and ``close`` stand in for each other, ``open`` is the previous close (the first
    row's own close), ``high``/``low`` are the max/min of open and close, ``volume`` is NaN.
    """
    prices = None
    if source in ("csv", "parquet"):
        path = DEFAULT_PATH if path is None else path
        raw, origin = read_file(resolve(path), delimiter=delimiter, decimal=decimal, dayfirst=dayfirst), str(path)
        kind, frame = file_layout(raw, origin)
        if kind != "single":
            prices = file_panel(kind, frame, origin, repair=repair, max_gap=max_gap, start=start, end=end)
    elif source == "yfinance":
        names = ticker_list(tickers)
        if len(names) > 1:
            origin = f"yfinance {','.join(names)}"
            prices = yfinance_panel(names, start, end, interval, Path(cache_dir), repair=repair, max_gap=max_gap)
        else:
            raw, origin = yfinance_raw(names, start, end, interval, Path(cache_dir))
    elif source == "synthetic":
        raw, origin = synthetic_raw(synthetic), f"synthetic {(synthetic or {}).get('model', 'gbm')}"
    else:
        raise unknown_name("data source", source, ("csv", "parquet", "yfinance", "synthetic"))
    if prices is None:
        prices = validate_prices(raw, repair=repair, max_gap=max_gap, origin=origin, start=start, end=end)
    if len(prices) < min_rows:
        raise DataError(
            f"{origin}: {len(prices)} rows, but at least {min_rows} are needed; "
            "use a longer file or date range, or shorter windows"
        )
    return prices


def load_data(config: Config) -> pd.DataFrame:
    """Prices for the config's data section (the data module validates and repairs): one asset's
    price frame, or a panel for a wide or long file or several ``data.tickers``."""
    data = config.data
    return load_prices(
        data.source,
        path=data.path,
        tickers=data.tickers,
        start=data.start,
        end=data.end,
        interval=data.interval,
        cache_dir=data.cache_dir,
        synthetic=data.synthetic,
        repair=data.repair,
        delimiter=data.delimiter,
        decimal=data.decimal,
        dayfirst=data.dayfirst,
    )


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
