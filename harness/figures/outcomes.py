"""A backtest's outcome figures: cumulative squared errors against the baseline (``errors.png``) and
the trading view's equity curves beside buy and hold (``equity.png``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.figures.common import (
    BASELINE_STYLE,
    DOUBLE,
    SINGLE,
    date_axis,
    draw_png,
    finish_axes,
    finish_dated_pair,
    new_figure,
    require_columns,
    schedule_colors,
)

# --- cumulative errors and equity -----------------------------------------------------------------


def cumulative_errors(predictions: pd.DataFrame) -> pd.DataFrame:
    """Cumulative squared error over the out-of-sample dates, per schedule and for the baseline.

    Predictions are first averaged over seeds, row by row (rows sharing a date, as in an option
    chain, are told apart by their order within the date). NaN members (diverged) are left out
    of the mean; a row where every member is NaN adds no error, so the curves stay continuous.

    Returns
    -------
    DataFrame indexed by sorted unique ``date``; one column per schedule (order of appearance)
    and a last column ``baseline``; each the running sum of squared errors up to that date.
    """
    require_columns(predictions, ("date", "window", "schedule", "seed", "prediction", "target", "baseline"))
    if predictions.empty:
        raise HarnessError("no predictions to plot; the backtest produced no out-of-sample rows")
    rows = predictions.assign(
        row=predictions.groupby(["schedule", "seed", "window", "date"], sort=False).cumcount()
    )
    mean = rows.groupby(["schedule", "window", "date", "row"], sort=False)[
        ["prediction", "target", "baseline"]
    ].mean()
    model_sq = (mean["prediction"] - mean["target"]) ** 2
    base_sq = (mean["baseline"] - mean["target"]) ** 2
    per_date = model_sq.groupby(level=["schedule", "date"], sort=False).sum().unstack(0)
    schedules = list(pd.unique(predictions["schedule"]))
    first = base_sq.xs(schedules[0], level="schedule")
    per_date = per_date[schedules].assign(baseline=first.groupby(level="date").sum())
    return per_date.sort_index().cumsum()


def plot_errors(predictions: pd.DataFrame, path: str | Path) -> Path:
    """Cumulative squared errors; see :func:`errors_figure`."""
    return draw_png(path, errors_figure, predictions)


def errors_figure(predictions: pd.DataFrame) -> Figure:
    """Cumulative squared error per schedule vs the baseline (top) and the gap to it (bottom),
    over the out-of-sample dates (800 x 750 px; one legend, right of the top panel).

    The bottom panel is ``SSE_baseline - SSE_schedule`` accumulated over dates (Goyal-Welch):
    rising where the schedule beats the baseline, falling where it loses.
    """
    cumulative = cumulative_errors(predictions)
    schedules = [column for column in cumulative.columns if column != "baseline"]
    colors = schedule_colors(schedules)
    fig = new_figure(DOUBLE)
    top, bottom = fig.subplots(2, 1, sharex=True)
    dates = pd.DatetimeIndex(cumulative.index)
    for label in schedules:
        top.plot(dates, cumulative[label], color=colors[label], lw=1.2, label=label)
        gap = cumulative["baseline"] - cumulative[label]
        bottom.plot(dates, gap, color=colors[label], lw=1.2)
    top.plot(dates, cumulative["baseline"], label="baseline", **BASELINE_STYLE)
    bottom.axhline(0.0, **{**BASELINE_STYLE, "lw": 0.8})
    top.set_title("cumulative squared error (seed-mean predictions)")
    top.set_ylabel("SSE")
    bottom.set_title("cumulative SSE, baseline minus schedule (> 0: the schedule beats the baseline)", fontsize=10)
    bottom.set_ylabel("SSE gap")
    finish_dated_pair(top, bottom)
    return fig


def plot_equity(equity: Mapping[str, pd.Series], path: str | Path, buy_and_hold: pd.Series | None = None) -> Path:
    """Equity curves of the trading view; see :func:`equity_figure`."""
    return draw_png(path, equity_figure, equity, buy_and_hold)


def equity_figure(equity: Mapping[str, pd.Series], buy_and_hold: pd.Series | None = None) -> Figure:
    """Equity curves of the trading view, one line per schedule (series indexed by date), and
    ``buy_and_hold`` (:func:`buy_and_hold`) black and dotted when given (800 x 450 px)."""
    if not equity:
        raise HarnessError("no equity curves to plot; the strategy has no trading view")
    colors = schedule_colors(list(equity))
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    dated = all(isinstance(series.index, pd.DatetimeIndex) for series in equity.values())
    for label, series in equity.items():
        ax.plot(series.index, series.to_numpy(dtype=float), color=colors[label], lw=1.2, label=label)
    if buy_and_hold is not None and len(buy_and_hold):
        ax.plot(buy_and_hold.index, buy_and_hold.to_numpy(dtype=float), color="black", ls=":", lw=1.5,
                label="buy and hold")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_title("equity of the trading view (after costs; start 1)")
    ax.set_xlabel("out-of-sample date" if dated else "rebalance")
    ax.set_ylabel("equity")
    if dated:
        date_axis(ax.xaxis)
    finish_axes(ax)
    return fig
