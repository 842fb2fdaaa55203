"""Statistics on an out-of-sample loss matrix (one row per date, one column per candidate).

- **Diebold–Mariano** (1995) tests: ``d_t = L_a,t − L_b,t``, ``DM = mean(d) / sqrt(LRV / T)`` with
  the Newey–West (Bartlett) long-run variance, p-values from Student's t with ``T − 1`` degrees of
  freedom (Harvey–Leybourne–Newbold); :func:`holm` corrects a family of them;
- the **Model Confidence Set** of Hansen, Lunde and Nason (2011), ``arch.bootstrap.MCS`` (range
  statistic, stationary bootstrap);
- **stationary-bootstrap percentile intervals** of each candidate's pooled metric;
- the **probability of backtest overfitting** (CSCV, Bailey, Borwein, López de Prado and Zhu 2017).

Everything is seeded: the same matrix gives the same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PBO_MIN_WINDOWS = 8
PBO_MAX_SPLITS = 16  # C(16, 8) = 12870 combinations
REPS = 1000
SHARPE_PERIODS = 252  # per-period net returns are daily: the Sharpe ratio is annualised with sqrt(252)


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
    # scipy.stats.t.sf's own function; here: `harness run`'s trainer never needs it
    from scipy.special import stdtr

    return DMTest(mean, stat, float(2.0 * stdtr(n - 1, -abs(stat))), lags)


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

    groups = identical_columns(losses)
    unique = losses[[group[0] for group in groups]]
    if unique.shape[1] == 1:
        pvalues = pd.Series(1.0, index=unique.columns)
    else:
        block = block_size or block_length(len(unique))
        mcs = MCS(unique, size=alpha, reps=reps, block_size=block, method="R", bootstrap="stationary", seed=seed)
        mcs.compute()
        pvalues = mcs.pvalues["Pvalue"]
    return pd.Series({name: float(pvalues[group[0]]) for group in groups for name in group}).reindex(losses.columns)


def identical_columns(losses: pd.DataFrame) -> list[list[str]]:
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
    = rows per date): ``rmse`` → sqrt of the weighted mean, ``r2_oos`` → 1 − SSE/SSE_baseline,
    ``sharpe`` → the annualised Sharpe ratio of the net returns ``−losses``, else the weighted mean loss."""
    if metric == "sharpe":  # losses are minus the net return per period (one row a date)
        returns = -losses
        std = returns.std(axis=0, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(std > 0, returns.mean(axis=0) / std * np.sqrt(SHARPE_PERIODS), np.nan)
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
