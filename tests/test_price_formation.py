"""Tests of the price-formation solver (mfg/price_formation/solver.py, docs/model.md 1.2-1.4).

(a) the paper's published tables at the two coarsest meshes; (b) the solver against
the exact formulas of docs/model.md 1.3 on parameters other than the paper's; (c) the
observed order of convergence of the price; (d) discrete conservation laws and the
balance condition; (e) every documented error path.  Meshes are small except where a
check needs refinement.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mfg.price_formation.solver as pf
from experiments.price_formation_paper import MESHES, PUBLISHED, PUBLISHED_ITERATIONS, bump_density, paper_test
from mfg.price_formation import (
    ConvergenceWarning,
    PowerImpact,
    PriceFormationProblem,
    QuadraticImpact,
    balance_price,
    discretise,
    hj_backward,
    solve,
    transport_forward,
)
from mfg.price_formation.exact import LinearPotentialSolution, LQSolution
from mfg.results import BoundaryMassWarning
from mfg.semi_lagrangian import deposit_p1, minimise_p1


def rel_err(num, exact) -> float:
    return float(np.max(np.abs(num - exact)) / np.max(np.abs(exact)))


def zero(x):
    return np.zeros_like(np.asarray(x, dtype=float))


def small_bump(x):
    return bump_density(x, 2.0)  # supported in |x| < 1/2


def cos_supply(t):
    return 0.3 * np.cos(2 * np.asarray(t, dtype=float))


def shifted_bump(x):
    """``exp(-1/(1 - ((x - 0.1)/0.6)^2))`` on ``(-0.5, 0.7)``."""
    return bump_density((np.asarray(x, dtype=float) - 0.1) / 0.6, 1.0)


def toy_problem(**changes) -> PriceFormationProblem:
    data = dict(impact=QuadraticImpact(1.0), potential=zero, terminal=zero, supply=lambda t: 0.1 + zero(t),
                initial_density=small_bump, domain=(-1.0, 1.0), horizon=1.0)
    data.update(changes)
    return PriceFormationProblem(**data)


# ----------------------------------------------------------------------------------
# (a) the paper's published experiments
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2])
@pytest.mark.parametrize("rho, h", MESHES[:2])
def test_reproduces_published_table(number, rho, h):
    test = paper_test(number)
    res = solve(test.problem, rho=rho, h=h, tol=test.tol)
    assert res.converged
    assert res.iterations <= PUBLISHED_ITERATIONS[number]
    err = test.errors(res)
    pub_price, pub_u, pub_m = PUBLISHED[number][rho]
    assert err["price"] == pytest.approx(pub_price, rel=0.2), err
    assert pub_u / 2.5 <= err["u0"] <= 2.5 * pub_u, err
    assert pub_m / 2.5 <= err["mT"] <= 2.5 * pub_m, err


# ----------------------------------------------------------------------------------
# (b) other parameters against the exact formulas
# ----------------------------------------------------------------------------------

LQ_PARAMS = dict(c=2.0, eta=0.5, kappa=-0.2, gamma=1.0, zeta=0.3)
LQ_MESHES = (0.05, 0.025, 0.0125)  # h = 2 rho


def lq_problem_and_exact():
    c, eta, kappa, gamma, zeta = (LQ_PARAMS[k] for k in ("c", "eta", "kappa", "gamma", "zeta"))
    problem = PriceFormationProblem(
        impact=QuadraticImpact(c), potential=lambda x: eta * (x - kappa) ** 2 / 2,
        terminal=lambda x: gamma * (x - zeta) ** 2 / 2, supply=cos_supply, initial_density=shifted_bump,
        domain=(-2.0, 2.0), horizon=1.0,
    )
    exact = LQSolution(supply=cos_supply, initial_density=shifted_bump, support=(-0.5, 0.7), horizon=1.0, **LQ_PARAMS)
    return problem, exact


def test_lq_other_parameters_converge_to_exact():
    """c = 2, eta = 0.5, kappa = -0.2, gamma = 1, zeta = 0.3, Q = 0.3 cos 2t on [-2, 2]:
    price, u(., 0) (on |x| < 1, away from the state constraint) and m(., T) errors halve
    with the mesh."""
    problem, exact = lq_problem_and_exact()
    errs = []
    for rho in LQ_MESHES:
        res = solve(problem, rho=rho, h=2 * rho, tol=1e-10)
        inner = np.abs(res.x) < 1
        errs.append((
            rel_err(res.price, exact.price(res.price_times)),
            rel_err(res.u[0][inner], exact.value(res.x[inner], 0.0)),
            rel_err(res.m[-1], exact.density(res.x, 1.0)),
        ))
    errs = np.array(errs)
    ratios = errs[:-1] / errs[1:]
    assert np.all(ratios > 1.6), errs  # first order: ratio ~2 per halving
    assert np.all(ratios < 2.6), errs
    price, u0, mT = errs[-1]
    assert price < 6e-3 and u0 < 1.5e-2 and mT < 8e-2, errs


@pytest.mark.parametrize("p, scale, supply", [
    (1.7, 0.6, lambda t: 0.3 * np.cos(2 * np.asarray(t, dtype=float)) + 0.1),
    (3.0, 0.5, cos_supply),  # the supply crosses 0, where l'' vanishes
])
def test_linear_potential_power_impact(p, scale, supply):
    """V = eta x, u_T = abar x: the discrete slope of u is abar + eta (T - t_{k+1}), so the
    discrete price is the exact one plus exactly eta h (first order, sign of eta), every agent trades Q(t_k)
    and the density is transported rigidly."""
    eta, abar = -0.8, 0.4
    imp = PowerImpact(p, scale)
    problem = PriceFormationProblem(impact=imp, potential=lambda x: eta * x, terminal=lambda x: abar * x,
                                    supply=supply, initial_density=shifted_bump, domain=(-1.5, 1.5), horizon=1.0)
    exact = LinearPotentialSolution(imp, eta, abar, supply, shifted_bump, (-0.5, 0.7), 1.0)
    m_errs = []
    for rho in (0.05, 0.025):
        h = 2 * rho
        res = solve(problem, rho=rho, h=h, tol=1e-12)
        p_ex = exact.price(res.price_times)
        np.testing.assert_allclose(res.price - p_ex, eta * h, rtol=0, atol=1e-9)
        occupied = res.m[:-1] > 0
        q = supply(res.price_times)[:, None] * np.ones_like(res.v)
        np.testing.assert_allclose(res.v[occupied], q[occupied], rtol=0, atol=1e-9)
        inner = np.abs(res.x) < 1
        assert rel_err(res.u[0][inner], exact.value(res.x[inner], 0.0)) < 0.2 * h
        m_errs.append(rel_err(res.m[-1], exact.density(res.x, 1.0)))
    assert m_errs[1] < 0.7 * m_errs[0], m_errs


# ----------------------------------------------------------------------------------
# (c) order of convergence
# ----------------------------------------------------------------------------------


def test_price_converges_at_first_order():
    """Test 1 with tol = 1e-10 and h = 2 rho: measured price errors 1.234e-2, 6.045e-3,
    2.991e-3 for rho = 0.02, 0.01, 0.005, i.e. observed orders 1.03 and 1.015."""
    test = paper_test(1)
    errs = []
    for rho in (0.02, 0.01, 0.005):
        res = solve(test.problem, rho=rho, h=2 * rho, tol=1e-10)
        assert res.converged
        errs.append(test.errors(res)["price"])
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all((orders > 0.9) & (orders < 1.15)), (errs, orders)


# ----------------------------------------------------------------------------------
# (d) conservation, positivity, balance
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 2])
def test_mass_positivity_mean_and_balance(number):
    test = paper_test(number)
    tol = 1e-10
    res = solve(test.problem, rho=0.02, h=0.04, tol=tol)
    rho, h = res.rho, res.h
    # mass is conserved to round-off and the density stays non-negative at every step
    np.testing.assert_allclose(rho * res.m.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(res.m >= 0)
    # the P1 deposit keeps first moments and no foot is clamped (state constraint):
    # the mean moves by exactly h * sum_i rho v_i m_i per step
    flux = rho * np.sum(res.v * res.m[:-1], axis=1)
    np.testing.assert_allclose(np.diff(res.mean_holding), h * flux, rtol=0, atol=1e-13)
    # at convergence the balance holds: sum rho v m = Q to ~tol ...
    Q = test.problem.supply(res.price_times)
    assert np.max(np.abs(flux - Q)) < 2 * tol
    # ... so the mean holding moves by h * sum Q
    assert res.mean_holding[-1] - res.mean_holding[0] == pytest.approx(h * Q.sum(), abs=1e-9)
    # feet stay inside the domain
    feet = res.x[None, :] + h * res.v
    assert feet.min() >= res.x[0] - 1e-12 and feet.max() <= res.x[-1] + 1e-12


def test_result_layout_and_terminal_data():
    test = paper_test(1)
    res = solve(test.problem, rho=0.02, h=0.04, tol=test.tol)
    M, N = 101, 25
    assert res.u.shape == (N + 1, M) and res.m.shape == (N + 1, M)
    assert res.v.shape == (N, M) and res.price.shape == (N,)
    np.testing.assert_allclose(res.price_times, np.arange(N) * 0.04, atol=1e-15)
    np.testing.assert_array_equal(res.u[-1], 0.0)  # u_T = 0
    m0 = bump_density(res.x, 1.1)
    np.testing.assert_allclose(res.m[0], m0 / (0.02 * m0.sum()), rtol=1e-14)
    assert len(res.residuals) == res.iterations and res.residuals[-1] <= test.tol
    assert "iterations=4" in repr(res)


def test_solve_is_deterministic_and_restartable():
    test = paper_test(1)
    a = solve(test.problem, rho=0.02, h=0.04, tol=1e-10)
    b = solve(test.problem, rho=0.02, h=0.04, tol=1e-10)
    for name in ("price", "u", "m", "v", "residuals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # restarting from the converged price is a fixed point: one iteration, tiny residual
    c = solve(test.problem, rho=0.02, h=0.04, tol=1e-9, initial_price=a.price)
    assert c.iterations == 1
    np.testing.assert_allclose(c.price, a.price, atol=1e-9)


def test_hj_sweep_and_transport_match_the_building_blocks():
    """hj_backward row by row = minimise_p1 (state constraint) + h V; transport = deposit_p1."""
    test = paper_test(2)
    disc = discretise(test.problem, rho=0.05, h=0.05)
    g = disc.grid
    rng = np.random.default_rng(1)
    price = rng.normal(size=disc.supply.size)
    u, v = hj_backward(disc.terminal, disc.potential, price, g.lower, g.spacing, disc.h, disc.p, disc.scale)
    for k in range(price.size):
        v_ref, val_ref = minimise_p1(g, u[k + 1], g.nodes, disc.h, price[k], disc.p, disc.scale, constrain=True)
        np.testing.assert_array_equal(v[k], v_ref)
        np.testing.assert_allclose(u[k], val_ref + disc.h * disc.potential, rtol=0, atol=1e-14)
    m = transport_forward(disc.m0, v, g.lower, g.spacing, disc.h)
    for k in range(price.size):
        np.testing.assert_allclose(m[k + 1], deposit_p1(g, g.nodes + disc.h * v[k], m[k]), rtol=0, atol=1e-13)


BALANCE = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])


@BALANCE
@given(seed=st.integers(0, 2**32 - 1), c=st.floats(0.2, 5.0))
def test_balance_update_is_explicit_for_quadratic_impact(seed, c):
    """docs/model.md 1.2: price^{n+1} = price^n + c (sum rho v m - Q) for l = c v^2/2."""
    rng = np.random.default_rng(seed)
    n_steps, n = 5, 17
    price, v, Q = rng.normal(size=n_steps), rng.normal(size=(n_steps, n)), rng.normal(size=n_steps)
    w = rng.random((n_steps, n))
    w /= w.sum(axis=1, keepdims=True)
    p, scale = QuadraticImpact(c).kernel_params
    new = balance_price(price, v, w, Q, p, scale)
    np.testing.assert_allclose(new, price + c * (np.sum(w * v, axis=1) - Q), rtol=1e-12, atol=1e-12)


@BALANCE
@given(seed=st.integers(0, 2**32 - 1), p=st.sampled_from([4 / 3, 1.5, 1.7, 2.5, 3.0]))
def test_balance_update_solves_the_scalar_equation(seed, p):
    """sum_i w_i (l')^{-1}(-(price_new + D_i)) = Q with D = -l'(v) - price (sparse weights too)."""
    rng = np.random.default_rng(seed)
    n_steps, n = 4, 13
    price, v, Q = rng.normal(size=n_steps), rng.normal(size=(n_steps, n)), 0.5 * rng.normal(size=n_steps)
    w = rng.random((n_steps, n)) * (rng.random((n_steps, n)) > 0.3)
    w[:, 0] += 0.1
    imp = PowerImpact(p, 0.75)
    new = balance_price(price, v, w, Q, *imp.kernel_params)
    D = -imp.marginal(v) - price[:, None]
    achieved = np.sum(w * imp.marginal_inverse(-(new[:, None] + D)), axis=1)
    np.testing.assert_allclose(achieved, Q, rtol=0, atol=1e-10 * (1 + np.max(np.abs(Q))))


# ----------------------------------------------------------------------------------
# (e) error paths
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: PowerImpact(1.0), "not strictly convex"),
    (lambda: PowerImpact(0.5), "not strictly convex"),
    (lambda: PowerImpact(2.0, -1.0), "not convex"),
    (lambda: QuadraticImpact(-1), "not convex"),
    (lambda: QuadraticImpact(0.0), "not convex"),
])
def test_non_convex_impact_is_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("changes, exc, match", [
    (dict(impact="quadratic"), TypeError, "convex impact cost"),
    (dict(potential=3.0), TypeError, "potential must be a vectorised callable"),
    (dict(domain=(1.0, 1.0)), ValueError, "domain is empty"),
    (dict(domain=(1.0, -1.0)), ValueError, "domain is empty"),
    (dict(domain=(0.0, math.inf)), ValueError, "domain must be finite"),
    (dict(domain=(0.0,)), ValueError, "domain must be a pair"),
    (dict(horizon=0.0), ValueError, "horizon must be a positive"),
    (dict(horizon=math.nan), ValueError, "horizon must be a positive"),
])
def test_problem_validation(changes, exc, match):
    with pytest.raises(exc, match=match):
        toy_problem(**changes)


@pytest.mark.parametrize("changes, match", [
    (dict(initial_density=lambda x: np.asarray(x, dtype=float)), r"initial_density is negative at x=-1"),
    (dict(initial_density=zero), "initial_density has no mass"),
    (dict(initial_density=lambda x: np.where(np.asarray(x) > 0.5, np.nan, 1.0)),
     "initial_density is not finite at x=0.6"),
    (dict(supply=lambda t: np.where(np.asarray(t) >= 0.5, np.inf, 0.0)), "supply is not finite at t=0.5"),
    (dict(potential=lambda x: np.log(np.asarray(x) + 0.5)), "potential is not finite at x=-1"),
    (dict(terminal=lambda x: np.full(np.shape(x), np.nan)), "terminal is not finite"),
    (dict(potential=lambda x: math.exp(x)), r"potential\(x\) failed on an array of 21 points"),
    (dict(potential=lambda x: np.asarray(x)[:3]), r"potential must be vectorised: returned shape \(3,\)"),
    (dict(supply=lambda t: [0.1, 0.2]), r"supply must be vectorised"),
])
def test_bad_data_is_rejected_with_a_message(changes, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own log(negative) warning
        with pytest.raises(ValueError, match=match):
            solve(toy_problem(**changes), rho=0.1, h=0.1)


def test_scalar_returning_callables_are_broadcast():
    # domain (-2, 2): the P1 transport widens the discrete support by up to one node per step
    res = solve(toy_problem(potential=lambda x: 0.0, terminal=lambda x: 0.0, domain=(-2.0, 2.0)), rho=0.1, h=0.1)
    assert res.converged
    np.testing.assert_allclose(res.price, -0.1, atol=1e-12)  # V = u_T = 0: price = -c Q


@pytest.mark.parametrize("kwargs, match", [
    (dict(rho=0.0, h=0.1), "rho must be positive"),
    (dict(rho=-0.1, h=0.1), "rho must be positive"),
    (dict(rho=0.1, h=0.0), "h must be positive"),
    (dict(rho=0.1, h=-0.1), "h must be positive"),
    (dict(rho=math.nan, h=0.1), "rho must be positive"),
    (dict(rho=0.3, h=0.1), r"rho=0.3 does not divide the interval \[-1.0, 1.0\]"),
    (dict(rho=0.1, h=0.3), r"h=0.3 does not divide the horizon T=1.0"),
    (dict(rho=0.1, h=0.1, tol=0.0), "tol must be positive"),
    (dict(rho=0.1, h=0.1, max_iter=0), "max_iter must be a positive integer"),
    (dict(rho=0.1, h=0.1, initial_price=np.zeros(3)), "initial_price must be 10 finite values"),
    (dict(rho=0.1, h=0.1, initial_price=np.full(10, np.nan)), "initial_price must be 10 finite values"),
])
def test_bad_mesh_and_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(toy_problem(), **kwargs)


def test_warns_when_h_and_rho_are_of_different_orders():
    with pytest.warns(UserWarning, match=r"h/rho = 25 is far from order one"):
        solve(toy_problem(domain=(-2.0, 2.0)), rho=0.01, h=0.25)
    with pytest.warns(UserWarning, match=r"h/rho = 0.1 is far from order one"):
        discretise(toy_problem(), rho=0.1, h=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        discretise(toy_problem(), rho=0.05, h=0.1)  # the paper's h = 2 rho: silent


def test_overflow_in_the_sweep_names_the_time_step():
    """V = 1e308 with T = 4, h = 1: u_3 = 1e308 and u_2 = 2e308 overflows first (backward)."""
    problem = toy_problem(potential=lambda x: 1e308 + zero(x), domain=(-4.0, 4.0), horizon=4.0)
    with pytest.raises(FloatingPointError, match=r"Hamilton-Jacobi sweep .* time step k=2 \(t=2\)"):
        solve(problem, rho=1.0, h=1.0)


def test_nan_price_update_names_the_time_step(monkeypatch):
    real = pf.balance_price

    def broken(*args):
        out = real(*args)
        out[3] = np.nan
        return out

    monkeypatch.setattr(pf, "balance_price", broken)
    with pytest.raises(FloatingPointError, match=r"non-finite price at time step k=3 \(t=0.3\)"):
        solve(toy_problem(), rho=0.1, h=0.1)


def test_convergence_warning_when_max_iter_is_too_small():
    test = paper_test(1)
    with pytest.warns(ConvergenceWarning, match="stopped after 2 iterations"):
        res = solve(test.problem, rho=0.02, h=0.04, tol=1e-12, max_iter=2)
    assert not res.converged and res.iterations == 2 and res.residuals[-1] > 1e-12


def test_warns_when_mass_reaches_the_boundary():
    """Buying 1 unit per unit time from holdings near 0.6 on [-1, 1] drives mass onto x = 1."""
    problem = toy_problem(initial_density=lambda x: np.exp(-200 * (np.asarray(x) - 0.6) ** 2),
                          supply=lambda t: 0.5 + zero(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(BoundaryMassWarning, match="mass sits on the boundary"):
            solve(problem, rho=0.05, h=0.1, max_iter=5)


def test_numpy_scalars_are_accepted_as_mesh_and_options():
    pt = paper_test(1)
    ref = solve(pt.problem, rho=0.02, h=0.04, tol=1e-6)
    res = solve(pt.problem, rho=np.float64(0.02), h=np.float64(0.04), tol=np.float64(1e-6),
                max_iter=np.int64(50))
    np.testing.assert_array_equal(res.price, ref.price)
    assert PowerImpact(np.float64(1.5), np.float32(2.0)).kernel_params == (1.5, 2.0)


@pytest.mark.parametrize("changes", [{"eta": -1.0}, {"gamma": -0.5}, {"c": 0.0}])
def test_lq_solution_refuses_non_convex_data(changes):
    args = dict(c=1.0, eta=1.0, kappa=0.0, gamma=0.0, zeta=0.0, supply=lambda t: 0 * t,
                initial_density=lambda x: np.exp(-x**2), support=(-5.0, 5.0), horizon=1.0)
    with pytest.raises(ValueError, match="LQSolution needs"):
        LQSolution(**{**args, **changes})
