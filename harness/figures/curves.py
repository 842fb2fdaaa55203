"""Training curves: validation loss per epoch, the median and a band over a candidate's members.

A candidate's members are its windows × seeds; at each epoch the figure shows the median of the
validation losses of the members still training then (a member stops at its budget, early
stopping or divergence) and the band between their 10th and 90th percentiles, on a log scale.
A curve still falling steeply at its last epoch is the picture of an undertrained budget
(:mod:`harness.evaluation.diagnosis` makes that a number).

:func:`curve_figures` draws the set a backtest's runs get: ``training_curve.png`` per candidate
(its own run) and ``training_curves.png`` (every candidate's median, for the parent run).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.figures.common import (
    SINGLE,
    draw_png,
    finish_axes,
    new_figure,
    require_columns,
    schedule_colors,
)

if TYPE_CHECKING:
    from harness.backtest import Backtest

BAND = (0.10, 0.90)  # the band's quantiles over members
BAND_ALPHA = 0.25
EPOCH = "epoch (validation loss after each)"


def curve_quantiles(curves: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per epoch of candidate ``label``: ``median``, ``low`` and ``high`` (the :data:`BAND` quantiles)
    of its members' finite validation losses, and ``members`` (how many had one), indexed by epoch."""
    require_columns(curves, ("window", "schedule", "seed", "epoch", "val_loss"), "curves")
    rows = curves[(curves["schedule"] == label) & np.isfinite(curves["val_loss"].to_numpy(np.float64))]
    grouped = rows.groupby("epoch")["val_loss"]
    return pd.DataFrame({"median": grouped.median(), "low": grouped.quantile(BAND[0]),
                         "high": grouped.quantile(BAND[1]), "members": grouped.size()}).sort_index()


def training_curve_figure(curves: pd.DataFrame, label: str, color: tuple[float, ...] | str = "C0",
                          note: str = "") -> Figure:
    """One candidate's validation loss per epoch: median line over a 10-90% band (800 x 450 px)."""
    quantiles = curve_quantiles(curves, label)
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    extra = []
    if len(quantiles):
        epochs = quantiles.index.to_numpy() + 1
        ax.fill_between(epochs, quantiles["low"], quantiles["high"], color=color, alpha=BAND_ALPHA, lw=0)
        ax.plot(epochs, quantiles["median"], color=color, lw=1.6, marker="o" if len(epochs) < 30 else None,
                ms=3, label=f"{label}: median")
        extra = [Patch(facecolor=color, alpha=BAND_ALPHA, lw=0, label="10-90% of windows x seeds")]
        _log_scale(ax, quantiles[["low", "high", "median"]].to_numpy(np.float64))
    else:
        ax.text(0.5, 0.5, "no validation loss (training.validation: 0)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(f"{label}: validation loss per epoch" + (f" ({note})" if note else ""))
    ax.set_xlabel(EPOCH)
    ax.set_ylabel("validation loss (trainer's scaled units)")
    finish_axes(ax, extra=extra)
    return fig


def training_curves_figure(curves: pd.DataFrame, labels: Sequence[str]) -> Figure:
    """Every candidate's median validation loss per epoch, one line each (800 x 450 px)."""
    fig = new_figure(SINGLE)
    ax = fig.subplots()
    colors = schedule_colors(labels)
    values = []
    for label in labels:
        quantiles = curve_quantiles(curves, label)
        if len(quantiles):
            ax.plot(quantiles.index.to_numpy() + 1, quantiles["median"], color=colors[label], lw=1.4, label=label)
            values.append(quantiles["median"].to_numpy(np.float64))
    if values:
        _log_scale(ax, np.concatenate(values))
    ax.set_title("median validation loss per epoch (over windows x seeds)")
    ax.set_xlabel(EPOCH)
    ax.set_ylabel("validation loss (trainer's scaled units)")
    finish_axes(ax)
    return fig


def _log_scale(ax, values: np.ndarray) -> None:
    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() > 0:
        ax.set_yscale("log")


def plot_training_curve(curves: pd.DataFrame, label: str, path: str | Path, **kwargs) -> Path:
    """:func:`training_curve_figure` written as a PNG at ``path``."""
    return draw_png(path, training_curve_figure, curves, label, **kwargs)


def curve_figures(backtest: Backtest, folder: str | Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """A backtest's curve figures: ``({"training_curves.png": ...}, {label: {"training_curve.png": ...}})``;
    nothing when it has no validation loss at all."""
    curves = backtest.curves
    if curves is None or curves.empty or not np.isfinite(curves["val_loss"].to_numpy(np.float64)).any():
        return {}, {}
    folder = Path(folder)
    labels = [label for label in backtest.labels if (curves["schedule"] == label).any()]
    colors = schedule_colors(backtest.labels)
    flagged = backtest.undertrained().set_index("schedule")
    per_candidate = {}
    for index, label in enumerate(labels):
        note = ""
        if label in flagged.index and flagged.loc[label, "flagged"]:
            row = flagged.loc[label]
            note = f"{row['improving']} of {row['members']} members still improving at the end"
        path = folder / "curves" / f"candidate-{index}" / "training_curve.png"
        per_candidate[label] = {"training_curve.png": plot_training_curve(curves, label, path, color=colors[label],
                                                                          note=note)}
    parent = {"training_curves.png": draw_png(folder / "curves" / "training_curves.png",
                                              training_curves_figure, curves, labels)}
    return parent, per_candidate
