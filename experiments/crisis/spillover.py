"""Cross-vintage spillover: shock one vintage's LPs and measure every vintage's price and exits.

Scenario ``vintages.toml``: funds of vintages 2005, 2007 and 2009 (one LP population each, one
blended LP type) share the market price ``P``, the buyer capital ``K`` and the mean field ``M``
(docs/model.md 2.4).  For each vintage in turn, its LPs alone take the shipped event's liquidity shift
(−0.6 at 2010.0, unanticipated; nothing else moves), and every vintage's response is measured
against the no-event equilibrium (segment 0 of the same solve):

* price: ``π_k / π_k^calm − 1`` (%), its most negative value (``price_peak_pct``) and its
  integral over the two years after the shock (``price_cum_pct_years``).  All vintage prices are
  ``P·A_k`` (docs/model.md 2.4), so every vintage's price moves by the same percentage: the price
  matrix varies only with the shocked vintage;
* exits: NAV sold by vintage ``k`` per unit of its own NAV, equilibrium minus calm: the largest
  step response in rate (``exit_peak_pct_per_year``, signed) and the extra share sold in the
  year after the shock (``exit_cum_pct``).

Four variants: ``full`` (the calm parameters: α and λ on), ``price only`` (α = λ = 0: the
other vintages feel the shock only through ``P`` and ``K``), ``alpha x2`` and ``alpha x3`` (every
α doubled, tripled).  Tables ``spillover.csv`` (tidy:
variant × shocked × responding), ``spillover_paths.csv``; figure ``spillover.png`` (heatmaps and
the paths of the shipped 2007 shock).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit.scenarios import solve_scenario

from .amplification import _quiet, load
from .common import ExperimentReport, register, write_report

__all__ = ["VARIANTS", "run", "spillover_rows"]

VARIANTS = ("full", "price only", "alpha x2", "alpha x3")


def _variant(model, variant):
    if variant == "full":
        return model
    if variant.startswith("alpha x"):
        f = float(variant.removeprefix("alpha x"))
        pops = tuple(p.model_copy(update={"alpha": f * p.alpha}) for p in model.populations)
    else:
        pops = tuple(p.model_copy(update={"alpha": 0.0, "lam": 0.0}) for p in model.populations)
    return model.model_copy(update={"populations": pops})


def spillover_rows(eq, shocked: str, variant: str, shock_time: float) -> tuple[list[dict], pd.DataFrame]:
    """Response of every population of ``eq`` (a :class:`~mfg.lp_exit.scenarios.ScenarioResult`) to the shock."""
    calm = eq.segments[0]
    t = np.asarray(eq.t)
    dt = float(t[1] - t[0])
    w = eq.model.weights
    after2 = (t >= shock_time - 1e-9 * dt) & (t < shock_time + 2.0 - 1e-9 * dt)
    after1 = (t >= shock_time - 1e-9 * dt) & (t < shock_time + 1.0 - 1e-9 * dt)
    rows, frames = [], []
    for k, name in enumerate(eq.populations):
        rel = eq.vintage_price[k] / calm.vintage_price[k] - 1.0
        own_rate = (eq.flow[k] - calm.flow[k]) / w[k]  # NAV / yr per unit of own NAV
        j = int(np.argmax(np.abs(np.where(after2, own_rate, 0.0))))
        rows.append({
            "variant": variant, "shocked": shocked, "responding": name, "own": name == shocked,
            "price_peak_pct": 100.0 * float(np.min(rel[after2])),
            "price_cum_pct_years": 100.0 * float(np.sum(rel[after2]) * dt),
            "exit_peak_pct_per_year": 100.0 * float(own_rate[j]),
            "exit_cum_pct": 100.0 * float(np.sum(own_rate[after1]) * dt),
            "converged": bool(eq.converged),
        })
        frames.append(pd.DataFrame({"variant": variant, "shocked": shocked, "responding": name, "t": t,
                                    "vintage_price": eq.vintage_price[k], "calm_vintage_price": calm.vintage_price[k],
                                    "flow_own_nav": eq.flow[k] / w[k], "calm_flow_own_nav": calm.flow[k] / w[k]}))
    return rows, pd.concat(frames, ignore_index=True)


def _matrix(table, variant, col):
    t = table[table.variant == variant]
    return t.pivot(index="shocked", columns="responding", values=col)


def _md_matrix(m: pd.DataFrame, fmt="{:+.2f}") -> str:
    cols = list(m.columns)
    lines = ["| shocked \\ responding | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for idx, r in m.iterrows():
        lines.append(f"| {idx} | " + " | ".join(fmt.format(v) for v in r) + " |")
    return "\n".join(lines)


def _figure(table, paths, names, shipped):
    from experiments.lp_exit_report import _plt

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
    panels = (("full", "price_peak_pct", "price: peak change (%)"),
              ("full", "exit_cum_pct", "exits: extra share sold in 1 y (% of own NAV)"),
              ("price only", "exit_cum_pct", "exits, alpha = lam = 0 (% of own NAV)"))
    for ax, (variant, col, title) in zip(axes[0], panels):
        m = _matrix(table, variant, col).loc[names, names]
        v = np.abs(m.to_numpy()).max() or 1.0
        im = ax.imshow(m.to_numpy(), cmap="RdBu", vmin=-v, vmax=v)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="responding vintage", ylabel="shocked vintage", title=f"{title}\n[{variant}]")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m.iat[i, j]:+.2f}", ha="center", va="center", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    p = paths[(paths.variant == "full") & (paths.shocked == shipped)]
    win = (p.t >= 2009.5) & (p.t <= 2013.0)
    ax = axes[1, 0]
    for name in names:
        q = p[win & (p.responding == name)]
        ax.plot(q.t, q.vintage_price, label=name)
        ax.plot(q.t, q.calm_vintage_price, ls=":", color=ax.lines[-1].get_color())
    ax.set(title=f"vintage prices, {shipped} shocked (dotted: no event)", xlabel="year", ylabel="fraction of NAV")
    ax.legend(fontsize=8)
    for ax, variant in ((axes[1, 1], "full"), (axes[1, 2], "price only")):
        p = paths[(paths.variant == variant) & (paths.shocked == shipped)]
        win = (p.t >= 2009.5) & (p.t <= 2013.0)
        for name in names:
            q = p[win & (p.responding == name)]
            ax.plot(q.t, 100 * (q.flow_own_nav - q.calm_flow_own_nav), label=name)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set(title=f"extra sell rate, {shipped} shocked [{variant}]", xlabel="year", ylabel="% of own NAV / yr")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.legend(fontsize=8)
    return fig


@register("spillover")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Shock each vintage of ``vintages.toml`` in turn; write the spillover matrices to ``out/spillover/``."""
    t0 = time.perf_counter()
    sc = load("vintages", quick)
    names = [p.name for p in sc.model.populations]
    ev = sc.events[0]
    shipped = ev.populations[0]
    rows, frames = [], []
    for variant in VARIANTS:
        model = _variant(sc.model, variant)
        for v in names:
            e = ev.model_copy(update={"populations": (v,), "name": f"squeeze-{v}"})
            eq = _quiet(solve_scenario, model, sc.grid, sc.solver, (e,))
            r, f = spillover_rows(eq, v, variant, ev.time)
            rows += r
            frames.append(f)
    table = pd.DataFrame(rows)
    paths = pd.concat(frames, ignore_index=True)
    cross = table[~table.own]
    full_x = cross[cross.variant == "full"]
    po_x = cross[cross.variant == "price only"]
    facts = {
        "seconds": time.perf_counter() - t0, "quick": quick,
        "max_cross_price_peak_pct": float(cross.price_peak_pct.max()),  # the least negative: all < 0 means all fall
        "all_cross_prices_fall": bool((cross.price_peak_pct < 0).all()),
        "shipped_price_peak_pct": float(table[(table.variant == "full") & (table.shocked == shipped)
                                              & (table.responding == shipped)].price_peak_pct.iloc[0]),
        "cross_exit_cum_pct_full": {f"{r.shocked}->{r.responding}": float(r.exit_cum_pct) for r in full_x.itertuples()},
        "cross_exit_cum_pct_price_only": {f"{r.shocked}->{r.responding}": float(r.exit_cum_pct)
                                          for r in po_x.itertuples()},
        "price_only_cross_exits_fall": bool((po_x.exit_cum_pct < 0).all()),
        "full_cross_exits_rise": bool((full_x.exit_cum_pct > 0).all()),
        "alpha2_cross_exits_rise": bool((cross[cross.variant == "alpha x2"].exit_cum_pct > 0).all()),
        "alpha3_cross_exits_rise": bool((cross[cross.variant == "alpha x3"].exit_cum_pct > 0).all()),
        "all_converged": bool(table.converged.all()),
    }
    mats = {(v, c): _matrix(table, v, c).loc[names, names] for v in VARIANTS
            for c in ("price_peak_pct", "price_cum_pct_years", "exit_peak_pct_per_year", "exit_cum_pct")}
    a2_x = cross[cross.variant == "alpha x2"]
    a3_x = cross[cross.variant == "alpha x3"]

    def rng(d):
        return f"{d.exit_cum_pct.min():+.2f} to {d.exit_cum_pct.max():+.2f}%"

    grid_txt = "quick grid (121 nodes, monthly steps)" if quick else "shipped grid (221 nodes, half-monthly steps)"
    summary = f"""# Cross-vintage spillover

`vintages.toml` on the {grid_txt}: each vintage's LPs in turn lose {-ev.liquidity_shift:g} of liquidity at
{ev.time:g} (unanticipated, nothing else moves); responses against the no-event equilibrium;
{facts['seconds']:.1f} s.  Rows: the shocked vintage; columns: the responding vintage.

**Headline.** A shock to one vintage lowers every vintage's price (all cross effects negative:
{facts['all_cross_prices_fall']}; shipped 2007 shock: {facts['shipped_price_peak_pct']:.1f}% at the peak, the same
percentage for every vintage since π_k = P·A_k).  The exits of the *other* vintages respond with a
sign that depends on the channels.  Through P and K alone (α = λ = 0) they sell less: they hold out
against the lower price ({rng(po_x)} of their own NAV in the year after; all negative:
{facts['price_only_cross_exits_fall']}).  With the calm α and λ the lower price and the lower mean
liquidity M pull the other way and the hold-out shrinks ({rng(full_x)}; all positive:
{facts['full_cross_exits_rise']}); with every α doubled: {rng(a2_x)} (all positive:
{facts['alpha2_cross_exits_rise']}); tripled: {rng(a3_x)} (all positive: {facts['alpha3_cross_exits_rise']}): past a
tipping point of α the shock to one vintage sets off a run of all of them (peak price change
{a3_x.price_peak_pct.min():.1f}%).  Cross-vintage spillover has no empirical estimate (docs/model.md 2.10): this is a
model prediction.

## Price: peak change (%), full
{_md_matrix(mats[('full', 'price_peak_pct')])}

## Price: cumulative change over two years (% · years), full
{_md_matrix(mats[('full', 'price_cum_pct_years')])}

## Exits: extra share of own NAV sold in the year after (%), full
{_md_matrix(mats[('full', 'exit_cum_pct')], "{:+.3f}")}

## Exits: peak extra sell rate (% of own NAV a year), full
{_md_matrix(mats[('full', 'exit_peak_pct_per_year')])}

## Price only (α = λ = 0): price peak (%) and extra share sold in the year after (%)
{_md_matrix(mats[('price only', 'price_peak_pct')])}

{_md_matrix(mats[('price only', 'exit_cum_pct')], "{:+.3f}")}

## α doubled: price peak (%) and extra share sold in the year after (%)
{_md_matrix(mats[('alpha x2', 'price_peak_pct')])}

{_md_matrix(mats[('alpha x2', 'exit_cum_pct')], "{:+.3f}")}

## α tripled: price peak (%) and extra share sold in the year after (%)
{_md_matrix(mats[('alpha x3', 'price_peak_pct')])}

{_md_matrix(mats[('alpha x3', 'exit_cum_pct')], "{:+.3f}")}

Converged everywhere: {facts['all_converged']}.
"""
    fig = _figure(table, paths, names, shipped)
    report = ExperimentReport("spillover", summary, facts, tables={"spillover": table, "spillover_paths": paths},
                              figures={"spillover": fig})
    return write_report(report, out)
