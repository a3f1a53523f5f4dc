"""Validation of the clearing market of the LP-exit MFG (docs/model.md 2.4, 2.5, 2.9).

* one-step clearing against an independent scalar root (scipy's ``brentq``) of
  ``S(P) = D(P, K)`` to 1e-12, for the reference root finder :func:`clear` and for the fast
  band solver inside :func:`clearing_forward`: a point mass of LPs (logit supply in closed
  form), a Gaussian density under the hard rule (step supply; normal CDF in the continuum),
  the ``P_cap`` branch, the budget branch of ``D``, ``gamma = 0`` and ``gamma > 0``, the idle
  branch;
* the fast band solver against :func:`clear` on random candidate sets;
* along full solves: every step either clears (``P < P_cap``, volume = ``D``) or sits at the cap
  (volume <= ``D``); buyer capital is conserved (``K^n = K^0 + refills - spending``, and
  ``- cuts`` after a capital-cut event) and stays positive; the reported volume and spend are
  those of the realised exits;
* the mechanisms the market is built to carry (docs/model.md 2.4): a buyer-capital shock lowers
  price and volume, a seller-liquidity shock lowers the price and raises volume;
* SL against FD: the equilibrium prices agree to the discretisation error, which shrinks.

Bugs this file found (fixed): the band solver's overflow at small ``eps`` or a far guess, a
division by zero of ``demand_inverse`` at a subnormal supply, the hard rule's trade not rationed
to demand.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit, ndtr

from mfg.lp_exit import Grid, LPExitModel, ShockEvent, SolverOptions, solve
from mfg.lp_exit.baselines import solve_baseline
from mfg.lp_exit.clearing import (
    BRANCH_CAP,
    BRANCH_CLOSED,
    BRANCH_IDLE,
    BRANCH_ROOT,
    ClearingParams,
    ForwardOut,
    ForwardStack,
    clear,
    clearing_forward,
)
from mfg.lp_exit.kernels import Mesh
from mfg.lp_exit.scenarios import solve_scenario

pytestmark = pytest.mark.kernels  # run again with numba's bounds checking in CI (.ci/run)

PBAR = 0.93
DT = 1.0 / 52.0


# ----------------------------------------------------------------------------------
# independent references (plain Python / numpy / scipy; nothing from the code under test)
# ----------------------------------------------------------------------------------


def demand_ref(P, K, pbar, dt, tau_d, gamma):
    """``D(P, K) = min((K/tau_d)(pbar/P)^gamma / P, K/(P dt))`` (docs/model.md 2.4)."""
    return min((K / tau_d) * (pbar / P) ** gamma / P, K / (P * dt))


def budget_binds(P, pbar, dt, tau_d, gamma):
    """Is ``K/(P dt)`` the smaller term of ``D`` at ``P``?  (Both terms carry ``K/P``: compare the rest.)"""
    return (pbar / P) ** gamma / tau_d > 1.0 / dt


def logit_supply_ref(P, a, b, w, eps):
    return float(np.sum(w * expit((P * a - b) / eps)))


def hard_supply_ref(P, a, b, w):
    return float(np.sum(w[P * a > b]))


def root_ref(h, P_cap):
    """``inf{P in (0, P_cap] : h(P) >= 0}`` for a non-decreasing ``h`` (``P_cap`` if ``h(P_cap) < 0``) by brentq.

    brentq keeps a sign-change bracket, so at a jump of ``h`` it converges to the jump."""
    if h(P_cap) < 0.0:
        return P_cap
    lo = P_cap
    while h(lo) >= 0.0:
        lo *= 0.5
    return brentq(h, lo, P_cap, xtol=1e-300, rtol=1e-15, maxiter=2000)


def rel(x, y):
    return abs(x - y) / abs(y)


# ----------------------------------------------------------------------------------
# one step of the forward sweep (the fast band solver) on hand-built populations
# ----------------------------------------------------------------------------------


def one_step(pops, x, eps, K, params, pbar, dt, guess, Kbar=0.05, method=0):
    """Run :func:`clearing_forward` on a two-step window (step 0 trades, step 1 is closed).

    ``pops``: dicts with ``m`` (nodal masses), ``C`` (continuation values at the nodes) and optional
    ``weight, q_max, life, phi, dfac``.  Returns the :class:`ForwardOut`."""
    n_pop, n_L, n_t = len(pops), x.size, 2

    def col(key, default):
        return np.array([float(p.get(key, default)) for p in pops])

    stack = ForwardStack(
        n_first=np.zeros(n_pop, np.int64), n_last=np.ones(n_pop, np.int64), matures=np.zeros(n_pop, np.bool_),
        weights=col("weight", 1.0), q_max=np.repeat(col("q_max", 0.1)[:, None], n_t, axis=1),
        kappa_target=np.zeros((n_pop, n_t)), life=np.repeat(col("life", 1.0)[:, None], n_t, axis=1),
        sigma=np.full((n_pop, n_t), 0.05), lam=np.zeros(n_pop), alpha=np.zeros(n_pop), drift_a=np.zeros(n_pop),
        phi=col("phi", 0.0), dfac=np.array([p.get("dfac", np.ones(n_L)) for p in pops], dtype=float), x=x,
        pbar=np.full(n_t, float(pbar)), Kbar=np.full(n_t, float(Kbar)))
    C = np.zeros((n_pop, n_t, n_L))
    for k, p in enumerate(pops):
        C[k, 0] = p["C"]
    m0 = np.array([p["m"] for p in pops], dtype=float)
    out = ForwardOut(price=np.empty(n_t), volume=np.zeros(n_t), withdrawn=np.zeros(n_t), capital=np.empty(n_t),
                     spend=np.zeros(n_t), residual=np.zeros(n_t), branch=np.zeros(n_t, np.int64),
                     mean_field=np.empty(n_t), exits=np.zeros((n_pop, n_t)), vintage_price=np.zeros((n_pop, n_t)),
                     stats=np.zeros((n_pop, 3, n_t)), edge=np.zeros(n_pop), q=np.zeros((n_pop, n_t, n_L)),
                     m=np.zeros((n_pop, n_t, n_L)))
    mesh = Mesh(float(x[0]), float(x[1] - x[0]), float(dt))
    args = [stack, params, mesh, C, m0, np.full(n_t, float(guess)), float(eps), float(K), method]
    if "diagnostics" in inspect.signature(clearing_forward.py_func).parameters:
        args.append(True)
    clearing_forward(*args, out)
    return out


def candidates(pops, dt):
    """The candidate sellers ``(a, b, w)`` of docs/model.md 2.4 (nodes with mass), as :func:`clear` takes them."""
    a, b, w = [], [], []
    for p in pops:
        n_L = len(p["m"])
        dfac = p.get("dfac", np.ones(n_L))
        for i in range(n_L):
            if p["m"][i] == 0.0:
                continue
            a.append(p.get("life", 1.0) * dfac[i])
            b.append(p.get("phi", 0.0) + p["C"][i])
            w.append(p.get("weight", 1.0) * p.get("q_max", 0.1) / dt * p["m"][i])
    return np.array(a, dtype=float), np.array(b, dtype=float), np.array(w, dtype=float)


def run_clear(a, b, w, eps, K, pbar, dt, params, guess):
    return clear(a, b, w, a.size, float(eps), float(K), float(pbar), float(dt), params, float(guess),
                 np.empty(max(a.size, 1), np.int64))


# ----------------------------------------------------------------------------------
# 1a. a point mass of LPs: S(P) = w q_max logistic((P A dfac - phi - C)/eps) / dt
# ----------------------------------------------------------------------------------

# (name, tau_d, gamma, K, C, phi, dfac at the node, life A, eps, expected branch, budget binds at the price)
POINT_CASES = [
    ("deploy-gamma0", 2.5, 0.0, 0.04, 0.86, 0.01, 1.0, 0.97, 1e-3, BRANCH_ROOT, False),
    ("deploy-gamma1.5", 2.5, 1.5, 0.04, 0.80, 0.01, 1.0, 0.90, 1e-3, BRANCH_ROOT, False),
    ("distress-wide-logit", 1.0, 1.0, 0.02, 0.55, 0.02, 0.8, 0.95, 5e-2, BRANCH_ROOT, False),
    ("budget-small-tau_d", 0.005, 0.0, 0.04, 0.86, 0.01, 1.0, 0.97, 1e-3, BRANCH_ROOT, True),
    ("budget-large-gamma", 2.5, 20.0, 1e-4, 0.40, 0.01, 1.0, 0.95, 1e-3, BRANCH_ROOT, True),
    ("cap", 2.5, 1.0, 0.04, 0.975, 0.01, 1.0, 0.97, 1e-3, BRANCH_CAP, False),
    ("cap-sharp", 2.5, 0.0, 0.04, 0.9906, 0.01, 1.0, 1.0, 1e-4, BRANCH_CAP, False),
]


@pytest.mark.parametrize("case", POINT_CASES, ids=[c[0] for c in POINT_CASES])
def test_point_mass_clear_matches_the_scalar_root(case):
    """The reference root finder :func:`clear` returns brentq's root of the closed-form supply against D (1e-12)
    from any guess, on the intended branch (root or cap, deployment or budget branch of D)."""
    _, tau_d, gamma, K, C0, phi, dfac, life, eps, branch, budget = case
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    q_max = -math.expm1(-4.0 * DT)
    weight = 0.7
    W = weight * q_max / DT

    def h(P):
        return W * expit((P * life * dfac - phi - C0) / eps) - demand_ref(P, K, PBAR, DT, tau_d, gamma)

    P_ref = root_ref(h, 1.0)
    S_ref = W * expit((P_ref * life * dfac - phi - C0) / eps)
    D_ref = demand_ref(P_ref, K, PBAR, DT, tau_d, gamma)
    if branch == BRANCH_CAP:
        assert P_ref == 1.0 and S_ref < D_ref
    else:
        assert P_ref < 1.0
        assert budget_binds(P_ref, PBAR, DT, tau_d, gamma) == budget  # the case exercises the intended branch of D

    # the reference root finder on the single candidate
    a, b, w = np.array([life * dfac]), np.array([phi + C0]), np.array([W])
    for guess in (0.05, 0.5, P_ref, 1.0):
        P, vol, br, _, _, _ = run_clear(a, b, w, eps, K, PBAR, DT, params, guess)
        assert br == branch
        assert rel(P, P_ref) <= 1e-12, (guess, P, P_ref)
        assert rel(vol, S_ref) <= 1e-9
        if branch == BRANCH_ROOT:
            assert rel(vol, demand_ref(P, K, PBAR, DT, tau_d, gamma)) <= 1e-10
        else:
            assert vol <= demand_ref(P, K, PBAR, DT, tau_d, gamma)


@pytest.mark.parametrize("case", POINT_CASES, ids=[c[0] for c in POINT_CASES])
def test_point_mass_fast_band_solver_clears_at_the_scalar_root(case):
    """The fast band solver inside :func:`clearing_forward` (a point mass on one node of a population's grid)
    returns brentq's root to 1e-12, trades the volume, pays its price and refills K from the post-spend balance.
    Guesses: far ones (0.05, 0.5) where eps >= 1e-3; the calm price, the root and the cap always (far guesses at
    eps = 1e-4 hit the band solver's overflow: test_fast_band_solver_small_eps_or_far_guess)."""
    _, tau_d, gamma, K, C0, phi, dfac, life, eps, branch, budget = case
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    q_max = -math.expm1(-4.0 * DT)
    weight = 0.7
    W = weight * q_max / DT

    def h(P):
        return W * expit((P * life * dfac - phi - C0) / eps) - demand_ref(P, K, PBAR, DT, tau_d, gamma)

    P_ref = root_ref(h, 1.0)
    S_ref = W * expit((P_ref * life * dfac - phi - C0) / eps)
    x = np.linspace(0.0, 2.0, 21)
    m = np.zeros(x.size)
    m[7] = 1.0
    dfac_row = np.ones(x.size)
    dfac_row[7] = dfac
    pop = dict(weight=weight, q_max=q_max, life=life, phi=phi, dfac=dfac_row, C=np.full(x.size, C0), m=m)
    guesses = (0.05, 0.5, PBAR, P_ref, 1.0) if eps >= 1e-3 else (PBAR, P_ref, 1.0)
    for guess in guesses:
        out = one_step([pop], x, eps, K, params, PBAR, DT, guess)
        assert out.branch[0] == branch and out.branch[1] == BRANCH_CLOSED
        assert rel(out.price[0], P_ref) <= 1e-12, (guess, out.price[0], P_ref)
        assert rel(out.volume[0], S_ref) <= 1e-9
        # the trade is the volume, the spend its price (docs/model.md 2.4), K refills from the post-spend balance
        assert rel(out.exits[0, 0] * weight / DT, out.volume[0]) <= 1e-12
        spend = weight * out.price[0] * life * dfac * out.exits[0, 0]
        assert rel(out.spend[0], spend) <= 1e-12
        left = K - out.spend[0]
        assert out.capital[1] == pytest.approx(left + DT * 0.5 * (0.05 - left), rel=1e-14)
        assert 0.0 <= out.spend[0] <= K


# ----------------------------------------------------------------------------------
# 1b. a Gaussian density under the hard rule: C(L) crosses the exit value at one level
# ----------------------------------------------------------------------------------

MU, SD = 0.9, 0.25
C0, C1, L0 = 0.80, 0.20, 0.9  # C(L) = C0 + C1 (L - L0): the more liquid, the more holding is worth


def gaussian_pop(n_L, life=0.97, phi=0.01, weight=1.0, q_max=None):
    x = np.linspace(MU - 6 * SD, MU + 6 * SD, n_L)
    m = np.exp(-0.5 * ((x - MU) / SD) ** 2)
    m /= m.sum()
    q_max = -math.expm1(-4.0 * DT) if q_max is None else q_max
    return x, dict(weight=weight, q_max=q_max, life=life, phi=phi, C=C0 + C1 * (x - L0), m=m)


# (tau_d, gamma, K): deployment branch gamma = 0 and > 0, budget branch, the cap
HARD_CASES = [(2.5, 0.0, 0.04), (2.5, 2.0, 0.04), (0.005, 0.0, 0.004), (2.5, 1.0, 2.0)]


@pytest.mark.parametrize("tau_d, gamma, K", HARD_CASES)
def test_gaussian_hard_rule_is_the_generalised_root(tau_d, gamma, K):
    """eps = 0: the price is brentq's root of the step supply against D (1e-12); the volume is D at a root, the
    rationed fraction of the marginal group makes up the gap; at the cap the volume is the supply there."""
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    x, pop = gaussian_pop(201)
    a, b, w = candidates([pop], DT)

    def h(P):
        return hard_supply_ref(P, a, b, w) - demand_ref(P, K, PBAR, DT, tau_d, gamma)

    P_ref = root_ref(h, 1.0)
    P, vol, br, _, marginal, fill = run_clear(a, b, w, 0.0, K, PBAR, DT, params, 0.9)
    assert rel(P, P_ref) <= 1e-12, (P, P_ref)
    D = demand_ref(P, K, PBAR, DT, tau_d, gamma)
    if P_ref < 1.0:
        assert br == BRANCH_ROOT
        assert rel(vol, D) <= 1e-12
        below = hard_supply_ref(P, a, b, w)  # the groups strictly below the price
        if np.isfinite(marginal):  # the crossing is at a jump: the marginal group is rationed
            g = w[b / a == marginal].sum()
            assert marginal == pytest.approx(P, rel=1e-15)
            assert 0.0 <= fill <= 1.0
            assert below + fill * g == pytest.approx(D, rel=1e-12)
        else:
            assert below == pytest.approx(D, rel=1e-12)
        if tau_d < DT:
            assert budget_binds(P, PBAR, DT, tau_d, gamma)
    else:
        assert br == BRANCH_CAP
        assert vol == pytest.approx(hard_supply_ref(1.0, a, b, w), rel=1e-14) and vol <= D


@pytest.mark.parametrize("tau_d, gamma, K", HARD_CASES)
@pytest.mark.parametrize("eps", [1e-2, 1e-3])
def test_gaussian_logit_clears_at_the_scalar_root(tau_d, gamma, K, eps):
    """eps > 0 on the Gaussian population: clear() and the fast band solver (guess pbar, as the solver's first
    iterate) return brentq's root of the logit supply against D to 1e-12; volume = D at a root, <= D at the cap."""
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    x, pop = gaussian_pop(201)
    a, b, w = candidates([pop], DT)

    def h(P):
        return logit_supply_ref(P, a, b, w, eps) - demand_ref(P, K, PBAR, DT, tau_d, gamma)

    P_ref = root_ref(h, 1.0)
    P, vol, br, _, _, _ = run_clear(a, b, w, eps, K, PBAR, DT, params, PBAR)
    out = one_step([pop], x, eps, K, params, PBAR, DT, PBAR)
    for P_, vol_, br_ in ((P, vol, br), (out.price[0], out.volume[0], out.branch[0])):
        assert rel(P_, P_ref) <= 1e-12, (P_, P_ref)
        D = demand_ref(P_, K, PBAR, DT, tau_d, gamma)
        if P_ref < 1.0:
            assert br_ == BRANCH_ROOT and rel(vol_, D) <= 1e-10
        else:
            assert br_ == BRANCH_CAP and vol_ <= D
            assert vol_ == pytest.approx(logit_supply_ref(1.0, a, b, w, eps), rel=1e-12)


def test_gaussian_hard_rule_converges_to_the_normal_cdf_root():
    """In the continuum the hard-rule supply is ``W Phi((L*(P) - mu)/sd)`` with ``C(L*) = P A - phi``; the grid's
    generalised root sits at a node's threshold ``(phi + C(L_i))/A`` and is within one node spacing of thresholds,
    ``C1 dL / A``, of the scalar root of that supply against D, so it converges at first order in dL.

    Measured (tau_d = 2.5, gamma = 1, K = 0.04, P_cdf = 0.71008): P_grid - P_cdf = 1.26e-3 (n_L = 101 and 201: the
    marginal node is shared), -2.8e-4 (401 and 801), 1.0e-4 (1601); the bound C1 dL / A = 3.1e-3 ... 1.9e-4."""
    tau_d, gamma, K = 2.5, 1.0, 0.04
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    _, pop = gaussian_pop(11)
    life, phi, W = pop["life"], pop["phi"], pop["weight"] * pop["q_max"] / DT

    def h_cdf(P):
        L_star = L0 + (P * life - phi - C0) / C1
        return W * ndtr((L_star - MU) / SD) - demand_ref(P, K, PBAR, DT, tau_d, gamma)

    P_cdf = root_ref(h_cdf, 1.0)
    assert 0.5 < P_cdf < 0.99
    for n_L in (101, 201, 401, 801, 1601):
        x, pop = gaussian_pop(n_L)
        a, b, w = candidates([pop], DT)
        P = run_clear(a, b, w, 0.0, K, PBAR, DT, params, 0.9)[0]
        assert abs(P - P_cdf) <= C1 * (x[1] - x[0]) / life, (n_L, P - P_cdf)


def test_logit_converges_to_the_hard_rule_as_eps_vanishes():
    """On the grid the logit price tends to the hard rule's generalised root: |P_eps - P_0| <= 50 eps / A
    (the rationed group's logit argument is logit(fill) there), eps = 1e-3 ... 1e-8 (reference root finder; the
    fast solver agrees with it at 1e-3 and 1e-4)."""
    tau_d, gamma, K = 2.5, 1.0, 0.04
    params = ClearingParams(tau_d, gamma, 1.0, 0.5)
    x, pop = gaussian_pop(201)
    a, b, w = candidates([pop], DT)
    P0 = run_clear(a, b, w, 0.0, K, PBAR, DT, params, 0.9)[0]
    for eps in (1e-3, 1e-4, 1e-6, 1e-8):
        P = run_clear(a, b, w, eps, K, PBAR, DT, params, 0.9)[0]
        assert abs(P - P0) <= 50 * eps / pop["life"], (eps, P, P0)
        if eps >= 1e-4:  # below, the fast band solver overflows (test_fast_band_solver_small_eps_or_far_guess)
            P_fast = one_step([pop], x, eps, K, params, PBAR, DT, 0.9).price[0]
            assert rel(P_fast, P) <= 1e-12


def test_idle_branch():
    """No seller: the price is P_cap, nothing trades and capital refills (docs/model.md 2.4)."""
    params = ClearingParams(2.5, 1.0, 1.0, 0.5)
    K = 0.03
    P, vol, br, _, _, _ = run_clear(np.empty(0), np.empty(0), np.empty(0), 1e-3, K, PBAR, DT, params, 0.9)
    assert (P, vol, br) == (1.0, 0.0, BRANCH_IDLE)
    P, vol, br, _, _, _ = run_clear(np.empty(0), np.empty(0), np.empty(0), 0.0, K, PBAR, DT, params, 0.9)
    assert (P, vol, br) == (1.0, 0.0, BRANCH_IDLE)
    # every LP's reservation is far above any price up to the cap: the fast path is idle
    x, pop = gaussian_pop(51)
    pop["C"] = pop["C"] + 1.0
    for guess in (0.1, 0.9, 1.0):
        out = one_step([pop], x, 1e-3, K, params, PBAR, DT, guess)
        assert out.price[0] == 1.0 and out.volume[0] == 0.0 and out.branch[0] == BRANCH_IDLE
        assert out.spend[0] == 0.0 and out.exits[0, 0] == 0.0
        assert out.capital[1] == pytest.approx(K + DT * 0.5 * (0.05 - K), rel=1e-15)
    # the same with candidates handed to clear (logit and hard rule): the cap, nothing sold
    a, b, w = candidates([pop], DT)
    for eps in (1e-3, 0.0):
        P, vol, br, _, _, _ = run_clear(a, b, w, eps, K, PBAR, DT, params, 0.9)
        assert P == 1.0 and vol == 0.0 and br in (BRANCH_CAP, BRANCH_IDLE)


# ----------------------------------------------------------------------------------
# bugs of the hard rule (eps = 0) found here
# ----------------------------------------------------------------------------------


def test_hard_rule_with_a_negligible_group():
    """A group of sellers carrying a negligible (subnormal) weight does not change the generalised root."""
    params = ClearingParams(2.5, 1.0, 1.0, 0.5)
    a, b, w = np.array([1.0, 1.0]), np.array([0.5, 0.9]), np.array([5e-324, 1.0])

    def h(P):
        return hard_supply_ref(P, a, b, w) - demand_ref(P, 0.04, PBAR, DT, 2.5, 1.0)

    P_ref = root_ref(h, 1.0)
    assert P_ref == pytest.approx(0.9, rel=1e-14)  # the jump of the second group
    P = run_clear(a, b, w, 0.0, 0.04, PBAR, DT, params, 0.9)[0]
    assert rel(P, P_ref) <= 1e-12


def test_hard_rule_trade_is_rationed_to_demand():
    """eps = 0, the crossing at the jump of one group: the realised volume of the trade equals the cleared volume
    (= demand), the spend stays within K and capital stays positive (docs/model.md 2.4)."""
    params = ClearingParams(2.5, 0.0, 1.0, 0.5)
    K = 0.04
    # a deal-price multiplier and reservation with fl(b/a) * a > b (and b/a inside (0, P_cap))
    a_, b_ = 0.6612480098835151, 0.20427905122369328
    assert (b_ / a_) * a_ > b_
    x = np.linspace(0.0, 1.0, 3)
    pop = dict(weight=1.0, q_max=0.5, life=a_, phi=0.0, C=np.full(3, b_), m=np.array([0.0, 1.0, 0.0]))
    out = one_step([pop], x, 0.0, K, params, PBAR, DT, 0.9)
    D = demand_ref(out.price[0], K, PBAR, DT, 2.5, 0.0)
    assert out.price[0] == b_ / a_ and out.branch[0] == BRANCH_ROOT
    assert out.volume[0] == pytest.approx(D, rel=1e-12)
    assert out.exits[0, 0] / DT == pytest.approx(D, rel=1e-12)  # realised: 26 NAV/yr against D = 0.052
    assert out.spend[0] <= K
    assert out.capital[1] > 0.0


def test_hard_rule_trade_is_rationed_to_demand_when_the_product_rounds_down():
    """The same trade with fl(b/a)*a <= b: rationed to demand, spend within K (the twin of the test above)."""
    params = ClearingParams(2.5, 0.0, 1.0, 0.5)
    K = 0.04
    a_, b_ = 0.75, 0.3
    assert (b_ / a_) * a_ <= b_
    x = np.linspace(0.0, 1.0, 3)
    pop = dict(weight=1.0, q_max=0.5, life=a_, phi=0.0, C=np.full(3, b_), m=np.array([0.0, 1.0, 0.0]))
    out = one_step([pop], x, 0.0, K, params, PBAR, DT, 0.9)
    D = demand_ref(out.price[0], K, PBAR, DT, 2.5, 0.0)
    assert out.price[0] == b_ / a_
    assert out.exits[0, 0] / DT == pytest.approx(D, rel=1e-12)
    assert out.spend[0] <= K and out.capital[1] > 0.0


# ----------------------------------------------------------------------------------
# 4. the fast band solver against the reference root finder on random candidate sets
# ----------------------------------------------------------------------------------


def random_problem(rng, log_eps=(-3.0, -1.0), log_guess=(-1.5, 0.0)):
    n_pop = int(rng.integers(1, 4))
    n_L = int(rng.integers(3, 60))
    x = np.linspace(-1.0, 3.0, n_L)
    P_cap = float(rng.choice([1.0, 1.0, 1.2]))
    target = float(rng.uniform(0.2, 1.1 * P_cap))  # where the reservations sit
    pops = []
    for _ in range(n_pop):
        m = rng.exponential(1.0, n_L) * (rng.random(n_L) < 0.8)
        if m.sum() == 0.0:
            m[0] = 1.0
        m /= m.sum()
        life = float(rng.uniform(0.8, 1.0))
        dfac = np.ones(n_L) if rng.random() < 0.5 else np.clip(1.0 - rng.uniform(0, 0.5) * np.maximum(0.5 - x, 0),
                                                              0.0, 1.0)
        spread = float(10 ** rng.uniform(-4, -0.5))
        C = target * life + spread * rng.standard_normal(n_L) + float(rng.uniform(0, 0.3)) * (x - 1.0)
        pops.append(dict(weight=float(rng.uniform(0.1, 1.0)), q_max=float(rng.uniform(0.01, 0.5)), life=life,
                         phi=float(rng.uniform(0.0, 0.03)), dfac=dfac, C=C, m=m))
    eps = float(10 ** rng.uniform(*log_eps))
    gamma = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.0, 4.0))
    tau_d = float(10 ** rng.uniform(-2.5, 1))
    dt = float(rng.choice([1 / 52, 1 / 26, 1 / 12]))
    K = float(10 ** rng.uniform(-4, -0.5))
    guess = float(10 ** rng.uniform(*log_guess)) * P_cap
    return pops, x, eps, ClearingParams(tau_d, gamma, P_cap, 0.5), dt, K, guess


