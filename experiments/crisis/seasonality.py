"""Q4 seasonality of LP sales on the clearing market: the quarterly shares, the second-half share, its mechanism.

docs/model.md 2.10: 55 to 65% of a normal year's LP sales fall in its second half.  calm.toml meets
it with pensions' and endowments' sale processes that succeed 8 times faster in Q3-Q4 (deals
pushed to close by the fiscal year-end; ``a_max_factor``) together with buyers who deploy faster
at the lower H2 price (``gamma = 4``; calm.toml's header).  Measured here, per calendar year of the
report window: the quarterly shares of the volume (NAV sold) and the H2 share; the price by
quarter; and the mechanism, by switching the box off (``a_max_factor = 1``: the shares must then
be flat) and by the crisis years of ``crisis_2008`` (2009, 2010: how the crisis moves the shares).
The full run repeats the calm numbers on the quick grid (the discretisation error).  Tables
``shares.csv``; figure ``seasonality.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .common import ExperimentReport, grid_text, load, pyplot, register, solved, window_mean, window_sum, write_report

__all__ = ["run", "shares"]


def shares(res, years) -> pd.DataFrame:
    """Per calendar year: the four quarterly shares of the NAV sold, the H2 share, the mean price per quarter."""
    rows = []
    for y in years:
        q = [window_sum(res.t, res.sell_flow, y + i / 4, y + (i + 1) / 4) for i in range(4)]
        tot = sum(q)
        rows.append({"year": int(y), **{f"Q{i + 1}": q[i] / tot for i in range(4)}, "H2": (q[2] + q[3]) / tot,
                     **{f"price_Q{i + 1}": window_mean(res.t, res.price, y + i / 4, y + (i + 1) / 4)
                        for i in range(4)}})
    return pd.DataFrame(rows)


def _no_box(sc):
    pops = tuple(p.model_copy(update={"seasonal": None}) if p.seasonal is not None else p
                 for p in sc.model.populations)
    return sc.model_copy(update={"model": sc.model.model_copy(update={"populations": pops})})


def _measure(quick: bool) -> pd.DataFrame:
    calm_sc = load("calm", quick)
    r0, r1 = calm_sc.report_window
    years = range(int(r0), int(r1))
    parts = [shares(solved(calm_sc)[0], years).assign(market="calm.toml"),
             shares(solved(_no_box(calm_sc))[0], years).assign(market="calm.toml, Q3-Q4 box off")]
    crisis = load("crisis_2008", quick)
    parts.append(shares(solved(crisis)[1], (2009, 2010)).assign(market="crisis_2008"))
    return pd.concat(parts, ignore_index=True)


@register("seasonality")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Quarterly shares of calm.toml, without its Q3-Q4 box, and in the 2009-10 crisis years."""
    t0 = time.perf_counter()
    table = _measure(quick)
    coarse = None if quick else _measure(True)
    calm = table[table.market == "calm.toml"]
    off = table[table.market == "calm.toml, Q3-Q4 box off"]
    cr = table[table.market == "crisis_2008"].set_index("year")
    err = ("" if coarse is None else
           f" (quick grid {100 * coarse[coarse.market == 'calm.toml'].H2.min():.1f} to "
           f"{100 * coarse[coarse.market == 'calm.toml'].H2.max():.1f}%)")
    passed = bool(calm.H2.min() >= 0.55 and calm.H2.max() <= 0.65)
    lines = ["# Q4 seasonality of LP sales (clearing market)", "",
             f"{grid_text(load('calm', quick))}; {time.perf_counter() - t0:.1f} s.", "",
             f"**Second-half share of calm.toml's sales {100 * calm.H2.min():.1f} to {100 * calm.H2.max():.1f}% "
             f"every year{err} (public 55-65%: {'passed' if passed else 'FAILED'}); Q4 {100 * calm.Q4.mean():.1f}%, "
             f"Q1 {100 * calm.Q1.mean():.1f}%. With the Q3-Q4 box off: {100 * off.H2.mean():.1f}%. In the crisis: "
             f"2009 {100 * cr.loc[2009, 'H2']:.1f}%, 2010 {100 * cr.loc[2010, 'H2']:.1f}%.**", "",
             "Mean calm price by quarter: " + ", ".join(f"Q{i} {100 * calm[f'price_Q{i}'].mean():.1f}%"
                                                        for i in range(1, 5))
             + " (the H2 discount is the price of the year-end selling: buyers deploy faster at it).", ""]
    if quick:
        lines.append("Quick grid: the discretisation error is stated in the full run.")
    facts = {"h2_min": float(calm.H2.min()), "h2_max": float(calm.H2.max()), "h2_box_off": float(off.H2.mean()),
             "crisis_h2": {int(y): float(v) for y, v in cr.H2.items()}, "passed": passed, "quick": quick,
             "seconds": time.perf_counter() - t0}
    report = ExperimentReport("seasonality", "\n".join(lines) + "\n", facts, {"shares": table},
                              {"seasonality": _figure(table)})
    return write_report(report, out)


def _figure(table: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    ax = axes[0]
    x = np.arange(4)
    for i, (market, g) in enumerate(table.groupby("market", sort=False)):
        ax.bar(x + 0.27 * (i - 1), 100 * g[["Q1", "Q2", "Q3", "Q4"]].mean().to_numpy(), width=0.27, label=market)
    ax.axhline(25, color="k", lw=0.6)
    ax.set_xticks(x, ["Q1", "Q2", "Q3", "Q4"])
    ax.set(ylabel="share of the year's NAV sold (%)", title="quarterly shares (mean over the years)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for market, g in table.groupby("market", sort=False):
        ax.plot(g.year, 100 * g.H2, "o-", label=market)
    ax.axhspan(55, 65, color="tab:green", alpha=0.15, label="public 55-65%")
    ax.set(xlabel="year", ylabel="second-half share (%)", title="second-half share by year")
    ax.legend(fontsize=8, loc="lower left")
    return fig
