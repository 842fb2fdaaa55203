"""What every figure shares: sizes, one colour per schedule, the axes' finish, and the PNG writer.

Figures are drawn on bare :class:`matplotlib.figure.Figure` objects with an Agg canvas
(:func:`new_figure`): no pyplot, no global backend switch, nothing left open between calls, safe
from any thread or worker and without a display. Figures use the constrained layout, so a legend
placed outside its axes (:func:`finish_axes`, always to the right of the plotting area) gets room
of its own and never covers data; long schedule labels are wrapped (:func:`wrap_label`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.errors import HarnessError

DPI = 100
SINGLE = (8.0, 4.5)  # inches: 800 x 450 px at DPI
DOUBLE = (8.0, 7.5)  # two stacked panels
LABEL_WIDTH = 26  # characters per line of a schedule label in a legend or on an axis
BASELINE_STYLE = {"color": "black", "ls": "--", "lw": 1.3}
"""How the strategy's baseline is drawn in every figure (labelled ``baseline``)."""
_PALETTE = matplotlib.colormaps["tab10"].colors


def new_figure(size: tuple[float, float] = SINGLE) -> Figure:
    """A figure of ``size`` inches at :data:`DPI` with the constrained layout and an Agg canvas
    (so ``fig.canvas.get_renderer()`` works before it is saved)."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def wrap_label(label: str, width: int = LABEL_WIDTH) -> str:
    """``label`` on lines of at most ``width`` characters, broken after a comma where it can
    (``cosine(min_lr_ratio=0.01, warmup=0.05)`` -> ``cosine(min_lr_ratio=0.01,`` / ``warmup=0.05)``);
    only a piece between commas longer than ``width + 8`` is cut."""
    lines: list[str] = []
    for piece in re.findall(r"[^,]+,?\s*|,\s*", str(label)):
        if lines and len(lines[-1]) + len(piece.rstrip()) <= width:
            lines[-1] += piece
        elif len(piece.rstrip()) <= width + 8:  # a piece a little too long keeps its line, uncut
            lines.append(piece)
        else:
            lines.extend(textwrap.wrap(piece, width, break_on_hyphens=False) or [piece])
    return "\n".join(line.rstrip() for line in lines) or str(label)


def date_axis(axis: Axis) -> None:
    """Dates on ``axis`` (``ax.xaxis``): automatic ticks, concise labels that each name their year
    (``Apr 2011``, ``Jul 2011``, ``2012``, ...; days as ``Mar 04``, the year in the offset)."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)  # room for 'Sep 2011'
    formats = ["%Y", "%b %Y", "%b %d", "%H:%M", "%H:%M", "%S.%f"]
    offsets = ["", "", "%Y", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d %H:%M"]  # no year twice
    axis.set_major_locator(locator)
    axis.set_major_formatter(mdates.ConciseDateFormatter(locator, formats=formats, offset_formats=offsets))


def schedule_colors(labels: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per schedule label, in order (the same label order gives the same colours)."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def finish_axes(ax: Axes, legend: bool = True, extra: Sequence[Artist] = ()) -> None:
    """The common finish of every axes: a light grid, and, when something is labelled, a legend
    outside the plotting area, to its right (labels wrapped), so it never covers data; ``extra``:
    labelled proxy artists for the legend that are not drawn on the axes."""
    ax.grid(alpha=0.3)
    if legend:
        legend_outside(ax, extra)


def finish_dated_pair(top: Axes, bottom: Axes, xlabel: str = "out-of-sample date") -> None:
    """The finish of two stacked panels sharing a date axis: ``top`` with the legend, ``bottom``
    without, the dates and ``xlabel`` on ``bottom`` only."""
    bottom.set_xlabel(xlabel)
    finish_axes(top)
    finish_axes(bottom, legend=False)
    date_axis(bottom.xaxis)
    top.tick_params(labelbottom=False)


def legend_outside(ax: Axes, extra: Sequence[Artist] = (), fontsize: float = 8) -> None:
    """The legend of what ``ax`` labelled (and ``extra``), to the right of its plotting area, top
    aligned; none if nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = [*handles, *extra], [*labels, *(artist.get_label() for artist in extra)]
    if handles:
        ax.legend(handles, [wrap_label(label) for label in labels], loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, fontsize=fontsize, frameon=False)


def value_axis(ax: Axes, label: str, span: float = 100.0) -> None:
    """Label ``ax``'s y axis ``label``; when every value its lines draw is positive and they span
    ``span`` or more (a baseline orders of magnitude off the schedules), a log scale, so the
    schedules stay apart on it."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=np.float64) for line in ax.get_lines()] or [[]])
    values = values[np.isfinite(values)]
    wide = len(values) > 0 and values.min() > 0 and values.max() / values.min() >= span
    if wide:
        ax.set_yscale("log")
    ax.set_ylabel(f"{label} (log scale)" if wide else label)


_share = {"part": 0, "parts": 1, "seen": 0}  # this process writes PNG part, part + parts, ... (shared_pngs)


@contextmanager
def shared_pngs(part: int, parts: int) -> Iterator[None]:
    """Within the block :func:`save_png` writes only every ``parts``-th PNG, from number ``part``
    (0-based, in the order saved), and returns the others' paths unwritten: ``parts`` processes
    running the same drawing, one part each, write every PNG once between them (``harness run``'s
    side process draws a backtest's figures on two cores so)."""
    previous = dict(_share)
    _share.update(part=part, parts=parts, seen=0)
    try:
        yield
    finally:
        _share.update(previous)


def save_png(fig: Figure, path: str | Path) -> Path:
    """Lay out and write ``fig`` as a PNG at ``path`` (folders created); an unwritable path is a
    one-line error. Under :func:`shared_pngs`, only this process's share is written."""
    return draw_png(path, lambda: fig)


def draw_png(path: str | Path, make: Callable[..., Figure], *args: Any, **kwargs: Any) -> Path:
    """:func:`save_png` of ``make(*args, **kwargs)``; under :func:`shared_pngs`, a PNG another
    process writes is not even drawn (its path is returned)."""
    return _write_png(make(*args, **kwargs), Path(path)) if _my_turn() else Path(path)


def _my_turn() -> bool:
    """Whether this process writes the next PNG (see :func:`shared_pngs`); counts it."""
    number, _share["seen"] = _share["seen"], _share["seen"] + 1
    return number % _share["parts"] == _share["part"]


def _write_png(fig: Figure, path: Path) -> Path:
    if fig.get_layout_engine() is None:  # figures made with layout="constrained" keep it
        fig.tight_layout()
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The Agg canvas's own PNG writer: one draw, the layout done in it. savefig draws twice for
        # a constrained layout (a dry run to lay out, then the real one); the pixels are the same.
        canvas.print_png(path, pil_kwargs={"compress_level": 1})  # fast; files ~1.3x larger
    except OSError as exc:
        raise HarnessError(f"cannot write the plot to {path}: {exc.strerror or exc}; choose a writable path") from None
    return path


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str = "frame") -> None:
    """Raise ValueError naming the columns ``frame`` lacks (a caller's bug, not a user mistake)."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(frame.columns)}")
