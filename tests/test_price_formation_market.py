"""Tests of the finite-N price-formation market and of the m_0 sampler (docs/model.md 1.5).

(a) the LQ law ``price^N - price = -(gamma + eta (T - t)) (xbar^N_0 - xbar_0)`` on the
paper's test 1 and on an LQ problem with ``gamma != 0`` and other ``c, eta``, supply and
density: exactly (to the fixed-point tolerance) for populations shifted by whole cells,
statistically for sampled populations, and against the closed form of docs/model.md 1.3;
(b) clearing: the mean holding moves by ``h Q`` per step; (c) determinism; (d) the
sampler (KS, moments, quantiles); (e) error paths.  Meshes are coarse
(``rho = 0.02, h = 0.04``) so the file runs in seconds once the kernels are compiled.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from abm.price_formation.market import (
    PriceFormationMarketResult,
    sample_initial_holdings,
    simulate_price_formation_market,
)
from abm.price_formation.sampling import as_generator, p1_density, sample_density
from experiments.price_formation_paper import paper_test
from mfg.price_formation import ConvergenceWarning, PriceFormationProblem, QuadraticImpact, solve
from mfg.price_formation.exact import LQSolution, lq_price
from mfg.results import BoundaryMassWarning

RHO, H = 0.02, 0.04
T = 1.0

# ----------------------------------------------------------------------------------
# a second LQ problem: gamma != 0, c != 1, other supply and density
# ----------------------------------------------------------------------------------
C2, ETA2, KAPPA2, GAMMA2, ZETA2 = 2.0, 0.5, -0.1, 1.5, 0.2


def gauss_density(x):
    """Unnormalised N(0.1, 0.25^2); negligible (< 1e-20) at the domain's ends +-1.5."""
    return np.exp(-0.5 * ((np.asarray(x, dtype=float) - 0.1) / 0.25) ** 2)


def supply2(t):
    return 0.3 * np.cos(2 * np.pi * np.asarray(t, dtype=float)) - 0.2


def potential2(x):
    return 0.5 * ETA2 * (np.asarray(x, dtype=float) - KAPPA2) ** 2


def terminal2(x):
    return 0.5 * GAMMA2 * (np.asarray(x, dtype=float) - ZETA2) ** 2


PROBLEM2 = PriceFormationProblem(impact=QuadraticImpact(C2), potential=potential2, terminal=terminal2, supply=supply2,
                                 initial_density=gauss_density, domain=(-1.5, 1.5), horizon=T)
EXACT2 = LQSolution(c=C2, eta=ETA2, kappa=KAPPA2, gamma=GAMMA2, zeta=ZETA2, supply=supply2,
                    initial_density=gauss_density, support=(-1.5, 1.5), horizon=T)


def lq_case(name):
    if name == "paper test 1":
        pt = paper_test(1)
        return pt.problem, pt.exact
    return PROBLEM2, EXACT2


_CACHE: dict = {}


def mean_field(name):
    """Nodal MFG price and the particle market on 2000 quantile holdings (same mesh)."""
    if name not in _CACHE:
        problem, exact = lq_case(name)
        mfg = solve(problem, rho=RHO, h=H, tol=1e-11)
        q = p1_density(problem.initial_density, problem.domain).quantile((np.arange(2000) + 0.5) / 2000)
        ref = simulate_price_formation_market(problem, rho=RHO, h=H, holdings=q, tol=1e-11, initial_price=mfg.price)
        _CACHE[name] = (problem, exact, mfg, ref, q)
    return _CACHE[name]


def law(exact, t, shift=0.0):
    """``gamma + eta (T - t - shift)``: the continuous law for ``shift = 0``, the discrete
    one for ``shift = h`` (the potential is charged on steps k+1..K-1)."""
    return exact.gamma + exact.eta * (exact.horizon - t - shift)


CASES = ["paper test 1", "gamma != 0"]

