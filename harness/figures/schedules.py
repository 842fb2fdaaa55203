"""LR curves to PNG: several curves on one axis, the schedules of a config over a number of steps
(``harness schedules --plot``), and a backtest's LR curve per schedule run (``lr_curve.png``). Drawn like every figure (:mod:`harness.figures.common`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.figures.common import (
    DPI,
    SINGLE,
    draw_png,
    finish_axes,
    new_figure,
    save_png,
    schedule_colors,
)
from harness.schedules import get_schedule

NOMINAL = " (nominal: warmup, then constant)"


def plot_lr_curves(
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    log_scale: bool = False,
    title: str | None = None,
) -> Path:
    """Write one PNG (800 x 450 px): x = optimizer step, y = LR, one line per curve, a legend.

    Curves may differ in length. On a log axis, zero LRs (warmup start, decay ends) are left out.
    Returns the path written; an unwritable path raises a one-line :class:`HarnessError`.
    """
    if not curves:
        raise HarnessError("no LR curves to plot; name at least one schedule")
    figure = Figure(figsize=SINGLE, dpi=DPI, layout="constrained")  # 800 x 450 px
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, (label, values) in enumerate(curves.items()):
        lrs = np.asarray(values, dtype=np.float64)
        if log_scale:
            lrs = np.where(lrs > 0, lrs, np.nan)
        style = ("-", "--", ":")[i // 10 % 3]  # the colour cycle has 10 colours
        axes.plot(np.arange(len(lrs)), lrs, label=label, linewidth=1.4, color=f"C{i % 10}", linestyle=style)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    axes.legend(fontsize="small", ncol=2 if len(curves) > 8 else 1)
    return save_png(figure, Path(path))


def schedule_curves(
    specs: Sequence[Any], total_steps: int, *, base_lr: float = 1.0
) -> dict[str, np.ndarray]:
    """Label -> LR table over ``total_steps`` for each spec; plateau and schedule_free give
    their nominal curve (warmup, then constant), labelled as such."""
    curves = {}
    for spec in specs:
        schedule = get_schedule(spec)
        label = schedule.label if schedule.kind == "table" else schedule.label + NOMINAL
        curves[label] = schedule.nominal_table(total_steps, base_lr)
    return curves


def plot_schedules(
    specs: Sequence[Any],
    total_steps: int,
    path: str | Path,
    *,
    base_lr: float = 1.0,
    log_scale: bool = False,
) -> Path:
    """Plot the LR curves of config specs (names or mappings) over ``total_steps`` steps to PNG."""
    curves = schedule_curves(specs, total_steps, base_lr=base_lr)
    title = f"LR schedules over {total_steps} optimizer steps (base LR {base_lr:g})"
    return plot_lr_curves(curves, path, log_scale=log_scale, title=title)


def plot_lr_curve(lr: np.ndarray, path: str | Path, title: str, steps: str = "optimizer step") -> Path:
    """The learning rate a member uses at each optimizer step; ``steps`` labels the x axis."""
    return draw_png(path, lr_curve_figure, lr, title, steps=steps)


def lr_curve_figure(lr: np.ndarray, title: str, steps: str = "optimizer step") -> Figure:
    """:func:`plot_lr_curve`'s figure (800 x 450 px)."""
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    _draw_lr_curves(ax, {title: lr}, steps)
    finish_axes(ax, legend=False)
    ax.set_title(title)
    return fig


def _draw_lr_curves(ax: Axes, curves: Mapping[str, np.ndarray], steps: str = "optimizer step") -> None:
    if not curves:
        raise HarnessError("no LR curves to plot; give at least one schedule")
    colors = schedule_colors(list(curves))
    for label, lr in curves.items():
        lr = np.asarray(lr, dtype=float)
        if lr.ndim != 1 or lr.size == 0:
            raise ValueError(f"LR curve '{label}' must be a non-empty 1-D array, got shape {lr.shape}")
        ax.plot(np.arange(lr.size), lr, color=colors[label], lw=1.4, label=label)
    ax.set_xlabel(steps)
    ax.set_ylabel("learning rate")
