"""LP types in the 2008 crisis: who sells at the trough and in 2010; sovereign funds in calm years and in the crisis.

``crisis_2008`` (three LP types of calm.toml; docs/model.md 2.10: pensions about 5% of sellers at
the 2009 trough and about 40% in 2010, 20-33% in normal years; endowments the stressed sellers;
sovereign wealth funds postponed, but they do sell in normal years).  Measured: each type's share
of the NAV sold in windows (the year before Lehman, H1 2009 = the trough, 2010), with and without
the crisis (the no-event path of the same market), and the sovereigns' sales per calendar year of
calm.toml's report window and in 2009.  The full run repeats the shares on the quick grid.
Tables ``composition.csv``, ``sovereigns.csv``; figure ``lp_types.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .common import ExperimentReport, grid_text, load, pyplot, register, solved, window_sum, write_report

__all__ = ["run", "composition", "WINDOWS", "TYPES"]

TYPES = ("pension", "endowment", "sovereign")
WINDOWS = {"year before Lehman": (2007.75, 2008.75), "H1 2009 (trough)": (2009.0, 2009.5), "2010": (2010.0, 2011.0)}


def _type_volume(res, lp_type: str, a: float, b: float) -> float:
    ks = [k for k, p in enumerate(res.model.populations) if p.lp_type == lp_type]
    return window_sum(res.t, np.asarray(res.flow)[ks].sum(axis=0), a, b)


def composition(res, windows=WINDOWS) -> pd.DataFrame:
    """One row per (window, type): NAV sold (fraction of market NAV) and share of the window's NAV sold."""
    rows = []
    for w, (a, b) in windows.items():
        vol = {ty: _type_volume(res, ty, a, b) for ty in TYPES}
        tot = sum(vol.values())
        rows += [{"window": w, "lp_type": ty, "volume": v, "share": v / tot} for ty, v in vol.items()]
    return pd.DataFrame(rows)


def _measure(quick: bool):
    sc = load("crisis_2008", quick)
    calm, eq = solved(sc)
    comp = pd.concat([composition(eq).assign(case="crisis"), composition(calm).assign(case="no event")],
                     ignore_index=True)
    cs = load("calm", quick)
    c = solved(cs)[0]
    r0, r1 = cs.report_window
    sov = [{"market": "calm.toml", "year": y, "sovereign_nav_sold_pct": 100 * _type_volume(c, "sovereign", y, y + 1)}
           for y in range(int(r0), int(r1))]
    sov += [{"market": case, "year": 2009, "sovereign_nav_sold_pct": 100 * _type_volume(r, "sovereign", 2009, 2010)}
            for case, r in (("crisis_2008", eq), ("crisis_2008 without the crisis", calm))]
    return comp, pd.DataFrame(sov)


def _pension(comp: pd.DataFrame, window: str) -> float:
    c = comp[(comp.case == "crisis") & (comp.window == window) & (comp.lp_type == "pension")]
    return float(c.share.iloc[0])


