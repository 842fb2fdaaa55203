"""Schedule selection: the rule, and the whole report on constructed and real backtests (the
statistics behind it: ``test_statistics.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.backtest import Backtest, run_backtest
from harness.backtest.frames import CHURN_COLUMNS, CURVE_COLUMNS, LR_COLUMNS
from harness.backtest.result import score
from harness.config import Config, parse_config
from harness.errors import HarnessError
from harness.evaluation import selection as S
from harness.evaluation.statistics import bootstrap_intervals, pooled_from_losses
from harness.figures import write_report
from strategies import get_strategy
from tests.conftest import small_config
from tests.evaluation.test_statistics import ar1

# --- the rule -------------------------------------------------------------------------------------


def rule_table(**columns) -> pd.DataFrame:
    base = {
        "schedule": ["a", "b", "c", "d"],
        "pooled_rmse": [1.0, 1.01, 1.02, 0.99],
        "window_worst_rmse": [3.0, 2.0, 2.5, 1.0],
        "seed_std_rmse": [0.2, 0.1, 0.1, 0.01],
        "window_std_rmse": [1.0, 1.0, 0.5, 0.1],
        "in_mcs": [True, True, True, False],
        "tested": [True, True, True, True],
    }
    return pd.DataFrame({**base, **columns})


def test_dispersion_score_is_normalised_over_the_set():
    table = rule_table()
    score = S.dispersion_scores(table, "rmse", ["a", "b", "c"])
    seed_mean, window_mean = (0.2 + 0.1 + 0.1) / 3, (1.0 + 1.0 + 0.5) / 3
    assert score["a"] == pytest.approx(0.2 / seed_mean + 1.0 / window_mean)
    assert score["c"] == pytest.approx(0.1 / seed_mean + 0.5 / window_mean)
    assert np.isnan(score["d"])
    one_seed = S.dispersion_scores(rule_table(seed_std_rmse=[np.nan] * 4), "rmse", ["a", "b", "c"])
    assert one_seed["c"] == pytest.approx(0.5 / window_mean)  # a NaN term drops out for all


@pytest.mark.parametrize("rule, expected", [("mcs_stable", "c"), ("best_pooled", "d"), ("best_worst_window", "b")])
def test_rules_pick_their_schedule(rule, expected):
    table = rule_table()
    table["dispersion"] = S.dispersion_scores(table, "rmse", ["a", "b", "c"]).to_numpy()
    assert S.apply_rule(table, rule, "rmse", "min") == expected


def test_rule_ties_go_to_the_better_pooled_metric_and_direction_is_respected():
    table = rule_table(pooled_rmse=[1.0, 0.9, 1.1, 0.8])
    table["dispersion"] = [2.0, 2.0, 2.0, np.nan]
    assert S.apply_rule(table, "mcs_stable", "rmse", "min") == "b"
    assert S.apply_rule(table, "mcs_stable", "rmse", "max") == "c"  # higher pooled is better then
    table["tested"] = [True, True, True, False]  # d had every seed diverge somewhere
    assert S.apply_rule(table, "best_pooled", "rmse", "min") == "b"


def test_best_pooled_never_picks_a_schedule_left_out_of_the_tests():
    report = S.select(constructed_backtest({"a": 0.01, "b": 0.02}, diverged=("a", 4)), {"rule": "best_pooled"},
                      reps=100)
    pooled = report.table.set_index("schedule")["pooled_rmse"]
    assert pooled["a"] < pooled["b"] and report.selected == "b"


# --- whole reports ------------------------------------------------------------------------------


def constructed_backtest(scales: dict[str, float], n_windows: int = 10, rows: int = 30, seeds: int = 2,
                         diverged: tuple[str, int] | None = None, horizon: int = 1,
                         experiment: str = "constructed") -> Backtest:
    """Predictions with schedule-specific error sizes (a schedule given by another's name copies its errors),
    scored as ``harness run`` scores them; ``horizon`` is the strategy's (the Newey-West lag floor)."""
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2015-01-01", periods=n_windows * rows)
    target = 0.2 + 0.05 * np.abs(ar1(rng, len(dates), 0.9))
    baseline = target + 0.04 * rng.standard_normal(len(dates))
    frames, training, made = [], [], {}
    for name, scale in scales.items():
        if isinstance(scale, str):
            errors = made[scale]
        else:
            errors = [scale * rng.standard_normal(len(dates)) + 0.002 * rng.standard_normal(len(dates))
                      for _ in range(seeds)]
        made[name] = errors
        for seed, error in enumerate(errors):
            frames.append(pd.DataFrame({
                "date": dates, "window": np.repeat(np.arange(n_windows), rows), "schedule": name, "seed": seed,
                "prediction": target + error, "target": target, "baseline": baseline,
            }))
            for w in range(n_windows):
                training.append({"window": w, "schedule": name, "seed": seed,
                                 "diverged": diverged == (name, w) , "end_oscillation": 0.1,
                                 "train_loss": 0.5, "val_loss": 0.6, "best_epoch": 3})
    predictions = pd.concat(frames, ignore_index=True)
    if diverged is not None:
        hit = (predictions["schedule"] == diverged[0]) & (predictions["window"] == diverged[1])
        predictions.loc[hit, "prediction"] = np.nan
    config = Config(experiment=experiment, selection={"metric": "rmse"},
                    strategy={"name": "volatility_forecast", "params": {"horizon": horizon}})
    training, churn = pd.DataFrame(training), pd.DataFrame(columns=list(CHURN_COLUMNS))
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    metrics, seed_mean_metrics, aggregates = score(config, strategy, None, predictions, training, churn)
    backtest = Backtest(config=config, data_hash="x", predictions=predictions, training=training,
                        curves=pd.DataFrame(columns=list(CURVE_COLUMNS)), churn=churn,
                        lr_curves=pd.DataFrame(columns=list(LR_COLUMNS)), metrics=metrics,
                        seed_mean_metrics=seed_mean_metrics, aggregates=aggregates)
    backtest.table = None  # made-up predictions: no strategy table behind them (else it is rebuilt from the data)
    return backtest


def test_report_on_a_constructed_backtest_finds_the_better_schedule(tmp_path):
    backtest = constructed_backtest({"good": 0.01, "twin": "good", "bad": 0.03, "worse": 0.05}, horizon=5)
    report = S.select(backtest, reps=300)
    assert report.mcs == ["good", "twin"]
    assert report.selected == "good"  # tie with its twin in D and pooled: ranking order decides
    table = report.table.set_index("schedule")
    assert table.loc["twin", "dm_p"] == 1.0 and table.loc["bad", "dm_p_holm"] < 0.01
    # the bootstrap's full-sample estimate is the pooled metric the engine computed
    np.testing.assert_allclose(bootstrap_intervals(report.losses, "rmse", 0.9, reps=10)["estimate"],
                               table.loc[list(report.losses.columns), "pooled_rmse"], rtol=1e-12)
    assert (table["ci_low"] <= table["pooled_rmse"]).all() and (table["pooled_rmse"] <= table["ci_high"]).all()
    assert report.pbo is not None and report.pbo < 0.2
    # the strategy's baseline is one more candidate: the last row (much worse), counted in the set's sentence
    assert report.table["schedule"].tolist() == ["good", "twin", "bad", "worse", report.baseline]
    text = report.markdown()
    assert "**Selected: `good`**" in text and "holds 2 of 5 candidates" in text and "PBO = **" in text
    assert f"4 schedules and the {report.baseline}." in text  # the backtest's own, and the baseline
    summary = S.selection_summary(report).splitlines()
    assert 3 <= len(summary) <= 4 and summary[0] == report.verdict  # the verdict comes first
    assert "good" in summary[1] and "2 of 5" in summary[2]
    markdown, *pngs = write_report(report, tmp_path)
    assert markdown.read_text() == text
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)


