"""What the commands print: the plan, a backtest's outcome, a batch summary."""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np
import pandas as pd

from harness.backtest import Outcome, Plan, Window
from harness.config import Config
from harness.evaluation.selection import SelectionReport, selection_summary


def plan_text(the_plan: Plan) -> str:
    """``harness plan``: the data, the table and the windows (first and last three)."""
    config, prices, table, dates = the_plan.config, the_plan.prices, the_plan.table, the_plan.dates
    members = len(config.schedule_labels()) * config.training.seeds
    lines = [
        f"data      {config.data.source} {_data_name(the_plan)}: {len(prices)} rows "
        f"{prices.index[0]:%Y-%m-%d} .. {prices.index[-1]:%Y-%m-%d} (hash {the_plan.data_hash})",
        f"strategy  {config.strategy.name}: {len(table.X)} rows x {table.X.shape[1]} features, "
        f"horizon {table.horizon}",
        f"windows   {len(the_plan.windows)} {config.windows.mode} windows; members per window "
        f"{members} ({_members_text(config)})",
        "",
        f"{'k':>4}  {'train from':>10}  {'train to':>10}  {'test from':>10}  {'test to':>10}  {'n_train':>7}  {'n_test':>6}",
    ]
    for window in _ends_of(the_plan.windows):
        if window is None:
            lines.append(f"{'...':>4}")
            continue
        tr, te = window.train_rows, window.test_rows
        lines.append(
            f"{window.index:>4}  {dates[tr[0]]:%Y-%m-%d}  {dates[tr[-1]]:%Y-%m-%d}  "
            f"{dates[te[0]]:%Y-%m-%d}  {dates[te[-1]]:%Y-%m-%d}  {len(tr):>7}  {len(te):>6}"
        )
    return "\n".join(lines)


def _members_text(config: Config) -> str:
    """``8 schedules x 3 seeds``, or with budget and LR axes ``4 schedules x 3 budgets x 2 LRs x 3 seeds``."""
    training = config.training
    parts = [f"{len(config.schedules)} schedules"]
    if len(training.budgets) > 1:
        parts.append(f"{len(training.budgets)} budgets {training.budgets}")
    if len(training.lrs) > 1:
        parts.append(f"{len(training.lrs)} LRs [{', '.join(f'{lr:g}' for lr in training.lrs)}]")
    return " x ".join([*parts, f"{training.seeds} seeds"])


def _grid_lines(backtest: Any) -> list[str]:
    """With budget or LR axes: the pooled metric and the still-improving share as schedule x budget grids."""
    from harness.backtest.candidates import grid_table, has_axes

    if not has_axes(backtest.config):
        return []
    metric = backtest.metric
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.5g}".format):
        pooled = grid_table(backtest, metric).to_string()
        improving = grid_table(backtest, metric, key="still_improving").map(
            lambda v: "-" if pd.isna(v) else f"{v:.0%}").to_string()
    return ["", f"pooled {metric} by schedule and training budget (each cell one candidate):", pooled,
            "", "share of members still improving when training stopped:", improving]


def _undertrained_lines(backtest: Any) -> list[str]:
    from harness.evaluation.diagnosis import summary

    lines = summary(backtest.undertrained())
    return ["", *lines] if lines else []


def _data_name(the_plan: Plan) -> str:
    data = the_plan.config.data
    if data.source in ("csv", "parquet"):
        return data.path
    if data.source == "yfinance":
        return ",".join(data.tickers)
    return str(data.synthetic.get("model", "gbm"))


def _ends_of(windows: list[Window], keep: int = 3) -> list[Window | None]:
    if len(windows) <= 2 * keep + 1:
        return list(windows)
    return [*windows[:keep], None, *windows[-keep:]]


def ui_line(outcome: Outcome) -> str:
    return f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {outcome.store.tracking_uri}"


def comparison_line(outcome: Outcome) -> str | None:
    """``harness ui EXPERIMENT`` and the link it opens: the comparison of this backtest's schedule runs."""
    from harness.backtest.sidecar import tracking  # harness.tracking, in the run's side process when it runs
    from harness.errors import HarnessError

    store, experiment = outcome.store, outcome.backtest.config.experiment
    try:
        comparison = tracking.find_comparison(store, outcome.run_id)
    except HarnessError:
        return None
    if store.tracking_uri.startswith(("http://", "https://")):  # the tracking server is the UI
        return f"open the comparison: {comparison.url(store.tracking_uri)}"
    command = ["harness", "ui", experiment]
    try:
        default = tracking.resolve_store(None, create=False).tracking_uri
    except HarnessError:
        default = None
    if store.tracking_uri != default:
        command += ["--tracking-uri", str(store.folder or store.tracking_uri)]
    link = comparison.url(tracking.ui_base())
    return f"open the comparison: {' '.join(shlex.quote(part) for part in command)}  (then {link})"


