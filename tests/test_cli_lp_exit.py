"""`gelav lp-exit` and `gelav scenarios`: files written, summaries printed, bad input refused cleanly."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.lp_exit_report import SCENARIO_DIR, ScenarioNotFound, resolve_scenario, scenario_description


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_lp_exit_calm_writes_frames_figure_and_summary(tmp_path):
    r = invoke("lp-exit", "calm", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    out = r.output
    assert "12 iterations, converged" in out
    lo, mean, hi = map(float, re.search(r"discount \(% of NAV\): min (\S+), mean (\S+), max (\S+)", out).groups())
    assert 5.0 < lo < mean < hi < 15.0  # docs/model.md 2.10: calm discounts 5 to 15 %, over the report window
    sales = float(re.search(r"sales \(% of active NAV a year\): mean (\S+);", out).group(1))
    assert 1.0 <= sales <= 2.5
    assert "second-half share of annual sales" in out
    market = pd.read_csv(tmp_path / "market.csv")
    pops = pd.read_csv(tmp_path / "populations.csv")
    n_t = 21 * 24 + 1  # 2013-2034 at dt = 1/24
    assert len(market) == n_t and {"t", "price", "discount", "turnover", "withdrawn"} <= set(market.columns)
    assert len(pops) == 32 * n_t and pops["population"].nunique() == 32
    assert (tmp_path / "lp_exit.png").stat().st_size > 50_000
    assert "discount" in (tmp_path / "summary.txt").read_text()
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_lp_exit_shock_demo_prints_the_amplification(tmp_path):
    r = invoke("lp-exit", "shock_demo", "--baseline", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    multiplier = float(re.search(r"amplification multiplier, equilibrium / first round: (\S+)", r.output).group(1))
    troughs = {k: float(v) for k, v in re.findall(r"^  (first_round|myopic|equilibrium) +trough (\S+)%", r.output,
                                                   re.M)}
    assert set(troughs) == {"first_round", "myopic", "equilibrium"}, r.output
    assert multiplier == pytest.approx(troughs["equilibrium"] / troughs["first_round"], rel=5e-3)
    # no pbar_factor in this file: the DCF price is the no-event price, so DCF shows no discount (docs/model.md 2.7)
    assert re.search(r"^  dcf +no discount against the no-event path", r.output, re.M), r.output
    assert "events: squeeze-endowments" in r.output
    for name in ("market.csv", "baseline_market.csv", "amplification.csv", "amplification.png", "lp_exit.png"):
        assert (tmp_path / name).exists(), name
    amp = pd.read_csv(tmp_path / "amplification.csv")
    assert set(amp["path"]) == {"dcf", "first_round", "myopic", "equilibrium"}
    assert amp["multiplier"].iloc[0] == pytest.approx(multiplier, abs=1e-3)
    assert set(pd.read_csv(tmp_path / "market.csv")["segment"]) == {0, 1}


def test_lp_exit_without_baseline_and_with_fd(tmp_path):
    r = invoke("lp-exit", "shock_demo", "--no-baseline", "--method", "fd", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "method fd" in r.output and "Amplification" not in r.output
    assert not (tmp_path / "amplification.csv").exists()


def test_scenarios_lists_the_shipped_files():
    r = invoke("scenarios")
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines() if line.strip()}
    assert "calm" in lines and "shock_demo" in lines
    assert "Calm secondary market" in lines["calm"] and "Shock demonstration" in lines["shock_demo"]


def test_resolve_scenario(tmp_path):
    assert resolve_scenario("calm") == SCENARIO_DIR / "calm.toml"
    assert resolve_scenario("calm.toml") == SCENARIO_DIR / "calm.toml"
    f = tmp_path / "mine.toml"
    f.write_text("# mine\n")
    assert resolve_scenario(f) == f and scenario_description(f) == "mine"
    with pytest.raises(ScenarioNotFound, match=r"calm.*shock_demo"):
        resolve_scenario("nope")


@pytest.mark.parametrize("edit, field", [
    (("kappa = 0.5", "kappa = -1.0"), r"model\.populations\[0\] \(pension-2004\)\.kappa"),
    (("n_L = 129", "n_L = 2"), r"grid\.n_L"),
    (("tau_d = 2.0 ", "tau_d = 2.0\nspeed = 3 "), r"model\.market\.speed: Extra inputs are not permitted"),
])
def test_bad_toml_gives_exit_code_2_and_names_the_field(tmp_path, edit, field):
    text = (SCENARIO_DIR / "calm.toml").read_text()
    assert edit[0] in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    r = invoke("lp-exit", str(bad), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2, r.output
    assert re.search(field, r.output), r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # a refused scenario leaves no output folder behind


def test_out_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        r = invoke("lp-exit", "calm", "--out", str(out))
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "solving" not in r.output and str(out) in r.output


def test_missing_and_unparsable_files_give_exit_code_2(tmp_path):
    r = invoke("lp-exit", "no_such_scenario")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "calm" in r.output and "shock_demo" in r.output  # the error lists the shipped names
    bad = tmp_path / "broken.toml"
    bad.write_text("[model\nstart = 1")
    r = invoke("lp-exit", str(bad))
    assert r.exit_code == 2 and "not valid TOML" in r.output and "Traceback" not in r.output


def test_solver_refusal_gives_exit_code_2(tmp_path):
    text = (SCENARIO_DIR / "shock_demo.toml").read_text()
    bad = tmp_path / "dt.toml"  # a step that does not divide the window
    assert "dt = 0.041666666666666664" in text
    bad.write_text(text.replace("dt = 0.041666666666666664", "dt = 0.037", 1))
    r = invoke("lp-exit", str(bad), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2, r.output
    assert "dt" in r.output and "Traceback" not in r.output


def test_unconverged_fixed_point_warns_and_exits_1(tmp_path):
    text = (SCENARIO_DIR / "shock_demo.toml").read_text()
    assert "max_iter = 25" in text
    short = tmp_path / "short.toml"
    short.write_text(text.replace("max_iter = 25", "max_iter = 2", 1))
    r = invoke("lp-exit", str(short), "--no-baseline", "--out", str(tmp_path / "out"))
    assert r.exit_code == 1, r.output
    assert "NOT converged" in r.output and "warning: LP-exit fixed point stopped" in r.output
    assert (tmp_path / "out" / "market.csv").exists()  # the last iterate is still written
