"""Empirical-style datasets (experiments/datasets.py, docs/datasets.md)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from experiments.datasets import FILES, REALISTIC, SCHEMAS, DatasetExists, DatasetOptions, generate, load_dataset
from experiments.datasets_describe import describe, describe_text

N_SMALL = 3000


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    out = tmp_path_factory.mktemp("calm")
    generate("impact_calm", 20_000, 11, out)
    return out


@pytest.fixture(scope="module")
def crisis_realistic(tmp_path_factory):
    out = tmp_path_factory.mktemp("crisis")
    generate("crisis_2008", N_SMALL, 5, out, options=DatasetOptions(**REALISTIC))
    return out


def test_schema_types_and_metadata(calm):
    for name in FILES:
        f = pq.ParquetFile(calm / f"{name}.parquet")
        schema = f.schema_arrow
        assert schema.names == [c[0] for c in SCHEMAS[name]]
        for field, (col, typ, unit, desc) in zip(schema, SCHEMAS[name]):
            assert field.type == typ, (name, col)
            assert field.metadata[b"unit"].decode() == unit
            assert field.metadata[b"description"].decode() == desc
        meta = json.loads(schema.metadata[b"gelav.dataset"])
        assert meta["scenario"] == "impact_calm" and meta["seed"] == 11 and meta["n_lps"] == 20_000
        assert meta["gelav_version"] and "[model]" in meta["scenario_toml"]
    side = json.loads((calm / "dataset.json").read_text())
    assert set(side["schema"]) == set(FILES) and side["rows"]["lp_panel"] == 20_000 * 40
    tabs, _ = load_dataset(calm, FILES)
    tr, panel = tabs["transactions"], tabs["lp_panel"]
    assert len(tr) > 100
    assert tr["lp_id"].is_unique  # a stake is sold once
    assert set(panel["status"].astype(str)) <= {"pending", "active", "sold", "matured"}
    assert panel.groupby("quarter", observed=True).size().eq(20_000).all()
    # with every realism option off the data are the model's truth
    assert np.array_equal(tr["price_pct_nav"], tr["clearing_price_pct"])
    assert np.array_equal(tr["nav_sold"], tr["true_nav"])
    np.testing.assert_allclose(tr["discount_pct"], 100 - tr["price_pct_nav"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr["consideration"], tr["price_pct_nav"] / 100 * tr["nav_sold"], rtol=1e-12)
    # a seller is "sold" in every later panel quarter
    last = panel[panel["quarter"].astype(str) == "2024Q4"].set_index("lp_id")["status"].astype(str)
    assert (last.loc[tr["lp_id"]] == "sold").all()


def test_quarterly_aggregates_transactions_exactly(calm):
    tabs, _ = load_dataset(calm)
    tr, qt = tabs["transactions"], tabs["quarterly"]
    tr = tr.assign(quarter=tr["quarter"].astype(str), lp_type=tr["lp_type"].astype(str),
                   vintage=tr["vintage"].astype(str), all="all")
    qt = qt.assign(quarter=qt["quarter"].astype(str), group_by=qt["group_by"].astype(str),
                   group=qt["group"].astype(str))
    assert qt["n_sales"][qt["group_by"] == "all"].sum() == len(tr)
    for gb in ("all", "vintage", "lp_type"):
        sub = qt[qt["group_by"] == gb].set_index(["quarter", "group"])
        # every sale is in exactly one group of each kind
        assert sub["n_sales"].sum() == len(tr)
        for (q, g), grp in tr.groupby(["quarter", gb]):
            row = sub.loc[(q, g)]
            assert row["n_sales"] == len(grp)
            assert row["volume_nav"] == pytest.approx(grp["nav_sold"].sum(), rel=1e-12)
            assert row["consideration"] == pytest.approx(grp["consideration"].sum(), rel=1e-12)
            assert row["price_mean"] == pytest.approx(grp["price_pct_nav"].mean(), rel=1e-12)
            if len(grp) > 1:
                assert row["price_std"] == pytest.approx(grp["price_pct_nav"].std(ddof=1), rel=1e-9)
            assert row["price_wavg"] == pytest.approx(100 * grp["consideration"].sum() / grp["nav_sold"].sum(),
                                                      rel=1e-12)
        empty = sub[sub["n_sales"] == 0]
        assert (empty["volume_nav"] == 0).all() and empty["price_mean"].isna().all()


def test_market_is_the_engines(tmp_path):
    """The step-by-step driver runs abm.lp_market.engine.simulate's market, bit for bit."""
    from abm.lp_market.engine import simulate
    from experiments.datasets import _solve_policy
    from experiments.lp_exit_report import resolve_scenario
    from mfg.lp_exit.params import load_scenario

    generate("crisis_2008", N_SMALL, 9, tmp_path)
    tabs, _ = load_dataset(tmp_path)
    tr, qt = tabs["transactions"], tabs["quarterly"]
    sc = load_scenario(resolve_scenario("crisis_2008"))
    sim = simulate(sc.model, _solve_policy(sc), n_agents=N_SMALL, seed=9)
    per_step = np.bincount(tr["step"], minlength=sim.t.size)
    assert np.array_equal(per_step, sim.exits[0].sum(axis=0))
    N = sim.t.size - 1
    qi = np.floor(4 * sim.t[:N] + 1e-6).astype(int)
    qa = qt[qt["group_by"].astype(str) == "all"]
    for q, p in zip(qa["quarter"].astype(str), qa["market_price_pct"]):
        i = int(q[:4]) * 4 + int(q[-1]) - 1
        assert p == pytest.approx(100 * sim.price[0, :N][qi == i].mean(), rel=1e-13)
    k = sim.populations.index
    for row in tr.head(50).itertuples():
        assert row.clearing_price_pct == 100 * sim.vintage_price[0, k(str(row.population)), row.step]
        assert row.buyer_capital == pytest.approx(1e6 * sim.buyer_capital[0, row.step], rel=1e-13)


