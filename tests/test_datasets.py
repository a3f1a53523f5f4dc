"""Empirical-style datasets (experiments/datasets/, docs/datasets.md)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from experiments.datasets import (
    EQUAL,
    OBSERVED,
    SCHEMAS,
    TRUTH,
    TRUTH_ONLY,
    DatasetExists,
    DatasetOptions,
    generate,
    load_dataset,
    read_table,
)
from experiments.datasets.load import table_files
from experiments.datasets_describe import describe, describe_text, stylised_figure

N_CALM, N_SMALL = 8000, 3000


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    out = tmp_path_factory.mktemp("calm")
    generate("calm", N_CALM, 11, out, options=DatasetOptions(chunk_lps=3000))
    return out


@pytest.fixture(scope="module")
def crisis(tmp_path_factory):
    out = tmp_path_factory.mktemp("crisis")
    generate("crisis_2008", N_SMALL, 5, out, options=DatasetOptions(stale_nav=2, nav_vol=0.1))
    return out


def test_schema_types_units_and_metadata(calm):
    meta = json.loads((calm / "dataset.json").read_text())
    assert meta["scenario"] == "calm" and meta["seed"] == 11 and meta["n_lps"] == N_CALM
    assert set(meta["schema"]) == set(SCHEMAS) and meta["rows"]["lps"] == N_CALM
    for name in SCHEMAS:
        files = table_files(calm, name)
        schema = pq.ParquetFile(files[0]).schema_arrow
        assert schema.names == [c[0] for c in SCHEMAS[name]], name
        for field, (col, typ, unit, desc) in zip(schema, SCHEMAS[name]):
            assert field.type == typ and field.metadata[b"unit"].decode() == unit, (name, col)
            assert field.metadata[b"description"].decode() == desc
        assert json.loads(schema.metadata[b"gelav.dataset"])["scenario_toml"] == meta["scenario_toml"]
    # partitioned layout: deals by year, holdings by quarter and chunk of LPs (3 chunks of 3000)
    assert (calm / "deals" / "year=2015" / "part-00000.parquet").exists()
    assert len(list((calm / "holdings" / "quarter=2015Q1").iterdir())) == 3
    assert sum(1 for _ in (calm / "lps").iterdir()) == 3
    panel = read_table(calm, "holdings")
    assert panel.groupby("quarter", observed=True).size().eq(N_CALM).all()
    assert len(panel) == meta["rows"]["holdings"]


def test_no_truth_column_in_an_observed_table_and_truth_keyed_to_the_rows(calm, crisis):
    for folder in (calm, crisis):
        for name in OBSERVED:
            cols = set(pq.ParquetFile(table_files(folder, name)[0]).schema_arrow.names)
            assert not cols & TRUTH_ONLY, (name, cols & TRUTH_ONLY)
            assert not cols & {"liquidity", "population", "true_nav", "mfg_price_pct", "quality"}
        tabs, _ = load_dataset(folder, ("deals", "withdrawn", "truth/deals", "truth/withdrawn", "lps", "truth/lps"))
        assert np.array_equal(tabs["deals"]["deal_id"], tabs["truth/deals"]["deal_id"])
        assert np.array_equal(tabs["withdrawn"]["process_id"], tabs["truth/withdrawn"]["process_id"])
        assert np.array_equal(tabs["lps"]["lp_id"], tabs["truth/lps"]["lp_id"])
        assert tabs["deals"]["deal_id"].is_unique and tabs["deals"]["lp_id"].is_unique  # a stake sells once
    h, th = read_table(calm, "holdings"), read_table(calm, "truth/holdings")
    assert np.array_equal(h["lp_id"], th["lp_id"]) and (h["quarter"].astype(str) == th["quarter"].astype(str)).all()


def test_prices_bids_and_reservations_are_the_auctions(calm):
    tabs, _ = load_dataset(calm, ("deals", "truth/deals", "withdrawn", "truth/withdrawn"))
    d, td, w, tw = tabs["deals"], tabs["truth/deals"], tabs["withdrawn"], tabs["truth/withdrawn"]
    assert len(d) > 300 and len(w) > 10
    # the deal price is the high bid and the stake's clearing value P A dfac quality (no stale NAV: reported = true)
    np.testing.assert_array_equal(d["price_pct_nav"], d["bid_high_pct"])
    np.testing.assert_allclose(td["true_price_pct"], td["market_price_pct"] * td["life_factor"]
                               * td["distress_factor"] * td["quality"], rtol=1e-12)
    np.testing.assert_allclose(d["price_pct_nav"], td["true_price_pct"], rtol=1e-12)
    np.testing.assert_allclose(d["consideration"], d["price_pct_nav"] / 100 * d["nav_sold"], rtol=1e-12)
    assert (d["bid_low_pct"] <= d["bid_median_pct"]).all() and (d["bid_median_pct"] <= d["bid_high_pct"]).all()
    assert (d["n_bids"] >= 1).all() and ((d["n_bids"] == 1) == (d["bid_low_pct"] == d["bid_high_pct"])).all()
    # sellers' reservations at or below the price; withdrawn: the best bid at or below the reservation
    assert (td["true_reservation_pct"] <= td["true_price_pct"] * (1 + 1e-12)).all()
    assert (w["bid_high_pct"] <= w["reservation_pct"] * (1 + 1e-12)).all()
    assert ((w["bid_high_pct"] < w["reservation_pct"]) | tw["rationed"]).all()
    assert (td["distress_factor"] < 1).any() and td["quality"].std() > 0.03  # distress and quality differ by deal
    # prices differ within a quarter (distress, remaining life, strategy, fund quality)
    assert d.groupby(d["quarter"].astype(str))["price_pct_nav"].std().median() >= 3.0


def test_attributes_are_the_markets(tmp_path):
    """Commitments and quality enter the engine: the dataset's market is simulate's with the same weights; with
    equal LPs it is simulate's market without weights, bit for bit."""
    from abm.lp_market.engine import allocate_agents, simulate
    from experiments.datasets import solve_policy
    from experiments.datasets.attributes import build_attributes
    from mfg.lp_exit.params import load_scenario

    sc = load_scenario("crisis_2008")
    res = solve_policy(sc)
    for name, opts in (("weighted", DatasetOptions()), ("equal", DatasetOptions(**EQUAL))):
        generate("crisis_2008", N_SMALL, 9, tmp_path / name, options=opts)
        tabs, _ = load_dataset(tmp_path / name, ("deals", "truth/market", "truth/lps", "lps"))
        n_per = allocate_agents(np.array([p.weight for p in sc.model.populations]), N_SMALL)
        att = build_attributes(sc.model, n_per, opts, np.random.SeedSequence(9))
        sim = simulate(sc.model, res, N_SMALL, 1, 9, nav_weights=att.nu, quality=att.theta)
        assert (att.nu is None) == (name == "equal")
        np.testing.assert_array_equal(tabs["truth/market"]["market_price_pct"], 100 * sim.price[0])
        per_step = np.bincount(tabs["deals"]["step"], minlength=sim.t.size)
        np.testing.assert_array_equal(per_step, sim.exits[0].sum(axis=0))
        tl = tabs["truth/lps"]
        for _, g in tl.groupby("population", observed=True):  # the population's NAV is the MFG's w_k
            assert g["nav_weight"].mean() == pytest.approx(1.0, rel=1e-12)
            assert (g["nav_weight"] * g["quality"]).mean() == pytest.approx(1.0, rel=1e-12)
    c = tabs["lps"]["commitment"]
    assert c.max() / c.min() < 1.02  # equal LPs: equal stakes (to the rounding of the split by weight)
    weighted = read_table(tmp_path / "weighted", "lps")["commitment"]
    assert weighted.quantile(0.95) / weighted.quantile(0.05) >= 20  # heavy-tailed commitments
    assert read_table(tmp_path / "weighted", "deals")["strategy"].nunique() >= 5