def compare_fast_with_clear(rng, n, **kw):
    seen = set()
    worst = 0.0
    for _ in range(n):
        pops, x, eps, params, dt, K, guess = random_problem(rng, **kw)
        a, b, w = candidates(pops, dt)
        P_ref, vol_ref, br_ref, _, _, _ = run_clear(a, b, w, eps, K, PBAR, dt, params, guess)
        out = one_step(pops, x, eps, K, params, PBAR, dt, guess)
        P, vol, br = out.price[0], out.volume[0], out.branch[0]
        worst = max(worst, rel(P, P_ref))
        assert rel(P, P_ref) <= 1e-12, (eps, guess, P, P_ref, br, br_ref)
        if br_ref == BRANCH_ROOT:
            assert br == BRANCH_ROOT
            D = demand_ref(P, K, PBAR, dt, params.tau_d, params.gamma)
            assert rel(vol, D) <= 1e-10 and rel(vol_ref, D) <= 1e-10
            seen.add(("root", budget_binds(P, PBAR, dt, params.tau_d, params.gamma)))
        else:
            assert br in (BRANCH_CAP, BRANCH_IDLE) and P == params.P_cap
            assert vol <= demand_ref(P, K, PBAR, dt, params.tau_d, params.gamma)
            assert vol == pytest.approx(vol_ref, rel=1e-9, abs=1e-300)
            seen.add(("cap", vol > 0.0))
    return seen, worst


