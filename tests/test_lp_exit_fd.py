"""Finite-difference kernels of the LP-exit game (mfg/lp_exit/fd.py): the independent second method.

Checked against exact identities (adjointness, mass), docs/model.md 2.9 (McKean-Vlasov
moments, the single-LP stopping problem), the SL kernels of mfg/lp_exit/solver.py on the same
inputs, and, through ``solve(method="fd")``, the SL equilibrium.  Observed errors and
orders are printed (``pytest -s``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import mfg.lp_exit.solver as lp_exit
from mfg.lp_exit import backward_sweep, forward_sweep
from mfg.lp_exit.closed_form import solve_stopping
from mfg.lp_exit.fd import fd_backward_sweep, fd_forward_sweep
from mfg.lp_exit.kernels import ExitRule, Mesh, StepCoefficients, simple_population
from mfg.lp_exit.params import Grid, load_scenario

pytestmark = pytest.mark.kernels  # run again with numba's bounds checking in CI (.ci/run)

NO_POLICY = np.zeros((1, 1))

# the impact market's calm (docs/model.md 2.4b): the SL-FD gaps below were measured on it
CALM = Path(__file__).resolve().parents[1] / "mfg" / "lp_exit" / "library" / "impact_calm.toml"


def gaussian_masses(x, mean, std):
    w = np.exp(-0.5 * ((x - mean) / std) ** 2)
    return w / w.sum()


def random_problem(seed=1, n=60, n_t=30):
    rng = np.random.default_rng(seed)
    return dict(
        rng=rng, n=n, n_t=n_t, lower=-1.0, dx=0.05, dt=0.02,
        c=rng.normal(size=n_t),
        sigma=rng.uniform(0.2, 0.9, size=n_t),
        G=rng.uniform(0.8, 1.0, size=n_t),
        q_given=rng.uniform(0.0, 1.0, size=(n_t, n)),
        terminal=rng.uniform(0.5, 1.5, size=n),
        m0=(lambda m: m / m.sum())(rng.uniform(size=n)),
    )


# ----------------------------------------------------------------------------------
# (1) exact discrete identities
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["evaluate", "logit", "hard"])
def test_forward_is_the_exact_transpose_of_backward(mode):
    """No running payoff, unit discount: sum m^0 V^0 = sum m^N V^N + sum_n G_n exits_n to round-off."""
    p = random_problem()
    n, n_t = p["n"], p["n_t"]
    temperature = {"evaluate": 0.0, "logit": 0.05, "hard": 0.0}[mode]
    pop = simple_population(0, n_t - 1, p["terminal"], np.zeros(n), 1.0, 0.7, 1.5, n_t)
    coef, mesh = StepCoefficients(p["c"], p["sigma"], p["G"]), Mesh(p["lower"], p["dx"], p["dt"])
    V, q, _ = fd_backward_sweep(pop, coef, ExitRule(temperature, mode == "evaluate", p["q_given"]), mesh)
    m, e = fd_forward_sweep(p["m0"], pop, coef, q, mesh)
    lhs = np.sum(m[0] * V[0])
    rhs = np.sum(m[-1] * V[-1]) + np.sum(p["G"][:-1] * e[:-1])
    assert lhs == pytest.approx(rhs, abs=1e-13)
    assert e[-1] == 0.0
    if mode == "evaluate":
        assert np.array_equal(q[:-1], p["q_given"][:-1])
    if mode == "hard":
        assert np.all(np.isin(q, [0.0, 0.7])) and 0.0 < q.mean() < 0.7


def test_mass_conservation_and_positivity():
    """Active + exited mass = 1 after every step to 1e-12; masses stay >= 0 (M-matrix, no cancellation)."""
    p = random_problem(seed=7, n=80, n_t=60)
    drift_c = 3.0 * np.sin(np.arange(p["n_t"]))  # strong drifts: upwinding engages near the ends
    q = p["rng"].uniform(0.0, 0.3, size=(p["n_t"], p["n"]))
    for sig in (p["sigma"], np.zeros(p["n_t"]), np.full(p["n_t"], 5.0)):  # incl. pure transport and dt >> dx²/σ²
        m0 = np.zeros(p["n"])
        m0[[0, 5, 40, 79]] = [0.1, 0.2, 0.3, 0.4]  # mass on the end nodes too
        pop = simple_population(3, p["n_t"] - 2, np.ones(p["n"]), np.zeros(p["n"]), 1.0, 0.3, 2.0, p["n_t"])
        m, e = fd_forward_sweep(m0, pop, StepCoefficients(drift_c, sig, np.zeros(p["n_t"])), q,
                                Mesh(p["lower"], p["dx"], 0.05))
        total = m.sum(axis=1) + np.concatenate([[0.0], np.cumsum(e)[:-1]])
        assert np.max(np.abs(total[3:p["n_t"] - 1] - 1.0)) < 1e-12
        assert np.all(m[:3] == 0.0) and np.all(m[p["n_t"] - 1:] == 0.0) and np.all(e[p["n_t"] - 2:] == 0.0)
        assert np.all(m >= 0.0) and np.all(e >= 0.0)


def test_rows_conventions_match_the_sl_kernel():
    """Same NaN/zero rows, terminal row, shapes and threshold definition as mfg.lp_exit.backward_sweep."""
    p = random_problem(seed=3)
    n, n_t = p["n"], p["n_t"]
    x = p["lower"] + p["dx"] * np.arange(n)
    running = 0.05 * p["dt"] * np.ones(n) - 0.5 * p["dt"] * np.maximum(0.7 - x, 0.0)
    args = (simple_population(4, 20, np.ones(n), running, math.exp(-0.05 * p["dt"]), 0.5, 1.0, n_t),
            StepCoefficients(np.full(n_t, 1.0), p["sigma"], np.full(n_t, 0.9)), ExitRule(0.0, False, NO_POLICY),
            Mesh(p["lower"], p["dx"], p["dt"]))
    V, q, thr = fd_backward_sweep(*args)
    V_sl, q_sl, thr_sl = backward_sweep(*args)
    assert V.shape == V_sl.shape == (n_t, n) and q.shape == (n_t, n) and thr.shape == (n_t,)
    assert np.array_equal(np.isnan(V), np.isnan(V_sl)) and np.all(V[20] == 1.0)
    assert np.all(q[:4] == 0.0) and np.all(q[20:] == 0.0)
    assert np.array_equal(np.isnan(thr), np.isnan(thr_sl)) and np.isfinite(thr[4:14]).all()
    assert np.all(np.isnan(thr[14:]))  # close to the terminal row C > G everywhere: no threshold
    # threshold: the highest zero of the P1 interpolant of C - G (exit below it)
    for k in (4, 9, 13):
        C = (V[k] - q[k] * 0.9) / (1.0 - q[k])  # V = C + q (G - C)
        D = C - 0.9
        j = int(np.floor((thr[k] - p["lower"]) / p["dx"]))
        assert D[j] <= 1e-15 and D[j + 1] > -1e-15 and np.all(D[j + 2:] > 0.0)
        assert np.interp(thr[k], x, D) == pytest.approx(0.0, abs=1e-12)
        assert np.all(q[k, :j + 1] > 0.25) and np.all(q[k, j + 1:] < 0.25)  # hard rule: q_max = 0.5 below


# ----------------------------------------------------------------------------------
# (2) McKean-Vlasov mean and variance with exits off (docs/model.md 2.9)
# ----------------------------------------------------------------------------------


def mckean_vlasov(kappa, lam, lbar, sigma, m0, x, n_steps, dt, lower, dx, tol=1e-14):
    """Fixed point on the mean-field path M with the FD forward sweep (q = 0)."""
    q = np.zeros((n_steps + 1, x.size))
    sig = np.full(n_steps + 1, sigma)
    M = np.full(n_steps + 1, float(m0 @ x))
    for _ in range(200):
        pop = simple_population(0, n_steps, np.ones(x.size), np.zeros(x.size), 1.0, 0.0, kappa + lam, n_steps + 1)
        coef = StepCoefficients(kappa * lbar + lam * M, sig, np.zeros(n_steps + 1))
        m, e = fd_forward_sweep(m0, pop, coef, q, Mesh(lower, dx, dt))
        M_new = m @ x
        if np.max(np.abs(M_new - M)) < tol:
            return m
        M = M_new
    raise AssertionError("mean-field fixed point did not converge")


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_fd_mckean_vlasov_mean_and_variance(lam):
    kappa, lbar, mu0, s0, sigma, T = 1.0, 1.0, 0.4, 0.2, 0.5, 2.0
    rate = kappa + lam
    errs = []
    for n_L, steps in [(91, 25), (181, 50), (361, 100)]:
        lower, dx = -1.0, 4.5 / (n_L - 1)
        x = lower + dx * np.arange(n_L)
        dt, N = 1.0 / steps, round(T * steps)
        m = mckean_vlasov(kappa, lam, lbar, sigma, gaussian_masses(x, mu0, s0), x, N, dt, lower, dx)
        assert np.max(np.abs(m.sum(axis=1) - 1.0)) < 1e-12 and np.all(m >= 0.0)
        t = dt * np.arange(N + 1)
        mean_exact = lbar + (mu0 - lbar) * np.exp(-kappa * t)
        var_exact = s0**2 * np.exp(-2 * rate * t) + sigma**2 * (1 - np.exp(-2 * rate * t)) / (2 * rate)
        mean = m @ x
        var = m @ x**2 - mean**2
        errs.append((np.max(np.abs(mean - mean_exact)), np.max(np.abs(var - var_exact))))
    errs = np.array(errs)
    orders = np.log2(errs[:-1] / errs[1:])
    print(f"\nFD MV lam={lam}: mean errors {errs[:, 0]}, variance errors {errs[:, 1]}, orders {orders.tolist()}")
    assert np.all(np.diff(errs, axis=0) < 0)
    assert np.all(orders > 0.8)  # implicit Euler: first order in dt (central differences: O(dL²) in space)
    # the mean-field lag lam (M^n - M^{n+1}) dt of the implicit step dominates the mean error at lam = 2
    assert errs[-1, 0] < 8e-3 and errs[-1, 1] < 1e-3


# ----------------------------------------------------------------------------------
# (3) single LP, constant price, long life, hard stopping vs the semi-closed form
# ----------------------------------------------------------------------------------

CF = dict(kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6, y=0.15, r=0.2, g=0.05)


def test_fd_stopping_converges_to_closed_form():
    T, G = 40.0, 0.9  # exp(-rho T) = exp(-6): the horizon is invisible at the errors measured
    exact = solve_stopping(**CF, exit_value=G)
    rows = []
    for n_L, steps in [(126, 13), (251, 26), (501, 52)]:
        lower, dx = -1.5, 5.0 / (n_L - 1)
        x = lower + dx * np.arange(n_L)
        dt, N = 1.0 / steps, round(T * steps)
        running = (CF["y"] - CF["eta"] * np.maximum(CF["ell"] - x, 0.0)) * dt
        q_max = -math.expm1(-1e6 * dt)
        pop = simple_population(0, N, np.ones(n_L), running, math.exp(-(CF["r"] - CF["g"]) * dt), q_max, CF["kappa"],
                                N + 1)
        coef = StepCoefficients(np.full(N + 1, CF["kappa"] * CF["lbar"]), np.full(N + 1, CF["sigma"]),
                                np.full(N + 1, G))
        V, q, thr = fd_backward_sweep(pop, coef, ExitRule(0.0, False, NO_POLICY), Mesh(lower, dx, dt))
        sel = (x >= 0.0) & (x <= 2.5)
        rows.append((abs(thr[0] - exact.threshold), np.max(np.abs(V[0, sel] - exact.value(x[sel])))))
    errs = np.array(rows)
    orders = np.log2(errs[:-1] / errs[1:])
    print(f"\nFD stopping: l* = {exact.threshold:.6f}; threshold errors {errs[:, 0]}, value errors {errs[:, 1]}, "
          f"orders (threshold, value) {orders.tolist()}")
    assert np.all(np.diff(errs, axis=0) < 0)
    # value: first order; threshold: about order 1/2 (discrete monitoring of the boundary)
    assert np.all(orders[:, 1] > 0.85) and np.all(orders[:, 0] > 0.4)
    assert errs[-1, 1] < 2.5e-3 and errs[-1, 0] < 0.045


# ----------------------------------------------------------------------------------
# (4) FD vs SL kernels on the same inputs
# ----------------------------------------------------------------------------------


def test_fd_and_sl_kernels_agree_under_refinement():
    """Seasonal drift, time-varying sigma and exit value, logit exits: FD and SL converge to each other."""
    kappa, lbar, T, a_max, temperature = 1.0, 1.0, 3.0, 4.0, 0.01
    rows = []
    for n_L, steps in [(101, 13), (201, 26), (401, 52), (801, 104)]:
        lower, dx = -1.5, 5.0 / (n_L - 1)
        x = lower + dx * np.arange(n_L)
        dt, N = 1.0 / steps, round(T * steps)
        t = dt * np.arange(N + 1)
        drift_c = kappa * (lbar - 0.3 * ((t % 1.0) >= 0.75))  # Q4 dip of the liquidity target
        sigma = 0.3 + 0.1 * np.sin(2 * np.pi * t)
        G = 0.9 - 0.05 * np.exp(-((t - 1.5) / 0.3) ** 2)  # a dip of the price
        running = (0.05 - 0.9 * np.maximum(0.75 - x, 0.0)) * dt
        pop = simple_population(0, N, np.ones(n_L), running, math.exp(-0.05 * dt), -math.expm1(-a_max * dt), kappa,
                                N + 1)
        coef, mesh = StepCoefficients(drift_c, sigma, G), Mesh(lower, dx, dt)
        rule = ExitRule(temperature, False, NO_POLICY)
        V_fd, q_fd, _ = fd_backward_sweep(pop, coef, rule, mesh)
        V_sl, q_sl, _ = backward_sweep(pop, coef, rule, mesh)
        m0 = gaussian_masses(x, 0.9, 0.2)
        _, e_fd = fd_forward_sweep(m0, pop, coef, q_fd, mesh)
        _, e_sl = forward_sweep(m0, pop, coef, q_sl, mesh)
        sel = (x >= 0.0) & (x <= 2.0)
        # value at t = 0, total exits, and the exit rate per year step by step
        rows.append((np.max(np.abs(V_fd[0, sel] - V_sl[0, sel])), abs(e_fd.sum() - e_sl.sum()),
                     np.max(np.abs(e_fd - e_sl)) / dt, e_sl.sum()))
    d = np.array(rows)
    orders = np.log2(d[:-1, :3] / d[1:, :3])
    print(f"\nFD vs SL kernels: value gaps {d[:, 0]}, total exit gaps {d[:, 1]} (of {d[-1, 3]:.3f}), "
          f"exit-rate gaps {d[:, 2]}, orders {orders.tolist()}")
    assert np.all(np.diff(d[:, :3], axis=0) < 0)
    assert np.all(orders > 0.7)
    assert d[-1, 0] < 1.5e-3 and d[-1, 1] < 0.03 * d[-1, 3]  # 2% of the exits at dL = 1/160, dt = 1/104


# ----------------------------------------------------------------------------------
# (5) the equilibrium: solve(method="fd") vs solve(method="sl")
# ----------------------------------------------------------------------------------


def test_fd_equilibrium_matches_sl_on_calm_scenario():
    """The calm scenario with its own solver options: the two methods' prices converge to each other.

    Measured max over the path of |P_sl - P_fd| (temperature 1e-3): 4.0e-3 (n_L 201, dt 1/26),
    2.1e-3 (401, 1/52), 1.15e-3 (801, 1/104), 5.1e-4 (1601, 1/104), 5.4e-4 (1601, 1/208).  The
    gap is mostly the SL interpolation error O(dL²/dt); the finest grids are too slow for a test.
    """
    sc = load_scenario(CALM)
    opts = sc.solver.model_copy(update=dict(max_iter=max(sc.solver.max_iter, 100)))
    gaps = []
    for n_L, steps in [(201, 26), (401, 52)]:
        grid = Grid(L_min=-1.5, L_max=3.5, n_L=n_L, dt=1 / steps)
        r_sl = lp_exit.solve(sc.model, grid, opts, method="sl")
        r_fd = lp_exit.solve(sc.model, grid, opts, method="fd")
        assert r_sl.converged and r_fd.converged
        for r in (r_sl, r_fd):
            total = r.active_mass + r.exited_mass + r.matured_mass
            assert np.all(r.density >= 0.0)
            for k in range(total.shape[0]):
                n0 = int(np.argmax(total[k] > 0))
                assert np.max(np.abs(total[k, n0:] - 1.0)) < 1e-12
        gaps.append((np.max(np.abs(r_sl.price - r_fd.price)),
                     np.max(np.abs(r_sl.mean_liquidity - r_fd.mean_liquidity))))
    gaps = np.array(gaps)
    print(f"\nFD vs SL equilibrium (calm): max|dP| {gaps[:, 0]}, max|dM| {gaps[:, 1]}")
    assert np.all(np.diff(gaps, axis=0) < 0)
    assert gaps[-1, 0] < 2.5e-3 and gaps[-1, 1] < 1e-3


@pytest.mark.slow
def test_fd_equilibrium_matches_sl_to_1e3_on_a_fine_grid():
    """The acceptance check: on a fine grid (dL = 1/320, dt = 1/104) the calm prices agree to 1e-3 (about 20 s)."""
    sc = load_scenario(CALM)
    opts = sc.solver.model_copy(update=dict(max_iter=max(sc.solver.max_iter, 100)))
    grid = Grid(L_min=-1.5, L_max=3.5, n_L=1601, dt=1 / 104)
    r_sl = lp_exit.solve(sc.model, grid, opts, method="sl")
    r_fd = lp_exit.solve(sc.model, grid, opts, method="fd")
    assert r_sl.converged and r_fd.converged
    gap = np.max(np.abs(r_sl.price - r_fd.price))
    print(f"\nFD vs SL equilibrium (calm, 1601 x 1/104): max|dP| {gap:.3g}, "
          f"time ratio FD/SL {r_fd.timings['total'] / r_sl.timings['total']:.2f}")
    assert gap < 1e-3
