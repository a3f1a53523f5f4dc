"""The epsilon-Nash bounds of the MFG policy (experiments/epsilon_nash.py, docs/model.md 2.9b)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments import convergence as cv
from experiments.convergence_models import _lp_solution, lp_market
from experiments.epsilon_nash import EpsilonNash, epsilon_rates, epsilon_table, market_features

TINY_CLEARING_TOML = """
[model]
start = 2015.0
end = 2017.0

[model.market]
kind = "clearing"
pbar = 0.88
tau_d = 2.0
gamma = 4.0
P_cap = 1.0
K0 = 0.03
Kbar = 0.03
theta_K = 2.0
a_tail = 0.15
tau_tail = 2.0

[[model.populations]]
name = "pension"
vintage = 2011.0
life = 12.0
weight = 0.6
kappa = 0.5
lbar = 1.0
sigma = 0.3
lam = 0.2
alpha = 0.1
eta = 5.0
ell = 0.45
y = 0.05
r = 0.08
g = 0.03
phi = 0.01
a_max = 2.0
delta = 0.2
initial_mean = 1.0
initial_std = 0.25

[[model.populations]]
name = "endowment"
vintage = 2013.0
life = 12.0
weight = 0.4
kappa = 0.4
lbar = 1.0
sigma = 0.35
lam = 0.3
alpha = 0.15
eta = 5.0
ell = 0.43
y = 0.05
r = 0.08
g = 0.03
phi = 0.01
a_max = 2.0
delta = 0.2
initial_mean = 1.0
initial_std = 0.3

[grid]
L_min = -1.5
L_max = 3.5
n_L = 201
dt = 0.07692307692307693