def test_fast_band_solver_matches_clear_on_random_candidate_sets():
    """300 seeded random problems (1-3 populations, distress factors, eps 1e-3..1e-1, gamma 0..4, tau_d
    0.003..10, the budget and the cap branches, guesses 0.03..1 P_cap): same price to 1e-12, same branch,
    volume = D at a root.  Measured: worst relative price gap 1.8e-15."""
    seen, worst = compare_fast_with_clear(np.random.default_rng(20240611), 300)
    assert {("root", False), ("root", True), ("cap", True)} <= seen, seen  # both branches of D, and the cap
    assert worst <= 1e-12


def test_fast_band_solver_matches_clear_at_small_eps():
    """The same comparison at eps 1e-5 .. 1e-3 (docs/model.md 2.5 recommends 1e-4 or 1e-5 for hard exits)."""
    compare_fast_with_clear(np.random.default_rng(20240611), 300, log_eps=(-5.0, -3.0))


@pytest.mark.parametrize("which", ["point-mass-eps1e-4-guess0.5", "gaussian-eps1e-5-guess-pbar"])
def test_fast_band_solver_small_eps_or_far_guess(which):
    """Minimal reproducers.  (1) one point mass, C = 0.8, A = 1, eps = 1e-4, guess 0.5: clear() gives 0.79949,
    the fast path 0.54939 with volume NaN.  (2) the Gaussian population of test_gaussian_hard_rule_*, eps = 1e-5,
    guess = pbar = 0.93 (the solver's first iterate): clear() 0.71134, the fast path 0.70999 with volume NaN."""
    params = ClearingParams(2.5, 1.0, 1.0, 0.5)
    if which.startswith("point"):
        x = np.linspace(0.0, 1.0, 3)
        pop = dict(weight=1.0, q_max=-math.expm1(-4 * DT), life=1.0, phi=0.0, C=np.full(3, 0.8),
                   m=np.array([0.0, 1.0, 0.0]))
        eps, guess = 1e-4, 0.5
    else:
        x, pop = gaussian_pop(201)
        eps, guess = 1e-5, PBAR
    a, b, w = candidates([pop], DT)
    P_ref = run_clear(a, b, w, eps, 0.04, PBAR, DT, params, guess)[0]
    out = one_step([pop], x, eps, 0.04, params, PBAR, DT, guess)
    assert np.isfinite(out.volume[0])
    assert rel(out.price[0], P_ref) <= 1e-12


