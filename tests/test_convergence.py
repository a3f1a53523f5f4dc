"""The convergence study (experiments/convergence.py): statistics, models, the study on the runner."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from experiments import convergence as cv
from experiments.runner import read_sweep

# ----------------------------------------------------------------------------- a tiny LP scenario

TINY_TOML = """
[model]
start = 2015.0
end = 2017.0

[model.market]
kind = "impact"
pbar = 0.93
beta = 0.1
tau_s = 0.25
K0 = 0.06
Kbar = 0.06
theta_K = 1.0
S0 = 0.015
a_tail = 0.15
tau_tail = 2.0

[[model.populations]]
name = "pension"
vintage = 2011.0
life = 12.0
weight = 0.6
kappa = 1.0
lbar = 1.0
sigma = 0.3
lam = 0.2
alpha = 0.3
eta = 0.9
ell = 0.75
y = 0.05
r = 0.08
g = 0.03
phi = 0.01
a_max = 4.0
initial_mean = 1.0
initial_std = 0.2

[[model.populations]]
name = "endowment"
vintage = 2013.0
life = 12.0
weight = 0.4
kappa = 0.8
lbar = 1.0
sigma = 0.35
lam = 0.3
alpha = 0.5
eta = 0.8
ell = 0.65
y = 0.05
r = 0.08
g = 0.03
phi = 0.01
a_max = 4.0
initial_mean = 1.0
initial_std = 0.2

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
def tiny_scenario(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scenario") / "tiny.toml"
    path.write_text(TINY_TOML)
    return str(path)


def tiny_config(scenario: str) -> cv.StudyConfig:
    ns = (100, 300, 1000)
    return cv.StudyConfig(
        models={"lp": ("experiments.convergence:lp_market", {"scenario": scenario, "transition": "two-point"}),
                "pf": ("experiments.convergence:price_formation_market",
                       {"test": 1, "rho": 0.05, "h": 0.1, "reference_size": 2000})},
        ns={"lp": ns, "pf": ns},
        reps={"lp": {100: 12, 300: 8, 1000: 6}, "pf": {100: 6, 300: 4, 1000: 3}},
        task_seconds=1e-3,  # several blocks per N
        slope_range=(100, 1000), n_boot=200, seed=7, label="tiny")


# ----------------------------------------------------------------------------- statistics on synthetic data


def test_fit_slope_recovers_known_slopes():
    n = np.array([1e2, 1e3, 1e4, 1e5])
    for s in (-0.5, -1.0, -0.3):
        assert cv.fit_slope(n, 0.7 * n**s) == pytest.approx(s, abs=1e-12)
    # one fit per row, noisy: within the noise
    rng = np.random.default_rng(0)
    y = 0.3 * n**-0.5 * np.exp(0.02 * rng.standard_normal((50, n.size)))
    slopes = cv.fit_slope(n, y)
    assert slopes.shape == (50,)
    assert abs(slopes.mean() + 0.5) < 0.01
    # a floor bends the curve: the slope is then clearly not -1/2 (the fit can fail)
    assert cv.fit_slope(n, np.sqrt(1e-4**2 + 0.3**2 / n)) < -0.4
    assert cv.fit_slope(n, np.sqrt(3e-3**2 + 0.3**2 / n)) > -0.4


def test_fit_floor_recovers_known_floor_and_constant():
    n = np.array([1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6])
    for b, c in ((1e-3, 0.3), (0.0, 0.3), (5e-2, 0.0), (2e-4, 1.0)):
        fb, fc = cv.fit_floor(n, b**2 + c**2 / n)
        assert fb == pytest.approx(b, abs=1e-9) and fc == pytest.approx(c, abs=1e-9)
    # Monte Carlo errors e = b + C Z / sqrt(N), R replications per N: the mean squares have
    # expectation b^2 + C^2/N; the weighted fit recovers b and C
    rng = np.random.default_rng(1)
    b, c, r = 1e-3, 0.3, 400
    mse, var = [], []
    for k in n:
        e = b + c * rng.standard_normal(r) / math.sqrt(k)
        mse.append(np.mean(e**2))
        var.append(np.var(e**2, ddof=1) / r)
    fb, fc = cv.fit_floor(n, np.array(mse), 1 / np.array(var))
    assert fb == pytest.approx(b, rel=0.15)
    assert fc == pytest.approx(c, rel=0.05)
    # without a floor the estimate of b is far below the statistical error at the largest N
    mse0 = np.array([np.mean((c * rng.standard_normal(r) / math.sqrt(k)) ** 2) for k in n])
    fb0, fc0 = cv.fit_floor(n, mse0, 1 / np.array(var))
    assert fb0 < 0.3 * c / math.sqrt(n[-1]) and fc0 == pytest.approx(c, rel=0.05)


def test_bootstrap_intervals_contain_the_truth_and_cover_about_95_percent():
    rng = np.random.default_rng(2)
    mu, sigma = 0.1, 1.0
    v = mu + sigma * rng.standard_normal(400)
    out = cv.bootstrap_rmse_bias(v, n_boot=2000, seed=3)
    assert out["bias_lo"] < mu < out["bias_hi"]
    assert out["rmse_lo"] < math.hypot(mu, sigma) < out["rmse_hi"]
    assert out["rmse_lo"] < out["rmse"] < out["rmse_hi"]
    # coverage over many data sets (seeded): close to the nominal 95%
    hits_b = hits_r = 0
    trials = 200
    for i in range(trials):
        v = mu + sigma * rng.standard_normal(100)
        o = cv.bootstrap_rmse_bias(v, n_boot=1000, seed=i)
        hits_b += o["bias_lo"] < mu < o["bias_hi"]
        hits_r += o["rmse_lo"] < math.hypot(mu, sigma) < o["rmse_hi"]
    assert 0.88 <= hits_b / trials <= 0.99
    assert 0.88 <= hits_r / trials <= 0.99


# ----------------------------------------------------------------------------- a synthetic model through the study

_TOY_T = np.linspace(0.0, 1.0, 5)


def toy_market(floor: float = 0.0, constant: float = 0.5, bias: float = 0.0) -> cv.FiniteNModel:
    """A market whose path is ``x(t) + floor + bias/N + constant * Z / sqrt(N)`` (Z standard normal):
    ``RMSE^2 = (floor + bias/N)^2 + constant^2 / N`` exactly."""

    def run(n, reps, seed):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((reps, 1)) * np.ones((1, _TOY_T.size))
        x = np.sin(_TOY_T)[None, :] + floor + bias / n + constant * z / math.sqrt(n)
        return pd.DataFrame({"replication": np.repeat(np.arange(reps), _TOY_T.size), "t": np.tile(_TOY_T, reps),
                             "x": x.ravel()})

    ref = pd.DataFrame({"t": _TOY_T, "x": np.sin(_TOY_T)})
    qs = (cv.Quantity("x_sup", "x", "sup"), cv.Quantity("x_end", "x", "final"))
    return cv.FiniteNModel(name="toy", simulate=run, references={"mfg": ref}, quantities=qs,
                           exploitability=lambda paths: float(np.max(np.abs(paths["x"] - ref["x"]))))


def test_study_of_a_synthetic_market_recovers_slope_floor_and_bias_rate(tmp_path):
    ns = (100, 316, 1000, 3162, 10000, 31623, 100000, 316228, 1000000)
    factory = f"{__name__}:toy_market"
    config = cv.StudyConfig(
        models={"clean": (factory, {"constant": 0.5}), "biased": (factory, {"constant": 0.5, "bias": 1.0}),
                "floored": (factory, {"floor": 2e-3})},
        ns={"clean": ns, "biased": ns, "floored": ns},
        reps={"clean": {n: 1000 for n in ns}, "biased": {n: 3000 for n in ns}, "floored": {n: 400 for n in ns}},
        slope_range=(1e2, 1e5), n_boot=500, seed=11, label="synthetic")
    res = cv.run_study(config, tmp_path, executor="inprocess", progress=False, write=False)
    sl = res.slopes.set_index(["model", "quantity"])
    for q in ("x_end", "x_sup"):
        clean = sl.loc[("clean", q)]
        assert clean["slope_lo"] <= -0.5 <= clean["slope_hi"] and abs(clean["slope"] + 0.5) < 0.02
        assert clean["constant_lo"] <= 0.5 <= clean["constant_hi"]
        assert clean["floor"] < 0.2 * 0.5 / math.sqrt(1e6)
    biased = sl.loc[("biased", "x_end")]
    assert biased["bias_points"] >= 3 and biased["bias_slope_lo"] <= -1 <= biased["bias_slope_hi"]
    assert abs(biased["bias_slope"] + 1) < 0.1
    assert math.isnan(sl.loc[("biased", "x_sup"), "bias_slope"])  # a norm has no bias
    floored = sl.loc[("floored", "x_end")]
    assert floored["floor_lo"] <= 2e-3 <= floored["floor_hi"] and floored["floor"] == pytest.approx(2e-3, rel=0.1)
    assert floored["constant_lo"] <= 0.5 <= floored["constant_hi"]
    assert floored["slope_lo"] > -0.5 and floored["slope"] > -0.47  # the floor flattens the slope
    assert floored["n_cross"] == pytest.approx((0.5 / 2e-3) ** 2, rel=0.3)
    conv = res.convergence.set_index(["model", "quantity", "n"])
    row = conv.loc[("floored", "x_end", 1000000)]
    assert row["bias_lo"] <= 2e-3 <= row["bias_hi"] and row["bias_resolved"]
    assert math.isnan(conv.loc[("clean", "x_sup", 100), "bias"])
    assert len(res.exploitability) == 3 * len(ns)


def test_fit_power_recovers_a_bias_rate_and_ignores_unresolved_sizes():
    n = np.array([1e2, 1e3, 1e4, 1e5, 1e6])
    a, s = cv.fit_power(n, -0.3 / n)
    assert s == pytest.approx(-1.0, abs=1e-9) and a == pytest.approx(-0.3, rel=1e-9)
    a, s = cv.fit_power(n, 0.05 * n**-0.5)
    assert s == pytest.approx(-0.5, abs=1e-9)
    # with noise (resolving the bias at the three smallest sizes only), weighted by its
    # variance: the exponent is recovered without bias, one fit per row
    rng = np.random.default_rng(4)
    se = 0.001 / np.sqrt(n)
    y = -0.3 / n + rng.standard_normal((400, n.size)) * se
    _, s = cv.fit_power(n, y, 1 / se**2)
    assert s.shape == (400,)
    assert abs(np.median(s) + 1) < 0.02 and np.mean(np.abs(s + 1) < 0.1) > 0.8


# ----------------------------------------------------------------------------- the path frame


def test_check_path_frame_names_what_is_wrong():
    ref = pd.DataFrame({"t": [0.0, 1.0], "x": [1.0, np.nan]})
    good = pd.DataFrame({"replication": [1, 0, 1, 0], "t": [1.0, 0.0, 0.0, 1.0], "x": [np.nan, 1.0, 2.0, 5.0]})
    out = cv.check_path_frame(good, ref, 2)
    assert out["replication"].tolist() == [0, 0, 1, 1] and out["x"].tolist()[0] == 1.0
    with pytest.raises(ValueError, match="lacks the columns"):
        cv.check_path_frame(good.drop(columns="x"), ref, 2)
    with pytest.raises(ValueError, match="rows"):
        cv.check_path_frame(good, ref, 3)
    with pytest.raises(ValueError, match="time grid"):
        cv.check_path_frame(good.assign(t=[1.0, 0.0, 0.0, 1.5]), ref, 2)
    with pytest.raises(ValueError, match="not finite"):
        cv.check_path_frame(good.assign(x=[0.0, np.nan, 1.0, 1.0]), ref, 2)


# ----------------------------------------------------------------------------- the LP model


def test_lp_exploitability_reproduces_the_solvers_and_grows_off_equilibrium(tiny_scenario):
    _, res = cv._lp_solution(tiny_scenario, None, None)
    assert cv.lp_exploitability(res, res.price, res.mean_liquidity) == res.exploitability
    # against a lower price path the MFG policy sells too little: a best response gains more
    assert cv.lp_exploitability(res, res.price - 0.01, res.mean_liquidity) > 10 * res.exploitability


def test_tiny_study_end_to_end_resumes_and_matches_processes(tiny_scenario, tmp_path):
    config = tiny_config(tiny_scenario)
    out = tmp_path / "study"
    res = cv.run_study(config, out, executor="inprocess", progress=False, dpi=60)
    for name in ("convergence.csv", "slopes.csv", "exploitability.csv", "summary.md", "convergence.png",
                 "manifest.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*")), "temporary files left behind"
    conv = pd.read_csv(out / "convergence.csv")
    slopes = pd.read_csv(out / "slopes.csv")
    assert list(slopes.columns[:7]) == ["model", "quantity", "slope", "slope_lo", "slope_hi", "floor", "constant"]
    n_q = {"lp": len(cv.build_model(config.models["lp"]).quantities),
           "pf": len(cv.build_model(config.models["pf"]).quantities)}
    assert len(conv) == 3 * (n_q["lp"] + n_q["pf"]) and len(slopes) == n_q["lp"] + n_q["pf"]
    assert (conv["rmse_lo"] <= conv["rmse"]).all() and (conv["rmse"] <= conv["rmse_hi"]).all()
    assert set(conv.loc[conv["model"] == "lp", "replications"]) == {12, 8, 6}
    assert np.isfinite(slopes["slope"]).all()
    expl = pd.read_csv(out / "exploitability.csv")
    assert list(expl["model"]) == ["lp"] * 3 and (expl["exploitability"] > 0).all()
    assert "| lp | P_sup |" in res.summary and "Exploitability" in res.summary
    assert res.done == len(cv.plan_tasks(config)) and res.skipped == 0

    # resumable: a second run recomputes nothing and gives the same tables
    again = cv.run_study(config, out, executor="inprocess", progress=False, write=False)
    assert again.done == 0 and again.skipped == res.done
    pd.testing.assert_frame_equal(again.convergence, res.convergence)

    # processes: the same paths, bit for bit (tasks are seeded by their keys)
    out2 = tmp_path / "processes"
    cv.run_study(config, out2, executor="processes", n_workers=2, progress=False, write=False)
    a, b = read_sweep(out), read_sweep(out2)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_plan_blocks_cover_every_replication_once():
    config = cv.default_config()
    keys = cv.plan_tasks(config)
    for name in config.models:
        for n in config.ns[name]:
            blocks = [k for k in keys if k["model"] == name and k["n"] == n]
            assert sum(k["reps"] for k in blocks) == config.reps[name][n]
            assert sorted(k["block"] for k in blocks) == list(range(len(blocks)))


