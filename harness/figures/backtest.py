"""A backtest's figures as PNG files: the metric per window, LR curves, the comparison of all
schedules, cumulative errors, and equity; :func:`backtest_figures` draws the set its MLflow runs get.

Every ``plot_*`` function writes one PNG at ``path`` (parent folders are created) and returns the
path. Inputs are the engine's tidy frames (``docs/ARCHITECTURE.md``); schedules keep one colour in
every figure of a backtest when the same ``schedules`` order is passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.errors import HarnessError, unknown_name
from harness.figures.common import (
    DOUBLE,
    SINGLE,
    finish_axes,
    require_columns,
    save_png,
    schedule_colors,
)


def backtest_figures(
    config: Mapping[str, Any],
    metrics: pd.DataFrame,
    seed_mean_metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    labels: Sequence[str],
    folder: str | Path,
) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """Draw a backtest's run figures into ``folder``; return ``(parent_files, schedule_files)`` as
    :func:`harness.tracking.finish_backtest` takes them.

    ``parent_files``: artifact name -> PNG for the parent run (``comparison.png`` when there are
    per-window metrics, ``errors.png`` when there are predictions). ``schedule_files``: schedule
    label -> {artifact name -> PNG} for its run (``lr_curve.png``; ``window_metrics.png`` with the
    seed band when it has per-window metrics). Frames as in :func:`plot_window_metrics`
    (``metrics`` per seed, ``seed_mean_metrics``) and :func:`plot_errors`; ``labels`` fixes the
    schedule order (and colours); ``config`` (a mapping) names the headline metric.
    """
    folder = Path(folder)
    headline = _headline_metric(config, seed_mean_metrics)
    schedule_files: dict[str, dict[str, Path]] = {}
    for index, label in enumerate(labels):
        own = folder / f"schedule-{index}"  # labels such as "step(milestones=[0.5])" are no folder names
        lr = np.asarray(lr_curves[label], dtype=float)
        files = {"lr_curve.png": plot_lr_curve(lr, own / "lr_curve.png", f"{label}: learning rate per optimizer step")}
        seed_mean = seed_mean_metrics[seed_mean_metrics["schedule"] == label]
        if not seed_mean.empty:
            files["window_metrics.png"] = plot_window_metrics(
                seed_mean, headline, own / "window_metrics.png", per_seed=metrics[metrics["schedule"] == label]
            )
        schedule_files[label] = files
    parent_files: dict[str, Path] = {}
    if not seed_mean_metrics.empty:  # seed bands: per schedule
        parent_files["comparison.png"] = plot_comparison(
            seed_mean_metrics, {label: lr_curves[label] for label in labels}, headline, folder / "comparison.png"
        )
    if not predictions.empty:
        parent_files["errors.png"] = plot_errors(predictions, folder / "errors.png")
    return parent_files, schedule_files


def _headline_metric(config: Mapping[str, Any], seed_mean: pd.DataFrame) -> str:
    """The metric the figures show: the selection metric if logged, else rmse, else the first."""
    names = list(pd.unique(seed_mean["metric"]))
    preferred = (config.get("selection") or {}).get("metric")
    for name in (preferred, "rmse"):
        if name in names:
            return name
    return str(names[0]) if names else "rmse"


def plot_window_metrics(
    seed_mean_metrics: pd.DataFrame,
    metric: str,
    path: str | Path,
    schedules: Sequence[str] | None = None,
    per_seed: pd.DataFrame | None = None,
) -> Path:
    """One metric per window, one line per schedule.

    Parameters
    ----------
    seed_mean_metrics : columns ``window, schedule, metric, value`` (metrics of the seed-mean
        predictions); the line.
    metric : the metric to draw; an unknown name raises a HarnessError naming the valid ones.
    schedules : which schedules, in colour order; default all, in order of appearance.
    per_seed : optional per-seed frame (``window, schedule, seed, metric, value``); when given,
        the min-max band over seeds is shaded around each line.
    """
    fig = Figure(figsize=SINGLE)
    ax = fig.subplots()
    _draw_window_metrics(ax, seed_mean_metrics, metric, schedules, per_seed)
    return save_png(fig, path)


def plot_lr_curve(lr: np.ndarray, path: str | Path, title: str) -> Path:
    """The learning rate a member uses at each optimizer step."""
    fig = Figure(figsize=SINGLE)
    ax = fig.subplots()
    _draw_lr_curves(ax, {title: lr}, legend=False)
    ax.set_title(title)
    return save_png(fig, path)


def plot_comparison(
    seed_mean_metrics: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    metric: str,
    path: str | Path,
    per_seed: pd.DataFrame | None = None,
) -> Path:
    """All schedules of one backtest: ``metric`` per window (top) and their LR curves (bottom)."""
    fig = Figure(figsize=DOUBLE)
    top, bottom = fig.subplots(2, 1)
    schedules = list(lr_curves) or None
    _draw_window_metrics(top, seed_mean_metrics, metric, schedules, per_seed)
    _draw_lr_curves(bottom, lr_curves)
    bottom.set_title("learning rate per optimizer step")
    return save_png(fig, path)


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
    """Cumulative squared error per schedule vs the baseline (top) and the gap to it (bottom).

    The bottom panel is ``SSE_baseline - SSE_schedule`` accumulated over dates (Goyal-Welch):
    rising where the schedule beats the baseline, falling where it loses.
    """
    cumulative = cumulative_errors(predictions)
    schedules = [column for column in cumulative.columns if column != "baseline"]
    colors = schedule_colors(schedules)
    fig = Figure(figsize=DOUBLE)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for label in schedules:
        top.plot(cumulative.index, cumulative[label], color=colors[label], lw=1.2, label=label)
        gap = cumulative["baseline"] - cumulative[label]
        bottom.plot(cumulative.index, gap, color=colors[label], lw=1.2, label=label)
    top.plot(cumulative.index, cumulative["baseline"], color="black", ls="--", lw=1.2, label="baseline")
    bottom.axhline(0.0, color="black", ls="--", lw=0.8)
    top.set_title("cumulative squared error (seed-mean predictions)")
    top.set_ylabel("SSE")
    bottom.set_title("cumulative SSE of the baseline minus the schedule (> 0: beats the baseline)")
    bottom.set_xlabel("out-of-sample date")
    finish_axes(top)
    finish_axes(bottom)
    return save_png(fig, path)


def plot_equity(equity: Mapping[str, pd.Series], path: str | Path) -> Path:
    """Equity curves of the trading view, one line per schedule (series indexed by date)."""
    if not equity:
        raise HarnessError("no equity curves to plot; the strategy has no trading view")
    colors = schedule_colors(list(equity))
    fig = Figure(figsize=SINGLE)
    ax = fig.subplots()
    for label, series in equity.items():
        ax.plot(series.index, series.to_numpy(dtype=float), color=colors[label], lw=1.2, label=label)
    ax.set_title("equity of the trading view (after costs)")
    ax.set_xlabel("date")
    ax.set_ylabel("equity")
    finish_axes(ax)
    return save_png(fig, path)


def _draw_window_metrics(
    ax: Axes,
    seed_mean_metrics: pd.DataFrame,
    metric: str,
    schedules: Sequence[str] | None,
    per_seed: pd.DataFrame | None,
) -> None:
    require_columns(seed_mean_metrics, ("window", "schedule", "metric", "value"))
    valid = pd.unique(seed_mean_metrics["metric"])
    if metric not in valid:
        raise unknown_name("metric", metric, valid)
    rows = seed_mean_metrics[seed_mean_metrics["metric"] == metric]
    present = list(pd.unique(rows["schedule"]))
    schedules = present if schedules is None else list(schedules)
    for label in schedules:
        if label not in present:
            raise unknown_name("schedule", label, present)
    band = None
    if per_seed is not None:
        require_columns(per_seed, ("window", "schedule", "seed", "metric", "value"))
        seeds = per_seed[per_seed["metric"] == metric]
        band = seeds.groupby(["schedule", "window"])["value"].agg(["min", "max"])
    colors = schedule_colors(schedules)
    for label in schedules:
        line = rows[rows["schedule"] == label].sort_values("window")
        ax.plot(line["window"], line["value"], color=colors[label], lw=1.4, marker="o", ms=3, label=label)
        if band is not None and label in band.index.get_level_values("schedule"):
            spread = band.loc[label]
            ax.fill_between(spread.index, spread["min"], spread["max"], color=colors[label], alpha=0.2, lw=0)
    ax.set_title(f"{metric} per window" + (" (band: min-max over seeds)" if band is not None else ""))
    ax.set_xlabel("window")
    ax.set_ylabel(metric)
    finish_axes(ax)


def _draw_lr_curves(ax: Axes, curves: Mapping[str, np.ndarray], legend: bool = True) -> None:
    if not curves:
        raise HarnessError("no LR curves to plot; give at least one schedule")
    colors = schedule_colors(list(curves))
    for label, lr in curves.items():
        lr = np.asarray(lr, dtype=float)
        if lr.ndim != 1 or lr.size == 0:
            raise ValueError(f"LR curve '{label}' must be a non-empty 1-D array, got shape {lr.shape}")
        ax.plot(np.arange(lr.size), lr, color=colors[label], lw=1.4, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    finish_axes(ax, legend=legend)
