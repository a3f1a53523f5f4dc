"""Finite-N LP market engine (abm/lp_market/engine.py, abm/lp_market/policies.py) against docs/model.md 2.8-2.9.

Statistical checks run at fixed seeds with stated error bars; observed figures are
printed (``pytest -s``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import stats

from abm.lp_market.engine import ACTIVE, MATURED, PENDING, SOLD, allocate_agents, simulate
from abm.lp_market.policies import CallablePolicy, ThresholdPolicy
from mfg.lp_exit import MarketInputs, solve
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions, load_scenario

ROOT = Path(__file__).resolve().parents[1]
CALM = ROOT / "mfg" / "lp_exit" / "library" / "impact_calm.toml"  # the impact market (docs/model.md 2.4b)

BASE = dict(name="lp", vintage=0.0, life=5.0, weight=1.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6,
            y=0.15, r=0.2, g=0.05, a_max=4.0, initial_mean=1.0, initial_std=0.2)
MARKET = dict(kind="impact", pbar=0.9, beta=0.5, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0)


def make_model(pops, market=MARKET, start=0.0, end=None):
    end = end if end is not None else max(p["vintage"] + p["life"] for p in pops)
    return LPExitModel(populations=pops, market=market, start=start, end=end)


# ----------------------------------------------------------------------------------
# exact laws (docs/model.md 2.9)
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_mean_field_mean_and_variance(lam):
    """No exits, no feedback: E M^N_t and Var(M^N_t) = V_kappa(t)/N (lambda cancels).

    The engine freezes ``M^N`` over a step, so for ``lam > 0`` its own law is the linear
    recursion ``M' = rho M + b + xi`` with ``rho = e^{-a dt} + lam (1 - e^{-a dt})/a``
    (``a = kappa + lam``), ``Var xi = sigma^2 (1 - e^{-2 a dt}) / (2 a N)``: that is tested
    to Monte Carlo error; its distance to the continuous law is O(dt) and printed.
    For ``lam = 0`` the two coincide (exact OU transition).
    """
    kappa, lbar, m0, s0, sigma, N, R, dt = 1.0, 1.0, 0.4, 0.3, 0.5, 40, 4000, 0.05
    pop = {**BASE, "kappa": kappa, "lbar": lbar, "lam": lam, "alpha": 0.0, "sigma": sigma, "initial_mean": m0,
           "initial_std": s0}
    model = make_model([pop], end=1.0)
    sim = simulate(model, None, N, R, 2024, dt=dt)
    t = sim.t
    M = sim.mean_liquidity
    assert np.all(sim.exits == 0) and np.all(sim.active_count == N)
    # continuous law
    mean_c = lbar + (m0 - lbar) * np.exp(-kappa * t)
    var_c = (s0**2 * np.exp(-2 * kappa * t) + sigma**2 * (1 - np.exp(-2 * kappa * t)) / (2 * kappa)) / N
    # the scheme's own law
    a = kappa + lam
    e = math.exp(-a * dt)
    rho = e + lam * (1 - e) / a
    b = kappa * lbar * (1 - e) / a
    sd2 = sigma**2 * (1 - e * e) / (2 * a) / N
    mean_d = np.empty(t.size)
    var_d = np.empty(t.size)
    mean_d[0], var_d[0] = m0, s0**2 / N
    for n in range(t.size - 1):
        mean_d[n + 1] = rho * mean_d[n] + b
        var_d[n + 1] = rho**2 * var_d[n] + sd2
    if lam == 0.0:
        assert np.allclose(mean_d, mean_c, rtol=0, atol=1e-13) and np.allclose(var_d, var_c, rtol=1e-12, atol=0)
    mean_hat = M.mean(axis=0)
    var_hat = M.var(axis=0, ddof=1)
    z_mean = (mean_hat - mean_d) / np.sqrt(var_d / R)
    se_rel = math.sqrt(2.0 / (R - 1))  # relative standard error of a Gaussian sample variance
    z_var = (var_hat / var_d - 1.0) / se_rel
    print(f"\nlam={lam}: N={N}, R={R}: max|z| of the mean {np.abs(z_mean).max():.2f}, of Var(M^N) "
          f"{np.abs(z_var).max():.2f} (1 SE of the variance = {100 * se_rel:.1f}%); scheme vs continuous law: "
          f"mean {np.abs(mean_d - mean_c).max():.2e}, variance {np.abs(var_d / var_c - 1).max():.2%}")
    assert np.abs(z_mean).max() < 4.0
    assert np.abs(z_var).max() < 4.0


def test_exit_counts_are_binomial_with_constant_hazard():
    """lambda = alpha = 0, a rule that ignores the price: exits by step n ~ Binomial(N, F_n), F_n = 1 - (1-q)^n."""
    q, N, R, steps = 0.04, 60, 3000, 10
    pop = {**BASE, "lam": 0.0, "alpha": 0.0}
    model = make_model([pop], end=1.0)
    sim = simulate(model, ThresholdPolicy(1e9, q), N, R, 7, dt=1.0 / steps)
    counts = sim.exits[:, 0, :steps].sum(axis=1)
    F = 1.0 - (1.0 - q) ** steps
    # chi-square goodness of fit on bins with expected count >= 5 (tails pooled)
    ks = np.arange(N + 1)
    p = stats.binom.pmf(ks, N, F)
    lo, hi = int(stats.binom.ppf(0.01, N, F)), int(stats.binom.ppf(0.99, N, F))
    exp_ = np.concatenate([[p[:lo].sum()], p[lo:hi + 1], [p[hi + 1:].sum()]]) * R
    obs = np.concatenate([[np.sum(counts < lo)], [np.sum(counts == k) for k in range(lo, hi + 1)],
                          [np.sum(counts > hi)]])
    chi2, pval = stats.chisquare(obs, exp_)
    print(f"\nconstant hazard: mean count {counts.mean():.3f} (N F = {N * F:.3f}), chi2 = {chi2:.1f} on {obs.size - 1} "
          f"dof, p = {pval:.3f}")
    assert pval > 1e-3
    assert abs(counts.mean() - N * F) < 4 * math.sqrt(N * F * (1 - F) / R)


def test_exit_counts_are_binomial_under_a_threshold_rule():
    """lambda = alpha = 0, threshold rule on L: LPs are independent, so the count is Binomial(N, F_t)
    with F_t estimated from the pooled replications (index-of-dispersion test)."""
    N, R = 80, 2000
    pop = {**BASE, "lam": 0.0, "alpha": 0.0, "sigma": 0.5, "initial_std": 0.3}
    model = make_model([pop], end=2.0)
    sim = simulate(model, ThresholdPolicy(0.6, 0.5), N, R, 99, dt=0.05)
    counts = sim.exits[:, 0, :].sum(axis=1)
    F = counts.mean() / N
    D = np.sum((counts - counts.mean()) ** 2) / (N * F * (1 - F))  # ~ chi2(R - 1) under Binomial(N, F)
    pval = 2 * min(stats.chi2.cdf(D, R - 1), stats.chi2.sf(D, R - 1))
    print(f"\nthreshold rule: F = {F:.4f}, dispersion statistic {D:.0f} on {R - 1} dof (p = {pval:.3f})")
    assert 0.2 < F < 0.8 and pval > 1e-3
    # herding (lambda > 0) correlates the LPs: over-dispersion, the test's power
    herd = simulate(make_model([{**pop, "lam": 3.0}], end=2.0), ThresholdPolicy(0.6, 0.5), N, R, 99, dt=0.05)
    c2 = herd.exits[:, 0, :].sum(axis=1)
    F2 = c2.mean() / N
    D2 = np.sum((c2 - c2.mean()) ** 2) / (N * F2 * (1 - F2))
    print(f"  with lam = 3: dispersion {D2:.0f} ({D2 / (R - 1):.1f}x)")
    assert D2 / (R - 1) > 1.3


# ----------------------------------------------------------------------------------
# reproducibility, policies, bookkeeping
# ----------------------------------------------------------------------------------


def _two_pop_model():
    pops = [{**BASE, "name": "a", "weight": 0.6, "lam": 0.5, "alpha": 0.3, "ell": 0.8},
            {**BASE, "name": "b", "weight": 0.4, "vintage": -3.0, "kappa": 0.7, "lam": 0.5, "alpha": 0.3,
             "seasonal": {"amplitude": -0.2}}]
    market = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, a_tail=0.2,
                  tau_tail=1.0, S0=0.02)
    return make_model(pops, market, end=4.0)


@pytest.fixture(scope="module")
def two_pop():
    model = _two_pop_model()
    grid = Grid(L_min=-1.0, L_max=3.0, n_L=81, dt=0.04)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(model, grid, SolverOptions(temperature=1e-3))
    return model, grid, res


def _same(a, b):
    for name in ("price", "vintage_price", "buyer_capital", "sell_pressure", "sell_flow", "exits", "active_count",
                 "liquidity", "status"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.mean_liquidity, b.mean_liquidity, equal_nan=True)


def test_bit_identical_for_any_thread_count(two_pop):
    model, _, res = two_pop
    kw = dict(n_agents=1500, n_reps=3, seed=5, block_size=256)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(model, res, **kw)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = simulate(model, res, **kw)
    finally:
        numba.set_num_threads(old)
    _same(one, two)
    _same(one, simulate(model, res, threads=1, **kw))
    assert one.exits.sum() > 50  # the policy does act
    # replication r does not depend on how many replications run
    more = simulate(model, res, 1500, 4, 5, block_size=256)
    assert np.array_equal(more.price[:3], one.price)
    # another seed gives another path
    assert not np.array_equal(simulate(model, res, 1500, 3, 6, block_size=256).price, one.price)


def test_callable_policy_matches_the_array_policy(two_pop):
    model, grid, _ = two_pop
    thr = np.array([0.7, 0.55])
    qmax = np.array([-math.expm1(-p.a_max * grid.dt) for p in model.populations])
    seen = []

    def rule(L, ctx):
        seen.append((ctx.step, ctx.population, ctx.price_prev, ctx.mean_liquidity))
        return np.where(L < thr[ctx.population], qmax[ctx.population], 0.0)

    a = simulate(model, ThresholdPolicy(thr), 300, 2, 3, dt=grid.dt)
    b = simulate(model, CallablePolicy(rule), 300, 2, 3, dt=grid.dt)
    c = simulate(model, rule, 300, 2, 3, dt=grid.dt)
    _same(a, b)
    _same(a, c)
    assert a.exits.sum() > 10 and len(seen) > 100
    assert all(np.isfinite(p) and 0 < p < 1 for _, _, p, _ in seen)


def test_entry_maturity_and_bookkeeping(two_pop):
    model, grid, res = two_pop
    sim = simulate(model, res, 500, 2, 1, snapshot_times=[0.0, 1.0, 4.0])
    # same active steps as the solver (entry at the vintage, maturity at vintage + life)
    assert np.array_equal(sim.active_count[0] > 0, res.active_mass > 0)
    n_a, n_b = sim.n_per_population
    assert (n_a, n_b) == (300, 200) and sim.weights.sum() == pytest.approx(1.0)
    # population b matures at t = 2 (step 50): all its remaining LPs are paid out
    i2 = 50
    assert np.all(sim.active_count[:, 1, i2:] == 0)
    st_b = sim.status[:, n_a:]
    assert np.all((st_b == SOLD) | (st_b == MATURED))
    assert np.all(sim.exits[:, 1, i2:] == 0) and np.all(sim.exits[:, :, -1] == 0)
    # counts add up
    sold = (sim.status == SOLD).reshape(2, -1)
    assert np.array_equal(sold[:, :n_a].sum(axis=1), sim.exits[:, 0].sum(axis=1))
    assert np.array_equal(sold[:, n_a:].sum(axis=1), sim.exits[:, 1].sum(axis=1))
    ex = sim.exited_mass
    assert np.allclose(ex[:, :, -1], sim.exits[:, :, :-1].sum(axis=2) / sim.n_per_population, atol=0)
    # the flows reproduce the market recursion's sell flow
    assert np.allclose(sim.flow.sum(axis=1), sim.sell_flow, rtol=1e-12, atol=1e-15)
    # snapshots: the state at t_n before the step's sales
    assert list(sim.snapshot_steps) == [0, 25, 100]
    assert np.all(sim.snapshot_status[:, 0] == ACTIVE)
    assert np.array_equal(sim.snapshot_liquidity[:, 2], sim.liquidity)
    w = sim.weights[sim.agent_population] / sim.n_per_population[sim.agent_population]
    act = sim.snapshot_status[0, 1] == ACTIVE
    assert np.sum(w[act] * sim.snapshot_liquidity[0, 1, act]) / np.sum(w[act]) == pytest.approx(
        sim.mean_liquidity[0, 25], rel=1e-12)
    # tidy frames
    mk = sim.to_frame("market")
    assert len(mk) == 2 * sim.t.size and {"replication", "t", "price", "mean_liquidity"} <= set(mk.columns)
    pf = sim.to_frame("populations")
    assert len(pf) == 2 * 2 * sim.t.size and pf["exits"].sum() == sim.exits.sum()
    af = sim.to_frame("agents")
    assert len(af) == 2 * 3 * 500 and set(af["status"].unique()) <= {"pending", "active", "sold", "matured"}


def test_pending_population_enters_with_its_initial_law():
    pops = [{**BASE, "name": "old", "weight": 0.5, "initial_mean": 1.5, "initial_std": 0.0},
            {**BASE, "name": "new", "weight": 0.5, "vintage": 1.0, "initial_mean": 0.5, "initial_std": 0.0}]
    model = make_model(pops, start=0.0, end=2.0)
    sim = simulate(model, None, 10, 1, 0, dt=0.1, snapshot_times=[0.5, 1.0])
    st = sim.snapshot_status[0]
    assert np.all(st[0, 5:] == PENDING) and np.all(st[1] == ACTIVE)
    assert np.all(sim.snapshot_liquidity[0, 1, 5:] == 0.5)  # waited at its initial value
    assert np.isclose(sim.mean_liquidity[0, 10], (sim.snapshot_liquidity[0, 1, :5].mean() + 0.5) / 2, rtol=1e-13)


def test_allocation_by_weight():
    assert list(allocate_agents(np.array([0.225, 0.225, 0.175, 0.175, 0.1, 0.1]), 1000)) == [225, 225, 175, 175,
                                                                                               100, 100]
    assert list(allocate_agents(np.array([0.98, 0.01, 0.01]), 3)) == [1, 1, 1]
    assert allocate_agents(np.array([1.0, 0.0]), 5).tolist() == [5, 0]
    with pytest.raises(ValueError, match="smaller than the number of populations"):
        allocate_agents(np.array([0.5, 0.5]), 1)


def test_shock_event_shifts_liquidity_and_cuts_capital():
    from mfg.lp_exit.events import ShockEvent

    pop = {**BASE, "lam": 0.0, "alpha": 0.0, "kappa": 0.8}
    model = make_model([pop, {**pop, "name": "other"}], end=2.0)
    ev = ShockEvent(time=0.5, populations=("lp",), liquidity_shift=-0.3, capital_cut=0.4, Kbar_factor=0.5,
                    duration=0.5)
    base = simulate(model, None, 200, 2, 4, dt=0.05)
    hit = simulate(model, None, 200, 2, 4, dt=0.05, events=[ev])
    n_e = 10
    t = base.t
    # the same random numbers (nobody sells): the shift decays exactly as e^{-kappa (t - tau)}
    d = hit.liquidity[:, :100] - base.liquidity[:, :100]
    assert np.allclose(d, -0.3 * math.exp(-0.8 * (t[-1] - 0.5)), rtol=1e-9, atol=1e-12)
    assert np.array_equal(hit.liquidity[:, 100:], base.liquidity[:, 100:])
    assert np.array_equal(hit.buyer_capital[:, :n_e], base.buyer_capital[:, :n_e])
    assert np.allclose(hit.buyer_capital[:, n_e], 0.6 * base.buyer_capital[:, n_e], rtol=1e-14)
    # K-bar halved over [0.5, 1.0): capital refills towards 0.025 there
    K = hit.buyer_capital[0]
    assert np.allclose(K[n_e + 1], K[n_e] + 0.05 * 1.0 * (0.025 - K[n_e]), rtol=1e-12)
    dm = hit.mean_liquidity[0, n_e:] - base.mean_liquidity[0, n_e:]
    assert np.allclose(dm, -0.15 * np.exp(-0.8 * (t[n_e:] - 0.5)), rtol=1e-9)


# ----------------------------------------------------------------------------------
# the N = 10^5 market against the mean-field solution (calm scenario, coarse grid)
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calm():
    sc = load_scenario(CALM)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for steps in (13, 26):
            grid = Grid(L_min=-1.5, L_max=3.5, n_L=401, dt=1.0 / steps)
            out[steps] = solve(sc.model, grid, sc.solver)
    return sc, out


def test_large_market_matches_the_mfg_price_path(calm):
    """N = 10^5, the MFG policy, the solver's two-point step: the mean price path within Monte Carlo error."""
    sc, res = calm
    mfg = res[13]
    R = 12
    sim = simulate(sc.model, mfg, 100_000, R, 2026, transition="two-point")
    assert np.array_equal(sim.active_count[0] > 0, mfg.active_mass > 0)
    m, se = sim.mean_se("price")
    z = (m - mfg.price) / se
    ml, sl = sim.mean_se("mean_liquidity")
    zm = (ml - mfg.mean_liquidity) / sl
    print(f"\nN=1e5, R={R}, dt=1/13, two-point: price gap max {np.abs(m - mfg.price).max():.2e} (SE up to "
          f"{se.max():.1e}), max|z| {np.abs(z).max():.2f}, rms z {np.sqrt(np.mean(z**2)):.2f}; mean liquidity "
          f"max|z| {np.abs(zm).max():.2f}, rms z {np.sqrt(np.mean(zm**2)):.2f}")
    # 131 correlated t-statistics with R - 1 = 11 dof
    assert np.sqrt(np.mean(z**2)) < 2.0 and np.abs(z).max() < 5.5
    assert np.sqrt(np.mean(zm**2)) < 2.0 and np.abs(zm).max() < 5.5
    assert np.abs(m - mfg.price).max() < 4e-3


