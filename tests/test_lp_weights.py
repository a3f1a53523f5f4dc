"""LPs of unequal size and quality in the finite-N market (docs/model.md 2.8): engine, Mesa model, normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from abm.lp_market.engine import agent_weights, simulate
from mfg.lp_exit import solve
from mfg.lp_exit.events import ShockEvent
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions

BASE = dict(vintage=0.0, life=5.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.8, y=0.15, r=0.2, g=0.05,
            a_max=4.0, initial_mean=1.0, initial_std=0.25, lam=0.5, alpha=0.3)
CLEARING = dict(kind="clearing", pbar=0.93, tau_d=0.25, gamma=1.0, P_cap=1.0, K0=0.04, Kbar=0.04, theta_K=0.5,
                a_tail=0.15, tau_tail=2.0)
IMPACT = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, a_tail=0.2,
              tau_tail=1.0, S0=0.02)
N = 300
pytestmark = pytest.mark.kernels  # the kernels' weighted paths: run again with numba's bounds checking in CI
SERIES = ("price", "buyer_capital", "sell_flow", "withdrawn", "mean_liquidity", "exits", "liquidity", "status")


@pytest.fixture(scope="module", params=["clearing", "impact"])
def market(request):
    extra = {"delta": 0.5, "phi": 0.01} if request.param == "clearing" else {}
    pops = [{**BASE, "name": "a", "weight": 0.6},
            {**BASE, "name": "b", "weight": 0.4, "vintage": -3.0, "kappa": 0.7, "ell": 0.7, **extra}]
    model = LPExitModel(populations=pops, market=CLEARING if request.param == "clearing" else IMPACT, start=0.0,
                        end=2.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(model, Grid(L_min=-1.0, L_max=3.0, n_L=81, dt=0.04), SolverOptions(temperature=1e-3))
    rng = np.random.default_rng(5)
    return model, res, rng.lognormal(0.0, 1.2, N), rng.lognormal(0.0, 0.1, N)


EV = ShockEvent(time=1.0, populations=("a",), liquidity_shift=-0.3, capital_cut=0.9)


def test_unit_weights_are_the_equal_market_bit_for_bit(market):
    model, res, _, _ = market
    a = simulate(model, res, N, 2, 11, events=(EV,), block_size=64)
    b = simulate(model, res, N, 2, 11, events=(EV,), block_size=64, nav_weights=np.ones(N), quality=np.ones(N))
    for k in SERIES:
        assert np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True), k


def test_weights_move_the_market_and_the_mesa_model_follows_bit_for_bit(market):
    from abm.lp_market.mesa_model import LPMarketModel

    model, res, nu, th = market
    a = simulate(model, res, N, 2, 11, events=(EV,), block_size=64)
    sim = simulate(model, res, N, 2, 11, events=(EV,), block_size=64, nav_weights=nu, quality=th)
    assert not np.array_equal(a.price, sim.price)  # the price sees the LPs' sizes and qualities
    assert np.all(sim.buyer_capital > 0)
    for r in (0, 1):
        mm = LPMarketModel(model, res, N, 11, replication=r, events=(EV,), block_size=64, nav_weights=nu,
                           quality=th).run()
        df = mm.datacollector.get_model_vars_dataframe().iloc[1:]
        for k in ("price", "buyer_capital", "sell_flow", "withdrawn", "mean_liquidity"):
            assert np.array_equal(df[k].to_numpy(float), getattr(sim, k)[r], equal_nan=True), k
        assert np.array_equal([x.liquidity for x in mm.lps], sim.liquidity[r])
        assert np.array_equal([x.status for x in mm.lps], sim.status[r])


def test_weights_are_normalised_per_population():
    n_per = np.array([3, 0, 4])
    nu, q = agent_weights(n_per, np.array([1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 5.0]), np.arange(1.0, 8.0))
    assert nu[:3].mean() == pytest.approx(1.0) and nu[3:].mean() == pytest.approx(1.0)
    assert (nu[:3] * q[:3]).sum() == pytest.approx(nu[:3].sum()) and (nu[3:] * q[3:]).sum() == pytest.approx(4.0)
    assert agent_weights(n_per) == (None, None)
    nu, q = agent_weights(n_per, quality=np.full(7, 2.0))
    assert np.all(nu == 1.0) and np.allclose(q, 1.0)
    for bad in (np.ones(6), np.r_[np.ones(6), 0.0], np.r_[np.ones(6), np.nan]):
        with pytest.raises(ValueError, match="nav_weights"):
            agent_weights(n_per, bad)