# ----------------------------------------------------------------------------------
# (a) the LQ law of docs/model.md 1.5
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("cells", [-5, 3])
def test_shift_by_whole_cells_obeys_the_law_exactly(name, cells):
    """Shifting every holding by a whole number of cells is an exact symmetry of the
    discrete LQ scheme (P1 reproduces the linear change of u), so the deviation is
    the discrete law ``-(gamma + eta (T - t_{k+1})) delta`` to the fixed-point
    tolerance.  The continuous law is off by ``eta h |delta|``; the "frozen u_x"
    shortcut ``-a(t) delta`` is off by 20 % (test 1) and 40 % (gamma != 0)."""
    problem, exact, mfg, ref, q = mean_field(name)
    delta = cells * RHO
    res = simulate_price_formation_market(problem, rho=RHO, h=H, holdings=q + delta, tol=1e-11,
                                          initial_price=ref.price)
    t = res.price_times
    dev = res.price - ref.price
    scale = np.max(np.abs(law(exact, t) * delta))
    assert np.max(np.abs(dev + law(exact, t, H) * delta)) <= 1e-8 * scale
    assert np.max(np.abs(dev + law(exact, t) * delta)) <= 1.0001 * exact.eta * H * abs(delta)
    assert np.max(np.abs(dev + exact.riccati(t) * delta)) >= 0.15 * scale
    assert res.initial_mean == pytest.approx(ref.initial_mean + delta, abs=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_sampled_markets_follow_the_law(name):
    """Sampled populations: the coefficient of ``delta = xbar^N_0 - xbar_0`` fitted over
    8 samples of N = 400 (least squares at each t) is the discrete law within 5 % of
    its sup.  Each sample also carries a P1 "staircase" noise of a few % of
    ``delta`` (traders sit at varying places inside the cells); 8 samples average it
    down.  The alternative ``a(t)`` differs from the law by >= 15 % of its sup, so
    this would fail if the price followed the frozen-u_x shortcut."""
    problem, exact, mfg, ref, _ = mean_field(name)
    devs, deltas = [], []
    for s in range(8):
        res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=400, seed=s, tol=1e-10,
                                              initial_price=ref.price)
        devs.append(res.price - ref.price)
        deltas.append(res.initial_mean - ref.initial_mean)
    devs, deltas = np.array(devs), np.array(deltas)
    fitted = -(deltas @ devs) / (deltas @ deltas)
    t = ref.price_times
    scale = np.max(np.abs(law(exact, t)))
    assert np.max(np.abs(fitted - law(exact, t, H))) <= 0.05 * scale
    assert np.max(np.abs(exact.riccati(t) - law(exact, t, H))) >= 0.15 * scale  # the test can tell them apart


@pytest.mark.parametrize("name", CASES)
def test_price_matches_closed_form_with_the_sample_mean(name):
    """``price^N`` against docs/model.md 1.3 with ``xbar_0`` replaced by the sample mean: the
    gap is the mesh's discretisation error, bounded by 1.5 times the nodal MFG
    solver's own error on the same mesh (the slack covers the O(rho) difference
    between the particle and the nodal scheme, 1e-3 and 4e-3 here)."""
    problem, exact, mfg, ref, _ = mean_field(name)
    t = mfg.price_times
    mesh_error = np.max(np.abs(mfg.price - exact.price(t)))
    x0_exact = exact.initial_mean
    for seed in range(3):
        res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=300, seed=seed,
                                              initial_price=mfg.price)
        # sample mean relative to the sampled law's mean (the MFG's xbar_0 up to O(1e-8))
        sample_mean = x0_exact + (res.initial_mean - ref.initial_mean)
        closed = lq_price(t, c=exact.c, eta=exact.eta, kappa=exact.kappa, gamma=exact.gamma, zeta=exact.zeta,
                          supply=exact.supply, initial_mean=sample_mean, horizon=T)
        assert np.max(np.abs(res.price - closed)) <= 1.5 * mesh_error


def test_large_market_is_close_to_the_mfg_solver():
    """N = 1e5 sampled traders: within the scheme gap plus 4 standard deviations of the law."""
    problem, exact, mfg, ref, _ = mean_field("paper test 1")
    n = 100_000
    res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=n, seed=2026, tol=1e-8,
                                          initial_price=mfg.price)
    sd = math.sqrt(p1_density(problem.initial_density, problem.domain).variance)
    gap = np.max(np.abs(ref.price - mfg.price))
    bound = gap + 4 * np.max(np.abs(law(exact, res.price_times))) * sd / math.sqrt(n)
    assert np.max(np.abs(res.price - mfg.price)) <= bound
    assert res.converged and res.n_traders == n


