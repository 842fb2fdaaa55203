"""Reading price files (CSV or parquet) and turning their date column into the index.

Errors name the file and the fix; nothing here repairs data (see :mod:`harness.data.cleaning`).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from harness.errors import DataError, first_line

ROOT = Path(__file__).resolve().parents[2]  # the repository (harness/data/files.py → ../..)
DEFAULT_PATH = "data/sp500.csv"
DATE_NAMES = ("date", "datetime", "timestamp")
NA_STRINGS = frozenset({"", "null", "nan", "na", "n/a", "none", "-", "."})
"""Cell texts (lower case) that mean a missing value, not a bad number."""


# --------------------------------------------------------------------------------------------
# Files


def resolve(path: str | os.PathLike) -> Path:
    """``path``, or the same relative path under the repository when it is not found here."""
    file = Path(path).expanduser()
    if not file.exists() and not file.is_absolute() and (ROOT / file).exists():
        return ROOT / file
    return file


def read_file(file: Path, *, delimiter: str | None = None, decimal: str | None = None,
              dayfirst: bool | None = None) -> pd.DataFrame:
    """The file as read, any columns, its date column parsed; errors for missing, empty or
    unreadable files.

    A CSV's field separator (``,`` ``;`` tab ``|``) and decimal mark (``.`` or ``,``) are read from
    the file when not given (:func:`csv_dialect`), and so is the order of day and month in its
    dates (:func:`parse_dates`); when the file leaves one open, the error names the option
    (``data.delimiter``, ``data.decimal``, ``data.dayfirst``).
    """
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "not found"
        raise DataError(f"{file}: {what}; check data.path (bundled: data/sp500.csv, data/nasdaq.csv)")
    if file.stat().st_size == 0:
        raise DataError(f"{file}: empty file; point data.path at a CSV or parquet file with dates and prices")
    if file.suffix.lower() in (".parquet", ".pq"):
        raw = _read_parquet(file)
    else:
        raw = _read_csv(file, *csv_dialect(file, delimiter, decimal))
    column = find_date_column(raw)
    if column is not None:
        raw = raw.copy()
        raw[column] = parse_dates(raw[column], column, str(file), dayfirst)
    return raw


def _read_parquet(file: Path) -> pd.DataFrame:
    import pyarrow

    try:
        raw = pd.read_parquet(file)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise DataError(f"{file}: not a readable parquet file ({first_line(exc)}); check the file") from None
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis(raw.index.name or "date").reset_index()
    return raw


def _read_csv(file: Path, delimiter: str, decimal: str, thousands: str | None) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():  # pandas' parser warnings are not for the user: errors say what to fix
            warnings.simplefilter("ignore")
            raw = pd.read_csv(file, sep=delimiter, decimal=decimal, skipinitialspace=True, low_memory=False,
                              dtype=None if thousands is None else str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{file}: empty file; point data.path at a CSV with a header and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{file}: malformed CSV ({first_line(exc)}); fix the file or export it again") from None
    if raw.empty:
        raise DataError(f"{file}: the CSV has a header but no rows; add data or use data/sp500.csv")
    return raw if thousands is None else _ungrouped(raw, decimal, thousands)


def _ungrouped(raw: pd.DataFrame, decimal: str, thousands: str) -> pd.DataFrame:
    """Columns read as text whose every value is a number like ``1.228,10`` (``1,228.10``) as floats.

    pandas' own ``thousands=`` would also strip the dots of ``13.01.2012``: dates stay text here.
    """
    d, t = re.escape(decimal), re.escape(thousands)
    number = re.compile(rf"^[+-]?(?:\d{{1,3}}(?:{t}\d{{3}})+|\d+)(?:{d}\d+)?$")
    out = raw.copy()
    for column in raw.columns:
        values = raw[column].dropna().astype(str).str.strip()
        values = values[~values.str.lower().isin(NA_STRINGS)]
        if len(values) and values.map(lambda v: bool(number.match(v))).all():
            text = raw[column].astype("string").str.strip().str.replace(thousands, "", regex=False)
            numbers = pd.to_numeric(text.str.replace(decimal, ".", regex=False), errors="coerce")
            out[column] = numbers.astype(np.float64)  # the missing-value words become NaN, as elsewhere
    return out



# --------------------------------------------------------------------------------------------
# The CSV dialect: field separator and decimal mark

DELIMITERS = (",", ";", "\t", "|")
"""The field separators read from a file (any other one character: ``data.delimiter``)."""
SAMPLE_LINES = 200
"""Lines (after the header) a CSV's dialect is read from."""
_NAMES = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'", ".": "'.'"}