def test_aggregates_partition_the_deals(calm):
    tabs, _ = load_dataset(calm, ("deals", "withdrawn", "quarterly_market", "quarterly_pricing", "quarterly_sellers",
                                  "quarterly_buyers", "halfyear_market"))
    d = tabs["deals"].assign(quarter=lambda x: x["quarter"].astype(str))
    qm = tabs["quarterly_market"].assign(period=lambda x: x["period"].astype(str)).set_index("period")
    g = d.groupby("quarter")
    common = g.size().index
    np.testing.assert_array_equal(qm.loc[common, "n_deals"], g.size())
    np.testing.assert_allclose(qm.loc[common, "volume_nav"], g["nav_sold"].sum(), rtol=1e-12)
    np.testing.assert_allclose(qm.loc[common, "price_wavg"], 100 * g["consideration"].sum() / g["nav_sold"].sum(),
                               rtol=1e-12)
    np.testing.assert_allclose(qm.loc[common, "price_sd"], g["price_pct_nav"].std(), rtol=1e-9)
    assert qm["n_deals"].sum() == len(d) and qm["n_withdrawn"].sum() == len(tabs["withdrawn"])
    for name in ("quarterly_pricing", "quarterly_sellers", "quarterly_buyers"):  # each a partition of the deals
        t = tabs[name].assign(period=lambda x: x["period"].astype(str)).groupby("period")
        np.testing.assert_array_equal(t["n_deals"].sum().loc[qm.index], qm["n_deals"])
        np.testing.assert_allclose(t["volume_nav"].sum().loc[qm.index], qm["volume_nav"], rtol=1e-12)
    hm = tabs["halfyear_market"].assign(period=lambda x: x["period"].astype(str)).set_index("period")
    half = [p[:4] + ("H1" if p[-1] in "12" else "H2") for p in qm.index]
    assert (qm.groupby(half)["n_deals"].sum().loc[hm.index] == hm["n_deals"]).all()
    assert (qm["dry_powder"] > 0).all() and (qm["active_nav"] > 0).all()