def test_linear_potential_price_does_not_depend_on_the_holdings():
    """Paper test 2 (power impact, V = x): u is linear in x, every trader trades the
    same rate whatever its holding, so the N-market price is the MFG price to the
    fixed-point tolerance (this exercises the Newton price update, p = 4/3)."""
    pt = paper_test(2)
    mfg = solve(pt.problem, rho=RHO, h=H, tol=1e-12)
    res = simulate_price_formation_market(pt.problem, rho=RHO, h=H, n_traders=50, seed=3, tol=1e-12)
    assert np.max(np.abs(res.price - mfg.price)) <= 1e-10
    assert np.max(np.abs(res.price - pt.exact.price(res.price_times))) <= 2 * np.max(
        np.abs(mfg.price - pt.exact.price(mfg.price_times))) + 1e-12


# ----------------------------------------------------------------------------------
# (b) clearing and (c) determinism
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_mean_holding_moves_by_the_supply(name):
    """At the fixed point (1/N) sum v_i = Q(t_k), so xbar^N(t_k) = xbar^N_0 + h sum_{j<k} Q(t_j)."""
    problem, *_ = mean_field(name)
    res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=500, seed=11, tol=1e-13, max_iter=200)
    assert res.converged
    q = supply2(res.price_times) if name != "paper test 1" else paper_test(1).problem.supply(res.price_times)
    expected = res.initial_mean + H * np.concatenate([[0.0], np.cumsum(q)])
    np.testing.assert_allclose(res.mean_holding, expected, rtol=0, atol=1e-12)
    assert res.mean_holding[-1] == pytest.approx(res.holdings.mean(), abs=1e-14)
    assert res.initial_mean == pytest.approx(res.initial_holdings.mean(), abs=1e-15)


def test_same_seed_same_result_and_threads_do_not_matter():
    problem, *_ = mean_field("gamma != 0")
    kw = dict(rho=RHO, h=H, n_traders=1000, seed=5, keep_path=True)
    a = simulate_price_formation_market(problem, parallel=False, **kw)
    b = simulate_price_formation_market(problem, parallel=True, **kw)
    c = simulate_price_formation_market(problem, rho=RHO, h=H, holdings=a.initial_holdings)
    d = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=1000, seed=6)
    for x, y in ((a, b), (a, c)):
        assert np.array_equal(x.price, y.price)
        assert np.array_equal(x.holdings, y.holdings)
        assert np.array_equal(x.mean_holding, y.mean_holding)
        assert np.array_equal(x.residuals, y.residuals)
    assert np.array_equal(a.path, b.path)
    assert not np.array_equal(a.initial_holdings, d.initial_holdings)
    assert a.seed == 5 and c.seed is None
    # the path is consistent with the rest of the result
    assert a.path.shape == (a.t.size, 1000)
    assert np.array_equal(a.path[0], a.initial_holdings) and np.array_equal(a.path[-1], a.holdings)
    np.testing.assert_allclose(a.path.mean(axis=1), a.mean_holding, rtol=0, atol=1e-14)
    assert b.path is not None and c.path is None


def test_result_layout():
    problem, *_ = mean_field("paper test 1")
    res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=10, seed=np.random.SeedSequence(1))
    assert isinstance(res, PriceFormationMarketResult)
    k = round(T / H)
    assert res.t.shape == (k + 1,) and res.price.shape == (k,) and res.mean_holding.shape == (k + 1,)
    assert res.holdings.shape == res.initial_holdings.shape == (10,)
    assert res.iterations == res.residuals.size and res.converged and res.residuals[-1] <= 1e-8
    assert res.rho == RHO and res.h == H and res.wall_time > 0
    assert np.all((res.holdings >= -1) & (res.holdings <= 1))
    assert "n_traders=10" in repr(res)
    with pytest.raises(AttributeError):
        res.price = None  # frozen


