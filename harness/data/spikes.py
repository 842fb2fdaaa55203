"""One-day price spikes: a price orders of magnitude away from the prices on both sides of it.

A bad tick (a misplaced decimal point, a price in cents among dollars) shows as a price that jumps
by a factor of :data:`SPIKE_FACTOR` or more and jumps back within a few rows. Left in, it makes one
return of +log(100) and one of -log(100), which dominate every realized volatility and every
squared-error loss around it. With ``repair`` it is a logged repair (the spike rows carry the last
good price forward, as a gap is filled); without, an error naming the column and the date.

A lasting jump (an unadjusted split, a currency change) is not a spike: the price does not come back.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from harness.errors import DataError

log = logging.getLogger("harness.data")

SPIKE_FACTOR = 10.0
"""A spike moves the price by at least this factor (one order of magnitude) and back."""
MAX_SPIKE_ROWS = 5
"""The longest run of rows a spike may last (the same bound as a filled gap)."""


def spikes(prices: np.ndarray, factor: float = SPIKE_FACTOR, max_rows: int = MAX_SPIKE_ROWS) -> list[tuple[int, int]]:
    """Runs ``[first, stop)`` of rows of positive ``prices`` that jump by ``factor`` or more from
    the row before and come back: the row after the run is within ``sqrt(factor)`` of the row
    before it, and the run lasts at most ``max_rows`` rows."""
    logs = np.log(np.asarray(prices, dtype=np.float64))
    jump, back = math.log(factor), 0.5 * math.log(factor)
    steps = np.diff(logs)
    big = np.flatnonzero(np.abs(steps) >= jump)  # between row i and row i + 1
    runs: list[tuple[int, int]] = []
    k = 0
    while k < len(big):
        i = big[k]
        ends = [j for j in big[k + 1:] if j - i <= max_rows and np.sign(steps[j]) != np.sign(steps[i])
                and abs(logs[j + 1] - logs[i]) < back]
        if ends:
            runs.append((int(i) + 1, int(ends[0]) + 1))
            k = int(np.searchsorted(big, ends[0])) + 1
        else:
            k += 1
    return runs


def without_spikes(frame: pd.DataFrame, columns: list[str], origin: str, repair: bool) -> pd.DataFrame:
    """``frame`` with each spike in ``columns`` (complete, positive prices) replaced by the price
    before it, each logged; with ``repair=False`` the first spike is a :class:`DataError`."""
    found = {column: spikes(frame[column].to_numpy()) for column in columns}
    found = {column: runs for column, runs in found.items() if runs}
    if not found:
        return frame
    column, (first, stop) = min(((c, runs[0]) for c, runs in found.items()), key=lambda item: item[1][0])
    dates, values = frame.index, frame[column].to_numpy()
    what = (f"'{column}' jumps from {values[first - 1]:g} to {values[first]:g} on {dates[first]:%Y-%m-%d} "
            f"and back to {values[stop]:g} on {dates[stop]:%Y-%m-%d}")
    count = len({run for runs in found.values() for run in runs})  # a bad day in close and adj_close is one
    if not repair:
        raise DataError(f"{origin}: a price spike: {what}; fix or remove "
                        f"{'that row' if stop - first == 1 else 'those rows'}, or set data.repair: true")
    log.warning("%s: %d price %s (first: %s); carried the last price forward over %s "
                "(data.repair: false makes this an error)", origin, count, "spike" if count == 1 else "spikes",
                what, "it" if count == 1 else "each")
    out = frame.copy()
    for column, runs in found.items():
        values = out[column].to_numpy(copy=True)
        for first, stop in runs:
            values[first:stop] = values[first - 1]
        out[column] = values
    return out
