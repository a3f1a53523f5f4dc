"""The Mesa model of the finite-N LP market (abm/lp_market/mesa_model.py) against the engine."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from abm.lp_market.engine import ACTIVE, SOLD, simulate
from abm.lp_market.kernels import NONE, RESERVATION
from abm.lp_market.policies import ReservationPolicy, ThresholdPolicy
from mfg.lp_exit import solve
from mfg.lp_exit.events import ShockEvent
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions, load_scenario

ROOT = Path(__file__).resolve().parents[1]

BASE = dict(vintage=0.0, life=5.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.8, y=0.15, r=0.2, g=0.05,
            a_max=4.0, initial_mean=1.0, initial_std=0.25, lam=0.5, alpha=0.3)
POPS = [{**BASE, "name": "a", "weight": 0.6},
        {**BASE, "name": "b", "weight": 0.4, "vintage": -3.0, "kappa": 0.7, "ell": 0.7,
         "seasonal": {"amplitude": -0.2}}]
MARKET = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, a_tail=0.2, tau_tail=1.0,
              S0=0.02)
# buyers who deploy within a quarter (tau_d = 0.25): with 300 LPs a step's demand is one to a few stakes, so
# the auctions sell whole offers, ration the marginal one (lottery), refuse a lottery's winner for lack of
# budget, stand idle, and withdraw offers
CLEARING = dict(kind="clearing", pbar=0.93, tau_d=0.25, gamma=1.0, P_cap=1.0, K0=0.04, Kbar=0.04, theta_K=0.5,
                a_tail=0.15, tau_tail=2.0)
GRID = Grid(L_min=-1.0, L_max=3.0, n_L=81, dt=0.04)


def _solve(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(model, GRID, SolverOptions(temperature=1e-3))


@pytest.fixture(scope="module")
def setup():
    from abm.lp_market.mesa_model import LPMarketModel  # noqa: F401  (imported here: Mesa stays out of collection)

    model = LPExitModel(populations=POPS, market=MARKET, start=0.0, end=4.0)  # 100 steps of 0.04
    return model, _solve(model)


@pytest.fixture(scope="module")
def clearing():
    pops = [POPS[0], {**POPS[1], "delta": 0.5, "phi": 0.01}]
    model = LPExitModel(populations=pops, market=CLEARING, start=0.0, end=2.4)  # 60 steps of 0.04
    res = _solve(model)
    assert res.continuation is not None and res.continuation.shape == (2, 61, 81)
    return model, res


SERIES = ("price", "buyer_capital", "sell_pressure", "sell_flow", "withdrawn", "mean_liquidity")


def _compare(sim, r, mm):
    """Largest difference between replication ``r`` of the engine and the Mesa model (rows 1.. of the collector
    are the engine's steps 0..N; row 0 is the initial state)."""
    df = mm.datacollector.get_model_vars_dataframe()
    assert len(df) == sim.t.size + 1 and list(df.index) == list(range(sim.t.size + 1))
    d = df.iloc[1:]
    assert np.array_equal(d["t"].to_numpy(), sim.t)
    diffs = {}
    for k in SERIES:
        a, b = d[k].to_numpy(dtype=float), getattr(sim, k)[r]
        assert np.array_equal(np.isnan(a), np.isnan(b)), k
        diffs[k] = float(np.nanmax(np.abs(a - b), initial=0.0))
    assert np.array_equal(d["exits"].to_numpy(), sim.exits[r].sum(axis=0))
    assert np.allclose(d["active_share"].to_numpy(), sim.active_nav[r], rtol=1e-12, atol=1e-15)
    L = np.array([a.liquidity for a in mm.lps])
    diffs["liquidity"] = float(np.max(np.abs(L - sim.liquidity[r])))
    assert np.array_equal(np.array([a.status for a in mm.lps]), sim.status[r])
    return max(diffs.values())


# ----------------------------------------------------------------------------------
# the impact market
# ----------------------------------------------------------------------------------


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
        assert diff == 0.0


def test_mesa_model_with_blocks_events_and_a_callable(setup):
    from abm.lp_market.mesa_model import LPMarketModel

    model, res = setup
    ev = ShockEvent(time=1.0, populations=("a",), liquidity_shift=-0.2, capital_cut=0.3, sigma_factor=1.5,
                    duration=0.5)

    def rule(L, ctx):
        return np.where(L < 0.75 + 0.1 * (ctx.price_prev < 0.9), 0.2, 0.0)

    for policy in (res, rule, ThresholdPolicy([0.8, 0.7])):
        sim = simulate(model, policy, 300, 2, 3, block_size=64, events=[ev], dt=0.04)
        mm = LPMarketModel(model, policy, 300, 3, replication=1, block_size=64, events=[ev], dt=0.04).run()
        assert _compare(sim, 1, mm) == 0.0
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
    assert len(ag) == 102 * 100 and set(ag["status"]) <= {"pending", "active", "sold", "matured"}
    mv = base.datacollector.get_model_vars_dataframe()
    assert {"t", "price", "buyer_capital", "active_share", "mean_liquidity", "withdrawn"} <= set(mv.columns)
    assert not base.running and base.steps == 101
    with pytest.raises(TypeError, match="agent_class"):
        LPMarketModel(model, res, 10, 1, agent_class=int)


def test_step_column_is_mesas(setup):
    """Step s is the model after s steps, in both frames: the model row s is the market of step s - 1 and the
    agents at Step s are the engine's snapshot at t_s (before step s's sales); Step 0 is the initial state."""
    from abm.lp_market.mesa_model import LPMarketModel

    model, res = setup
    steps = (0, 1, 37, 100)
    sim = simulate(model, res, 120, 1, 5, snapshot_times=model.start + 0.04 * np.array(steps))
    mm = LPMarketModel(model, res, 120, 5).run()
    ag = mm.datacollector.get_agent_vars_dataframe()
    mv = mm.datacollector.get_model_vars_dataframe()
    assert sorted(set(ag.index.get_level_values("Step"))) == list(mv.index) == list(range(102))
    codes = {"pending": 0, "active": 1, "sold": 2, "matured": 3}
    for j, s in enumerate(steps):
        at = ag.xs(s, level="Step")
        assert np.array_equal(at["liquidity"].to_numpy(), sim.snapshot_liquidity[0, j])
        assert np.array_equal(at["status"].map(codes).to_numpy(), sim.snapshot_status[0, j])
    first = mv.iloc[0]
    assert first["t"] == sim.t[0] and first["exits"] == 0 and np.isnan(first["price"])
    assert first["buyer_capital"] == sim.buyer_capital[0, 0] and first["mean_liquidity"] == sim.mean_liquidity[0, 0]
    assert mv["t"].iloc[1] == sim.t[0] and mv["price"].iloc[37] == sim.price[0, 36]


# ----------------------------------------------------------------------------------
# the clearing market
# ----------------------------------------------------------------------------------


def test_clearing_market_reproduces_the_engine(clearing):
    from abm.lp_market.mesa_model import LPMarketModel

    model, res = clearing
    ev = ShockEvent(time=1.0, populations=("a",), liquidity_shift=-0.3, capital_cut=0.9)
    for events in ((), (ev,)):
        sim = simulate(model, res, 300, 2, 11, events=events)
        assert sim.t.size == 61 and np.all(np.isnan(sim.sell_pressure))
        assert sim.exits.sum(axis=(1, 2)).min() >= 15 and sim.exits.sum(axis=1).max() >= 2  # several sales a step
        assert np.nanmax(sim.withdrawn) > 0.0 and np.any(sim.price == 1.0)  # withdrawn offers; idle buyers (P_cap)
        for r in (0, 1):
            mm = LPMarketModel(model, res, 300, 11, replication=r, events=events).run()
            assert mm.clearing and mm.policy.kind == RESERVATION  # the MFG's continuation values
            diff = _compare(sim, r, mm)
            print(f"\nclearing, events {len(events)}, replication {r}: max |Mesa - engine| = {diff:.1e}, "
                  f"exits {sim.exits[r].sum()}")
            assert diff == 0.0
            assert np.array_equal([a.clock for a in mm.lps], sim_clocks(model, res, 300, 11, r, events))


def sim_clocks(model, res, n, seed, r, events):
    """The engine's sale-process clocks at the end of replication ``r``."""
    from abm.lp_market.engine import MarketState, prepare

    ms = MarketState(prepare(model, res, n, seed, events=events), r + 1)
    ms.run(0, ms.su.t.size)
    return ms.clock[r]


def test_clearing_market_with_blocks_and_callables(clearing):
    from abm.lp_market.mesa_model import LPMarketModel

    model, res = clearing
    ev = ShockEvent(time=0.8, populations=("b",), liquidity_shift=-0.2, capital_cut=0.5, Kbar_factor=0.7,
                    duration=0.4)

    def reservation(L, ctx):  # a continuation value that falls with the last price
        return 0.85 + 0.1 * L + 0.2 * (ctx.price_prev - 0.9)

    for policy in (ReservationPolicy(reservation), ThresholdPolicy([0.75, 0.65])):  # offers at r; market orders
        sim = simulate(model, policy, 300, 2, 4, block_size=64, events=[ev], dt=0.04)
        mm = LPMarketModel(model, policy, 300, 4, replication=1, block_size=64, events=[ev], dt=0.04).run()
        assert _compare(sim, 1, mm) == 0.0
        assert sim.exits.sum() > 5


def test_agent_step_is_the_agents_part(clearing, setup):
    """The model runs agents.do("step") in agent order, then the market, then agents.do("advance"); an agent's
    step() makes its offer (clearing) or decides (impact)."""
    from abm.lp_market.mesa_model import LPAgent, LPMarketModel

    calls = []

    class Logged(LPAgent):
        def step(self):
            calls.append(("step", self.index, self.model.price))
            super().step()

        def advance(self):
            calls.append(("advance", self.index, self.model.price))
            super().advance()

    model, res = clearing
    mm = LPMarketModel(model, res, 50, 2, agent_class=Logged)
    mm.step()
    assert [c[:2] for c in calls] == [("step", i) for i in range(50)] + [("advance", i) for i in range(50)]
    assert all(np.isnan(c[2]) for c in calls[:50]) and all(c[2] == mm.price for c in calls[50:])  # market between

    # one agent's step: its clock runs down by a_max dt; when it fires it asks a reservation price
    mm = LPMarketModel(model, res, 50, 2)
    a = next(x for x in mm.lps if x.active)
    h = mm.setup.clearing.hazard[a.population, 0]
    a.clock = 2.5 * h
    a.step()
    assert a.ask == np.inf and a.clock == pytest.approx(1.5 * h)
    a.clock = 0.5 * h
    a.step()
    ct = mm.setup.clearing
    mid = (a.reservation_value() + ct.phi[a.population]) / a.deal_factor()  # the ask at a taste shock of 0
    assert a.deal_factor() > 0.0 and a.clock > 0.0
    assert a.ask != mid and abs(a.ask - mid) <= 40.0 * ct.eps / a.deal_factor()  # |xi| < 40 for any double u
    assert a.status == ACTIVE  # nobody sells before the auction

    # impact market: an agent's step sells at once
    model_i, res_i = setup

    class Seller(LPAgent):
        def exit_probability(self):
            return 1.0

    mi = LPMarketModel(model_i, res_i, 20, 2, agent_class=Seller)
    b = next(x for x in mi.lps if x.active)
    b.step()
    assert b.status == SOLD


# ----------------------------------------------------------------------------------
# scenario names, the default policy, batch_run
# ----------------------------------------------------------------------------------


def test_defaults_constructor_solves_the_scenarios_policy_once():
    from abm.lp_market import mesa_model
    from abm.lp_market.mesa_model import LPMarketModel, mfg_policy

    m = LPMarketModel(scenario="calm", n_agents=1000, seed=1)
    for _ in range(4):
        m.step()
    res = m.mfg_result
    assert res is not None and res is mfg_policy("calm") and res is mfg_policy(load_scenario("calm"))
    assert LPMarketModel("calm", n_agents=64, seed=2).mfg_result is res  # cached: not solved again
    assert len(m.lps) == 1000 and m.lp_model.market.kind == m.setup.model.market.kind
    sim = simulate(load_scenario("calm"), res, 1000, 1, 1)
    d = m.datacollector.get_model_vars_dataframe().iloc[1:]
    assert np.array_equal(d["price"].to_numpy(), sim.price[0, :4])
    assert np.array_equal(d["mean_liquidity"].to_numpy(), sim.mean_liquidity[0, :4])

    sc = load_scenario("calm")
    assert LPMarketModel(sc, None, 64, 1).policy.kind == NONE  # policy=None: nobody sells, as in simulate
    with pytest.warns(DeprecationWarning, match="scenario="):
        old = LPMarketModel(model=sc.model, policy=res, n_agents=64, seed=1)
    assert old.mfg_result is res
    with pytest.raises(ValueError, match="policy=None"):
        LPMarketModel(sc.model, n_agents=64)  # an LPExitModel has no grid to solve on
    with pytest.raises(TypeError, match="wrap the object in a list"):
        LPMarketModel(("model", sc.model))
    assert len(mesa_model._POLICY_CACHE) <= mesa_model._POLICY_CACHE_SIZE


def test_batch_run_as_written():
    import mesa

    from abm.lp_market.mesa_model import LPMarketModel

    out = mesa.batch_run(LPMarketModel, parameters={"scenario": "calm", "n_agents": [100, 300]}, iterations=2,
                         max_steps=3, display_progress=False)
    import pandas as pd

    df = pd.DataFrame(out)
    assert len(df) == 2 * (100 + 300) and df["RunId"].nunique() == 4
    assert set(df["scenario"]) == {"calm"} and sorted(df.groupby("RunId")["n_agents"].first()) == [100, 100, 300, 300]
    sc = load_scenario("calm")
    # batch_run reports Step = model.steps - 1 = 3 after 4 steps: the market of step 2 and the agents at t_3
    assert set(df["Step"]) == {3} and np.allclose(df["t"], sc.model.start + 2 * sc.grid.dt)
    assert set(df["status"]) <= {"active", "sold", "pending", "matured"} and df["price"].notna().all()
    # a Scenario object goes in a list (a pydantic model is iterable: batch_run would iterate over its fields)
    out = mesa.batch_run(LPMarketModel, parameters={"scenario": [sc], "n_agents": 50, "seed": 3}, max_steps=1,
                         display_progress=False)
    assert len(out) == 50
    with pytest.raises(TypeError, match="wrap the object in a list"):
        mesa.batch_run(LPMarketModel, parameters={"scenario": sc, "n_agents": 50}, max_steps=1,
                       display_progress=False)


def test_mesa_import_keeps_the_start_method():
    code = ("import multiprocessing as mp; before = mp.get_start_method(allow_none=True); "
            "import abm.lp_market.mesa_model; print(before == mp.get_start_method(allow_none=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "True"