def test_same_seed_same_bytes_local_threads_and_dask(tmp_path, crisis):
    from dask.distributed import Client, LocalCluster

    opts = DatasetOptions(stale_nav=2, nav_vol=0.1)

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
                and p.name != "stylised_facts.png"}

    ref = files(crisis)
    generate("crisis_2008", N_SMALL, 5, tmp_path / "a", options=opts, threads=2)
    assert files(tmp_path / "a") == ref
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        generate("crisis_2008", N_SMALL, 5, tmp_path / "dask", options=opts, executor="dask", client=client)
    got = files(tmp_path / "dask")
    assert got.keys() == ref.keys() and all(got[k] == ref[k] for k in ref)  # every partition, byte for byte
    generate("crisis_2008", N_SMALL, 6, tmp_path / "b", options=DatasetOptions(stale_nav=2, nav_vol=0.1, panel="none"))
    assert files(tmp_path / "b")[next(k for k in ref if k.parts[0] == "deals")] != \
        ref[next(k for k in ref if k.parts[0] == "deals")]
    for d in ("c1", "c2"):  # CSV on request: same seed, same bytes, same numbers
        generate("crisis_2008", N_SMALL, 5, tmp_path / d, options=DatasetOptions(stale_nav=2, nav_vol=0.1, fmt="csv",
                                                                                  panel="none"))
    assert files(tmp_path / "c1") == files(tmp_path / "c2")
    a, b = read_table(tmp_path / "c1", "deals"), read_table(crisis, "deals")
    np.testing.assert_array_equal(a["price_pct_nav"], b["price_pct_nav"])
    assert describe(tmp_path / "c1")["checks"][0].value == pytest.approx(describe(crisis)["checks"][0].value,
                                                                         rel=1e-12)


