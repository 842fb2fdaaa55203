"""Schedule selection (design section 8): which schedule goes to production.

Everything works on the out-of-sample **loss matrix** of a :class:`~harness.backtest.result.Backtest`
(one row per out-of-sample date, one column per schedule; losses of the seed-mean predictions,
:func:`harness.evaluation.metrics.loss_matrix`) with the tests of
:mod:`harness.evaluation.statistics`: Diebold–Mariano tests of every schedule against the best
(Holm-corrected), the Model Confidence Set at ``selection.alpha``, bootstrap intervals of the
pooled metric, and the probability of backtest overfitting over windows. The rule then picks one
schedule (:data:`RULES`). Bootstraps are seeded: the same backtest gives the same report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.config import SelectionConfig
from harness.errors import HarnessError
from harness.evaluation import metrics as M
from harness.evaluation.report import render_markdown
from harness.evaluation.statistics import (
    PBO_MIN_WINDOWS,
    REPS,
    block_length,
    bootstrap_intervals,
    diebold_mariano,
    holm,
    identical_columns,
    model_confidence_set,
    newey_west_lags,
    pbo_cscv,
    pbo_splits,
)

if TYPE_CHECKING:
    from harness.backtest.result import Backtest

RULES = {
    "mcs_stable": "among the schedules in the model confidence set, the lowest dispersion score "
                  "D = seed_std/mean(seed_std) + window_std/mean(window_std) (means over the set's schedules) wins; "
                  "ties (1e-9 relative) go to the better pooled {metric}",
    "best_pooled": "the best pooled {metric} over all schedules wins (the confidence set is shown, not used)",
    "best_worst_window": "among the schedules in the model confidence set, the best worst-window {metric} wins; "
                         "ties go to the better pooled {metric}",
}
LOSSES = {"mse": "mse", "rmse": "mse", "r2_oos": "mse", "mae": "mae"}
"""Per-observation loss behind each precision metric (others: the strategy's pointwise loss)."""
LOSS_NAMES = {"mse": "squared error", "mae": "absolute error", "sharpe": "minus the net return of the trade",
              "huber": "Huber loss", "bce": "binary cross-entropy (log loss) of the predicted probability"}
TIE = 1e-9


# --- the rule ------------------------------------------------------------------------------------


def dispersion_scores(table: pd.DataFrame, metric: str, candidates: Sequence[str]) -> pd.Series:
    """D = seed_std_m / mean + window_std_m / mean over ``candidates`` (NaN for the others).

    A term whose candidate mean is 0 or NaN (one seed, one window) is left out for all.
    """
    rows = table.set_index("schedule").loc[list(candidates)]
    score = pd.Series(0.0, index=rows.index)
    for column in (f"seed_std_{metric}", f"window_std_{metric}"):
        values = rows[column].astype(np.float64)
        scale = values.mean()
        if np.isfinite(scale) and scale > 0:
            score += values.fillna(np.inf) / scale
    return score.reindex(table["schedule"])


def apply_rule(table: pd.DataFrame, rule: str, metric: str, direction: str) -> str:
    """The selected schedule of ``table`` (columns ``schedule, tested, in_mcs, dispersion, pooled_<m>,
    window_worst_<m>``; ``tested``: finite losses on every date) under ``rule``."""
    sign = 1.0 if direction == "min" else -1.0
    pooled = sign * table[f"pooled_{metric}"].to_numpy(np.float64)
    pool = table["in_mcs" if rule != "best_pooled" else "tested"].to_numpy(bool) & np.isfinite(pooled)
    if rule == "best_pooled":
        first = np.full(len(table), 0.0)
    elif rule == "mcs_stable":
        first = table["dispersion"].to_numpy(np.float64)
    elif rule == "best_worst_window":
        first = sign * table[f"window_worst_{metric}"].to_numpy(np.float64)
    else:
        raise HarnessError(f"selection.rule: unknown rule '{rule}'; valid: {', '.join(RULES)}")
    if not pool.any():
        raise HarnessError("no schedule is eligible for selection (every schedule diverged); fix the training setup")
    first = np.where(np.isfinite(first), first, np.inf)
    pooled = np.where(np.isfinite(pooled), pooled, np.inf)
    best_first = first[pool].min()
    tied = pool & (first <= best_first + TIE * max(abs(best_first), 1e-300))
    index = np.flatnonzero(tied)[np.argmin(pooled[tied])]  # first in ranking order among equal pooled
    return str(table["schedule"].iloc[index])


# --- the report ----------------------------------------------------------------------------------


@dataclass
class SelectionReport:
    """What :func:`select` found. ``table`` has one row per schedule, best pooled metric first."""

    experiment: str
    run_id: str | None
    metric: str
    direction: str
    alpha: float
    rule: str
    selected: str
    best: str
    table: pd.DataFrame
    pbo: float | None
    pbo_note: str
    n_obs: int
    n_windows: int
    lags: int
    block_size: int
    reps: int
    seed: int
    notes: list[str] = field(default_factory=list)
    losses: pd.DataFrame = field(default=None, repr=False)
    backtest: Backtest = field(default=None, repr=False)
    production: list[str] = field(default_factory=list)
    baseline: str = "baseline"
    beats_baseline: bool = True
    verdict: str = ""
    trading: pd.DataFrame | None = field(default=None, repr=False)
    undertrained: pd.DataFrame | None = field(default=None, repr=False)
    chosen: dict[str, str] = field(default_factory=dict)  # the selected candidate's epochs, lr, base_schedule

    @property
    def mcs(self) -> list[str]:
        """The schedules in the model confidence set, in ranking order."""
        return self.table.loc[self.table["in_mcs"], "schedule"].tolist()

    @property
    def n_schedules(self) -> int:
        """The schedules compared (the table also holds the baseline)."""
        return int((self.table["schedule"] != self.baseline).sum())

    @property
    def headline(self) -> list[str]:
        """The strategy's own metrics shown beside the selection metric (pooled columns of the table)."""
        own = getattr(getattr(self.backtest, "strategy", None), "headline", ())
        return [k for k in own if f"pooled_{k}" in self.table]

    @property
    def loss_name(self) -> str:
        """The per-date loss behind the metric, in words."""
        loss = LOSSES.get(self.metric, self.metric)
        return LOSS_NAMES.get(loss, f"{loss} loss")

    @property
    def rule_text(self) -> str:
        return RULES[self.rule].format(metric=self.metric)

    def tags(self) -> dict[str, str]:
        """Tags for the backtest's parent run: ``selected_schedule`` and how it was chosen."""
        chosen = {f"selected_{key}": value for key, value in self.chosen.items()}  # epochs, lr, base_schedule
        return {"selected_schedule": self.selected, "selection_rule": self.rule, "selection_metric": self.metric,
                "selection_alpha": f"{self.alpha:g}", "selection_mcs": ",".join(self.mcs), **chosen}

    @property
    def undertrained_notes(self) -> list[str]:
        """One sentence per candidate whose members were mostly still improving when training stopped."""
        from harness.evaluation.diagnosis import notes

        return [] if self.undertrained is None else notes(self.undertrained)

    @property
    def chosen_text(self) -> str:
        """The selected candidate in words: its schedule, budget and base LR."""
        if not self.chosen:
            return f"`{self.selected}`"
        return (f"`{self.selected}`: schedule `{self.chosen['base_schedule']}`, training.epochs {self.chosen['epochs']}, "
                f"training.lr {self.chosen['lr']}")

    def markdown(self) -> str:
        """The report as markdown (what ``harness select`` prints and logs as ``selection.md``)."""
        return render_markdown(self)


def select(backtest: Backtest, overrides: Mapping[str, Any] | None = None, *, reps: int = REPS) -> SelectionReport:
    """Rank the schedules of ``backtest`` with statistics and pick one by ``selection.rule``.

    ``overrides`` replace fields of the backtest's ``selection`` section (``metric``, ``alpha``,
    ``rule``; None values are ignored) and are validated like it. Newey–West lags are at least the
    label horizon − 1; ``training.seed`` seeds every bootstrap.
    """
    selection = _selection(backtest.config.selection, overrides)
    strategy, horizon, seed = backtest.strategy, backtest.horizon, backtest.config.training.seed
    metric, alpha = selection.metric or strategy.default_metric, selection.alpha
    base = baseline_label(strategy)
    base_predictions, base_aggregates = baseline_candidate(backtest, base, metric)
    aggregates = pd.concat([backtest.aggregates, base_aggregates], ignore_index=True)
    ranking = M.ranking_table(aggregates, metric=metric, strategy=strategy)  # unknown metric: error
    pooled = aggregates.set_index(["metric", "schedule"])["value"]
    if "pooled_r2_oos" not in ranking.columns:  # already there when r2_oos is the metric
        ranking.insert(2, "pooled_r2_oos", ranking["schedule"].map(pooled.get("pooled_r2_oos", {})))
    for key in (k for k in getattr(strategy, "headline", ()) if f"pooled_{k}" not in ranking.columns):  # shown beside
        ranking[f"pooled_{key}"] = ranking["schedule"].map(pooled.get(f"pooled_{key}", {}))
    direction = M.better(metric, strategy)
    loss = LOSSES.get(metric, metric)
    all_losses = M.loss_matrix(backtest.predictions, loss, by="date", training=backtest.training, strategy=strategy)
    all_losses[base] = M.loss_matrix(base_predictions, loss, by="date", strategy=strategy)[base]
    losses, notes = _testable(all_losses, base)
    if base not in losses.columns:
        raise HarnessError(f"the {base} has non-finite losses on some out-of-sample dates, so no schedule can "
                           "be tested against it; check the strategy's baseline")
    n_obs = len(losses)
    lags = newey_west_lags(n_obs, horizon)
    block = block_length(n_obs)
    weights, baseline = _date_weights(backtest.predictions, losses.index, metric)
    intervals = bootstrap_intervals(losses, metric, 1.0 - alpha, weights=weights, baseline=baseline, reps=reps,
                                    block_size=block, seed=seed).set_index("schedule")
    schedules = [name for name in losses.columns if name != base]
    best = str(losses[schedules].mean().idxmin())
    dm = {name: diebold_mariano(losses[name], losses[best], lags=lags) for name in schedules if name != best}
    versus = {name: diebold_mariano(losses[name], losses[base], lags=lags) for name in schedules}
    mcs_p = model_confidence_set(losses, alpha, reps=reps, block_size=block, seed=seed)
    table = ranking.copy()
    table.insert(2, "ci_low", table["schedule"].map(intervals["low"]))
    table.insert(3, "ci_high", table["schedule"].map(intervals["high"]))
    table["dm_stat"] = table["schedule"].map({k: v.stat for k, v in dm.items()})
    table["dm_p"] = table["schedule"].map({k: v.pvalue for k, v in dm.items()})
    table["dm_p_holm"] = table["schedule"].map(dict(zip(dm, holm([v.pvalue for v in dm.values()]))))
    one_sided = {name: _better_p(test) for name, test in versus.items()}
    table["dm_base_stat"] = table["schedule"].map({k: v.stat for k, v in versus.items()})
    table["dm_base_p"] = table["schedule"].map(one_sided)
    table["dm_base_p_holm"] = table["schedule"].map(dict(zip(one_sided, holm(list(one_sided.values())))))
    table["beats_baseline"] = (table["dm_base_p_holm"] < alpha).fillna(False).astype(bool)
    table["tested"] = table["schedule"].isin(losses.columns)
    table["mcs_p"] = table["schedule"].map(mcs_p)
    table["in_mcs"] = (table["mcs_p"] >= alpha).fillna(False).astype(bool)
    candidates = table[table["schedule"] != base]
    table["dispersion"] = dispersion_scores(table, metric, candidates.loc[candidates["in_mcs"], "schedule"]).to_numpy()
    selected = _apply(table[table["schedule"] != base], selection.rule, metric, direction, notes)
    pbo, pbo_note = _pbo(losses[schedules], backtest.predictions, weights)
    report = SelectionReport(
        experiment=backtest.config.experiment, run_id=backtest.run_id or None, metric=metric, direction=direction,
        alpha=alpha, rule=selection.rule, selected=selected, best=best, table=table, pbo=pbo, pbo_note=pbo_note,
        n_obs=n_obs, n_windows=int(backtest.predictions["window"].nunique()), lags=lags, block_size=block,
        reps=reps, seed=seed, notes=notes, losses=losses, backtest=backtest, baseline=base,
    )
    report.trading = trading_view(backtest, base_predictions)
    report.undertrained = backtest.undertrained()  # members still improving when training stopped
    shares = report.undertrained.set_index("schedule")["share"]
    report.table["still_improving"] = report.table["schedule"].map(shares)
    report.chosen = backtest.candidate_tags().get(selected, {})
    report.beats_baseline = bool(table.loc[table["schedule"] == selected, "beats_baseline"].iloc[0])
    report.verdict = verdict(report)
    return report


def baseline_label(strategy: Any) -> str:
    """How reports name the strategy's baseline: ``baseline (<what it is>)``."""
    return f"baseline ({getattr(strategy, 'baseline_name', 'naive')})"


def baseline_candidate(backtest: Backtest, label: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The strategy's baseline as one more candidate: its out-of-sample predictions (one member,
    ``schedule`` = ``label``) and its aggregate metrics, computed as a schedule's are."""
    predictions = backtest.predictions
    first = predictions[(predictions["schedule"] == predictions["schedule"].iloc[0])
                        & (predictions["seed"] == predictions["seed"].iloc[0])]
    rows = first.assign(schedule=label, seed=0, prediction=first["baseline"]).reset_index(drop=True)
    per_window = M.window_metrics(rows, backtest.strategy, table=backtest.table)
    aggregates = M.aggregate_metrics(rows, per_window, None, backtest.strategy, metric=metric, table=backtest.table)
    aggregates.loc[aggregates["metric"] == "best_window_share", "value"] = np.nan  # shares are among schedules
    return rows, aggregates


def trading_view(backtest: Backtest, base_predictions: pd.DataFrame) -> pd.DataFrame | None:
    """For strategies with a trading view (``trading_summary``): each schedule's seed-mean trades,
    the baseline's and buy and hold, at 0, 1x and 5x the configured cost; else None."""
    summary = getattr(backtest.strategy, "trading_summary", None)
    if not callable(summary):
        return None
    means = M.seed_mean(backtest.predictions, backtest.training)
    base = base_predictions.assign(row=base_predictions.groupby("window").cumcount())
    parts = [summary({str(label): rows["prediction"].to_numpy()}, M.test_table(backtest.table, rows))
             for label, rows in [*means.groupby("schedule", sort=False), (base["schedule"].iloc[0], base)]]
    table = pd.concat(parts, ignore_index=True)
    return table.drop_duplicates("candidate", keep="last").reset_index(drop=True)


def _better_p(test: Any) -> float:
    """One-sided p-value of "the schedule's loss is lower than the baseline's" from a two-sided DM test."""
    if not np.isfinite(test.pvalue):
        return float("nan")
    return test.pvalue / 2 if test.stat < 0 else 1.0 - test.pvalue / 2


def _apply(table: pd.DataFrame, rule: str, metric: str, direction: str, notes: list[str]) -> str:
    """The rule among the schedules that beat the baseline when any does (else among all); when
    the confidence set holds no schedule (only the baseline), the best pooled schedule."""
    beaters = table[table["beats_baseline"]]
    if len(beaters) and (rule == "best_pooled" or beaters["in_mcs"].any()):
        return apply_rule(beaters, rule, metric, direction)
    if rule != "best_pooled" and not table["in_mcs"].any():
        notes.append("the confidence set holds no schedule, only the baseline: every schedule is significantly "
                     f"worse than it, and the schedule shown as selected is simply the best pooled {metric}")
        return apply_rule(table, "best_pooled", metric, direction)
    return apply_rule(table, rule, metric, direction)


def verdict(report: SelectionReport) -> str:
    """The deployment verdict: the first line of the selection."""
    table = report.table.set_index("schedule")
    row, base = table.loc[report.selected], table.loc[report.baseline]
    m = report.metric
    skill = f", pooled {m} {row[f'pooled_{m}']:.4g} against {base[f'pooled_{m}']:.4g}" + _skill(row)
    if report.beats_baseline:
        return (f"`{report.selected}` beats the {report.baseline} at α = {report.alpha:g}: DM p = "
                f"{row['dm_base_p_holm']:.3g} (one-sided, Holm-corrected over the schedules){skill}")
    return (f"no schedule beats the {report.baseline} at α = {report.alpha:g}: the selected `{report.selected}` "
            f"has DM p = {row['dm_base_p_holm']:.3g} (one-sided, Holm-corrected){skill}; do not deploy it — keep "
            "the baseline, or change the model, features or training budget")


def _skill(row: pd.Series) -> str:
    value = row.get("pooled_r2_oos", np.nan)
    return f", pooled r2_oos {value:+.1%}" if np.isfinite(value) else ""


def _selection(selection: SelectionConfig, overrides: Mapping[str, Any] | None) -> SelectionConfig:
    """``selection`` with ``overrides`` applied, validated as the config validates it."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if not given:
        return selection
    from harness.config import parse_config

    return parse_config({"selection": {**selection.model_dump(mode="json"), **given}}).selection


def selection_summary(report: SelectionReport) -> str:
    """The verdict, the selected schedule, what the confidence set holds, and the rule."""
    held = report.mcs
    if len(held) == 1:
        mcs = f"the {1 - report.alpha:.0%} model confidence set holds only {held[0]}: the data single it out"
    else:
        mcs = (f"the {1 - report.alpha:.0%} model confidence set holds {len(held)} of {len(report.table)} candidates "
               f"({', '.join(held)}): the data cannot tell them apart")
    chosen = ([f"chosen candidate: {report.chosen_text.replace('`', '')}"]
              if report.chosen and report.chosen["base_schedule"] != report.selected else [])
    return "\n".join([
        report.verdict,
        f"selected schedule: {report.selected} (rule {report.rule}, metric {report.metric})",
        *chosen,
        mcs,
        f"rule: {report.rule_text}",
    ])


def _testable(losses: pd.DataFrame, baseline: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Schedules whose loss is finite on every date (others had every seed diverge somewhere); an
    error when no schedule but the ``baseline`` column is left."""
    finite = np.isfinite(losses.to_numpy(np.float64)).all(axis=0)
    notes = [f"{name}: every seed diverged on some out-of-sample dates, so it is left out of the tests "
             "and cannot be selected" for name in losses.columns[~finite]]
    if not finite[losses.columns != baseline].any():
        raise HarnessError("every schedule has diverged members on some windows; no schedule can be tested "
                           "(lower training.lr or add training.grad_clip)")
    return losses.loc[:, finite], notes


def _date_weights(predictions: pd.DataFrame, dates: pd.Index, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows per out-of-sample date (option chains have several), and for ``r2_oos`` the baseline's
    per-date squared error."""
    first = predictions[(predictions["schedule"] == predictions["schedule"].iloc[0])
                        & (predictions["seed"] == predictions["seed"].iloc[0])]
    weights = first.groupby("date").size().reindex(dates).to_numpy(np.float64)
    if metric != "r2_oos":
        return weights, None
    errors = np.square(first["baseline"].to_numpy(np.float64) - first["target"].to_numpy(np.float64))
    baseline = pd.Series(errors).groupby(first["date"].to_numpy()).mean().reindex(dates).to_numpy(np.float64)
    return weights, baseline


def _pbo(losses: pd.DataFrame, predictions: pd.DataFrame, weights: np.ndarray) -> tuple[float | None, str]:
    n_windows = int(predictions["window"].nunique())
    splits = pbo_splits(n_windows)
    losses = losses[[group[0] for group in identical_columns(losses)]]  # a duplicate is not another candidate
    if losses.shape[1] < 2:
        return None, "not computed: it needs at least two schedules with different losses"
    if splits is None:
        return None, (f"not computed: CSCV needs at least {PBO_MIN_WINDOWS} windows to split into halves, "
                      f"this backtest has {n_windows}; run more windows (a smaller windows.step or more data)")
    window_of = predictions.groupby("date")["window"].first().reindex(losses.index).to_numpy()
    # minus each window's summed loss (rows per date as weights): additive over windows
    per_window = -losses.mul(weights, axis=0).groupby(window_of).sum().to_numpy(np.float64)
    value = pbo_cscv(per_window, splits)
    return value, (f"CSCV over {n_windows} windows in {splits} contiguous groups "
                   f"({math.comb(splits, splits // 2)} in-sample/out-of-sample splits), "
                   "performance = minus the mean loss")
