"""Crisis experiments, part A: amplification, recovery, spillover, seasonality, LP types and the `gelav crisis`
group (experiments/crisis/; docs/crisis.md).

Each experiment runs once on its quick grid (module fixtures; the scenario solves are shared in the
process); the tests check that every measure is computed, finite and written, and the claims of
docs/crisis.md that do not depend on the grid.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from experiments.crisis import amplification, lp_types, recovery, seasonality, spillover
from experiments.crisis.common import EXPERIMENTS


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("crisis")


@pytest.fixture(scope="module")
def amp(out):
    return amplification.run(out, quick=True)


def _files_written(report, out, stems):
    folder = out / report.name
    assert (folder / "summary.md").read_text().startswith("# ")
    for stem in stems:
        assert (folder / stem).stat().st_size > 0, stem
    for png in folder.glob("*.png"):
        assert png.stat().st_size > 20_000
    assert not list(folder.glob(".*")), "temporary files left behind"


def test_registry_holds_every_experiment():
    from experiments.crisis.cli import load_experiments

    assert list(load_experiments()) == ["amplification", "recovery", "spillover", "seasonality", "lp_types",
                                        "finite_n", "equilibria", "calibration", "facts"]
    assert set(EXPERIMENTS) >= {"amplification", "facts", "equilibria"}


def test_amplification_reports_the_three_measures(amp, out):
    f = amp.facts
    assert math.isfinite(f["multiplier"]) and f["multiplier"] > 0
    assert f["troughs"]["equilibrium"] == pytest.approx(f["multiplier"] * f["troughs"]["first_round"])
    for label in ("calm α, λ", "α = λ = 0"):
        assert all(math.isfinite(v) for v in f["convexity"][label].values())
    assert set(f["spiral"]) == {"calm α, λ", "α only", "λ only", "α = λ = 0"}
    table = amp.tables["measures"].set_index("path")
    assert list(table.index) == ["dcf", "first_round", "myopic", "equilibrium"]
    depth = amp.tables["depth"]
    assert (depth[depth.depth == 0.0].trough == 0.0).all() and (np.diff(depth[depth.variant == "calm α, λ"]
                                                                        .trough) > 0).all()
    assert "Multiplier" in amp.summary and "Spiral sign" in amp.summary and "Convexity" in amp.summary
    _files_written(amp, out, ["measures.csv", "depth.csv", "breadth.csv", "spiral.csv", "paths.csv",
                              "amplification.png"])
    paths = pd.read_csv(out / "amplification" / "paths.csv")
    assert set(paths.path) == {"dcf", "first_round", "myopic", "equilibrium"}


def test_split_model_conserves_the_weights():
    from experiments.crisis.common import load

    sc = load("shock_demo", quick=True)
    half = amplification.split_model(sc, 0.25)
    assert len(half.model.populations) == 2 * len(sc.model.populations)
    assert sum(p.weight for p in half.model.populations) == pytest.approx(sum(p.weight for p in sc.model.populations))
    assert amplification.convexity(0.0, 0.5, 1.0) == 0.0 and amplification.convexity(0.0, 0.25, 1.0) > 0


def test_recovery(out):
    rep = recovery.run(out, quick=True)
    t = rep.tables["recovery"].set_index("scenario")
    assert (t.gap_trough > 0).all() and (t.closed_12m > t.closed_6m).all()
    assert ((0.0 < t.closed_6m) & (t.closed_6m < 1.0)).all()
    _files_written(rep, out, ["recovery.csv", "recovery_paths.csv", "recovery.png"])


def test_fit_exponentials_recovers_known_rates():
    tau = np.linspace(0, 2, 49)
    fit = recovery.fit_exponentials(tau, 0.6 * np.exp(-6.0 * tau) + 0.4 * np.exp(-1.0 * tau))
    assert fit["k1"] == pytest.approx(6.0, rel=1e-3) and fit["k2"] == pytest.approx(1.0, rel=1e-3)
    assert fit["delta_aic"] < 0
    one = recovery.fit_exponentials(tau, 0.9 * np.exp(-2.0 * tau))
    assert one["k"] == pytest.approx(2.0, rel=1e-6) and one["rss_one"] < 1e-12


def test_spillover(out):
    rep = spillover.run(out, quick=True)
    t = rep.tables["spillover"]
    assert len(t) == 2 * 9 and t.converged.all()
    assert (t.price_trough_pct < 0).all()  # one price and one buyer capital: every group's price falls
    assert (t[t.own].extra_sold_pct > 0).all()  # the shocked group sells more
    _files_written(rep, out, ["spillover.csv", "spillover_paths.csv", "spillover.png"])


def test_seasonality_mechanism(out):
    rep = seasonality.run(out, quick=True)
    f = rep.facts
    assert f["h2_min"] > 0.5 and abs(f["h2_box_off"] - 0.5) < 0.01  # without the Q3-Q4 box the shares are flat
    shares = rep.tables["shares"]
    assert np.allclose(shares[["Q1", "Q2", "Q3", "Q4"]].sum(axis=1), 1.0)
    _files_written(rep, out, ["shares.csv", "seasonality.png"])


def test_lp_types(out):
    rep = lp_types.run(out, quick=True)
    comp = rep.tables["composition"]
    assert np.allclose(comp.groupby(["case", "window"]).share.sum(), 1.0)
    f = rep.facts
    assert f["sovereign_calm_min"] > 0 and f["sovereign_2009"] < f["sovereign_2009_no_crisis"]
    crisis = comp[(comp.case == "crisis") & (comp.window == "H1 2009 (trough)")].set_index("lp_type").share
    assert crisis["endowment"] > 0.5  # endowments are the stressed sellers
    _files_written(rep, out, ["composition.csv", "sovereigns.csv", "lp_types.png"])


def test_crisis_group_lists_every_experiment():
    from experiments.crisis.cli import crisis

    r = CliRunner().invoke(crisis, ["--help"])
    assert r.exit_code == 0, r.output
    for name in ("amplification", "calibration", "facts", "equilibria", "all"):
        assert name in r.output


def test_crisis_command_prints_headline_numbers(tmp_path):
    from experiments.crisis.cli import crisis

    r = CliRunner().invoke(crisis, ["seasonality", "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 0, r.output
    assert "Second-half share" in r.output and "Q3-Q4 box off" in r.output and "#" not in r.output.split("\n")[0]


def test_crisis_all_ends_with_the_facts_table(tmp_path, monkeypatch):
    from experiments.crisis import cli

    fake = cli.load_experiments()
    picked = {n: fake[n] for n in ("seasonality", "facts")}
    monkeypatch.setattr(cli, "load_experiments", lambda: picked)
    r = CliRunner().invoke(cli.crisis, ["all", "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 0, r.output
    assert "== seasonality" in r.output and "== facts" in r.output and "all 2 experiments" in r.output
    tail = r.output.strip().splitlines()
    assert "facts pass" in tail[-2] and (tmp_path / "facts" / "facts.csv").exists()