def test_stale_nav_and_the_nav_drop(crisis):
    tabs, meta = load_dataset(crisis, ("deals", "truth/deals"))
    d, td = tabs["deals"], tabs["truth/deals"]
    assert meta["options"]["stale_nav"] == 2
    q_sale = pd.to_datetime(d["date"]).dt.year * 4 + pd.to_datetime(d["date"]).dt.quarter
    nd = pd.to_datetime(d["nav_date"])
    assert ((q_sale - (nd.dt.year * 4 + nd.dt.quarter)) == 2).all() and nd.dt.is_quarter_end.all()
    np.testing.assert_allclose(d["price_pct_nav"], td["true_price_pct"] * td["true_nav"] / d["nav_sold"], rtol=1e-12)
    late = (d["t"] >= 2009.0) & (d["t"] < 2009.25)
    assert (d.loc[late, "nav_sold"] > td.loc[late, "true_nav"]).mean() > 0.8  # reported above true after the drop


def test_describe_flags_each_miss_with_its_number_and_draws_the_figure(calm, crisis):
    f = describe(calm)
    checks = {c.fact: c for c in f["checks"]}
    assert checks["median within-quarter sd of deal prices (points)"].ok
    assert checks["calm discount, NAV-weighted (%)"].ok  # (8 000 LPs: the turnover drift is still noisy)
    text = describe_text(f)
    assert "docs/model.md 2.10/2.11" in text
    for c in f["checks"]:
        if c.ok is False:
            assert any(line.startswith("MISS") and c.fact in line and c.shown in line for line in text.splitlines())
    g = describe(crisis)
    assert any(c.fact.startswith("trough half-year price") for c in g["checks"])
    assert "MISS" in describe_text(g)  # the shipped crisis misses some facts; each is printed with its number
    path = stylised_figure(crisis)
    assert path.exists() and path.stat().st_size > 20_000


def test_no_overwrite_and_interrupted_write(tmp_path):
    out = tmp_path / "d"

    def boom(n, N):
        if n == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate("crisis_2008", 500, 1, out, progress=boom)
    assert not out.exists() or [p.name for p in out.iterdir()] == []
    generate("crisis_2008", 500, 1, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DatasetExists):
        generate("crisis_2008", 500, 2, out)
    with pytest.raises(KeyboardInterrupt):
        generate("crisis_2008", 500, 2, out, force=True, progress=boom)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    generate("crisis_2008", 500, 2, out, force=True)
    assert (out / "lps" / "part-00000.parquet").read_bytes() != before[pq_rel("lps")]


def pq_rel(table):
    from pathlib import Path

    return Path(table) / "part-00000.parquet"


def test_cli(tmp_path):
    from experiments.dataset_cli import dataset

    r = CliRunner()
    out = tmp_path / "cli"
    res = r.invoke(dataset, ["--scenario", "crisis_2008", "--n-lps", "800", "--seed", "4", "--out", str(out),
                             "--stale-nav", "1", "--panel", "none", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["options"]["stale_nav"] == 1
    assert not (out / "holdings").exists()
    res = r.invoke(dataset, ["--scenario", "crisis_2008", "--n-lps", "800", "--out", str(out), "--quiet"])
    assert res.exit_code == 2 and "--force" in res.output
    res = r.invoke(dataset, ["describe", str(out)])
    assert res.exit_code == 0 and "public (docs/model.md 2.10/2.11)" in res.output and "figure:" in res.output
    res = r.invoke(dataset, ["--scenario", "no_such_scenario", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "shipped" in res.output
    assert r.invoke(dataset, []).exit_code == 2


def test_truth_tables_are_listed_apart_and_the_docs_schema_in_sync():
    from pathlib import Path

    from experiments.datasets import schema_markdown

    assert all(n.startswith("truth/") for n in TRUTH) and not any(n.startswith("truth/") for n in OBSERVED)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text(encoding="utf-8")
    assert schema_markdown().strip() in doc