def test_exact_ou_step_differs_from_the_solver_step_by_order_dt(calm):
    """The exact Gaussian OU step against the MFG's two-point Euler step, same MFG policy: a price bias O(dt).

    Euler's decay ``1 - a dt`` against ``e^{-a dt}`` and the two-point noise give the solver's
    step a stationary variance larger by about ``a dt / 2`` (5% at ``a = 1.2, dt = 1/13``): a
    fatter lower tail, more sales, a lower price.  The exact step's price is higher by an
    amount that halves with ``dt``.
    """
    sc, res = calm
    gaps = {}
    for steps, R in ((13, 6), (26, 4)):
        mfg = res[steps]
        ex = simulate(sc.model, mfg, 100_000, R, 11).price.mean(axis=1)  # time-mean price of each replication
        tp = simulate(sc.model, mfg, 100_000, R, 12, transition="two-point").price.mean(axis=1)
        gaps[steps] = (ex.mean() - tp.mean(), math.sqrt(ex.var(ddof=1) / R + tp.var(ddof=1) / R),
                       tp.mean() - mfg.price.mean())
    ratio = gaps[13][0] / gaps[26][0]
    print(f"\ntime-mean price, exact OU step minus two-point step: {gaps[13][0]:.2e} +- {gaps[13][1]:.1e} "
          f"(dt = 1/13), {gaps[26][0]:.2e} +- {gaps[26][1]:.1e} (dt = 1/26), ratio {ratio:.2f} (O(dt): 2); "
          f"two-point minus MFG: {gaps[13][2]:.1e}, {gaps[26][2]:.1e}")
    for g, s, _ in gaps.values():
        assert g > 4 * s  # a real bias
    assert 1.2 < ratio < 3.2  # O(dt): 2; O(1): 1; O(dt^2): 4


