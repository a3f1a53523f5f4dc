"""Semi-closed form of the infinite-horizon single-LP exit problem (docs/model.md 2.9)."""

from __future__ import annotations

import numpy as np
import pytest

from mfg.lp_exit.closed_form import fundamental_solutions, solve_bvp_check, solve_stopping

CASES = [
    dict(kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6, y=0.15, r=0.2, g=0.05, exit_value=0.9),
    dict(kappa=0.5, lbar=0.8, sigma=0.3, eta=2.0, ell=0.5, y=0.05, r=0.08, g=0.03, exit_value=0.85),
]


def ode_residual(sol, L, p, h=1e-4):
    V = sol.value
    d2 = (V(L + h) - 2 * V(L) + V(L - h)) / h**2
    rho = p["r"] - p["g"]
    c = p["eta"] * np.maximum(p["ell"] - L, 0.0)
    return 0.5 * p["sigma"] ** 2 * d2 + p["kappa"] * (p["lbar"] - L) * sol.derivative(L) - rho * V(L) + p["y"] - c


def test_fundamental_solutions_solve_the_homogeneous_equation():
    kappa, sigma, lbar, rho = 0.7, 0.35, 1.0, 0.06
    L = np.linspace(0.0, 2.0, 21)
    h = 1e-4
    for which in (0, 2):

        def u(x, which=which):
            return fundamental_solutions(x, kappa, sigma, lbar, rho / kappa)[which]

        du = fundamental_solutions(L, kappa, sigma, lbar, rho / kappa)[which + 1]
        assert np.allclose(du, (u(L + h) - u(L - h)) / (2 * h), rtol=1e-6)
        d2 = (u(L + h) - 2 * u(L) + u(L - h)) / h**2
        res = 0.5 * sigma**2 * d2 + kappa * (lbar - L) * du - rho * u(L)
        assert np.max(np.abs(res)) < 1e-5 * np.max(np.abs(u(L)))
    F, dF, G, dG = fundamental_solutions(L, kappa, sigma, lbar, rho / kappa)
    assert np.all(dF > 0) and np.all(dG < 0)  # increasing / decreasing


@pytest.mark.parametrize("p", CASES)
def test_closed_form_conditions(p):
    sol = solve_stopping(**p)
    x = sol.threshold
    assert x < p["ell"]
    # value matching and smooth fit at the threshold, C1 at the kink ell
    assert sol.value(x) == pytest.approx(p["exit_value"], abs=1e-12)
    assert abs(sol.derivative(x + 1e-12)) < 1e-9
    e = 1e-9
    assert sol.value(p["ell"] - e) == pytest.approx(sol.value(p["ell"] + e), abs=1e-8)
    assert sol.derivative(p["ell"] - e) == pytest.approx(sol.derivative(p["ell"] + e), abs=1e-7)
    # the ODE holds on both pieces, V >= G and V -> y/rho for large L
    L = np.concatenate([np.linspace(x + 0.01, p["ell"] - 0.01, 30), np.linspace(p["ell"] + 0.01, 3.0, 30)])
    assert np.max(np.abs(ode_residual(sol, L, p))) < 1e-5
    assert np.all(sol.value(np.linspace(x - 1, 4, 200)) >= p["exit_value"] - 1e-12)
    assert sol.value(x - 0.5) == p["exit_value"]
    # increasing towards y/rho (the decay is algebraic, |z|^-nu, so no limit is checked)
    V = sol.value(np.linspace(x, p["lbar"] + 20 * p["sigma"], 200))
    assert np.all(np.diff(V) > 0) and np.all(V < p["y"] / (p["r"] - p["g"]))


@pytest.mark.parametrize("p", CASES)
def test_closed_form_matches_independent_bvp_solve(p):
    sol = solve_stopping(**p)
    x_bvp, V_bvp = solve_bvp_check(**p, guess=sol.threshold - 0.1)
    assert abs(x_bvp - sol.threshold) < 1e-8
    L = np.linspace(sol.threshold, p["lbar"] + 3 * p["sigma"], 50)
    assert np.max(np.abs(V_bvp(L) - sol.value(L))) < 1e-8


def test_refuses_problems_without_threshold():
    p = dict(CASES[0])
    with pytest.raises(ValueError, match="exit_value"):
        solve_stopping(**{**p, "exit_value": 1.0})  # G >= y/rho: exit at once
    with pytest.raises(ValueError, match="rho"):
        solve_stopping(**{**p, "g": 0.3})
    with pytest.raises(ValueError, match="no exit threshold"):
        solve_stopping(**{**p, "eta": 1e-4})  # costs too small to ever sell at 10% below NAV
