"""LP-exit MFG solver (mfg/lp_exit/solver.py, mfg/lp_exit/market.py) against docs/model.md 2.

Observed errors and orders are printed (``pytest -s``) and recorded in the report.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from mfg.lp_exit.closed_form import solve_stopping
from mfg.lp_exit.kernels import ExitRule, Mesh, StepCoefficients, simple_population
from mfg.lp_exit.market import ImpactParams, market_path
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions, load_scenario, shipped_scenarios
from mfg.lp_exit.solver import (
    BoundaryMassWarning,
    ConvergenceWarning,
    LPState,
    MarketInputs,
    backward_sweep,
    forward_sweep,
    solve,
)

CALM = Path(__file__).resolve().parents[1] / "mfg" / "lp_exit" / "library" / "calm.toml"

BASE_POP = dict(name="lp", vintage=0.0, life=5.0, weight=1.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6,
                y=0.15, r=0.2, g=0.05, a_max=4.0, initial_mean=1.0, initial_std=0.2)
FLAT_MARKET = dict(kind="impact", pbar=0.9, beta=0.0, tau_s=1.0, K0=1.0, Kbar=1.0, theta_K=0.0)


def check_invariants(r, tol=1e-12):
    """docs/model.md 2.6 on every solve: mass accounting, non-negative density, q in [0, 1]."""
    n_first = np.argmax(r.active_mass + r.exited_mass + r.matured_mass > 0, axis=1)
    total = r.active_mass + r.exited_mass + r.matured_mass
    for k, n0 in enumerate(n_first):
        assert np.max(np.abs(total[k, n0:] - 1.0)) < tol
        assert np.all(total[k, :n0] == 0.0)
    assert np.all(r.density >= 0.0)
    assert np.allclose(r.density.sum(axis=2) * r.dL, r.active_mass, atol=tol, rtol=0)
    assert np.all((r.exit_prob >= 0.0) & (r.exit_prob <= 1.0))
    assert np.all(r.flow >= 0.0) and np.allclose(r.flow.sum(axis=0), r.sell_flow, atol=1e-14)
    assert np.all(np.isfinite(r.price)) and np.all(r.price > 0.0)


def make_model(pops, market=FLAT_MARKET, start=0.0, end=None):
    end = end if end is not None else max(p["vintage"] + p["life"] for p in pops)
    return LPExitModel(populations=pops, market=market, start=start, end=end)


# ----------------------------------------------------------------------------------
# (1) McKean-Vlasov mean and variance with exits off (docs/model.md 2.9)
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_mckean_vlasov_mean_and_variance(lam):
    kappa, lbar, m0, s0, sigma, T = 1.0, 1.0, 0.4, 0.2, 0.5, 2.0
    pop = {**BASE_POP, "kappa": kappa, "lam": lam, "alpha": 0.0, "sigma": sigma, "a_max": 0.0,
           "initial_mean": m0, "initial_std": s0, "life": 5.0}
    market = {**FLAT_MARKET, "beta": 3.0}  # no exits, so no flow: the price stays at pbar anyway
    model = make_model([pop], market, end=T)
    rate = kappa + lam
    errs = []
    for n_L, steps in [(91, 25), (181, 50), (361, 100)]:
        r = solve(model, Grid(L_min=-1.0, L_max=3.5, n_L=n_L, dt=1 / steps),
                  SolverOptions(temperature=0.0, damping=1.0, tol=1e-12, max_iter=60))
        check_invariants(r)
        assert r.converged and np.all(r.exited_mass == 0.0) and np.allclose(r.price, 0.9)
        mean_exact = lbar + (m0 - lbar) * np.exp(-kappa * r.t)
        var_exact = s0**2 * np.exp(-2 * rate * r.t) + sigma**2 * (1 - np.exp(-2 * rate * r.t)) / (2 * rate)
        mass = r.density[0] * r.dL
        mean = mass @ r.L
        var = mass @ r.L**2 - mean**2
        assert np.allclose(r.mean_liquidity, mean, atol=1e-12)
        errs.append((np.max(np.abs(mean - mean_exact)), np.max(np.abs(var - var_exact))))
    errs = np.array(errs)
    orders = np.log2(errs[:-1] / errs[1:])
    print(f"\nMV lam={lam}: mean errors {errs[:, 0]}, variance errors {errs[:, 1]}, orders {orders.tolist()}")
    assert np.all(np.diff(errs, axis=0) < 0)  # both errors decrease under refinement
    assert np.all(orders > 0.8)  # first order in dt (with dL ~ dt)
    assert errs[-1, 0] < 2e-3 and errs[-1, 1] < 2e-3


# ----------------------------------------------------------------------------------
# (2) single LP, constant price, long life, hard stopping vs the semi-closed form
# ----------------------------------------------------------------------------------

CF = dict(kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6, y=0.15, r=0.2, g=0.05)


def test_sl_converges_to_closed_form_stopping():
    T = 40.0  # exp(-rho T) = exp(-6): the horizon's trace on V(0) is below 1e-4 of the errors measured
    exact = solve_stopping(**CF, exit_value=0.9)
    pop = {**BASE_POP, **CF, "life": T, "lam": 0.0, "alpha": 0.0, "phi": 0.0, "a_max": 1e6,
           "initial_mean": 1.0, "initial_std": 0.1}
    model = make_model([pop], FLAT_MARKET, end=T)  # beta = 0: P = pbar = 0.9 = G
    rows = []
    for n_L, steps in [(126, 13), (251, 26), (501, 52)]:
        r = solve(model, Grid(L_min=-1.5, L_max=3.5, n_L=n_L, dt=1 / steps),
                  SolverOptions(temperature=0.0, damping=1.0))
        check_invariants(r)
        assert r.iterations <= 2 and np.all(r.price == 0.9)  # 2: M is computed once, then fixed
        assert r.exploitability == pytest.approx(0.0, abs=1e-14)  # hard rule = best response
        sel = (r.L >= 0.0) & (r.L <= 2.5)
        rows.append((abs(r.threshold[0, 0] - exact.threshold),
                     np.max(np.abs(r.value[0, 0, sel] - exact.value(r.L[sel])))))
    errs = np.array(rows)
    orders = np.log2(errs[:-1] / errs[1:])
    print(f"\nstopping: l* = {exact.threshold:.6f}; threshold errors {errs[:, 0]}, value errors {errs[:, 1]}, "
          f"orders (threshold, value) {orders.tolist()}")
    assert np.all(np.diff(errs, axis=0) < 0)
    # value: first order; threshold: order 1/2 (discrete monitoring of the boundary, sqrt(dt))
    assert np.all(orders[:, 1] > 0.85) and np.all(orders[:, 0] > 0.45)
    assert errs[-1, 1] < 1.5e-3 and errs[-1, 0] < 0.03


# ----------------------------------------------------------------------------------
# (3) invariants, adjointness, bookkeeping
# ----------------------------------------------------------------------------------


def test_forward_sweep_is_the_adjoint_of_the_backward_sweep():
    """With no running payoff and no discount, sum_i m^n V^n = sum_i m^{n+1} V^{n+1} + G E^n exactly."""
    rng = np.random.default_rng(1)
    n, n_t, lower, dx, dt = 60, 30, -1.0, 0.05, 0.02
    c = rng.normal(size=n_t)
    G = rng.uniform(0.8, 1.0, size=n_t)
    q_given = rng.uniform(0.0, 1.0, size=(n_t, n))
    terminal = rng.uniform(0.5, 1.5, size=n)
    m0 = rng.uniform(size=n)
    m0 /= m0.sum()
    pop = simple_population(0, n_t - 1, terminal, np.zeros(n), 1.0, 1.0, 1.5, n_t)
    coef, mesh = StepCoefficients(c, np.full(n_t, 0.7), G), Mesh(lower, dx, dt)
    V, q, _ = backward_sweep(pop, coef, ExitRule(0.0, True, q_given), mesh)
    m, e = forward_sweep(m0, pop, coef, q, mesh)
    lhs = np.sum(m[0] * V[0])
    rhs = np.sum(m[-1] * V[-1]) + np.sum(G[:-1] * e[:-1])
    assert lhs == pytest.approx(rhs, abs=1e-13)
    assert m[-1].sum() + e.sum() == pytest.approx(1.0, abs=1e-14)


def test_entry_maturity_and_bookkeeping():
    pops = [{**BASE_POP, "name": "old", "vintage": -3.0, "life": 5.0, "weight": 2.0},  # matures at t = 2
            {**BASE_POP, "name": "new", "vintage": 1.0, "life": 8.0, "ell": 0.8, "seasonal": {"amplitude": -0.3}}]
    market = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, a_tail=0.2,
                  tau_tail=1.0)
    model = make_model(pops, market, start=0.0, end=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        r = solve(model, Grid(L_min=-1.0, L_max=3.0, n_L=121, dt=1 / 26), SolverOptions(temperature=1e-3))
    check_invariants(r)
    assert r.converged and r.iterations <= 25
    i2, i1 = 52, 26
    assert np.all(r.active_mass[0, i2:] == 0.0) and r.matured_mass[0, -1] > 0.5
    assert np.all(np.isnan(r.value[0, i2 + 1:])) and np.all(r.value[0, i2] == 1.0)
    assert np.all(r.active_mass[1, :i1] == 0.0) and r.active_mass[1, i1] == pytest.approx(1.0)
    assert np.all(np.isnan(r.value[1, :i1])) and np.all(r.exit_prob[1, :i1] == 0.0)
    assert np.all(r.exit_prob[:, -1] == 0.0) and r.sell_flow[-1] == 0.0
    alive = r.t <= 2.0
    assert np.allclose(r.vintage_price[0, alive], r.price[alive] * (1 - 0.2 * np.exp(-(2.0 - r.t[alive]))))
    frame = r.to_frame("populations")
    assert len(frame) == 2 * r.t.size and set(frame.population) == {"old", "new"}
    mkt = r.to_frame("market")
    assert list(mkt.columns[:3]) == ["t", "price", "discount"] and len(mkt) == r.t.size
    with pytest.raises(ValueError, match="kind"):
        r.to_frame("nope")


def test_market_recursion_by_hand():
    exit_mass = np.array([[0.01, 0.0, 0.02], [0.0, 0.03, 0.0]])
    w = np.array([0.25, 0.75])
    life = np.array([[1.0, 0.9, 0.8], [1.0, 1.0, 1.0]])
    dt, pbar, beta, tau_s, theta, S0, K0, Kbar = 0.1, 0.9, 0.5, 0.5, 2.0, 0.01, 0.05, 0.06
    S, s_hat, P, K, pi = market_path(exit_mass, w, life, np.full(3, Kbar), pbar, dt,
                                     ImpactParams(beta, tau_s, theta, 1e-9), S0, K0)
    sh, cap = S0, K0
    for n in range(3):
        s = (w @ exit_mass[:, n]) / dt
        sh = sh + dt / tau_s * (s - sh)
        p = pbar * math.exp(-beta * sh / cap)
        assert (S[n], s_hat[n], P[n], K[n]) == pytest.approx((s, sh, p, cap), rel=1e-14)
        assert pi[:, n] == pytest.approx(p * life[:, n], rel=1e-14)
        cap = cap + dt * theta * (Kbar - cap) - np.sum(pi[:, n] * w * exit_mass[:, n])


# ----------------------------------------------------------------------------------
# (4) the fixed point on a small two-population problem
# ----------------------------------------------------------------------------------


def two_population_model():
    pops = [{**BASE_POP, "name": "pension", "vintage": -2.0, "life": 10.0, "weight": 0.6, "sigma": 0.3, "lam": 0.3,
             "alpha": 0.3, "eta": 0.9, "ell": 0.75, "y": 0.05, "r": 0.08, "g": 0.03, "phi": 0.01,
             "seasonal": {"amplitude": -0.15}},
            {**BASE_POP, "name": "endowment", "vintage": 0.0, "life": 10.0, "weight": 0.4, "sigma": 0.35,
             "kappa": 0.8, "lam": 0.3, "alpha": 0.5, "eta": 0.8, "ell": 0.65, "y": 0.05, "r": 0.08, "g": 0.03,
             "phi": 0.01}]
    market = dict(kind="impact", pbar=0.93, beta=0.1, tau_s=0.25, K0=0.06, Kbar=0.06, theta_K=1.0, S0=0.015,
                  a_tail=0.15, tau_tail=2.0)
    return make_model(pops, market, start=0.0, end=5.0)


def test_fixed_point_two_populations():
    # Without help the iteration map has a slow positive mode (herding, about +0.2) and an
    # oscillating one (price feedback, about -1.1: undamped iteration cycles).  The
    # quasi-Newton preconditioner of the price and Anderson acceleration (the defaults)
    # converge in about 12 evaluations; plain damping needs about twice as many.
    model, grid = two_population_model(), Grid(L_min=-1.0, L_max=3.0, n_L=161, dt=1 / 26)
    r = solve(model, grid, SolverOptions(temperature=1e-3, tol=1e-8, max_iter=25))
    check_invariants(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = solve(model, grid, SolverOptions(temperature=1e-3, damping=0.65, anderson=0, precondition=False,
                                                 tol=1e-8, max_iter=r.iterations))
    print(f"\nfixed point: {r.iterations} iterations, residuals {r.residuals.tolist()}, "
          f"exploitability {r.exploitability:.3g}, mean sell flow {r.sell_flow.mean():.4f}; "
          f"plain damping after as many: {plain.residuals[-1]:.2g}")
    assert r.converged and r.residuals[-1] < 1e-8 and r.iterations <= 15
    assert not plain.converged  # the acceleration is doing the work
    assert r.sell_flow.mean() > 1e-3  # exits matter: the market is really coupled
    assert r.price.min() < 0.93 * (1 - 1e-3)
    assert 0.0 <= r.exploitability < 1e-2
    # the same equilibrium whichever way the fixed point gets there
    slow = solve(model, grid, SolverOptions(temperature=1e-3, damping=0.65, anderson=0, precondition=False,
                                            tol=1e-10, max_iter=200))
    assert np.max(np.abs(slow.price - r.price)) < 1e-7
    assert np.max(np.abs(slow.mean_liquidity - r.mean_liquidity)) < 1e-7


def test_anderson_safeguard_rejects_bad_steps(monkeypatch):
    """Invalid (P <= 0) and residual-increasing Anderson proposals are replaced by the damped step."""
    import mfg.lp_exit.fixed_point as lp

    model, grid = two_population_model(), Grid(L_min=-1.0, L_max=3.0, n_L=161, dt=1 / 26)
    opts = SolverOptions(temperature=1e-3, tol=1e-8, max_iter=40)
    good = solve(model, grid, opts)
    assert good.anderson_rejections == 0
    calls = {"n": 0}
    propose = lp.Anderson.propose

    def sabotaged(self, x, f):
        cand, is_aa = propose(self, x, f)
        if not is_aa:
            return cand, is_aa
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            return -cand, True  # negative prices: invalid
        if calls["n"] % 3 == 2:
            return cand + 0.05, True  # valid but far off: a larger residual
        return cand, True

    monkeypatch.setattr(lp.Anderson, "propose", sabotaged)
    r = solve(model, grid, opts)
    check_invariants(r)
    print(f"\nsafeguard: {r.iterations} evaluations with {r.anderson_rejections} rejections "
          f"(unsabotaged: {good.iterations})")
    assert r.anderson_rejections >= 2 and r.converged
    assert np.max(np.abs(r.price - good.price)) < 1e-7


def test_hard_exit_limit_is_supported():
    """temperature = 0: bang-bang exits; the fixed point may stall (docs/model.md 2.3), invariants still hold."""
    model = two_population_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is allowed: pure equilibria need not exist
        r = solve(model, Grid(L_min=-1.0, L_max=3.0, n_L=161, dt=1 / 26),
                  SolverOptions(temperature=0.0, damping=0.3, tol=1e-8, max_iter=30))
    check_invariants(r)
    q_max = [-math.expm1(-p.a_max / 26) for p in model.populations]
    for k in range(2):
        assert np.all(np.isin(r.exit_prob[k], [0.0, q_max[k]]))
    assert r.residuals[-1] < 1e-2 and 0.0 <= r.exploitability < 1e-4
    print(f"\nhard exit: {r.iterations} iterations, last residual {r.residuals[-1]:.2g}, "
          f"exploitability {r.exploitability:.2g}")


# ----------------------------------------------------------------------------------
# (5) errors and warnings
# ----------------------------------------------------------------------------------


def test_solve_refuses_bad_input():
    model = make_model([BASE_POP])
    grid = Grid(L_min=-1.0, L_max=3.0, n_L=41, dt=0.1)
    with pytest.raises(ValueError, match="method"):
        solve(model, grid, method="euler")
    with pytest.raises(ValueError, match="dt"):
        solve(model, Grid(L_min=-1.0, L_max=3.0, n_L=41, dt=0.3))  # does not divide 5 years
    with pytest.raises(ValueError, match="tau_s"):
        solve(make_model([BASE_POP], {**FLAT_MARKET, "tau_s": 0.05}), grid)
    with pytest.raises(ValueError, match="L_max"):
        solve(model, Grid(L_min=-1.0, L_max=1.5, n_L=41, dt=0.1))
    with pytest.raises(TypeError, match="model"):
        solve({"populations": []}, grid)


def test_narrow_grid_warns():
    pop = {**BASE_POP, "initial_std": 0.05, "sigma": 1.0}
    with pytest.warns(BoundaryMassWarning, match="widen"):
        r = solve(make_model([pop]), Grid(L_min=0.7, L_max=1.3, n_L=31, dt=0.1))
    check_invariants(r)


# ----------------------------------------------------------------------------------
# the calm scenario (docs/model.md 2.10)
# ----------------------------------------------------------------------------------


def test_calm_scenario_is_sane():
    """The impact market's calm (the first version, kept for comparison): discount 5-15%, turnover 1-2.5%."""
    sc = load_scenario("impact_calm")
    assert sc.solver.temperature == 1e-3 and sc.solver.max_iter <= 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # must converge (tol 1e-8 within max_iter <= 25), no boundary mass
        r = solve(sc.model, sc.grid, sc.solver)
    check_invariants(r)
    discount = 1.0 - r.price
    turnover = r.turnover[:-1]
    print(f"\ncalm: {r.iterations} iterations, discount {discount.mean():.3f} "
          f"[{discount.min():.3f}, {discount.max():.3f}], turnover {np.nanmean(turnover):.4f}/yr, "
          f"exploitability {r.exploitability:.2g}, {r.timings['total']:.2f}s")
    assert r.converged and r.residuals[-1] < 1e-8 and r.iterations <= 25
    assert np.all((discount > 0.05) & (discount < 0.15))
    assert 0.01 <= np.nanmean(turnover) <= 0.025