# ----------------------------------------------------------------------------------
# full solves of a calm-like clearing market
# ----------------------------------------------------------------------------------

MARKET = dict(kind="clearing", pbar=0.93, tau_d=2.5, gamma=1.0, P_cap=1.0, K0=0.04, Kbar=0.04, theta_K=0.5,
              a_tail=0.15, tau_tail=2.0)
GRID = Grid(L_min=-1.5, L_max=3.5, n_L=121, dt=1 / 26)
OPTIONS = SolverOptions(temperature=1e-3, tol=1e-10, max_iter=100)
SHOCK_T = 2017.0


# the six populations of the calm market as first shipped (mfg/lp_exit/library/calm.toml at commit dad4210: three
# LP types, two vintages each), written out here so that recalibrations of the shipped files do not move these tests
_TYPES = {
    "pension": (dict(kappa=1.0, lbar=1.0, sigma=0.3, lam=0.2, alpha=0.3, eta=0.9, ell=0.75, y=0.05, r=0.08, g=0.03,
                     a_max=4.0, initial_mean=1.0, seasonal=dict(amplitude=-0.15, start=0.75, end=1.0)),
                0.225, (2011.0, 2016.0)),
    "endowment": (dict(kappa=0.8, lbar=1.0, sigma=0.35, lam=0.3, alpha=0.5, eta=0.8, ell=0.65, y=0.05, r=0.08, g=0.03,
                       a_max=4.0, initial_mean=1.0), 0.175, (2013.0, 2018.0)),
    "sovereign": (dict(kappa=0.5, lbar=1.2, sigma=0.2, lam=0.1, alpha=0.1, eta=0.3, ell=0.5, y=0.04, r=0.06, g=0.02,
                       a_max=2.0, initial_mean=1.2), 0.1, (2012.0, 2017.0)),
}


