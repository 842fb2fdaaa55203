"""The selection report's files: ``selection.md`` and its figures (PNG), drawn like every figure
(:mod:`harness.figures.common`); :func:`selection_figures` returns them for
:func:`harness.tracking.log_selection`.

- ``selection_losses.png``: the cumulative loss difference of each schedule and of the baseline
  against the best over the out-of-sample dates (rising: losing ground to the best; flat: as good);
- ``selection_windows.png``: the metric per window per schedule (windows at their first
  out-of-sample date) with the min–max band over seeds and the baseline (top), and each
  schedule's pooled metric with its bootstrap interval, one row per schedule with its label on
  the y axis, confidence-set members filled and the selected schedule starred (bottom).

Each ``plot_*`` writes a PNG; its ``*_figure`` returns the unsaved figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.figures.common import (
    BASELINE_STYLE,
    DOUBLE,
    SINGLE,
    date_axis,
    draw_png,
    finish_axes,
    new_figure,
    schedule_colors,
    wrap_label,
)

if TYPE_CHECKING:
    from harness.evaluation.selection import SelectionReport

REPORT_MD = "selection.md"
LOSSES_PNG = "selection_losses.png"
WINDOWS_PNG = "selection_windows.png"


def write_report(report: SelectionReport, folder: str | Path) -> list[Path]:
    """Write ``selection.md`` and both figures into ``folder`` (what the parent run gets); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / REPORT_MD
    markdown.write_text(report.markdown())
    return [markdown, *plot_selection(report, folder)]


def selection_figures(report: SelectionReport, folder: str | Path) -> dict[str, Path]:
    """Write ``selection.md`` and both figures into ``folder``; return artifact name -> file, as
    :func:`harness.tracking.log_selection` takes them (the parent run's selection files)."""
    return {path.name: path for path in write_report(report, folder)}


def plot_selection(report: SelectionReport, folder: str | Path) -> list[Path]:
    """Write both figures into ``folder``; return their paths."""
    folder = Path(folder)
    return [plot_loss_differences(report, folder / LOSSES_PNG), plot_window_intervals(report, folder / WINDOWS_PNG)]


def plot_loss_differences(report: SelectionReport, path: str | Path) -> Path:
    """Cumulative ``L_schedule − L_best`` over the out-of-sample dates; see :func:`loss_differences_figure`."""
    return draw_png(path, loss_differences_figure, report)


def loss_differences_figure(report: SelectionReport) -> Figure:
    """Cumulative ``L_schedule − L_best`` over the out-of-sample dates, one line per schedule and
    the baseline's (black, dashed), the best's at zero (800 x 450 px; legend right of the data)."""
    losses = report.losses
    schedules = [label for label in losses.columns if label != report.baseline]
    colors = schedule_colors(schedules)
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    best = losses[report.best].to_numpy(np.float64)
    dates = losses.index
    for label in losses.columns:
        if label == report.best:
            continue
        gap = np.cumsum(losses[label].to_numpy(np.float64) - best)
        if label == report.baseline:
            ax.plot(dates, gap, label=label, zorder=3, **BASELINE_STYLE)
        else:
            ax.plot(dates, gap, color=colors[label], lw=1.2, label=label)
    ax.axhline(0.0, color=colors.get(report.best, "grey"), ls=":", lw=1.4, label=f"{report.best} (best)")
    ax.set_title(f"cumulative {report.loss_name} minus the best's (rising: worse than {report.best})", fontsize=10)
    ax.set_xlabel("out-of-sample date")
    ax.set_ylabel("cumulative loss difference")
    if isinstance(dates, pd.DatetimeIndex):
        date_axis(ax.xaxis)
    finish_axes(ax)
    return fig


def plot_window_intervals(report: SelectionReport, path: str | Path) -> Path:
    """The metric per window and the pooled metric per schedule; see :func:`window_intervals_figure`."""
    return draw_png(path, window_intervals_figure, report)


def window_intervals_figure(report: SelectionReport) -> Figure:
    """The metric per window (seed bands, the baseline; windows at their first out-of-sample
    date) over each schedule's pooled metric with its bootstrap interval (800 x 750 px).

    The pooled panel lays the schedules out horizontally, one row each, top to bottom in config
    order and the baseline last, their labels (wrapped, in the schedule's colour) on the y axis,
    so long labels never collide; filled markers are in the model confidence set, the star is
    the selected schedule, the dashed line the baseline's pooled value.
    """
    from harness.figures.backtest import (
        _draw_window_metrics,
        baseline_window_metric,
        window_starts,
    )

    m = report.metric
    backtest = report.backtest
    labels = list(report.table["schedule"])
    order = [c for c in backtest.predictions["schedule"].drop_duplicates() if c in labels and c != report.baseline]
    colors = schedule_colors(order)
    fig = new_figure(DOUBLE)
    upper, lower = fig.subfigures(2, 1)  # each panel lays out its own margins: legend right, labels left
    top, bottom = upper.subplots(), lower.subplots()
    predictions = backtest.predictions
    baseline = None
    if not predictions.empty:
        from harness.evaluation.metrics import PRECISION

        table = None if m in PRECISION else backtest.table
        baseline = baseline_window_metric(predictions, m, strategy=backtest.strategy, table=table)
    extra = _draw_window_metrics(top, backtest.seed_mean_metrics, m, order, backtest.metrics,
                                 window_starts(predictions) if not predictions.empty else None, baseline)
    finish_axes(top, extra=extra)
    _draw_pooled(bottom, report, order, colors)
    return fig


def _draw_pooled(ax: Axes, report: SelectionReport, order: list[str], colors: dict) -> None:
    m = report.metric
    rows = [*order, *([report.baseline] if report.baseline in set(report.table["schedule"]) else [])]
    table = report.table.set_index("schedule").reindex(rows)
    for i, label in enumerate(rows):
        row = table.loc[label]
        color = colors.get(label, "black")
        value, low, high = (float(row[k]) for k in (f"pooled_{m}", "ci_low", "ci_high"))
        if np.isfinite(low) and np.isfinite(high):
            ax.errorbar([value], [i], xerr=[[value - low], [high - value]], color=color, capsize=4, lw=1.4)
        filled = bool(row["in_mcs"])
        selected = label == report.selected
        ax.plot([value], [i], marker="*" if selected else "o", ms=14 if selected else 7, color=color,
                markerfacecolor=color if filled else "white", zorder=3)
        if label == report.baseline and np.isfinite(value):
            ax.axvline(value, zorder=1, **{**BASELINE_STYLE, "lw": 1.0})
    size = 8 if len(rows) <= 10 else 6
    ax.set_yticks(np.arange(len(rows)), [wrap_label(label) for label in rows], fontsize=size)
    for tick, label in zip(ax.get_yticklabels(), rows):
        tick.set_color(colors.get(label, "black"))
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first schedule on top
    ax.set_xlabel(f"pooled {m} (seed-mean predictions, all out-of-sample rows)")
    ax.set_title(f"pooled {m} with {1 - report.alpha:.0%} bootstrap interval\n(filled: in the model confidence set; "
                 f"star: selected; dashed: the baseline)", fontsize=9)
    finish_axes(ax, legend=False)