def test_a_folder_holding_another_study_is_refused(tmp_path):
    from experiments.runner import SweepConfigError

    factory = f"{__name__}:toy_market"
    base = cv.StudyConfig(models={"toy": (factory, {})}, ns={"toy": (100, 1000)}, reps={"toy": {100: 4, 1000: 4}},
                          n_boot=50)
    cv.run_study(base, tmp_path, executor="inprocess", progress=False, write=False)
    other = cv.StudyConfig(models={"toy": (factory, {"floor": 1.0})}, ns=base.ns, reps=base.reps, n_boot=50)
    with pytest.raises(SweepConfigError):
        cv.run_study(other, tmp_path, executor="inprocess", progress=False, write=False)
    res = cv.run_study(other, tmp_path, executor="inprocess", progress=False, write=False, overwrite=True)
    assert res.done == 2


def test_cli_convergence_runs_and_prints_the_summary(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from experiments.cli import main

    factory = f"{__name__}:toy_market"
    tiny = cv.StudyConfig(models={"toy": (factory, {})}, ns={"toy": (100, 1000, 10000)},
                          reps={"toy": {100: 20, 1000: 20, 10000: 20}}, slope_range=(100, 10000), n_boot=100,
                          label="quick")
    monkeypatch.setattr(cv, "quick_config", lambda: tiny)
    result = CliRunner().invoke(main, ["convergence", "--quick", "--out", str(tmp_path), "--executor", "inprocess"])
    assert result.exit_code == 0, result.output
    assert "# Convergence study (quick)" in result.output and "| toy | x_end |" in result.output
    assert (tmp_path / "convergence.png").is_file() and (tmp_path / "slopes.csv").is_file()
    again = CliRunner().invoke(main, ["convergence", "--quick", "--out", str(tmp_path), "--executor", "inprocess"])
    assert again.exit_code == 0 and "0 tasks run, 3 already done" in again.output


# ----------------------------------------------------------------------------- windows, shocks, thin markets


def test_quantity_windows_restrict_the_times():
    t = np.linspace(0.0, 1.0, 11)
    ref = pd.DataFrame({"t": t, "x": np.zeros(11)})
    model = cv.FiniteNModel(name="w", simulate=None, references={"mfg": ref}, quantities=())
    d = np.arange(11, dtype=float)[None, :] * np.array([[1.0], [-1.0]])
    paths = {"x": d}
    vals = {kind: cv.quantity_values(cv.Quantity("q", "x", kind, window=(0.2, 0.5)), paths, model)
            for kind in ("sup", "avg", "mean", "final")}
    np.testing.assert_allclose(vals["sup"], [4.0, 4.0])  # t = 0.2, 0.3, 0.4 (the window is [0.2, 0.5))
    np.testing.assert_allclose(vals["avg"], [3.0, 3.0])
    np.testing.assert_allclose(vals["mean"], [3.0, -3.0])
    np.testing.assert_allclose(vals["final"], [5.0, -5.0])  # the last time <= 0.5
    with pytest.raises(ValueError, match="window"):
        cv.Quantity("q", "x", "sup", window=(1.0, 0.5))
    with pytest.raises(ValueError, match="no time"):
        cv.quantity_values(cv.Quantity("q", "x", "avg", window=(2.0, 3.0)), paths, model)


SHOCK_TOML = TINY_TOML + """
[[events]]
time = 2016.0
name = "shock"
populations = []
liquidity_shift = -0.3
capital_cut = 0.3
"""


def test_a_scenario_with_events_is_a_model_with_windows_around_its_shock(tmp_path):
    path = tmp_path / "shock.toml"
    path.write_text(SHOCK_TOML)
    model = cv.lp_market(str(path))
    names = [q.name for q in model.quantities]
    for name in ("P_avg[pre]", "P_avg[shock]", "P_avg[recovery]", "P_mean[shock]", "P_mean[recovery]", "F(T)"):
        assert name in names, names
    windows = {q.name: q.window for q in model.quantities}
    assert windows["P_avg[pre]"] == (2015.0, 2016.0) and windows["P_avg[shock]"] == (2016.0, 2016.75)
    assert windows["P_avg[recovery]"] == (2016.75, 2017.0)
    assert model.exploitability is None and math.isnan(model.mfg_exploitability)
    frame = cv.check_path_frame(model.simulate(400, 3, np.random.SeedSequence(2)), model.reference, 3)
    paths = {s: frame[s].to_numpy(dtype=float).reshape(3, -1) for s in model.series}
    diag = model.diagnostics(paths, 400)
    assert diag["stakes_per_step"] > 0 and {"worst_shock_gap", "worst_recovery_gap"} <= set(diag)
    with pytest.raises(ValueError, match="without shock events"):
        cv.lp_market(str(path), epsilon=True)


def test_the_floor_and_bias_fits_keep_to_the_floor_range(tmp_path):
    """With ``floor_range`` the floor and the bias exponent are fitted on its sizes only: a bias that only the
    smallest sizes resolve (a pre-asymptotic regime) gives an exponent over every size and none over the range."""
    ns = (100, 316, 1000, 3162, 10000, 31623, 100000)
    factory = f"{__name__}:toy_market"
    base = cv.StudyConfig(models={"toy": (factory, {"constant": 0.5, "bias": 3.0})}, ns={"toy": ns},
                          reps={"toy": {n: 2000 for n in ns}}, n_boot=300, seed=5)
    thick = replace(base, floor_range=(3e3, 1e5), tail_range=(3e3, 1e5))
    a = cv.run_study(base, tmp_path / "a", executor="inprocess", progress=False, write=False)
    b = cv.run_study(thick, tmp_path / "b", executor="inprocess", progress=False, write=False)
    ra = a.slopes.set_index("quantity").loc["x_end"]
    rb = b.slopes.set_index("quantity").loc["x_end"]
    assert ra["bias_slope_lo"] <= -1.0 <= ra["bias_slope_hi"]
    assert math.isnan(rb["bias_slope"]) and rb["floor_lo"] == 0.0
    assert rb["tail_slope_lo"] <= -0.5 <= rb["tail_slope_hi"]
