"""Figures as PNG files (matplotlib's object API on the Agg canvas; no pyplot).

Importing this package imports matplotlib, so nothing imports it at module level outside figure
code: ``harness`` itself and :mod:`harness.tracking` never do; callers import it where they draw.
Figures only draw and return files; :mod:`harness.tracking` logs them.

- :mod:`~harness.figures.common`: sizes, schedule colours, the baseline's style, date axes,
  legends outside the data, wrapped labels, :func:`save_png`;
- :mod:`~harness.figures.backtest`: a backtest's figures, and :func:`backtest_figures`, the set
  its MLflow runs get (from the :class:`~harness.backtest.Backtest` itself);
- :mod:`~harness.figures.cross_section`: a cross-section's per-date rank IC and long-short book
  (drawn by :func:`backtest_figures` for ``strategy: cross_section``);
- :mod:`~harness.figures.schedules`: LR curves of schedules (``harness schedules --plot``);
- :mod:`~harness.figures.selection`: the selection report and its figures.
"""

from harness.figures.backtest import (
    backtest_figures,
    baseline_window_metric,
    buy_and_hold,
    comparison_figure,
    cumulative_errors,
    equity_figure,
    errors_figure,
    frame_figures,
    lr_curve_figure,
    plot_comparison,
    plot_equity,
    plot_errors,
    plot_lr_curve,
    plot_window_metrics,
    window_metrics_figure,
    window_starts,
)
from harness.figures.common import (
    BASELINE_STYLE,
    DOUBLE,
    DPI,
    SINGLE,
    date_axis,
    draw_png,
    finish_axes,
    legend_outside,
    new_figure,
    require_columns,
    save_png,
    schedule_colors,
    wrap_label,
)
from harness.figures.cross_section import (
    cross_section_files,
    long_short_figure,
    plot_long_short,
    plot_rank_ic,
    rank_ic_figure,
)
from harness.figures.schedules import (
    NOMINAL,
    plot_lr_curves,
    plot_schedules,
    schedule_curves,
)
from harness.figures.selection import (
    loss_differences_figure,
    plot_loss_differences,
    plot_selection,
    plot_window_intervals,
    selection_figures,
    window_intervals_figure,
    write_report,
)

__all__ = [
    "BASELINE_STYLE", "DOUBLE", "DPI", "NOMINAL", "SINGLE", "backtest_figures", "baseline_window_metric",
    "buy_and_hold", "comparison_figure", "cross_section_files", "cumulative_errors", "date_axis", "draw_png",
    "equity_figure", "errors_figure", "finish_axes", "frame_figures", "legend_outside", "long_short_figure",
    "loss_differences_figure", "lr_curve_figure", "new_figure", "plot_comparison", "plot_equity",
    "plot_errors", "plot_long_short", "plot_loss_differences", "plot_lr_curve", "plot_lr_curves",
    "plot_rank_ic", "plot_schedules", "plot_selection", "plot_window_intervals", "plot_window_metrics",
    "rank_ic_figure", "require_columns", "save_png", "schedule_colors", "schedule_curves",
    "selection_figures", "window_intervals_figure", "window_metrics_figure", "window_starts", "wrap_label",
    "write_report",
]
