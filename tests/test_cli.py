"""The command line runs end to end and writes what it says it writes."""

import re

import pandas as pd
from click.testing import CliRunner

from experiments.cli import main


def test_demo_prints_errors_close_to_the_paper_and_writes_a_figure(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    errors = dict(re.findall(r"^\s+(price|u\(\.,0\)|m\(\.,T\))\s+(\S+)", result.output, flags=re.M))
    assert set(errors) == {"price", "u(.,0)", "m(.,T)"}
    # the finest mesh of test 1: printed 2.1e-3, 1.2e-3, 6.7e-3
    assert abs(float(errors["price"]) / 2.1e-3 - 1) < 0.2
    assert 1.2e-3 / 2.5 < float(errors["u(.,0)"]) < 1.2e-3 * 2.5
    assert (tmp_path / "price_formation_test1.png").stat().st_size > 10_000
    # the small convergence study: its slopes and figure
    assert re.search(r"RMSE slope of time-average abs\(P\^N - P\)\s+-0\.[45]", result.output)
    assert f"figure: {tmp_path / 'convergence' / 'convergence.png'}" in result.output
    assert (tmp_path / "convergence" / "convergence.png").stat().st_size > 10_000


def test_reproduce_writes_tables_within_targets(tmp_path):
    result = CliRunner().invoke(main, ["reproduce", "price-formation", "--no-order", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "price_formation_tables.csv")
    assert len(table) == 8 and table["within_targets"].all()
    assert (table["iterations_ours"] <= table["iterations_paper"]).all()
    assert "### Test 2" in (tmp_path / "price_formation_tables.md").read_text()
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
