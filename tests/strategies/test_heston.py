"""Heston prices by the characteristic function against QuantLib's analytic Heston engine (to 1e-6
relative) and against limits that need no reference; the ``heston_pricer`` strategy's labels,
drifting parameters, baseline and look-ahead."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.heston import heston_cf, heston_price
from harness.pricing import bs_price, implied_vol
from strategies import get_strategy
from strategies.heston_pricer import HestonPricer
from tests.conftest import gbm_prices as shared_gbm_prices

# S&P-like models: (v0, kappa, theta, sigma, rho)
MODELS = [
    (0.04, 2.0, 0.04, 0.5, -0.7),
    (0.01, 1.5, 0.05, 0.3, -0.5),
    (0.25, 3.0, 0.06, 0.8, -0.8),
    (0.0025, 0.8, 0.03, 0.4, -0.3),
]
STRIKES = [70.0, 80.0, 90.0, 95.0, 100.0, 105.0, 110.0, 120.0, 130.0]
DAYS = [7, 14, 30, 91, 182, 365, 730]  # Actual/365 days to expiry


def quantlib_price(S, K, days, r, q, v0, kappa, theta, sigma, rho, call):
    import QuantLib as ql  # a dev dependency (pyproject), never skipped
    today = ql.Date(3, 1, 2022)
    ql.Settings.instance().evaluationDate = today
    day_count = ql.Actual365Fixed()
    rates = ql.YieldTermStructureHandle(ql.FlatForward(today, r, day_count))
    dividends = ql.YieldTermStructureHandle(ql.FlatForward(today, q, day_count))
    process = ql.HestonProcess(rates, dividends, ql.QuoteHandle(ql.SimpleQuote(S)), v0, kappa, theta, sigma, rho)
    engine = ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-12, 1_000_000)
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, K)
    option = ql.EuropeanOption(payoff, ql.EuropeanExercise(today + days))
    option.setPricingEngine(engine)
    return option.NPV()


@pytest.mark.slow
def test_prices_match_quantlibs_analytic_heston_engine_to_1e_6_relative():
    rows = [(K, days, model, K >= 100.0) for K, days, model in itertools.product(STRIKES, DAYS, MODELS)]
    reference = np.array([quantlib_price(100.0, K, days, 0.03, 0.01, *model, call) for K, days, model, call in rows])
    K, days, models, call = (np.array(column, dtype=object) for column in zip(*rows))
    mine = heston_price(100.0, K.astype(float), days.astype(float) / 365, 0.03, 0.01,
                        *np.array(list(models), dtype=float).T, call.astype(bool))
    quoted = reference > 1e-6 * 100  # prices a chain quotes (the strategies drop price/strike < 1e-4)
    assert quoted.sum() > 150
    rel = np.abs(mine - reference)[quoted] / reference[quoted]
    assert rel.max() < 1e-6, rel.max()
    assert np.abs(mine - reference).max() < 1e-9 * 100  # and the tiny ones to 1e-9 of the spot


def test_a_few_prices_match_quantlib_quickly():
    for K, days, model in [(90.0, 30, MODELS[0]), (110.0, 365, MODELS[2]), (100.0, 7, MODELS[3])]:
        call = K >= 100
        expected = quantlib_price(100.0, K, days, 0.02, 0.0, *model, call)
        assert float(heston_price(100.0, K, days / 365, 0.02, 0.0, *model, call)) == pytest.approx(expected, rel=1e-8)


def test_without_vol_of_vol_heston_is_black_scholes_at_the_mean_variance():
    """sigma -> 0: the variance is deterministic, so the price is Black-Scholes at the average variance."""
    v0, kappa, theta = 0.09, 1.5, 0.04
    T = np.array([0.05, 0.25, 1.0, 2.0])[:, None]
    K = np.array([80.0, 95.0, 100.0, 105.0, 125.0])[None, :]
    mean_var = theta + (v0 - theta) * (1 - np.exp(-kappa * T)) / (kappa * T)
    for call in (True, False):
        expected = bs_price(100.0, K, T, 0.03, np.sqrt(mean_var), 0.01, call)
        mine = heston_price(100.0, K, T, 0.03, 0.01, v0, kappa, theta, 1e-5, 0.0, call)  # O(sigma^2) apart
        np.testing.assert_allclose(mine, expected, rtol=1e-8, atol=1e-12)


def test_characteristic_function_is_a_martingale_density_and_parity_holds():
    args = (0.5, 0.04, 2.0, 0.05, 0.6, -0.7)
    np.testing.assert_allclose(heston_cf(np.array([0.0, -1j]), *args), [1.0, 1.0], atol=1e-14)
    assert np.abs(heston_cf(np.array([5.0, 50.0]), *args)).max() < 1.0
    call = heston_price(100.0, 90.0, 0.5, 0.03, 0.01, 0.04, 2.0, 0.05, 0.6, -0.7, True)
    put = heston_price(100.0, 90.0, 0.5, 0.03, 0.01, 0.04, 2.0, 0.05, 0.6, -0.7, False)
    assert call - put == pytest.approx(100 * np.exp(-0.01 * 0.5) - 90 * np.exp(-0.03 * 0.5), rel=1e-12)


def test_negative_correlation_skews_the_smile():
    K = np.array([80.0, 100.0, 120.0])
    prices = heston_price(100.0, K, 0.5, 0.0, 0.0, 0.04, 2.0, 0.04, 0.6, -0.8, K >= 100)
    iv = implied_vol(prices, 100.0, K, 0.5, 0.0, 0.0, K >= 100)
    assert iv[0] > iv[1] > iv[2]


def test_heston_price_broadcasts_and_rejects_bad_parameters():
    out = heston_price(100.0, np.array([[90.0], [110.0]]), np.array([0.25, 1.0]), 0.02, 0.0, 0.04, 2.0, 0.04, 0.5, -0.7)
    assert out.shape == (2, 2) and np.isfinite(out).all()
    assert np.shape(heston_price(100.0, 100.0, 1.0, 0.02, 0.0, 0.04, 2.0, 0.04, 0.5, -0.7)) == ()
    with pytest.raises(ValueError, match="needs T, v0, kappa, theta, sigma > 0"):
        heston_price(100.0, 100.0, 0.0, 0.02, 0.0, 0.04, 2.0, 0.04, 0.5, -0.7)
    with pytest.raises(ValueError, match=r"\|rho\| < 1"):
        heston_price(100.0, 100.0, 1.0, 0.02, 0.0, 0.04, 2.0, 0.04, 0.5, -1.0)


# ------------------------------------------------------------------------------- the strategy

def gbm_prices(n: int = 700, seed: int = 3) -> pd.DataFrame:
    return shared_gbm_prices(n, seed, vols=(0.1, 0.2, 0.4), start="2012-01-02")


SMALL = {"contracts_per_day": 6}


@pytest.fixture(scope="module")
def prices():
    return gbm_prices()


@pytest.fixture(scope="module")
def table(prices):
    return get_strategy("heston_pricer", SMALL).build(prices)


def test_registered_with_a_ranged_parameter_check():
    assert isinstance(get_strategy("heston_pricer"), HestonPricer)
    with pytest.raises(HarnessError, match=r"strategy.params.rho: must be in \(-1, 1\), got 1.5"):
        get_strategy("heston_pricer", {"rho": 1.5})
    with pytest.raises(HarnessError, match="unknown parameter of 'heston_pricer'.*did you mean 'vol_of_vol'"):
        get_strategy("heston_pricer", {"vol_of_voll": 0.5})


def test_rows_are_heston_prices_with_realized_variance_and_the_days_parameters(prices, table):
    strategy = get_strategy("heston_pricer", SMALL)
    r = np.diff(np.log(prices["adj_close"].to_numpy()))
    for i in np.random.default_rng(0).choice(len(table), 12, replace=False):
        date, moneyness, days = table.X.index[i]
        t = prices.index.get_loc(date)
        v0 = max(np.sqrt(np.mean(r[t - 21:t] ** 2) * 252), 0.05) ** 2
        p = strategy.parameters(pd.DatetimeIndex([date])).iloc[0]
        expected = heston_price(100.0, 100.0 * moneyness, days / 252, 0.02, 0.0, v0, p["kappa"], p["theta"],
                                p["vol_of_vol"], p["rho"], moneyness >= 1) / (100.0 * moneyness)
        assert table.y.iloc[i] == pytest.approx(float(expected), rel=1e-10)
    assert (table.y >= 1e-4).all() and table.horizon == 0
    assert np.isfinite(strategy.implied_vols(table.y.to_numpy(), table)).all()


def test_parameters_drift_slowly_and_depend_on_the_date_alone():
    strategy = get_strategy("heston_pricer")
    days = pd.bdate_range("2008-01-01", "2018-12-31")
    p = strategy.parameters(days)
    assert (p["kappa"] > 0).all() and (p["theta"] > 0).all() and (p["vol_of_vol"] > 0).all()
    assert p["rho"].between(-0.85 - 1e-12, -0.55 + 1e-12).all()
    daily = p.pct_change().abs().max()
    assert (daily < 1e-2).all(), daily  # slow: under 1 % from one business day to the next
    spread = p.max() / p.min()
    assert (spread[["kappa", "theta", "vol_of_vol"]] > 1.5).all()  # but they do move over the years
    two_years = p.iloc[:504]
    assert ((two_years.max() - two_years.min()) / two_years.abs().mean() > 0.05).all()  # and within a train window
    np.testing.assert_array_equal(strategy.parameters(days[100:200]).to_numpy(), p.iloc[100:200].to_numpy())
    other = get_strategy("heston_pricer", {"seed": 1}).parameters(days)
    assert not np.allclose(other.to_numpy(), p.to_numpy())
    fixed = get_strategy("heston_pricer", {"drift": 0.0}).parameters(days)
    assert (fixed.nunique() == 1).all()


def test_the_same_contract_and_state_prices_differently_years_apart():
    """What a window's net learns goes stale: the map (k, tau, state) -> price moves with the drift."""
    strategy = get_strategy("heston_pricer")
    dates = pd.DatetimeIndex(["2010-06-01", "2012-06-01"])
    k, tau, rv = np.zeros(2), np.full(2, 0.5), np.full(2, 0.2)
    a, b = strategy.chain_prices(dates, rv, k, tau)
    assert abs(a / b - 1) > 0.01


