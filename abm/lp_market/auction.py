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

Only the offers at the bottom of the book decide the price (a step of the calm market at
N = 10^6 sells about 1 in 30 of its offers), so the auction sorts a prefix: it bins the
reservations on ``[0, P_cap]``, finds the first bin through which the supply so far meets
demand at the bin's upper edge, and sorts (stably) the offers up to that bin.  When the
crossing is decided inside that prefix the outcome is the full sort's exactly; otherwise (only
round-off at a bin's edge can cause it) it sorts all offers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mfg.lp_exit.clearing import BRANCH_CAP, BRANCH_IDLE, BRANCH_ROOT, demand, demand_inverse

__all__ = ["uniform_price_auction"]


#: number of bins of the reservations on [0, P_cap] that choose the sorted prefix
N_BINS = 256


@njit(cache=True)
def uniform_price_auction(r, w, m, K, pbar, dt, params, order):
    """Clear the first ``m`` offers: reservation prices ``r``, NAV a year ``w`` (a stake's NAV / dt).

    ``order`` (int64, length ``>= m``) receives a permutation of the offers whose entries up to
    the marginal offer are sorted by reservation (stable; the rest in no particular order).
    Returns ``(P, n_sold, volume, branch, fill)``: the offers ``order[:n_sold]`` sell at ``P``;
    ``volume`` is their NAV a year; ``branch`` one of ``mfg.lp_exit.clearing.BRANCH_*``;
    ``fill`` in ``(0, 1]`` is the probability with which the marginal offer ``order[n_sold]``
    is filled (0: no marginal offer).
    """
    if m == 0 or K <= 0.0:
        return params.P_cap, 0, 0.0, BRANCH_IDLE, 0.0
    n, t_next = _sorted_prefix(r, w, m, K, pbar, dt, params, order)
    P, n_sold, vol, branch, fill, decided = _cross(r, w, n, t_next, K, pbar, dt, params, order)
    if decided:
        return P, n_sold, vol, branch, fill
    idx = np.argsort(r[:m], kind="mergesort")  # the crossing lies past the prefix: sort every offer
    for j in range(m):
        order[j] = idx[j]
    P, n_sold, vol, branch, fill, decided = _cross(r, w, m, np.inf, K, pbar, dt, params, order)
    return P, n_sold, vol, branch, fill


@njit(cache=True)
def _sorted_prefix(r, w, m, K, pbar, dt, params, order):
    """Sort the offers at the bottom of the book into ``order[:n]`` (stable), the others after them in
    agent order.  Returns ``n`` and ``t_next``, the lowest reservation left out (``inf``: none)."""
    P_cap = params.P_cap
    h = P_cap / N_BINS
    weight = np.zeros(N_BINS + 1)
    for j in range(m):
        if r[j] <= P_cap:
            weight[_bin(r[j], h)] += w[j]
    top = N_BINS  # the last bin kept
    cum = 0.0
    for b in range(N_BINS + 1):
        cum += weight[b]
        if cum > 0.0 and demand_inverse(cum, K, pbar, dt, params) < (b + 1) * h:
            top = b
            break
    n = 0
    t_next = np.inf
    for j in range(m):  # kept offers first, in agent order, then the others
        if r[j] <= P_cap and _bin(r[j], h) <= top:
            order[n] = j
            n += 1
    k = n
    for j in range(m):
        if not (r[j] <= P_cap and _bin(r[j], h) <= top):
            order[k] = j
            k += 1
            t_next = min(t_next, r[j])
    idx = np.argsort(r[order[:n]], kind="mergesort")
    kept = order[:n].copy()
    for j in range(n):
        order[j] = kept[idx[j]]
    return n, t_next


@njit(cache=True)
def _bin(x, h):
    """The bin of a reservation ``x <= P_cap`` (market orders, ``x <= 0``, in the first)."""
    return min(int(x / h), N_BINS) if x > 0.0 else 0


@njit(cache=True)
def _cross(r, w, n, t_next, K, pbar, dt, params, order):
    """The crossing of demand with the supply of the sorted offers ``order[:n]``, the next offer's
    reservation being ``t_next`` (``inf``: none).  Returns the auction's outcome and whether the
    offers past ``n`` cannot change it."""
    P_cap = params.P_cap
    cum = 0.0
    m = n
    for j in range(n):
        t_j = r[order[j]]
        if t_j > P_cap:
            m = j
            break
        if t_j > 0.0:
            p_seg = demand_inverse(cum, K, pbar, dt, params)
            if p_seg <= t_j:  # demand falls to the supply so far before this offer's reservation
                return p_seg, j, cum, BRANCH_ROOT, 0.0, True
            d = demand(t_j, K, pbar, dt, params)
            if cum + w[order[j]] >= d:  # the crossing is at this offer: it is rationed
                return t_j, j, cum, BRANCH_ROOT, (d - cum) / w[order[j]], True
        cum += w[order[j]]
    p_seg = demand_inverse(cum, K, pbar, dt, params)
    if m < n or t_next > P_cap:  # no offer left below the cap
        if p_seg >= P_cap:
            return P_cap, m, cum, BRANCH_CAP, 0.0, True
        return p_seg, m, cum, BRANCH_ROOT, 0.0, True
    if t_next > 0.0 and p_seg <= t_next:  # as the full sort would find at the next offer
        return p_seg, n, cum, BRANCH_ROOT, 0.0, True
    return p_seg, n, cum, BRANCH_ROOT, 0.0, False
