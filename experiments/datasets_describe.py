"""Stylised facts of a dataset written by :func:`experiments.datasets.generate`, beside docs/model.md 2.10.

:func:`describe` reads ``transactions`` and ``quarterly`` (Parquet or CSV) and returns the facts a
researcher would compute from vendor data; :func:`describe_text` prints them next to the public
figures.  Only reported quantities are used (prices in % of *reported* NAV, volumes in reported
NAV), as a researcher would; the truth columns are not read.

* discount: NAV-weighted (``1 - sum consideration / sum nav_sold``), the mean and the standard
  deviation over sales, and the NAV-weighted discount of funds aged 4 to 9 years; over the
  "normal" quarters: all of them, or those before the first shock event of the scenario;
* turnover: reported NAV sold in a whole calendar year / the year's mean active NAV (%), mean
  over the normal whole years;
* second-half share: volume of July to December / annual volume, normal whole years pooled;
* seller mix: share of volume by LP type (all sales; in the trough half-year and in the
  calendar year after it when the scenario has events);
* crisis (scenarios with events): the NAV-weighted price per half-year (the Cogent prints are
  half-yearly), the trough, the share of the gap to the last pre-shock half-year closed one
  half-year later, and the change of annual volume from the year before the trough's to its year.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .datasets import load_dataset

__all__ = ["COGENT_2008", "PUBLIC", "describe", "describe_text"]

#: docs/model.md 2.10, as (low, high) ranges or point values.
PUBLIC = {
    "discount_pct": (5.0, 15.0),
    "discount_note": "5-15% in normal years; 13.8% on average, about 9% for funds 4-9 years old (Nadauld et al. 2019)",
    "discount_4_9_pct": 9.0,
    "turnover_pct": (1.0, 2.5),
    "h2_share_pct": (55.0, 65.0),
    "gap_closed_6m_pct": 60.0,
    "volume_change_trough_pct": -39.0,
    "sellers": "pensions ~5% of sellers at the 2009 trough, ~40% in 2010; endowments the stressed sellers; "
               "sovereign wealth funds postponed",
}
#: Cogent average high bid, % of NAV, by half-year (docs/model.md 2.10).
COGENT_2008 = {"2008H1": "84.7", "2008H2": "61", "2009H1": "40-45", "2009H2": "72", "2010H1": "80", "2010H2": "84",
               "2013H1": "89-92", "2015H2": "89-92"}
COVID_2020 = {"2019H2": "89", "2020H1": "80", "2021H1": "~90"}
#: The crisis rows' public column, by the year of the shock (None: no public figure).
CRISIS_PUBLIC = {
    2008: dict(trough="40-45 (2009H1)", pre="84.7 (2008H1)", closed="about 60",
               volume="-39 (2009: volume fell at the trough)"),
    2020: dict(trough="80 (2020H1)", pre="89", closed="about 90 a year later", volume="none in docs/model.md 2.10"),
    None: dict(trough="none in docs/model.md 2.10", pre="", closed="", volume=""),
}


def _wavg(cons, nav) -> float:
    s = float(np.sum(nav))
    return 100.0 * float(np.sum(cons)) / s if s > 0 else math.nan


def describe(folder) -> dict:
    """The stylised facts of the dataset in ``folder`` (see the module docstring)."""
    tabs, meta = load_dataset(folder, ("transactions", "quarterly"))
    tr, qt = tabs["transactions"], tabs["quarterly"]
    for c in ("quarter", "lp_type", "group_by", "group"):
        for df in (tr, qt):
            if c in df:
                df[c] = df[c].astype(str)
    events = meta.get("events") or []
    t_event = min((float(e["time"]) for e in events), default=math.inf)
    qa = qt[qt["group_by"] == "all"].copy()
    qa["qi"] = [int(q[:4]) * 4 + int(q[-1]) - 1 for q in qa["quarter"]]
    qa["year"] = qa["qi"] // 4
    steps_per_q = qa["steps"].max()
    full_q = qa["steps"] == steps_per_q
    years = [y for y, g in qa.groupby("year") if len(g) == 4 and bool(full_q[g.index].all())]
    normal_years = [y for y in years if y + 1 <= t_event + 1e-9]
    tr_norm = tr[tr["t"] < t_event - 1e-9]

    out: dict = {"scenario": meta.get("scenario"), "seed": meta.get("seed"), "n_lps": meta.get("n_lps"),
                 "window": meta.get("window"), "events": [e.get("name") for e in events],
                 "options": meta.get("options", {}), "n_sales": len(tr)}
    out["normal_period"] = "before the first shock" if events else "whole window"
    out["discount_wavg_pct"] = 100.0 - _wavg(tr_norm["consideration"], tr_norm["nav_sold"])
    out["discount_mean_pct"] = float(tr_norm["discount_pct"].mean())
    out["discount_sd_pct"] = float(tr_norm["discount_pct"].std())
    mid = tr_norm[(tr_norm["fund_age"] >= 4) & (tr_norm["fund_age"] <= 9)]
    out["discount_4_9_pct"] = 100.0 - _wavg(mid["consideration"], mid["nav_sold"])
    qn = qa[qa["qi"] / 4.0 + 0.25 <= t_event + 1e-9]
    out["quarterly_price_range"] = (float(qn["price_wavg"].min()), float(qn["price_wavg"].max()))

    turn = {}
    for y in years:
        g = qa[qa["year"] == y]
        nav = float((g["active_nav"] * g["steps"]).sum() / g["steps"].sum())
        turn[int(y)] = 100.0 * float(g["volume_nav"].sum()) / nav if nav > 0 else math.nan
    out["turnover_by_year_pct"] = turn
    out["turnover_pct"] = float(np.nanmean([turn[y] for y in normal_years])) if normal_years else math.nan
    sel = qa[qa["year"].isin(normal_years)]
    tot = float(sel["volume_nav"].sum())
    h2 = float(sel.loc[sel["qi"] % 4 >= 2, "volume_nav"].sum())
    out["h2_share_pct"] = 100.0 * h2 / tot if tot > 0 else math.nan
    vol_type = tr.groupby("lp_type")["nav_sold"].sum()
    out["seller_mix_pct"] = {k: 100.0 * float(v) / float(vol_type.sum()) for k, v in vol_type.items()} \
        if len(tr) else {}

    # half-years
    half = (np.floor(tr["t"].to_numpy() * 2 + 1e-6)).astype(int)
    tr = tr.assign(half=half)
    sums = tr.groupby("half")[["consideration", "nav_sold"]].sum()
    hy = pd.Series(100.0 * sums["consideration"].to_numpy(float) / sums["nav_sold"].to_numpy(float),
                   index=sums.index.to_numpy(np.int64), dtype=float)
    out["half_year_price_pct"] = {f"{h // 2}H{h % 2 + 1}": float(v) for h, v in hy.items()}
    if events and len(hy) and (hy.index >= math.floor(t_event * 2 + 1e-6)).any():
        h_ev = math.floor(t_event * 2 + 1e-6)
        after = hy[hy.index >= h_ev]
        before = hy[hy.index < h_ev]
        h_tr = int(after.idxmin())
        p_tr = float(after.min())
        pre = float(before.iloc[-1]) if len(before) else math.nan
        nxt = float(hy.get(h_tr + 1, math.nan))
        out["shock_time"] = t_event
        out["trough_half"] = f"{h_tr // 2}H{h_tr % 2 + 1}"
        out["trough_price_pct"] = p_tr
        out["pre_shock_price_pct"] = pre
        out["gap_closed_6m_pct"] = 100.0 * (nxt - p_tr) / (pre - p_tr) if pre > p_tr else math.nan
        qmin = qa[qa["qi"] / 4.0 + 0.25 > t_event].sort_values("price_wavg").head(1)
        out["trough_quarter"] = (str(qmin["quarter"].iloc[0]), float(qmin["price_wavg"].iloc[0])) if len(qmin) \
            else None
        y_tr = h_tr // 2
        vy = qa.groupby("year")["volume_nav"].sum()
        out["volume_change_trough_pct"] = (100.0 * (float(vy.get(y_tr, math.nan)) / float(vy.get(y_tr - 1)) - 1.0)
                                           if vy.get(y_tr - 1, 0) > 0 else math.nan)
        out["volume_change_years"] = (y_tr - 1, y_tr)
        for label, sub in (("seller_mix_trough_pct", tr[tr["half"] == h_tr]),
                           ("seller_mix_year_after_pct", tr[np.floor(tr["t"] + 1e-9) == y_tr + 1])):
            v = sub.groupby("lp_type")["nav_sold"].sum()
            out[label] = {k: 100.0 * float(x) / float(v.sum()) for k, x in v.items()} if v.sum() > 0 else {}
        out["year_after"] = y_tr + 1
    gap = (qa["market_price_pct"] - qa["mfg_price_pct"]).abs()
    out["mfg_gap_pct_points"] = float(gap.mean())
    return out


def _num(v, fmt=".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _rng(r) -> str:
    return f"{r[0]:g} to {r[1]:g}" if isinstance(r, tuple) else f"{r:g}"


def _mix(d: dict) -> str:
    return ", ".join(f"{k} {v:.0f}%" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "no sales"


def describe_text(f: dict) -> str:
    """Lines of text: each fact of :func:`describe` beside docs/model.md 2.10."""
    opts = f.get("options", {})
    on = [k for k in ("stale_nav", "bid_dispersion", "strategies", "fund_dispersion", "nav_vol") if opts.get(k)]
    if opts.get("funds_per_vintage", 1) > 1:
        on.append(f"funds_per_vintage={opts['funds_per_vintage']}")
    lines = [f"dataset: scenario {f['scenario']}, seed {f['seed']}, {f['n_lps']:,} LPs, window "
             f"{f['window'][0]:g}-{f['window'][1]:g}, {f['n_sales']:,} sales; realism: {', '.join(on) or 'off'}",
             f"normal period: {f['normal_period']}", "",
             f"{'fact':<44} {'dataset':>14}   public (docs/model.md 2.10)",
             f"{'-' * 44} {'-' * 14}   {'-' * 30}"]

    def row(name, val, pub):
        lines.append(f"{name:<44} {val:>14}   {pub}")

    P = PUBLIC
    row("discount, NAV-weighted (% of reported NAV)", f"{f['discount_wavg_pct']:.1f}", _rng(P["discount_pct"]))
    row("discount, mean over sales / sd", f"{f['discount_mean_pct']:.1f} / {f['discount_sd_pct']:.1f}",
        "13.8 mean (Nadauld et al. 2019)")
    row("discount, funds aged 4-9 years", _num(f['discount_4_9_pct']), "about 9")
    lo, hi = f["quarterly_price_range"]
    row("quarterly price range (% of NAV)", f"{lo:.1f}-{hi:.1f}", "85 to 95 (discount 5-15)")
    row("turnover (% of NAV a year)", _num(f['turnover_pct'], ".2f"), _rng(P["turnover_pct"]))
    row("second-half share of annual volume (%)", _num(f['h2_share_pct'], ".0f"), _rng(P["h2_share_pct"]))
    row("seller mix by volume (all sales)", "", "")
    lines.append(f"    {_mix(f['seller_mix_pct'])}")
    if "trough_price_pct" in f:
        crisis = CRISIS_PUBLIC.get(int(math.floor(f["shock_time"])), CRISIS_PUBLIC[None])
        row(f"trough half-year price ({f['trough_half']})", f"{f['trough_price_pct']:.1f}", crisis["trough"])
        if f.get("trough_quarter"):
            q, p = f["trough_quarter"]
            row(f"trough quarter price ({q})", f"{p:.1f}", "")
        row("last pre-shock half-year price", f"{f['pre_shock_price_pct']:.1f}", crisis["pre"])
        row("gap closed one half-year after the trough (%)", _num(f['gap_closed_6m_pct'], ".0f"), crisis["closed"])
        y0, y1 = f["volume_change_years"]
        row(f"annual volume change {y0} -> {y1} (%)", _num(f['volume_change_trough_pct'], "+.0f"), crisis["volume"])
        lines.append(f"  seller mix in the trough half-year: {_mix(f['seller_mix_trough_pct'])}")
        lines.append(f"  seller mix in {f['year_after']}: {_mix(f['seller_mix_year_after_pct'])}")
        lines.append(f"  public: {P['sellers']}")
    lines.append("")
    lines.append("half-year NAV-weighted price (% of reported NAV):")
    pub = {}
    if "trough_price_pct" in f:  # the crisis prints only beside a dataset with shocks
        pub = dict(COGENT_2008)
        pub.update(COVID_2020)
    for h, v in f["half_year_price_pct"].items():
        lines.append(f"  {h}: {v:6.1f}" + (f"   public {pub[h]}" if h in pub else ""))
    lines.append(f"finite market vs MFG price, mean |gap| over quarters: {f['mfg_gap_pct_points']:.2f} % points")
    return "\n".join(lines)
