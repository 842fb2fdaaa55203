"""Precision and stability metrics (design section 7), all derived from tidy frames.

Inputs (``docs/ARCHITECTURE.md``):

- predictions ``pred``: ``date, window, schedule, seed, prediction, target, baseline``, one row per
  test row per member, a member's rows in the strategy table's row order;
- training diagnostics ``training``: ``window, schedule, seed, diverged, end_oscillation,
  train_loss, val_loss, best_epoch``;
- churn predictions: ``window, schedule, seed, prev_prediction, prediction`` (window k's test
  inputs through window k-1's and window k's models);
- the strategy ``table`` the predictions came from, for strategy metrics that read features
  (``option_pricer``; ``return_forecast`` with ``position: vol_scaled``).

Members flagged ``diverged`` (or with a non-finite prediction) are excluded from every precision
metric and from the seed means. Standard deviations are sample ones (ddof=1): NaN with a single
window or seed rather than a misleading 0. "Seed-mean prediction" = the mean over a schedule's
live seeds of the prediction for one test row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness.errors import HarnessError, did_you_mean
from strategies.base import Strategy, Table

MEMBER = ["window", "schedule", "seed"]
PRECISION = ("mse", "rmse", "mae", "r2_oos")
BETTER = {"mse": "min", "rmse": "min", "mae": "min", "r2_oos": "max"}
"""Which direction is better for the precision metrics; strategies declare theirs in ``Strategy.better``."""
RANKING_KEYS = ("pooled", "window_std", "window_worst", "seed_std")
STABILITY_KEYS = ("divergence_rate", "end_oscillation", "churn", "best_window_share")


def precision(y: np.ndarray, pred: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """Precision of ``pred`` against the target ``y`` (1-D, same length).

    ``mse`` = mean (pred − y)², ``rmse`` = sqrt(mse), ``mae`` = mean |pred − y|,
    ``r2_oos`` = 1 − SSE_model / SSE_baseline with SSE = sum of squared errors (Campbell–Thompson
    out-of-sample R²: > 0 means the model beats the naive baseline; NaN if the baseline is exact).
    """
    y, pred, baseline = (np.asarray(a, dtype=np.float64) for a in (y, pred, baseline))
    if len(y) == 0:
        return dict.fromkeys(PRECISION, float("nan"))
    err = pred - y
    sse, sse_base = float(np.sum(err * err)), float(np.sum(np.square(baseline - y)))
    mse = sse / len(y)
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "r2_oos": 1.0 - sse / sse_base if sse_base > 0 else float("nan"),
    }


def better(metric: str, strategy: Strategy | None = None) -> str:
    """``"min"`` if lower values of ``metric`` are better, ``"max"`` if higher (unknown: ``"min"``)."""
    own = getattr(strategy, "better", {}) or {}
    return own.get(metric, BETTER.get(metric, "min"))


def window_metrics(pred: pd.DataFrame, strategy: Strategy, table: Table | None = None,
                   training: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per window × schedule × seed metrics on the test slice: precision + the strategy's own.

    Returns the tidy frame ``window, schedule, seed, metric, value``. Diverged members (from
    ``training``) and members with non-finite predictions get no rows.
    """
    live = _live(pred, training)
    rows = []
    tables: dict = {}
    for (window, schedule, seed), group in live.groupby(MEMBER, sort=False):
        if window not in tables:
            tables[window] = test_table(table, group)
        values = member_metrics(strategy, group, tables[window])
        rows.extend((window, schedule, seed, name, value) for name, value in values.items())
    return pd.DataFrame(rows, columns=[*MEMBER, "metric", "value"]).astype({"value": np.float64})


def member_metrics(strategy: Strategy, frame: pd.DataFrame, test: Table) -> dict[str, float]:
    """Precision + strategy metrics of one prediction series (``prediction, target, baseline``)."""
    y, p, b = (frame[c].to_numpy(np.float64) for c in ("target", "prediction", "baseline"))
    return {**precision(y, p, b), **{k: float(v) for k, v in strategy.metrics(y, p, b, test).items()}}


