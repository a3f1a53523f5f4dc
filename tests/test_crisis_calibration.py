"""Crisis experiments, part B: calibration, the facts of docs/model.md 2.11, the finite-N replay and the
equilibria after Lehman (experiments/crisis/; docs/crisis_calibration.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.crisis import calibration, equilibria, facts, finite_n, library
from experiments.crisis.common import load


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("crisis_b")


def test_calibration_quick_reports_fit_intervals_and_holdout(out):
    rep = calibration.run(out, quick=True)
    fit = pd.read_csv(out / "calibration" / "fit.csv")
    assert list(fit.period) == ["H1 2008", "H2 2008", "H1 2009", "H2 2009", "H1 2010", "H2 2010",
                                "H1 2009 / H1 2008"]
    assert np.allclose(fit.residual, fit.model - fit.data)
    pars = pd.read_csv(out / "calibration" / "parameters.csv")
    assert list(pars.parameter) == [p.name for p in calibration.PARAMS] and "identified" in pars
    assert (pars.value >= pars.lower).all() and (pars.value <= pars.upper).all()
    f = rep.facts
    assert set(f["covid_errors"]) == {"H2 2019", "H1 2020", "H1 2021"}
    assert f["shipped_difference"] == 0.0  # the quick run evaluates the shipped parameters
    assert math.isfinite(f["price_rmse"]) and 0 < f["volume_ratio"] < 2
    assert "COVID out of sample" in rep.summary and "Not identified" in rep.summary


def test_drought_is_interpolated_between_steps():
    """The drought acts on whole steps: between two aligned values the fit sees a linear interpolation."""
    sc = load("crisis_2008", quick=True)
    base = dict(library.FIT_2008)
    dt = float(sc.grid.dt)
    a = calibration.evaluate(sc, {**base, "drought": 9 * dt})
    b = calibration.evaluate(sc, {**base, "drought": 10 * dt})
    m = calibration.evaluate(sc, {**base, "drought": 9.25 * dt})
    assert np.allclose(m["halves"], 0.75 * a["halves"] + 0.25 * b["halves"], rtol=0, atol=1e-12)


def test_uncertainty_leaves_bound_parameters_out():
    J = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    se, corr, free = calibration._uncertainty(J, np.array([0.5, 0.0, 0.5]), chi2=2.0, dof=1)
    assert not free[1] and math.isnan(se[1]) and np.all(np.isfinite(se[[0, 2]]))
    Jf = J[:, [0, 2]]
    cov = 2.0 * np.linalg.inv(Jf.T @ Jf)
    assert np.allclose(se[[0, 2]], np.sqrt(np.diag(cov)))
    assert corr[0, 0] == pytest.approx(1.0)


def test_facts_table_has_every_row(out):
    rep = facts.run(out, quick=True)
    table = pd.read_csv(out / "facts" / "facts.csv")
    assert list(table.columns) == ["fact", "value", "target", "passed", "set_by"]
    assert list(table.fact) == ["GFC price path", "GFC volume", "withdrawn supply", "recovery",
                                "COVID, held out of every fit", "calm discount", "calm turnover", "seasonality (calm)",
                                "LP types", "sanity"]
    assert table.set_by.str.len().min() > 5
    text = rep.facts["table"]
    for r in table.itertuples():
        assert ("FAILED" in text.split(r.fact)[1].split("\n")[0]) == (not r.passed)
    assert rep.facts["passed"] == int(table.passed.sum())
    # the calm rows are calm.toml's, which meets them (docs/model.md 2.11)
    assert table.set_index("fact").loc[["calm turnover", "seasonality (calm)"], "passed"].all()


def test_finite_n_replay():
    sc = load("crisis_2008", quick=True)
    from experiments.crisis.common import solved

    eq = solved(sc)[1]
    c = finite_n.replay(sc, eq, n_agents=10_000, n_reps=3, transition="exact")
    mean, se, ref, z = c["series"]["price"]
    assert mean.shape == ref.shape and np.mean(se[1:-1] > 0) > 0.9
    assert c["max_price_gap"] < 0.1 and math.isfinite(c["rms_z"])
    ok, bound = finite_n.within_error_bars(np.zeros(100), 8)
    assert ok and bound > 3 and not finite_n.within_error_bars(np.r_[np.zeros(99), 50.0], 8)[0]


def test_equilibria_search_finds_the_scenario_path(out):
    rep = equilibria.run(out, quick=True)
    t = rep.tables["equilibria"]
    assert len(t) >= 1 and rep.facts["selected"] in set(t.equilibrium)
    assert any("scenario path" in s for s in t.starts)  # the scenario's own equilibrium is among them
    assert (out / "equilibria" / "learning.csv").exists()