def test_same_seed_same_bytes(tmp_path, crisis_realistic):
    opts = DatasetOptions(**REALISTIC)
    generate("crisis_2008", N_SMALL, 5, tmp_path / "a", options=opts, threads=2)
    for name in FILES:
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == \
            (crisis_realistic / f"{name}.parquet").read_bytes(), name
    assert (tmp_path / "a" / "dataset.json").read_bytes() == (crisis_realistic / "dataset.json").read_bytes()
    generate("crisis_2008", N_SMALL, 6, tmp_path / "b", options=opts)
    assert (tmp_path / "b" / "transactions.parquet").read_bytes() != \
        (crisis_realistic / "transactions.parquet").read_bytes()
    # CSV on request, same seed, same bytes, same numbers as the Parquet
    for d in ("c1", "c2"):
        generate("crisis_2008", N_SMALL, 5, tmp_path / d, options=DatasetOptions(**REALISTIC, fmt="csv"))
    for name in FILES:
        assert (tmp_path / "c1" / f"{name}.csv").read_bytes() == (tmp_path / "c2" / f"{name}.csv").read_bytes()
    a, _ = load_dataset(tmp_path / "c1")
    b, _ = load_dataset(crisis_realistic)
    np.testing.assert_array_equal(a["transactions"]["price_pct_nav"], b["transactions"]["price_pct_nav"])
    np.testing.assert_array_equal(a["transactions"]["lp_id"], b["transactions"]["lp_id"])
    fa, fb = describe(tmp_path / "c1"), describe(crisis_realistic)
    for key in ("discount_wavg_pct", "turnover_pct", "h2_share_pct", "trough_price_pct", "gap_closed_6m_pct"):
        assert fa[key] == pytest.approx(fb[key], rel=1e-12), key