@pytest.mark.slow
def test_no_lookahead(prices):
    strategy = get_strategy("heston_pricer", SMALL)
    cut = prices.index[400]
    dirty = prices.copy()
    dirty.loc[dirty.index > cut, :] = np.random.default_rng(1).lognormal(3.0, 1.0, size=(299, 6))
    clean_table, dirty_table = strategy.build(prices), strategy.build(dirty)
    assert clean_table.X[clean_table.dates <= cut].equals(dirty_table.X[dirty_table.dates <= cut])
    assert clean_table.y[clean_table.dates <= cut].equals(dirty_table.y[dirty_table.dates <= cut])


def test_baseline_is_black_scholes_at_the_train_atm_implied_vol(table):
    strategy = get_strategy("heston_pricer", SMALL)
    dates = np.unique(table.dates.values)
    train_rows = np.isin(table.dates.values, dates[:300])
    test_rows = np.isin(table.dates.values, dates[300:340])
    take = lambda rows: type(table)(X=table.X[rows], y=table.y[rows], dates=table.dates[rows], horizon=0)  # noqa: E731
    train, test = take(train_rows), take(test_rows)
    atm = np.isclose(train.X["log_moneyness"], 0.0)
    expected_vol = np.mean(strategy.implied_vols(train.y.to_numpy(), train)[atm])
    baseline = strategy.baseline(train, test)
    np.testing.assert_allclose(strategy.implied_vols(baseline, test), expected_vol, rtol=1e-7)
    garbage = type(test)(X=test.X, y=test.y * 0 + 0.3, dates=test.dates, horizon=0)
    np.testing.assert_array_equal(strategy.baseline(train, garbage), baseline)  # test targets unread


def test_table_has_the_pricer_inputs_and_metrics_work(table):
    strategy = get_strategy("heston_pricer", SMALL)
    assert list(table.X.columns) == ["log_moneyness", "maturity", "log_maturity", "std_moneyness",
                                     "log_rv_5", "log_rv_21", "log_rv_63"]
    y = table.y.to_numpy()
    exact = strategy.metrics(y, y, y, table)
    assert exact["iv_error_volpts"] == pytest.approx(0.0, abs=1e-6) and exact["iv_fail_rate"] == 0.0
