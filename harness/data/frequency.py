"""How many bars a year the prices have: what strategies annualise volatilities and Sharpe ratios by.

``data.periods_per_year`` sets it; left at None it is inferred from the dates
(:func:`periods_per_year`): daily bars (a median spacing of up to 4 days, weekends and holidays
included) give 252; intraday bars give 252 x the median number of bars a day; weekly bars 52,
monthly 12, and any other spacing ``365.25 days / median spacing``, rounded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.data.synthetic import TRADING_DAYS  # 252: the periods of daily bars

DAILY_SPACING = pd.Timedelta(days=4)
"""The longest median spacing still read as daily bars (Friday to Tuesday after a holiday)."""


def periods_per_year(dates: pd.DatetimeIndex) -> float:
    """Bars a year of these dates (sorted or not, repeated dates counted once; 252 for fewer than 2)."""
    unique = pd.DatetimeIndex(np.unique(pd.DatetimeIndex(dates).values))
    if len(unique) < 2:
        return float(TRADING_DAYS)
    spacing = pd.Timedelta(np.median(np.diff(unique.values)))
    if spacing < pd.Timedelta(days=1):
        per_day = float(np.median(pd.Series(1, index=unique).groupby(unique.normalize()).size().to_numpy()))
        return TRADING_DAYS * per_day
    if spacing <= DAILY_SPACING:
        return float(TRADING_DAYS)
    return float(max(1, round(pd.Timedelta(days=365.25) / spacing)))

