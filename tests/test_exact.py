"""Checks of the exact solutions (mfg/price_formation/exact.py, docs/model.md 1.3) against independent computations.

* LQ: the closed-form price, value and curvature against a direct numerical solution
  of the LQ system (Riccati ODE, linear-coefficient ODE and constant ODE integrated
  backward with ``scipy.integrate.solve_ivp``, the mean forward), and the whole MFG
  system checked by residuals: HJB by finite differences of ``LQSolution.value`` in
  ``x`` and ``t``, the continuity equation by finite differences of
  ``LQSolution.density``, and the balance condition by quadrature.
* Linear potential: HJB residual with the Hamiltonian computed by a numerical
  Legendre transform (``minimize_scalar``), optimal rate equal to the supply,
  transport of the density and its mean.

Several parameter sets (``gamma != 0``, ``eta = 0``, ``c != 1``, non-trivial supplies).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
from scipy.integrate import quad, simpson, solve_ivp, trapezoid
from scipy.optimize import minimize_scalar

from experiments.price_formation_paper import bump_density
from experiments.price_formation_paper import supply as paper_supply
from mfg.price_formation.exact import (
    LinearPotentialSolution,
    LQSolution,
    linear_potential_price,
    lq_price,
    normalised_density,
)
from mfg.price_formation.impact import PowerImpact, QuadraticImpact


def cos_supply(t):
    return 0.3 * np.cos(2 * np.asarray(t, dtype=float))


def affine_supply(t):
    return 0.2 + 0.1 * np.asarray(t, dtype=float)


def zero_supply(t):
    return np.zeros_like(np.asarray(t, dtype=float))


def skew_density(x):
    """Unnormalised ``(1 - x^2)^2 (1 + 0.8 x)`` on ``(-1, 1)``: smooth inside, mean != 0."""
    x = np.asarray(x, dtype=float)
    return np.where(np.abs(x) < 1, (1 - x**2) ** 2 * (1 + 0.8 * x), 0.0)


def shifted_bump(x):
    """``exp(-1/(1 - ((x - 0.1)/0.6)^2))`` on ``(-0.5, 0.7)``."""
    return bump_density((np.asarray(x, dtype=float) - 0.1) / 0.6, 1.0)


# (c, eta, kappa, gamma, zeta, supply, density, support, T)
LQ_CASES = {
    "paper-test-1": (1.0, 1.0, 0.25, 0.0, 0.0, paper_supply, partial(bump_density, lam=1.1), (-1 / 1.1, 1 / 1.1), 1.0),
    "gamma-cos-supply": (2.5, 0.7, -0.3, 1.5, 0.4, cos_supply, skew_density, (-1.0, 1.0), 1.5),
    "eta-zero-affine": (0.5, 0.0, 0.0, 0.8, -0.2, affine_supply, shifted_bump, (-0.5, 0.7), 1.0),
    "stiff-no-supply": (1.3, 4.0, 0.1, 0.3, 1.0, zero_supply, skew_density, (-1.0, 1.0), 2.0),
}


def lq_solution(name: str) -> LQSolution:
    c, eta, kappa, gamma, zeta, Q, dens, support, T = LQ_CASES[name]
    return LQSolution(c=c, eta=eta, kappa=kappa, gamma=gamma, zeta=zeta, supply=Q, initial_density=dens,
                      support=support, horizon=T)


def _scalar(f):
    return lambda s: float(np.asarray(f(np.array([s])), dtype=float).ravel()[0])


def _mean_and_mass(density, support):
    f = _scalar(density)
    mass = quad(f, *support, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
    first = quad(lambda x: x * f(x), *support, epsabs=1e-13, epsrel=1e-13, limit=200)[0]
    return first / mass, mass


def _grid_mean_and_mass(density, support, n: int = 20001):
    """Mass and mean by the trapezoidal rule (one vectorised call; spectrally accurate for the
    smooth, compactly supported densities used here)."""
    x = np.linspace(*support, n)
    m = np.asarray(density(x), dtype=float)
    mass = trapezoid(m, x)
    return trapezoid(x * m, x) / mass, mass


def lq_reference(sol: LQSolution):
    """Direct numerical solution of the LQ MFG with ``u = a x^2/2 + b x + e``.

    Plugging the ansatz into the HJB gives ``a' = a^2/c - eta``,
    ``b' = a (price + b)/c + eta kappa``, ``e' = (price + b)^2/(2c) - eta kappa^2/2``;
    the optimal rate is ``v* = -(price + a x + b)/c`` and the balance
    ``int v* m = Q`` gives ``price = -c Q - a xbar - b`` and ``xbar' = Q``.
    Returns callables ``a(t)``, ``b(t)``, ``e(t)``, ``xbar(t)``, ``price(t)``.
    """
    c, eta, kappa, gamma, zeta, T = sol.c, sol.eta, sol.kappa, sol.gamma, sol.zeta, sol.horizon
    q = _scalar(sol.supply)
    xbar0, _ = _mean_and_mass(sol.initial_density, sol.support)
    ivp = dict(method="DOP853", rtol=1e-12, atol=1e-13, dense_output=True)
    S = solve_ivp(lambda t, y: [q(t)], (0.0, T), [0.0], **ivp).sol
    xbar = lambda t: xbar0 + float(S(t)[0])  # noqa: E731

    def rhs(t, y):
        a, b, _ = y
        w = -c * q(t) - a * xbar(t)  # price + b
        return [a * a / c - eta, a * w / c + eta * kappa, w * w / (2 * c) - eta * kappa**2 / 2]

    Y = solve_ivp(rhs, (T, 0.0), [gamma, -gamma * zeta, gamma * zeta**2 / 2], **ivp).sol
    a = lambda t: float(Y(t)[0])  # noqa: E731
    b = lambda t: float(Y(t)[1])  # noqa: E731
    e = lambda t: float(Y(t)[2])  # noqa: E731
    price = lambda t: -c * q(t) - a(t) * xbar(t) - b(t)  # noqa: E731
    return a, b, e, xbar, price


# ----------------------------------------------------------------------------------
# LQ: closed form against the ODE solution
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LQ_CASES)
def test_lq_against_riccati_ode(name):
    sol = lq_solution(name)
    a, b, e, xbar, price = lq_reference(sol)
    T = sol.horizon
    ts = np.linspace(0.0, T, 7)
    scale = max(1.0, max(abs(price(t)) for t in ts))
    np.testing.assert_allclose(sol.price(ts), [price(t) for t in ts], rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(sol.riccati(ts), [a(t) for t in ts], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(sol.mean(ts), [xbar(t) for t in ts], rtol=0, atol=1e-10)
    x = np.linspace(-1.5, 1.5, 13)
    for t in (0.0, 0.4 * T, T):
        ref = a(t) * x**2 / 2 + b(t) * x + e(t)
        np.testing.assert_allclose(sol.value(x, t), ref, rtol=0, atol=1e-8 * (1 + np.max(np.abs(ref))))


def test_lq_price_constant_supply_by_hand():
    """Q = q0: int_t^T int_0^s Q = q0 (T^2 - t^2)/2, so the formula is explicit."""
    c, eta, kappa, gamma, zeta, q0, xb, T = 1.7, 0.6, -0.4, 0.9, 0.25, -0.35, 0.12, 1.3
    t = np.linspace(0, T, 9)
    expected = (-c * q0 + gamma * (zeta - xb) + eta * (T - t) * (kappa - xb) - gamma * q0 * T
                - eta * q0 * (T**2 - t**2) / 2)
    got = lq_price(t, c=c, eta=eta, kappa=kappa, gamma=gamma, zeta=zeta, supply=lambda s: q0 + 0 * np.asarray(s),
                   initial_mean=xb, horizon=T)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------
# LQ: residuals of the MFG system
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LQ_CASES)
def test_lq_value_solves_hjb(name):
    """-u_t + (price + u_x)^2/(2c) - eta (x - kappa)^2/2 = 0 by central differences; u(., T) = u_T."""
    sol = lq_solution(name)
    T, c, eta, kappa = sol.horizon, sol.c, sol.eta, sol.kappa
    x = np.linspace(-1.5, 1.5, 11)
    dx, dt = 1e-3, 1e-4
    for t in (0.1 * T, 0.5 * T, 0.9 * T):
        u_t = (sol.value(x, t + dt) - sol.value(x, t - dt)) / (2 * dt)
        u_x = (sol.value(x + dx, t) - sol.value(x - dx, t)) / (2 * dx)
        pr = float(sol.price(t)[0])
        residual = -u_t + (pr + u_x) ** 2 / (2 * c) - eta * (x - kappa) ** 2 / 2
        size = np.max(np.abs(u_t)) + np.max((pr + u_x) ** 2 / (2 * c)) + 1.0
        assert np.max(np.abs(residual)) < 1e-6 * size, (t, residual)
    np.testing.assert_allclose(sol.value(x, T), sol.gamma * (x - sol.zeta) ** 2 / 2, atol=1e-12)


def _support_at(sol: LQSolution, t: float):
    """Image of the initial support under the affine flow, read off from where the density lives."""
    lo, hi = sol.support
    xs = np.linspace(lo - 3, hi + 3, 60001)
    m = sol.density(xs, t)
    inside = xs[m > 0]
    return inside[0], inside[-1]


@pytest.mark.parametrize("name", LQ_CASES)
def test_lq_density_mass_mean_and_continuity(name):
    """int m = 1, int x m = xbar_0 + int_0^t Q, m_t + (v* m)_x = 0, int v* m = Q."""
    sol = lq_solution(name)
    T, c = sol.horizon, sol.c
    xbar0, _ = _mean_and_mass(sol.initial_density, sol.support)
    q = _scalar(sol.supply)
    m0 = normalised_density(sol.initial_density, sol.support)
    xs0 = np.linspace(*sol.support, 101)
    np.testing.assert_allclose(sol.density(xs0, 0.0), m0(xs0), rtol=1e-12, atol=1e-14)
    for t in (0.3 * T, 0.7 * T, T):
        lo, hi = _support_at(sol, t)
        mean, mass = _grid_mean_and_mass(lambda x, t=t: sol.density(x, t), (lo, hi))
        assert mass == pytest.approx(1.0, abs=1e-7)
        S = quad(q, 0.0, t, epsabs=1e-13, epsrel=1e-13)[0]
        assert mean == pytest.approx(xbar0 + S, abs=1e-7)

        # v*(x, t) = -(price + u_x)/c with u_x by central differences of the value
        pr = float(sol.price(t)[0])
        d = 1e-3

        def v_star(x, t=t, pr=pr, d=d):
            return -(pr + (sol.value(x + d, t) - sol.value(x - d, t)) / (2 * d)) / c

        grid = np.linspace(lo, hi, 4001)
        balance = simpson(v_star(grid) * sol.density(grid, t), x=grid)
        assert balance == pytest.approx(q(t), abs=1e-6)

        if t < T:
            xs = np.linspace(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo), 9)
            dt, dx = 1e-5, 1e-5
            m_t = (sol.density(xs, t + dt) - sol.density(xs, t - dt)) / (2 * dt)

            def flux(x, t=t, v_star=v_star):
                return v_star(x) * sol.density(x, t)

            flux_x = (flux(xs + dx) - flux(xs - dx)) / (2 * dx)
            size = np.max(np.abs(m_t)) + np.max(np.abs(flux_x)) + 1.0
            assert np.max(np.abs(m_t + flux_x)) < 1e-4 * size


def test_lq_closed_form_detects_a_wrong_parameter():
    """The ODE comparison is sharp: perturbing kappa by 1e-4 is caught."""
    sol = lq_solution("gamma-cos-supply")
    *_, price = lq_reference(sol)
    wrong = LQSolution(c=sol.c, eta=sol.eta, kappa=sol.kappa + 1e-4, gamma=sol.gamma, zeta=sol.zeta,
                       supply=sol.supply, initial_density=sol.initial_density, support=sol.support,
                       horizon=sol.horizon)
    assert abs(float(wrong.price(0.0)[0]) - price(0.0)) > 1e-5


# ----------------------------------------------------------------------------------
# linear potential, any convex impact
# ----------------------------------------------------------------------------------

LP_CASES = {
    "paper-test-2": (PowerImpact(4 / 3, 0.75), 1.0, 0.0, paper_supply, partial(bump_density, lam=1.2),
                     (-1 / 1.2, 1 / 1.2), 1.0),
    "p1.7-cos": (PowerImpact(1.7, 0.6), -0.8, 0.4, lambda t: cos_supply(t) + 0.1, skew_density, (-1.0, 1.0), 1.0),
    "quadratic": (QuadraticImpact(2.0), 0.5, -1.0, cos_supply, shifted_bump, (-0.5, 0.7), 2.0),
    "p3-affine": (PowerImpact(3.0, 0.5), 0.3, 0.7, affine_supply, skew_density, (-1.0, 1.0), 1.0),
}


def lp_solution(name: str) -> LinearPotentialSolution:
    imp, eta, abar, Q, dens, support, T = LP_CASES[name]
    return LinearPotentialSolution(impact=imp, eta=eta, abar=abar, supply=Q, initial_density=dens,
                                   support=support, horizon=T)


def _hamiltonian_numeric(imp: PowerImpact, q: float) -> tuple[float, float]:
    """``sup_v [-q v - l(v)]`` and its argmax, by bounded Brent (independent of impact.conjugate)."""
    f = lambda v: float(imp.cost(v)) + q * v  # noqa: E731
    res = minimize_scalar(f, bounds=(-20.0, 20.0), method="bounded", options={"xatol": 1e-12})
    return -float(res.fun), float(res.x)


@pytest.mark.parametrize("name", LP_CASES)
def test_linear_potential_hjb_and_optimal_rate(name):
    """-u_t + l*(-(price + u_x)) - eta x = 0 and argmax = Q(t) (every agent trades the supply)."""
    sol = lp_solution(name)
    T, eta = sol.horizon, sol.eta
    x = np.linspace(-2.0, 2.0, 9)
    dx, dt = 1e-3, 1e-5
    for t in (0.15 * T, 0.5 * T, 0.85 * T):
        u_t = (sol.value(x, t + dt) - sol.value(x, t - dt)) / (2 * dt)
        u_x = (sol.value(x + dx, t) - sol.value(x - dx, t)) / (2 * dx)
        pr = float(sol.price(t)[0])
        for xi, ut, ux in zip(x, u_t, u_x):
            H, v_star = _hamiltonian_numeric(sol.impact, pr + ux)
            assert -ut + H - eta * xi == pytest.approx(0.0, abs=1e-6 * (1 + abs(ut) + abs(H)))
            assert v_star == pytest.approx(float(sol.supply(np.array([t]))[0]), abs=1e-6)
    np.testing.assert_allclose(sol.value(x, T), sol.abar * x, atol=1e-13)


@pytest.mark.parametrize("name", LP_CASES)
def test_linear_potential_density_is_transported_by_the_supply(name):
    sol = lp_solution(name)
    T = sol.horizon
    q = _scalar(sol.supply)
    xbar0, _ = _mean_and_mass(sol.initial_density, sol.support)
    for t in (0.4 * T, T):
        S = quad(q, 0.0, t, epsabs=1e-13, epsrel=1e-13)[0]
        support = (sol.support[0] + S, sol.support[1] + S)
        mean, mass = _grid_mean_and_mass(lambda x, t=t: sol.density(x, t), support)
        assert mass == pytest.approx(1.0, abs=1e-9)
        assert mean == pytest.approx(xbar0 + S, abs=1e-9)
        xs = np.linspace(support[0] + 0.2 * (support[1] - support[0]), support[1] - 0.2 * (support[1] - support[0]), 7)
        d = 1e-5
        if t < T:
            m_t = (sol.density(xs, t + d) - sol.density(xs, t - d)) / (2 * d)
            m_x = (sol.density(xs + d, t) - sol.density(xs - d, t)) / (2 * d)
            assert np.max(np.abs(m_t + q(t) * m_x)) < 1e-4 * (1 + np.max(np.abs(m_x)))


def test_linear_potential_price_formula_pointwise():
    imp = PowerImpact(1.7, 0.6)
    t = np.array([0.0, 0.25, 0.9])
    got = linear_potential_price(t, impact=imp, eta=-0.8, abar=0.4, supply=cos_supply, horizon=1.0)
    Q = 0.3 * np.cos(2 * t)
    expected = -np.sign(Q) * 0.6 * 1.7 * np.abs(Q) ** 0.7 - 0.4 + 0.8 * (1.0 - t)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


def test_normalised_density_rejects_zero_mass():
    with pytest.raises(ValueError, match="no mass"):
        normalised_density(lambda x: np.zeros_like(np.asarray(x, dtype=float)), (-1.0, 1.0))


def test_normalised_density_integrates_to_one():
    f = normalised_density(skew_density, (-1.0, 1.0))
    assert quad(lambda x: float(f(x)), -1, 1)[0] == pytest.approx(1.0, abs=1e-12)
    assert math.isclose(float(f(0.0)), 1.0 / quad(lambda x: float(skew_density(x)), -1, 1)[0], rel_tol=1e-12)