def seed_mean(pred: pd.DataFrame, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """Seed-mean predictions of live members: ``schedule, window, row, date, prediction, target,
    baseline, dispersion`` (``row`` = position in the window's test slice; ``dispersion`` = std
    across seeds), sorted by schedule (first-seen order), window and row."""
    live = _live(pred, training).copy()
    live["row"] = live.groupby(MEMBER, sort=False).cumcount()
    grouped = live.groupby(["schedule", "window", "row"], sort=False)
    out = grouped.agg(date=("date", "first"), prediction=("prediction", "mean"), target=("target", "first"),
                      baseline=("baseline", "first"), dispersion=("prediction", "std")).reset_index()
    order = {name: i for i, name in enumerate(pd.unique(pred["schedule"]))}
    out = out.sort_values(["schedule", "window", "row"], key=lambda c: c.map(order) if c.name == "schedule" else c)
    return out.reset_index(drop=True)


def aggregate_metrics(pred: pd.DataFrame, wm: pd.DataFrame, training: pd.DataFrame | None,
                      strategy: Strategy, metric: str = "rmse", churn_preds: pd.DataFrame | None = None,
                      table: Table | None = None) -> pd.DataFrame:
    """Pooled precision and stability per schedule, as the tidy frame ``schedule, metric, value``.

    Keys per schedule (m = every metric in ``wm``):

    - ``pooled_<m>``: m on the concatenated out-of-sample series of seed-mean predictions;
    - ``window_std_<m>``, ``window_iqr_<m>``, ``window_worst_<m>``: std, IQR (q75 − q25) and worst
      (max if lower is better, else min) across windows of the per-window metric (its mean over seeds);
    - ``seed_std_<m>``: mean over windows of the std across seeds of m;
    - ``pred_dispersion``: mean over test rows of the std across seeds of the prediction;
    - ``divergence_rate``: share of members (windows × seeds) flagged diverged;
    - ``end_oscillation``: mean over live members of std/mean of their last 10 % of step losses;
    - ``train_val_gap``: mean over live members of (final validation loss − final train loss), in the
      trainer's (scaled) loss units; > 0 means worse on the validation tail than on the fitted rows;
    - ``churn``: mean |prediction − prev_prediction| over rows and live members of ``churn_preds``
      (a member counts if live in both windows); NaN without churn predictions;
    - ``best_window_share``: share of windows where the schedule's per-window ``metric`` is the best
      among schedules (ties all count as best).
    """
    metrics = list(pd.unique(wm["metric"]))
    if not metrics:  # every member diverged: the keys still exist, as NaN
        metrics = [*PRECISION, *getattr(strategy, "better", {})]
    _check_metric(metric, metrics, strategy)
    schedules = list(pd.unique(pred["schedule"]))
    per_window = wm.groupby(["schedule", "metric", "window"], sort=False)["value"]
    window_mean = per_window.mean().unstack("window")  # (schedule, metric) x window: mean over seeds
    seed_std = per_window.std().groupby(level=["schedule", "metric"]).mean()
    means = seed_mean(pred, training)
    per_schedule = window_mean.xs(metric, level="metric") if len(window_mean) else pd.DataFrame()
    best = best_window_share(per_schedule.reindex(schedules), better(metric, strategy))
    train = _training_summary(training)
    churn = _churn(churn_preds, training)
    rows = []
    for schedule in schedules:
        own = means[means["schedule"] == schedule]
        pooled = member_metrics(strategy, own, test_table(table, own)) if len(own) else {}
        for m in metrics:
            values = _window_values(window_mean, schedule, m)
            rows += [
                (schedule, f"pooled_{m}", pooled.get(m, np.nan)),
                (schedule, f"window_std_{m}", np.std(values, ddof=1) if len(values) > 1 else np.nan),
                (schedule, f"window_iqr_{m}", np.subtract(*np.percentile(values, [75, 25])) if len(values) else np.nan),
                (schedule, f"window_worst_{m}", _worst(values, better(m, strategy))),
                (schedule, f"seed_std_{m}", seed_std.get((schedule, m), np.nan)),
            ]
        rows += [
            (schedule, "pred_dispersion", own["dispersion"].mean() if len(own) else np.nan),
            (schedule, "divergence_rate", train["divergence_rate"].get(schedule, np.nan)),
            (schedule, "end_oscillation", train["end_oscillation"].get(schedule, np.nan)),
            (schedule, "train_val_gap", train["train_val_gap"].get(schedule, np.nan)),
            (schedule, "churn", churn.get(schedule, np.nan)),
            (schedule, "best_window_share", best.get(schedule, np.nan)),
        ]
    return pd.DataFrame(rows, columns=["schedule", "metric", "value"]).astype({"value": np.float64})


def best_window_share(per_window: pd.DataFrame, direction: str) -> pd.Series:
    """Share of windows where each schedule (row) is best; ``per_window`` is schedule × window.

    Windows where no schedule has a finite value are skipped; a schedule missing in a window is
    not best there.
    """
    values = per_window.to_numpy(np.float64)
    finite = np.isfinite(values)
    counted = finite.any(axis=0)
    if not counted.any():
        return pd.Series(np.nan, index=per_window.index)
    filled = np.where(finite, values, np.inf if direction == "min" else -np.inf)
    best = filled.min(axis=0) if direction == "min" else filled.max(axis=0)
    is_best = finite & np.isclose(filled, best, rtol=1e-12, atol=0.0)
    return pd.Series(is_best[:, counted].mean(axis=1), index=per_window.index)


def loss_matrix(pred: pd.DataFrame, metric: str = "mse", by: str = "date",
                training: pd.DataFrame | None = None, strategy: Strategy | None = None) -> pd.DataFrame:
    """Out-of-sample losses of seed-mean predictions, observation × schedule (arch's MCS input).

    ``metric``: ``mse``/``rmse`` → squared error, ``mae`` → absolute error, otherwise the
    strategy's :meth:`~strategies.base.Strategy.pointwise_loss` (e.g. ``qlike``). ``by``:
    ``"date"`` averages the rows of each date (one row per out-of-sample date; option chains
    have several rows a date) and ``"window"`` those of each window. A schedule with every seed
    diverged on a row has NaN there.
    """
    if by not in ("date", "window"):
        raise HarnessError(f"loss_matrix: by must be 'date' or 'window', got {by!r}")
    means = seed_mean(pred, training)
    y, p = means["target"].to_numpy(np.float64), means["prediction"].to_numpy(np.float64)
    if metric in ("mse", "rmse"):
        loss = np.square(p - y)
    elif metric == "mae":
        loss = np.abs(p - y)
    else:
        loss = None if strategy is None else _per_schedule_loss(strategy, metric, means)
        if loss is None:
            raise HarnessError(
                f"selection.metric: '{metric}' has no per-observation loss; use mse, rmse or mae"
                f"{' or the strategy' + chr(39) + 's pointwise metric' if strategy is None else ''}"
            )
    frame = means.assign(loss=loss)
    matrix = frame.pivot_table(index=by, columns="schedule", values="loss", aggfunc="mean", sort=True)
    matrix = matrix.reindex(columns=list(pd.unique(means["schedule"])))
    matrix.columns.name = "schedule"
    return matrix


def _per_schedule_loss(strategy: Strategy, metric: str, means: pd.DataFrame) -> np.ndarray | None:
    """The strategy's per-row loss, computed over each schedule's own series (in date order), so a
    loss that depends on the previous row (a trade's cost) never mixes two schedules."""
    parts = []
    for _, rows in means.groupby("schedule", sort=False):
        loss = strategy.pointwise_loss(metric, rows["target"].to_numpy(np.float64),
                                       rows["prediction"].to_numpy(np.float64))
        if loss is None:
            return None
        parts.append(pd.Series(np.asarray(loss, dtype=np.float64), index=rows.index))
    if not parts:  # no live member anywhere (all diverged): no rows, as for mse
        return np.empty(0, dtype=np.float64)
    return pd.concat(parts).reindex(means.index).to_numpy(np.float64)


def ranking_table(agg: pd.DataFrame, metric: str = "rmse", strategy: Strategy | None = None) -> pd.DataFrame:
    """One row per schedule with the key columns, best pooled ``metric`` first.

    Columns: ``schedule, pooled_<m>, window_std_<m>, window_worst_<m>, seed_std_<m>,
    divergence_rate, end_oscillation, churn, best_window_share``.
    """
    wide = agg.pivot_table(index="schedule", columns="metric", values="value", aggfunc="first",
                           sort=False, dropna=False)
    available = sorted(k.removeprefix("pooled_") for k in wide.columns if k.startswith("pooled_"))
    _check_metric(metric, available, strategy)
    columns = [f"{key}_{metric}" for key in RANKING_KEYS] + list(STABILITY_KEYS)
    table = wide.reindex(columns=columns).reset_index()
    table.columns.name = None
    ascending = better(metric, strategy) == "min"
    table = table.sort_values(f"pooled_{metric}", ascending=ascending, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def _check_metric(metric: str, available: Iterable[str], strategy: Strategy | None) -> None:
    available = list(available)
    if metric not in available:
        raise HarnessError(
            f"selection.metric: unknown metric '{metric}'{did_you_mean(metric, available)}; "
            f"valid for this strategy: {', '.join(available)}"
        )


def _window_values(window_mean: pd.DataFrame, schedule: str, metric: str) -> np.ndarray:
    """The finite per-window values of one schedule's metric."""
    if (schedule, metric) not in window_mean.index:
        return np.array([])
    values = window_mean.loc[(schedule, metric)].to_numpy(np.float64)
    return values[np.isfinite(values)]


def _worst(values: np.ndarray, direction: str) -> float:
    if not len(values):
        return float("nan")
    return float(values.max() if direction == "min" else values.min())


def _live(pred: pd.DataFrame, training: pd.DataFrame | None) -> pd.DataFrame:
    """Prediction rows of members that did not diverge and predicted finite values throughout."""
    finite = np.isfinite(pred["prediction"].to_numpy(np.float64))
    keep = pd.Series(finite, index=pred.index).groupby([pred[c] for c in MEMBER], sort=False).transform("all")
    if training is not None and len(training):
        diverged = _diverged_members(training)
        keys = pd.MultiIndex.from_frame(pred[MEMBER])
        keep &= ~keys.isin(diverged)
    return pred[keep.to_numpy(bool)]


def _diverged_members(training: pd.DataFrame) -> pd.MultiIndex:
    flagged = training[training["diverged"].astype(bool)]
    return pd.MultiIndex.from_frame(flagged[MEMBER])


def test_table(table: Table | None, frame: pd.DataFrame) -> Table:
    """The strategy table's rows behind ``frame`` (one window's, or several windows' in window order).

    Test slices hold whole dates in table order, so a window's rows are the table rows on its
    dates. Without a table, a stand-in with no features (enough for metrics that read only y).
    """
    dates = pd.DatetimeIndex(frame["date"])
    target = frame["target"].to_numpy(np.float64)
    if table is None:
        return Table(X=pd.DataFrame(index=pd.RangeIndex(len(frame))), y=pd.Series(target), dates=dates, horizon=0)
    table_dates = pd.DatetimeIndex(table.dates).values
    windows = frame["window"].to_numpy()
    positions = [np.flatnonzero(np.isin(table_dates, dates.values[windows == w])) for w in pd.unique(windows)]
    rows = np.concatenate(positions) if positions else np.array([], dtype=np.int64)
    if len(rows) != len(frame) or not np.array_equal(table_dates[rows], dates.values):
        raise HarnessError(
            f"predictions of window(s) {sorted(set(windows.tolist()))[:3]} do not match the strategy table's rows on "
            "those dates; pass the table the predictions were made from"
        )
    return Table(X=table.X.iloc[rows], y=table.y.iloc[rows], dates=table_dates[rows], horizon=table.horizon)


def _training_summary(training: pd.DataFrame | None) -> dict[str, pd.Series]:
    """Per schedule: divergence rate over all members; end oscillation and train–val gap over live ones."""
    if training is None or not len(training):
        empty = pd.Series(dtype=np.float64)
        return {"divergence_rate": empty, "end_oscillation": empty, "train_val_gap": empty}
    diverged = training["diverged"].astype(bool)
    live = training[~diverged]
    return {
        "divergence_rate": diverged.groupby(training["schedule"]).mean(),
        "end_oscillation": live.groupby("schedule")["end_oscillation"].mean(),
        "train_val_gap": (live["val_loss"] - live["train_loss"]).groupby(live["schedule"]).mean(),
    }


def _churn(churn_preds: pd.DataFrame | None, training: pd.DataFrame | None) -> pd.Series:
    """Per schedule: mean |prediction − prev_prediction| over rows of members live in windows k−1 and k."""
    if churn_preds is None or not len(churn_preds):
        return pd.Series(dtype=np.float64)
    delta = np.abs(churn_preds["prediction"].to_numpy(np.float64) - churn_preds["prev_prediction"].to_numpy(np.float64))
    keep = np.isfinite(delta)
    if training is not None and len(training):
        diverged = _diverged_members(training)
        now = pd.MultiIndex.from_frame(churn_preds[MEMBER])
        before = pd.MultiIndex.from_arrays(
            [churn_preds["window"].to_numpy() - 1, churn_preds["schedule"], churn_preds["seed"]], names=MEMBER
        )
        keep &= ~now.isin(diverged) & ~before.isin(diverged)
    return pd.Series(delta[keep]).groupby(churn_preds["schedule"].to_numpy()[keep]).mean()


# --- cross-sectional metrics (several rows a date, one per asset) ---------------------------------


def rank_within_dates(dates: Iterable, values: np.ndarray) -> np.ndarray:
    """Each value's average rank among the rows of its date, scaled to ``[-0.5, 0.5]``:
    ``(rank − 1) / (n − 1) − 0.5`` with ``n`` the date's finite values (0 for a date's only value).
    NaN values stay NaN and are not counted. Rows may come in any order."""
    codes = pd.factorize(np.asarray(dates))[0]
    values = pd.Series(np.asarray(values, dtype=np.float64))
    grouped = values.groupby(codes)
    rank = grouped.rank(method="average").to_numpy(np.float64)
    n = grouped.transform("count").to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(n > 1, (rank - 1.0) / (n - 1.0) - 0.5, 0.0)
    return np.where(np.isfinite(values.to_numpy()), scaled, np.nan)


def per_date_rank_ic(dates: Iterable, target: np.ndarray, prediction: np.ndarray) -> pd.Series:
    """The rank information coefficient of each date: Spearman's correlation between the
    prediction and the target over that date's rows (average ranks for ties; rows where either is
    non-finite are left out). Indexed by the sorted unique dates, named ``rank_ic``; NaN on a date
    with fewer than 2 rows or a constant side (a constant forecast ranks nothing)."""
    codes, unique = pd.factorize(pd.DatetimeIndex(np.asarray(dates)), sort=True)
    y, p = np.asarray(target, dtype=np.float64), np.asarray(prediction, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(p)
    groups, n_dates = codes[ok], len(unique)
    count = np.bincount(groups, minlength=n_dates).astype(np.float64)
    centre = (count[groups] + 1.0) / 2.0  # the mean of ranks 1..n
    ry = pd.Series(y[ok]).groupby(groups).rank(method="average").to_numpy() - centre
    rp = pd.Series(p[ok]).groupby(groups).rank(method="average").to_numpy() - centre
    cov = np.bincount(groups, ry * rp, minlength=n_dates)
    scale = np.sqrt(np.bincount(groups, ry * ry, minlength=n_dates) * np.bincount(groups, rp * rp, minlength=n_dates))
    ic = np.divide(cov, scale, out=np.full(n_dates, np.nan), where=scale > 0)
    return pd.Series(ic, index=pd.DatetimeIndex(unique, name="date"), name="rank_ic")


def rank_ic_summary(ic: np.ndarray | pd.Series, horizon: int = 1) -> dict[str, float]:
    """The per-date rank IC series summarised over its finite dates.

    ``rank_ic``: the mean; ``ic_ir``: mean / std (ddof=1), per date (not annualised);
    ``rank_ic_t``: mean / sqrt(LRV / n), the Newey–West long-run variance with
    :func:`~harness.evaluation.statistics.newey_west_lags` lags (at least h − 1: h-day labels of
    consecutive dates overlap). NaN where undefined (fewer than 2 dates, zero spread).
    """
    from harness.evaluation.statistics import long_run_variance, newey_west_lags

    values = np.asarray(ic, dtype=np.float64)
    values = values[np.isfinite(values)]
    nan = float("nan")
    if len(values) == 0:
        return {"rank_ic": nan, "rank_ic_t": nan, "ic_ir": nan}
    mean = float(values.mean())
    if len(values) < 2:
        return {"rank_ic": mean, "rank_ic_t": nan, "ic_ir": nan}
    std = float(values.std(ddof=1))
    lrv = long_run_variance(values, newey_west_lags(len(values), horizon))
    return {
        "rank_ic": mean,
        "rank_ic_t": mean / np.sqrt(lrv / len(values)) if lrv > 0 else nan,
        "ic_ir": mean / std if std > 0 else nan,
    }
