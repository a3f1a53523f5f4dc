"""No validated input may crash, hang or silently corrupt (docs/model.md 3.1, 3.3).

Every input either is refused with the offending field named (pydantic, at the boundary),
or ends in a finite result, or in an error that names the step where a number stopped being
finite and the inputs most likely responsible.  `.ci/run` runs this module (and the other
kernel tests, marker ``kernels``) a second time with numba's bounds checking on, so an
out-of-bounds access in a kernel is an ``IndexError`` there instead of memory corruption.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pydantic
import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abm import simulate
from abm.lp_market.policies import ThresholdPolicy
from experiments.cli import main
from mfg.lp_exit import Scenario, SolverOptions, solve
from mfg.lp_exit.kernels import interior_range

pytestmark = pytest.mark.kernels

LIBRARY = Path(__file__).resolve().parents[1] / "mfg" / "lp_exit" / "library"


def calm(name: str = "impact_calm") -> dict:
    """A calm scenario as a dict: the impact market's by default (its triggers were found on it), or ``"calm"``
    (the clearing market)."""
    with open(LIBRARY / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh)


def mutate(d: dict, field: str, value) -> dict:
    """``d`` with ``field`` set to ``value`` on every population (or on the market, or the seasonal boxes)."""
    d = copy.deepcopy(d)
    if field.startswith("market."):
        d["model"]["market"][field.split(".", 1)[1]] = value
    elif field == "amplitude":
        for p in d["model"]["populations"]:
            if "seasonal" in p:
                p["seasonal"]["amplitude"] = value
    elif field.startswith("grid."):
        d["grid"][field.split(".", 1)[1]] = value
    else:
        for p in d["model"]["populations"]:
            p[field] = value
    return d


def assert_finite_result(r) -> None:
    assert np.all(np.isfinite(r.price)) and np.all(r.price > 0.0)
    assert np.all(np.isfinite(r.mean_liquidity)) and np.all(np.isfinite(r.buyer_capital))
    assert np.all(np.isfinite(r.density)) and np.all(np.isfinite(r.exit_prob))
    for k in range(len(r.populations)):  # the value is NaN only outside a population's life
        active = r.active_mass[k] > 0
        assert np.all(np.isfinite(r.value[k][active]))
    assert math.isfinite(r.exploitability)


# ----------------------------------------------------------------------------------
# the kernels' index logic
# ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rate=st.floats(-2.0, 2.0), sp0=st.floats(-1e6, 1e6), half=st.floats(0.0, 1e3), n=st.integers(3, 500))
def test_interior_range_is_inside_the_grid_for_any_feet(rate, sp0, half, n):
    """Feet anywhere (every foot below or above the grid included): 0 <= i_in <= i_out <= n, and the
    range holds only nodes whose two feet lie in (0, last) with a margin."""
    last = n - 1
    sm0 = sp0 - 2.0 * half
    i_in, i_out = interior_range(rate, sp0, sm0, last, n)
    assert 0 <= i_in <= i_out <= n
    for i in range(i_in, i_out):
        for s in (i * rate + sp0, i * rate + sm0):
            assert 0.0 < s < last and int(s) + 1 <= last


def test_interior_range_of_non_finite_feet_is_empty():
    for bad in (math.nan, math.inf, -math.inf):
        assert interior_range(1.0, bad, 0.0, 10, 11) == (0, 0)
        assert interior_range(bad, 0.5, 0.2, 10, 11) == (0, 0)


# ----------------------------------------------------------------------------------
# the reproducers of the fuzz campaign, on the shipped calm grid
# ----------------------------------------------------------------------------------

REPRODUCERS = [("lbar", -300.0), ("alpha", 1000.0), ("market.beta", 100.0), ("market.pbar", 100.0),
               ("amplitude", -100.0)]


@pytest.mark.parametrize("field,value", REPRODUCERS)
def test_reproducers_end_in_a_named_error_or_a_finite_result(field, value):
    try:
        sc = Scenario.model_validate(mutate(calm(), field, value))
    except pydantic.ValidationError as exc:
        assert field.split(".")[-1] in str(exc)
        return
    options = sc.solver.model_copy(update={"max_iter": 30})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = solve(sc.model, sc.grid, options)
    except FloatingPointError as exc:
        assert "step" in str(exc) and "market.beta" in str(exc)
        return
    assert_finite_result(r)
    # the extreme input is flagged: mass piles on an end of the grid, or the fixed point does not converge
    assert {w.category.__name__ for w in caught} & {"BoundaryMassWarning", "ConvergenceWarning"}


def test_engine_reproducers():
    for field, value in (("lbar", 1e308), ("sigma", 1e308), ("market.theta_K", 200.0)):
        for name in ("impact_calm", "calm"):
            with pytest.raises(pydantic.ValidationError, match=field.split(".")[-1]):
                Scenario.model_validate(mutate(calm(name), field, value))
    sc = Scenario.model_validate(mutate(calm(), "market.S0", 1000.0))
    with pytest.raises(FloatingPointError, match=r"step 0 .*market.S0=1000"):
        simulate(sc, ThresholdPolicy(0.5), n_agents=500, seed=1)


def test_too_fine_a_step_is_refused_before_allocating():
    with pytest.raises(pydantic.ValidationError, match="dt"):
        Scenario.model_validate(mutate(calm(), "grid.dt", 1e-12))
    sc = Scenario.model_validate(mutate(mutate(calm(), "grid.dt", 1e-5), "market.tau_s", 1.0))
    with pytest.raises(MemoryError, match=r"needs .* GiB .* coarser grid"):
        solve(sc.model, sc.grid, sc.solver)


@pytest.mark.parametrize("field,value,code,pattern", [
    ("lbar", -300.0, 2, r"lbar=-300 puts the drift's target"),
    ("market.beta", 100.0, 1, r"step \d+ .*market has collapsed.*market.beta=100"),
])
def test_cli_ends_in_one_line_naming_the_problem(tmp_path, field, value, code, pattern):
    path = tmp_path / "bad.toml"
    d = mutate(calm(), field, value)
    d["solver"]["max_iter"] = 30
    path.write_text(tomli_w.dumps(d))
    r = CliRunner().invoke(main, ["lp-exit", str(path), "--out", str(tmp_path / "out")])
    assert r.exit_code == code, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and re.search(pattern, err[0]), r.output
    assert "Traceback" not in r.output


# ----------------------------------------------------------------------------------
# property: any input is refused by name, or gives a finite result
# ----------------------------------------------------------------------------------


def small_clearing_calm() -> dict:
    """The clearing market's calm cut to its first six populations and a 6-year window (speed)."""
    d = calm("calm")
    d["model"]["end"] = d["model"]["start"] + 6.0
    live = [p for p in d["model"]["populations"] if p["vintage"] < d["model"]["end"]]
    d["model"]["populations"] = live[:6]
    d.pop("report", None)
    return d

