"""The clearing market of the LP-exit game (docs/model.md 2.4): each step's price solves supply = demand.

Buyers holding dry powder ``K`` demand (NAV a year)::

    D(P, K) = min((K / tau_d) (pbar / P)**gamma / P,  K / (P dt))

(the second term is the budget: ``P D dt <= K``).  In the mean-field market, supply comes
from *candidates* ``j`` (a node of a population's liquidity grid in a sale process): one
sells with probability ``logistic((P a_j - b_j) / eps)`` at price ``P``, where ``a_j = A_k
dfac_k(L_i)`` is its deal-price multiplier, ``b_j = phi_k + C_k(L_i)`` its reservation value
and ``w_j = w_k m_k(L_i) q_max,k / dt`` its weight (NAV a year if every sale process closed)::

    S(P) = sum_j w_j logistic((P a_j - b_j) / eps)          (eps > 0)
    S(P) = sum_j w_j 1{P a_j > b_j}                          (eps = 0, the hard rule)

:func:`clear` returns the price: ``P_cap`` when ``S(P_cap) <= D(P_cap, K)`` (buyers stand
idle), else the unique root of ``S = D`` in ``(0, P_cap)`` (``S`` non-decreasing, ``D``
strictly decreasing) by a safeguarded Newton iteration in ``log P`` to round-off; at
``eps = 0`` the generalised root ``inf{P : S(P) >= D(P)}`` by sorting the thresholds
``b_j / a_j``, the mass at the marginal threshold rationed so that volume = demand.
:func:`clearing_forward` runs the forward sweep of all populations together with the
market cleared at every step (docs/model.md 2.5).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from .fd import fd_transport
from .kernels import LOGIT_CUTOFF, _logistic, sl_transport

__all__ = ["ClearingParams", "clearing_params", "demand", "demand_inverse", "clear", "supply", "clearing_forward",
           "ForwardStack", "ForwardOut", "BRANCH_ROOT", "BRANCH_CAP", "BRANCH_IDLE", "BRANCH_CLOSED"]

ClearingParams = namedtuple("ClearingParams", ["tau_d", "gamma", "P_cap", "theta_K"])
ClearingParams.__doc__ = """Constants of the clearing market: deployment horizon ``tau_d`` (years), deployment
elasticity ``gamma``, price cap ``P_cap`` and refill rate ``theta_K`` (1/yr)."""

#: How a step's price was set: the root of S = D, the cap (demand exceeds supply there),
#: no candidate seller at all (price at the cap, buyers idle), or no trading (the last step).
BRANCH_ROOT, BRANCH_CAP, BRANCH_IDLE, BRANCH_CLOSED = 0, 1, 2, 3


def clearing_params(market) -> ClearingParams:
    """The :class:`ClearingParams` of a :class:`~mfg.lp_exit.params.ClearingMarket`."""
    return ClearingParams(float(market.tau_d), float(market.gamma), float(market.P_cap), float(market.theta_K))


@njit(cache=True)
def demand(P, K, pbar, dt, params):
    """``D(P, K)`` in NAV a year (docs/model.md 2.4); 0 when ``K <= 0``."""
    if K <= 0.0:
        return 0.0
    budget = P * dt
    if not budget > 0.0:  # P at the bottom of the floating-point range: demand is unbounded
        return np.inf
    return min((K / params.tau_d) * (pbar / P) ** params.gamma / P, K / budget)


@njit(cache=True)
def _demand_elasticity(P, K, pbar, dt, params):
    """``d log D / d log P``: ``-(1 + gamma)`` on the deployment branch, ``-1`` on the budget branch."""
    if (K / params.tau_d) * (pbar / P) ** params.gamma <= K / dt:
        return -(1.0 + params.gamma)
    return -1.0


@njit(cache=True)
def demand_inverse(S, K, pbar, dt, params):
    """The price at which ``D(P, K) = S`` (``inf`` for ``S <= 0``): ``D`` is the minimum of two
    decreasing branches, so its inverse is the minimum of theirs."""
    if S <= 0.0:
        return np.inf
    flow = S * dt
    if not flow > 0.0:  # a supply below the floating-point range: only an unbounded price meets it
        return np.inf
    p_deploy = ((K / params.tau_d) * pbar ** params.gamma / S) ** (1.0 / (1.0 + params.gamma))
    return min(p_deploy, K / flow)


@njit(cache=True)
def supply(P, a, b, w, m, eps):
    """``(S(P), dS/dP)`` over the first ``m`` candidates (logit, ``eps > 0``; summed in candidate order)."""
    s = 0.0
    ds = 0.0
    inv = 1.0 / eps
    for j in range(m):
        z = (P * a[j] - b[j]) * inv
        if z < -LOGIT_CUTOFF:
            continue
        sig = 1.0 if z > LOGIT_CUTOFF else _logistic(z)
        s += w[j] * sig
        ds += w[j] * sig * (1.0 - sig) * a[j] * inv
    return s, ds


@njit(cache=True, inline="always")
def _threshold(aj, bj):
    """The price above which a candidate sells under the hard rule, ``b / a`` (``a = 0``: never, or always
    when ``b < 0``); one formula for the clearing and the trade, so they agree to the last bit."""
    if aj > 0.0:
        return bj / aj
    return -np.inf if bj < 0.0 else np.inf


@njit(cache=True)
def _supply_hard(P, a, b, w, m):
    s = 0.0
    for j in range(m):
        if _threshold(a[j], b[j]) < P:
            s += w[j]
    return s


@njit(cache=True)
def _clear_logit(a, b, w, m, eps, K, pbar, dt, params, guess):
    """The root of ``S = D`` in ``(0, P_cap)`` (``S(P_cap) > D(P_cap)`` is given): bracket in ``log P``,
    then Newton steps kept inside the bracket (bisection otherwise) until the bracket or the step
    is at round-off.  Returns ``(P, iterations)``."""
    hi = math.log(params.P_cap)
    x = math.log(min(max(guess, 1e-300), params.P_cap)) if guess > 0.0 else hi - 0.1
    lo = -np.inf
    it = 0
    # bracket: D -> inf as P -> 0 while S stays bounded, so stepping down finds h < 0
    while True:
        it += 1
        P = math.exp(x)
        s, _ = supply(P, a, b, w, m, eps)
        h = s - demand(P, K, pbar, dt, params)
        if h < 0.0:
            lo = x
            break
        hi = min(hi, x)
        x = x - 1.0 if it > 1 else x - 0.05
        if it > 2000:
            return math.exp(hi), it
    while it < 200:
        it += 1
        P = math.exp(x)
        s, ds = supply(P, a, b, w, m, eps)
        d = demand(P, K, pbar, dt, params)
        h = s - d
        if h == 0.0:
            return P, it
        if h < 0.0:
            lo = x
        else:
            hi = x
        # dh/dx = P S'(P) - P D'(P) = P S' - elasticity * D
        slope = P * ds - _demand_elasticity(P, K, pbar, dt, params) * d
        x_new = x - h / slope if slope > 0.0 else 0.5 * (lo + hi)
        if not (lo < x_new < hi):
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= 4e-16 * max(1.0, abs(x)) or hi - lo <= 4e-16 * max(1.0, abs(x)):
            return math.exp(x_new), it
        x = x_new
    return math.exp(x), it


@njit(cache=True)
def _clear_hard(a, b, w, m, K, pbar, dt, params, order):
    """The generalised root ``inf{P : S(P) >= D(P)}`` of the step supply of the hard rule.

    Candidates sell at ``P > b_j / a_j``; sorted by that threshold, the supply is constant
    between thresholds, so the crossing is either inside a segment (``D(P) = S`` there, the
    closed-form inverse of ``D``) or at a threshold, where the candidates at that threshold
    are rationed.  Returns ``(P, volume, marginal threshold, fill fraction of the marginal
    group)`` (fill 1: the marginal group sells in full)."""
    thr = np.empty(m)
    for j in range(m):
        thr[j] = _threshold(a[j], b[j])
    idx = np.argsort(thr[:m], kind="mergesort")
    for j in range(m):
        order[j] = idx[j]
    cum = 0.0
    j = 0
    while j < m:
        t_j = thr[order[j]]
        if t_j >= params.P_cap:
            break
        # the segment below this threshold has supply cum: does D reach cum there?
        p_seg = demand_inverse(cum, K, pbar, dt, params)
        if p_seg <= t_j:  # inside the segment below this threshold: no group is rationed
            return p_seg, cum, np.inf, 1.0
        # the group of candidates at this threshold
        g = 0.0
        k = j
        while k < m and thr[order[k]] == t_j:
            g += w[order[k]]
            k += 1
        p_eval = max(t_j, 1e-300)
        d = demand(p_eval, K, pbar, dt, params)
        if cum + g >= d:  # the crossing is at this threshold: ration the group
            return p_eval, d, t_j, (d - cum) / g if g > 0.0 else 1.0
        cum += g
        j = k
    p_seg = demand_inverse(cum, K, pbar, dt, params)
    if p_seg >= params.P_cap:
        return params.P_cap, cum, np.inf, 1.0
    return p_seg, cum, np.inf, 1.0


@njit(cache=True)
def clear(a, b, w, m, eps, K, pbar, dt, params, guess, order):
    """The step's price (docs/model.md 2.4): ``(P, volume, branch, iterations, marginal, fill)``.

    ``a, b, w``: the candidates (module docstring), the first ``m`` used; ``eps``: the logit
    temperature (0: hard rule); ``guess``: a starting price (e.g. the previous iterate's);
    ``order``: scratch of length ``>= m``.  ``marginal``/``fill``: at ``eps = 0``, the
    threshold of the rationed group and the fraction of it that sells (else ``inf``, 1).
    """
    if m == 0 or K <= 0.0:  # nobody offers, or nobody can buy: buyers and sellers stand idle at the cap
        return params.P_cap, 0.0, BRANCH_IDLE, 0, np.inf, 1.0
    P_cap = params.P_cap
    if eps > 0.0:
        s_cap, _ = supply(P_cap, a, b, w, m, eps)
        if s_cap <= demand(P_cap, K, pbar, dt, params):
            return P_cap, s_cap, BRANCH_CAP, 1, np.inf, 1.0
        P, it = _clear_logit(a, b, w, m, eps, K, pbar, dt, params, guess)
        s, _ = supply(P, a, b, w, m, eps)
        return P, s, BRANCH_ROOT, it, np.inf, 1.0
    P, vol, marginal, fill = _clear_hard(a, b, w, m, K, pbar, dt, params, order)
    branch = BRANCH_CAP if P >= P_cap else BRANCH_ROOT
    return P, vol, branch, 1, marginal, fill


# ----------------------------------------------------------------------------------
# the forward sweep with the market cleared at every step
# ----------------------------------------------------------------------------------

ForwardStack = namedtuple("ForwardStack", [
    "n_first", "n_last", "matures", "weights",  # (n_pop,)
    "q_max", "kappa_target", "life", "sigma",  # (n_pop, n_t)
    "lam", "alpha", "drift_a", "phi",  # (n_pop,)
    "dfac", "x",  # (n_pop, n_L) distress factor; (n_L,) nodes
    "pbar", "Kbar",  # (n_t,)
])
ForwardStack.__doc__ = "Per-population and per-step data of :func:`clearing_forward` (from the discretisation)."

ForwardOut = namedtuple("ForwardOut", [
    "price", "volume", "withdrawn", "capital", "spend", "residual", "branch", "mean_field",  # (n_t,)
    "exits", "vintage_price",  # (n_pop, n_t)
    "stats",  # (n_pop, 3, n_t): mass, first moment, 0
    "edge",  # (n_pop,) largest mass seen on an end node
    "q", "m",  # (n_pop, n_t, n_L) or (n_pop, 2, n_L) masses; q (n_pop, n_t, n_L) or empty
])
ForwardOut.__doc__ = "What :func:`clearing_forward` writes: the market's paths, the exits, the masses."


@njit(cache=True)
def _mean_field(stack, stats, n, fallback):
    """NAV-weighted mean of ``L`` over the populations active at step ``n`` (``fallback`` if none), from
    the masses and first moments recorded by :func:`_record_masses` (summed in population order)."""
    num = 0.0
    den = 0.0
    for k in range(stack.weights.shape[0]):
        if n < stack.n_first[k] or (stack.matures[k] and n >= stack.n_last[k]):
            continue
        num += stack.weights[k] * stats[k, 1, n]
        den += stack.weights[k] * stats[k, 0, n]
    return num / den if den > 0.0 else fallback


@njit(cache=True)
def _candidates(stack, C, m, n, full, eps, dt, P_cap, a, b, w):
    """The step's candidate sellers for :func:`clear`: nodes with mass of the populations deciding at
    step ``n`` that can sell at some price up to ``P_cap`` (with ``eps > 0``, ``(P_cap a - b)/eps``
    above the logit cut-off).  Fills ``a, b, w`` in population, then node order; returns their number."""
    cnt = 0
    for k in range(stack.weights.shape[0]):
        if n < stack.n_first[k] or n >= stack.n_last[k]:
            continue
        row = m[k, n] if full else m[k, n & 1]
        life = stack.life[k, n]
        wq = stack.weights[k] * stack.q_max[k, n] / dt
        if wq == 0.0:
            continue
        for i in range(row.shape[0]):
            mass = row[i]
            if mass == 0.0:
                continue
            aj = life * stack.dfac[k, i]
            bj = stack.phi[k] + C[k, n, i]
            if eps > 0.0 and (P_cap * aj - bj) / eps < -LOGIT_CUTOFF:
                continue
            a[cnt] = aj
            b[cnt] = bj
            w[cnt] = wq * mass
            cnt += 1
    return cnt


# The fast path of the logit market.  Around a reference price P0 (the previous iterate's
# price of the step) the nodes are sorted once into three classes for prices in a band
# [P_lo, P_hi]: never selling there (logit argument below the cut-off at P_hi), surely
# selling (above it at P_lo), and the band candidates, for which v_j = exp(-z_j(P0)) is
# computed once.  Then logistic(z_j(P)) = 1 / (1 + v_j exp(-(P - P0) a_j / eps)): one
# exponential per population and evaluation (a_j = A_k is the same for every node of a
# population without a distress discount) instead of one per node.  If the root leaves
# the band, the band moves there and the nodes are sorted again.

NEVER, SURE = -1, -2
_BAND = 0.02  # half-width of the band in log P

Band = namedtuple("Band", ["v", "w", "a", "seg", "uniform", "cls", "sig"])


@njit(cache=True)
def _classify(stack, C, m, n, full, eps, dt, P0, P_lo, P_hi, band):
    """Sort the nodes of the populations deciding at ``n`` into never / sure / band (module comment);
    returns ``(number of band candidates, sure supply, sure paid multiplier sum)``."""
    n_pop = stack.weights.shape[0]
    n_L = stack.dfac.shape[1]
    cnt = 0
    s_sure = 0.0
    inv_eps = 1.0 / eps
    for k in range(n_pop):
        band.seg[k] = cnt
        band.uniform[k] = True
        if n < stack.n_first[k] or n >= stack.n_last[k]:
            continue
        row = m[k, n] if full else m[k, n & 1]
        c_row = C[k, n]
        d_row = stack.dfac[k]
        phi = stack.phi[k]
        life = stack.life[k, n]
        wq = stack.weights[k] * stack.q_max[k, n] / dt
        first_a = -1.0
        base = k * n_L
        for i in range(n_L):
            mass = row[i]
            if mass == 0.0 or wq == 0.0:
                band.cls[base + i] = NEVER
                continue
            aj = life * d_row[i]
            bj = phi + c_row[i]
            if (P_hi * aj - bj) * inv_eps < -LOGIT_CUTOFF:
                band.cls[base + i] = NEVER
                continue
            if (P_lo * aj - bj) * inv_eps > LOGIT_CUTOFF:
                band.cls[base + i] = SURE
                s_sure += wq * mass
                continue
            if first_a < 0.0:
                first_a = aj
            elif aj != first_a:
                band.uniform[k] = False
            band.v[cnt] = math.exp(-(P0 * aj - bj) * inv_eps)
            band.w[cnt] = wq * mass
            band.a[cnt] = aj
            band.cls[base + i] = cnt
            cnt += 1
    band.seg[n_pop] = cnt
    return cnt, s_sure


@njit(cache=True, inline="always")
def _shift(P, P0, aj, eps):
    """``exp(-(P - P0) a_j / eps)``; inside a band of :func:`_max_width` the exponent stays within
    ``[-600, 600]`` (the clamp is a guard, not a regime the solver relies on)."""
    x = -(P - P0) * aj / eps
    if x > 690.0:
        return 1e300
    if x < -690.0:
        return 0.0
    return math.exp(x)


@njit(cache=True)
def _band_supply(P, P0, eps, band, store):
    """``(S_band(P), dS_band/dP)`` of the band candidates; with ``store`` their logistic values into ``sig``."""
    s = 0.0
    ds = 0.0
    for k in range(band.seg.shape[0] - 1):
        lo, hi = band.seg[k], band.seg[k + 1]
        if lo == hi:
            continue
        f = _shift(P, P0, band.a[lo], eps)
        for j in range(lo, hi):
            if not band.uniform[k]:
                f = _shift(P, P0, band.a[j], eps)
            sig = 1.0 / (1.0 + band.v[j] * f)
            if store:
                band.sig[j] = sig
            s += band.w[j] * sig
            ds += band.w[j] * sig * (1.0 - sig) * band.a[j] / eps
    return s, ds


@njit(cache=True)
def _newton_in_band(P0, x_lo, x_hi, s_sure, eps, K, pbar, dt, params, band):
    """Root of ``S = D`` in ``log P`` inside ``[x_lo, x_hi]``, Newton from ``log P0`` with a bracket.

    Returns ``(P, S, iterations, where)``: ``where`` is 0 for a root in the band, -1 when the
    root lies below ``x_lo`` and +1 above ``x_hi`` (then ``P`` is that edge)."""
    x = math.log(P0)
    xl, xh = -np.inf, np.inf  # bracket: h(xl) < 0 < h(xh)
    it = 0
    while it < 100:
        it += 1
        P = math.exp(x)
        sb, dsb = _band_supply(P, P0, eps, band, True)
        s = s_sure + sb
        d = demand(P, K, pbar, dt, params)
        h = s - d
        if h == 0.0:
            return P, s, it, 0
        if h < 0.0:
            xl = x
            if x >= x_hi:
                return P, s, it, 1
        else:
            xh = x
            if x <= x_lo:
                return P, s, it, -1
        slope = P * dsb - _demand_elasticity(P, K, pbar, dt, params) * d
        if slope > 0.0:
            step = h / slope
            if abs(step) <= 4e-16 * max(1.0, abs(x)):  # converged: the Newton correction is at round-off
                return P, s, it, 0
            x_new = x - step
        else:
            x_new = np.nan
        lo_b = max(xl, x_lo)
        hi_b = min(xh, x_hi)
        if not (lo_b <= x_new <= hi_b):
            if xl > -np.inf and xh < np.inf:
                x_new = 0.5 * (xl + xh)
                if x_new == xl or x_new == xh:  # the bracket is at round-off
                    return P, s, it, 0
            else:  # no bracket yet: try the band's edge on the side of the root
                x_new = x_hi if h < 0.0 else x_lo
        x = x_new
    return math.exp(x), s, it, 0


@njit(cache=True, inline="always")
def _max_width(P0, eps):
    """The widest band in ``log P`` around ``P0`` whose logistic factors stay in floating-point range:
    ``exp(-z)`` spans at most ``P0 (e^w - 1) / eps <= 600`` (deal-price multipliers ``a <= 1``)."""
    return math.log1p(600.0 * eps / P0)


@njit(cache=True)
def _band_at(P, stack, C, m, n, full, eps, dt, params, band):
    """Sort the nodes around a known price ``P`` and evaluate the supply there, storing the logistic of
    every band candidate: ``(volume, number of band candidates)``."""
    width = min(_BAND, _max_width(P, eps))
    cnt, s_sure = _classify(stack, C, m, n, full, eps, dt, P, P * math.exp(-width),
                            min(P * math.exp(width), params.P_cap), band)
    sb, _ = _band_supply(P, P, eps, band, True)
    return s_sure + sb, cnt


@njit(cache=True)
def _clear_fast(stack, C, m, n, full, eps, dt, K, params, guess, band, a, b, w):
    """The step's price with the logit (``eps > 0``): ``(P, volume, branch, iterations)``; the band
    classification of the price's neighbourhood stays in ``band`` (``cls``, ``sig``) for the trade.

    The band follows the root for a few moves (never wider than :func:`_max_width`); a root it
    does not reach that way (a far guess, a very small ``eps``) is found by the reference
    :func:`clear` on the exact logistic, and the band is then set around it."""
    P_cap = params.P_cap
    pbar = stack.pbar[n]
    P0 = min(max(guess, 1e-12), P_cap)
    width = min(_BAND, _max_width(P0, eps))
    iterations = 0
    for _ in range(6):
        P_lo = P0 * math.exp(-width)
        P_hi = min(P0 * math.exp(width), P_cap)
        cnt, s_sure = _classify(stack, C, m, n, full, eps, dt, P0, P_lo, P_hi, band)
        if cnt == 0 and s_sure == 0.0:
            if P_hi >= P_cap:  # nobody sells anywhere up to the cap
                return P_cap, 0.0, BRANCH_IDLE, iterations
            P0 = min(P_hi * math.exp(width), P_cap)
            width = min(2.0 * width, _max_width(P0, eps))
            continue
        P, s, it, where = _newton_in_band(P0, math.log(P_lo), math.log(P_hi), s_sure, eps, K, pbar, dt, params, band)
        iterations += it
        if where == 0:
            return P, s, BRANCH_ROOT, iterations
        if where == 1 and P_hi >= P_cap:  # demand exceeds supply at the cap
            return P_cap, s, BRANCH_CAP, iterations
        P0 = min(P_hi * math.exp(width), P_cap) if where == 1 else P_lo * math.exp(-width)
        width = min(2.0 * width, _max_width(P0, eps))
    cnt = _candidates(stack, C, m, n, full, eps, dt, P_cap, a, b, w)
    P, _, branch, it, _, _ = clear(a, b, w, cnt, eps, K, pbar, dt, params, guess, np.empty(0, np.int64))
    vol, _ = _band_at(P, stack, C, m, n, full, eps, dt, params, band)
    return P, vol, branch, iterations + it


@njit(cache=True)
def _node_supply(P, stack, C, m, n, full, eps, dt):
    """``S(P)`` summed over every node (exact logistic): the withdrawn supply at a price outside the band."""
    s = 0.0
    for k in range(stack.weights.shape[0]):
        if n < stack.n_first[k] or n >= stack.n_last[k]:
            continue
        row = m[k, n] if full else m[k, n & 1]
        wq = stack.weights[k] * stack.q_max[k, n] / dt
        life = stack.life[k, n]
        for i in range(row.shape[0]):
            if row[i] == 0.0:
                continue
            z = (P * life * stack.dfac[k, i] - stack.phi[k] - C[k, n, i]) / eps
            if z < -LOGIT_CUTOFF:
                continue
            s += wq * row[i] * (1.0 if z > LOGIT_CUTOFF else _logistic(z))
    return s


@njit(cache=True)
def _sale_probability(P, aj, bj, q_max, eps, marginal, fill):
    """Probability that a node in a sale process sells at price ``P`` at ``eps = 0``: in full below the
    price, ``fill`` for the rationed group at the marginal threshold (thresholds compared, not
    ``P a > b``, so the trade agrees with the clearing to the last bit)."""
    thr = _threshold(aj, bj)
    if thr == marginal:
        return q_max * fill
    return q_max if thr < P else 0.0


@njit(cache=True)
def _enter(stack, m0, m, n, full):
    """Place the masses of the populations entering at step ``n``."""
    for k in range(stack.weights.shape[0]):
        if n == stack.n_first[k]:
            row = m[k, n] if full else m[k, n & 1]
            row[:] = m0[k]


@njit(cache=True)
def _record_masses(stack, m, n, full, out):
    """Mass and first moment of every population holding stakes at ``t_n`` (maturity step included),
    and the largest mass on an end node."""
    for k in range(stack.weights.shape[0]):
        if n < stack.n_first[k] or n > stack.n_last[k]:
            continue
        row = m[k, n] if full else m[k, n & 1]
        s0 = 0.0
        s1 = 0.0
        for i in range(row.shape[0]):
            s0 += row[i]
            s1 += stack.x[i] * row[i]
        out.stats[k, 0, n] = s0
        out.stats[k, 1, n] = s1
        out.edge[k] = max(out.edge[k], row[0], row[row.shape[0] - 1])


@njit(cache=True)
def _market_outputs(n, P, vol, branch, K, s_bar, dt, stack, params, out):
    """Price, volume, withdrawn supply (``s_bar``: what would have sold at ``pbar``) and clearing residual."""
    pbar = stack.pbar[n]
    out.price[n] = P
    out.volume[n] = vol
    out.branch[n] = branch
    out.withdrawn[n] = max(s_bar - vol, 0.0) if P < pbar else 0.0
    if branch == BRANCH_ROOT or branch == BRANCH_CAP:
        d = demand(P, K, pbar, dt, params)
        gap = vol - d if branch == BRANCH_ROOT else max(vol - d, 0.0)
        out.residual[n] = abs(gap) / d if d > 0.0 else 0.0
    else:
        out.residual[n] = 0.0


@njit(cache=True)
def _trade_and_move(n, P, M, marginal, fill, eps, stack, C, m, full, mesh, method, out, band, qrow, cp, rhs):
    """Sales at price ``P`` of every population deciding at step ``n`` (exits, exit probabilities) and the
    transport of what stays to step ``n + 1``; returns the buyers' spend (summed in population order)."""
    spend = 0.0
    want_q = out.q.shape[0] > 0
    lp = math.log(P / stack.pbar[n])
    for k in range(stack.weights.shape[0]):
        if n < stack.n_first[k] or n >= stack.n_last[k]:
            continue
        cur = m[k, n] if full else m[k, n & 1]
        nxt = m[k, n + 1] if full else m[k, (n + 1) & 1]
        life = stack.life[k, n]
        q_max = stack.q_max[k, n]
        paid = 0.0
        n_L = cur.shape[0]
        d_row = stack.dfac[k]
        c_row = C[k, n]
        base = k * n_L
        for i in range(n_L):
            qi = 0.0
            if cur[i] != 0.0 and q_max > 0.0:
                if eps > 0.0:
                    c = band.cls[base + i]
                    if c == NEVER:
                        qrow[i] = 0.0
                        continue
                    qi = q_max if c == SURE else q_max * band.sig[c]
                else:
                    qi = _sale_probability(P, life * d_row[i], stack.phi[k] + c_row[i], q_max, eps, marginal, fill)
                paid += cur[i] * qi * (life * d_row[i])
            qrow[i] = qi
        if want_q:
            out.q[k, n, :] = qrow
        out.vintage_price[k, n] = P * life
        spend += stack.weights[k] * P * paid
        drift_c = stack.kappa_target[k, n] + stack.lam[k] * M + stack.alpha[k] * lp
        if method == 0:
            e = sl_transport(cur, nxt, qrow, drift_c, stack.sigma[k, n], stack.drift_a[k], mesh)
        else:
            e = fd_transport(cur, nxt, qrow, drift_c, stack.sigma[k, n], stack.drift_a[k], mesh, cp, rhs)
        out.exits[k, n] = e
    return spend


@njit(cache=True, nogil=True)
def clearing_forward(stack, params, mesh, C, m0, P_guess, eps, K0, method, diagnostics, out):
    """The forward sweep of every population with the market cleared at every step (docs/model.md 2.4, 2.5).

    ``C``: ``(n_pop, n_t, n_L)`` continuation values of the backward sweeps (on the iterate's
    path); ``m0``: ``(n_pop, n_L)`` masses at entry; ``P_guess``: ``(n_t,)`` starting prices of
    the root finder; ``eps``: logit temperature (0: hard rule); ``method``: 0 SL, 1 FD
    transport.  At each step ``n``: entries, the mean field ``M^n`` of the active LPs, the
    candidates and the cleared price ``P^n`` (:func:`clear`), the sales at ``P^n``, the
    buyers' spend and the refill ``K^{n+1} = (K - spend) + dt theta_K (Kbar - (K - spend))``,
    then every population moves with the drift at ``(P^n, M^n)``.  No sale happens at the
    last step; its price carries the one before (branch ``BRANCH_CLOSED``).  ``out``: a
    :class:`ForwardOut` (``m`` of ``(n_pop, 2, n_L)`` keeps two rows; ``q`` empty: no table).
    ``diagnostics``: compute the withdrawn supply (the iterations of the fixed point do not
    need it).
    Returns the total number of root-finder iterations.
    """
    n_pop, n_t = stack.q_max.shape
    n_L = m0.shape[1]
    full = out.m.shape[1] != 2 or n_t == 2
    dt = mesh.dt
    a = np.empty(n_pop * n_L)
    b = np.empty(n_pop * n_L)
    w = np.empty(n_pop * n_L)
    order = np.empty(n_pop * n_L, dtype=np.int64)
    band = Band(np.empty(n_pop * n_L), np.empty(n_pop * n_L), np.empty(n_pop * n_L), np.zeros(n_pop + 1, np.int64),
                np.ones(n_pop, np.bool_), np.full(n_pop * n_L, NEVER, np.int64), np.empty(n_pop * n_L))
    qrow = np.empty(n_L)
    cp = np.empty(n_L)
    rhs = np.empty(n_L)
    K = K0
    M = np.nan
    iterations = 0
    for n in range(n_t):
        _enter(stack, m0, out.m, n, full)
        _record_masses(stack, out.m, n, full, out)
        M = _mean_field(stack, out.stats, n, M)
        out.mean_field[n] = M
        out.capital[n] = K
        if n == n_t - 1:
            out.price[n] = out.price[n - 1] if n > 0 else P_guess[n]
            out.branch[n] = BRANCH_CLOSED
            for k in range(n_pop):
                out.vintage_price[k, n] = out.price[n] * stack.life[k, n]
            break
        pbar = stack.pbar[n]
        marginal, fill = np.inf, 1.0
        if eps > 0.0:
            P, vol, branch, it = _clear_fast(stack, C, out.m, n, full, eps, dt, K, params, P_guess[n], band, a, b, w)
            s_bar = 0.0
            if P < pbar and diagnostics:  # only the reported solve needs the withdrawn supply
                s_bar = _node_supply(pbar, stack, C, out.m, n, full, eps, dt)
        else:
            cnt = _candidates(stack, C, out.m, n, full, eps, dt, params.P_cap, a, b, w)
            P, vol, branch, it, marginal, fill = clear(a, b, w, cnt, eps, K, pbar, dt, params, P_guess[n], order)
            s_bar = _supply_hard(pbar, a, b, w, cnt) if P < pbar else 0.0
        iterations += it
        _market_outputs(n, P, vol, branch, K, s_bar, dt, stack, params, out)
        spend = _trade_and_move(n, P, M, marginal, fill, eps, stack, C, out.m, full, mesh, method, out, band, qrow,
                                cp, rhs)
        out.spend[n] = spend
        left = K - spend
        K = left + dt * params.theta_K * (stack.Kbar[n] - left)
    return iterations
