"""Schedule selection with statistics (design section 8): which schedule goes to production.

Everything here works on the out-of-sample **loss matrix** (one row per out-of-sample date, one
column per schedule; losses of the seed-mean predictions, :func:`harness.metrics.loss_matrix`):

- **Diebold–Mariano** (1995) tests of every schedule against the best (lowest mean loss):
  ``d_t = L_s,t − L_best,t``, ``DM = mean(d) / sqrt(LRV / T)`` with the Newey–West (Bartlett)
  long-run variance, two-sided p-values from Student's t with ``T − 1`` degrees of freedom
  (Harvey–Leybourne–Newbold), Holm-corrected over the ``k − 1`` comparisons;
- the **Model Confidence Set** of Hansen, Lunde and Nason (2011), ``arch.bootstrap.MCS`` (range
  statistic, stationary bootstrap), at ``selection.alpha``;
- **stationary-bootstrap percentile intervals** (level ``1 − alpha``) of each schedule's pooled metric;
- the **probability of backtest overfitting** (CSCV, Bailey, Borwein, López de Prado and Zhu 2017)
  over windows, when there are at least :data:`PBO_MIN_WINDOWS` windows.

The rule then picks one schedule (:data:`RULES`). Bootstraps are seeded: the same backtest gives
the same report. This module does not import mlflow: :func:`select_from_logged` takes the plain
dict :func:`harness.tracking.load_backtest` returns.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness import metrics as M
from harness.config import Config, SelectionConfig, parse_config
from harness.errors import HarnessError

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
LOSS_NAMES = {"mse": "squared error", "mae": "absolute error"}
PBO_MIN_WINDOWS = 8
PBO_MAX_SPLITS = 16  # C(16, 8) = 12870 combinations
REPS = 1000
TIE = 1e-9


# --- statistics on a loss matrix ----------------------------------------------------------------


def newey_west_lags(n_obs: int, horizon: int = 1) -> int:
    """Bartlett lags: ``floor(4 (T/100)^(2/9))``, at least ``horizon − 1`` (overlapping labels), < T."""
    rule = int(math.floor(4.0 * (n_obs / 100.0) ** (2.0 / 9.0)))
    return int(max(0, min(max(rule, horizon - 1), n_obs - 1)))


def long_run_variance(d: np.ndarray, lags: int) -> float:
    """Newey–West long-run variance of ``d``: ``γ0 + 2 Σ_{j≤L} (1 − j/(L+1)) γj``, γ with divisor T."""
    d = np.asarray(d, dtype=np.float64)
    centred = d - d.mean()
    n = len(centred)
    lrv = float(centred @ centred) / n
    for j in range(1, lags + 1):
        lrv += 2.0 * (1.0 - j / (lags + 1.0)) * float(centred[j:] @ centred[:-j]) / n
    return lrv


@dataclass(frozen=True)
class DMTest:
    """A Diebold–Mariano test of ``loss − benchmark``: mean difference, statistic, two-sided p."""

    mean_diff: float
    stat: float
    pvalue: float
    lags: int


def diebold_mariano(loss: np.ndarray, benchmark: np.ndarray, lags: int | None = None, horizon: int = 1) -> DMTest:
    """DM test of equal expected loss; ``stat > 0`` means ``loss`` is worse than ``benchmark``.

    Identical series (``d ≡ 0``) give ``stat = 0, p = 1``; a constant non-zero difference gives an
    infinite statistic and ``p = 0``.
    """
    d = np.asarray(loss, dtype=np.float64) - np.asarray(benchmark, dtype=np.float64)
    n = len(d)
    if n < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"diebold_mariano needs >= 2 finite loss differences, got {n}")
    lags = newey_west_lags(n, horizon) if lags is None else int(lags)
    mean = float(d.mean())
    lrv = long_run_variance(d, lags)
    scale = max(float(np.abs(d).max()), 1e-300)
    if lrv <= (1e-14 * scale) ** 2:  # no variation in d: equal (p = 1) or surely different (p = 0)
        stat = 0.0 if abs(mean) <= 1e-14 * scale else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(lrv / n)
    return DMTest(mean, stat, float(2.0 * stats.t.sf(abs(stat), df=n - 1)), lags)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    q = p[finite]
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(q) - np.arange(len(q))) * q[order]))
    values = np.empty_like(q)
    values[order] = adjusted
    out[finite] = values
    return out


def block_length(n_obs: int) -> int:
    """Mean block length of the bootstraps: ``sqrt(T)`` (arch's MCS default), at least 1."""
    return max(1, int(round(math.sqrt(n_obs))))


def model_confidence_set(losses: pd.DataFrame, alpha: float, *, reps: int = REPS, block_size: int | None = None,
                         seed: int = 0) -> pd.Series:
    """MCS p-value per schedule (``arch.bootstrap.MCS``, method ``R``, stationary bootstrap).

    A schedule is in the set at level ``alpha`` iff its p-value ``>= alpha``. Columns with
    identical losses are tested once (arch's statistic is undefined for them) and share the p-value.
    """
    from arch.bootstrap import MCS

    groups = _identical_columns(losses)
    unique = losses[[group[0] for group in groups]]
    if unique.shape[1] == 1:
        pvalues = pd.Series(1.0, index=unique.columns)
    else:
        block = block_size or block_length(len(unique))
        mcs = MCS(unique, size=alpha, reps=reps, block_size=block, method="R", bootstrap="stationary", seed=seed)
        mcs.compute()
        pvalues = mcs.pvalues["Pvalue"]
    return pd.Series({name: float(pvalues[group[0]]) for group in groups for name in group}).reindex(losses.columns)


def _identical_columns(losses: pd.DataFrame) -> list[list[str]]:
    groups: list[list[str]] = []
    for name in losses.columns:
        column = losses[name].to_numpy()
        for group in groups:
            if np.array_equal(losses[group[0]].to_numpy(), column):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def pooled_from_losses(metric: str, losses: np.ndarray, weights: np.ndarray,
                       baseline: np.ndarray | None = None) -> np.ndarray:
    """The pooled metric of each column of ``losses`` ``[T, k]`` (per-date mean losses, ``weights``
    = rows per date): ``rmse`` → sqrt of the weighted mean, ``r2_oos`` → 1 − SSE/SSE_baseline, else
    the weighted mean loss."""
    total = weights @ losses
    if metric == "r2_oos":
        if baseline is None:
            raise ValueError("r2_oos needs the baseline's losses")
        return 1.0 - total / float(weights @ baseline)
    mean = total / weights.sum()
    return np.sqrt(mean) if metric == "rmse" else mean


def bootstrap_intervals(losses: pd.DataFrame, metric: str, level: float, *, weights: np.ndarray | None = None,
                        baseline: np.ndarray | None = None, reps: int = REPS, block_size: int | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """Percentile intervals of each schedule's pooled metric, stationary bootstrap over dates.

    Dates are resampled jointly for all schedules (and the baseline), in blocks of mean length
    ``block_size`` (default :func:`block_length`). Returns ``schedule, estimate, low, high``.
    """
    from arch.bootstrap import StationaryBootstrap

    values = losses.to_numpy(np.float64)
    n_obs, k = values.shape
    w = np.ones(n_obs) if weights is None else np.asarray(weights, dtype=np.float64)
    b = np.zeros(n_obs) if baseline is None else np.asarray(baseline, dtype=np.float64)
    joined = np.column_stack([values, w, b])

    def pooled(data: np.ndarray) -> np.ndarray:
        return pooled_from_losses(metric, data[:, :k], data[:, k], data[:, k + 1])

    boot = StationaryBootstrap(block_size or block_length(n_obs), joined, seed=seed)
    draws = boot.apply(pooled, reps)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(draws, [tail, 100.0 - tail], axis=0)
    return pd.DataFrame({"schedule": list(losses.columns), "estimate": pooled(joined), "low": low, "high": high})


def pbo_cscv(performance: np.ndarray, n_splits: int) -> float:
    """Probability of backtest overfitting by CSCV (Bailey et al. 2017).

    Parameters
    ----------
    performance : ``[T, N]`` per-period performance of N candidates, higher is better, additive
        over periods (e.g. minus the summed loss of each window).
    n_splits : S, an even number of contiguous groups of rows (S ≤ T).

    Every split of the S groups into two halves is an in-sample/out-of-sample pair; the in-sample
    best candidate's out-of-sample relative rank ω = r/(N+1) (average ranks for ties) gives the
    logit λ = log(ω/(1−ω)); PBO is the share of splits with λ ≤ 0.
    """
    values = np.asarray(performance, dtype=np.float64)
    n_rows, n_candidates = values.shape
    if n_splits % 2 or n_splits < 2 or n_splits > n_rows or n_candidates < 2:
        raise ValueError(f"pbo_cscv needs an even split count in [2, T={n_rows}] and >= 2 candidates")
    groups = np.stack([part.sum(axis=0) for part in np.array_split(values, n_splits)])  # [S, N]
    combos = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)))
    chosen = np.zeros((len(combos), n_splits))
    chosen[np.arange(len(combos))[:, None], combos] = 1.0
    # a half's performance is its sum over its rows: candidates share the denominator, so ranks need no mean
    in_sample, out_sample = chosen @ groups, (1.0 - chosen) @ groups
    best = np.argmax(in_sample, axis=1)
    oos_best = out_sample[np.arange(len(combos)), best][:, None]
    rank = (out_sample < oos_best).sum(axis=1) + 0.5 * ((out_sample == oos_best).sum(axis=1) - 1) + 1.0
    omega = rank / (n_candidates + 1.0)
    return float(np.mean(np.log(omega / (1.0 - omega)) <= 0.0))