def calm_clearing() -> LPExitModel:
    """The calm market of 2015-2025 with the clearing market ``MARKET``."""
    pops = [dict(name=f"{kind}-{int(v)}", lp_type=kind, vintage=v, life=12.0, weight=weight, phi=0.01, initial_std=0.2,
                 **fields)
            for kind, (fields, weight, vintages) in _TYPES.items() for v in vintages]
    return LPExitModel.model_validate(dict(start=2015.0, end=2025.0, market=dict(MARKET), populations=pops))


@pytest.fixture(scope="module")
def model():
    return calm_clearing()


@pytest.fixture(scope="module")
def calm(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged, no boundary mass
        res = solve(model, GRID, OPTIONS)
    assert res.converged
    return res


@pytest.fixture(scope="module")
def scenarios(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = solve_scenario(model, GRID, OPTIONS, [])
        cut = solve_scenario(model, GRID, OPTIONS, [ShockEvent(time=SHOCK_T, capital_cut=0.6)])
        deep = solve_scenario(model, GRID, OPTIONS, [ShockEvent(time=SHOCK_T, capital_cut=0.95, Kbar_factor=0.5,
                                                                duration=1.0),
                                                     ShockEvent(time=SHOCK_T + 2.0, capital_cut=0.9)])
        liq = solve_scenario(model, GRID, OPTIONS, [ShockEvent(time=SHOCK_T, liquidity_shift=-0.4)])
    for r in (base, cut, deep, liq):
        assert r.converged
    return dict(base=base, cut=cut, deep=deep, liq=liq)


def check_clearing_steps(res, tol=1e-10):
    """docs/model.md 2.4 at every step but the last: P < P_cap and volume = D(P, K), or P = P_cap and
    volume <= D(P_cap, K); the last step is closed."""
    pbar, dt, P_cap, tau_d, gamma = res.inputs.pbar, res.dt, MARKET["P_cap"], MARKET["tau_d"], MARKET["gamma"]
    N = res.t.size - 1
    assert res.market_branch[N] == BRANCH_CLOSED
    n_root = n_cap = 0
    for n in range(N):
        P, V, K, br = res.price[n], res.sell_flow[n], res.buyer_capital[n], res.market_branch[n]
        D = demand_ref(P, K, pbar[n], dt, tau_d, gamma)
        if br == BRANCH_ROOT:
            assert 0.0 < P < P_cap
            assert abs(V - D) <= tol * D, (n, V, D)
            assert res.clearing_residual[n] <= tol
            n_root += 1
        else:
            assert br in (BRANCH_CAP, BRANCH_IDLE), (n, br)
            assert P == P_cap
            assert V <= D * (1 + 1e-14), (n, V, D)
            n_cap += 1
    return n_root, n_cap


def check_capital(res, cuts=()):
    """``K^n = K^0 + sum refills - sum spending - sum cuts`` with ``refill^j = dt theta_K (Kbar^j - (K^j - spend^j))``
    (docs/model.md 2.4), reconstructed from the result; ``cuts``: ``(step, fraction)`` applied at the step's start.
    Also ``0 <= spend^n <= K^n`` and ``K^n >= (1 - cut) theta_K dt min Kbar > 0``."""
    K, spend, Kbar, dt, th = res.buyer_capital, res.spend, res.inputs.Kbar, res.dt, MARKET["theta_K"]
    N = K.size - 1
    refill = dt * th * (Kbar[:N] - (K[:N] - spend[:N]))
    cut_at = dict(cuts)
    cut_amount = np.zeros(N + 1)  # cut^{n+1} = fraction * (K^n - spend^n + refill^n), the pre-shock K^{n+1}
    for n in range(N):
        cut_amount[n + 1] = cut_at.get(n + 1, 0.0) * (K[n] - spend[n] + refill[n])
    cum = K[0] + np.concatenate([[0.0], np.cumsum(refill)]) - np.concatenate([[0.0], np.cumsum(spend[:N])]) \
        - np.cumsum(cut_amount)
    scale = max(float(np.max(np.abs(K))), float(np.sum(np.abs(refill))), float(np.sum(spend)))
    assert np.max(np.abs(cum - K)) <= 1e-14 * scale * N, np.max(np.abs(cum - K))
    assert np.all(spend[:N] >= 0.0) and np.all(spend[:N] <= K[:N] * (1 + 1e-14))
    worst_cut = max([c for _, c in cuts], default=0.0)
    assert np.all(K >= (1.0 - worst_cut) * th * dt * Kbar.min() * (1 - 1e-12))
    assert np.all(K > 0.0)


def check_trades(res):
    """The reported volume and spend are those of the realised exits: ``sum_k w_k E_k / dt`` and
    ``sum_k w_k P A_k sum_i dfac_i q_i m_i``, from the result's exit probabilities and densities."""
    N = res.t.size - 1
    flows = res.flow.sum(axis=0)
    np.testing.assert_allclose(flows[:N], res.sell_flow[:N], rtol=1e-12, atol=1e-300)
    model, dL = res.model, res.grid.dL
    x = res.L
    dfac = np.array([np.maximum(1.0 - p.delta * np.maximum(p.ell - x, 0.0), 0.0) for p in model.populations])
    w = model.weights
    masses = res.density * dL
    spend = np.einsum("k,kn,kl,knl,knl->n", w, res.vintage_price, dfac, res.exit_prob, masses)
    np.testing.assert_allclose(spend[:N], res.spend[:N], rtol=1e-12, atol=1e-300)
    # the deal price lies below the price (A, dfac <= 1) and spend <= P V dt <= K
    assert np.all(res.spend[:N] <= res.price[:N] * res.sell_flow[:N] * res.dt * (1 + 1e-12))


def test_every_step_clears_or_caps(calm):
    """Measured: 254 steps at a root (max relative |V - D| / D 7.5e-15), 6 at the cap, the last closed."""
    n_root, n_cap = check_clearing_steps(calm)
    assert n_root > 200 and n_cap >= 1  # the calm market clears inside and at the cap


def test_capital_is_conserved_and_positive(calm):
    """Measured: |K^n - (K^0 + refills - spending)| <= 7.3e-17 over 260 steps (K about 0.02-0.04); min K 0.0219."""
    check_capital(calm)


def test_volume_and_spend_are_those_of_the_trades(calm):
    check_trades(calm)


def test_capital_conserved_through_capital_cuts(scenarios):
    """solve_scenario with capital cuts (60%; 95% with Kbar halved for a year, then 90% two years later): K is
    conserved (with the realised Kbar path of the result's inputs) between events to
    round-off, each event removes exactly the cut fraction of the pre-shock K (docs/model.md 2.7), K stays
    positive, and every step still clears or caps.
    Measured: conservation to 1.0e-16 (60% cut) and 8.0e-17 (95% + 90%, lowest K 1.2e-3)."""
    dt = GRID.dt
    n_tau = int(round((SHOCK_T - 2015.0) / dt))
    for name, cuts in (("cut", [(n_tau, 0.6)]), ("deep", [(n_tau, 0.95), (n_tau + int(round(2.0 / dt)), 0.9)])):
        res = scenarios[name]
        assert res.segment_starts == tuple([0] + [n for n, _ in cuts])
        for j, (n, c) in enumerate(cuts):
            pre = res.segments[j].buyer_capital[n - res.segment_starts[j]]
            assert res.buyer_capital[n] == pytest.approx((1.0 - c) * pre, rel=1e-15)
        check_capital(res, cuts)
        check_clearing_steps(res)
        check_trades(res)


def test_capital_cut_lowers_price_and_volume(scenarios):
    """An unanticipated buyer-capital shock (60% of K) lowers the price AND the volume in the half year after it
    (buyers are what is short: sellers withdraw; docs/model.md 2.4).  Measured: price 0.020-0.029 lower, volume
    0.0045-0.0074 NAV/yr lower over the 13 steps; lowest price 0.817 (0.767 after the 95% + 90% cuts)."""
    base, cut = scenarios["base"], scenarios["cut"]
    n = int(round((SHOCK_T - 2015.0) / GRID.dt))
    after = slice(n, n + 13)  # six months
    assert np.all(cut.price[:n] == base.price[:n])
    assert np.all(cut.price[after] < base.price[after] - 0.01)
    assert np.all(cut.sell_flow[after] < base.sell_flow[after])
    assert cut.price.min() > 0.1 and scenarios["deep"].price.min() > 0.1


def test_seller_liquidity_shock_lowers_price_and_raises_volume(scenarios):
    """A liquidity squeeze of the LPs (L -> L - 0.4) lowers the price and raises the volume in the half year after
    it (sellers are what is short: they sell anyway).  Measured: price 0.17-0.25 lower, volume 0.0055-0.0127
    NAV/yr higher; lowest price 0.60."""
    base, liq = scenarios["base"], scenarios["liq"]
    n = int(round((SHOCK_T - 2015.0) / GRID.dt))
    after = slice(n, n + 13)
    assert np.all(liq.price[after] < base.price[after] - 0.05)
    assert np.all(liq.sell_flow[after] > base.sell_flow[after])
    assert liq.price.min() > 0.1
    check_clearing_steps(liq)
    check_capital(liq)


def test_baseline_supports_the_clearing_market(model):
    """The baselines of docs/model.md 2.7 run on the clearing market (mfg/lp_exit/baselines.py); a capital cut
    alone leaves the DCF price at the no-event price and lowers the first round's."""
    events = [ShockEvent(time=SHOCK_T, capital_cut=0.6)]
    dcf = solve_baseline(model, GRID, OPTIONS, events)
    first = solve_baseline(model, GRID, OPTIONS, events, kind="first_round", calm=dcf.calm)
    n = dcf.shock_step
    assert np.allclose(dcf.price[:-1], dcf.calm.price[:-1], rtol=1e-15, atol=0)
    assert np.all(first.price[n:n + 13] < dcf.calm.price[n:n + 13])
    assert np.all(np.isfinite(first.price)) and first.buyer_capital.min() > 0.0


def test_sl_and_fd_prices_agree_under_refinement(model):
    """The SL and FD equilibrium prices of the clearing market differ by the discretisation error, which shrinks
    under refinement (dL and dt halved together).  Measured max_n |P_SL - P_FD|: 0.059 (n_L = 61, dt = 1/13),
    0.029 (121, 1/26), 0.011 (241, 1/52); mean 0.039, 0.016, 0.0069."""
    gaps, means = [], []
    for n_L, dt in ((61, 1 / 13), (121, 1 / 26), (241, 1 / 52)):
        grid = Grid(L_min=-1.5, L_max=3.5, n_L=n_L, dt=dt)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sl = solve(model, grid, OPTIONS)
            fd = solve(model, grid, OPTIONS, method="fd")
        assert sl.converged and fd.converged
        for r in (sl, fd):
            check_clearing_steps(r)
        d = np.abs(sl.price - fd.price)
        gaps.append(float(d.max()))
        means.append(float(d.mean()))
    assert gaps[0] < 0.1 and gaps[2] < 0.02, gaps
    assert gaps[1] < 0.7 * gaps[0] and gaps[2] < 0.7 * gaps[1], gaps
    assert means[1] < 0.7 * means[0] and means[2] < 0.7 * means[1], means