def csv_dialect(file: Path, delimiter: str | None = None, decimal: str | None = None
                ) -> tuple[str, str, str | None]:
    """``(delimiter, decimal, thousands)`` of a CSV file: the given ones, else read from its first lines.

    The delimiter is the one candidate of :data:`DELIMITERS` that splits the header and every
    sampled line into the same number (>= 2) of fields, ``,`` when it does (or when none does:
    the parser then names the malformed line). The decimal mark is ``.`` in a comma-separated
    file; otherwise it is read from the numbers: ``1228,10`` or ``1.228,10`` mean a decimal comma,
    ``1228.10`` or ``1,228.10`` a decimal point. What the file leaves open is a
    :class:`DataError` naming ``data.delimiter`` or ``data.decimal``.
    """
    lines = _sample(file)
    if delimiter is None:
        delimiter = _delimiter(lines, file)
    if delimiter == ",":
        if decimal == ",":
            raise DataError(f"{file}: ',' separates the fields, so it cannot be the decimal mark; set data.delimiter "
                            "to the file's separator or data.decimal: '.'")
        return ",", ".", None
    found, groups = _decimal(lines[1:], delimiter, file, decimal)
    thousands = "." if found == "," else ","
    return delimiter, found, thousands if thousands in groups and thousands != delimiter else None


def _sample(file: Path) -> list[str]:
    lines: list[str] = []
    try:
        with open(file, encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) > SAMPLE_LINES:
                    break
    except OSError as exc:
        raise DataError(f"{file}: cannot read the file ({exc.strerror or exc}); check data.path") from None
    return lines


def _fields(lines: list[str], delimiter: str) -> list[list[str]]:
    return list(csv.reader(lines, delimiter=delimiter, skipinitialspace=True))


def _delimiter(lines: list[str], file: Path) -> str:
    consistent = [candidate for candidate in DELIMITERS
                  if len(counts := {len(row) for row in _fields(lines, candidate)}) == 1 and counts.pop() >= 2]
    if not consistent or "," in consistent:
        return ","
    if len(consistent) == 1:
        return consistent[0]
    names = " and ".join(_NAMES[c] for c in consistent)
    raise DataError(f"{file}: fields could be separated by {names}; set data.delimiter to the one the file uses")


_COMMA_DECIMAL = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")  # 1228,10 or 1.228,10
_POINT_DECIMAL = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d+$")  # 1228.10 or 1,228.10
_GROUPED = re.compile(r"^[+-]?\d{1,3}([.,])\d{3}$")  # 1,234 or 1.234: a thousands group, or 3 decimals


def _decimal(rows: list[str], delimiter: str, file: Path, given: str | None) -> tuple[str, set[str]]:
    """The decimal mark of the sampled rows (``given`` if set), and the marks that may group thousands."""
    comma = point = unclear = None
    groups: set[str] = set()
    for row in _fields(rows, delimiter):
        for value in (field.strip() for field in row):
            if match := _GROUPED.match(value):
                unclear = unclear or value
                groups.add(match.group(1))
            elif _COMMA_DECIMAL.match(value):
                comma = comma or value
                groups |= {"."} & set(value)
            elif _POINT_DECIMAL.match(value):
                point = point or value
                groups |= {","} & set(value)
    if given is not None:
        return given, groups
    if comma and point:
        raise DataError(f"{file}: numbers are written both as '{comma}' and as '{point}'; set data.decimal ('.' or ',')")
    if not (comma or point) and unclear:
        raise DataError(f"{file}: '{unclear}' could be a decimal or a thousands separator; set data.decimal ('.' or ',')")
    return ("," if comma else "."), groups


# --------------------------------------------------------------------------------------------
# Dates


def date_indexed(raw: pd.DataFrame, origin: str, dayfirst: bool | None = None) -> pd.DataFrame:
    """``raw`` without its date column, indexed by those dates (``DatetimeIndex`` named ``date``)."""
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.rename_axis(raw.index.name or "date").reset_index()
    column = find_date_column(raw)
    if column is None:
        raise DataError(f"{origin}: no date column among {[str(c) for c in raw.columns]}; "
                        f"name the date column 'date' (or put the dates first){_delimiter_hint(raw)}")
    dates = parse_dates(raw[column], column, origin, dayfirst)
    frame = raw.drop(columns=[column])
    frame.index = pd.DatetimeIndex(dates, name="date").as_unit("us")
    return frame


def find_date_column(raw: pd.DataFrame) -> Any:
    """The date column: ``date``/``datetime``/``timestamp`` in any case, else a first column of dates, else None."""
    lower = {str(col).strip().lower(): col for col in raw.columns}
    for name in DATE_NAMES:
        if name in lower:
            return lower[name]
    if len(raw.columns) and _all_dates(raw[raw.columns[0]]):
        return raw.columns[0]
    return None


def _delimiter_hint(raw: pd.DataFrame) -> str:
    """A one-column file whose header holds another separator: say how to name it."""
    if len(raw.columns) != 1:
        return ""
    found = [c for c in DELIMITERS if c in str(raw.columns[0])]
    return f", or set data.delimiter if the fields are separated by {_NAMES[found[0]]}" if found else ""