def pbo_splits(n_windows: int) -> int | None:
    """CSCV split count for ``n_windows``: the largest even S ≤ min(windows, 16); None below 8 windows."""
    if n_windows < PBO_MIN_WINDOWS:
        return None
    return min(n_windows, PBO_MAX_SPLITS) // 2 * 2


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
class Evidence:
    """The frames of a finished backtest that selection reads (``docs/ARCHITECTURE.md`` layouts)."""

    predictions: pd.DataFrame
    training: pd.DataFrame
    metrics: pd.DataFrame            # window, schedule, seed, metric, value
    seed_mean_metrics: pd.DataFrame  # window, schedule, metric, value
    aggregates: pd.DataFrame         # schedule, metric, value


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
    evidence: Evidence = field(default=None, repr=False)
    production: list[str] = field(default_factory=list)

    @property
    def mcs(self) -> list[str]:
        """The schedules in the model confidence set, in ranking order."""
        return self.table.loc[self.table["in_mcs"], "schedule"].tolist()

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
        return {"selected_schedule": self.selected, "selection_rule": self.rule, "selection_metric": self.metric,
                "selection_alpha": f"{self.alpha:g}", "selection_mcs": ",".join(self.mcs)}

    def markdown(self) -> str:
        """The report as markdown (what ``harness select`` prints and logs as ``selection.md``)."""
        return render_markdown(self)