def timing_text(outcome: Outcome) -> str:
    """Where a run's seconds went: the trainer, the windows' other work (scalers, baselines,
    predictions, metrics, checkpoints), the wait for a new store the side process was creating
    while the first windows trained (not in the windows' seconds), the MLflow logging (figures
    included)."""
    logging = f"MLflow logging {outcome.log_seconds:.1f} s"
    if outcome.store_seconds >= 0.05:
        logging = f"opening the new store {outcome.store_seconds:.1f} s; {logging}"
    if outcome.train_seconds <= 0:
        return logging
    if outcome.backtest.config.execution.executor != "local":  # workers train side by side
        return f"training {outcome.train_seconds:.1f} s summed over workers; {logging}"
    other = max(outcome.seconds - outcome.train_seconds, 0.0)
    return f"training {outcome.train_seconds:.1f} s, other window work {other:.1f} s; {logging}"


def outcome_text(outcome: Outcome) -> str:
    """``harness run``'s report of one backtest: what ran, the ranking, where it is logged, the selection."""
    backtest, config = outcome.backtest, outcome.backtest.config
    if not outcome.trained:
        head = [f"{config.experiment}: this backtest (same config, data and code) already finished as run "
                f"{outcome.run_id}; nothing trained (pass --rerun to run it again)"]
    else:
        head = [f"{config.experiment}: {backtest.n_windows} windows x {_members_text(config)} in "
                f"{outcome.seconds:.1f} s ({timing_text(outcome)})"]
        if outcome.resumed:
            head.append(f"resumed run {outcome.run_id}: {outcome.resumed} windows loaded from the interrupted run, "
                        f"{backtest.n_windows - outcome.resumed} trained now")
    report = outcome.selection
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.5g}".format):
        table = (ranking(report) if report is not None else backtest.summary()).to_string(index=False)
    lines = [
        *head,
        "",
        f"ranking by pooled {backtest.metric} (seed-mean predictions over all out-of-sample windows"
        f"{', the strategy baseline among them' if report is not None else ''}):",
        table,
        *_grid_lines(backtest),
        *_undertrained_lines(backtest),
        "",
        f"logged to experiment '{config.experiment}', parent run {outcome.run_id}",
        f"compare schedules: {ui_line(outcome)}",
    ]
    comparison = comparison_line(outcome)
    if comparison is not None:
        lines.append(comparison)
    if outcome.selection is not None:
        lines += ["", selection_summary(outcome.selection),
                  f"full report (DM tests, confidence set, intervals, PBO): harness select {config.experiment}"]
    elif outcome.selection_error:
        lines += ["", f"selection: not made ({outcome.selection_error}); the backtest itself is complete"]
    return "\n".join(lines)


def ranking(report: SelectionReport) -> pd.DataFrame:
    """The printed ranking: each candidate (the baseline too) with its skill and test against the baseline."""
    m, t = report.metric, report.table
    columns = {"schedule": "schedule", f"pooled_{m}": f"pooled_{m}", "pooled_r2_oos": "r2_oos",
               **{f"pooled_{k}": k for k in report.headline},
               "dm_base_p_holm": "p_vs_baseline", f"window_std_{m}": f"window_std_{m}",
               f"seed_std_{m}": f"seed_std_{m}", "in_mcs": "in_mcs", "divergence_rate": "diverged",
               "best_window_share": "best_share", "still_improving": "still_improving"}
    if "still_improving" in t.columns and not (t["still_improving"] >= 0.5).any():
        columns.pop("still_improving")  # shown when some candidate was undertrained
    return t[[c for c in columns if c in t.columns]].rename(columns=columns)


def batch_summary(outcomes: list[Outcome]) -> str:
    """One line per backtest of a batch: its best schedule by pooled metric and its parent run."""
    rows = []
    for outcome in outcomes:
        config, summary = outcome.backtest.config, outcome.backtest.summary()
        metric = f"pooled_{outcome.backtest.metric}"
        best = summary.iloc[0]
        rows.append({"experiment": config.experiment, "windows": outcome.backtest.n_windows,
                     "best schedule": best["schedule"], metric: best.get(metric, np.nan),
                     "parent run": outcome.run_id, "trained": "now" if outcome.trained else "earlier"})
    with pd.option_context("display.width", 200, "display.float_format", "{:.5g}".format):
        return f"batch of {len(outcomes)} backtests:\n" + pd.DataFrame(rows).to_string(index=False)
