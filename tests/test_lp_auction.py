"""Validation of the uniform-price auction of the finite-N clearing market (docs/model.md 2.8, 2.9).

* :func:`abm.lp_market.auction.uniform_price_auction` against an independent brute-force reference written
  here from the definition ``P* = inf{P in (0, P_cap] : S(P) >= D(P, K)}`` (``S`` the step supply of the
  offers with ``r_i <= P``; ``P* = P_cap`` if the set is empty), every offer below ``P*`` sold, the marginal
  offer at a jump rationed with fill ``(D(P*) - cum) / w`` (ties in the order the offers are given): random
  offers with ties, market orders (``r <= 0``), offers above ``P_cap``, tiny ``K`` (the budget branch of ``D``),
  ``gamma = 0`` and ``> 0``; hypothesis with a bounded number of examples;
* the law of large numbers: offers of N LPs drawn from a known density (Gaussian liquidity, logistic taste
  shocks) clear at prices that converge to the mean-field price of :func:`mfg.lp_exit.clearing.clear` as N grows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from abm.lp_market.auction import _cross, uniform_price_auction
from mfg.lp_exit.clearing import BRANCH_CAP, BRANCH_IDLE, BRANCH_ROOT, ClearingParams, clear, demand, demand_inverse

pytestmark = pytest.mark.kernels  # run again with numba's bounds checking in CI (.ci/run)


def demand_ref(P, K, pbar, dt, tau_d, gamma):
    """``D(P, K) = min((K/tau_d)(pbar/P)^gamma / P, K/(P dt))`` (docs/model.md 2.4; in float64: inf past the range)."""
    P = np.float64(P)
    with np.errstate(over="ignore"):
        return float(min((K / tau_d) * (pbar / P) ** gamma / P, K / (P * dt)))


def demand_level_price(c, K, pbar, dt, tau_d, gamma):
    """The price ``Q`` with ``D(Q) = c`` (D strictly decreasing from inf to 0), by brentq in log P."""
    f = lambda x: math.log(demand_ref(math.exp(x), K, pbar, dt, tau_d, gamma)) - math.log(c)  # noqa: E731
    lo, hi = -1.0, 1.0
    while f(lo) < 0.0:
        lo *= 2.0
    while f(hi) > 0.0:
        hi *= 2.0
    return math.exp(brentq(f, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=1000))


def auction_ref(r, w, K, pbar, dt, tau_d, gamma, P_cap):
    """Brute force from the definition.  Returns ``(P, sold, marginal, fill, branch)``: ``sold`` the set of
    offers sold in full, ``marginal`` the rationed offer (or None) and its fill probability."""
    m = len(r)
    if m == 0 or K <= 0.0:
        return P_cap, set(), None, 0.0, BRANCH_IDLE
    D = lambda P: demand_ref(P, K, pbar, dt, tau_d, gamma)  # noqa: E731
    ts = sorted({float(v) for v in r if 0.0 < v <= P_cap})
    lefts = [0.0] + ts  # segment j is [lefts[j], rights[j]) (open at 0), the last one closed at P_cap
    rights = ts + [P_cap]
    P_star = None
    for j, (lo, hi) in enumerate(zip(lefts, rights)):
        c = sum(wi for ri, wi in zip(r, w) if ri <= lo)  # the supply on the segment (r <= 0 offers: always)
        last = j == len(lefts) - 1
        if lo > 0.0 and D(lo) <= c:
            P_star = lo
            break
        if c <= 0.0:
            continue
        Q = demand_level_price(c, K, pbar, dt, tau_d, gamma)
        if Q < hi or (last and Q <= hi):
            P_star = max(Q, lo)
            break
    if P_star is None:  # demand exceeds all supply up to the cap
        return P_cap, {i for i in range(m) if r[i] <= P_cap}, None, 0.0, BRANCH_CAP
    below = [i for i in range(m) if r[i] < P_star or r[i] <= 0.0]
    at = [i for i in range(m) if r[i] == P_star and r[i] > 0.0]  # in the given order (ties broken by it)
    cum = sum(w[i] for i in below)
    d = D(P_star)
    sold = set(below)
    if at and cum < d:  # a jump at P_star: fill the tie group in order up to demand, ration the marginal offer
        for i in at:
            if cum + w[i] >= d:
                return P_star, sold, i, (d - cum) / w[i], BRANCH_ROOT
            cum += w[i]
            sold.add(i)
    return P_star, sold, None, 0.0, BRANCH_ROOT


def run_auction(r, w, K, pbar, dt, tau_d, gamma, P_cap):
    r = np.asarray(r, dtype=float)
    w = np.asarray(w, dtype=float)
    order = np.empty(max(r.size, 1), np.int64)
    P, n_sold, vol, branch, fill = uniform_price_auction(r, w, r.size, float(K), float(pbar), float(dt),
                                                         ClearingParams(tau_d, gamma, P_cap, 0.5), order)
    return P, set(order[:n_sold].tolist()), (int(order[n_sold]) if fill > 0.0 else None), fill, branch, vol


def check_against_reference(r, w, K, pbar, dt, tau_d, gamma, P_cap):
    P, sold, marginal, fill, branch, vol = run_auction(r, w, K, pbar, dt, tau_d, gamma, P_cap)
    P_ref, sold_ref, marg_ref, fill_ref, br_ref = auction_ref(list(r), list(w), K, pbar, dt, tau_d, gamma, P_cap)
    assert branch == br_ref, (branch, br_ref, P, P_ref)
    assert P == pytest.approx(P_ref, rel=1e-12), (P, P_ref)
    assert sold == sold_ref
    assert marginal == marg_ref
    assert fill == pytest.approx(fill_ref, rel=1e-12, abs=1e-15)
    assert vol == pytest.approx(sum(w[i] for i in sold), rel=1e-12, abs=1e-300)
    if branch == BRANCH_ROOT:  # volume (the marginal offer's expected share included) = demand
        d = demand_ref(P, K, pbar, dt, tau_d, gamma)
        expected = vol + (fill * w[marginal] if marginal is not None else 0.0)
        assert expected == pytest.approx(d, rel=1e-10)
        assert 0.0 < fill <= 1.0 or marginal is None
    elif branch == BRANCH_CAP:
        assert P == P_cap and vol <= demand_ref(P_cap, K, pbar, dt, tau_d, gamma)
    return branch, marginal is not None


# ----------------------------------------------------------------------------------
# hand-made cases
# ----------------------------------------------------------------------------------


def test_auction_idle_and_empty():
    assert run_auction([], [], 0.04, 0.93, 1 / 52, 2.5, 1.0, 1.0)[4] == BRANCH_IDLE
    P, sold, marg, fill, br, vol = run_auction([0.5, 0.7], [1.0, 1.0], 0.0, 0.93, 1 / 52, 2.5, 1.0, 1.0)
    assert (P, sold, marg, br, vol) == (1.0, set(), None, BRANCH_IDLE, 0.0)


def test_auction_hand_cases():
    """A few cases by hand: inside a step, at a jump (rationed), ties in agent order, market orders, offers above
    the cap, the budget branch."""
    dt, pbar = 1 / 52, 0.93
    # gamma = 0, tau_d = 1, K = 1: D(P) = 1/P.  Offers of 1 NAV/yr at 0.5, 0.6 and 2 at 0.8: S = 1 on [0.5, 0.6),
    # 2 on [0.6, 0.8): D = 2 at P = 0.5 < 0.6, so D = S = 1 at P = 1 is out of [0.5, 0.6); at 0.6 D = 1.667 <= 2:
    # the jump at 0.6 is the price, the offer there rationed with fill (1.667 - 1)/1
    P, sold, marg, fill, br, vol = run_auction([0.5, 0.6, 0.8], [1.0, 1.0, 2.0], 1.0, pbar, dt, 1.0, 0.0, 1.0)
    assert P == 0.6 and sold == {0} and marg == 1 and fill == pytest.approx(1 / 0.6 - 1.0, rel=1e-14)
    # inside a step: offers of 0.5 at 0.2 and 0.4: S = 1 on [0.4, 1], D = 1/P = 1 at P = 1 (not a cap: S(1) = D(1))
    P, sold, marg, fill, br, vol = run_auction([0.2, 0.4], [0.5, 0.5], 1.0, pbar, dt, 1.0, 0.0, 1.0)
    assert P == pytest.approx(1.0, rel=1e-15) and sold == {0, 1} and marg is None
    # cap: more demand than supply at the cap; the offer above the cap does not sell
    P, sold, marg, fill, br, vol = run_auction([0.2, 0.4, 1.5], [0.1, 0.1, 5.0], 1.0, pbar, dt, 1.0, 0.0, 1.0)
    assert (P, sold, marg, br) == (1.0, {0, 1}, None, BRANCH_CAP) and vol == pytest.approx(0.2)
    # ties: three offers at 0.5, demand at 0.5 is 2: the first two (agent order 2, 0) fill, then
    P, sold, marg, fill, br, vol = run_auction([0.5, 0.9, 0.5, 0.5], [0.8, 1.0, 0.8, 0.8], 1.0, pbar, dt, 1.0, 0.0, 1.0)
    assert P == 0.5 and sold == {0, 2} and marg == 3 and fill == pytest.approx((2.0 - 1.6) / 0.8, rel=1e-14)
    # market orders (r = 0 and r < 0) sell at any price
    P, sold, marg, fill, br, vol = run_auction([0.0, -0.3, 0.7], [0.5, 0.5, 5.0], 1.0, pbar, dt, 1.0, 0.0, 1.0)
    assert P == 0.7 and sold == {0, 1} and marg == 2
    # budget: tau_d = 0.001 < dt, so D = K/(P dt) (with K tiny the budget still binds; the price scales with K)
    K = 1e-6
    P, sold, marg, fill, br, vol = run_auction([0.1, 0.2], [1e-4, 1e-4], K, pbar, dt, 0.001, 2.0, 1.0)
    assert (K / 0.001) * (pbar / P) ** 2 / P > K / (P * dt)
    assert P == pytest.approx(K / (2e-4 * dt), rel=1e-14) and sold == {0, 1}
    for case in ([0.5, 0.6, 0.8], [1.0, 1.0, 2.0], 1.0), ([0.5, 0.9, 0.5, 0.5], [0.8, 1.0, 0.8, 0.8], 1.0):
        check_against_reference(case[0], case[1], case[2], pbar, dt, 1.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------
# random offers against the brute-force reference
# ----------------------------------------------------------------------------------


def random_offers(rng, P_cap):
    m = int(rng.integers(1, 40))
    grid = rng.random() < 0.5  # reservation prices on a coarse grid: many ties
    r = np.round(rng.uniform(0.0, 1.3 * P_cap, m), 1) if grid else rng.uniform(-0.1, 1.3 * P_cap, m)
    r[rng.random(m) < 0.1] = 0.0  # market orders
    w = rng.choice([1e-3, 1e-2, 0.1, 0.5], m) if rng.random() < 0.5 else rng.uniform(1e-3, 1.0, m)
    return r, w


def test_auction_matches_brute_force_on_random_offers():
    """1,000 seeded random offer books (ties, market orders, offers above the cap, tiny to large K, gamma 0..5,
    tau_d 1e-3..10): the auction's price, sold set, marginal offer and fill equal the brute-force reference's."""
    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(1000):
        P_cap = float(rng.choice([1.0, 1.0, 1.3]))
        r, w = random_offers(rng, P_cap)
        K = float(10 ** rng.uniform(-7, 0.5))
        gamma = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.0, 5.0))
        tau_d = float(10 ** rng.uniform(-3, 1))
        dt = float(rng.choice([1 / 52, 1 / 12]))
        branch, rationed = check_against_reference(r, w, K, 0.93, dt, tau_d, gamma, P_cap)
        P = run_auction(r, w, K, 0.93, dt, tau_d, gamma, P_cap)[0]
        seen.add((branch, rationed, (K / tau_d) * (0.93 / P) ** gamma > K / dt))
    # the sample covers a root inside a step and at a jump, the cap, and both branches of D at a root
    assert {(BRANCH_ROOT, True), (BRANCH_ROOT, False), (BRANCH_CAP, False)} <= {s[:2] for s in seen}, seen
    assert {(BRANCH_ROOT, True, True), (BRANCH_ROOT, True, False)} <= seen, seen


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    r=st.lists(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.25]),
                         st.floats(-0.2, 1.5, allow_nan=False, allow_subnormal=False)), min_size=1, max_size=25),
    w_scale=st.floats(1e-4, 1.0),
    K=st.floats(1e-9, 3.0),
    gamma=st.floats(0.0, 6.0),
    tau_d=st.floats(1e-3, 10.0),
    P_cap=st.sampled_from([1.0, 1.2]),
)
def test_auction_matches_brute_force_hypothesis(r, w_scale, K, gamma, tau_d, P_cap):
    w = [w_scale * (1.0 + 0.5 * (i % 3)) for i in range(len(r))]
    check_against_reference(np.array(r), np.array(w), K, 0.93, 1 / 52, tau_d, gamma, P_cap)


# ----------------------------------------------------------------------------------
# large books: the sorted prefix against a sort of every offer
# ----------------------------------------------------------------------------------


def full_sort_auction(r, w, K, pbar, dt, params):
    """The auction with every offer sorted (numpy's stable sort, the crossing by a plain Python loop): the
    outcome :func:`uniform_price_auction` must give exactly when it sorts only the bottom of the book."""
    order = np.argsort(r, kind="stable")
    cum, m = 0.0, r.size
    for j, o in enumerate(order):
        if r[o] > params.P_cap:
            m = j
            break
        if r[o] > 0.0:
            p_seg = demand_inverse(cum, K, pbar, dt, params)
            if p_seg <= r[o]:
                return p_seg, order[:j], cum, BRANCH_ROOT, 0.0, None
            d = demand(r[o], K, pbar, dt, params)
            if cum + w[o] >= d:
                return r[o], order[:j], cum, BRANCH_ROOT, (d - cum) / w[o], o
        cum += w[o]
    p_seg = demand_inverse(cum, K, pbar, dt, params)
    if p_seg >= params.P_cap:
        return params.P_cap, order[:m], cum, BRANCH_CAP, 0.0, None
    return p_seg, order[:m], cum, BRANCH_ROOT, 0.0, None


def test_auction_sorted_prefix_equals_the_full_sort_on_large_books():
    """300 seeded books of 100 to 30,000 offers (logistic reservations around the price as in the engine, coarse
    grids with ties, market orders, offers above the cap, K from starved to flooded): price, branch, volume, fill
    and the sold offers in order are those of sorting every offer, bit for bit; ``order[:m]`` is a permutation."""
    rng = np.random.default_rng(7)
    branches = set()
    for _ in range(300):
        m = int(10 ** rng.uniform(2, 4.5))
        P_cap = float(rng.choice([1.0, 1.2]))
        if rng.random() < 0.5:
            r = 0.9 + 0.05 * rng.logistic(size=m)
        else:
            r = np.round(rng.uniform(-0.1, 1.3 * P_cap, m), int(rng.integers(1, 4)))
        r[rng.random(m) < 0.02] = 0.0
        w = rng.uniform(0.5, 1.5, m) / m * float(10 ** rng.uniform(-3, 0))
        K = float(10 ** rng.uniform(-6, 0.5))
        params = ClearingParams(float(10 ** rng.uniform(-1, 1)), float(rng.uniform(0.0, 3.0)), P_cap, 0.5)
        order = np.empty(m, np.int64)
        P, n_sold, vol, branch, fill = uniform_price_auction(r, w, m, K, 0.93, 1 / 13, params, order)
        P_f, sold_f, vol_f, branch_f, fill_f, marg_f = full_sort_auction(r, w, K, 0.93, 1 / 13, params)
        assert (P, branch, vol, fill) == (P_f, branch_f, vol_f, fill_f)
        assert np.array_equal(order[:n_sold], sold_f)
        if fill > 0.0:
            assert order[n_sold] == marg_f
        assert np.array_equal(np.sort(order), np.arange(m))
        branches.add((branch, fill > 0.0))
    assert {(BRANCH_ROOT, True), (BRANCH_ROOT, False), (BRANCH_CAP, False)} <= branches, branches


def test_auction_crossing_on_a_prefix_says_when_it_is_decided():
    """``_cross`` on the first n offers of the full sort: whenever it says the rest cannot change the outcome, the
    outcome is the full sort's; on a prefix too short to reach demand it says so (the auction then sorts all)."""
    rng = np.random.default_rng(8)
    params = ClearingParams(1.0, 1.0, 1.0, 0.5)
    undecided = 0
    for _ in range(200):
        m = int(rng.integers(50, 2000))
        r = 0.9 + 0.05 * rng.logistic(size=m)
        w = rng.uniform(0.5, 1.5, m) / m * float(10 ** rng.uniform(-2, 0))
        K = float(10 ** rng.uniform(-3, 0))
        full = full_sort_auction(r, w, K, 0.93, 1 / 13, params)
        order = np.argsort(r, kind="stable")
        n = int(rng.integers(0, m))
        t_next = float(r[order[n]])
        P, n_sold, vol, branch, fill, decided = _cross(r, w, n, t_next, K, 0.93, 1 / 13, params, order)
        if decided:
            assert (P, branch, vol, fill) == (full[0], full[3], full[2], full[4])
            assert np.array_equal(order[:n_sold], full[1])
        else:
            undecided += 1
            assert n_sold == n and full[1].size >= n  # the crossing lies at or past the prefix
    assert 0 < undecided < 200


# ----------------------------------------------------------------------------------
# the law of large numbers: the auction of N LPs converges to the mean-field clearing
# ----------------------------------------------------------------------------------

MU, SD = 0.9, 0.25  # liquidity of the LPs
C0, C1, L0 = 0.80, 0.20, 0.9  # continuation value C(L) = C0 + C1 (L - L0)
A, PHI, EPS = 0.97, 0.01, 0.02  # remaining-life factor, transaction cost, logit temperature (NAV)
DT, A_MAX, K, TAU_D, GAMMA, PBAR = 1 / 12, 4.0, 1.0, 1.0, 1.0, 0.93
Q_MAX = -math.expm1(-A_MAX * DT)
PARAMS = ClearingParams(TAU_D, GAMMA, 1.0, 0.5)


def mfg_price():
    """:func:`clear` on a fine quadrature of the density: candidates at the nodes, weight q_max m_i / dt."""
    x = np.linspace(MU - 9 * SD, MU + 9 * SD, 4001)
    m = np.exp(-0.5 * ((x - MU) / SD) ** 2)
    m /= m.sum()
    a = np.full(x.size, A)
    b = PHI + C0 + C1 * (x - L0)
    w = Q_MAX / DT * m
    return clear(a, b, w, x.size, EPS, K, PBAR, DT, PARAMS, 0.9, np.empty(x.size, np.int64))


def finite_n_price(N, rng):
    """One step of N LPs (NAV 1/N each): a sale process with probability q_max, a logistic taste shock, the
    reservation price r = (C(L) + phi - eps xi)/A (docs/model.md 2.8), the auction."""
    n_off = rng.binomial(N, Q_MAX)
    L = MU + SD * rng.standard_normal(n_off)
    u = rng.random(n_off)
    xi = np.log(u) - np.log1p(-u)
    r = (C0 + C1 * (L - L0) + PHI - EPS * xi) / A
    w = np.full(n_off, 1.0 / N / DT)
    order = np.empty(max(n_off, 1), np.int64)
    P, n_sold, vol, branch, fill = uniform_price_auction(r, w, n_off, K, PBAR, DT, PARAMS, order)
    return P, vol + fill * (w[0] if n_off else 0.0), branch


def test_auction_converges_to_the_mean_field_price():
    """Law of large numbers (fixed seed): the RMS gap to the mean-field price shrinks like N^(-1/2).

    Measured (40 replications at N = 1e3, 1e4, 1e5; 10 at N = 1e6): RMS gap 4.5e-3, 1.8e-3, 6.1e-4, 2.0e-4 around
    P_mfg = 0.82019, RMS * sqrt(N) = 0.14, 0.18, 0.19, 0.20; mean gaps -3.6e-5, 5.4e-4, 2.1e-5, 5.2e-6 (within
    2 standard errors)."""
    P_mfg, vol_mfg, br, _, _, _ = mfg_price()
    assert br == BRANCH_ROOT and 0.5 < P_mfg < 0.95
    assert vol_mfg == pytest.approx(demand_ref(P_mfg, K, PBAR, DT, TAU_D, GAMMA), rel=1e-10)
    rng = np.random.default_rng(2024)
    rms = {}
    for N, reps in ((1_000, 40), (10_000, 40), (100_000, 40), (1_000_000, 10)):
        out = np.array([finite_n_price(N, rng)[:2] for _ in range(reps)])
        gaps = out[:, 0] - P_mfg
        rms[N] = float(np.sqrt(np.mean(gaps ** 2)))
        # the expected volume (rationed offer included) is the demand at the auction's price
        for P, vol in out:
            assert vol == pytest.approx(demand_ref(P, K, PBAR, DT, TAU_D, GAMMA), rel=1e-10)
        # no bias beyond the noise (4 standard errors, plus an O(1/N) allowance)
        assert abs(np.mean(gaps)) <= 4 * rms[N] / math.sqrt(reps) + 5.0 / N
    scaled = [rms[N] * math.sqrt(N) for N in rms]
    assert max(scaled) / min(scaled) < 2.0, rms  # RMS ~ C / sqrt(N)
    assert rms[1_000_000] < 1e-3 and rms[1_000_000] < rms[1_000] / 10, rms