def select(evidence: Evidence, strategy: Any, selection: SelectionConfig, *, horizon: int = 1,
           experiment: str = "", run_id: str | None = None, seed: int = 0, reps: int = REPS) -> SelectionReport:
    """Rank the schedules of a backtest with statistics and pick one by ``selection.rule``.

    ``horizon`` is the label horizon (Newey–West lags ≥ horizon − 1); ``seed`` seeds every bootstrap.
    """
    metric, alpha = selection.metric, selection.alpha
    ranking = M.ranking_table(evidence.aggregates, metric=metric, strategy=strategy)  # unknown metric: error
    direction = M.better(metric, strategy)
    all_losses = M.loss_matrix(evidence.predictions, LOSSES.get(metric, metric), by="date",
                               training=evidence.training, strategy=strategy)
    losses, notes = _testable(all_losses)
    n_obs = len(losses)
    lags = newey_west_lags(n_obs, horizon)
    block = block_length(n_obs)
    weights, baseline = _date_weights(evidence.predictions, losses.index, metric)
    intervals = bootstrap_intervals(losses, metric, 1.0 - alpha, weights=weights, baseline=baseline, reps=reps,
                                    block_size=block, seed=seed).set_index("schedule")
    best = str(losses.mean().idxmin())
    dm = {name: diebold_mariano(losses[name], losses[best], lags=lags) for name in losses.columns if name != best}
    mcs_p = model_confidence_set(losses, alpha, reps=reps, block_size=block, seed=seed)
    table = ranking.copy()
    table.insert(2, "ci_low", table["schedule"].map(intervals["low"]))
    table.insert(3, "ci_high", table["schedule"].map(intervals["high"]))
    table["dm_stat"] = table["schedule"].map({k: v.stat for k, v in dm.items()})
    table["dm_p"] = table["schedule"].map({k: v.pvalue for k, v in dm.items()})
    table["dm_p_holm"] = table["schedule"].map(dict(zip(dm, holm([v.pvalue for v in dm.values()]))))
    table["tested"] = table["schedule"].isin(losses.columns)
    table["mcs_p"] = table["schedule"].map(mcs_p)
    table["in_mcs"] = (table["mcs_p"] >= alpha).fillna(False).astype(bool)
    table["dispersion"] = dispersion_scores(table, metric, table.loc[table["in_mcs"], "schedule"]).to_numpy()
    pbo, pbo_note = _pbo(losses, evidence.predictions, weights)
    n_windows = int(evidence.predictions["window"].nunique())
    return SelectionReport(
        experiment=experiment, run_id=run_id, metric=metric, direction=direction, alpha=alpha,
        rule=selection.rule, selected=apply_rule(table, selection.rule, metric, direction), best=best,
        table=table, pbo=pbo, pbo_note=pbo_note, n_obs=n_obs, n_windows=n_windows, lags=lags,
        block_size=block, reps=reps, seed=seed, notes=notes, losses=losses, evidence=evidence,
    )


