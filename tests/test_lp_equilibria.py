"""Several starting paths, one list of equilibria (mfg/lp_exit/equilibria.py; docs/model.md 2.5)."""

from __future__ import annotations

import numpy as np

from mfg.lp_exit import Grid, LPExitModel, ShockEvent, SolverOptions, load_scenario
from mfg.lp_exit.equilibria import equilibria_after, find_equilibria

CLEARING = dict(kind="clearing", pbar=0.9, tau_d=2.5, gamma=1.0, P_cap=1.0, K0=0.04, Kbar=0.04, theta_K=0.5,
                a_tail=0.15, tau_tail=2.0)


def small_clearing_market():
    sc = load_scenario("calm")
    model = LPExitModel(populations=sc.model.populations, market=CLEARING, start=sc.model.start, end=sc.model.end)
    return model, Grid(L_min=-1.5, L_max=3.5, n_L=121, dt=1 / 26), SolverOptions(temperature=1e-3, max_iter=100)


def test_every_start_reaches_the_calm_equilibrium():
    model, grid, opts = small_clearing_market()
    eqs = find_equilibria(model, grid, opts)
    assert len(eqs) == 1 and set(eqs[0].starts) == {"calm", "low", "high"}
    assert eqs[0].result.converged and 0.8 < eqs[0].mean_price < 0.95


def test_equilibria_after_a_shock_start_from_the_shocked_state():
    model, grid, opts = small_clearing_market()
    eqs = equilibria_after(model, grid, opts, [ShockEvent(time=2018.0, capital_cut=0.8, liquidity_shift=-0.5)])
    assert eqs and all(e.result.converged for e in eqs)
    assert "pre_shock" in {s for e in eqs for s in e.starts}
    for e in eqs:  # every equilibrium starts at the shock with the shocked state
        assert e.result.t[0] == 2018.0 and np.all(e.result.price > 0.1)
    if len(eqs) > 1:  # distinct by more than the merging distance
        assert np.max(np.abs(eqs[0].result.price - eqs[-1].result.price)) > 1e-4
