"""The selection report as markdown (what ``harness select`` prints and logs as ``selection.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from harness.evaluation.selection import SelectionReport


def render_markdown(report: SelectionReport) -> str:
    """The selection report as markdown."""
    m = report.metric
    level = f"{1 - report.alpha:.0%}"
    loss = report.loss_name
    lines = [
        f"# Schedule selection: {report.experiment}",
        "",
        f"**Verdict: {report.verdict}.**",
        "",
        f"Backtest {'run `' + report.run_id + '`' if report.run_id else '(in memory)'}: {report.n_windows} windows, "
        f"{report.n_obs} out-of-sample dates, {_count(report.n_schedules, 'candidate' if _has_axes(report) else 'schedule')} and the {report.baseline}. Metric: **{m}** "
        f"({'lower' if report.direction == 'min' else 'higher'} is better), per-date loss: {loss} of the "
        "seed-mean prediction.",
        "",
        f"**Selected: `{report.selected}`** (rule `{report.rule}`: {report.rule_text}).",
        "",
        *([f"Chosen candidate: {report.chosen_text}; the production model trains with this budget and LR.", ""]
          if report.chosen and report.chosen["base_schedule"] != report.selected else []),
        _mcs_sentence(report, level),
        "",
        *_budget_section(report),
        "## Ranking",
        "",
        _markdown_table(_report_columns(report)),
        "",
        f"- **CI**: {level} stationary-bootstrap percentile interval of the pooled {m} (dates resampled jointly, "
        f"mean block {report.block_size}, {report.reps} draws, seed {report.seed}).",
        f"- **r2_oos**: pooled out-of-sample R² against the {report.baseline} (1 − SSE/SSE_baseline; > 0 beats it). "
        f"**p vs base**: one-sided Diebold–Mariano p-value of \"lower loss than the baseline\", Holm-corrected over "
        f"the schedules; a schedule beats the baseline iff p vs base < α = {report.alpha:g}.",
        f"- **DM**: Diebold–Mariano statistic against `{report.best}` (lowest mean loss); > 0 means worse. "
        f"Newey–West variance with {report.lags} lags, two-sided p from t({report.n_obs - 1}); "
        "**p Holm** corrects for the comparisons made.",
        f"- **MCS p**: `arch.bootstrap.MCS` p-value (range statistic, stationary bootstrap, mean block "
        f"{report.block_size}, {report.reps} draws, seed {report.seed}); in the set iff p ≥ {report.alpha:g}.",
        f"- **D**: dispersion score of the set's schedules, seed_std_{m}/mean + window_std_{m}/mean "
        "(means over the set).",
        f"- seed std: mean over windows of the std across seeds; window std/worst: across windows of the "
        f"per-window {m}; best share: share of windows where the schedule is best.",
        "- **still improving**: share of the candidate's members (windows x seeds) whose validation loss was still "
        "falling when training stopped (slope of log10 loss over the last 10% of epochs, one-sided t-test at 5%).",
        "",
        "## Probability of backtest overfitting",
        "",
        _pbo_sentence(report),
    ]
    if report.trading is not None:
        lines += ["", "## Trading view", "", _trading_sentence(report), "", _markdown_table(_trading_columns(report))]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    if report.production:
        lines += ["", "## Production model", "", *report.production]
    return "\n".join(lines) + "\n"


def _has_axes(report: SelectionReport) -> bool:
    """Whether the backtest compared budgets or LRs too (its candidates are schedule x budget x LR)."""
    config = getattr(report.backtest, "config", None)
    return config is not None and (len(config.training.budgets) > 1 or len(config.training.lrs) > 1)


def _mcs_sentence(report: SelectionReport, level: str) -> str:
    held = report.mcs
    names = ", ".join(f"`{name}`" for name in held)
    if len(held) == 1:
        return (f"The {level} model confidence set holds one candidate, {names}: every other candidate is "
                f"significantly worse at α = {report.alpha:g}.")
    return (f"The {level} model confidence set holds {len(held)} of {len(report.table)} candidates ({names}; "
            f"the candidates are the {report.n_schedules} schedules and the baseline): "
            "the data cannot tell these apart on loss alone, so the rule decides among them.")


def _pbo_sentence(report: SelectionReport) -> str:
    if report.pbo is None:
        return f"PBO {report.pbo_note}."
    verdict = ("high: picking the in-sample best schedule is close to a coin toss out of sample"
               if report.pbo >= 0.5 else "the in-sample best schedule usually stays in the better half out of sample"
               if report.pbo > 0.2 else "low: the in-sample best schedule stays among the best out of sample")
    return f"PBO = **{report.pbo:.2f}** ({verdict}). {report.pbo_note}."


def _report_columns(report: SelectionReport) -> pd.DataFrame:
    m = report.metric
    t = report.table
    return pd.DataFrame({
        "schedule": [f"**{s}**" if s == report.selected else s for s in t["schedule"]],
        f"pooled {m}": t[f"pooled_{m}"].map(_num),
        "r2_oos": t["pooled_r2_oos"].map(lambda v: "—" if pd.isna(v) else f"{v:+.1%}"),
        **{f"pooled {k}": t[f"pooled_{k}"].map(_num) for k in report.headline},
        "p vs base": t["dm_base_p_holm"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}"),
        "CI": [f"[{_num(a)}, {_num(b)}]" for a, b in zip(t["ci_low"], t["ci_high"])],
        "window std": t[f"window_std_{m}"].map(_num),
        "worst window": t[f"window_worst_{m}"].map(_num),
        "seed std": t[f"seed_std_{m}"].map(_num),
        "DM": t["dm_stat"].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}"),
        "p Holm": t["dm_p_holm"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}"),
        "MCS p": t["mcs_p"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}"),
        "in MCS": t["in_mcs"].map({True: "yes", False: "no"}),
        "D": t["dispersion"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        "diverged": t["divergence_rate"].map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"),
        "churn": t["churn"].map(_num),
        "best share": t["best_window_share"].map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"),
        "still improving": (t["still_improving"] if "still_improving" in t.columns else pd.Series(np.nan, index=t.index)
                            ).map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"),
    })


def _budget_section(report: SelectionReport) -> list[str]:
    """The training budget: which candidates were undertrained (members still improving at the end)."""
    table = report.undertrained
    if table is None or not len(table) or not (table["members"] > 0).any():
        return []
    notes = report.undertrained_notes
    if not notes:
        worst = table.loc[table["share"].idxmax()] if table["share"].notna().any() else None
        tail = "" if worst is None else f" (at most {worst['share']:.0%}, `{worst['schedule']}`)"
        return ["## Training budget", "",
                f"No candidate was undertrained: in each, fewer than half of the members were still improving when "
                f"training stopped{tail}.", ""]
    return ["## Training budget", "", *[f"- {note}." for note in notes], ""]


def _trading_sentence(report: SelectionReport) -> str:
    return ("Each candidate's seed-mean forecast traded over the out-of-sample windows (the strategy's positions "
            "and costs), beside buy and hold (always long one unit). Sharpe ratios are annualised, at no cost, at "
            "the configured cost and at five times it; drawdown and turnover are at the configured cost.")


def _trading_columns(report: SelectionReport) -> pd.DataFrame:
    t = report.trading
    columns = {"candidate": t["candidate"]}
    for name in [c for c in t.columns if c.startswith("sharpe_")]:
        multiple = name.removeprefix("sharpe_").removesuffix("_cost")
        columns[f"Sharpe ({multiple} cost)"] = t[name].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
    columns["max drawdown"] = t["max_drawdown"].map(lambda v: "—" if pd.isna(v) else f"{v:.0%}")
    columns["turnover"] = t["turnover"].map(_num)
    return pd.DataFrame(columns)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(frame.shape[1])) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