def test_report_excludes_a_schedule_with_a_fully_diverged_window_and_notes_why():
    report = S.select(constructed_backtest({"a": 0.01, "b": 0.02}, diverged=("a", 4)), reps=200)
    assert report.selected == "b" and report.mcs == ["b"]
    assert any("a: every seed diverged" in note for note in report.notes)
    assert "PBO not computed" in report.markdown()  # one testable schedule left


def test_a_single_schedule_is_selected_and_compared_with_the_baseline_only():
    report = S.select(constructed_backtest({"only": 0.01}, seeds=1), reps=100)
    assert report.selected == "only" and report.mcs == ["only"] and report.pbo is None
    assert report.table["schedule"].tolist() == ["only", report.baseline]  # nothing else to compare it with
    text = report.markdown()
    assert f"1 schedule and the {report.baseline}." in text and "holds one candidate, `only`" in text
    assert "needs at least two schedules with different losses" in report.pbo_note
    assert "holds only only" in S.selection_summary(report)


def test_few_windows_give_a_note_instead_of_pbo():
    report = S.select(constructed_backtest({"a": 0.01, "b": 0.02}, n_windows=6), reps=200)
    assert report.pbo is None and "needs at least 8 windows" in report.pbo_note and "has 6" in report.pbo_note


@pytest.mark.parametrize("metric", ["mae", "qlike", "r2_oos"])
def test_other_metrics_have_matching_pooled_estimates(metric):
    backtest = constructed_backtest({"a": 0.01, "b": 0.012})
    report = S.select(backtest, {"metric": metric}, reps=100)
    table = report.table.set_index("schedule")
    weights, baseline = S._date_weights(backtest.predictions, report.losses.index, metric)
    estimate = pooled_from_losses(metric, report.losses.to_numpy(), weights, baseline)
    np.testing.assert_allclose(estimate, table.loc[list(report.losses.columns), f"pooled_{metric}"], rtol=1e-10)
    assert report.direction == ("max" if metric == "r2_oos" else "min")


@pytest.mark.parametrize("metric, message", [("rsme", "did you mean 'rmse'"), ("hit_rate", "unknown metric")])
def test_unknown_metric_is_one_line_error(metric, message):
    backtest = constructed_backtest({"a": 0.01, "b": 0.012}, n_windows=3)
    with pytest.raises(HarnessError, match=message) as info:
        S.select(backtest, {"metric": metric}, reps=50)
    assert "\n" not in str(info.value)


def test_select_from_a_real_in_memory_backtest(tmp_path):
    config = parse_config(small_config(tmp_path, training={"epochs": 2, "seeds": 2},
                                       windows={"train": 252, "test": 21, "purge": 5}))
    backtest = run_backtest(config, progress=False)
    report = S.select(backtest, reps=200)
    assert report.selected in config.schedule_labels()
    assert report.n_windows == backtest.n_windows >= 8 and report.pbo is not None
    assert report.lags >= backtest.table.horizon - 1
    assert report.n_obs == backtest.predictions["date"].nunique()