COARSE = {"L_min": -1.5, "L_max": 3.5, "n_L": 61, "dt": 1.0 / 12.0}
CLEARING_FIELDS = ["market.pbar", "market.tau_d", "market.gamma", "market.P_cap", "market.K0", "market.Kbar",
                   "market.theta_K", "delta"]
POP_FIELDS = ["kappa", "lbar", "sigma", "lam", "alpha", "eta", "ell", "y", "r", "g", "phi", "a_max",
              "initial_mean", "initial_std", "life", "weight", "amplitude"]
MARKET_FIELDS = ["market.pbar", "market.beta", "market.tau_s", "market.K0", "market.Kbar", "market.theta_K",
                 "market.S0", "market.a_tail", "market.tau_tail"]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e308, -1e308, 1e3, -1e3, 1e6, -1e6, 0.5, 2.0, -1.0]),
    st.floats(-10.0, 10.0),
)


@pytest.mark.parametrize("market", ["impact", "clearing"])
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_scenario_is_refused_by_name_or_gives_a_finite_result(market, data):
    fields = POP_FIELDS + (MARKET_FIELDS if market == "impact" else CLEARING_FIELDS)
    mutations = data.draw(st.lists(st.tuples(st.sampled_from(fields), VALUES), min_size=1, max_size=3))
    d = calm() if market == "impact" else small_clearing_calm()
    d["grid"] = dict(COARSE)
    d["solver"]["max_iter"] = 20
    for field, value in mutations:
        d = mutate(d, field, value)
    try:
        sc = Scenario.model_validate(d)
    except pydantic.ValidationError as exc:
        named = {str(part) for e in exc.errors() for part in e["loc"]} | {str(exc)}
        assert any(f.split(".")[-1] in " ".join(named) for f, _ in mutations), str(exc)
        return
    options = SolverOptions(**{**sc.solver.model_dump(), "max_iter": 20})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and boundary-mass warnings are expected here
            r = solve(sc.model, sc.grid, options)
    except FloatingPointError as exc:
        assert "step" in str(exc), str(exc)
        return
    assert_finite_result(r)
    try:
        sim = simulate(sc, r, n_agents=300, seed=1)
    except FloatingPointError as exc:
        assert "step" in str(exc), str(exc)
        return
    assert np.all(np.isfinite(sim.price)) and np.all(np.isfinite(sim.liquidity))
