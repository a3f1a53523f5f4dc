"""Stylised facts of a dataset from :func:`experiments.datasets.generate`, checked against docs/model.md 2.10/2.11.

:func:`describe` reads the observed tables only (deals, withdrawn processes, LPs, the aggregates),
as a researcher would, and returns the facts and a list of checks: each check names its public
figure or range (docs/model.md 2.10, the rows of 2.11, and the issue's data targets), the dataset's
number, whether it passes, and its basis (``set``: a dataset or scenario parameter was chosen for it;
``mechanism``: no parameter was tuned for it).  :func:`describe_text` prints them, a miss as ``MISS``
with its number; :func:`stylised_figure` draws one page (price path with the bid range, volume by
half-year with the withdrawn processes, seller mix, discount distribution).

The "normal" period is the scenario's report window (its ``[report]`` table) before the first shock;
whole calendar years of it are the normal years.  "About x" figures are held to x +- a stated margin.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .datasets import load_dataset

__all__ = ["COGENT_2008", "Check", "describe", "describe_text", "stylised_figure"]

#: Cogent average high bid, % of NAV, by half-year (docs/model.md 2.10; the trough 40-45 as 42.5).
COGENT_2008 = {"2008H1": 84.7, "2008H2": 61.0, "2009H1": 42.5, "2009H2": 72.0, "2010H1": 80.0, "2010H2": 84.0}
_TABLES = ("deals", "withdrawn", "lps", "quarterly_market", "halfyear_market", "halfyear_sellers", "quarterly_sellers")


@dataclass
class Check:
    """One stylised fact against its public figure."""

    fact: str
    value: float | None
    shown: str
    public: str
    ok: bool | None  # None: not applicable to this dataset
    basis: str  # "set", "mechanism" or "target" (the data targets of the dataset issue)


def _half_index(label: str) -> int:
    return int(label[:4]) * 2 + int(label[-1]) - 1


def _windows(meta: dict):
    events = meta.get("events") or []
    t_event = min((float(e["time"]) for e in events), default=math.inf)
    lo, hi = meta["window"]
    try:
        rep = tomllib.loads(meta.get("scenario_toml", "")).get("report") or {}
        lo, hi = float(rep.get("start", lo)), float(rep.get("end", hi))
    except tomllib.TOMLDecodeError:  # pragma: no cover
        pass
    return lo, min(hi, t_event), t_event, events


def _wavg(cons, nav) -> float:
    s = float(np.sum(nav))
    return 100.0 * float(np.sum(cons)) / s if s > 0 else math.nan


def _calm_facts(tabs: dict, lo: float, hi: float) -> dict:
    tr, qm, hs = tabs["deals"], tabs["quarterly_market"], tabs["halfyear_sellers"]
    norm = tr[(tr["t"] >= lo) & (tr["t"] < hi)]
    f = {"discount_wavg_pct": 100.0 - _wavg(norm["consideration"], norm["nav_sold"]),
         "discount_mean_pct": float(norm["discount_pct"].mean()) if len(norm) else math.nan}
    mid = norm[(norm["fund_age"] >= 4) & (norm["fund_age"] < 10)]
    f["discount_4_9_pct"] = 100.0 - _wavg(mid["consideration"], mid["nav_sold"])
    qm = qm.assign(year=[int(p[:4]) for p in qm["period"]])
    years = [y for y, g in qm.groupby("year") if len(g) == 4 and y >= lo - 1e-9 and y + 1 <= hi + 1e-9]
    turn, h2 = {}, []
    for y in years:
        g = qm[qm["year"] == y]
        turn[y] = 100.0 * float(g["volume_nav"].sum()) / float(g["active_nav"].mean())
        h2.append((float(g["volume_nav"].iloc[2:].sum()), float(g["volume_nav"].sum())))
    f["normal_years"] = years
    f["turnover_by_year_pct"] = turn
    f["h2_share_pct"] = 100.0 * sum(a for a, _ in h2) / sum(b for _, b in h2) if h2 and sum(b for _, b in h2) else \
        math.nan
    hs = hs[[lo * 2 - 1e-9 <= _half_index(p) < hi * 2 - 1e-9 for p in hs["period"]]]
    v = hs.groupby("lp_type", observed=True)["volume_nav"].sum()
    f["seller_mix_pct"] = {str(k): 100.0 * float(x) / float(v.sum()) for k, x in v.items()} if v.sum() > 0 else {}
    yrs = qm[qm["year"].isin(years)]
    f["dry_powder_years"] = float(yrs["dry_powder"].mean()) / (float(yrs["consideration"].sum()) / len(years)) \
        if years and yrs["consideration"].sum() > 0 else math.nan
    return f


def _crisis_facts(tabs: dict, t_event: float) -> dict:
    hm, hs, qm = tabs["halfyear_market"], tabs["halfyear_sellers"], tabs["quarterly_market"]
    h_ev = math.floor(t_event * 2 + 1e-6)
    hm = hm.assign(h=[_half_index(p) for p in hm["period"]])
    after, before = hm[(hm["h"] >= h_ev) & (hm["n_deals"] > 0)], hm[(hm["h"] < h_ev) & (hm["n_deals"] > 0)]
    if after.empty:
        return {}
    tr = after.loc[after["price_wavg"].idxmin()]
    h_tr = int(tr["h"])
    f = {"trough_half": str(tr["period"]), "trough_price_pct": float(tr["price_wavg"]),
         "pre_shock_price_pct": float(before["price_wavg"].iloc[-1]) if len(before) else math.nan,
         "half_year_price_pct": dict(zip(hm["period"].astype(str), hm["price_wavg"].astype(float)))}
    nxt = hm.loc[hm["h"] == h_tr + 1, "price_wavg"]
    gap = f["pre_shock_price_pct"] - f["trough_price_pct"]
    f["gap_closed_6m_pct"] = 100.0 * (float(nxt.iloc[0]) - f["trough_price_pct"]) / gap if len(nxt) and gap > 0 \
        else math.nan
    f["withdrawn_to_traded_trough"] = float(tr["withdrawn_nav"]) / float(tr["volume_nav"]) if tr["volume_nav"] > 0 \
        else math.nan
    q = qm[qm["n_deals"] > 0]
    f["lowest_quarter"] = (str(q.loc[q["price_wavg"].idxmin(), "period"]), float(q["price_wavg"].min()))
    mix = hs.assign(h=[_half_index(p) for p in hs["period"]])
    f["pension_share_trough_pct"] = _share(mix[mix["h"] == h_tr], "pension")
    f["pension_share_after_pct"] = _share(mix[mix["h"] // 2 == h_tr // 2 + 1], "pension")
    f["year_after"] = h_tr // 2 + 1
    f["sovereign_share_crisis_pct"] = _share(mix[(mix["h"] >= h_ev) & (mix["h"] < h_ev + 4)], "sovereign")
    f["endowment_share_trough_pct"] = _share(mix[mix["h"] == h_tr], "endowment")
    y_tr = h_tr // 2
    cons = float(hm.loc[hm["h"] // 2 == y_tr, "consideration"].sum())
    dp = hm.loc[hm["h"] == 2 * y_tr, "dry_powder"]
    f["dry_powder_trough_years"] = float(dp.iloc[0]) / cons if len(dp) and cons > 0 else math.nan
    vol = hm.set_index("period")["consideration"]  # the dollars that traded, as the public volumes
    y = int(math.floor(t_event))
    f["h1_volume_ratio"] = float(vol.get(f"{y + 1}H1", math.nan)) / float(vol.get(f"{y}H1", math.nan)) \
        if vol.get(f"{y}H1", 0) > 0 else math.nan
    yv = hm.assign(y=hm["h"] // 2).groupby("y")["consideration"].sum()
    f["volume_change_pct"] = (100.0 * (float(yv.get(y + 1, math.nan)) / float(yv[y]) - 1.0), y, y + 1) \
        if yv.get(y, 0) > 0 else (math.nan, y, y + 1)
    f["shock_year"] = y
    return f


def _share(df: pd.DataFrame, ty: str) -> float:
    tot = float(df["volume_nav"].sum())
    return 100.0 * float(df.loc[df["lp_type"].astype(str) == ty, "volume_nav"].sum()) / tot if tot > 0 else math.nan


def _data_facts(tabs: dict) -> dict:
    tr, qm, lps = tabs["deals"], tabs["quarterly_market"], tabs["lps"]
    q_sd = tr.groupby(tr["quarter"].astype(str))["price_pct_nav"].std().dropna()
    c = lps["commitment"].to_numpy()
    two = tr[tr["n_bids"] >= 2]
    return {"n_deals": len(tr), "n_withdrawn": len(tabs["withdrawn"]),
            "within_quarter_sd_median": float(q_sd.median()) if len(q_sd) else math.nan,
            "commitment_p95_p5": float(np.quantile(c, 0.95) / np.quantile(c, 0.05)) if c.size else math.nan,
            "quarters": int(len(qm)), "quarters_without_sales": [str(p) for p in qm.loc[qm["n_deals"] == 0, "period"]],
            "bid_spread_pct": float((two["bid_high_pct"] - two["bid_low_pct"]).mean()) if len(two) else math.nan,
            "bids_mean": float(tr["n_bids"].mean()) if len(tr) else math.nan,
            "strategies": int(tr["strategy"].nunique()), "funds_traded": int(tr["fund_id"].nunique()),
            "lowest_price_pct": float(qm.loc[qm["n_deals"] > 0, "price_wavg"].min()) if len(tr) else math.nan}


def _in(v, lo, hi) -> bool | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(lo <= v <= hi)


def _fmt(v, spec=".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _calm_checks(f: dict) -> list[Check]:
    turn = list(f["turnover_by_year_pct"].values())
    drift = max(turn) / min(turn) if turn and min(turn) > 0 else math.nan
    mix = f["seller_mix_pct"]
    return [
        Check("calm discount, NAV-weighted (%)", f["discount_wavg_pct"], _fmt(f["discount_wavg_pct"]), "5 to 15",
              _in(f["discount_wavg_pct"], 5, 15), "set"),
        Check("discount, mean over deals (%)", f["discount_mean_pct"], _fmt(f["discount_mean_pct"]),
              "13.8 (Nadauld et al.; held to 8.8-18.8)", _in(f["discount_mean_pct"], 8.8, 18.8), "mechanism"),
        Check("discount, funds aged 4-9 (%)", f["discount_4_9_pct"], _fmt(f["discount_4_9_pct"]),
              "about 9 (held to 6-12)", _in(f["discount_4_9_pct"], 6, 12), "mechanism"),
        Check("calm turnover, every normal year (% of NAV)", min(turn) if turn else math.nan,
              f"{_fmt(min(turn) if turn else math.nan, '.2f')}-{_fmt(max(turn) if turn else math.nan, '.2f')}",
              "1 to 2.5", None if not turn else bool(min(turn) >= 1.0 and max(turn) <= 2.5), "set"),
        Check("calm turnover drift (max/min over normal years)", drift, _fmt(drift, ".2f"), "<= 1.5",
              _in(drift, 0, 1.5), "mechanism"),
        Check("second-half share of annual volume (%)", f["h2_share_pct"], _fmt(f["h2_share_pct"], ".0f"),
              "55 to 65", _in(f["h2_share_pct"], 55, 65), "set"),
        Check("pensions' share of sellers, normal years (%)", mix.get("pension", math.nan),
              _fmt(mix.get("pension", math.nan), ".0f"), "20 to 33", _in(mix.get("pension", math.nan), 20, 33), "set"),
        Check("sovereigns sell in calm years (% of volume)", mix.get("sovereign", 0.0),
              _fmt(mix.get("sovereign", 0.0), ".0f"), "> 0", mix.get("sovereign", 0.0) > 0, "mechanism"),
        Check("dry powder (years of value traded)", f["dry_powder_years"], _fmt(f["dry_powder_years"], ".2f"),
              "1.8 to 2.6 (2017-2023)", _in(f["dry_powder_years"], 1.8, 2.6), "set"),
    ]


def _crisis_checks(f: dict, calm: dict) -> list[Check]:
    if not f:
        return []
    if f["shock_year"] == 2020:
        hy = f["half_year_price_pct"]
        a, b = hy.get("2020H1", math.nan), hy.get("2021H1", math.nan)
        return [Check("COVID: 2020H1 price (% of NAV)", a, _fmt(a), "80 +- 5", _in(a, 75, 85), "mechanism"),
                Check("COVID: a year later (2021H1)", b, _fmt(b), "90 +- 5", _in(b, 85, 95), "mechanism")]
    out = []
    if f["shock_year"] == 2008:
        hy = f["half_year_price_pct"]
        diffs = [hy[h] - v for h, v in COGENT_2008.items() if h in hy and not math.isnan(hy[h])]
        rmse = math.sqrt(sum(d * d for d in diffs) / len(diffs)) if len(diffs) == len(COGENT_2008) else math.nan
        out.append(Check("GFC half-year price RMSE vs Cogent, 2008H1-2010H2 (points)", rmse, _fmt(rmse), "<= 4",
                         _in(rmse, 0, 4), "set"))
    q, p = f["lowest_quarter"]
    vc, y0, y1 = f["volume_change_pct"]
    sov = calm.get("seller_mix_pct", {}).get("sovereign", math.nan)
    endo = calm.get("seller_mix_pct", {}).get("endowment", math.nan)
    out += [
        Check("endowments' share of sellers at the trough vs normal (%)", f["endowment_share_trough_pct"],
              f"{_fmt(f['endowment_share_trough_pct'], '.0f')} vs {_fmt(endo, '.0f')}", "higher (the stressed sellers)",
              None if math.isnan(endo) else bool(f["endowment_share_trough_pct"] > endo), "mechanism"),
        Check("dry powder at the trough (years of that year's $ volume)", f["dry_powder_trough_years"],
              _fmt(f["dry_powder_trough_years"], ".2f"), "15 / (12 to 20) = 0.75 to 1.25",
              _in(f["dry_powder_trough_years"], 0.75, 1.25), "mechanism"),
        Check(f"trough half-year price ({f['trough_half']})", f["trough_price_pct"], _fmt(f["trough_price_pct"]),
              "40 to 45 (2009H1)", _in(f["trough_price_pct"], 40, 45), "set"),
        Check(f"lowest quarter price ({q})", p, _fmt(p), ">= 35", _in(p, 35, 1e9), "mechanism"),
        Check("H1 volume ($ traded) after the shock / H1 before", f["h1_volume_ratio"],
              _fmt(f["h1_volume_ratio"], ".2f"),
              "<= 0.75", _in(f["h1_volume_ratio"], 0, 0.75), "mechanism"),
        Check(f"annual volume ($ traded) change {y0} -> {y1} (%)", vc, _fmt(vc, "+.0f"), "-39 (fell; held to < 0)",
              _in(vc, -1e9, 0), "mechanism"),
        Check("withdrawn / traded NAV in the trough half-year", f["withdrawn_to_traded_trough"],
              _fmt(f["withdrawn_to_traded_trough"], ".2f"), "0.3 to 1.5 (13.9/16 = 0.87)",
              _in(f["withdrawn_to_traded_trough"], 0.3, 1.5), "mechanism"),
        Check("gap closed one half-year after the trough (%)", f["gap_closed_6m_pct"], _fmt(f["gap_closed_6m_pct"],
              ".0f"), "45 to 75", _in(f["gap_closed_6m_pct"], 45, 75), "mechanism"),
        Check("pensions' share of sellers at the trough (%)", f["pension_share_trough_pct"],
              _fmt(f["pension_share_trough_pct"], ".0f"), "<= 10", _in(f["pension_share_trough_pct"], 0, 10),
              "mechanism"),
        Check(f"pensions' share of sellers in {f['year_after']} (%)", f["pension_share_after_pct"],
              _fmt(f["pension_share_after_pct"], ".0f"), "25 to 55", _in(f["pension_share_after_pct"], 25, 55),
              "mechanism"),
        Check("sovereigns' share, 2 years from the shock vs calm (%)", f["sovereign_share_crisis_pct"],
              f"{_fmt(f['sovereign_share_crisis_pct'], '.0f')} vs {_fmt(sov, '.0f')}", "less than in calm, > 0",
              None if math.isnan(sov) else bool(0 < f["sovereign_share_crisis_pct"] < sov), "mechanism"),
    ]
    return out


def _data_checks(d: dict) -> list[Check]:
    gaps = d["quarters_without_sales"]
    return [
        Check("median within-quarter sd of deal prices (points)", d["within_quarter_sd_median"],
              _fmt(d["within_quarter_sd_median"]), ">= 3", _in(d["within_quarter_sd_median"], 3, 1e9), "target"),
        Check("commitments, 95th / 5th percentile", d["commitment_p95_p5"], _fmt(d["commitment_p95_p5"], ".0f"),
              ">= 20", _in(d["commitment_p95_p5"], 20, 1e9), "set"),
        Check("quarters without sales", float(len(gaps)), f"{len(gaps)} of {d['quarters']}" +
              (f" ({', '.join(gaps[:4])}{' ...' if len(gaps) > 4 else ''})" if gaps else ""), "0", not gaps, "target"),
        Check("high - low bid per deal (points)", d["bid_spread_pct"], _fmt(d["bid_spread_pct"]),
              "about 11 (held to 8-14)", _in(d["bid_spread_pct"], 8, 14), "set"),
        Check("strategies traded", float(d["strategies"]), str(d["strategies"]), ">= 5", d["strategies"] >= 5, "set"),
        Check("lowest quarterly price (% of NAV)", d["lowest_price_pct"], _fmt(d["lowest_price_pct"]),
              ">= 20 (sanity)", _in(d["lowest_price_pct"], 20, 1e9), "mechanism"),
    ]


def describe(folder) -> dict:
    """The stylised facts of the dataset in ``folder`` and their checks (``facts["checks"]``)."""
    tabs, meta = load_dataset(folder, _TABLES)
    lo, hi, t_event, events = _windows(meta)
    f = {"scenario": meta.get("scenario"), "seed": meta.get("seed"), "n_lps": meta.get("n_lps"),
         "window": meta.get("window"), "normal_period": (lo, hi), "events": [e.get("name") for e in events],
         "market_kind": meta.get("market_kind"), "options": meta.get("options", {})}
    calm = _calm_facts(tabs, lo, hi)
    crisis = _crisis_facts(tabs, t_event) if events else {}
    data = _data_facts(tabs)
    f.update(calm=calm, crisis=crisis, data=data)
    f["checks"] = _data_checks(data) + (_calm_checks(calm) if calm["normal_years"] else []) + \
        _crisis_checks(crisis, calm)
    return f


def describe_text(f: dict) -> str:
    """The checks of :func:`describe` as lines of text (a miss as ``MISS``, with its number)."""
    d = f["data"]
    lo, hi = f["normal_period"]
    lines = [f"dataset: scenario {f['scenario']} ({f['market_kind']} market), seed {f['seed']}, {f['n_lps']:,} LPs, "
             f"window {f['window'][0]:g}-{f['window'][1]:g}, {d['n_deals']:,} deals, {d['n_withdrawn']:,} withdrawn "
             f"sale processes, {d['funds_traded']} funds traded",
             f"normal period: {lo:g}-{hi:g}" + (f" (first shock: {f['events'][0]})" if f["events"] else ""),
             "", f"{'':6}{'fact':<58} {'dataset':>16}   public (docs/model.md 2.10/2.11)   basis",
             f"{'':6}{'-' * 58} {'-' * 16}   {'-' * 34}   {'-' * 9}"]
    for c in f["checks"]:
        flag = "ok" if c.ok else ("n/a" if c.ok is None else "MISS")
        lines.append(f"{flag:<6}{c.fact:<58} {c.shown:>16}   {c.public:<34}   {c.basis}")
    n_miss = sum(1 for c in f["checks"] if c.ok is False)
    lines += ["", f"{n_miss} of {sum(1 for c in f['checks'] if c.ok is not None)} checks missed"]
    if f["crisis"]:
        hy = f["crisis"]["half_year_price_pct"]
        lines.append("half-year NAV-weighted price (% of reported NAV): " + ", ".join(
            f"{h} {v:.1f}" + (f" (Cogent {COGENT_2008[h]:g})" if h in COGENT_2008 else "") for h, v in hy.items()
            if not math.isnan(v) and abs(_half_index(h) / 2 - f["crisis"]["shock_year"]) <= 3))
    mix = f["calm"].get("seller_mix_pct", {})
    lines.append("sellers in the normal period: " + (", ".join(f"{k} {v:.0f}%" for k, v in sorted(
        mix.items(), key=lambda kv: -kv[1])) or "no sales"))
    return "\n".join(lines)


def stylised_figure(folder, path=None):
    """One page of the dataset's stylised facts, saved atomically to ``path`` (default
    ``FOLDER/stylised_facts.png``); returns the path."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import save_figure

    tabs, meta = load_dataset(folder, ("quarterly_market", "halfyear_market", "halfyear_sellers", "deals"))
    qm, hm, hs, tr = tabs["quarterly_market"], tabs["halfyear_market"], tabs["halfyear_sellers"], tabs["deals"]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    x = np.array([int(p[:4]) + (int(p[-1]) - 1) / 4 + 0.125 for p in qm["period"].astype(str)])
    a = ax[0, 0]
    a.fill_between(x, qm["bid_low_mean"], qm["bid_high_mean"], color="0.85", label="mean low to high bid")
    a.plot(x, qm["price_wavg"], "k-", lw=1.2, label="deal price, NAV-weighted")
    if meta.get("events") and int(float(meta["events"][0]["time"])) == 2008:
        a.plot([_half_index(h) / 2 + 0.25 for h in COGENT_2008], list(COGENT_2008.values()), "rs", label="Cogent")
    a.set(title="price (% of reported NAV)", xlabel="year")
    a.legend(fontsize=8)
    a = ax[0, 1]
    xh = np.array([_half_index(p) / 2 for p in hm["period"].astype(str)])
    a.bar(xh, hm["volume_nav"] / 1e3, width=0.45, align="edge", label="traded")
    a.bar(xh, hm["withdrawn_nav"] / 1e3, width=0.45, align="edge", bottom=hm["volume_nav"] / 1e3, hatch="//",
          color="none", edgecolor="0.4", label="withdrawn")
    a.set(title="volume by half-year (reported NAV, $bn)", xlabel="year")
    a.legend(fontsize=8)
    a = ax[1, 0]
    piv = hs.assign(period=hs["period"].astype(str), lp_type=hs["lp_type"].astype(str)).pivot_table(
        index="period", columns="lp_type", values="volume_nav", aggfunc="sum", observed=True)
    share = piv.div(piv.sum(axis=1), axis=0).fillna(0.0) * 100
    bottom = np.zeros(len(share))
    xs = [_half_index(p) / 2 for p in share.index]
    for c in share.columns:
        a.bar(xs, share[c], width=0.45, align="edge", bottom=bottom, label=c)
        bottom += share[c].to_numpy()
    a.set(title="seller mix (% of volume)", xlabel="year", ylim=(0, 100))
    a.legend(fontsize=8)
    a = ax[1, 1]
    a.hist(tr["discount_pct"], bins=60, color="0.4")
    a.set(title=f"discount distribution over {len(tr):,} deals (% of reported NAV)", xlabel="discount (%)")
    fig.suptitle(f"{meta.get('scenario')}: {meta.get('n_lps'):,} LPs, seed {meta.get('seed')}")
    fig.tight_layout()
    path = Path(folder) / "stylised_facts.png" if path is None else Path(path)
    save_figure(path, fig)
    plt.close(fig)
    return path
