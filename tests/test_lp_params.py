"""Parameters of the LP-exit MFG (mfg/lp_exit/params.py): validation naming fields, TOML round trip."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mfg.lp_exit.params import (
    Grid,
    ImpactMarket,
    LPExitModel,
    Population,
    Scenario,
    Seasonal,
    SolverOptions,
    load_scenario,
)

CALM = Path(__file__).resolve().parents[1] / "mfg" / "lp_exit" / "library" / "calm.toml"

POP = dict(name="pension", lp_type="pension", vintage=0.0, life=12.0, weight=0.6, kappa=1.0, lbar=1.0, sigma=0.3,
           lam=0.2, alpha=0.1, eta=0.5, ell=0.6, y=0.05, r=0.08, g=0.03, phi=0.01, a_max=4.0, initial_mean=1.0,
           initial_std=0.2, seasonal=dict(amplitude=-0.1))
MARKET = dict(kind="impact", pbar=0.92, beta=0.2, tau_s=0.25, K0=0.05, Kbar=0.06, theta_K=1.0, a_tail=0.1, tau_tail=2.0)
GRID = dict(L_min=-1.0, L_max=3.0, n_L=201, dt=1 / 52)


def scenario_dict(**changes):
    d = copy.deepcopy(dict(
        model=dict(populations=[POP, {**POP, "name": "endowment", "weight": 0.4, "seasonal": None}],
                   market=MARKET, start=0.0, end=10.0),
        grid=GRID, solver=dict(temperature=1e-3, damping=0.5, tol=1e-8, max_iter=50, anderson=3, precondition=False)))
    for k, v in changes.items():
        d[k] = v
    return d


def error_locations(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]


def assert_refused(build, field: str):
    with pytest.raises(ValidationError) as info:
        build()
    assert any(field in loc for loc in error_locations(info.value)), error_locations(info.value)


def test_valid_scenario_and_normalised_weights():
    sc = Scenario.model_validate(scenario_dict())
    assert np.allclose(sc.model.weights, [0.6, 0.4])
    assert sc.grid.dL == pytest.approx(4.0 / 200)
    assert sc.model.populations[0].maturity == 12.0


@pytest.mark.parametrize("field, value", [
    ("sigma", -0.1), ("kappa", math.nan), ("eta", -1.0), ("a_max", -2.0), ("life", 0.0), ("weight", -0.5),
    ("initial_std", -0.1), ("lbar", math.inf), ("phi", -0.01), ("name", "  "),
])
def test_population_fields_refused(field, value):
    assert_refused(lambda: Population(**{**POP, field: value}), field)


@pytest.mark.parametrize("field, value", [
    ("pbar", 0.0), ("beta", -1.0), ("tau_s", 0.0), ("K0", -0.1), ("Kbar", math.nan), ("theta_K", -1.0),
    ("a_tail", 1.0), ("tau_tail", 0.0),
])
def test_market_fields_refused(field, value):
    assert_refused(lambda: ImpactMarket(**{**MARKET, field: value}), field)


@pytest.mark.parametrize("field, value", [("dt", -0.01), ("dt", math.nan), ("n_L", 2), ("L_min", math.nan)])
def test_grid_fields_refused(field, value):
    assert_refused(lambda: Grid(**{**GRID, field: value}), field)


@pytest.mark.parametrize("field, value", [("temperature", -1e-3), ("damping", 0.0), ("damping", 1.5), ("tol", 0.0),
                                          ("max_iter", 0), ("anderson", -1), ("workers", 0)])
def test_solver_fields_refused(field, value):
    assert_refused(lambda: SolverOptions(**{field: value}), field)


def test_weights_must_sum_to_positive():
    d = scenario_dict()
    for p in d["model"]["populations"]:
        p["weight"] = 0.0
    with pytest.raises(ValidationError, match="weight"):
        Scenario.model_validate(d)


def test_grid_must_cover_initial_laws():
    with pytest.raises(ValidationError, match="L_min"):
        Scenario.model_validate(scenario_dict(grid={**GRID, "L_min": 0.5}))
    with pytest.raises(ValidationError, match="L_max"):
        Scenario.model_validate(scenario_dict(grid={**GRID, "L_max": 1.5}))


def test_model_level_checks():
    d = scenario_dict()
    d["model"]["end"] = 0.0
    with pytest.raises(ValidationError, match="end"):
        Scenario.model_validate(d)
    d = scenario_dict()
    d["model"]["populations"][1]["name"] = "pension"
    with pytest.raises(ValidationError, match="duplicate"):
        Scenario.model_validate(d)
    d = scenario_dict()
    d["model"]["populations"] = []
    with pytest.raises(ValidationError, match="populations"):
        Scenario.model_validate(d)
    d = scenario_dict()
    d["model"]["populations"][0]["vintage"] = 20.0
    with pytest.raises(ValidationError, match="vintage"):
        Scenario.model_validate(d)
    with pytest.raises(ValidationError, match="start"):
        Seasonal(amplitude=1.0, start=0.8, end=0.5)


def test_frozen_and_no_unknown_fields():
    pop = Population(**POP)
    with pytest.raises(ValidationError):
        pop.sigma = 1.0
    assert_refused(lambda: Population(**POP, sigam=0.3), "sigam")


def test_schedule_and_life_curve():
    s = Seasonal(amplitude=-0.2)  # Q4 box
    assert np.allclose(s([2020.0, 2020.5, 2020.75, 2020.99, 2021.1]), [0, 0, -0.2, -0.2, 0])
    assert np.allclose(Population(**{**POP, "seasonal": None}).schedule([0.8, 1.9]), 0.0)
    m = ImpactMarket(**MARKET)
    assert m.remaining_life_factor(0.0) == pytest.approx(0.9)
    assert m.remaining_life_factor(1e6) == pytest.approx(1.0)
    assert m.remaining_life_factor(2.0) == pytest.approx(1 - 0.1 * math.exp(-1.0))


def test_toml_round_trip(tmp_path):
    sc = Scenario.model_validate(scenario_dict())
    text = sc.to_toml()
    assert Scenario.from_toml(text) == sc
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert load_scenario(f) == sc


def test_toml_errors_name_the_field():
    text = Scenario.model_validate(scenario_dict()).to_toml().replace("sigma = 0.3", "sigma = -0.3", 1)
    with pytest.raises(ValidationError, match="sigma"):
        Scenario.from_toml(text)
    text = Scenario.model_validate(scenario_dict()).to_toml().replace("dt = ", "dt = -", 1)
    with pytest.raises(ValidationError, match="dt"):
        Scenario.from_toml(text)
    text = Scenario.model_validate(scenario_dict()).to_toml().replace("kappa = 1.0", "kappa = nan", 1)
    with pytest.raises(ValidationError, match="kappa"):
        Scenario.from_toml(text)


def test_calm_scenario_file_loads():
    sc = load_scenario(CALM)
    assert isinstance(sc.model, LPExitModel)
    assert {p.lp_type for p in sc.model.populations} >= {"pension", "endowment", "sovereign"}
    assert Scenario.from_toml(sc.to_toml()) == sc


level = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)  # docs/model.md 3.1
positive = st.floats(min_value=1e-6, max_value=100.0, allow_nan=False, allow_infinity=False)
annual = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(lbar=level, sigma=positive, eta=positive, y=annual, name=st.text(min_size=1, max_size=12).filter(str.strip),
       amp=st.one_of(st.none(), level))
def test_toml_round_trip_property(lbar, sigma, eta, y, name, amp):
    pop = {**POP, "name": name, "lbar": lbar, "sigma": sigma, "eta": eta, "y": y,
           "seasonal": None if amp is None else {"amplitude": amp}}
    d = scenario_dict()
    d["model"]["populations"] = [pop]
    targets = [lbar, lbar + (amp or 0.0), pop["initial_mean"]]  # the grid holds the drift's targets
    d["grid"] = {**d["grid"], "L_min": min(d["grid"]["L_min"], min(targets) - 1.0),
                 "L_max": max(d["grid"]["L_max"], max(targets) + 1.0)}
    sc = Scenario.model_validate(d)
    assert Scenario.from_toml(sc.to_toml()) == sc


def test_solver_defaults_and_units():
    """Defaults of the fixed point (docs/lp_exit_fixed_point.md); the temperature is in NAV units."""
    o = SolverOptions()
    assert (o.temperature, o.damping, o.anderson, o.precondition, o.workers) == (1e-3, 1.0, 5, True, 1)
    sc = Scenario.model_validate(scenario_dict())
    assert sc.solver.precondition is False and sc.solver.anderson == 3
    assert Scenario.from_toml(sc.to_toml()) == sc
