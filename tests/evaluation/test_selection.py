"""Selection statistics: DM against statsmodels and a hand computation, Holm, MCS, bootstrap
intervals, PBO, the rule, and the whole report on constructed and real backtests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from harness import selection as S
from harness.config import Config, SelectionConfig, parse_config
from harness.engine import BacktestResult, run_backtest, score
from harness.errors import HarnessError
from harness.selection_plots import write_report
from strategies import get_strategy
from tests.conftest import small_config


def ar1(rng: np.random.Generator, n: int, phi: float, scale: float = 1.0) -> np.ndarray:
    noise = rng.standard_normal(n) * scale
    out = np.empty(n)
    out[0] = noise[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + noise[t]
    return out


# --- Diebold-Mariano and Holm -------------------------------------------------------------------


@pytest.mark.parametrize("n", [40, 300])
@pytest.mark.parametrize("lags", [0, 1, 4, 12])
@pytest.mark.parametrize("phi", [0.0, 0.6])
def test_dm_statistic_equals_ols_with_newey_west_errors(n, lags, phi):
    """Reference: t-statistic of the mean in statsmodels' OLS on a constant with HAC (Bartlett) errors."""
    rng = np.random.default_rng(n + lags)
    d = 0.3 + ar1(rng, n, phi)
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
    test = S.diebold_mariano(d, np.zeros(n), lags=lags)
    assert test.stat == pytest.approx(fit.tvalues[0], rel=1e-10)
    assert test.mean_diff == pytest.approx(d.mean(), rel=1e-12)


def test_dm_on_a_hand_computed_case():
    # d = [1, 3, 2, 6]: mean 3, centred [-2, 0, -1, 3]; gamma0 = 14/4, gamma1 = -3/4;
    # LRV(1 lag) = 3.5 + 2 * 0.5 * (-0.75) = 2.75; DM = 3 / sqrt(2.75 / 4)
    test = S.diebold_mariano(np.array([1.0, 3.0, 2.0, 6.0]), np.zeros(4), lags=1)
    assert test.stat == pytest.approx(3.0 / np.sqrt(0.6875), rel=1e-12)
    assert test.pvalue == pytest.approx(0.0362949824, rel=1e-6)  # 2 * P(t_3 > 3.6181)
    assert S.long_run_variance(np.array([1.0, 3.0, 2.0, 6.0]), 0) == pytest.approx(3.5)


@pytest.mark.parametrize("seed", range(5))
def test_dm_identical_series_give_p_one_and_a_clearly_worse_one_rejects(seed):
    rng = np.random.default_rng(seed)
    base = np.square(ar1(rng, 400, 0.5))
    same = S.diebold_mariano(base, base.copy())
    assert same.stat == 0.0 and same.pvalue == 1.0
    worse = S.diebold_mariano(base + 0.5 + 0.3 * rng.standard_normal(400), base)
    assert worse.stat > 0 and worse.pvalue < 0.01
    better = S.diebold_mariano(base, base + 0.5 + 0.3 * rng.standard_normal(400))
    assert better.stat < 0 and better.pvalue < 0.01


def test_dm_p_values_are_uniform_under_the_null():
    """Equal expected loss, autocorrelated differences: rejections near the nominal 10 %."""
    rng = np.random.default_rng(7)
    p = np.array([S.diebold_mariano(ar1(rng, 500, 0.5), np.zeros(500), lags=10).pvalue for _ in range(300)])
    assert 0.04 < np.mean(p < 0.10) < 0.17


def test_newey_west_lags_follow_the_rule_and_the_horizon():
    assert S.newey_west_lags(100) == 4
    assert S.newey_west_lags(4200) == int(np.floor(4 * 42 ** (2 / 9)))
    assert S.newey_west_lags(100, horizon=10) == 9
    assert S.newey_west_lags(3, horizon=10) == 2


def test_holm_adjustment():
    adjusted = S.holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    assert S.holm([0.6, 0.9]).tolist() == [1.0, 1.0]


# --- MCS, bootstrap, PBO ------------------------------------------------------------------------


def loss_frame(rng: np.random.Generator, n: int, shifts: dict[str, float]) -> pd.DataFrame:
    common = np.square(ar1(rng, n, 0.5))
    return pd.DataFrame({name: common + shift * (1 + 0.5 * rng.standard_normal(n)) for name, shift in shifts.items()})


