"""The Mesa model of the finite-N LP market (abm/lp_market/mesa_model.py) against the engine."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from abm.lp_market.engine import SOLD, simulate
from abm.lp_market.policies import ThresholdPolicy
from mfg.lp_exit import solve
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions

ROOT = Path(__file__).resolve().parents[1]

BASE = dict(vintage=0.0, life=5.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.8, y=0.15, r=0.2, g=0.05,
            a_max=4.0, initial_mean=1.0, initial_std=0.25, lam=0.5, alpha=0.3)
MARKET = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, a_tail=0.2, tau_tail=1.0,
              S0=0.02)


@pytest.fixture(scope="module")
def setup():
    from abm.lp_market.mesa_model import LPMarketModel  # noqa: F401  (imported here: Mesa stays out of collection)

    pops = [{**BASE, "name": "a", "weight": 0.6},
            {**BASE, "name": "b", "weight": 0.4, "vintage": -3.0, "kappa": 0.7, "ell": 0.7,
             "seasonal": {"amplitude": -0.2}}]
    model = LPExitModel(populations=pops, market=MARKET, start=0.0, end=4.0)  # 100 steps of 0.04
    grid = Grid(L_min=-1.0, L_max=3.0, n_L=81, dt=0.04)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(model, grid, SolverOptions(temperature=1e-3))
    return model, res


SERIES = {"price": "price", "buyer_capital": "buyer_capital", "sell_pressure": "sell_pressure",
          "sell_flow": "sell_flow", "mean_liquidity": "mean_liquidity"}


def _compare(sim, r, mm):
    """Largest difference between replication ``r`` of the engine and the Mesa model."""
    df = mm.datacollector.get_model_vars_dataframe()
    assert len(df) == sim.t.size
    diffs = {k: float(np.nanmax(np.abs(df[col].to_numpy() - getattr(sim, k)[r]))) for k, col in SERIES.items()}
    assert np.array_equal(np.isnan(df["mean_liquidity"].to_numpy()), np.isnan(sim.mean_liquidity[r]))
    assert np.array_equal(df["exits"].to_numpy(), sim.exits[r].sum(axis=0))
    assert np.allclose(df["active_share"].to_numpy(), sim.active_nav[r], rtol=1e-12, atol=1e-15)
    L = np.array([a.liquidity for a in mm.lps])
    diffs["liquidity"] = float(np.max(np.abs(L - sim.liquidity[r])))
    assert np.array_equal(np.array([a.status for a in mm.lps]), sim.status[r])
    return max(diffs.values())


@pytest.mark.parametrize("transition", ["exact", "two-point"])
def test_mesa_model_reproduces_the_engine(setup, transition):
    from abm.lp_market.mesa_model import LPMarketModel

    model, res = setup
    sim = simulate(model, res, 200, 3, 17, transition=transition)
    assert sim.t.size == 101 and sim.exits.sum() > 10
    for r in (0, 2):
        mm = LPMarketModel(model, res, 200, 17, replication=r, transition=transition).run()
        diff = _compare(sim, r, mm)
        print(f"\n{transition}, replication {r}: max |Mesa - engine| = {diff:.1e}, exits {sim.exits[r].sum()}")
        assert diff <= 1e-12


def test_mesa_model_with_blocks_events_and_a_callable(setup):
    from abm.lp_market.mesa_model import LPMarketModel
    from mfg.lp_exit.events import ShockEvent

    model, res = setup
    ev = ShockEvent(time=1.0, populations=("a",), liquidity_shift=-0.2, capital_cut=0.3, sigma_factor=1.5,
                    duration=0.5)

    def rule(L, ctx):
        return np.where(L < 0.75 + 0.1 * (ctx.price_prev < 0.9), 0.2, 0.0)

    for policy in (res, rule, ThresholdPolicy([0.8, 0.7])):
        sim = simulate(model, policy, 300, 2, 3, block_size=64, events=[ev], dt=0.04)
        mm = LPMarketModel(model, policy, 300, 3, replication=1, block_size=64, events=[ev], dt=0.04).run()
        assert _compare(sim, 1, mm) <= 1e-12
        assert sim.exits.sum() > 5


def test_custom_agents_and_data_collection(setup):
    from abm.lp_market.mesa_model import LPAgent, LPMarketModel

    model, res = setup

    class Holder(LPAgent):
        def decide(self):
            return False

    class Panicky(LPAgent):
        def exit_probability(self):
            return 1.0 if self.liquidity < 0.9 else 0.0

    held = LPMarketModel(model, res, 100, 1, agent_class=Holder).run()
    assert held.datacollector.get_model_vars_dataframe()["exits"].sum() == 0
    pan = LPMarketModel(model, res, 100, 1, agent_class=Panicky).run()
    base = LPMarketModel(model, res, 100, 1).run()
    n_pan = pan.datacollector.get_model_vars_dataframe()["exits"].sum()
    n_base = base.datacollector.get_model_vars_dataframe()["exits"].sum()
    assert n_pan > n_base
    assert all(a.status == SOLD or a.liquidity >= 0.9 or not a.active for a in pan.lps)
    ag = base.datacollector.get_agent_vars_dataframe()
    assert list(ag.columns) == ["population", "liquidity", "status"]
    assert len(ag) == 101 * 100 and set(ag["status"]) <= {"pending", "active", "sold", "matured"}
    mv = base.datacollector.get_model_vars_dataframe()
    assert {"t", "price", "buyer_capital", "active_share", "mean_liquidity"} <= set(mv.columns)
    assert not base.running and base.steps == 101
    with pytest.raises(TypeError, match="agent_class"):
        LPMarketModel(model, res, 10, 1, agent_class=int)


def test_mesa_import_keeps_the_start_method():
    code = ("import multiprocessing as mp; before = mp.get_start_method(allow_none=True); "
            "import abm.lp_market.mesa_model; print(before == mp.get_start_method(allow_none=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "True"