def test_realism_options(crisis_realistic, tmp_path):
    tabs, meta = load_dataset(crisis_realistic)
    tr = tabs["transactions"]
    assert meta["options"]["stale_nav"] == 2
    assert tr["strategy"].nunique() > 1 and tr["fund_id"].nunique() > 10
    # stale NAV: the report is two quarter ends back
    d = pd.to_datetime(tr["date"])
    nd = pd.to_datetime(tr["nav_date"])
    q_sale = d.dt.year * 4 + d.dt.quarter - 1
    q_nav = nd.dt.year * 4 + nd.dt.quarter - 1
    assert (q_sale - q_nav == 2).all() and nd.dt.is_quarter_end.all()
    # price against reported NAV = price against true NAV x true / reported
    np.testing.assert_allclose(tr["price_pct_nav"], tr["true_price_pct"] * tr["true_nav"] / tr["nav_sold"],
                               rtol=1e-12)
    # after the Lehman NAV drop, reported NAV is above true NAV: the measured discount deepens
    late = tr[(tr["t"] >= 2009.0) & (tr["t"] < 2009.25)]
    assert (late["nav_sold"] > late["true_nav"]).mean() > 0.8
    # the overlay does not move the market: same sellers with and without it
    generate("crisis_2008", N_SMALL, 5, tmp_path)
    plain, _ = load_dataset(tmp_path)
    np.testing.assert_array_equal(plain["transactions"]["lp_id"], tr["lp_id"])
    np.testing.assert_array_equal(plain["transactions"]["clearing_price_pct"], tr["clearing_price_pct"])
    with pytest.raises(ValueError, match="stale_nav"):
        DatasetOptions(stale_nav=3)


def test_calm_facts_in_calibrated_ranges(calm):
    """calm.toml is calibrated to discounts of about 7-12% and sales of about 1.6% of NAV a year."""
    f = describe(calm)
    assert 7.0 <= f["discount_wavg_pct"] <= 12.0
    assert 85.0 <= f["quarterly_price_range"][0] and f["quarterly_price_range"][1] <= 95.0
    assert 1.0 <= f["turnover_pct"] <= 2.5
    assert 40.0 <= f["h2_share_pct"] <= 56.0  # calm.toml: about 48% (public 55-65%: not matched)
    assert f["seller_mix_pct"].get("sovereign", 0.0) == 0.0  # sovereigns postpone
    assert f["mfg_gap_pct_points"] < 0.5  # 20 000 LPs track the MFG price
    text = describe_text(f)
    assert "turnover" in text and "docs/model.md 2.10" in text


def test_crisis_describe(crisis_realistic):
    f = describe(crisis_realistic)
    assert f["trough_price_pct"] < f["pre_shock_price_pct"] - 15
    assert f["seller_mix_trough_pct"]["endowment"] > 50  # endowments are the stressed sellers
    assert "trough" in describe_text(f)


def test_no_overwrite_and_interrupted_write(tmp_path):
    out = tmp_path / "d"

    def boom(n, N):
        if n == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate("crisis_2008", 500, 1, out, progress=boom)
    assert not out.exists() or list(out.iterdir()) == []
    generate("crisis_2008", 500, 1, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DatasetExists):
        generate("crisis_2008", 500, 2, out)
    with pytest.raises(KeyboardInterrupt):
        generate("crisis_2008", 500, 2, out, force=True, progress=boom)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old dataset intact, no temporary file
    generate("crisis_2008", 500, 2, out, force=True)
    assert (out / "transactions.parquet").read_bytes() != before["transactions.parquet"]


def test_cli(tmp_path):
    from experiments.dataset_cli import dataset

    r = CliRunner()
    out = tmp_path / "cli"
    res = r.invoke(dataset, ["--scenario", "crisis_2008", "--n-lps", "800", "--seed", "4", "--out", str(out),
                             "--stale-nav", "1", "--strategies"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["options"]["stale_nav"] == 1
    res = r.invoke(dataset, ["--scenario", "crisis_2008", "--n-lps", "800", "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    res = r.invoke(dataset, ["describe", str(out)])
    assert res.exit_code == 0 and "public (docs/model.md 2.10)" in res.output
    res = r.invoke(dataset, ["--scenario", "no_such_scenario", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "shipped" in res.output
    res = r.invoke(dataset, [])
    assert res.exit_code == 2


def test_docs_schema_in_sync():
    from pathlib import Path

    from experiments.datasets import schema_markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text(encoding="utf-8")
    assert schema_markdown().strip() in doc
