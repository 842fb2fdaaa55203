"""Walk-forward windows on integer positions (design section 4).

The arithmetic lives in one place, :meth:`WalkForward.bounds`, on positions ``0..n-1``; calendar
sizes ("3Y") are converted to a number of positions first (:func:`parse_size`) and never reach it.

Window ``k`` (``step`` defaults to ``test``)::

    e_k   = train + k*step                       end of train (exclusive)
    s_k   = e_k - train  (rolling) | 0 (expanding)
    train = [s_k, e_k)   minus the embargo rows of earlier windows
    test  = [e_k + purge, e_k + purge + test)    only full test slices

.. warning::
   ``purge`` rows between train and test must be at least the label horizon: a label that looks
   ``h`` rows ahead, on the last train row, overlaps the test slice unless ``purge >= h``.
   ``embargo`` rows after each test slice are removed from every later train window.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError, HarnessError, did_you_mean

MODES = ("rolling", "expanding")
_CALENDAR = re.compile(r"^\s*(\d+)\s*([YMWD])\s*$", re.IGNORECASE)
_UNITS = {"Y": "years", "M": "months", "W": "weeks", "D": "days"}
_SIZE_HINT = "use a number of rows or a calendar length like '3Y', '6M', '63D', '2W'"


def parse_size(size: int | str, dates: pd.DatetimeIndex | None = None, field: str = "size") -> int:
    """A window size as a number of positions (rows), > 0.

    ``size`` is an integer number of rows (or a string of digits), or a calendar length
    ``"<n>Y" | "<n>M" | "<n>W" | "<n>D"`` (years, months, weeks, calendar days; case-insensitive).
    A calendar length becomes a row count through ``dates`` (sorted): for every start date ``d``
    whose span ``[d, d + length)`` ends within the index (``d + length <= dates[-1]``), count the
    rows dated in ``[d, d + length)``; the size is the lower median of those counts, so it is a
    count that occurs in the data (on daily S&P 500 dates "1Y" gives 252, "2W" gives 10).

    Raises :class:`~harness.errors.ConfigError` naming ``field`` for a malformed or non-positive
    size, or a calendar size without dates, and :class:`~harness.errors.HarnessError` for a
    calendar length longer than the data.
    """
    count, unit = _size_syntax(size, field)
    if unit is None:
        return count
    if dates is None:
        raise ConfigError(
            f"{field}: calendar size {size!r} needs dates; pass dates= or X as a DataFrame with a DatetimeIndex"
        )
    return _calendar_rows(pd.DatetimeIndex(dates), pd.DateOffset(**{_UNITS[unit]: count}), field, size)


def _size_syntax(size: Any, field: str) -> tuple[int, str | None]:
    """(count, unit) of a size; unit None means rows. Checks the syntax and that count > 0."""
    if isinstance(size, str):
        text = size.strip()
        match = _CALENDAR.match(text)
        if not (match or text.isdigit()):
            raise ConfigError(f"{field}: cannot read {size!r} as a size; {_SIZE_HINT}")
        count, unit = (int(match[1]), match[2].upper()) if match else (int(text), None)
    elif isinstance(size, numbers.Integral) and not isinstance(size, bool):
        count, unit = int(size), None
    else:
        raise ConfigError(f"{field}: must be a whole number of rows or a calendar length like '3Y', got {size!r}")
    if count <= 0:
        raise ConfigError(f"{field}: must be > 0, got {size!r}" if unit else f"{field}: must be > 0, got {count}")
    return count, unit


def _calendar_rows(dates: pd.DatetimeIndex, span: pd.DateOffset, field: str, size: Any) -> int:
    if len(dates) == 0 or not dates.is_monotonic_increasing:
        raise HarnessError(f"{field}: calendar size {size!r} needs sorted, non-empty dates; sort the data by date")
    ends = dates + span
    starts = np.flatnonzero(ends <= dates[-1])
    if not len(starts):
        raise HarnessError(
            f"{field}: {size!r} is longer than the data ({dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d}); "
            "use a shorter length or more data"
        )
    counts = np.searchsorted(dates.values, ends[starts].values, side="left") - starts
    return int(np.quantile(counts, 0.5, method="lower"))


def _non_negative(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{field}: must be a whole number of rows >= 0, got {value!r}")
    if value < 0:
        raise ConfigError(f"{field}: must be >= 0, got {value}")
    return int(value)


class WalkForward:
    """Walk-forward splitter, sklearn-compatible (``split``, ``get_n_splits``).

    Parameters
    ----------
    train, test, step
        Sizes in rows, or calendar lengths ("3Y", "6M", "63D", "2W"; see :func:`parse_size`).
        ``step`` (rows between consecutive windows) defaults to ``test``.
    purge
        Rows skipped between the end of train and the start of test (>= label horizon).
    embargo
        Rows after each test slice removed from every later train window.
    mode
        ``rolling`` (train has a fixed length) or ``expanding`` (train starts at row 0).
    dates
        One date per row of ``X``, for calendar sizes; by default ``X.index`` when ``X`` is a
        DataFrame or Series with a ``DatetimeIndex``.

    ``split(X)`` yields ``(train_idx, test_idx)`` int64 position arrays; see the module docstring
    for the window formulas. Only full test slices are produced.
    """

    def __init__(
        self,
        train: int | str,
        test: int | str,
        step: int | str | None = None,
        purge: int = 0,
        embargo: int = 0,
        mode: str = "rolling",
        dates: pd.DatetimeIndex | None = None,
    ) -> None:
        for name, value in (("train", train), ("test", test), ("step", step)):
            if value is not None:
                _size_syntax(value, f"windows.{name}")
        _non_negative(purge, "windows.purge")
        _non_negative(embargo, "windows.embargo")
        if mode not in MODES:
            raise ConfigError(
                f"windows.mode: must be 'rolling' or 'expanding', got {mode!r}{did_you_mean(mode, MODES)}"
            )
        self.train, self.test, self.step = train, test, step
        self.purge, self.embargo, self.mode = int(purge), int(embargo), mode
        self.dates = None if dates is None else pd.DatetimeIndex(dates)

    def __repr__(self) -> str:
        dates = "" if self.dates is None else f", dates=<{len(self.dates)} dates>"
        return (
            f"WalkForward(train={self.train!r}, test={self.test!r}, step={self.step!r}, purge={self.purge}, "
            f"embargo={self.embargo}, mode={self.mode!r}{dates})"
        )

    # -- sizes ---------------------------------------------------------------------------------

    def sizes(self, X: Any = None) -> dict[str, int]:
        """``n`` and the sizes in rows (``train, test, step, purge, embargo``) for data ``X``
        (an array-like, a row count, or None when ``dates`` was given)."""
        n, dates = self._rows(X)
        train = parse_size(self.train, dates, "windows.train")
        test = parse_size(self.test, dates, "windows.test")
        step = test if self.step is None else parse_size(self.step, dates, "windows.step")
        return {"n": n, "train": train, "test": test, "step": step, "purge": self.purge, "embargo": self.embargo}

    def _rows(self, X: Any) -> tuple[int, pd.DatetimeIndex | None]:
        if X is None:
            if self.dates is None:
                raise HarnessError("WalkForward: the number of windows depends on the data; pass X (or dates=)")
            return len(self.dates), self.dates
        if isinstance(X, numbers.Integral) and not isinstance(X, bool):
            n, own = int(X), None
        else:
            n = int(X.shape[0]) if hasattr(X, "shape") else len(X)
            index = getattr(X, "index", None) if isinstance(X, (pd.DataFrame, pd.Series)) else None
            own = index if isinstance(index, pd.DatetimeIndex) else None
        dates = self.dates if self.dates is not None else own
        if dates is not None and len(dates) != n:
            raise HarnessError(f"WalkForward: dates has {len(dates)} entries but X has {n} rows; pass one date per row")
        return n, dates

    # -- the arithmetic (the only place) --------------------------------------------------------

    def bounds(self, X: Any = None) -> np.ndarray:
        """Window bounds as an int64 array ``[K, 4]``: train_start, train_end, test_start, test_end
        (ends exclusive), before the embargo is applied."""
        size = self.sizes(X)
        n, train, test, step, purge = size["n"], size["train"], size["test"], size["step"], size["purge"]
        need = train + purge + test
        if n < need:
            raise HarnessError(
                f"windows: the data has {n} rows but one window needs train {self._show('train', train)} + "
                f"purge {purge} + test {self._show('test', test)} = {need}; shorten windows.train/test or use more data"
            )
        train_end = train + step * np.arange((n - need) // step + 1, dtype=np.int64)
        train_start = train_end - train if self.mode == "rolling" else np.zeros_like(train_end)
        test_start = train_end + purge
        return np.column_stack([train_start, train_end, test_start, test_start + test])

    def _show(self, name: str, rows: int) -> str:
        raw = getattr(self, name)
        return f"{rows} ({raw!r})" if isinstance(raw, str) else str(rows)

    # -- sklearn protocol ----------------------------------------------------------------------

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` int64 position arrays, window by window."""
        bounds = self.bounds(X)
        blocked = np.zeros(int(bounds[-1, 3]) + self.embargo, dtype=bool)
        for k, (train_start, train_end, test_start, test_end) in enumerate(bounds):
            train_idx = np.arange(train_start, train_end, dtype=np.int64)
            if self.embargo:
                train_idx = train_idx[~blocked[train_start:train_end]]
                blocked[test_end:test_end + self.embargo] = True
            if not len(train_idx):
                raise HarnessError(
                    f"windows.embargo: {self.embargo} removes every train row of window {k}; lower it"
                )
            yield train_idx, np.arange(test_start, test_end, dtype=np.int64)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of windows ``split(X)`` yields."""
        return len(self.bounds(X))

    def describe(self, X: Any = None) -> pd.DataFrame:
        """The window plan: one row per window with ``k, train_start, train_end, test_start,
        test_end`` (positions, ends exclusive) and ``n_train`` (train rows after the embargo)."""
        plan = pd.DataFrame(self.bounds(X), columns=["train_start", "train_end", "test_start", "test_end"])
        plan.insert(0, "k", np.arange(len(plan)))
        plan["n_train"] = [len(train) for train, _ in self.split(X)]
        return plan
