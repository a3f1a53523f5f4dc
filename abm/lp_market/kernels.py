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

from mfg.lp_exit.market import market_step
from mfg.semi_lagrangian import interp_at

__all__ = ["PENDING", "ACTIVE", "SOLD", "MATURED", "NONE", "TABLE", "THRESHOLD", "GIVEN", "Layout", "StepTables",
           "Constants", "PolicyArrays", "Work", "Paths", "Snapshots", "run_steps"]

PENDING, ACTIVE, SOLD, MATURED = 0, 1, 2, 3

#: ``PolicyArrays.kind`` codes.
NONE, TABLE, THRESHOLD, GIVEN = 0, 1, 2, 3

Layout = namedtuple("Layout", ["pop_starts", "block_starts"])
StepTables = namedtuple("StepTables", [
    "n_first", "n_last", "matures",  # (n_pop,) entry and maturity steps
    "weights", "per_w", "n_per_pop",  # NAV weights, weight of one LP, LPs per population
    "kappa_target", "lam", "alpha", "drift_a",  # drift: kappa (lbar + s(t_n)) + lam M + alpha log(P/pbar) - drift_a L
    "decay", "gain", "sd", "sq",  # exact OU step (decay, gain, sd[k, n]) and the two-point step (sq[k, n])
    "life", "pbar", "Kbar",  # (n_pop, n_t) remaining-life factor, (n_t,) calm price and target capital
    "shift", "cut",  # (n_pop, n_t) liquidity shifts at t_n, (n_t + 1,) capital cuts at t_n
])
Constants = namedtuple("Constants", ["dt", "exact"])
PolicyArrays = namedtuple("PolicyArrays", ["kind", "table", "lower", "dx", "threshold", "prob"])
Work = namedtuple("Work", ["s_hat", "K", "cst", "sumL", "cnt", "ex"])
Paths = namedtuple("Paths", ["price", "vintage_price", "buyer_capital", "sell_pressure", "sell_flow", "exits",
                             "active_count", "mean_liquidity"])
Snapshots = namedtuple("Snapshots", ["index", "L", "status"])


@njit(cache=True)
def _exit_probability(policy, q_given, k, n, r, i, x, row, th, pr):
    """The policy's probability that LP ``i`` (population ``k``, liquidity ``x``) sells in step ``n``."""
    if policy.kind == TABLE:
        return interp_at(row, policy.lower, policy.dx, x) if x < th else 0.0
    if policy.kind == THRESHOLD:
        return pr if x < th else 0.0
    return q_given[r, i]


@njit(cache=True)
def _decide_block(n, r, lo, hi, it, gen, L, status, q_given, layout, tables, policy, work, snaps):
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
    for k in range(work.sumL.shape[1]):
        work.sumL[it, k] = 0.0
        work.cnt[it, k] = 0
        work.ex[it, k] = 0
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z or n < tables.n_first[k] or (tables.matures[k] and n >= tables.n_last[k]):
            continue  # no agent of k here, or k not active at t_n
        decide = n < tables.n_last[k] and policy.kind != NONE
        s = 0.0
        c = 0
        e = 0
        row = policy.table[k, n] if policy.kind == TABLE else policy.table[0, 0]
        th = policy.threshold[k, n] if policy.kind == THRESHOLD or policy.kind == TABLE else 0.0
        pr = policy.prob[k, n] if policy.kind == THRESHOLD else 0.0
        for i in range(a, z):
            if st[i] != ACTIVE:
                continue
            x = Lr[i]
            s += x
            c += 1
            if decide:
                q = _exit_probability(policy, q_given, k, n, r, i, x, row, th, pr)
                if q > 0.0:
                    if gen.random() < q:
                        st[i] = SOLD
                        e += 1
        work.sumL[it, k] = s
        work.cnt[it, k] = c
        work.ex[it, k] = e


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
            for b in range(n_blocks):
                j = r * n_blocks + b
                s += work.sumL[j, k]
                c += work.cnt[j, k]
                e += work.ex[j, k]
            paths.active_count[r, k, n] = c
            paths.exits[r, k, n] = e
            num += tables.per_w[k] * s
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
        paths.mean_liquidity[r, n] = M
        for k in range(n_pop):
            paths.vintage_price[r, k, n] = pi[k]
        work.s_hat[r] = sh
        work.K[r] = Kn * (1.0 - tables.cut[n + 1]) if n < n_steps else Kn
        lp = math.log(P / tables.pbar[n])
        mf = M if den > 0.0 else 0.0
        for k in range(n_pop):
            work.cst[r, k] = tables.kappa_target[k, n] + tables.lam[k] * mf + tables.alpha[k] * lp


@njit(cache=True, parallel=True)
def run_steps(n0, n1, n_steps, L, status, gens, q_given, layout, tables, consts, impact, policy, work, paths, snaps):
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
        for it in prange(n_items):
            j = np.intp(it)
            r = j // n_blocks
            b = j - r * n_blocks
            _decide_block(n, r, starts[b], starts[b + 1], j, gens[j], L, status, q_given, layout, tables, policy,
                          work, snaps)
        _market(n, n_steps, tables, consts, impact, work, paths, e_mass, a_n, pi)
        if n < n_steps:
            for it in prange(n_items):
                j = np.intp(it)
                r = j // n_blocks
                b = j - r * n_blocks
                _move_block(n, r, starts[b], starts[b + 1], gens[j], L, status, layout, tables, consts, work)
