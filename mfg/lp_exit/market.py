"""Secondary-market clearing of the LP-exit game (MODEL.md 2.4).

One step ``n`` of the recursion, given the fraction ``E_k`` of each population that
sells during the step:

* sell flow      ``S^n = sum_k w_k E_k / dt``                 (NAV per year)
* sell pressure  ``Ŝ^n = Ŝ^{n-1} + (dt / tau_s)(S^n - Ŝ^{n-1})``  (this step's flow
  included: sellers in a crowded step get the crowded price)
* price factor   ``P^n = pbar * exp(-beta * Ŝ^n / max(K^n, K_floor))``
* vintage price  ``pi_k^n = P^n * A_k^n``                      (``A``: remaining-life factor)
* buyer capital  ``K^{n+1} = K^n + dt theta_K (Kbar^n - K^n) - sum_k pi_k^n w_k E_k``

:func:`market_step` is the single step, shared by the mean-field solver
(:mod:`mfg.lp_exit`, through :func:`market_path`) and the finite-N market, so both
run the very same arithmetic.  ``K`` is an accounting identity and is not clamped;
only the price sees ``max(K, K_floor)`` so that depleted capital gives a price near
zero instead of a division by zero or a sign flip.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .params import Market

__all__ = ["market_step", "market_path", "DEFAULT_K_FLOOR", "market_constants"]

#: Floor on buyer capital seen by the price (NAV units; the market's NAV is 1).
DEFAULT_K_FLOOR = 1e-9


@njit(cache=True)
def market_step(s_hat_prev, K, exit_mass, weights, life_factor, dt, pbar, beta, tau_s, theta_K, Kbar, K_floor,
                vintage_price_out):
    """One step of MODEL.md 2.4.

    ``exit_mass[k]``: fraction of population ``k`` (of its unit mass) selling in the
    step; ``weights[k]``: NAV weights (summing to 1); ``life_factor[k]``: ``A_k`` at
    this step.  Writes ``pi_k`` into ``vintage_price_out`` and returns
    ``(S, S_hat, P, K_next)``.
    """
    S = 0.0
    for k in range(weights.shape[0]):
        S += weights[k] * exit_mass[k]
    S /= dt
    s_hat = s_hat_prev + (dt / tau_s) * (S - s_hat_prev)
    P = pbar * math.exp(-beta * s_hat / max(K, K_floor))
    spent = 0.0
    for k in range(weights.shape[0]):
        vintage_price_out[k] = P * life_factor[k]
        spent += vintage_price_out[k] * weights[k] * exit_mass[k]
    K_next = K + dt * theta_K * (Kbar - K) - spent
    return S, s_hat, P, K_next


@njit(cache=True)
def _market_path(exit_mass, weights, life_factor, Kbar, dt, pbar, beta, tau_s, theta_K, S0, K0, K_floor):
    n_pop, n_t = exit_mass.shape
    S = np.empty(n_t)
    s_hat = np.empty(n_t)
    P = np.empty(n_t)
    K = np.empty(n_t)
    pi = np.empty((n_pop, n_t))
    e = np.empty(n_pop)
    a = np.empty(n_pop)
    out = np.empty(n_pop)
    prev = S0
    cap = K0
    for n in range(n_t):
        for k in range(n_pop):
            e[k] = exit_mass[k, n]
            a[k] = life_factor[k, n]
        K[n] = cap
        S[n], s_hat[n], P[n], cap = market_step(prev, cap, e, weights, a, dt, pbar[n], beta, tau_s, theta_K, Kbar[n],
                                                K_floor, out)
        prev = s_hat[n]
        for k in range(n_pop):
            pi[k, n] = out[k]
    return S, s_hat, P, K, pi


def market_path(exit_mass, weights, life_factor, Kbar, dt, pbar, beta, tau_s, theta_K, S0, K0, K_floor):
    """Run :func:`market_step` over all steps.

    ``exit_mass`` and ``life_factor`` are ``(n_pop, n_t)``; ``Kbar`` and ``pbar`` are
    ``(n_t,)`` arrays or scalars (the target capital and the calm price may move in
    time: scenario shocks, MODEL.md 2.7).  Returns ``(S, S_hat, P, K, vintage_price)``
    where ``K[n]`` is the capital at the start of step ``n`` (``K[0] = K0``) and
    ``S_hat`` starts from ``S0`` before step 0.
    """
    exit_mass = np.ascontiguousarray(exit_mass, dtype=float)
    n_t = exit_mass.shape[1]
    Kbar = np.ascontiguousarray(np.broadcast_to(np.asarray(Kbar, dtype=float), (n_t,)))
    pbar = np.ascontiguousarray(np.broadcast_to(np.asarray(pbar, dtype=float), (n_t,)))
    return _market_path(exit_mass, np.ascontiguousarray(weights, dtype=float),
                        np.ascontiguousarray(life_factor, dtype=float), Kbar, float(dt), pbar, float(beta),
                        float(tau_s), float(theta_K), float(S0), float(K0), float(K_floor))


def market_constants(market: Market) -> tuple[float, float, float, float, float, float]:
    """``(pbar, beta, tau_s, theta_K, S0, K0)`` as floats, in :func:`market_path`'s order."""
    return (float(market.pbar), float(market.beta), float(market.tau_s), float(market.theta_K), float(market.S0),
            float(market.K0))
