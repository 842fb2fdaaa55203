"""The selection report's files: ``selection.md`` and its figures (PNG), drawn like every figure
(:mod:`harness.figures.common`); :func:`selection_figures` returns them for
:func:`harness.tracking.log_selection`.

- ``selection_losses.png``: the cumulative loss difference of each schedule against the best over
  the out-of-sample dates (rising: losing ground to the best; flat: as good);
- ``selection_windows.png``: the metric per window per schedule with the min–max band over seeds
  (top) and each schedule's pooled metric with its bootstrap interval, confidence-set members
  filled and the selected schedule starred (bottom).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from harness.figures.common import (
    DOUBLE,
    SINGLE,
    finish_axes,
    save_png,
    schedule_colors,
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
    """Cumulative ``L_schedule − L_best`` over the out-of-sample dates, one line per schedule."""
    losses = report.losses
    colors = schedule_colors(list(losses.columns))
    fig = Figure(figsize=SINGLE)
    ax = fig.subplots()
    best = losses[report.best].to_numpy(np.float64)
    for label in losses.columns:
        if label == report.best:
            continue
        gap = np.cumsum(losses[label].to_numpy(np.float64) - best)
        ax.plot(losses.index, gap, color=colors[label], lw=1.2, label=label)
    ax.axhline(0.0, color=colors[report.best], ls="--", lw=1.0, label=f"{report.best} (best)")
    ax.set_title(f"cumulative {report.loss_name} minus the best's (rising: worse than {report.best})")
    ax.set_xlabel("out-of-sample date")
    ax.set_ylabel("cumulative loss difference")
    finish_axes(ax)
    return save_png(fig, path)


def plot_window_intervals(report: SelectionReport, path: str | Path) -> Path:
    """The metric per window (seed band) and the pooled metric with its interval, per schedule."""
    m = report.metric
    labels = list(report.table["schedule"])
    order = [c for c in report.backtest.predictions["schedule"].drop_duplicates() if c in labels]
    colors = schedule_colors(order)
    fig = Figure(figsize=DOUBLE)
    top, bottom = fig.subplots(2, 1)
    per_window = report.backtest.seed_mean_metrics
    per_window = per_window[per_window["metric"] == m]
    per_seed = report.backtest.metrics
    band = per_seed[per_seed["metric"] == m].groupby(["schedule", "window"])["value"].agg(["min", "max"])
    for label in order:
        line = per_window[per_window["schedule"] == label].sort_values("window")
        top.plot(line["window"], line["value"], color=colors[label], lw=1.2, marker="o", ms=3, label=label)
        if label in band.index.get_level_values("schedule"):
            spread = band.loc[label]
            top.fill_between(spread.index, spread["min"], spread["max"], color=colors[label], alpha=0.2, lw=0)
    top.set_title(f"{m} per window (seed-mean predictions; band: min-max over seeds)")
    top.set_xlabel("window")
    top.set_ylabel(m)
    finish_axes(top)
    _draw_pooled(bottom, report, order, colors)
    return save_png(fig, path)


def _draw_pooled(ax, report: SelectionReport, order: list[str], colors: dict) -> None:
    m = report.metric
    table = report.table.set_index("schedule").reindex(order)
    x = np.arange(len(order))
    for i, label in enumerate(order):
        row = table.loc[label]
        value, low, high = (float(row[k]) for k in (f"pooled_{m}", "ci_low", "ci_high"))
        if np.isfinite(low) and np.isfinite(high):
            ax.errorbar([i], [value], yerr=[[value - low], [high - value]], color=colors[label], capsize=4, lw=1.4)
        filled = bool(row["in_mcs"])
        ax.plot([i], [value], marker="*" if label == report.selected else "o", ms=14 if label == report.selected else 7,
                color=colors[label], markerfacecolor=colors[label] if filled else "white")
    ax.set_xticks(x, order, rotation=15, fontsize=8)
    ax.set_ylabel(f"pooled {m}")
    ax.set_title(f"pooled {m} with {1 - report.alpha:.0%} bootstrap interval (filled: in the model confidence set; "
                 f"star: selected)", fontsize=9)
    finish_axes(ax, legend=False)
