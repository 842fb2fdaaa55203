"""Heston (1993) European option prices by the characteristic function, vectorized with numpy.

Model, under the risk-neutral measure::

    dS_t = (r - q) S_t dt + sqrt(v_t) S_t dW_t
    dv_t = kappa (theta - v_t) dt + sigma sqrt(v_t) dZ_t,      d<W, Z>_t = rho dt

Conventions as in :mod:`harness.pricing`: ``S`` spot, ``K`` strike, ``T`` years, ``r``/``q``
continuous rate and dividend yield; ``v0`` the initial variance, ``kappa`` the mean-reversion speed,
``theta`` the long-run variance, ``sigma`` the volatility of variance, ``rho`` the correlation.
Every array argument broadcasts against the others.

Price: Lewis (2001)'s single integral,

    C = S e^{-qT} - sqrt(S K) e^{-(r+q)T/2} / pi * int_0^inf Re[e^{i u x} phi(u - i/2)] / (u^2 + 1/4) du,

``x = log(S/K) + (r - q) T`` and ``phi`` the characteristic function of ``log(S_T / F_T)``, in the
"little Heston trap" form of Albrecher et al. (2007), which has no branch-cut discontinuity, written
without the cancellations it has for a small vol of vol (:func:`heston_cf`). Puts follow by
put–call parity. The integral is truncated per model where ``|phi(u - i/2)| / u^2 <= 1e-15`` and
evaluated by composite 16-point Gauss–Legendre quadrature: in ``a = arctan(2u)`` near 0 (which
flattens the ``1 / (u^2 + 1/4)`` peak), then octaves of u cut into panels no wider than two periods
of the integrand's oscillation. ``phi`` is evaluated once per distinct (T, model), so a chain's
strikes share it. Each option's sum is its own (no BLAS reduction), so a price never depends on
which other options are priced with it. Prices agree with QuantLib's ``AnalyticHestonEngine`` to
about 1e-9 relative (``tests/strategies/test_heston.py``).
"""

from __future__ import annotations

import numpy as np

from harness.pricing import ArrayLike

_PANEL_NODES, _PANEL_WEIGHTS = np.polynomial.legendre.leggauss(16)


def heston_cf(u: np.ndarray, T: ArrayLike, v0: ArrayLike, kappa: ArrayLike, theta: ArrayLike,
              sigma: ArrayLike, rho: ArrayLike) -> np.ndarray:
    """``E[exp(i u log(S_T / F_T))]`` under Heston, for complex ``u`` (broadcast with the parameters).

    The little-trap form ``exp(C + D v0)`` with ``g = (beta - d) / (beta + d)``, written without the
    cancellations it has for a small ``sigma``: ``beta - d = -sigma^2 (iu + u^2) / (beta + d)``, so with
    ``h = (iu + u^2) / (beta + d)^2`` (``g = -sigma^2 h``)::

        D = -(iu + u^2) / (beta + d) * (1 - e^{-dT}) / (1 + sigma^2 h e^{-dT})
        C = kappa theta [-(iu + u^2) T / (beta + d) - 2 (log1p(sigma^2 h e^{-dT}) - log1p(sigma^2 h)) / sigma^2]
    """
    u = np.asarray(u, dtype=np.complex128)
    iu = 1j * u
    beta = kappa - rho * sigma * iu
    a = iu + u * u
    d = np.sqrt(beta * beta + sigma * sigma * a)
    s = beta + d
    h = a / (s * s)
    s2 = sigma * sigma
    edt = np.exp(-d * T)
    q = s2 * h
    D = -a / s * (-_expm1(-d * T)) / (1.0 + q * edt)
    C = kappa * theta * (-a * T / s - 2.0 * (_log1p(q * edt) - _log1p(q)) / s2)
    return np.exp(C + D * v0)


def _log1p(z: np.ndarray) -> np.ndarray:
    """``log(1 + z)`` for complex ``z``, accurate for small ``|z|`` (numpy's loses the real part)."""
    x, y = z.real, z.imag
    return 0.5 * np.log1p(x * (2.0 + x) + y * y) + 1j * np.arctan2(y, 1.0 + x)


def _expm1(z: np.ndarray) -> np.ndarray:
    """``exp(z) - 1`` for complex ``z``, accurate for small ``|z|``."""
    x, y = z.real, z.imag
    return np.expm1(x) * np.cos(y) - 2.0 * np.sin(0.5 * y) ** 2 + 1j * np.exp(x) * np.sin(y)


