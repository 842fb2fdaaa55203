"""Black–Scholes prices, vega and implied vol against textbook values and independent references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm

from harness.pricing import bs_price, call_price, implied_vol, price_bounds, put_price, vega

# S, K, T, r, sigma, q
GRID = np.array(list(itertools.product(
    [80.0, 100.0, 125.0], [90.0, 100.0, 110.0], [0.02, 0.25, 1.0, 3.0], [0.0, 0.05], [0.1, 0.3, 0.8], [0.0, 0.03]
)))
S, K, T, R, SIG, Q = GRID.T


@pytest.mark.parametrize(
    ("args", "kind", "expected", "places"),
    [
        ((42, 40, 0.5, 0.10, 0.2, 0.0), "call", 4.76, 2),  # Hull, Options Futures & Other Derivatives, Example 15.6
        ((42, 40, 0.5, 0.10, 0.2, 0.0), "put", 0.81, 2),  # same example
        ((930, 900, 2 / 12, 0.08, 0.2, 0.03), "call", 51.83, 2),  # Hull, index option with dividend yield
        ((60, 65, 0.25, 0.08, 0.30, 0.0), "call", 2.1334, 4),  # Haug, Complete Guide, Black–Scholes example
        ((100, 95, 0.5, 0.10, 0.20, 0.05), "put", 2.4648, 4),  # Haug, Merton (1973) example
    ],
)
def test_textbook_values(args, kind, expected, places):
    S_, K_, T_, r_, sig_, q_ = args
    price = (call_price if kind == "call" else put_price)(S_, K_, T_, r_, sig_, q_)
    assert round(float(price), places) == pytest.approx(expected, abs=10.0 ** -places / 2)


def test_prices_equal_discounted_expected_payoff_by_quadrature():
    """Independent reference: integrate the payoff against the risk-neutral lognormal density."""
    for s, k, t, r, sig, q in GRID[::7]:
        mu, sd = np.log(s) + (r - q - 0.5 * sig**2) * t, sig * np.sqrt(t)
        density = lambda x: norm.pdf((np.log(x) - mu) / sd) / (x * sd)  # noqa: E731
        call = np.exp(-r * t) * quad(lambda x: (x - k) * density(x), k, np.inf, limit=200)[0]
        put = np.exp(-r * t) * quad(lambda x: (k - x) * density(x), 0, k, limit=200)[0]
        assert call_price(s, k, t, r, sig, q) == pytest.approx(call, rel=1e-7, abs=1e-9)
        assert put_price(s, k, t, r, sig, q) == pytest.approx(put, rel=1e-7, abs=1e-9)


def test_put_call_parity_over_grid():
    lhs = call_price(S, K, T, R, SIG, Q) - put_price(S, K, T, R, SIG, Q)
    np.testing.assert_allclose(lhs, S * np.exp(-Q * T) - K * np.exp(-R * T), rtol=0, atol=1e-10)


def test_prices_inside_no_arbitrage_bounds_and_increasing_in_vol():
    for call in (True, False):
        lower, upper = price_bounds(S, K, T, R, Q, call)
        low_vol, high_vol = bs_price(S, K, T, R, SIG, Q, call), bs_price(S, K, T, R, SIG * 1.1, Q, call)
        assert np.all(low_vol >= lower - 1e-12) and np.all(high_vol <= upper + 1e-12)
        assert np.all(high_vol >= low_vol)
        sensitive = vega(S, K, T, R, SIG, Q) > 1e-6
        assert np.all((high_vol > low_vol)[sensitive]) and sensitive.mean() > 0.8


def test_vega_matches_central_difference():
    h = 1e-6
    fd = (call_price(S, K, T, R, SIG + h, Q) - call_price(S, K, T, R, SIG - h, Q)) / (2 * h)
    np.testing.assert_allclose(vega(S, K, T, R, SIG, Q), fd, rtol=1e-6, atol=1e-7)


def test_degenerate_maturity_and_vol_give_discounted_intrinsic():
    assert call_price(110, 100, 0.0, 0.05, 0.2) == pytest.approx(10.0)
    assert put_price(90, 100, 0.0, 0.05, 0.2) == pytest.approx(10.0)
    assert call_price(110, 100, 1.0, 0.05, 0.0) == pytest.approx(110 - 100 * np.exp(-0.05))
    assert put_price(110, 100, 1.0, 0.05, 0.0) == 0.0


def test_broadcasting_and_mixed_option_types():
    out = bs_price(100.0, np.array([[90.0], [110.0]]), 0.5, 0.01, 0.2, 0.0, call=np.array([True, False]))
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(float(call_price(100, 90, 0.5, 0.01, 0.2)))
    assert out[1, 1] == pytest.approx(float(put_price(100, 110, 0.5, 0.01, 0.2)))


@pytest.mark.parametrize("call", [True, False])
def test_implied_vol_round_trips_over_grid(call):
    price = bs_price(S, K, T, R, SIG, Q, call)
    lower, _ = price_bounds(S, K, T, R, Q, call)
    identifiable = vega(S, K, T, R, SIG, Q) > 1e-6 * S  # otherwise the price does not pin sigma down
    iv = implied_vol(price, S, K, T, R, Q, call)
    np.testing.assert_allclose(iv[identifiable], SIG[identifiable], rtol=1e-7)
    assert identifiable.mean() > 0.8
    np.testing.assert_allclose(bs_price(S, K, T, R, iv, Q, call)[price > lower], price[price > lower], atol=1e-9)


def test_implied_vol_matches_brentq():
    rng = np.random.default_rng(3)
    for _ in range(20):
        s, k, t = 100.0, rng.uniform(70, 130), rng.uniform(0.05, 2.0)
        price = float(call_price(s, k, t, 0.02, rng.uniform(0.05, 1.5), 0.01))
        reference = brentq(lambda v: float(call_price(s, k, t, 0.02, v, 0.01)) - price, 1e-4, 5.0, xtol=1e-14)
        assert float(implied_vol(price, s, k, t, 0.02, 0.01)) == pytest.approx(reference, rel=1e-8)


def test_unpriceable_prices_give_nan():
    s, k, t, r = 42.0, 40.0, 0.5, 0.10
    lower, upper = (float(b) for b in price_bounds(s, k, t, r))
    prices = np.array([lower - 0.01, upper + 0.01, -1.0, np.nan, np.inf, 4.76])
    iv = implied_vol(prices, s, k, t, r)
    assert np.isnan(iv[:5]).all()
    assert iv[5] == pytest.approx(0.2, abs=1e-3)
    assert np.isnan(implied_vol(2.0, 42.0, 40.0, 0.0, 0.1))  # no time value at expiry