@pytest.mark.parametrize("seed", range(3))
def test_mcs_keeps_only_a_clearly_better_schedule(seed):
    losses = loss_frame(np.random.default_rng(seed), 300, {"a": 0.6, "good": 0.0, "b": 0.8})
    p = S.model_confidence_set(losses, 0.10, reps=300, seed=seed)
    assert p["good"] == 1.0
    assert (p[["a", "b"]] < 0.10).all()


def test_mcs_keeps_identical_schedules_together():
    losses = loss_frame(np.random.default_rng(1), 300, {"x": 0.0, "bad": 0.7})
    losses.insert(1, "twin", losses["x"].copy())
    p = S.model_confidence_set(losses, 0.10, reps=300, seed=0)
    assert p["x"] == p["twin"] == 1.0 and p["bad"] < 0.10
    again = S.model_confidence_set(losses, 0.10, reps=300, seed=0)
    pd.testing.assert_series_equal(p, again)  # seeded


def test_bootstrap_interval_covers_the_true_mean_at_about_its_level():
    rng = np.random.default_rng(3)
    truth = 1.0
    covered = []
    for _ in range(40):
        losses = pd.DataFrame({"s": truth + ar1(rng, 300, 0.5, scale=0.5)})
        ci = S.bootstrap_intervals(losses, "mse", 0.90, reps=300, seed=int(rng.integers(1 << 30)))
        covered.append(ci["low"][0] <= truth <= ci["high"][0])
        assert ci["estimate"][0] == pytest.approx(losses["s"].mean())
    assert 0.75 <= np.mean(covered) <= 1.0


def test_pooled_metrics_from_weighted_losses():
    losses = np.array([[1.0, 4.0], [3.0, 0.0]])
    weights = np.array([1.0, 3.0])  # rows per date
    np.testing.assert_allclose(S.pooled_from_losses("mse", losses, weights), [2.5, 1.0])
    np.testing.assert_allclose(S.pooled_from_losses("rmse", losses, weights), np.sqrt([2.5, 1.0]))
    np.testing.assert_allclose(S.pooled_from_losses("r2_oos", losses, weights, np.array([2.0, 2.0])),
                               [1 - 10 / 8, 1 - 4 / 8])


def test_pbo_hand_cases():
    assert S.pbo_cscv(np.array([[1.0, 0.0], [0.0, 1.0]]), 2) == 1.0  # in-sample winner always loses after
    assert S.pbo_cscv(np.array([[1.0, 0.0], [1.0, 0.0]]), 2) == 0.0  # in-sample winner always wins after
    with pytest.raises(ValueError):
        S.pbo_cscv(np.zeros((8, 3)), 5)
    assert [S.pbo_splits(n) for n in (7, 8, 11, 30)] == [None, 8, 10, 16]


def test_pbo_is_near_one_half_for_noise_and_low_for_a_truly_better_schedule():
    rng = np.random.default_rng(11)
    noise = [S.pbo_cscv(rng.standard_normal((16, 10)), 16) for _ in range(6)]
    assert 0.35 < np.mean(noise) < 0.65
    skilled = rng.standard_normal((16, 10))
    skilled[:, 3] += 1.5
    assert S.pbo_cscv(skilled, 16) < 0.05


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
    result, scores = constructed_backtest({"a": 0.01, "b": 0.02}, diverged=("a", 4))
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(rule="best_pooled"), reps=100)
    pooled = report.table.set_index("schedule")["pooled_rmse"]
    assert pooled["a"] < pooled["b"] and report.selected == "b"


# --- whole reports ------------------------------------------------------------------------------


def constructed_backtest(scales: dict[str, float], n_windows: int = 10, rows: int = 30, seeds: int = 2,
                         diverged: tuple[str, int] | None = None) -> tuple[BacktestResult, object]:
    """Predictions with schedule-specific error sizes (a schedule listed twice with '=' copies one)."""
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
    strategy = get_strategy("volatility_forecast")
    result = BacktestResult(
        config=Config(), data_hash="x", predictions=predictions, training=pd.DataFrame(training),
        churn=pd.DataFrame(columns=["window", "schedule", "seed", "prev_prediction", "prediction"]),
        lr_curves={}, n_windows=n_windows, seconds=0.0, strategy=strategy, table=None,
    )
    return result, score(result)


def evidence_of(scores, result) -> S.Evidence:
    return S.Evidence(result.predictions, result.training, scores.metrics, scores.seed_mean_metrics, scores.aggregates)


