"""Crisis experiments, part B: seasonality, LP types, finite-N check, calibration (experiments/crisis/)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.crisis import calibration, finite_n, lp_types, seasonality
from experiments.crisis.common import EXPERIMENTS, SCENARIO_DIR
from mfg.lp_exit import solve
from mfg.lp_exit.params import load_scenario
from mfg.lp_exit.scenarios import solve_scenario

CRISIS = SCENARIO_DIR / "crisis_2008.toml"


def _coarse(sc, n_L=81, dt=None, L_min=None):
    g = sc.grid.model_copy(update={"n_L": n_L, **({} if dt is None else {"dt": dt}),
                                   **({} if L_min is None else {"L_min": L_min})})
    return sc.model_copy(update={"grid": g})


def test_registered():
    for name in ("seasonality", "lp_types", "finite_n", "calibration"):
        assert name in EXPERIMENTS


# ---------------------------------------------------------------- seasonality


@pytest.fixture(scope="module")
def seasonal_pair():
    out = {}
    for a in (0.0, -0.15):
        sc, yrs = seasonality.stationary_scenario(a, life=4.0, span=2, lead_out=1, n_L=61)
        out[a] = (solve(sc.model, sc.grid, sc.solver), yrs)
    return out


def test_h2_share_above_half_with_q4_term(seasonal_pair):
    on = seasonality.quarterly_shares(*seasonal_pair[-0.15])
    off = seasonality.quarterly_shares(*seasonal_pair[0.0])
    print(f"\nH2 share (stationary, detrended): Q4 term on {on['h2_detrended']:.4f}, off {off['h2_detrended']:.4f}; "
          f"Q4 share on {on['Q'][4]:.4f}; trend on {on['trend_pct_per_year']:.2f}%/yr")
    assert on["h2_detrended"] > 0.5
    assert on["h2_detrended"] > off["h2_detrended"] + 0.005
    assert abs(off["h2_detrended"] - 0.5) < 0.005  # the stationary market has no calendar effect without s(t)
    assert on["Q"][4] == max(on["Q"].values())
    assert math.isclose(sum(on["Q"].values()), 1.0, abs_tol=1e-12)


def test_q4_term_raises_pensions_mass_below_threshold(seasonal_pair):
    res, yrs = seasonal_pair[-0.15]
    d = seasonality.quarter_diagnostics(res, "pension", yrs)
    res0, _ = seasonal_pair[0.0]
    d0 = seasonality.quarter_diagnostics(res0, "pension", yrs)
    assert d.pension_mass_below.iloc[3] > d0.pension_mass_below.iloc[3]
    assert d.pension_mass_below.iloc[3] > d.pension_mass_below.iloc[1]  # Q4 above Q2


# ---------------------------------------------------------------- LP types


@pytest.fixture(scope="module")
def crisis_result():
    sc = _coarse(load_scenario(CRISIS), n_L=111)
    return solve_scenario(sc.model, sc.grid, sc.solver, sc.events)


def test_composition_sums_to_one_and_types_behave(crisis_result):
    win = {"pre": (2007.75, 2008.75), "trough": (2008.75, 2009.25), "2010": (2010.0, 2011.0)}
    comp = lp_types.composition(crisis_result, win)
    sums = comp.groupby("window").share.sum()
    assert np.allclose(sums.values, 1.0, atol=1e-12)
    s = comp.set_index(["window", "lp_type"]).share
    assert s[("trough", "endowment")] > 0.5          # endowments are the stressed sellers
    assert s[("trough", "pension")] < s[("2010", "pension")]  # pensions come back in the recovery
    assert s[("trough", "sovereign")] < 0.01         # sovereigns postpone
    w = lp_types.waiting_paths(crisis_result)
    sov = w[w.lp_type == "sovereign"]
    assert (sov.distance.dropna() > 0).all()        # sovereigns' liquidity stays above their threshold
    assert (sov.value_of_waiting.dropna() > 0).all()


# ---------------------------------------------------------------- finite N


def test_within_error_bars_rule():
    ok, bound = finite_n.within_error_bars(np.zeros(100), 8)
    assert ok and bound > 3
    bad, _ = finite_n.within_error_bars(np.r_[np.zeros(99), 50.0], 8)
    assert not bad


def test_finite_n_check_runs_and_reports():
    sc = _coarse(load_scenario(CRISIS), n_L=111)
    c = finite_n.check_scenario(sc, n_agents=20_000, n_reps=4, seed=7)
    assert isinstance(c["passed"], bool)
    assert np.isfinite(c["bound"]) and np.isfinite(c["rms_z"]) and np.isfinite(c["max_abs_z"])
    mean, se, ref, _ = c["series"]["price"]
    assert mean.shape == ref.shape and np.all(se[1:] > 0)
    # close, up to the O(dL) bias of a coarse grid (docs/crisis_calibration.md)
    assert np.nanmax(np.abs(mean - ref)) < 0.1
    print(f"\nfinite-N (N=2e4, R=4, 111 nodes): within={c['passed']}, max|z|={c['max_abs_z']:.2f} "
          f"(bound {c['bound']:.2f}), rms z={c['rms_z']:.2f}, max price gap={c['max_price_gap']:.2e}")


# ---------------------------------------------------------------- calibration


def test_calibration_recovers_known_parameters():
    sc = _coarse(load_scenario(CRISIS), n_L=91, dt=1 / 12, L_min=-3.0)
    truth = {"shock_scale": 1.3, "beta": 0.14}
    params = [calibration.Param("shock_scale", "log", 0.2, 3.0), calibration.Param("beta", "log", 0.01, 2.0)]
    targets = calibration.targets_2008()
    m, _ = calibration.model_values(calibration.apply_params(sc, truth), targets)
    synth = [calibration.Target(t.period, t.kind, t.t0, t.t1, float(v), t.sigma) for t, v in zip(targets, m)]
    fit = calibration.calibrate(sc, params, synth, {"shock_scale": 1.0, "beta": 0.1}, max_nfev=40)
    print(f"\nsynthetic fit: {fit.values} (truth {truth}), chi2 {fit.chi2:.2e}, {fit.nfev} evaluations")
    for k, v in truth.items():
        assert abs(fit.values[k] / v - 1.0) < 0.02, (k, fit.values[k], v)
    assert fit.chi2 < 1e-3
    assert np.all(np.isfinite(list(fit.se.values())))


def test_calibration_quick_writes_fit_csv(tmp_path):
    rep = calibration.run(tmp_path, quick=True)
    fit = pd.read_csv(tmp_path / "calibration" / "fit.csv")
    assert list(fit.columns[:4]) == ["period", "data", "model", "residual"]
    assert len(fit) == 8 and np.allclose(fit.residual, fit.model - fit.data)
    assert (tmp_path / "calibration" / "parameters.csv").is_file()
    assert (tmp_path / "calibration" / "summary.md").is_file()
    assert (tmp_path / "calibration" / "calibration.png").is_file()
    assert set(rep.facts["covid_errors"]) == {"H2 2019", "H1 2020", "H1 2021"}