def heston_price(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, v0: ArrayLike,
                 kappa: ArrayLike, theta: ArrayLike, sigma: ArrayLike, rho: ArrayLike,
                 call: bool | np.ndarray = True, *, chunk_nodes: int = 2**21) -> np.ndarray:
    """European option prices under Heston (see the module docstring).

    ``T`` must be > 0, ``v0, kappa, theta, sigma`` > 0 and ``|rho| < 1`` (a ``ValueError`` otherwise).
    ``chunk_nodes`` bounds the work arrays (options x quadrature nodes per chunk).
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (S, K, T, r, q, v0, kappa, theta,
                                                                         sigma, rho)), np.asarray(call, dtype=bool))
    shape = arrays[0].shape
    S, K, T, r, q, v0, kappa, theta, sigma, rho, call = (a.reshape(-1) for a in arrays)
    valid = (T > 0) & (v0 > 0) & (kappa > 0) & (theta > 0) & (sigma > 0) & (np.abs(rho) < 1)
    if not valid.all():
        raise ValueError("heston_price: needs T, v0, kappa, theta, sigma > 0 and |rho| < 1 for every option")
    x = np.log(S / K) + (r - q) * T
    # phi depends on the maturity and the model only, so options sharing them (a chain's strikes) share
    # its values: it is evaluated once per distinct (T, v0, kappa, theta, sigma, rho).
    models, row = np.unique(np.stack([T, v0, kappa, theta, sigma, rho], axis=1), axis=0, return_inverse=True)
    row = row.reshape(-1)
    upper = _upper_limit(*models.T)
    # The integrand oscillates at about |x| (from e^{iux}) plus the phase rate of phi at large u; panels
    # of 16 nodes span at most two periods. Both lengths are powers of two, so models share node grids.
    T_, v0_, kappa_, theta_, sigma_, rho_ = models.T
    rate = np.zeros(len(models))
    np.maximum.at(rate, row, np.abs(x))
    # phi turns at about |rho| (v0 + kappa theta T) / sigma while its size falls at sqrt(1 - rho^2) times
    # that, so it turns a bounded number of times before it is negligible (u >= upper).
    rate += np.minimum(np.abs(rho_) * (v0_ + kappa_ * theta_ * T_) / sigma_, 64.0 / upper)
    with np.errstate(divide="ignore"):
        width = np.minimum(upper, 2.0 ** np.floor(np.log2(4 * np.pi / rate)))
    keys, group = np.unique(np.stack([upper, width], axis=1), axis=0, return_inverse=True)
    by_group = np.argsort(group.reshape(-1), kind="stable")  # models ordered by node grid
    rank = np.empty(len(models), dtype=np.int64)
    rank[by_group] = np.arange(len(models))
    models = models[by_group]
    option_rank = rank[row]
    options = np.argsort(option_rank, kind="stable")  # options ordered by their model's rank
    sorted_rank = option_rank[options]
    edges = np.searchsorted(np.sort(group.reshape(-1)), np.arange(len(keys) + 1))
    integral = np.empty(S.shape)
    for g, (top, span) in enumerate(keys):
        nodes, weights = _rule(float(top), float(span))
        step = max(1, chunk_nodes // len(nodes))
        for lo in range(edges[g], edges[g + 1], step):
            hi = min(lo + step, edges[g + 1])
            cf = heston_cf(nodes[None, :] - 0.5j, *(models[lo:hi, j][:, None] for j in range(6)))
            a, b = np.searchsorted(sorted_rank, [lo, hi])
            mine = options[a:b]
            local = sorted_rank[a:b] - lo
            phase = nodes[None, :] * x[mine][:, None]
            values = np.cos(phase) * cf.real[local] - np.sin(phase) * cf.imag[local]
            integral[mine] = (values * weights).sum(axis=1)  # not a BLAS product: each row's sum is its own
    base = np.sqrt(S * K) * np.exp(-0.5 * (r + q) * T) / np.pi * integral
    return (np.where(call, S * np.exp(-q * T), K * np.exp(-r * T)) - base).reshape(shape)


def _panel_rule(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of 16-point Gauss-Legendre panels between consecutive ``edges``."""
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    nodes = (mid[:, None] + half[:, None] * _PANEL_NODES[None, :]).reshape(-1)
    return nodes, (half[:, None] * _PANEL_WEIGHTS[None, :]).reshape(-1)


SPLIT = 2.0  # below: the substitution u = tan(a) / 2 flattens the 1 / (u^2 + 1/4) peak at u = 0


def _rule(upper: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (including the 1 / (u^2 + 1/4) factor) on ``[0, upper]``: 4 panels in
    ``a = arctan(2u)`` up to ``min(upper, SPLIT)`` (``du / (u^2 + 1/4) = 2 da``), then octaves
    ``[b, 2b]`` of u, each cut into panels no wider than ``width``."""
    head = min(upper, SPLIT)
    a, a_weights = _panel_rule(np.linspace(0.0, np.arctan(2.0 * head), 5))
    edges = [head]
    b = head
    while b < upper:
        n = max(1, int(round(b / width)))
        edges.extend(b + b * np.arange(1, n + 1) / n)
        b *= 2.0
    u, w = _panel_rule(np.asarray(edges)) if len(edges) > 1 else (np.empty(0), np.empty(0))
    return np.concatenate([0.5 * np.tan(a), u]), np.concatenate([2.0 * a_weights, w / (u * u + 0.25)])


def _upper_limit(T, v0, kappa, theta, sigma, rho, tol: float = 1e-15) -> np.ndarray:
    """Per model, the smallest ``U = 2^m`` (1/16 <= U <= 2^20) with ``|phi(U - i/2)| / U^2 <= tol``."""
    ladder = 2.0 ** np.arange(-4, 21)
    params = tuple(np.asarray(a)[:, None] for a in (T, v0, kappa, theta, sigma, rho))
    size = np.abs(heston_cf(ladder[None, :] - 0.5j, *params)) / (ladder * ladder + 0.25)
    small = size <= tol
    first = np.where(small.any(axis=1), small.argmax(axis=1), len(ladder) - 1)
    return ladder[first]
