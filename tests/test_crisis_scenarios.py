"""The crisis scenario files and the baselines of docs/model.md 2.7 (experiments/crisis/library.py,
mfg/lp_exit/baselines.py, the stale-NAV markdown of mfg/lp_exit/params.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pydantic
import pytest

from experiments.crisis import library
from experiments.crisis.common import load
from mfg.lp_exit import ShockEvent, solve
from mfg.lp_exit.baselines import baseline_paths, first_round, myopic, trough
from mfg.lp_exit.params import SCENARIO_DIR, Scenario, load_scenario, markdown_factor
from mfg.lp_exit.scenarios import solve_scenario

CRISIS_FILES = ("crisis_2008", "covid_2020", "rates_2022", "lp_types", "vintages", "shock_demo")


@pytest.mark.parametrize("name", CRISIS_FILES)
def test_shipped_file_is_what_the_library_builds(name):
    """The shipped files are calm.toml's ladder with the library's events (no hand edits drift from it)."""
    assert (SCENARIO_DIR / f"{name}.toml").read_text() == library.file_text(name)
    sc = load_scenario(name)
    calm = load_scenario("calm")
    assert sc.model.market == calm.model.market and sc.solver == calm.solver
    assert sc.grid.dL == pytest.approx(calm.grid.dL) and sc.grid.dt == calm.grid.dt
    r0, r1 = sc.report_window
    assert r0 - sc.model.start == 2.0 and sc.model.end - r1 >= 9.0  # burn-in and burn-out of calm.toml
    by_name = {p.name.split("-")[0]: p for p in calm.model.populations}
    for p in sc.model.populations:  # every population is a calm.toml type, moved in time only
        q = by_name[p.lp_type]
        assert p.model_copy(update={"name": q.name, "vintage": q.vintage, "weight": q.weight}) == q


def test_markdowns_from_the_public_figures():
    """docs/model.md 2.10: NAVs -18.9% while the S&P 500 fell 39.7% (Q1 2008 to Q1 2009): f = 0.603/0.811."""
    sc = load_scenario("crisis_2008")
    assert sc.markdown_at(2009.25) == pytest.approx(0.603 / 0.811, abs=2e-4)
    assert sc.markdown_at(2008.0) == 1.0 and sc.markdown_at(2010.0) == 1.0
    assert sc.markdown_at(2008.75) == pytest.approx(1 - 0.5 * (1 - sc.markdown_at(2009.25)))
    covid = load_scenario("covid_2020")
    assert covid.markdown_at(2020.25) == pytest.approx(0.8 / (1 - 18.9 / 39.7 * 0.2), abs=1e-3)
    assert np.array_equal(sc.reported([2008.0, 2009.25], [0.9, 0.5]), [0.9, 0.5 * sc.markdown_at(2009.25)])
    assert load_scenario("calm").markdown == () and load_scenario("calm").markdown_at(2020.0) == 1.0


def test_markdown_schema_refuses_bad_knots():
    d = load_scenario("shock_demo").model_dump(mode="json")
    for knots, loc in (([{"time": 2018.0, "factor": 1.1}], ("markdown", 0, "factor")),
                       ([{"time": 2018.0, "factor": 0.0}], ("markdown", 0, "factor")),
                       ([{"time": 2019.0, "factor": 0.9}, {"time": 2018.0, "factor": 1.0}], ("markdown",)),
                       ([{"time": 2018.0}], ("markdown", 0, "factor"))):
        with pytest.raises(pydantic.ValidationError) as exc:
            Scenario.model_validate({**d, "markdown": knots})
        assert exc.value.errors()[0]["loc"] == loc
    ok = Scenario.model_validate({**d, "markdown": [{"time": 2018.0, "factor": 1.0}, {"time": 2019.0, "factor": 0.8}]})
    assert Scenario.from_toml(ok.to_toml()) == ok
    assert markdown_factor([(0.0, 1.0), (1.0, 0.5)], [-1.0, 0.5, 2.0]).tolist() == [1.0, 0.75, 0.5]


def test_predicted_crises_use_public_inputs_only():
    """COVID and 2022 come from the 2008 fit by the S&P 500 ratios: no capital cut, shifts scaled."""
    sc = load_scenario("covid_2020")
    r = library.fall("2020") / library.fall("2008")
    fit = library.FIT_2008
    shifts = {e.name: e.liquidity_shift for e in sc.events if e.liquidity_shift}
    assert shifts["denominator-2020-endowment"] == pytest.approx(fit["shift"] * r)
    assert all(e.capital_cut == 0.0 for e in sc.events)
    assert {e.time for e in sc.events} == {2020.25}


@pytest.fixture(scope="module")
def small():
    """crisis_2008 on the quick grid, its no-event solve and its equilibrium."""
    sc = load("shock_demo", quick=True)
    calm = solve(sc.model, sc.grid, sc.solver)
    return sc, calm, solve_scenario(sc.model, sc.grid, sc.solver, sc.events, calm=calm)


def test_solve_scenario_reuses_a_calm_solve(small):
    sc, calm, eq = small
    again = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    assert np.array_equal(again.price, eq.price) and np.array_equal(again.sell_flow, eq.sell_flow)
    other = sc.model.model_copy(update={"end": sc.model.end - 1.0})
    with pytest.raises(ValueError, match="calm must be"):
        solve_scenario(other, sc.grid, sc.solver, sc.events, calm=calm)


def test_first_round_loop_reproduces_the_equilibrium_from_its_own_reservation_values(small):
    """The step-by-step market of the baselines (brentq clearing, the solver's transport) fed the equilibrium's
    continuation values gives back the equilibrium: an independent check of the loop."""
    sc, calm, eq = small
    fr = first_round(sc.model, sc.grid, sc.solver, sc.events, calm=calm, continuation=eq.continuation)
    n = fr.shock_step
    for name in ("price", "sell_flow", "buyer_capital", "mean_liquidity", "withdrawn", "spend"):
        assert np.max(np.abs(getattr(fr, name)[n:-1] - getattr(eq, name)[n:-1])) < 1e-12, name
    for name in ("flow", "active_mass", "exited_mass", "matured_mass"):
        assert np.max(np.abs(getattr(fr, name)[:, n:] - getattr(eq, name)[:, n:])) < 1e-12, name


def test_the_four_paths(small):
    sc, calm, eq = small
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = baseline_paths(sc.model, sc.grid, sc.solver, sc.events, calm=calm)
    n = paths["dcf"].shock_step
    for k, p in paths.items():
        assert np.array_equal(p.price[:n], calm.price[:n]), k  # the no-event path before the shock
        total = p.active_mass + p.exited_mass + p.matured_mass
        tot = total[:, :-1]
        assert np.all((np.abs(tot - 1.0) < 1e-12) | (tot == 0.0) | (np.isnan(tot) & (k == "myopic"))), k
    assert np.array_equal(paths["equilibrium"].price, eq.price)
    assert np.allclose(paths["dcf"].price[:-1], calm.price[:-1], rtol=1e-15, atol=0)  # no fundamental factor
    d = {k: trough(p, 2018.0, 3.0)[0] for k, p in paths.items()}
    assert d["dcf"] < 1e-12 and 0 < d["first_round"] < d["equilibrium"]
    assert np.all(np.isnan(paths["myopic"].price[n + 3 * 12 + 1:]))  # computed for 3 years only


def test_myopic_table_error_shrinks(small):
    """The myopic path's interpolation in the price converges: 12 against 24 tabulated prices and 24 against 48."""
    sc, calm, _ = small
    ev = (ShockEvent(time=2018.0, populations=tuple(p.name for p in sc.model.populations if p.lp_type == "endowment"),
                     liquidity_shift=-0.5),)
    p = [myopic(sc.model, sc.grid, sc.solver, ev, calm=calm, horizon=1.0, n_prices=k).price for k in (12, 24, 48)]
    e1, e2 = np.nanmax(np.abs(p[0] - p[2])), np.nanmax(np.abs(p[1] - p[2]))
    print(f"\nmyopic price, 12 vs 48 prices: {e1:.2e}; 24 vs 48: {e2:.2e}")
    assert e2 < 0.5 * e1 and e2 < 2e-3
