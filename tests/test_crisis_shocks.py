"""Crisis experiments, part A: scenario files, amplification, recovery, spillover and the `gelav crisis` group.

Each experiment runs once on its quick grid (module fixtures); the tests check its qualitative
claims (docs/crisis.md) and that its outputs are written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from experiments.crisis import amplification, recovery, spillover
from experiments.crisis.common import EXPERIMENTS, SCENARIO_DIR
from mfg.lp_exit import solve
from mfg.lp_exit.params import load_scenario
from mfg.lp_exit.scenarios import solve_scenario

SCENARIOS = ("crisis_2008", "covid_2020", "rates_2022", "lp_types", "vintages")


# ----------------------------------------------------------------------------------
# scenario files
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_file_loads_documents_and_converges(name):
    path = SCENARIO_DIR / f"{name}.toml"
    text = path.read_text()
    comments = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert len(comments) >= 8 and "docs/model.md" in text  # documented, with the source of its targets
    sc = load_scenario(path)
    n_t = round((sc.model.end - sc.model.start) / sc.grid.dt) + 1
    assert sc.grid.n_L <= 251 and n_t <= 200  # coarse enough for a few seconds
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning, no BoundaryMassWarning
        res = solve_scenario(sc.model, sc.grid, sc.solver, sc.events) if sc.events else solve(sc.model, sc.grid,
                                                                                                 sc.solver)
    assert res.converged
    assert res.timings["total"] < 10.0
    assert np.all(np.isfinite(res.price)) and np.all(res.price > 0)


def test_crisis_2008_against_the_public_figures():
    """docs/model.md 2.10: 84.7 (H1 2008) -> 61 (H2 2008) -> 40-45 -> 72 (H2 2009) -> 80 -> 84 (H2 2010)."""
    sc = load_scenario(SCENARIO_DIR / "crisis_2008.toml")
    eq = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    t, p = eq.t, eq.price

    def half(a):
        return float(p[(t >= a) & (t < a + 0.5)].mean())

    assert 0.84 < half(2008.0) < 0.92  # before the shock: calm
    assert 0.40 < p.min() < 0.60  # a deep trough (public 40-45; the model's is shallower)
    assert half(2009.0) < half(2009.5) < half(2010.0) < half(2010.5)  # recovery
    assert 0.78 < half(2010.5) < 0.90
    # endowments are the stressed sellers after the shock, sovereigns sell least
    w = eq.model.weights
    after = (t >= 2008.75) & (t < 2009.75)
    sold = {n: float(eq.flow[k, after].sum() * eq.dt) for k, n in enumerate(eq.populations)}
    assert sold["endowment"] > sold["pension"] > sold["sovereign"]
    assert sold["endowment"] / w[1] > sold["sovereign"] / w[2]


def test_covid_2020_against_the_public_figures():
    """docs/model.md 2.10: 89 -> 80 (H1 2020) -> about 90 a year later."""
    sc = load_scenario(SCENARIO_DIR / "covid_2020.toml")
    eq = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    t, p = eq.t, eq.price
    pre = float(p[(t >= 2019.5) & (t < 2020.25)].mean())
    assert 0.87 < pre < 0.92
    assert 0.75 < p[t >= 2020.25].min() < 0.85
    assert float(p[(t >= 2021.5) & (t < 2022.0)].mean()) > 0.87


# ----------------------------------------------------------------------------------
# experiments (quick grids)
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("crisis")


@pytest.fixture(scope="module")
def amp(out):
    return amplification.run(out, quick=True)


@pytest.fixture(scope="module")
def rec(out):
    return recovery.run(out, quick=True)


@pytest.fixture(scope="module")
def spill(out):
    return spillover.run(out, quick=True)


def _files_written(report, out, stems):
    folder = out / report.name
    assert (folder / "summary.md").read_text().startswith("# ")
    for stem in stems:
        assert (folder / stem).stat().st_size > 0, stem
    for png in folder.glob("*.png"):
        assert png.stat().st_size > 20_000
    assert not list(folder.glob(".*")), "temporary files left behind"
    assert {p.name for p in report.files} >= set(stems)


def test_registry_holds_the_three_experiments():
    assert {"amplification", "recovery", "spillover"} <= set(EXPERIMENTS)


def test_amplification_claims(amp, out):
    f = amp.facts
    table = amp.tables["amplification"]
    ok = table[~table.calm_run]
    # price impact alone dampens: with alpha = 0 the equilibrium trough is shallower than the DCF baseline's
    a0 = table[table.alpha_scale == 0.0]
    assert (a0.ratio < 1.0).all() and (a0.log_ratio < 1.0).all()
    # the mark-to-market feedback amplifies: the trough deepens with alpha wherever the calm market holds
    assert f["alpha_amplification_monotone"]
    assert f["min_alpha_amplification"] > 1.0
    for (scn, ch), g in ok.groupby(["scenario", "channel"]):
        g = g.set_index("alpha_scale")
        assert g.loc[2.0, "trough_eq"] > g.loc[0.0, "trough_eq"], (scn, ch)
    # with alpha strong enough the equilibrium is deeper than the DCF baseline (amplification > 1)
    strong = ok[(ok.scenario == "covid_2020") & (ok.channel == "full") & (ok.alpha_scale == 3.0)].iloc[0]
    assert strong.ratio > 1.0 and strong.log_ratio > 1.0
    assert f["crisis_2008_ratio"] < 1.0  # ... but not with the calm alpha
    # pre-emption: an announced drought makes LPs sell before the shock
    pre = amp.tables["preemption"]
    ant = pre[pre.variant == "anticipated"]
    assert (ant.preemption_volume_ratio > 1.0).all()
    assert (ant.price_before_shock.to_numpy() <= pre[pre.variant == "unanticipated"].price_before_shock.to_numpy()
            + 1e-9).all()
    _files_written(amp, out, ["amplification.csv", "preemption.csv", "paths.csv", "amplification.png"])
    csv = pd.read_csv(out / "amplification" / "amplification.csv")
    assert len(csv) == len(amplification.SCENARIOS) * len(amplification.CHANNELS) * len(amplification.ALPHA_SCALES)


def test_channel_events_split_the_shock():
    sc = load_scenario(SCENARIO_DIR / "crisis_2008.toml")
    cap = amplification.channel_events(sc.events, "capital")
    liq = amplification.channel_events(sc.events, "liquidity")
    assert all(e.liquidity_shift == 0.0 for e in cap) and any(e.capital_cut > 0 for e in cap)
    assert all(e.capital_cut == 0.0 and e.Kbar_factor == 1.0 for e in liq)
    assert any(e.liquidity_shift < 0 for e in liq)
    with pytest.raises(ValueError):
        amplification.channel_events(sc.events, "nope")


def test_recovery_claims(rec, out):
    f = rec.facts
    t = rec.tables["recovery"]
    assert (t.gap_trough > 0).all()
    assert ((0.3 < t.closed_6m) & (t.closed_6m < 0.9)).all()  # docs/model.md 2.10: about 60% in six months
    assert (t.closed_12m > t.closed_6m).all()
    assert 3.0 < f["crisis_2008_tail_half_life_months"] < 12.0  # public: about 7
    assert f["two_exp_better_everywhere"] and f["crisis_2008_rss_ratio"] > 1.5
    _files_written(rec, out, ["recovery.csv", "recovery_paths.csv", "recovery.png"])


def test_fit_exponentials_recovers_known_rates():
    tau = np.linspace(0, 2, 49)
    x = 0.6 * np.exp(-6.0 * tau) + 0.4 * np.exp(-1.0 * tau)
    fit = recovery.fit_exponentials(tau, x)
    assert fit["k1"] == pytest.approx(6.0, rel=1e-3) and fit["k2"] == pytest.approx(1.0, rel=1e-3)
    assert fit["delta_aic"] < 0 and fit["p_value"] < 1e-6
    one = recovery.fit_exponentials(tau, 0.9 * np.exp(-2.0 * tau))
    assert one["k"] == pytest.approx(2.0, rel=1e-6) and one["A"] == pytest.approx(0.9, rel=1e-6)
    assert one["rss_one"] < 1e-12


def test_spillover_claims(spill, out):
    f = spill.facts
    t = spill.tables["spillover"]
    cross = t[~t.own]
    # a shock to one vintage lowers the others' prices through the shared P and K
    assert f["all_cross_prices_fall"] and (cross.price_peak_pct < -1.0).all()
    assert (cross.price_cum_pct_years < 0).all()
    # the shocked vintage sells more; through P and K alone the others hold out (sell less)
    own = t[t.own]
    assert (own.exit_cum_pct > 1.0).all()
    assert f["price_only_cross_exits_fall"]
    # alpha and lambda shrink the hold-out of the others
    full = cross[cross.variant == "full"].set_index(["shocked", "responding"]).exit_cum_pct
    po = cross[cross.variant == "price only"].set_index(["shocked", "responding"]).exit_cum_pct
    assert (full > po).all()
    assert len(t) == len(spillover.VARIANTS) * 9
    _files_written(spill, out, ["spillover.csv", "spillover_paths.csv", "spillover.png"])


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------


def test_crisis_group_lists_every_registered_experiment():
    from experiments.crisis.cli import crisis

    r = CliRunner().invoke(crisis, ["--help"])
    assert r.exit_code == 0, r.output
    for name in ("amplification", "recovery", "spillover", "all"):
        assert name in r.output


def test_crisis_command_runs_one_experiment(tmp_path):
    from experiments.crisis.cli import crisis

    r = CliRunner().invoke(crisis, ["spillover", "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 0, r.output
    assert "Cross-vintage spillover" in r.output
    assert (tmp_path / "spillover" / "spillover.csv").exists()


def test_crisis_all_runs_each_into_its_folder(tmp_path, monkeypatch):
    from experiments.crisis import cli

    picked = {n: EXPERIMENTS[n] for n in ("recovery", "spillover")}
    monkeypatch.setattr(cli, "load_experiments", lambda: picked)
    r = CliRunner().invoke(cli.crisis, ["all", "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 0, r.output
    assert "== recovery" in r.output and "== spillover" in r.output and "all 2 experiments" in r.output
    assert "Headline" in r.output
    assert (tmp_path / "recovery" / "summary.md").exists() and (tmp_path / "spillover" / "summary.md").exists()


def test_load_experiments_in_registry_order_and_a_missing_module_is_an_error(monkeypatch):
    from experiments.crisis import cli

    got = cli.load_experiments()
    assert list(got)[:3] == ["amplification", "recovery", "spillover"]
    monkeypatch.setattr(cli, "MODULES", cli.MODULES + ("no_such_experiment",))
    with pytest.raises(ModuleNotFoundError, match="no_such_experiment"):
        cli.load_experiments()