def test_clearing_calm_meets_the_calm_rows():
    """calm.toml (the clearing market) against docs/model.md 2.11's calm rows over its report window:
    discount 5-15% at every step, turnover 1-2.5% of active NAV in every year with max/min <= 1.5, the
    second-half share 55-65% in every year, dry powder 1.5-3 years of the value traded."""
    sc = load_scenario("calm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = solve(sc.model, sc.grid, sc.solver)
    check_invariants(r)
    r0, r1 = sc.report_window
    inside = (r.t >= r0 - 1e-9) & (r.t < r1 - 1e-9)
    assert np.all((1.0 - r.price[inside] > 0.05) & (1.0 - r.price[inside] < 0.15))
    years = np.floor(r.t[inside] + 1e-9)
    vol = (r.sell_flow * r.dt)[inside]
    nav = r.active_nav[inside]
    frac = r.t[inside] - years
    turnover, h2 = [], []
    for y in np.unique(years):
        sel = years == y
        turnover.append(vol[sel].sum() / nav[sel].mean())
        h2.append(vol[sel & (frac >= 0.5 - 1e-9)].sum() / vol[sel].sum())
    turnover, h2 = np.array(turnover), np.array(h2)
    dry_powder = r.buyer_capital[inside].mean() / (r.spend[inside].sum() / (r1 - r0))
    print(f"\nclearing calm: {r.iterations} iterations, discount {100 * (1 - r.price[inside].max()):.1f}-"
          f"{100 * (1 - r.price[inside].min()):.1f}%, turnover {100 * turnover.min():.2f}-{100 * turnover.max():.2f}%, "
          f"H2 share {100 * h2.min():.1f}-{100 * h2.max():.1f}%, dry powder {dry_powder:.2f} years")
    assert np.all((turnover >= 0.01) & (turnover <= 0.025)) and turnover.max() / turnover.min() <= 1.5
    assert np.all((h2 >= 0.55) & (h2 <= 0.65))
    assert 1.5 <= dry_powder <= 3.0


@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
def test_every_shipped_scenario_clears_at_every_step(name):
    """docs/model.md 2.4 at every step of every shipped clearing scenario: P < P_cap and volume = D(P, K) to
    1e-10 relative, or P = P_cap and volume <= D(P_cap, K); capital never negative; price above 0.1."""
    from mfg.lp_exit.clearing import BRANCH_CLOSED, clearing_params, demand
    from mfg.lp_exit.scenarios import solve_scenario

    sc = load_scenario(name)
    if sc.model.market.kind != "clearing":
        pytest.skip(f"{name} is an impact-market scenario (docs/model.md 2.4b)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    assert r.converged, r.message
    params = clearing_params(sc.model.market)
    cap = params.P_cap
    for n in range(r.t.size):
        if r.market_branch[n] == BRANCH_CLOSED:
            continue
        D = demand(r.price[n], r.buyer_capital[n], r.inputs.pbar[n], r.dt, params)
        if r.price[n] < cap:
            assert abs(r.sell_flow[n] - D) <= 1e-10 * D, (n, r.sell_flow[n], D)
        else:
            assert r.price[n] == cap and r.sell_flow[n] <= D * (1 + 1e-12)
    assert np.all(r.buyer_capital >= 0.0) and np.all(r.price > 0.1)


# ----------------------------------------------------------------------------------
# (6) starting from a state, time-varying inputs (docs/model.md 2.7)
# ----------------------------------------------------------------------------------


def staggered_model():
    """Three populations: one active from the start, one entering at t = 1, one maturing at t = 2."""
    pops = [{**BASE_POP, "name": "a", "vintage": -1.0, "life": 6.0, "weight": 0.5, "lam": 0.3, "alpha": 0.3},
            {**BASE_POP, "name": "b", "vintage": 1.0, "life": 6.0, "weight": 0.3, "ell": 0.8},
            {**BASE_POP, "name": "c", "vintage": -3.0, "life": 5.0, "weight": 0.2}]
    market = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, S0=0.01, a_tail=0.2)
    return make_model(pops, market, start=0.0, end=3.0)


GRID_S = Grid(L_min=-1.0, L_max=3.0, n_L=81, dt=1 / 13)
OPTS_S = SolverOptions(temperature=1e-3, tol=1e-11, max_iter=40)


def test_solve_from_its_own_initial_state_reproduces_it():
    model = staggered_model()
    full = solve(model, GRID_S, OPTS_S)
    check_invariants(full)
    st0 = full.state_at(0)
    assert st0.t0 == 0.0 and st0.K == 0.05 and st0.S_hat == 0.01
    assert np.all(st0.masses[1] == 0.0)  # b has not entered yet
    again = solve(model, GRID_S, OPTS_S, initial=st0)
    check_invariants(again)
    for name in ("price", "mean_liquidity", "buyer_capital", "sell_pressure", "active_mass", "exited_mass",
                 "matured_mass"):
        assert np.max(np.abs(getattr(again, name) - getattr(full, name))) < 1e-12, name
    assert again.exploitability == pytest.approx(full.exploitability, abs=1e-12)
    # a guess at the solution converges at once to the same equilibrium
    warm = solve(model, GRID_S, OPTS_S, guess=(full.price, full.mean_liquidity))
    assert warm.iterations <= 2 and np.max(np.abs(warm.price - full.price)) < 1e-10
    with pytest.raises(ValueError, match="guess"):
        solve(model, GRID_S, OPTS_S, guess=(full.price[:-1], full.mean_liquidity))
    # explicit constant inputs equal the defaults
    n_t = full.t.size
    same = solve(model, GRID_S, OPTS_S, inputs=MarketInputs(Kbar=np.full(n_t, 0.05), pbar=np.full(n_t, 0.92),
                                                            sigma=np.full((3, n_t), 0.4)))
    assert np.array_equal(same.price, full.price)


def test_partial_state_mass_accounting():
    """Start at t = 1 from a state with part of the mass gone: totals stay 1, the market starts from K, S_hat."""
    model = staggered_model()
    full = solve(model, GRID_S, OPTS_S)
    st = full.state_at(13)  # t = 1: a active, b entering now, c active until t = 2
    assert st.t0 == pytest.approx(1.0)
    assert st.masses[1].sum() == pytest.approx(1.0)  # b enters at t = 1 with its initial law
    masses = st.masses.copy()
    masses[0] *= 0.6  # 40% of a's holders gone (a shock); the rest counts as exited
    shocked = LPState(t0=st.t0, masses=masses, K=0.5 * st.K, S_hat=st.S_hat)
    r = solve(model, GRID_S, OPTS_S, initial=shocked)
    check_invariants(r)
    assert r.t[0] == pytest.approx(1.0) and r.t.size == full.t.size - 13
    assert r.buyer_capital[0] == pytest.approx(0.5 * st.K)
    assert r.active_mass[0, 0] == pytest.approx(0.6 * st.masses[0].sum(), abs=1e-12)
    assert r.exited_mass[0, 0] == pytest.approx(1.0 - 0.6 * st.masses[0].sum(), abs=1e-12)
    assert r.exited_mass[2, 0] == pytest.approx(full.exited_mass[2, 13], abs=1e-12)
    # halved dry powder: a deeper discount right after the state than in the unshocked path
    assert r.price[:5].min() < full.price[13:18].min()
    # a matured population carries its bookkeeping: solve from t = 2 on, c is paid out
    late = solve(model, GRID_S, OPTS_S, initial=full.state_at(26))
    check_invariants(late)
    assert np.all(late.active_mass[2] == 0.0)
    assert np.allclose(late.matured_mass[2] + late.exited_mass[2], 1.0, atol=1e-12)
    assert late.matured_mass[2, 0] == pytest.approx(full.matured_mass[2, 26], abs=1e-12)


def test_time_varying_inputs_act():
    model = staggered_model()
    full = solve(model, GRID_S, OPTS_S)
    n_t = full.t.size
    pbar = np.full(n_t, 0.92)
    pbar[13:20] = 0.8  # calm price lowered for half a year
    sigma = np.full((3, n_t), 0.4)
    sigma[:, 13:20] = 0.8
    r = solve(model, GRID_S, OPTS_S, inputs=MarketInputs(pbar=pbar, Kbar=np.full(n_t, 0.05), sigma=sigma))
    check_invariants(r)
    assert r.converged
    assert np.all(r.price <= pbar) and np.all(r.price[13:20] < full.price[13:20] - 0.05)
    assert np.array_equal(r.inputs.pbar, pbar)
    with pytest.raises(ValueError, match="shape"):
        solve(model, GRID_S, OPTS_S, inputs=MarketInputs(pbar=pbar[:-1]))
    with pytest.raises(ValueError, match="> 0"):
        MarketInputs(Kbar=np.zeros(n_t))


def test_state_is_validated():
    model = staggered_model()
    full = solve(model, GRID_S, OPTS_S)
    st = full.state_at(5)
    with pytest.raises(ValueError, match="step"):
        solve(model, GRID_S, OPTS_S, initial=LPState(t0=0.123, masses=st.masses, K=st.K, S_hat=st.S_hat))
    bad = st.masses.copy()
    bad[1, 10] = 0.1  # b has not entered at t = 5/13
    with pytest.raises(ValueError, match="enters after"):
        solve(model, GRID_S, OPTS_S, initial=LPState(t0=st.t0, masses=bad, K=st.K, S_hat=st.S_hat))
    with pytest.raises(ValueError, match="at most 1"):
        LPState(t0=0.0, masses=2 * st.masses, K=0.05, S_hat=0.0)
    with pytest.raises(ValueError, match="shape"):
        solve(model, GRID_S, OPTS_S, initial=LPState(t0=st.t0, masses=st.masses[:, :-1], K=st.K, S_hat=st.S_hat))
    with pytest.raises(IndexError):
        full.state_at(full.t.size)


def test_threads_over_populations_are_bit_identical():
    model = staggered_model()
    one = solve(model, GRID_S, OPTS_S)
    two = solve(model, GRID_S, OPTS_S.model_copy(update={"workers": 3}))
    for name in ("price", "mean_liquidity", "density", "value", "exit_prob", "residuals"):
        assert np.array_equal(getattr(one, name), getattr(two, name), equal_nan=True), name
    assert one.exploitability == two.exploitability


def test_store_paths_keeps_the_time_series_and_the_exploitability():
    """store="paths" (docs/lp_exit.md, Memory): the same paths, bookkeeping and exploitability without the tables."""
    model, grid = two_population_model(), Grid(L_min=-1.0, L_max=3.0, n_L=121, dt=1 / 26)
    opts = SolverOptions(temperature=1e-3, tol=1e-9, max_iter=60)
    a = solve(model, grid, opts)
    b = solve(model, grid, opts, store="paths")
    assert b.value is None and b.density is None and b.exit_prob is None
    for name in ("price", "mean_liquidity", "sell_flow", "buyer_capital", "flow", "exited_mass"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.max(np.abs(a.active_mass - b.active_mass)) < 1e-14  # summed in another order
    assert np.nanmax(np.abs(a.threshold - b.threshold)) == 0.0
    assert b.exploitability == pytest.approx(a.exploitability, rel=1e-10, abs=1e-15)
    with pytest.raises(ValueError, match="store='paths'"):
        b.state_at(3)
    with pytest.raises(ValueError, match="store"):
        solve(model, grid, opts, store="nothing")
