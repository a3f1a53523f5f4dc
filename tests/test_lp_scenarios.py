"""Shock scenarios and the baselines of docs/model.md 2.7 (mfg/lp_exit/events.py, mfg/lp_exit/scenarios.py,
mfg/lp_exit/baselines.py)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydantic
import pytest

from mfg.lp_exit import BoundaryMassWarning, LPState, solve
from mfg.lp_exit.baselines import baseline_paths, shock_discount, solve_baseline, trough
from mfg.lp_exit.events import ShockEvent, ShockSchedule, check_events
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions, load_scenario
from mfg.lp_exit.scenarios import (
    ScenarioResult,
    apply_shock,
    scenario_inputs,
    shift_masses,
    solve_scenario,
)

DEMO = Path(__file__).resolve().parents[1] / "mfg" / "lp_exit" / "library" / "shock_demo.toml"

BASE_POP = dict(name="lp", vintage=0.0, life=5.0, weight=1.0, kappa=1.0, lbar=1.0, sigma=0.4, eta=1.0, ell=0.6,
                y=0.15, r=0.2, g=0.05, a_max=4.0, initial_mean=1.0, initial_std=0.2)
MARKET = dict(kind="impact", pbar=0.92, beta=0.3, tau_s=0.25, K0=0.05, Kbar=0.05, theta_K=1.0, S0=0.01, a_tail=0.2)
GRID = Grid(L_min=-1.5, L_max=3.0, n_L=91, dt=1 / 13)
OPTS = SolverOptions(temperature=1e-3, tol=1e-11, max_iter=60)


def staggered_model(beta=0.3):
    """Three populations: one active from the start, one entering at t = 1, one maturing at t = 2."""
    pops = [{**BASE_POP, "name": "a", "vintage": -1.0, "life": 6.0, "weight": 0.5, "lam": 0.3, "alpha": 0.3},
            {**BASE_POP, "name": "b", "vintage": 1.0, "life": 6.0, "weight": 0.3, "ell": 0.8},
            {**BASE_POP, "name": "c", "vintage": -3.0, "life": 5.0, "weight": 0.2}]
    return LPExitModel(populations=pops, market={**MARKET, "beta": beta}, start=0.0, end=3.0)


@pytest.fixture(scope="module")
def model():
    return staggered_model()


@pytest.fixture(scope="module")
def calm(model):
    return solve(model, GRID, OPTS)


def check_accounting(r, tol=1e-12):
    total = r.active_mass + r.exited_mass + r.matured_mass
    for k in range(total.shape[0]):
        n0 = int(np.argmax(total[k] > 0))
        assert np.max(np.abs(total[k, n0:] - 1.0)) < tol
        assert np.all(total[k, :n0] == 0.0)
    assert np.all(r.density >= 0.0)
    assert np.allclose(r.density.sum(axis=2) * r.dL, r.active_mass, atol=tol, rtol=0)
    assert np.allclose(r.flow.sum(axis=0), r.sell_flow, atol=1e-13, rtol=0)
    assert np.all(np.isfinite(r.price)) and np.all(r.price > 0.0)


# ----------------------------------------------------------------------------------
# stitching
# ----------------------------------------------------------------------------------


def test_null_events_reproduce_the_no_event_solve(model, calm):
    """The equilibrium restricted to [τ, T] is an equilibrium from its own state at τ: re-solving changes nothing."""
    events = [ShockEvent(time=1.0, name="nothing"), ShockEvent(time=20 / 13), ShockEvent(time=2.0)]
    r = solve_scenario(model, GRID, OPTS, events)
    assert isinstance(r, ScenarioResult) and r.converged
    assert r.segment_starts == (0, 13, 20, 26) and r.event_steps == (13, 20, 26)
    assert all(e.is_null for e in events)
    check_accounting(r)
    err = {name: float(np.max(np.abs(getattr(r, name) - getattr(calm, name))))
           for name in ("price", "mean_liquidity", "buyer_capital", "sell_pressure", "sell_flow", "active_mass",
                        "exited_mass", "matured_mass", "density", "vintage_price")}
    print(f"\nnull events: iterations per segment {r.iterations}, max deviations {err}")
    assert max(err.values()) < 1e-9
    assert np.allclose(r.exit_prob, calm.exit_prob, atol=1e-8)
    # warm-started from the pre-shock continuation: converged at once
    assert all(it <= 2 for it in r.iterations[1:])
    # before the first event the scenario is the no-event solve, bit for bit (no anticipation)
    assert np.array_equal(r.price[:13], calm.price[:13]) and r.segments[0].iterations == calm.iterations


def test_shocks_keep_mass_accounting_across_segments(model):
    events = [ShockEvent(time=0.0, liquidity_shift=0.1),  # at the window's start: hits a and c, b has not entered
              ShockEvent(time=1.0, populations=("a", "b"), liquidity_shift=-0.37, capital_cut=0.3),
              ShockEvent(time=2.0, liquidity_shift=0.21, sigma_factor=1.5, duration=0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = solve_scenario(model, GRID, OPTS, events)
    check_accounting(r)
    assert r.converged and r.segment_starts == (0, 0, 13, 26)

    def mean(m):
        return float(m @ r.L / m.sum())

    # the shock at t = 0 left b alone (zero row): b enters at t = 1 with its initial law
    assert np.array_equal(r.segments[1].density[1, 13], r.segments[0].density[1, 13])
    assert mean(r.segments[1].density[0, 0]) - mean(r.segments[0].density[0, 0]) == pytest.approx(0.1, abs=1e-12)
    # b enters at the shock's time, so it holds then and is hit, as is a; c is not
    for k, d in ((0, -0.37), (1, -0.37), (2, 0.0)):
        assert mean(r.density[k, 13]) - mean(r.segments[1].density[k, 13]) == pytest.approx(d, abs=1e-12)
    assert r.active_mass[1, 13] == pytest.approx(1.0, abs=1e-14)
    assert r.buyer_capital[13] == pytest.approx(0.7 * r.segments[1].buyer_capital[13], rel=1e-14)
    # the volatility factor is known from t = 2 on, for half a year, only in the last segment
    assert np.all(r.segments[2].inputs.sigma == 0.4)
    assert np.allclose(r.inputs.sigma[:, 26:33], 0.6) and np.allclose(r.inputs.sigma[:, 33:], 0.4)
    st = r.state_at(13)
    assert st.K == r.buyer_capital[13] and np.allclose(st.masses.sum(axis=1), r.active_mass[:, 13])


def test_negative_liquidity_shock_lowers_the_trough(model, calm):
    r = solve_scenario(model, GRID, OPTS, [ShockEvent(time=1.0, liquidity_shift=-0.4)])
    check_accounting(r)
    print(f"\nliquidity shock: trough {r.price[13:].min():.4f} vs {calm.price[13:].min():.4f} without")
    assert r.price[13:].min() < calm.price[13:].min() - 0.01
    assert r.sell_flow[13] > calm.sell_flow[13]
    assert np.array_equal(r.price[:13], calm.price[:13])


def test_capital_cut_lowers_the_price(model, calm):
    r = solve_scenario(model, GRID, OPTS, [ShockEvent(time=1.0, capital_cut=0.5)])
    check_accounting(r)
    assert r.buyer_capital[13] == pytest.approx(0.5 * calm.buyer_capital[13], rel=1e-14)
    assert np.all(r.price[13:20] < calm.price[13:20])
    # a lower target capital for a period lowers the price too, and it recovers after
    k = solve_scenario(model, GRID, OPTS, [ShockEvent(time=1.0, Kbar_factor=0.5, duration=0.5)])
    assert np.allclose(k.inputs.Kbar[13:20], 0.025) and np.allclose(k.inputs.Kbar[20:], 0.05)
    assert np.all(k.price[14:22] < calm.price[14:22])


def test_calm_price_factor(model, calm):
    r = solve_scenario(model, GRID, OPTS, [ShockEvent(time=1.0, pbar_factor=0.8, duration=0.5)])
    assert np.allclose(r.inputs.pbar[13:20], 0.92 * 0.8) and np.allclose(r.inputs.pbar[20:], 0.92)
    assert np.all(r.price[13:20] < calm.price[13:20] - 0.05) and np.all(r.price <= r.inputs.pbar)


# ----------------------------------------------------------------------------------
# the liquidity shift
# ----------------------------------------------------------------------------------


def test_shift_conserves_mass_for_fractional_cells():
    grid = Grid(L_min=-1.0, L_max=2.0, n_L=61, dt=0.1)
    rng = np.random.default_rng(3)
    m = np.zeros(61)
    m[15:45] = rng.uniform(size=30)
    m /= m.sum()
    x = np.linspace(-1.0, 2.0, 61)
    for cells in (0.37, -1.5, 2.999, -0.01, 5.0):
        delta = cells * grid.dL
        out, pushed = shift_masses(m, delta, grid)
        assert pushed == 0.0 and np.all(out >= 0.0)
        assert abs(out.sum() - m.sum()) < 4e-16
        assert out @ x - m @ x == pytest.approx(delta, abs=1e-14)  # P1 deposits keep the first moment
    out, _ = shift_masses(m, 3 * grid.dL, grid)  # whole cells: a plain move
    assert np.allclose(out, np.roll(m, 3), atol=1e-15, rtol=0)
    # past the ends: the mass lands on the end node, is reported and warns
    out, pushed = shift_masses(m, -0.9, grid)
    assert out.sum() == pytest.approx(1.0, abs=1e-15) and pushed == pytest.approx(m[x - 0.9 < -1.0].sum())
    assert out[0] >= pushed > 0.0
    model = LPExitModel(populations=[{**BASE_POP, "initial_mean": 0.5, "initial_std": 0.2}], market=MARKET,
                        start=0.0, end=5.0)
    grid2 = Grid(L_min=-0.5, L_max=2.0, n_L=51, dt=0.1)
    w = np.exp(-0.5 * ((np.linspace(-0.5, 2.0, 51) - 0.5) / 0.2) ** 2)
    st = LPState(t0=0.0, masses=(w / w.sum())[None, :], K=0.05, S_hat=0.0)
    with pytest.warns(BoundaryMassWarning, match="widen"):
        new, pushed = apply_shock(st, ShockEvent(time=0.0, liquidity_shift=-0.8), model, grid2)
    assert pushed > 1e-3 and new.masses.sum() == pytest.approx(1.0, abs=1e-14)


# ----------------------------------------------------------------------------------
# baseline and amplification
# ----------------------------------------------------------------------------------


def test_dcf_equals_equilibrium_when_the_price_cannot_move():
    """Impact market with beta = 0: the equilibrium price is P̄ whatever LPs do, so the DCF path (the no-event
    price times the fundamental factor, LPs' own decisions at it) is the equilibrium, flows included (without
    herding: DCF LPs value their stakes on the no-event mean field, equilibrium LPs on the realised one)."""
    base_model = staggered_model(beta=0.0)
    pops = tuple(p.model_copy(update={"lam": 0.0}) for p in base_model.populations)
    model = base_model.model_copy(update={"populations": pops})
    events = [ShockEvent(time=1.0, liquidity_shift=-0.4, capital_cut=0.5, pbar_factor=0.9, duration=1.0)]
    eq = solve_scenario(model, GRID, OPTS, events)
    base = solve_baseline(model, GRID, OPTS, events)
    assert base.kind == "dcf" and eq.kind == "equilibrium"
    for name in ("price", "sell_flow", "mean_liquidity", "active_mass", "flow", "exited_mass"):
        assert np.max(np.abs(getattr(base, name)[..., :-1] - getattr(eq, name)[..., :-1])) < 1e-12, name
    assert np.allclose(base.price[13:26], 0.92 * 0.9) and np.all(base.withdrawn[13:] == 0.0)
    d, _ = trough(base, 1.0)
    assert d == pytest.approx(0.1, abs=1e-12)  # only the fundamental factor moves the DCF price


def test_first_round_and_myopic_need_the_clearing_market(model):
    events = [ShockEvent(time=1.0, liquidity_shift=-0.4)]
    for kind in ("first_round", "myopic"):
        with pytest.raises(ValueError, match="clearing market"):
            solve_baseline(model, GRID, OPTS, events, kind=kind)
    with pytest.raises(ValueError, match="kind"):
        solve_baseline(model, GRID, OPTS, events, kind="perfect")
    with pytest.raises(ValueError, match="at least one event"):
        solve_baseline(model, GRID, OPTS, [])


def test_trough_by_hand():
    t = np.arange(11) * 0.25  # 0, 0.25, ..., 2.5
    calm = SimpleNamespace(price=np.full(11, 0.9))
    path = SimpleNamespace(t=t, price=np.array([0.9, 0.9, 0.88, 0.72, 0.63, 0.65, 0.8, 0.85, 0.6, 0.9, 0.9]),
                           calm=calm)
    assert np.allclose(shock_discount(path), 1.0 - path.price / 0.9)
    d, t_d = trough(path, 0.5, 1.0)  # steps 0.5 .. 1.5: lowest 0.63 at t = 1.0
    assert d == pytest.approx(0.3) and t_d == 1.0
    d, t_d = trough(path, 0.5)  # the whole rest but the last (closed) step: 0.6 at t = 2.0
    assert d == pytest.approx(1 - 0.6 / 0.9) and t_d == 2.0
    assert all(math.isnan(x) for x in trough(path, 5.0))


# ----------------------------------------------------------------------------------
# validation, TOML
# ----------------------------------------------------------------------------------


def test_event_validation(model):
    def loc(exc):
        return {e["loc"][0] for e in exc.value.errors()} if isinstance(exc.value, pydantic.ValidationError) else set()

    with pytest.raises(pydantic.ValidationError) as exc:
        ShockEvent(time=1.0, capital_cut=1.0)
    assert loc(exc) == {"capital_cut"}
    with pytest.raises(pydantic.ValidationError) as exc:
        ShockEvent(time=1.0, capital_cut=-0.1)
    assert loc(exc) == {"capital_cut"}
    with pytest.raises(pydantic.ValidationError, match="duration"):
        ShockEvent(time=1.0, Kbar_factor=0.5)  # a factor without a period
    for field, bad in (("Kbar_factor", 0.0), ("pbar_factor", -1.0), ("sigma_factor", -0.1), ("duration", -1.0),
                       ("time", math.nan), ("liquidity_shift", math.inf), ("populations", ("a", "a")),
                       ("populations", (" ",)), ("shock", 1.0)):
        with pytest.raises(pydantic.ValidationError) as exc:
            ShockEvent(**{"time": 1.0, "duration": 1.0, field: bad})
        assert field in str(exc.value), field
    ev = ShockEvent(time=1.0)
    with pytest.raises(pydantic.ValidationError):
        ev.time = 2.0  # frozen
    # against the model: window, grid, names
    for bad, match in ((ShockEvent(time=-0.5), "outside the window"), (ShockEvent(time=3.0), "outside the window"),
                       (ShockEvent(time=7.5), "outside the window"),
                       (ShockEvent(time=1.0 + 0.3 / 13), "not a step"),
                       (ShockEvent(time=1.0, populations=("a", "zz")), "unknown population")):
        with pytest.raises(ValueError, match=match):
            solve_scenario(model, GRID, OPTS, [bad])
        with pytest.raises(ValueError, match=match):
            solve_baseline(model, GRID, OPTS, [bad])
    # within 1e-9 dt of a step: snapped
    assert check_events([ShockEvent(time=1.0 + 1e-12)], ["a"], 0.0, 3.0, 1 / 13)[0].time == 1.0 + 1e-12
    with pytest.raises(TypeError, match="ShockEvent"):
        solve_scenario(model, GRID, OPTS, [{"time": 1.0}])
    with pytest.raises(TypeError, match="model"):
        solve_scenario({"populations": []}, GRID, OPTS, [])


def test_schedule_orders_and_multiplies():
    s = ShockSchedule(events=[ShockEvent(time=2.0, Kbar_factor=0.5, duration=1.0, populations=("b",),
                                         sigma_factor=2.0),
                              ShockEvent(time=1.0, Kbar_factor=0.5, duration=1.5)])
    assert [e.time for e in s] == [1.0, 2.0] and len(s) == 2
    kb, pb, sg = s.factors([0.5, 1.0, 2.0, 2.5, 3.0], ["a", "b"])
    assert kb.tolist() == [1.0, 0.5, 0.25, 0.5, 1.0] and pb.tolist() == [1.0] * 5
    assert sg[0].tolist() == [1.0] * 5 and sg[1].tolist() == [1.0, 1.0, 2.0, 2.0, 1.0]
    kb, _, _ = s.factors([2.0, 2.5], ["a", "b"], known_at=1.5)  # the later event is not anticipated
    assert kb.tolist() == [0.5, 1.0]


def test_shock_demo(tmp_path):
    """shock_demo.toml on the clearing market: converges, the four paths of docs/model.md 2.7, an unknown event
    key named.  Measured (2 cores): troughs DCF 0, first round 0.295, equilibrium 0.428, myopic 0.455;
    multiplier 1.45."""
    sc = load_scenario(DEMO)
    events = sc.events
    assert len(events) == 2 and {e.time for e in events} == {2018.0} and sc.model.market.kind == "clearing"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges, no boundary mass
        s = time.perf_counter()
        paths = baseline_paths(sc.model, sc.grid, sc.solver, events)
        secs = time.perf_counter() - s
    eq = paths["equilibrium"]
    assert eq.converged and set(paths) == {"dcf", "first_round", "myopic", "equilibrium"}
    d = {k: trough(p, 2018.0, 3.0)[0] for k, p in paths.items()}
    print(f"\nshock_demo: troughs {d} in {secs:.1f} s; multiplier {d['equilibrium'] / d['first_round']:.3f}")
    assert d["dcf"] < 1e-12 < d["first_round"] < d["equilibrium"]
    assert all(np.nanmin(p.buyer_capital[:-1]) > 0 for k, p in paths.items() if k != "dcf")
    total = eq.active_mass + eq.exited_mass + eq.matured_mass
    assert np.all((np.abs(total - 1.0) < 1e-12) | (total == 0.0))
    mkt = eq.to_frame("market")
    assert len(mkt) == eq.t.size and mkt.Kbar.min() == pytest.approx(0.6 * sc.model.market.Kbar)
    # an unknown key in an event table names the event
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('liquidity_shift = -0.2', 'liquidity_shift = -0.2\nsize = 3'))
    with pytest.raises(ValueError, match=r"(?s)events\.1\.size"):
        load_scenario(bad)


def test_scenario_inputs_match_the_model_without_events(model, calm):
    ins = scenario_inputs(model, [], calm.t, GRID.dt)
    for name in ("Kbar", "pbar", "sigma"):
        assert np.array_equal(getattr(ins, name), getattr(calm.inputs, name)), name