# ----------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------


def test_bad_input(two_pop):
    model, grid, res = two_pop
    for n in (0, -3):
        with pytest.raises(ValueError, match="n_agents must be >= 1"):
            simulate(model, res, n, 1, 0)
    with pytest.raises(TypeError, match="n_agents must be an integer"):
        simulate(model, res, 10.5, 1, 0)
    with pytest.raises(TypeError, match="n_agents must be an integer"):
        simulate(model, res, True, 1, 0)
    with pytest.raises(ValueError, match="n_reps must be >= 1"):
        simulate(model, res, 10, 0, 0)
    with pytest.raises(ValueError, match="time steps disagree"):
        simulate(model, res, 10, 1, 0, dt=0.02)
    with pytest.raises(ValueError, match="time step is unknown"):
        simulate(model, ThresholdPolicy(0.5), 10, 1, 0)
    other = make_model([dict(p.model_dump()) for p in model.populations], model.market.model_dump(), end=3.0)
    with pytest.raises(ValueError, match="time axis"):
        simulate(other, res, 10, 1, 0)
    one = make_model([model.populations[0].model_dump()], model.market.model_dump(), end=4.0)
    with pytest.raises(ValueError, match="populations"):
        simulate(one, res, 10, 1, 0)
    with pytest.raises(ValueError, match="does not divide"):
        simulate(model, None, 10, 1, 0, dt=0.03)
    with pytest.raises(ValueError, match="transition"):
        simulate(model, res, 10, 1, 0, transition="euler")
    with pytest.raises(ValueError, match="finite"):
        simulate(model, ThresholdPolicy([np.nan, 0.5]), 10, 1, 0, dt=0.04)
    with pytest.raises(ValueError, match="outside"):
        simulate(model, lambda L, ctx: np.full(L.shape, np.nan), 10, 1, 0, dt=0.04)
    with pytest.raises(ValueError, match="shape"):
        simulate(model, lambda L, ctx: np.zeros(L.size + 1), 10, 1, 0, dt=0.04)
    with pytest.raises(ValueError, match="finite"):
        MarketInputs(Kbar=np.full(101, np.nan))
    with pytest.raises(ValueError, match="shape"):
        simulate(model, res, 10, 1, 0, inputs=MarketInputs(Kbar=np.full(7, 0.05)))
    # NaN that slipped past validation (model_construct) is still refused
    bad_pop = model.populations[0].model_copy(update={"kappa": float("nan")})
    bad = LPExitModel.model_construct(populations=(bad_pop, model.populations[1]), market=model.market,
                                      start=0.0, end=4.0)
    with pytest.raises(ValueError, match=r"populations\[0\]\.kappa"):
        simulate(bad, res, 10, 1, 0)
    with pytest.raises(TypeError, match="policy must be"):
        simulate(model, 3.0, 10, 1, 0, dt=0.04)
    with pytest.raises(ValueError, match="snapshot_times"):
        simulate(model, res, 10, 1, 0, snapshot_times=[9.0])


def test_engine_does_not_import_mesa():
    code = "import sys, abm.lp_market.engine, abm.lp_market.policies; print('mesa' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
