"""Figures as PNG files (matplotlib's object API on the Agg canvas; no pyplot).

Importing this package imports matplotlib, so nothing imports it at module level outside figure
code: ``harness`` itself and :mod:`harness.tracking` never do; callers import it where they draw.
Figures only draw and return files; :mod:`harness.tracking` logs them.

- :mod:`~harness.figures.common`: sizes, schedule colours, the axes' finish, :func:`save_png`;
- :mod:`~harness.figures.backtest`: a backtest's figures, and :func:`backtest_figures`, the set
  its MLflow runs get;
- :mod:`~harness.figures.schedules`: LR curves of schedules (``harness schedules --plot``);
- :mod:`~harness.figures.selection`: the selection report and its figures.
"""

from harness.figures.backtest import (
    backtest_figures,
    cumulative_errors,
    plot_comparison,
    plot_equity,
    plot_errors,
    plot_lr_curve,
    plot_window_metrics,
)
from harness.figures.common import (
    DOUBLE,
    DPI,
    SINGLE,
    finish_axes,
    require_columns,
    save_png,
    schedule_colors,
)
from harness.figures.schedules import (
    NOMINAL,
    plot_lr_curves,
    plot_schedules,
    schedule_curves,
)
from harness.figures.selection import (
    plot_loss_differences,
    plot_selection,
    plot_window_intervals,
    selection_figures,
    write_report,
)

__all__ = [
    "DOUBLE", "DPI", "NOMINAL", "SINGLE", "backtest_figures", "cumulative_errors", "finish_axes", "plot_comparison",
    "plot_equity", "plot_errors", "plot_loss_differences", "plot_lr_curve", "plot_lr_curves", "plot_schedules",
    "plot_selection", "plot_window_intervals", "plot_window_metrics", "require_columns", "save_png",
    "schedule_colors", "schedule_curves", "selection_figures", "write_report",
]
