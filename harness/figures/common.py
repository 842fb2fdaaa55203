"""What every figure shares: sizes, one colour per schedule, the axes' finish, and the PNG writer.

Figures are drawn on bare :class:`matplotlib.figure.Figure` objects, which render with the Agg
canvas: no pyplot, no global backend switch, nothing left open between calls, safe from any
thread or worker and without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.errors import HarnessError

DPI = 100
SINGLE = (8.0, 4.5)  # inches: 800 x 450 px at DPI
DOUBLE = (8.0, 7.5)  # two stacked panels
_PALETTE = matplotlib.colormaps["tab10"].colors


def schedule_colors(labels: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per schedule label, in order (the same label order gives the same colours)."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def finish_axes(ax: Axes, legend: bool = True) -> None:
    """The common finish of every axes: a light grid, and a legend when something is labelled."""
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def save_png(fig: Figure, path: str | Path) -> Path:
    """Lay out and write ``fig`` as a PNG at ``path`` (folders created); an unwritable path is a
    one-line error."""
    path = Path(path)
    if fig.get_layout_engine() is None:  # figures made with layout="constrained" keep it
        fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})  # fast; files ~1.3x larger
    except OSError as exc:
        raise HarnessError(f"cannot write the plot to {path}: {exc.strerror or exc}; choose a writable path") from None
    return path


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str = "frame") -> None:
    """Raise ValueError naming the columns ``frame`` lacks (a caller's bug, not a user mistake)."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(frame.columns)}")
