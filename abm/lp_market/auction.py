"""The uniform-price auction of the finite-N clearing market (docs/model.md 2.8).

Each step, the LPs in a sale process offer their stakes with reservation prices ``r_i`` (in
units of the market price factor ``P``: LP ``i`` sells iff ``P >= r_i``); buyers demand
``D(P, K)`` NAV a year (:func:`mfg.lp_exit.clearing.demand`).  The supply at ``P`` is the
NAV a year of the offers with ``r_i <= P``: a step function.  The price is its generalised
crossing with the (strictly decreasing) demand, ``P* = inf{P : S(P) >= D(P)}``, capped at
``P_cap``:

* inside a step of ``S`` (``D(P*) = S`` there): the offers below ``P*`` sell, volume = demand;
* at a jump (the offer with reservation ``r_j`` would carry supply past demand at ``r_j``):
  ``P* = r_j``, the offers below sell, and the marginal offer is *rationed*: a stake cannot
  be split, so it is filled with probability ``f`` = its share of the demand left at ``P*``
  (the caller draws the lottery, and fills it only within the buyers' budget), which keeps
  the expected volume equal to demand however large one stake is against a step's demand;
* past the cap (demand exceeds all supply at ``P_cap``): ``P* = P_cap``, every offer sells.

Ties are broken by the order in which offers are given (agent order), so the outcome is
deterministic.  :func:`uniform_price_auction` is shared by the numba engine and the Mesa
model; as N grows it converges to the mean-field clearing of :func:`mfg.lp_exit.clearing.clear`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mfg.lp_exit.clearing import BRANCH_CAP, BRANCH_IDLE, BRANCH_ROOT, demand, demand_inverse

__all__ = ["uniform_price_auction"]


@njit(cache=True)
def uniform_price_auction(r, w, m, K, pbar, dt, params, order):
    """Clear the first ``m`` offers: reservation prices ``r``, NAV a year ``w`` (a stake's NAV / dt).

    ``order`` (int64, length ``>= m``) receives the offers sorted by reservation (stable).
    Returns ``(P, n_sold, volume, branch, fill)``: the offers ``order[:n_sold]`` sell at ``P``;
    ``volume`` is their NAV a year; ``branch`` one of ``mfg.lp_exit.clearing.BRANCH_*``;
    ``fill`` in ``(0, 1]`` is the probability with which the marginal offer ``order[n_sold]``
    is filled (0: no marginal offer).
    """
    P_cap = params.P_cap
    if m == 0 or K <= 0.0:
        return P_cap, 0, 0.0, BRANCH_IDLE, 0.0
    idx = np.argsort(r[:m], kind="mergesort")
    for j in range(m):
        order[j] = idx[j]
    cum = 0.0
    for j in range(m):
        t_j = r[order[j]]
        if t_j > P_cap:
            m = j
            break
        if t_j > 0.0:
            p_seg = demand_inverse(cum, K, pbar, dt, params)
            if p_seg <= t_j:  # demand falls to the supply so far before this offer's reservation
                return p_seg, j, cum, BRANCH_ROOT, 0.0
            d = demand(t_j, K, pbar, dt, params)
            if cum + w[order[j]] >= d:  # the crossing is at this offer: it is rationed
                return t_j, j, cum, BRANCH_ROOT, (d - cum) / w[order[j]]
        cum += w[order[j]]
    p_seg = demand_inverse(cum, K, pbar, dt, params)
    if p_seg >= P_cap:
        return P_cap, m, cum, BRANCH_CAP, 0.0
    return p_seg, m, cum, BRANCH_ROOT, 0.0
