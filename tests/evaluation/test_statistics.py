"""Selection statistics: Diebold-Mariano against statsmodels and a hand computation, Holm, the
model confidence set, bootstrap intervals and PBO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from harness.evaluation import statistics as S


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