@register("lp_types")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Seller composition by type in crisis_2008 and the sovereigns' sales (module docstring)."""
    t0 = time.perf_counter()
    comp, sov = _measure(quick)
    coarse = None if quick else _measure(True)[0]
    s = comp[comp.case == "crisis"].set_index(["window", "lp_type"]).share
    n = comp[comp.case == "no event"].set_index(["window", "lp_type"]).share
    trough, y10 = s[("H1 2009 (trough)", "pension")], s[("2010", "pension")]
    err = "" if coarse is None else (f" (quick grid {100 * _pension(coarse, 'H1 2009 (trough)'):.1f} and "
                                     f"{100 * _pension(coarse, '2010'):.1f}%)")
    calm_sov = sov[sov.market == "calm.toml"].sovereign_nav_sold_pct
    crisis_sov = sov[sov.market == "crisis_2008"].sovereign_nav_sold_pct.iloc[0]
    nocrisis_sov = sov[sov.market == "crisis_2008 without the crisis"].sovereign_nav_sold_pct.iloc[0]
    ok_p = trough <= 0.10 and 0.25 <= y10 <= 0.55
    ok_s = calm_sov.min() > 0 and crisis_sov < nocrisis_sov
    lines = ["# LP types in the 2008 crisis", "", f"{grid_text(load('crisis_2008', quick))}; "
             f"{time.perf_counter() - t0:.1f} s.", "",
             f"**Pensions: {100 * trough:.1f}% of the NAV sold in H1 2009 and {100 * y10:.1f}% in 2010{err} (public "
             f"about 5% and 40%; check <= 10% and 25-55%: {'passed' if ok_p else 'FAILED'}); "
             f"{100 * n[('2010', 'pension')]:.1f}% in 2010 without the crisis. Endowments: "
             f"{100 * s[('H1 2009 (trough)', 'endowment')]:.1f}% at the trough.**",
             f"**Sovereign funds sell {calm_sov.min():.3f} to {calm_sov.max():.3f}% of market NAV in every calm year; "
             f"in 2009 {crisis_sov:.3f}% against {nocrisis_sov:.3f}% without the crisis (check: sell in calm, less in "
             f"the crisis: {'passed' if ok_s else 'FAILED'}).**", "",
             "| window | " + " | ".join(TYPES) + " |", "|---|---|---|---|"]
    for w in WINDOWS:
        lines.append(f"| {w} | " + " | ".join(f"{100 * s[(w, ty)]:.1f}% ({100 * n[(w, ty)]:.1f}%)" for ty in TYPES)
                     + " |")
    lines += ["", "(in brackets: the same window without the crisis)"]
    if quick:
        lines.append("Quick grid: the discretisation error is stated in the full run.")
    facts = {"pension_trough": float(trough), "pension_2010": float(y10), "sovereign_calm_min": float(calm_sov.min()),
             "sovereign_2009": float(crisis_sov), "sovereign_2009_no_crisis": float(nocrisis_sov),
             "passed": bool(ok_p and ok_s), "quick": quick, "seconds": time.perf_counter() - t0}
    report = ExperimentReport("lp_types", "\n".join(lines) + "\n", facts, {"composition": comp, "sovereigns": sov},
                              {"lp_types": _figure(comp, sov)})
    return write_report(report, out)


def _figure(comp: pd.DataFrame, sov: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    ax = axes[0]
    colors = {"pension": "tab:orange", "endowment": "tab:blue", "sovereign": "tab:green"}
    for j, case in enumerate(("crisis", "no event")):
        c = comp[comp.case == case]
        bottom = np.zeros(len(WINDOWS))
        for ty in TYPES:
            v = 100 * c[c.lp_type == ty].share.to_numpy()
            ax.bar(np.arange(len(WINDOWS)) + 0.4 * j, v, width=0.38, bottom=bottom, color=colors[ty],
                   alpha=1.0 if case == "crisis" else 0.45, label=f"{ty} ({case})")
            bottom += v
    ax.set_xticks(np.arange(len(WINDOWS)) + 0.2, list(WINDOWS), fontsize=8)
    ax.set(ylabel="share of the NAV sold (%)", title="sellers by type: crisis (left bars), no event (right)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax = axes[1]
    s = sov[sov.market == "calm.toml"]
    ax.plot(s.year, s.sovereign_nav_sold_pct, "o-", color="tab:green", label="calm.toml, every year")
    for m, mk in (("crisis_2008", "s"), ("crisis_2008 without the crisis", "D")):
        r = sov[sov.market == m]
        ax.plot(r.year, r.sovereign_nav_sold_pct, mk, ms=8, label=f"{m}, 2009")
    ax.set(xlabel="year", ylabel="NAV sold by sovereign funds (% of market NAV)", title="sovereign wealth funds")
    ax.legend(fontsize=8, loc="upper right")
    return fig