def select_from_result(result: Any, scores: Any, *, run_id: str | None = None, reps: int = REPS) -> SelectionReport:
    """:func:`select` on an in-memory ``engine.BacktestResult`` and its ``engine.Scores``."""
    config: Config = result.config
    evidence = Evidence(result.predictions, result.training, scores.metrics, scores.seed_mean_metrics,
                        scores.aggregates)
    return select(evidence, result.strategy, config.selection, horizon=int(result.table.horizon),
                  experiment=config.experiment, run_id=run_id, seed=config.training.seed, reps=reps)


def select_from_logged(loaded: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                       reps: int = REPS) -> tuple[SelectionReport, Config]:
    """:func:`select` on what ``tracking.load_backtest`` read back; ``overrides`` replace fields of
    the logged ``selection`` section (``metric``, ``alpha``, ``rule``) and are validated like it.

    Returns the report and the backtest's config (for the production retrain).
    """
    from strategies import get_strategy

    raw = dict(loaded["config"])
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    raw["selection"] = {**(raw.get("selection") or {}), **given}
    config = parse_config(raw)
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    evidence = Evidence(*(loaded[name] for name in ("predictions", "training", "metrics", "seed_mean_metrics",
                                                    "aggregates")))
    horizon = int(getattr(strategy, "horizon", 1))
    report = select(evidence, strategy, config.selection, horizon=horizon, experiment=config.experiment,
                    run_id=loaded.get("parent_run_id"), seed=config.training.seed, reps=reps)
    return report, config


