"""A cross-sectional backtest's own figures and tables (``strategy: cross_section``): the per-date
rank IC and the long-short book of every schedule's seed-mean predictions and of the baseline.

:func:`cross_section_files` is what :func:`harness.figures.backtest_figures` adds to the parent run:
``rank_ic.png`` and ``rank_ic.csv`` (the per-date IC series: date × candidate), ``long_short.png``
and ``long_short.csv`` (each candidate's net return and equity per rebalance date). Strategies
without ``rank_ic(pred, test)`` and ``book(pred, test)`` methods get none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.figures.backtest import _member_rows
from harness.figures.common import (
    BASELINE_STYLE,
    DOUBLE,
    draw_png,
    finish_dated_pair,
    new_figure,
    schedule_colors,
)

if TYPE_CHECKING:
    from harness.backtest import Backtest

BASELINE = "baseline"
ROLLING_DATES = 63  # the IC figure's rolling mean: about a quarter of trading dates


def cross_section_files(backtest: Backtest, folder: str | Path) -> dict[str, Path]:
    """Artifact name -> file for the parent run (see the module docstring); empty for other strategies."""
    strategy = backtest.strategy
    if backtest.predictions.empty or not all(callable(getattr(strategy, name, None)) for name in ("rank_ic", "book")):
        return {}
    ic, books = candidate_series(backtest)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ic.to_csv(folder / "rank_ic.csv", index_label="date")
    ledger = pd.concat({name: frame[["net"]].assign(equity=np.cumprod(1.0 + frame["net"].to_numpy()))
                        for name, frame in books.items()}, axis=1)
    ledger.columns = [f"{name}:{column}" for name, column in ledger.columns]
    ledger.to_csv(folder / "long_short.csv", index_label="date")
    return {
        "rank_ic.png": plot_rank_ic(ic, folder / "rank_ic.png"),
        "rank_ic.csv": folder / "rank_ic.csv",
        "long_short.png": plot_long_short(books, folder / "long_short.png"),
        "long_short.csv": folder / "long_short.csv",
    }


def candidate_series(backtest: Backtest) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Per candidate (each schedule's seed-mean predictions, then ``baseline``): the per-date rank IC
    (one frame, date × candidate) and the long-short book (candidate -> per rebalance date ``gross,
    turnover, net, picks, hits``), over all out-of-sample windows."""
    from harness.evaluation import metrics as M

    strategy, table = backtest.strategy, backtest.table
    series = {label: (rows["prediction"].to_numpy(), M.test_table(table, rows))
              for label, rows in M.seed_mean(backtest.predictions, backtest.training).groupby("schedule", sort=False)}
    first = _member_rows(backtest.predictions)
    series[BASELINE] = (first["baseline"].to_numpy(), M.test_table(table, first))
    ic = pd.DataFrame({name: strategy.rank_ic(pred, test) for name, (pred, test) in series.items()})
    ic.index.name = "date"
    return ic, {name: strategy.book(pred, test) for name, (pred, test) in series.items()}


def plot_rank_ic(ic: pd.DataFrame, path: str | Path) -> Path:
    """The per-date rank IC; see :func:`rank_ic_figure`."""
    return draw_png(path, rank_ic_figure, ic)


def rank_ic_figure(ic: pd.DataFrame, rolling: int = ROLLING_DATES) -> Figure:
    """Per-date rank IC of each candidate (columns of ``ic``; ``baseline`` black and dashed): its
    ``rolling``-date mean (top) and its running sum over the out-of-sample dates (bottom: a
    steady rise is a steady ranking skill). 800 x 750 px."""
    labels = [column for column in ic.columns if column != BASELINE]
    colors = schedule_colors(labels)
    fig = new_figure(DOUBLE)
    top, bottom = fig.subplots(2, 1, sharex=True)
    dates = pd.DatetimeIndex(ic.index)
    for column in ic.columns:
        style = BASELINE_STYLE if column == BASELINE else {"color": colors[column], "lw": 1.1}
        values = ic[column]
        mean = values.rolling(rolling, min_periods=max(2, rolling // 3)).mean()
        label = f"{column} (mean {values.mean():.3f})"
        top.plot(dates, mean.to_numpy(float), label=label, **style)
        bottom.plot(dates, values.fillna(0.0).cumsum().to_numpy(float), **style)
    top.axhline(0.0, color="grey", lw=0.6)
    bottom.axhline(0.0, color="grey", lw=0.6)
    top.set_title(f"rank IC per date (Spearman across assets), {rolling}-date rolling mean")
    top.set_ylabel("rank IC")
    bottom.set_title("cumulative rank IC (sum over out-of-sample dates)", fontsize=10)
    bottom.set_ylabel("sum of rank IC")
    finish_dated_pair(top, bottom)
    return fig


def plot_long_short(books: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """The long-short books' equity; see :func:`long_short_figure`."""
    return draw_png(path, long_short_figure, books)


def long_short_figure(books: Mapping[str, pd.DataFrame]) -> Figure:
    """Equity (start 1, after costs, log scale; top) and drawdown (bottom) of each candidate's
    top/bottom-quantile long-short book (``books``: candidate -> :func:`strategies.cross_section.book`
    frame; ``baseline`` black and dashed). 800 x 750 px."""
    labels = [name for name in books if name != BASELINE]
    colors = schedule_colors(labels)
    fig = new_figure(DOUBLE)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for name, ledger in books.items():
        style = BASELINE_STYLE if name == BASELINE else {"color": colors[name], "lw": 1.1}
        equity = np.cumprod(1.0 + ledger["net"].to_numpy(np.float64))
        drawdown = 1.0 - equity / np.maximum.accumulate(np.maximum(equity, 1.0))
        top.plot(ledger.index, equity, label=name, **style)
        bottom.plot(ledger.index, -drawdown, **style)
    top.set_yscale("log")
    top.axhline(1.0, color="grey", lw=0.6)
    top.set_title("long-short book: top minus bottom quantile, after costs (start 1)")
    top.set_ylabel("equity (log scale)")
    bottom.set_title("drawdown from the running peak", fontsize=10)
    bottom.set_ylabel("drawdown")
    finish_dated_pair(top, bottom, "out-of-sample rebalance date")
    return fig