def _all_dates(values: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if pd.api.types.is_numeric_dtype(values) or values.isna().any():
        return False
    return any(not dates.isna().any() for dates in _readings(values.astype(str).str.strip(), None).values())


def parse_dates(values: pd.Series, column: Any, origin: str, dayfirst: bool | None = None) -> pd.Series:
    """The dates of ``values`` (tz-naive wall-clock times), all read in one format.

    ISO dates are read as such. Otherwise the format is guessed from the first value, day first
    and month first: a file of ``13/01/2012`` can only be day first, one of ``01/13/2012`` only
    month first. When both orders read every value to different dates (no day past 12) and only
    one of them is sorted, that one is taken; else the dates are ambiguous: a :class:`DataError`
    naming ``data.dayfirst``. ``dayfirst`` set tries that order only. No pandas warning is shown.
    """
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise DataError(f"{origin}: row {missing[0] + 1} has no date in column '{column}'; fill or remove that row")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        raise DataError(f"{origin}: column '{column}' holds numbers, not dates; write dates as YYYY-MM-DD")
    if pd.api.types.is_datetime64_any_dtype(values):
        dates = values
    else:
        text = values.astype(str).str.strip()
        readings = _readings(text, dayfirst)
        whole = {kind: dates for kind, dates in readings.items() if not dates.isna().any()}
        if not whole:
            row = _first_unread(readings)
            raise DataError(
                f"{origin}: unparseable date '{values.iloc[row]}' in column '{column}' (row {row + 1}); "
                "write all dates in one format, e.g. YYYY-MM-DD"
                + (f" (data.dayfirst: {str(dayfirst).lower()} is set)" if dayfirst is not None else "")
            )
        dates = _one_reading(whole, text, column, origin)
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)  # keep the exchange's wall-clock date
    return dates


def _readings(text: pd.Series, dayfirst: bool | None) -> dict[str, pd.Series]:
    """Each way of reading ``text`` (``iso``, ``day first``, ``month first``, ``as written``) → its
    dates (NaT where a value does not parse that way)."""
    with warnings.catch_warnings():  # pandas warns while it guesses formats; we report ourselves
        warnings.simplefilter("ignore")
        iso = _parsed(text, format="ISO8601")
        if not iso.isna().any():
            return {"iso": iso}
        wanted = None if dayfirst is None else ("day first" if dayfirst else "month first")
        formats: dict[str, str] = {}
        for order in (True, False):
            guessed = guess_datetime_format(text.iloc[0], dayfirst=order)
            if guessed is None:
                continue
            if _order(guessed) is None:
                formats.setdefault("as written", guessed)
                continue
            for fmt in (guessed, _swapped(guessed)):
                if wanted in (None, _order(fmt)):
                    formats.setdefault(_order(fmt), fmt)
        readings = {"iso": iso, **{kind: _parsed(text, format=fmt) for kind, fmt in formats.items()}}
        if not formats:
            readings["as written"] = _parsed(text, format="mixed", dayfirst=bool(dayfirst))
    return readings


def _parsed(text: pd.Series, **how: Any) -> pd.Series:
    """``text`` as dates in one format (NaT where a value does not fit; all NaT when none can)."""
    try:
        dates = pd.to_datetime(text, errors="coerce", **how)
    except (ValueError, TypeError, OverflowError):  # e.g. mixed time zones
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if not pd.api.types.is_datetime64_any_dtype(dates):
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    return dates


def _swapped(fmt: str) -> str:
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _order(fmt: str) -> str | None:
    """``day first`` / ``month first`` for a format with a day and a month not after a year, else None."""
    if "%d" not in fmt or "%m" not in fmt or fmt.startswith(("%Y", "%y")):
        return None
    return "day first" if fmt.find("%d") < fmt.find("%m") else "month first"


def _one_reading(whole: dict[str, pd.Series], text: pd.Series, column: Any, origin: str) -> pd.Series:
    if set(whole) != {"day first", "month first"}:
        return next(iter(whole.values()))
    day, month = whole["day first"], whole["month first"]
    if day.equals(month):
        return day
    ordered = [kind for kind, dates in whole.items() if dates.is_monotonic_increasing]
    if len(ordered) == 1:
        return whole[ordered[0]]
    row = int(np.flatnonzero((day != month).to_numpy())[0])
    raise DataError(
        f"{origin}: dates such as '{text.iloc[row]}' in column '{column}' read both day first "
        f"({day.iloc[row]:%Y-%m-%d}) and month first ({month.iloc[row]:%Y-%m-%d}); set data.dayfirst: "
        "true or false"
    )


def _first_unread(readings: dict[str, pd.Series]) -> int:
    """The first row the reading that parses the most rows cannot parse."""
    best = min(readings.values(), key=lambda dates: int(dates.isna().sum()))
    return int(np.flatnonzero(best.isna().to_numpy())[0])