def test_a_single_trader_trades_the_supply():
    """N = 1: clearing forces the lone trader to trade exactly Q(t_k)."""
    problem, *_ = mean_field("gamma != 0")
    res = simulate_price_formation_market(problem, rho=RHO, h=H, holdings=[0.3], tol=1e-13, max_iter=200)
    np.testing.assert_allclose(np.diff(res.mean_holding), H * supply2(res.price_times), rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------------
# (d) the sampler
# ----------------------------------------------------------------------------------


def test_sampler_matches_the_density_ks():
    """KS at a fixed seed against the exact CDF of the sampled interpolant (bump) and
    against the analytic CDF of a density that P1 represents exactly (linear)."""
    pt = paper_test(1)
    dens = p1_density(pt.problem.initial_density, pt.problem.domain)
    x = dens.sample(20_000, as_generator(123))
    assert stats.kstest(x, dens.cdf).pvalue > 0.01
    y = sample_density(lambda z: 1.0 + np.asarray(z), (-1.0, 1.0), 20_000, seed=7)  # mass 2, CDF (z+1)^2/4
    assert stats.kstest(y, lambda z: (np.asarray(z) + 1.0) ** 2 / 4).pvalue > 0.01
    assert y.min() >= -1.0 and y.max() <= 1.0


def test_sampler_moments():
    """Sample mean within 4 standard errors of the exact mean (and of the closed-form
    P1 moments); sample variance within 4 standard errors of the exact variance.
    (The Gaussian is truncated to [-1.5, 1.5] at 5.6 and 6.4 sd: its mean moves by 1.5e-8.)"""
    n = 200_000
    x = sample_initial_holdings(PROBLEM2, n, seed=99)
    dens = p1_density(gauss_density, PROBLEM2.domain)
    mu, var = 0.1, 0.25**2
    assert dens.mean == pytest.approx(mu, abs=1e-7) and dens.variance == pytest.approx(var, rel=1e-5)
    assert abs(x.mean() - mu) <= 4 * math.sqrt(var / n)
    assert abs(x.var() - var) <= 4 * var * math.sqrt(2 / n)  # Gaussian: sd of s^2 is var sqrt(2/n)


def test_quantiles_invert_the_cdf_and_samples_are_reproducible():
    dens = p1_density(gauss_density, (-1.5, 1.5), n_cells=64)  # coarse: the P1 shape matters
    p = np.linspace(0.001, 0.999, 101)
    np.testing.assert_allclose(dens.cdf(dens.quantile(p)), p, rtol=0, atol=1e-12)
    q = dens.quantile((np.arange(5000) + 0.5) / 5000)
    assert q.mean() == pytest.approx(dens.mean, abs=1e-6)
    a = sample_density(gauss_density, (-1.5, 1.5), 1000, seed=np.random.SeedSequence(3))
    b = sample_density(gauss_density, (-1.5, 1.5), 1000, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_density(gauss_density, (-1.5, 1.5), 1000, seed=4))


def test_sampler_handles_zero_ends_and_zero_cells():
    """A density that vanishes on whole cells (and at the left end of a cell) never
    puts a draw there, and the a = 0 branch of the inversion is exact (CDF s^2)."""
    x = sample_density(lambda z: np.maximum(np.asarray(z), 0.0), (-1.0, 1.0), 50_000, seed=1, n_cells=2)
    assert x.min() >= 0.0
    assert stats.kstest(x, lambda z: np.clip(np.asarray(z), 0, 1) ** 2).pvalue > 0.01


@pytest.mark.parametrize(
    "density, match",
    [
        (lambda z: np.asarray(z) - 0.5, "negative at x="),
        (lambda z: np.where(np.asarray(z) > 0.2, np.nan, 1.0), "not finite at x="),
        (lambda z: np.zeros_like(np.asarray(z)), "no mass"),
        (lambda z: np.ones(3), "vectorised"),
        (lambda z: 1 / 0, "failed"),
    ],
)
def test_bad_densities_are_rejected(density, match):
    with pytest.raises(ValueError, match=match):
        sample_density(density, (-1.0, 1.0), 10, seed=0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(seed=None), TypeError, "seed"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=True), TypeError, "seed"),
        (dict(seed="1"), TypeError, "seed"),
        (dict(seed=0, n=0), ValueError, "n must"),
        (dict(seed=0, n=2.5), ValueError, "n must"),
        (dict(seed=0, domain=(1.0, 1.0)), ValueError, "domain"),
        (dict(seed=0, domain=(0.0, math.inf)), ValueError, "domain"),
        (dict(seed=0, n_cells=0), ValueError, "n_cells"),
    ],
)
def test_sampler_argument_errors(kwargs, exc, match):
    args = dict(density=gauss_density, domain=(-1.0, 1.0), n=10) | kwargs
    with pytest.raises(exc, match=match):
        sample_density(args.pop("density"), args.pop("domain"), args.pop("n"), **args)


