"""numba kernels of the finite-N LP market (docs/model.md 2.8): decisions, the market step, transport.

The step is described in :mod:`abm.lp_market.engine`.  Arguments are grouped in named
tuples (numba compiles attribute access away):

* :class:`Layout` — agents stored by population (``pop_starts``) and cut into blocks of
  work with their own random streams (``block_starts``);
* :class:`StepTables` — per-population constants and per-step arrays of the market
  (from :func:`mfg.lp_exit.discretisation.discretise`, plus the exact OU coefficients and
  the events' liquidity shifts and capital cuts);
* :class:`Constants` — the step ``dt`` and the transition (exact OU or the solver's
  two-point step); the impact market's :class:`~mfg.lp_exit.market.ImpactParams` travel
  apart (numba cannot pass a named tuple nested in another into a parallel loop);
* :class:`PolicyArrays` — the bound policy (:class:`abm.lp_market.policies.BoundPolicy`);
* :class:`Work` — per-replication state carried between steps and per-item sums;
* :class:`Paths` — the output series; :class:`Snapshots` — optional agent snapshots.

Every (replication, block) item writes only its own slots and every sum over items is a
serial loop in a fixed order, so a run is bit-identical for any number of threads.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

from mfg.lp_exit.clearing import BRANCH_IDLE
from mfg.lp_exit.market import market_step
from mfg.semi_lagrangian import interp_at

from .auction import uniform_price_auction

__all__ = ["PENDING", "ACTIVE", "SOLD", "MATURED", "NONE", "TABLE", "THRESHOLD", "GIVEN", "RESERVATION",
           "GIVEN_RESERVATION", "Layout", "StepTables", "Constants", "ClearingTables", "Offers", "PolicyArrays", "Work",
           "Paths", "Snapshots", "run_steps"]

PENDING, ACTIVE, SOLD, MATURED = 0, 1, 2, 3

#: ``PolicyArrays.kind`` codes: no exit; exit probabilities (a table on the grid, a threshold, a
#: callable); reservation values (the MFG's continuation values on the grid, a callable's).
NONE, TABLE, THRESHOLD, GIVEN, RESERVATION, GIVEN_RESERVATION = 0, 1, 2, 3, 4, 5

Layout = namedtuple("Layout", ["pop_starts", "block_starts", "nav_w", "value_w"])
Layout.__doc__ = """Agents by population (``pop_starts``) and blocks (``block_starts``); with per-agent weights
(``Constants.weighted``) ``nav_w[i]`` is LP ``i``'s NAV weight relative to its population's ``per_w`` (mean 1 over
the population) and ``value_w[i] = nav_w[i] * quality[i]`` its weight in value (the auction's supply and the
buyers' spend); unweighted markets carry 1-element dummies."""
StepTables = namedtuple("StepTables", [
    "n_first", "n_last", "matures",  # (n_pop,) entry and maturity steps
    "weights", "per_w", "n_per_pop",  # NAV weights, weight of one LP, LPs per population
    "kappa_target", "lam", "alpha", "drift_a",  # drift: kappa (lbar + s(t_n)) + lam M + alpha log(P/pbar) - drift_a L
    "decay", "gain", "sd", "sq",  # exact OU step (decay, gain, sd[k, n]) and the two-point step (sq[k, n])
    "life", "pbar", "Kbar",  # (n_pop, n_t) remaining-life factor, (n_t,) calm price and target capital
    "shift", "cut",  # (n_pop, n_t) liquidity shifts at t_n, (n_t + 1,) capital cuts at t_n
])
Constants = namedtuple("Constants", ["dt", "exact", "clearing", "weighted"])
ClearingTables = namedtuple("ClearingTables", [
    "hazard",  # (n_pop, n_t) a_max(t_n) dt: the sale-process clock runs down by this each step
    "phi", "delta", "ell",  # (n_pop,) transaction cost, distress discount and its level
    "eps",  # logit temperature of the reservation prices (NAV units)
    "tau_d", "gamma", "P_cap", "theta_K",  # the demand of the clearing market
])
Offers = namedtuple("Offers", ["r", "w", "a", "agent", "pop", "count", "v", "x"])
Offers.__doc__ = """Offers of a step per work item, ``(n_items, block capacity)``: reservation price ``r`` (units
of ``P``), supply a year ``w`` (NAV, or value with per-agent weights), deal-price multiplier ``a = A dfac(L)``,
agent and population index; ``count`` ``(n_items,)`` offers made; ``v`` the value weight ``nav_w quality``
(1 without per-agent weights) and ``x`` the offering LP's liquidity."""
AuctionScratch = namedtuple("AuctionScratch", ["r", "w", "a", "agent", "pop", "order", "v", "x"])
PolicyArrays = namedtuple("PolicyArrays", ["kind", "table", "lower", "dx", "threshold", "prob"])
Work = namedtuple("Work", ["s_hat", "K", "cst", "sumL", "cnt", "ex", "wcnt", "exv", "n_off", "n_fill"])
Work.__doc__ = """Per replication: ``s_hat``, ``K``, the drift constants ``cst``; per item and population: the sums
of ``L`` (NAV-weighted with per-agent weights), active counts, exits, the weighted active count ``wcnt`` and the
value of the exits ``exv`` (per-agent weights only); per replication the last step's offers ``n_off`` and the
offers filled ``n_fill`` (clearing market: ``AuctionScratch`` holds the last replication's offers in the
auction's order, sorted by reservation up to the marginal offer, the first ``n_fill`` sold)."""
Paths = namedtuple("Paths", ["price", "vintage_price", "buyer_capital", "sell_pressure", "sell_flow", "withdrawn",
                             "exits", "active_count", "mean_liquidity"])
Snapshots = namedtuple("Snapshots", ["index", "L", "status"])


@njit(cache=True, inline="always")
def _exit_probability(policy, q_given, k, n, r, i, x, row, th, pr):
    """The policy's probability that LP ``i`` (population ``k``, liquidity ``x``) sells in step ``n``.

    Inlined into the agents' loop: a call per agent-step would pay the reference counts of its
    array arguments, more than the work of the step."""
    if policy.kind == TABLE:
        return interp_at(row, policy.lower, policy.dx, x) if x < th else 0.0
    if policy.kind == THRESHOLD:
        return pr if x < th else 0.0
    return q_given[r, i]


@njit(cache=True)
def _decide_block(n, r, lo, hi, it, gen, L, status, q_given, layout, tables, consts, policy, work, snaps):
    """Mean-field sums and decisions for the agents ``lo..hi-1`` of replication ``r`` (work item ``it``).

    Agents are stored by population (``pop_starts[k]..pop_starts[k+1]-1`` is population
    ``k``); each population's part of the block is visited in agent order.
    """
    Lr = L[r]
    st = status[r]
    ps = layout.pop_starts
    snap_j = snaps.index[n]
    if snap_j >= 0:
        for i in range(lo, hi):
            snaps.L[r, snap_j, i] = Lr[i]
            snaps.status[r, snap_j, i] = st[i]
    weighted = consts.weighted
    for k in range(work.sumL.shape[1]):
        work.sumL[it, k] = 0.0
        work.cnt[it, k] = 0
        work.ex[it, k] = 0
        if weighted:
            work.wcnt[it, k] = 0.0
            work.exv[it, k] = 0.0
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z or n < tables.n_first[k] or (tables.matures[k] and n >= tables.n_last[k]):
            continue  # no agent of k here, or k not active at t_n
        decide = n < tables.n_last[k] and policy.kind != NONE
        s = 0.0
        c = 0
        e = 0
        wc = 0.0
        ev = 0.0
        row = policy.table[k, n] if policy.kind == TABLE else policy.table[0, 0]
        th = policy.threshold[k, n] if policy.kind == THRESHOLD or policy.kind == TABLE else 0.0
        pr = policy.prob[k, n] if policy.kind == THRESHOLD else 0.0
        for i in range(a, z):
            if st[i] != ACTIVE:
                continue
            x = Lr[i]
            if weighted:
                s += layout.nav_w[i] * x
                wc += layout.nav_w[i]
            else:
                s += x
            c += 1
            if decide:
                q = _exit_probability(policy, q_given, k, n, r, i, x, row, th, pr)
                if q > 0.0:
                    if gen.random() < q:
                        st[i] = SOLD
                        e += 1
                        if weighted:
                            ev += layout.value_w[i]
        work.sumL[it, k] = s
        work.cnt[it, k] = c
        work.ex[it, k] = e
        if weighted:
            work.wcnt[it, k] = wc
            work.exv[it, k] = ev


@njit(cache=True)
def _reservation(c, u, x, life, phi, eps, delta, ell):
    """The reservation price, in units of ``P``, of an LP whose sale-process clock has fired:
    continuation value ``c`` at its liquidity ``x``, uniform draw ``u`` of its logistic taste
    shock ``xi = log(u / (1 - u))``; ``r = (c + phi - eps xi) / (A dfac(x))`` (``inf``: no offer)."""
    xi = math.log(u) - math.log1p(-u) if u > 0.0 else -np.inf
    dfac = max(1.0 - delta * max(ell - x, 0.0), 0.0)
    num = c + phi - eps * xi
    den = life * dfac
    if den > 0.0:
        return num / den
    return 0.0 if num < 0.0 else np.inf


@njit(cache=True)
def _offer_block(n, r, lo, hi, it, gen, L, status, clock, q_given, layout, tables, consts, ct, policy, work, offers,
                 snaps):
    """Mean-field sums and the offers of the agents ``lo..hi-1`` of replication ``r`` (clearing market)."""
    Lr = L[r]
    st = status[r]
    ps = layout.pop_starts
    snap_j = snaps.index[n]
    if snap_j >= 0:
        for i in range(lo, hi):
            snaps.L[r, snap_j, i] = Lr[i]
            snaps.status[r, snap_j, i] = st[i]
    cnt = 0
    weighted = consts.weighted
    reserve = policy.kind == RESERVATION or policy.kind == GIVEN_RESERVATION
    given = policy.kind == GIVEN_RESERVATION
    clk = clock[r]
    for k in range(work.sumL.shape[1]):
        work.sumL[it, k] = 0.0
        work.cnt[it, k] = 0
        work.ex[it, k] = 0
        if weighted:
            work.wcnt[it, k] = 0.0
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z or n < tables.n_first[k] or (tables.matures[k] and n >= tables.n_last[k]):
            continue
        decide = n < tables.n_last[k] and policy.kind != NONE
        life = tables.life[k, n]
        row = policy.table[k, n] if policy.kind == TABLE else policy.table[0, 0]
        th = policy.threshold[k, n] if policy.kind == THRESHOLD or policy.kind == TABLE else 0.0
        pr = policy.prob[k, n] if policy.kind == THRESHOLD else 0.0
        hz = ct.hazard[k, n] if reserve else 0.0
        c_row = policy.table[k, n] if policy.kind == RESERVATION else policy.table[0, 0]
        phi_k, delta_k, ell_k = ct.phi[k], ct.delta[k], ct.ell[k]
        s = 0.0
        c = 0
        wc = 0.0
        for i in range(a, z):
            if st[i] != ACTIVE:
                continue
            x = Lr[i]
            if weighted:
                s += layout.nav_w[i] * x
                wc += layout.nav_w[i]
            else:
                s += x
            c += 1
            if not decide:
                continue
            if reserve:  # no call with array arguments per agent-step: numba's reference counts cost more than it
                clk[i] -= hz
                if clk[i] > 0.0:
                    continue
                # fired (probability 1 - exp(-a_max dt) a step, memoryless): a taste shock and a new clock
                u = gen.random()
                clk[i] = gen.standard_exponential()
                c_i = q_given[r, i] if given else interp_at(c_row, policy.lower, policy.dx, x)
                res = _reservation(c_i, u, x, life, phi_k, ct.eps, delta_k, ell_k)
            else:
                q = _exit_probability(policy, q_given, k, n, r, i, x, row, th, pr)
                res = 0.0 if q > 0.0 and gen.random() < q else np.inf
            if res <= ct.P_cap:
                v = layout.value_w[i] if weighted else 1.0
                offers.r[it, cnt] = res
                offers.w[it, cnt] = tables.per_w[k] * v / consts.dt if weighted else tables.per_w[k] / consts.dt
                offers.a[it, cnt] = life * max(1.0 - ct.delta[k] * max(ct.ell[k] - x, 0.0), 0.0)
                offers.agent[it, cnt] = i
                offers.pop[it, cnt] = k
                offers.v[it, cnt] = v
                offers.x[it, cnt] = x
                cnt += 1
        work.sumL[it, k] = s
        work.cnt[it, k] = c
        if weighted:
            work.wcnt[it, k] = wc
    offers.count[it] = cnt


@njit(cache=True)
def _move_block(n, r, lo, hi, gen, L, status, layout, tables, consts, work):
    """Transport, entries, maturities and liquidity shifts at ``t_{n+1}`` for the agents ``lo..hi-1``."""
    Lr = L[r]
    st = status[r]
    ps = layout.pop_starts
    m = n + 1
    for k in range(ps.shape[0] - 1):
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z:
            continue
        now = n >= tables.n_first[k] and not (tables.matures[k] and n >= tables.n_last[k])
        enter = m == tables.n_first[k]
        mature = tables.matures[k] and m == tables.n_last[k]
        if not (now or enter):
            continue
        dec = tables.decay[k]
        cg = work.cst[r, k] * tables.gain[k]
        sdk = tables.sd[k, n]
        ca = work.cst[r, k]
        ak = tables.drift_a[k]
        sqk = tables.sq[k, n]
        sh = tables.shift[k, m]
        for i in range(a, z):
            s_i = st[i]
            if s_i == ACTIVE:
                x = Lr[i]
                if consts.exact:
                    Lr[i] = x * dec + cg + sdk * gen.standard_normal()
                else:
                    step = sqk if gen.random() < 0.5 else -sqk
                    Lr[i] = x + (ca - ak * x) * consts.dt + step
            elif s_i == PENDING and enter:
                s_i = ACTIVE
            if s_i == ACTIVE:
                if mature:
                    s_i = MATURED
                elif sh != 0.0:
                    Lr[i] += sh
            st[i] = s_i


@njit(cache=True)
def _market(n, n_steps, tables, consts, impact, work, paths, e_mass, a_n, pi):
    """Step 3 for every replication: sums over items in a fixed order, the market step, the next drift."""
    n_reps = work.s_hat.shape[0]
    n_pop = tables.weights.shape[0]
    n_blocks = work.sumL.shape[0] // n_reps
    for r in range(n_reps):
        num = 0.0
        den = 0.0
        for k in range(n_pop):
            s = 0.0
            c = 0
            e = 0
            wc = 0.0
            ev = 0.0
            for b in range(n_blocks):
                j = r * n_blocks + b
                s += work.sumL[j, k]
                c += work.cnt[j, k]
                e += work.ex[j, k]
                if consts.weighted:
                    wc += work.wcnt[j, k]
                    ev += work.exv[j, k]
            paths.active_count[r, k, n] = c
            paths.exits[r, k, n] = e
            num += tables.per_w[k] * s
            if consts.weighted:  # NAV-weighted mean field; exits in value (nav_w x quality)
                den += tables.per_w[k] * wc
                e_mass[k] = ev / tables.n_per_pop[k] if tables.n_per_pop[k] > 0 else 0.0
            else:
                den += tables.per_w[k] * c
                e_mass[k] = e / tables.n_per_pop[k] if tables.n_per_pop[k] > 0 else 0.0
            a_n[k] = tables.life[k, n]
        M = num / den if den > 0.0 else np.nan
        S, sh, P, Kn = market_step(work.s_hat[r], work.K[r], e_mass, tables.weights, a_n, tables.pbar[n],
                                   tables.Kbar[n], consts.dt, impact, pi)
        paths.price[r, n] = P
        paths.buyer_capital[r, n] = work.K[r]
        paths.sell_pressure[r, n] = sh
        paths.sell_flow[r, n] = S
        paths.withdrawn[r, n] = np.nan
        paths.mean_liquidity[r, n] = M
        for k in range(n_pop):
            paths.vintage_price[r, k, n] = pi[k]
        work.s_hat[r] = sh
        work.K[r] = Kn * (1.0 - tables.cut[n + 1]) if n < n_steps else Kn
        lp = math.log(P / tables.pbar[n])
        mf = M if den > 0.0 else 0.0
        for k in range(n_pop):
            work.cst[r, k] = tables.kappa_target[k, n] + tables.lam[k] * mf + tables.alpha[k] * lp


@njit(cache=True)
def _clear(n, n_steps, status, gens, tables, consts, ct, work, offers, paths, scratch):
    """Step 3 of the clearing market for every replication: the offers gathered in block order, the
    uniform-price auction (:func:`abm.lp_market.auction.uniform_price_auction`), the sales, the
    buyers' spend and refill, the next drift."""
    n_reps = work.s_hat.shape[0]
    n_pop = tables.weights.shape[0]
    n_blocks = work.sumL.shape[0] // n_reps
    pbar = tables.pbar[n]
    for r in range(n_reps):
        m = 0
        for b in range(n_blocks):
            it = r * n_blocks + b
            for j in range(offers.count[it]):
                scratch.r[m] = offers.r[it, j]
                scratch.w[m] = offers.w[it, j]
                scratch.a[m] = offers.a[it, j]
                scratch.agent[m] = offers.agent[it, j]
                scratch.pop[m] = offers.pop[it, j]
                scratch.v[m] = offers.v[it, j]
                scratch.x[m] = offers.x[it, j]
                m += 1
        K = work.K[r]
        P, n_sold, vol, branch, fill = uniform_price_auction(scratch.r, scratch.w, m, K, pbar, consts.dt, ct,
                                                             scratch.order)
        if branch == BRANCH_IDLE:  # no capital (or no offer): nothing sorted, nothing sold
            for j in range(m):
                scratch.order[j] = j
        spend = 0.0
        for k in range(n_pop):
            paths.exits[r, k, n] = 0
        for j in range(n_sold):
            o = scratch.order[j]
            status[r, scratch.agent[o]] = SOLD
            k = scratch.pop[o]
            paths.exits[r, k, n] += 1
            if consts.weighted:
                spend += P * scratch.a[o] * tables.per_w[k] * scratch.v[o]
            else:
                spend += P * scratch.a[o] * tables.per_w[k]
        if fill > 0.0:  # the marginal offer: a lottery with the replication's own generator, within the budget
            o = scratch.order[n_sold]
            k = scratch.pop[o]
            cost = P * scratch.a[o] * tables.per_w[k] * scratch.v[o] if consts.weighted else \
                P * scratch.a[o] * tables.per_w[k]
            if gens[n_reps * n_blocks + r].random() < fill and spend + cost <= K:
                status[r, scratch.agent[o]] = SOLD
                paths.exits[r, k, n] += 1
                spend += cost
                vol += scratch.w[o]
                n_sold += 1
        withdrawn = 0.0  # offers that would have sold at pbar and did not (NAV a year)
        if P < pbar:
            for j in range(n_sold, m):
                if scratch.r[scratch.order[j]] <= pbar:
                    withdrawn += scratch.w[scratch.order[j]]
        work.n_off[r] = m
        work.n_fill[r] = n_sold
        M = _sums(n, r, n_blocks, tables, consts, work, paths)
        paths.price[r, n] = P
        paths.buyer_capital[r, n] = K
        paths.sell_pressure[r, n] = np.nan
        paths.sell_flow[r, n] = vol
        paths.withdrawn[r, n] = withdrawn
        paths.mean_liquidity[r, n] = M
        for k in range(n_pop):
            paths.vintage_price[r, k, n] = P * tables.life[k, n]
        left = K - spend
        K_next = left + consts.dt * ct.theta_K * (tables.Kbar[n] - left)
        work.K[r] = K_next * (1.0 - tables.cut[n + 1]) if n < n_steps else K_next
        _next_drift(n, r, P, M, tables, work)


@njit(cache=True)
def _sums(n, r, n_blocks, tables, consts, work, paths):
    """Active counts of replication ``r`` into ``paths`` and the NAV-weighted mean liquidity (NaN if nobody)."""
    num = 0.0
    den = 0.0
    for k in range(tables.weights.shape[0]):
        s = 0.0
        c = 0
        wc = 0.0
        for b in range(n_blocks):
            j = r * n_blocks + b
            s += work.sumL[j, k]
            c += work.cnt[j, k]
            if consts.weighted:
                wc += work.wcnt[j, k]
        paths.active_count[r, k, n] = c
        num += tables.per_w[k] * s
        den += tables.per_w[k] * (wc if consts.weighted else c)
    return num / den if den > 0.0 else np.nan


@njit(cache=True)
def _next_drift(n, r, P, M, tables, work):
    """The drift constants of replication ``r`` for the transport of step ``n``."""
    lp = math.log(P / tables.pbar[n])
    mf = M if M == M else 0.0  # NaN (nobody active) acts on nobody
    for k in range(tables.weights.shape[0]):
        work.cst[r, k] = tables.kappa_target[k, n] + tables.lam[k] * mf + tables.alpha[k] * lp


@njit(cache=True, parallel=True)
def run_steps(n0, n1, n_steps, L, status, gens, q_given, clock, layout, tables, consts, impact, ct, policy, work,
              offers, paths, snaps, scratch):
    """Steps ``n0..n1-1`` of every replication (the step of :mod:`abm.lp_market.engine`)."""
    n_reps = L.shape[0]
    n_pop = tables.weights.shape[0]
    starts = layout.block_starts
    n_blocks = starts.shape[0] - 1
    n_items = n_reps * n_blocks
    e_mass = np.empty(n_pop)
    a_n = np.empty(n_pop)
    pi = np.empty(n_pop)
    for n in range(n0, n1):
        if consts.clearing:
            for it in prange(n_items):
                j = np.intp(it)
                r = j // n_blocks
                b = j - r * n_blocks
                _offer_block(n, r, starts[b], starts[b + 1], j, gens[j], L, status, clock, q_given, layout, tables,
                             consts, ct, policy, work, offers, snaps)
            _clear(n, n_steps, status, gens, tables, consts, ct, work, offers, paths, scratch)
        else:
            for it in prange(n_items):
                j = np.intp(it)
                r = j // n_blocks
                b = j - r * n_blocks
                _decide_block(n, r, starts[b], starts[b + 1], j, gens[j], L, status, q_given, layout, tables, consts,
                              policy, work, snaps)
            _market(n, n_steps, tables, consts, impact, work, paths, e_mass, a_n, pi)
        if n < n_steps:
            for it in prange(n_items):
                j = np.intp(it)
                r = j // n_blocks
                b = j - r * n_blocks
                _move_block(n, r, starts[b], starts[b + 1], gens[j], L, status, layout, tables, consts, work)
