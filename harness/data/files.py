"""Reading price files (CSV or parquet) and turning their date column into the index.

Errors name the file and the fix; nothing here repairs data (see :mod:`harness.data.cleaning`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import DataError, first_line

ROOT = Path(__file__).resolve().parents[2]  # the repository (harness/data/files.py → ../..)
DEFAULT_PATH = "data/sp500.csv"
DATE_NAMES = ("date", "datetime", "timestamp")


# --------------------------------------------------------------------------------------------
# Files


def resolve(path: str | os.PathLike) -> Path:
    """``path``, or the same relative path under the repository when it is not found here."""
    file = Path(path).expanduser()
    if not file.exists() and not file.is_absolute() and (ROOT / file).exists():
        return ROOT / file
    return file


def read_file(file: Path) -> pd.DataFrame:
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
        raise DataError(f"{file}: not a readable parquet file ({first_line(exc)}); check the file") from None
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis(raw.index.name or "date").reset_index()
    return raw


def _read_csv(file: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(file, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: empty file; point data.path at a CSV with a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{file}: malformed CSV ({first_line(exc)}); fix the file or export it again") from None
    if raw.empty:
        raise DataError(f"{file}: the CSV has a header but no rows; add data or use data/sp500.csv")
    return raw


# --------------------------------------------------------------------------------------------
# Dates


def date_indexed(raw: pd.DataFrame, origin: str) -> pd.DataFrame:
    """``raw`` without its date column, indexed by those dates (``DatetimeIndex`` named ``date``)."""
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