# ----------------------------------------------------------------------------------
# (e) error paths of the market
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_traders=0, seed=1), ValueError, "n_traders"),
        (dict(n_traders=2.5, seed=1), ValueError, "n_traders"),
        (dict(n_traders=True, seed=1), ValueError, "n_traders"),
        (dict(seed=1), ValueError, "n_traders"),
        (dict(n_traders=10), ValueError, "seed is required"),
        (dict(n_traders=10, seed=-3), ValueError, "seed"),
        (dict(holdings=[0.0, 1.2]), ValueError, r"holdings\[1\] = 1.2"),
        (dict(holdings=[0.0, np.nan]), ValueError, "holdings must be finite"),
        (dict(holdings=[[0.0, 0.1]]), ValueError, "one-dimensional"),
        (dict(holdings=[]), ValueError, "non-empty"),
        (dict(holdings=[0.0, 0.1], n_traders=3), ValueError, "does not match"),
        (dict(n_traders=5, seed=1, tol=0.0), ValueError, "tol"),
        (dict(n_traders=5, seed=1, max_iter=0), ValueError, "max_iter"),
        (dict(n_traders=5, seed=1, initial_price=[1.0, 2.0]), ValueError, "initial_price"),
        (dict(n_traders=5, seed=1, rho=0.03), ValueError, "rho"),
        (dict(n_traders=5, seed=1, h=-0.1), ValueError, "h must be positive"),
    ],
)
def test_market_argument_errors(kwargs, exc, match):
    problem, *_ = mean_field("paper test 1")
    args = dict(rho=RHO, h=H) | kwargs
    with pytest.raises(exc, match=match):
        simulate_price_formation_market(problem, **args)


def test_problem_must_be_a_price_formation_problem():
    with pytest.raises(TypeError, match="PriceFormationProblem"):
        simulate_price_formation_market(object(), rho=RHO, h=H, n_traders=3, seed=1)


def test_convergence_warning_when_max_iter_is_too_small():
    problem, *_ = mean_field("paper test 1")
    with pytest.warns(ConvergenceWarning, match="N-trader price iteration"):
        res = simulate_price_formation_market(problem, rho=RHO, h=H, n_traders=20, seed=1, max_iter=1)
    assert not res.converged and res.iterations == 1


def test_warns_when_traders_reach_the_boundary():
    problem, *_ = mean_field("paper test 1")
    with pytest.warns(BoundaryMassWarning, match="end of the domain"):
        simulate_price_formation_market(problem, rho=RHO, h=H, holdings=[-1.0, 0.0, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate_price_formation_market(problem, rho=RHO, h=H, holdings=[-0.2, 0.0, 0.5])


# ----------------------------------------------------------------------------------
# the 1/sqrt(N) table (experiments/finite_n_price.py), on a coarse mesh
# ----------------------------------------------------------------------------------


def test_finite_n_table_rows_do_not_depend_on_the_other_rows():
    from experiments.finite_n_price import finite_n_table, format_table, loglog_slope

    kw = dict(rho=RHO, h=H, seed=4, reference_size=2000)
    both = finite_n_table(ns=(50, 800), n_reps={50: 6, 800: 3}, **kw)
    alone = finite_n_table(ns=(800,), n_reps=3, **kw)
    cols = ["rmse_sup_dev", "predicted", "rmse_mean_dev", "law_residual", "rmse_vs_mfg_solver"]
    assert both.loc[1, cols].to_list() == alone.loc[0, cols].to_list()  # seeds keyed by (N, rep)
    assert list(both["replications"]) == [6, 3]
    assert both.attrs["slope"] == pytest.approx(loglog_slope(both))
    # the law column is sup|gamma + eta (T - t)| sd(m_0)/sqrt(N) = sd/sqrt(N) on test 1
    assert both.loc[0, "predicted"] == pytest.approx(both.attrs["sd_m0"] / math.sqrt(50))
    # each sample follows the law far more closely than its size
    assert (both["law_residual"] < 0.2 * both["rmse_sup_dev"]).all()
    text = format_table(both)
    assert "log-log slope" in text and text.count("\n|") >= 3
    with pytest.raises(ValueError, match="n_reps"):
        finite_n_table(ns=(50,), n_reps={60: 2}, **kw)
    with pytest.raises(ValueError, match="test must be"):
        finite_n_table(test=3)
