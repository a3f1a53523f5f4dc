"""The reduced-form impact market of the LP-exit game (docs/model.md 2.4b).

One step ``n`` of the recursion, given the fraction ``E_k`` of each population that
sells during the step:

* sell flow      ``S^n = sum_k w_k E_k / dt``                 (NAV per year)
* sell pressure  ``Ŝ^n = Ŝ^{n-1} + (dt / tau_s)(S^n - Ŝ^{n-1})``  (this step's flow
  included: sellers in a crowded step get the crowded price)
* price factor   ``P^n = pbar * exp(-beta * Ŝ^n / max(K^n, K_floor))``
* vintage price  ``pi_k^n = P^n * A_k^n``                      (``A``: remaining-life factor)
* buyer capital  ``K^{n+1} = K^n + dt theta_K (Kbar^n - K^n) - sum_k pi_k^n w_k E_k``

:func:`market_step` is the single step, shared by the mean-field solver (through
:func:`market_path`), the finite-N engine and the Mesa model, so all run the very same
arithmetic.  ``K`` is an accounting identity and is not clamped; only the price sees
``max(K, K_floor)`` so that depleted capital gives a price near zero instead of a
division by zero or a sign flip.  :func:`market_newton` is the linearised recursion the
solver's preconditioner inverts (docs/model.md 2.5).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from .params import Market

__all__ = ["ImpactParams", "impact_params", "market_step", "market_path", "market_newton", "DEFAULT_K_FLOOR"]

#: Floor on buyer capital seen by the price (NAV units; the market's NAV is 1).
DEFAULT_K_FLOOR = 1e-9

ImpactParams = namedtuple("ImpactParams", ["beta", "tau_s", "theta_K", "K_floor"])
ImpactParams.__doc__ = """Constants of the impact market: price impact ``beta``, memory ``tau_s`` (years),
refill rate ``theta_K`` (1/yr) and the floor ``K_floor`` on the capital the price sees."""


def impact_params(market: Market, K_floor: float = DEFAULT_K_FLOOR) -> ImpactParams:
    """The :class:`ImpactParams` of a :class:`~mfg.lp_exit.params.Market`, as floats."""
    return ImpactParams(float(market.beta), float(market.tau_s), float(market.theta_K), float(K_floor))


@njit(cache=True)
def market_step(s_hat_prev, K, exit_mass, weights, life_factor, pbar, Kbar, dt, params, vintage_price_out):
    """One step of docs/model.md 2.4b.

    ``exit_mass[k]``: fraction of population ``k`` (of its unit mass) selling in the
    step; ``weights[k]``: NAV weights (summing to 1); ``life_factor[k]``: ``A_k`` at
    this step; ``pbar``, ``Kbar``: this step's calm price and target capital; ``params``:
    :class:`ImpactParams`.  Writes ``pi_k`` into ``vintage_price_out`` and returns
    ``(S, S_hat, P, K_next)``.
    """
    S = 0.0
    for k in range(weights.shape[0]):
        S += weights[k] * exit_mass[k]
    S /= dt
    s_hat = s_hat_prev + (dt / params.tau_s) * (S - s_hat_prev)
    P = pbar * math.exp(-params.beta * s_hat / max(K, params.K_floor))
    spent = 0.0
    for k in range(weights.shape[0]):
        vintage_price_out[k] = P * life_factor[k]
        spent += vintage_price_out[k] * weights[k] * exit_mass[k]
    K_next = K + dt * params.theta_K * (Kbar - K) - spent
    return S, s_hat, P, K_next


@njit(cache=True)
def _market_path(exit_mass, weights, life_factor, Kbar, pbar, dt, params, S0, K0):
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
        S[n], s_hat[n], P[n], cap = market_step(prev, cap, e, weights, a, pbar[n], Kbar[n], dt, params, out)
        prev = s_hat[n]
        for k in range(n_pop):
            pi[k, n] = out[k]
    return S, s_hat, P, K, pi


def market_path(exit_mass, weights, life_factor, Kbar, pbar, dt, params: ImpactParams, S0, K0):
    """Run :func:`market_step` over all steps.

    ``exit_mass`` and ``life_factor`` are ``(n_pop, n_t)``; ``Kbar`` and ``pbar`` are
    ``(n_t,)`` arrays or scalars (the target capital and the calm price may move in
    time: scenario shocks, docs/model.md 2.7).  Returns ``(S, S_hat, P, K, vintage_price)``
    where ``K[n]`` is the capital at the start of step ``n`` (``K[0] = K0``) and
    ``S_hat`` starts from ``S0`` before step 0.
    """
    exit_mass = np.ascontiguousarray(exit_mass, dtype=float)
    n_t = exit_mass.shape[1]
    Kbar = np.ascontiguousarray(np.broadcast_to(np.asarray(Kbar, dtype=float), (n_t,)))
    pbar = np.ascontiguousarray(np.broadcast_to(np.asarray(pbar, dtype=float), (n_t,)))
    params = ImpactParams(*(float(v) for v in params))
    return _market_path(exit_mass, np.ascontiguousarray(weights, dtype=float),
                        np.ascontiguousarray(life_factor, dtype=float), Kbar, pbar, float(dt), params, float(S0),
                        float(K0))


@njit(cache=True)
def market_newton(f, sens, weights, life, E, path, dt, params):
    """Solve ``delta = f + J delta`` for the price correction ``delta`` (a quasi-Newton step).

    ``J`` is the linearised response of the market recursion (docs/model.md 2.4b) to the
    price path when each step's exits react to that same step's price only, ``dE_k^n =
    sens[k, n] delta^n`` (``sens``: derivative of the exiting mass of population ``k``
    in step ``n`` with respect to ``P^n``; anticipation through continuation values and
    the transport of mass are neglected).  ``J`` is causal (lower triangular: a sale
    moves the sell pressure ``Ŝ`` and the buyer capital ``K`` of later steps), so the
    solve is one forward recursion.  ``path = (P, s_hat, K)`` and ``E`` (exit masses) are
    the market's current path; ``params``: :class:`ImpactParams`.
    """
    P, s_hat, K = path
    beta, tau_s, theta_K, K_floor = params.beta, params.tau_s, params.theta_K, params.K_floor
    n_pop, n_t = sens.shape
    delta = np.empty(n_t)
    c1 = 1.0 - dt / tau_s
    dsh = 0.0  # d S_hat^{n-1}
    dK = 0.0  # d K^n
    for n in range(n_t):
        Kc = max(K[n], K_floor)
        u = 0.0
        for k in range(n_pop):
            u += weights[k] * sens[k, n]
        pb = P[n] * beta / Kc
        a = -pb * c1 * dsh
        if K[n] > K_floor:
            a += pb * s_hat[n] * dK / Kc
        b = -pb * u / tau_s
        d = (f[n] + a) / (1.0 - b)
        delta[n] = d
        dsh = c1 * dsh + u * d / tau_s
        dP = a + b * d
        spent = 0.0
        for k in range(n_pop):
            spent += weights[k] * life[k, n] * (dP * E[k, n] + P[n] * sens[k, n] * d)
        dK = (1.0 - dt * theta_K) * dK - spent
    return delta
