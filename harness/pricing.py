"""Black–Scholes(–Merton) prices, vega and implied volatility, vectorized with numpy.

Conventions: ``S`` spot, ``K`` strike, ``T`` time to expiry in years, ``r`` continuously
compounded risk-free rate, ``q`` continuous dividend yield, ``sigma`` annualized volatility.
Every function broadcasts its array arguments against each other. ``call`` is a bool or a bool
array (``True`` for calls, ``False`` for puts).
"""

from __future__ import annotations

import numpy as np

ArrayLike = float | np.ndarray

_TINY = 1e-300


def _d1_d2(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
           q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    vol_t = np.asarray(sigma, dtype=np.float64) * np.sqrt(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(np.divide(S, K)) + (np.subtract(r, q) + 0.5 * np.square(sigma)) * T) / vol_t
    return d1, d1 - vol_t


def bs_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
             q: ArrayLike = 0.0, call: bool | np.ndarray = True) -> np.ndarray:
    """European option price under Black–Scholes–Merton.

    With ``T == 0`` or ``sigma == 0`` the price is the discounted intrinsic value of the
    forward, ``max(±(S e^{-qT} − K e^{-rT}), 0)``, the limit of the formula.
    """
    S, K, T, r, sigma, q, call = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (S, K, T, r, sigma, q)), np.asarray(call, dtype=bool)
    )
    spot = S * np.exp(-q * T)  # dividend-discounted spot
    strike = K * np.exp(-r * T)  # discounted strike
    d1, d2 = _d1_d2(S, K, T, r, sigma, q)
    sign = np.where(call, 1.0, -1.0)
    # ~0.2 s to import, and `harness run`'s trainer never needs it
    from scipy.special import ndtr

    price = sign * (spot * ndtr(sign * d1) - strike * ndtr(sign * d2))
    degenerate = (T <= 0) | (sigma <= 0)
    intrinsic = np.maximum(sign * (spot - strike), 0.0)
    return np.where(degenerate, intrinsic, price)


def call_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
               q: ArrayLike = 0.0) -> np.ndarray:
    """European call price (see :func:`bs_price`)."""
    return bs_price(S, K, T, r, sigma, q, call=True)


def put_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
              q: ArrayLike = 0.0) -> np.ndarray:
    """European put price (see :func:`bs_price`)."""
    return bs_price(S, K, T, r, sigma, q, call=False)


def vega(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
         q: ArrayLike = 0.0) -> np.ndarray:
    """dPrice/dsigma (per unit of volatility, not per vol point); the same for calls and puts."""
    d1, _ = _d1_d2(S, K, T, r, sigma, q)
    density = np.exp(-0.5 * np.square(d1)) / np.sqrt(2.0 * np.pi)
    out = np.asarray(S, dtype=np.float64) * np.exp(-np.multiply(q, T)) * density * np.sqrt(T)
    return np.nan_to_num(out, nan=0.0)


def price_bounds(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike = 0.0,
                 call: bool | np.ndarray = True) -> tuple[np.ndarray, np.ndarray]:
    """No-arbitrage (lower, upper) bounds: the sigma → 0 and sigma → ∞ limits of :func:`bs_price`."""
    S, K, T, r, q, call = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (S, K, T, r, q)), np.asarray(call, dtype=bool)
    )
    spot, strike = S * np.exp(-q * T), K * np.exp(-r * T)
    lower = np.maximum(np.where(call, spot - strike, strike - spot), 0.0)
    return lower, np.where(call, spot, strike)


def implied_vol(price: ArrayLike, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                q: ArrayLike = 0.0, call: bool | np.ndarray = True, *, lo: float = 1e-4,
                hi: float = 5.0, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """Black–Scholes implied volatility, vectorized: Newton steps kept inside a bisection bracket.

    The price is increasing in sigma, so ``[lo, hi]`` is a bracket whenever
    ``bs(lo) <= price <= bs(hi)``; each iteration takes the Newton step when it stays inside the
    current bracket and bisects otherwise, so it always converges. Returns NaN where no sigma in
    ``[lo, hi]`` reproduces the price (below intrinsic, above the upper bound, non-finite, or
    ``T <= 0``): callers count those as unpriceable.
    """
    price, S, K, T, r, q, call = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (price, S, K, T, r, q)), np.asarray(call, dtype=bool)
    )
    shape = price.shape
    price, S, K, T, r, q, call = (a.reshape(-1) for a in (price, S, K, T, r, q, call))

    def value(sig: np.ndarray) -> np.ndarray:
        return bs_price(S, K, T, r, sig, q, call) - price

    low = np.full(price.shape, lo)
    high = np.full(price.shape, hi)
    f_low, f_high = value(low), value(high)
    # Prices within tol of a bracket end are accepted at that end.
    ok = np.isfinite(price) & (T > 0) & (f_low <= tol) & (f_high >= -tol)
    sig = np.where(ok, 0.5 * (low + high), np.nan)
    for _ in range(max_iter):
        f = value(sig)
        done = ~ok | (np.abs(f) <= tol) | (high - low <= tol)
        if done.all():
            break
        above = f > 0
        high = np.where(above, sig, high)
        low = np.where(above, low, sig)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = sig - f / vega(S, K, T, r, sig, q)
        inside = np.isfinite(newton) & (newton > low) & (newton < high)
        sig = np.where(done, sig, np.where(inside, newton, 0.5 * (low + high)))
    return sig.reshape(shape)
