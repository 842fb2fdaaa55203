"""The baseline is a candidate of the selection, and the report opens with a deployment verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.backtest import run_backtest
from harness.config import parse_config
from harness.evaluation.selection import _better_p, baseline_label, select
from harness.evaluation.statistics import diebold_mariano
from tests.conftest import small_config


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Backtests at one torch thread."""


def test_the_one_sided_p_value_is_the_t_tail_of_the_dm_statistic():
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, size=300)
    better, worse = base - 0.05 + 0.1 * rng.normal(size=300), base + 0.05 + 0.1 * rng.normal(size=300)
    for loss in (better, worse):
        test = diebold_mariano(loss, base, lags=4)
        assert _better_p(test) == pytest.approx(stats.t.cdf(test.stat, df=len(base) - 1), rel=1e-9)
    assert _better_p(diebold_mariano(better, base, lags=4)) < 0.05 < _better_p(diebold_mariano(worse, base, lags=4))


def test_next_day_returns_cannot_beat_their_baseline_and_the_verdict_says_so(tmp_path):
    config = parse_config(small_config(
        tmp_path, data={"end": "2012-12-31"}, training={"epochs": 3, "batch_size": 64, "seeds": 2},
        strategy={"name": "return_forecast", "params": {"horizon": 1, "cost_bps": 1.0}},
        windows={"train": 252, "test": 42, "purge": 1}))
    backtest = run_backtest(config, progress=False)
    report = select(backtest, reps=200)
    base = baseline_label(backtest.strategy)
    assert base == "baseline (train-mean return)"
    assert report.verdict.startswith(f"no schedule beats the {base}")
    assert not report.beats_baseline and not report.table["beats_baseline"].any()
    assert base in report.losses.columns and base in set(report.table["schedule"])
    row = report.table.set_index("schedule").loc[base]
    assert row["pooled_r2_oos"] == pytest.approx(0.0, abs=1e-12) and np.isfinite(row["mcs_p"])
    assert report.markdown().splitlines()[2].startswith("**Verdict: no schedule beats the baseline")
    # the baseline column is the baseline's own per-date loss
    first = backtest.predictions[(backtest.predictions["schedule"] == backtest.labels[0])
                                 & (backtest.predictions["seed"] == 0)]
    expected = ((first["baseline"] - first["target"]) ** 2).groupby(first["date"]).mean()
    np.testing.assert_allclose(report.losses[base].to_numpy(), expected.reindex(report.losses.index).to_numpy())
    # the trading view: every candidate, buy and hold, Sharpe at 0, 1x and 5x the configured cost
    trading = report.trading.set_index("candidate")
    assert set(trading.index) == {*backtest.labels, base, "buy and hold"}
    assert {"sharpe_0x_cost", "sharpe_1x_cost", "sharpe_5x_cost", "max_drawdown", "turnover"} <= set(trading.columns)
    label = backtest.labels[0]
    assert trading.loc[label, "sharpe_0x_cost"] >= trading.loc[label, "sharpe_1x_cost"] >= \
        trading.loc[label, "sharpe_5x_cost"]  # costs only take away
    assert "## Trading view" in report.markdown() and "| buy and hold |" in report.markdown()


def test_the_default_selection_metric_fits_the_strategy(tmp_path):
    from harness.backtest import plan

    assert plan(parse_config(small_config(tmp_path))).config.selection.metric == "qlike"  # volatility
    returns = small_config(tmp_path, strategy={"name": "return_forecast", "params": {"horizon": 1}},
                           windows={"train": 252, "test": 42, "purge": 1}, data={"end": "2012-12-31"})
    assert plan(parse_config(returns)).config.selection.metric == "mse"
    named = small_config(tmp_path, selection={"metric": "mae"})
    assert plan(parse_config(named)).config.selection.metric == "mae"  # a named metric is kept


@pytest.mark.slow
def test_an_option_pricer_net_beats_black_scholes_at_the_train_vol(tmp_path):
    config = parse_config(small_config(
        tmp_path, strategy={"name": "option_pricer", "params": {"contracts_per_day": 4}},
        windows={"train": 252, "test": 63, "purge": 0}, training={"epochs": 10, "batch_size": 64, "seeds": 2}))
    report = select(run_backtest(config, progress=False), reps=200)
    assert report.beats_baseline, report.verdict
    assert report.verdict.startswith(f"`{report.selected}` beats the baseline (Black-Scholes")
    row = report.table.set_index("schedule").loc[report.selected]
    assert row["dm_base_p_holm"] < report.alpha and row["pooled_r2_oos"] > 0
    # the pricer's own precision (implied-vol error, share outside the no-arbitrage bounds) is printed beside
    # the selection metric, the baseline's row included, and equals the pooled aggregates of the backtest
    from harness.cli.render import ranking
    from harness.evaluation.report import render_markdown

    printed = ranking(report).set_index("schedule")
    assert {"iv_error_volpts", "iv_fail_rate"} <= set(printed.columns)
    assert np.isfinite(printed.loc[report.baseline, "iv_error_volpts"])
    pooled = report.backtest.aggregates.set_index(["schedule", "metric"])["value"]
    assert printed.loc[report.selected, "iv_error_volpts"] == pooled[(report.selected, "pooled_iv_error_volpts")]
    assert "| pooled iv_error_volpts |" in render_markdown(report)