def test_report_on_a_constructed_backtest_finds_the_better_schedule(tmp_path):
    result, scores = constructed_backtest({"good": 0.01, "twin": "good", "bad": 0.03, "worse": 0.05})
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(), horizon=5,
                      experiment="constructed", reps=300)
    assert report.mcs == ["good", "twin"]
    assert report.selected == "good"  # tie with its twin in D and pooled: ranking order decides
    table = report.table.set_index("schedule")
    assert table.loc["twin", "dm_p"] == 1.0 and table.loc["bad", "dm_p_holm"] < 0.01
    # the bootstrap's full-sample estimate is the pooled metric the engine computed
    np.testing.assert_allclose(S.bootstrap_intervals(report.losses, "rmse", 0.9, reps=10)["estimate"],
                               table.loc[list(report.losses.columns), "pooled_rmse"], rtol=1e-12)
    assert (table["ci_low"] <= table["pooled_rmse"]).all() and (table["pooled_rmse"] <= table["ci_high"]).all()
    assert report.pbo is not None and report.pbo < 0.2
    text = report.markdown()
    assert "**Selected: `good`**" in text and "holds 2 of 4 schedules" in text and "PBO = **" in text
    summary = S.selection_summary(report).splitlines()
    assert 2 <= len(summary) <= 3 and "good" in summary[0] and "2 of 4" in summary[1]
    markdown, *pngs = write_report(report, tmp_path)
    assert markdown.read_text() == text
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)


def test_report_excludes_a_schedule_with_a_fully_diverged_window_and_notes_why():
    result, scores = constructed_backtest({"a": 0.01, "b": 0.02}, diverged=("a", 4))
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(), reps=200)
    assert report.selected == "b" and report.mcs == ["b"]
    assert any("a: every seed diverged" in note for note in report.notes)
    assert "PBO not computed" in report.markdown()  # one testable schedule left


def test_a_single_schedule_is_selected_with_a_note_that_nothing_was_compared():
    result, scores = constructed_backtest({"only": 0.01}, seeds=1)
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(), reps=100)
    assert report.selected == "only" and report.mcs == ["only"] and report.pbo is None
    assert "Only one schedule was backtested" in report.markdown() and "1 schedule." in report.markdown()
    assert "only one schedule was backtested" in S.selection_summary(report)


def test_few_windows_give_a_note_instead_of_pbo():
    result, scores = constructed_backtest({"a": 0.01, "b": 0.02}, n_windows=6)
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(), reps=200)
    assert report.pbo is None and "needs at least 8 windows" in report.pbo_note and "has 6" in report.pbo_note


@pytest.mark.parametrize("metric", ["mae", "qlike", "r2_oos"])
def test_other_metrics_have_matching_pooled_estimates(metric):
    result, scores = constructed_backtest({"a": 0.01, "b": 0.012})
    report = S.select(evidence_of(scores, result), result.strategy, SelectionConfig(metric=metric), reps=100)
    table = report.table.set_index("schedule")
    weights, baseline = S._date_weights(result.predictions, report.losses.index, metric)
    estimate = S.pooled_from_losses(metric, report.losses.to_numpy(), weights, baseline)
    np.testing.assert_allclose(estimate, table.loc[list(report.losses.columns), f"pooled_{metric}"], rtol=1e-10)
    assert report.direction == ("max" if metric == "r2_oos" else "min")


@pytest.mark.parametrize("metric, message", [("rsme", "did you mean 'rmse'"), ("hit_rate", "unknown metric")])
def test_unknown_metric_is_one_line_error(metric, message):
    result, scores = constructed_backtest({"a": 0.01, "b": 0.012}, n_windows=3)
    with pytest.raises(HarnessError, match=message) as info:
        S.select(evidence_of(scores, result), result.strategy, SelectionConfig(metric=metric), reps=50)
    assert "\n" not in str(info.value)


def test_select_from_a_real_in_memory_backtest(tmp_path):
    config = parse_config(small_config(tmp_path, training={"epochs": 2, "seeds": 2},
                                       windows={"train": 252, "test": 21, "purge": 5}))
    result = run_backtest(config, progress=False)
    report = S.select_from_result(result, score(result), reps=200)
    assert report.selected in config.schedule_labels()
    assert report.n_windows == result.n_windows >= 8 and report.pbo is not None
    assert report.lags >= result.table.horizon - 1
    assert report.n_obs == result.predictions["date"].nunique()