[solver]
temperature = 0.001
tol = 1e-8
max_iter = 40
"""


@pytest.fixture(scope="module")
def tiny_clearing(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scenario") / "tiny_clearing.toml"
    path.write_text(TINY_CLEARING_TOML)
    return str(path)


def _paths_of(model, n, reps, seed=1):
    frame = model.simulate(n, reps, np.random.SeedSequence(seed))
    return {s: frame[s].to_numpy(dtype=float).reshape(reps, -1) for s in model.series}


def test_on_the_mfgs_own_paths_every_bound_is_the_mfg_exploitability(tiny_clearing):
    """At N = infinity (the MFG's paths) the clairvoyant and the open-loop best responses are the same hard best
    response, whose gain over the MFG policy is the solver's exploitability; the regression deviation sees no
    state deviation and no continuation gap, so it plays the open loop."""
    _, res = _lp_solution(tiny_clearing, None, None)
    e = EpsilonNash(res)
    paths = {k: np.tile(v, (4, 1)) for k, v in e.ref.items()}
    g = e(paths)
    assert list(g["set"]) == ["fit", "fit", "eval", "eval"] and g["lower"][:2].isna().all()
    for col in ("upper", "open_loop"):
        np.testing.assert_allclose(g[col], res.exploitability, rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(g["lower"][2:], res.exploitability, rtol=1e-9, atol=1e-16)
    assert np.all(market_features(paths, e.ref) == 0.0)


def test_impact_market_bounds_on_the_mfg_paths(tmp_path):
    from test_convergence import TINY_TOML

    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    _, res = _lp_solution(str(path), None, None)
    e = EpsilonNash(res)
    g = e({k: np.tile(v, (2, 1)) for k, v in e.ref.items()})
    np.testing.assert_allclose(g["upper"], res.exploitability, rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(g["open_loop"], res.exploitability, rtol=1e-9, atol=1e-16)


def test_the_clairvoyant_bound_dominates_and_threads_do_not_matter(tiny_clearing):
    """On every finite-N path the hard best response to that path is worth at least any policy the sweep
    values on it (the open loop, the regression deviation): upper >= open_loop, upper >= lower, path by path.
    The sums over populations are taken in population order: any thread count gives the same numbers."""
    model = lp_market(tiny_clearing, epsilon=True)
    paths = _paths_of(model, 300, 8)
    g1 = EpsilonNash(_lp_solution(tiny_clearing, None, None)[1], threads=1)(paths)
    g2 = EpsilonNash(_lp_solution(tiny_clearing, None, None)[1], threads=2)(paths)
    pd.testing.assert_frame_equal(g1, g2, check_exact=True)
    assert np.all(g1["upper"] >= g1["open_loop"] - 1e-15)
    ev = g1[g1["set"] == "eval"]
    assert np.all(ev["upper"] >= ev["lower"] - 1e-15) and np.all(np.isfinite(ev["lower"]))
    # the finite market's paths are not the MFG's: the clairvoyant gains more than at N = infinity
    assert g1["upper"].mean() > 2 * model.mfg_exploitability


def test_rates_of_the_bounds_recover_a_known_rate():
    rng = np.random.default_rng(5)
    e_inf = 1e-5
    gains = {}
    for n in (100, 316, 1000, 3162, 10000, 31623, 100000):
        r = 40
        up = e_inf + 0.3 / n + 0.02 / n * rng.standard_normal(r)
        low = e_inf + 0.1 / n + 0.01 / n * rng.standard_normal(r)
        gains[n] = pd.DataFrame({"replication": np.arange(r), "set": np.where(np.arange(r) < r // 2, "fit", "eval"),
                                 "upper": up, "open_loop": low, "lower": np.where(np.arange(r) < r // 2, np.nan, low)})
    table, draws = epsilon_table(gains, "toy", e_inf, n_boot=500, rng=np.random.default_rng(1))
    need = ["model", "N", "lower", "lower_lo", "lower_hi", "upper", "upper_lo", "upper_hi", "mfg_exploitability"]
    assert list(table.columns[:len(need)]) == need
    assert (table["replications_eval"] == 20).all()
    assert (table["upper_lo"] <= table["upper"]).all() and (table["upper"] <= table["upper_hi"]).all()
    rates = epsilon_rates(table, draws, n_range=(3e3, 1e5)).set_index(["bound", "range"])
    for bound in ("upper", "lower"):
        for rng_ in ("all", "thick"):
            row = rates.loc[(bound, rng_)]
            assert row["exponent_lo"] <= -1.0 <= row["exponent_hi"], (bound, rng_, row.to_dict())
    assert rates.loc[("upper", "all"), "amplitude"] == pytest.approx(0.3, rel=0.1)
    # an excess that is not resolved has no rate
    flat = {n: g.assign(upper=e_inf + 1e-9 * rng.standard_normal(len(g))) for n, g in gains.items()}
    t2, d2 = epsilon_table(flat, "toy", e_inf, n_boot=200, rng=np.random.default_rng(2))
    r2 = epsilon_rates(t2, d2).set_index(["bound", "range"])
    assert math.isnan(r2.loc[("upper", "all"), "exponent"])


def test_a_study_with_bounds_writes_them(tiny_clearing, tmp_path):
    ns = (100, 300, 1000)
    config = cv.StudyConfig(
        models={"lp": ("experiments.convergence:lp_market", {"scenario": tiny_clearing, "epsilon": True})},
        ns={"lp": ns}, reps={"lp": {100: 6, 300: 6, 1000: 4}}, epsilon_reps={"lp": 4}, task_seconds=1e-3,
        slope_range=(100, 1000), tail_range=(100, 1000), n_boot=100, seed=3, label="tiny")
    keys = cv.plan_tasks(config)
    assert sorted((k["n"], k["block"], k["reps"]) for k in keys if k["block"] == 0) == [(100, 0, 4), (300, 0, 4),
                                                                                          (1000, 0, 4)]
    res = cv.run_study(config, tmp_path, executor="inprocess", progress=False, dpi=50)
    eps = pd.read_csv(tmp_path / "epsilon_nash.csv")
    for col in ("model", "N", "lower", "lower_lo", "lower_hi", "upper", "upper_lo", "upper_hi", "mfg_exploitability"):
        assert col in eps.columns, col
    assert list(eps["N"]) == list(ns) and (eps["replications"] == 4).all() and (eps["replications_eval"] == 2).all()
    assert (tmp_path / "epsilon_nash.png").is_file() and (tmp_path / "epsilon_rates.csv").is_file()
    assert (tmp_path / "markets.csv").is_file()
    assert "Epsilon-Nash bounds" in res.summary and "do the data support" in res.summary
    assert (eps["upper"] >= eps["mfg_exploitability"]).all()
