"""A backtest's figures as PNG files: the metric per window, LR curves, the comparison of all
schedules, cumulative errors, and equity; :func:`backtest_figures` draws the set its MLflow runs get.

Every ``plot_*`` function writes one PNG at ``path`` (parent folders are created) and returns the
path; the ``*_figure`` function of the same name returns the :class:`~matplotlib.figure.Figure`
it draws, unsaved. Inputs are the engine's tidy frames (``docs/ARCHITECTURE.md``); schedules keep
one colour in every figure of a backtest when the same ``schedules`` order is passed.

What a quant reads in them: per-window figures put each window at its first out-of-sample date
(:func:`window_starts`), with the strategy's baseline beside the schedules (black, dashed,
labelled ``baseline``; :func:`baseline_window_metric`); legends sit to the right of the plotting
area; the seed band (min-max over seeds) is shaded under its line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.errors import unknown_name
from harness.figures.common import (
    BASELINE_STYLE,
    DOUBLE,
    SINGLE,
    date_axis,
    draw_png,
    finish_axes,
    new_figure,
    require_columns,
    schedule_colors,
    value_axis,
)
from harness.figures.outcomes import (  # noqa: F401 (re-exported: the figures of one backtest)
    cumulative_errors,
    equity_figure,
    errors_figure,
    plot_equity,
    plot_errors,
)
from harness.figures.schedules import _draw_lr_curves, lr_curve_figure, plot_lr_curve  # noqa: F401

if TYPE_CHECKING:
    from harness.backtest import Backtest

BAND_ALPHA = 0.25  # the seed band's opacity (under its line)
WINDOW_DATE = "first out-of-sample date of the window"
STEP_FRESH = "optimizer step (one window; every window restarts the schedule)"
STEP_CONTINUED = "optimizer step (all windows in sequence; the schedule runs on across them)"


# --- the set a backtest's runs get --------------------------------------------------------------


def backtest_figures(backtest: Backtest, folder: str | Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """Draw a backtest's run figures into ``folder``; return ``(parent_files, schedule_files)`` as
    :func:`harness.tracking.finish_backtest` takes them.

    ``parent_files``: artifact name -> PNG for the parent run: ``comparison.png`` (the headline
    metric per window of every schedule and the baseline, over their LR curves) when there are
    per-window metrics, ``errors.png`` when there are predictions, ``equity.png`` (each
    schedule's equity and buy-and-hold) when the strategy has a trading view, and for a cross-section
    (``strategy: cross_section``) ``rank_ic.png``/``.csv`` and ``long_short.png``/``.csv``
    (:func:`harness.figures.cross_section.cross_section_files`). ``schedule_files``:
    schedule label -> {artifact name -> PNG} for its run: ``lr_curve.png``; ``window_metrics.png``
    (its line, seed band and the baseline) when it has per-window metrics. The headline metric is
    the selection metric (``selection.metric``, else the strategy's default) when it was scored,
    else rmse, else the first.
    """
    predictions, config = backtest.predictions, backtest.config
    headline = _headline_metric(backtest.metric, backtest.seed_mean_metrics)  # selection.metric or the strategy's
    baseline = None
    if not predictions.empty and _scored(backtest.seed_mean_metrics, headline):
        from harness.evaluation.metrics import PRECISION

        table = None if headline in PRECISION else backtest.table  # rebuilt from the data only when needed
        baseline = baseline_window_metric(predictions, headline, strategy=backtest.strategy, table=table)
    equity = backtest.equity_curves() if not predictions.empty else {}
    parent_files, schedule_files = frame_figures(
        config.model_dump(mode="json"), backtest.metrics, backtest.seed_mean_metrics, predictions,
        {label: backtest.lr_curve(label) for label in backtest.labels}, backtest.labels, folder,
        metric=headline, baseline=baseline, equity=equity,
        buy_and_hold=buy_and_hold(backtest) if equity else None,
    )
    from harness.figures.cross_section import (
        cross_section_files,  # not at the top: it imports this module
    )

    parent_files.update(cross_section_files(backtest, folder))  # a cross-section's rank IC and long-short book
    return parent_files, schedule_files


def frame_figures(
    config: Mapping[str, Any],
    metrics: pd.DataFrame,
    seed_mean_metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    labels: Sequence[str],
    folder: str | Path,
    *,
    metric: str | None = None,
    baseline: pd.Series | None = None,
    equity: Mapping[str, pd.Series] | None = None,
    buy_and_hold: pd.Series | None = None,
) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """:func:`backtest_figures` from the frames: ``metrics`` per seed, ``seed_mean_metrics``,
    ``predictions`` (their dates put the windows on the x axes), ``lr_curves`` per label,
    ``labels`` (schedule order and colours) and ``config`` as a mapping (``selection.metric``
    names the headline metric; ``training.boundary`` how the LR curves run).

    ``metric``: the headline metric, in place of ``selection.metric`` (a strategy's default when
    the config names none). ``baseline``: the baseline's headline metric per window; default: computed from the
    predictions' ``baseline`` column when the headline metric is a precision one (mse, rmse, mae,
    r2_oos), else none drawn. ``equity`` (label -> series by date) adds ``equity.png``, with
    ``buy_and_hold`` on it when given.
    """
    folder = Path(folder)
    headline = _headline_metric(metric or (config.get("selection") or {}).get("metric"), seed_mean_metrics)
    continued = (config.get("training") or {}).get("boundary") == "warm_continue"
    steps = STEP_CONTINUED if continued else STEP_FRESH
    columns = set(predictions.columns)
    dates = window_starts(predictions) if {"window", "date"} <= columns else None
    if (baseline is None and _scored(seed_mean_metrics, headline) and not predictions.empty
            and {"date", "window", "schedule", "seed", "target", "baseline"} <= columns):
        baseline = baseline_window_metric(predictions, headline)
    schedule_files: dict[str, dict[str, Path]] = {}
    for index, label in enumerate(labels):
        own = folder / f"schedule-{index}"  # labels such as "step(milestones=[0.5])" are no folder names
        lr = np.asarray(lr_curves[label], dtype=float)
        files = {"lr_curve.png": draw_png(own / "lr_curve.png", lr_curve_figure, lr,
                                                  f"{label}: learning rate per optimizer step", steps=steps)}
        seed_mean = seed_mean_metrics[seed_mean_metrics["schedule"] == label]
        if not seed_mean.empty:
            files["window_metrics.png"] = plot_window_metrics(
                seed_mean, headline, own / "window_metrics.png", per_seed=metrics[metrics["schedule"] == label],
                dates=dates, baseline=baseline)
        schedule_files[label] = files
    parent_files: dict[str, Path] = {}
    if not seed_mean_metrics.empty:  # seed bands: per schedule
        parent_files["comparison.png"] = draw_png(
            folder / "comparison.png", comparison_figure, seed_mean_metrics,
            {label: lr_curves[label] for label in labels}, headline, dates=dates, baseline=baseline, steps=steps)
    if not predictions.empty:
        parent_files["errors.png"] = plot_errors(predictions, folder / "errors.png")
    if equity:
        parent_files["equity.png"] = plot_equity(equity, folder / "equity.png", buy_and_hold=buy_and_hold)
    return parent_files, schedule_files


def _headline_metric(preferred: str | None, seed_mean: pd.DataFrame) -> str:
    """The metric the figures show: the selection metric if logged, else rmse, else the first."""
    names = list(pd.unique(seed_mean["metric"]))
    for name in (preferred, "rmse"):
        if name in names:
            return name
    return str(names[0]) if names else "rmse"


def _scored(seed_mean: pd.DataFrame, metric: str) -> bool:
    return bool((seed_mean["metric"] == metric).any())


# --- what the figures derive from the frames ------------------------------------------------------


def window_starts(predictions: pd.DataFrame) -> pd.Series:
    """Each window's first out-of-sample date (the earliest ``date`` of its predictions), by window."""
    require_columns(predictions, ("window", "date"))
    return pd.to_datetime(predictions.groupby("window")["date"].min()).rename("date")


def _member_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """One member's rows (first schedule, first seed): every window's test rows once, in order."""
    first = predictions.iloc[0]
    return predictions[(predictions["schedule"] == first["schedule"]) & (predictions["seed"] == first["seed"])]


def baseline_window_metric(predictions: pd.DataFrame, metric: str, strategy: Any = None,
                           table: Any = None) -> pd.Series | None:
    """The strategy's baseline scored like a member: ``metric`` per window of the ``baseline``
    column against ``target`` (one member's rows; the baseline is the same for all), by window.

    Precision metrics (mse, rmse, mae, r2_oos) need only the predictions; the strategy's own
    metrics need ``strategy`` (and ``table`` when they read features). None when ``metric`` cannot
    be computed so (no strategy for a strategy metric, or the strategy does not score it).
    """
    from harness.evaluation import metrics as M

    require_columns(predictions, ("date", "window", "schedule", "seed", "target", "baseline"))
    if predictions.empty:
        return None
    rows = _member_rows(predictions)
    if metric in M.PRECISION:
        values = {window: M.precision(group["target"], group["baseline"], group["baseline"])[metric]
                  for window, group in rows.groupby("window", sort=True)}
        return pd.Series(values, name="baseline", dtype=np.float64).rename_axis("window")
    if strategy is None:
        return None
    scored = M.window_metrics(rows.assign(prediction=rows["baseline"]), strategy, table=table)
    scored = scored[scored["metric"] == metric]
    if scored.empty:
        return None
    return scored.set_index("window")["value"].sort_index().rename("baseline").astype(np.float64)


def buy_and_hold(backtest: Backtest) -> pd.Series | None:
    """Buy-and-hold equity over the out-of-sample rows (one member's rows, all windows in order),
    in the strategy's own units: its ``benchmark_equity(test)`` when it has one (``return_forecast``:
    always long one unit, the entry paying the configured cost), else its trading view
    (``equity(pred, test)``) of a forecast that is always long, position ``sign`` (not vol-scaled).
    None without a trading view."""
    from harness.evaluation import metrics as M

    strategy = backtest.strategy
    if backtest.predictions.empty or not callable(getattr(strategy, "equity", None)):
        return None
    test = M.test_table(backtest.table, _member_rows(backtest.predictions))
    own = getattr(strategy, "benchmark_equity", None)
    if callable(own):
        return pd.Series(own(test)).rename("buy and hold")
    held = copy.copy(strategy)  # the backtest's strategy stays as it is
    if getattr(held, "position", "sign") != "sign":
        held.position = "sign"
    return held.equity(np.ones(len(test)), test).rename("buy and hold")


# --- per-window metrics ---------------------------------------------------------------------------


def plot_window_metrics(
    seed_mean_metrics: pd.DataFrame,
    metric: str,
    path: str | Path,
    schedules: Sequence[str] | None = None,
    per_seed: pd.DataFrame | None = None,
    *,
    dates: pd.Series | Mapping[int, Any] | None = None,
    baseline: pd.Series | None = None,
) -> Path:
    """One metric per window, one line per schedule; see :func:`window_metrics_figure`."""
    return draw_png(path, window_metrics_figure, seed_mean_metrics, metric, schedules, per_seed, dates=dates,
                    baseline=baseline)


def window_metrics_figure(
    seed_mean_metrics: pd.DataFrame,
    metric: str,
    schedules: Sequence[str] | None = None,
    per_seed: pd.DataFrame | None = None,
    *,
    dates: pd.Series | Mapping[int, Any] | None = None,
    baseline: pd.Series | None = None,
) -> Figure:
    """One metric per window, one line per schedule (800 x 450 px).

    Parameters
    ----------
    seed_mean_metrics : columns ``window, schedule, metric, value`` (metrics of the seed-mean
        predictions); the line.
    metric : the metric to draw; an unknown name raises a HarnessError naming the valid ones.
    schedules : which schedules, in colour order; default all, in order of appearance.
    per_seed : optional per-seed frame (``window, schedule, seed, metric, value``); when given,
        the min-max band over seeds is shaded under each line.
    dates : window -> its first out-of-sample date (:func:`window_starts`); the x axis is then
        dates; without it (or when a window has none) the window number.
    baseline : window -> the baseline's value of ``metric`` (:func:`baseline_window_metric`),
        drawn black and dashed, labelled ``baseline``.
    """
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    finish_axes(ax, extra=_draw_window_metrics(ax, seed_mean_metrics, metric, schedules, per_seed, dates, baseline))
    return fig


def _draw_window_metrics(
    ax: Axes,
    seed_mean_metrics: pd.DataFrame,
    metric: str,
    schedules: Sequence[str] | None,
    per_seed: pd.DataFrame | None,
    dates: pd.Series | Mapping[int, Any] | None = None,
    baseline: pd.Series | None = None,
) -> list[Patch]:
    """Draw the lines, bands and baseline on ``ax``; return the legend entries not on the axes
    (the seed band's)."""
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
    windows = sorted(set(rows["window"]) | (set() if baseline is None else set(baseline.index)))
    at = _WindowAxis(windows, dates)
    colors = schedule_colors(schedules)
    banded = []
    for label in schedules:
        line = rows[rows["schedule"] == label].sort_values("window")
        ax.plot(at(line["window"]), line["value"], color=colors[label], lw=1.4, marker="o", ms=3, label=label,
                zorder=3)
        if band is not None and label in band.index.get_level_values("schedule"):
            spread = band.loc[label].sort_index()
            ax.fill_between(at(spread.index), spread["min"], spread["max"], color=colors[label], alpha=BAND_ALPHA,
                            lw=0, zorder=2)
            banded.append(label)
    if baseline is not None and len(baseline):
        base = baseline.sort_index()
        ax.plot(at(base.index), base.to_numpy(np.float64), marker="o", ms=2.5, label="baseline", zorder=4,
                **BASELINE_STYLE)
    ax.set_title(f"{metric} per window (seed-mean predictions)")
    ax.set_xlabel(WINDOW_DATE if at.dated else "window")
    value_axis(ax, metric)
    if at.dated:
        date_axis(ax.xaxis)
    if not banded:
        return []
    # one legend entry for the bands: the schedule's colour, or grey for several
    return [Patch(facecolor=colors[banded[0]] if len(banded) == 1 else "grey", alpha=BAND_ALPHA, lw=0,
                  label="min-max over seeds")]


class _WindowAxis:
    """Window number -> x position: its first out-of-sample date when every window has one."""

    def __init__(self, windows: Sequence[int], dates: pd.Series | Mapping[int, Any] | None) -> None:
        self.dates = None
        if dates is not None and len(windows):
            starts = pd.Series(dates) if not isinstance(dates, pd.Series) else dates
            starts = pd.to_datetime(starts.reindex(list(windows)))
            if starts.notna().all():
                self.dates = starts

    @property
    def dated(self) -> bool:
        return self.dates is not None

    def __call__(self, windows: Any) -> np.ndarray:
        windows = list(windows)
        if self.dates is None:
            return np.asarray(windows)
        return self.dates.loc[windows].to_numpy()


# --- LR curves and the comparison -----------------------------------------------------------------


def plot_comparison(
    seed_mean_metrics: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    metric: str,
    path: str | Path,
    per_seed: pd.DataFrame | None = None,
    *,
    dates: pd.Series | Mapping[int, Any] | None = None,
    baseline: pd.Series | None = None,
    steps: str = "optimizer step",
) -> Path:
    """All schedules of one backtest; see :func:`comparison_figure`."""
    return draw_png(path, comparison_figure, seed_mean_metrics, lr_curves, metric, per_seed, dates=dates,
                    baseline=baseline, steps=steps)


def comparison_figure(
    seed_mean_metrics: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    metric: str,
    per_seed: pd.DataFrame | None = None,
    *,
    dates: pd.Series | Mapping[int, Any] | None = None,
    baseline: pd.Series | None = None,
    steps: str = "optimizer step",
) -> Figure:
    """All schedules of one backtest (800 x 750 px): ``metric`` per window with the baseline (top;
    ``dates``, ``baseline`` as in :func:`window_metrics_figure`) and their LR curves (bottom, x
    axis labelled ``steps``); one legend, right of the top panel, for both."""
    fig = new_figure(DOUBLE)
    top, bottom = fig.subplots(2, 1)
    schedules = list(lr_curves) or None
    finish_axes(top, extra=_draw_window_metrics(top, seed_mean_metrics, metric, schedules, per_seed, dates, baseline))
    _draw_lr_curves(bottom, lr_curves, steps)
    finish_axes(bottom, legend=False)
    bottom.set_title("learning rate per optimizer step (colours as above)")
    return fig