def selection_summary(report: SelectionReport) -> str:
    """Two or three lines: the selected schedule, what the confidence set holds, and the rule."""
    held = report.mcs
    if len(report.table) == 1:
        mcs = "only one schedule was backtested: there is nothing to compare it with"
    elif len(held) == 1:
        mcs = f"the {1 - report.alpha:.0%} model confidence set holds only {held[0]}: the data single it out"
    else:
        mcs = (f"the {1 - report.alpha:.0%} model confidence set holds {len(held)} of {len(report.table)} schedules "
               f"({', '.join(held)}): the data cannot tell them apart")
    return "\n".join([
        f"selected schedule: {report.selected} (rule {report.rule}, metric {report.metric})",
        mcs,
        f"rule: {report.rule_text}",
    ])


def _testable(losses: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Schedules whose loss is finite on every date (others had every seed diverge somewhere)."""
    finite = np.isfinite(losses.to_numpy(np.float64)).all(axis=0)
    notes = [f"{name}: every seed diverged on some out-of-sample dates, so it is left out of the tests "
             "and cannot be selected" for name in losses.columns[~finite]]
    if not finite.any():
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
    losses = losses[[group[0] for group in _identical_columns(losses)]]  # a duplicate is not another candidate
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


# --- markdown ------------------------------------------------------------------------------------


def render_markdown(report: SelectionReport) -> str:
    """The selection report as markdown."""
    m = report.metric
    level = f"{1 - report.alpha:.0%}"
    loss = report.loss_name
    lines = [
        f"# Schedule selection: {report.experiment}",
        "",
        f"Backtest {'run `' + report.run_id + '`' if report.run_id else '(in memory)'}: {report.n_windows} windows, "
        f"{report.n_obs} out-of-sample dates, {_count(len(report.table), 'schedule')}. Metric: **{m}** "
        f"({'lower' if report.direction == 'min' else 'higher'} is better), per-date loss: {loss} of the "
        "seed-mean prediction.",
        "",
        f"**Selected: `{report.selected}`** (rule `{report.rule}`: {report.rule_text}).",
        "",
        _mcs_sentence(report, level),
        "",
        "## Ranking",
        "",
        _markdown_table(_report_columns(report)),
        "",
        f"- **CI**: {level} stationary-bootstrap percentile interval of the pooled {m} (dates resampled jointly, "
        f"mean block {report.block_size}, {report.reps} draws, seed {report.seed}).",
        f"- **DM**: Diebold–Mariano statistic against `{report.best}` (lowest mean loss); > 0 means worse. "
        f"Newey–West variance with {report.lags} lags, two-sided p from t({report.n_obs - 1}); "
        "**p Holm** corrects for the comparisons made.",
        f"- **MCS p**: `arch.bootstrap.MCS` p-value (range statistic, stationary bootstrap, mean block "
        f"{report.block_size}, {report.reps} draws, seed {report.seed}); in the set iff p ≥ {report.alpha:g}.",
        f"- **D**: dispersion score of the set's schedules, seed_std_{m}/mean + window_std_{m}/mean "
        "(means over the set).",
        f"- seed std: mean over windows of the std across seeds; window std/worst: across windows of the "
        f"per-window {m}; best share: share of windows where the schedule is best.",
        "",
        "## Probability of backtest overfitting",
        "",
        _pbo_sentence(report),
    ]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    if report.production:
        lines += ["", "## Production model", "", *report.production]
    return "\n".join(lines) + "\n"


def _mcs_sentence(report: SelectionReport, level: str) -> str:
    held = report.mcs
    names = ", ".join(f"`{name}`" for name in held)
    if len(report.table) == 1:
        return "Only one schedule was backtested: the tests below have nothing to compare it with."
    if len(held) == 1:
        return (f"The {level} model confidence set holds one schedule, {names}: every other schedule is "
                f"significantly worse at α = {report.alpha:g}.")
    return (f"The {level} model confidence set holds {len(held)} of {len(report.table)} schedules ({names}): "
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
    })


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(frame.shape[1])) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
