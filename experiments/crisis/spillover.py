"""Cross-vintage spillover: shock the LPs of one group of vintages, measure every group's price and exits.

Scenario ``vintages`` (calm.toml's ladder on 2008-2023, docs/model.md 2.4: every vintage shares the
price ``P``, the buyer capital ``K`` and the mean field ``M``).  The funds are grouped by vintage
(:data:`GROUPS`: young, mid-life, old at the shock of 2010.0); each group in turn takes the shipped
event's liquidity shift (−0.6, unanticipated; nothing else moves) and every group's response is
measured against the no-event equilibrium:

* price: ``π_k/π_k^calm − 1`` at its lowest over the two years after the shock (%; every vintage
  trades at ``P A_k``, so the groups differ only through ``A_k``);
* exits: NAV sold by the group per unit of its own NAV, minus the same on the no-event path, over
  the year after the shock (% of its NAV).

Variants: the calm α, λ and α = λ = 0 (the other groups then feel the shock only through ``P``
and ``K``).  Cross-vintage spillover has no empirical estimate (docs/model.md 2.10): these are
model predictions.  Tables ``spillover.csv``, ``spillover_paths.csv``; figure ``spillover.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .common import ExperimentReport, grid_text, load, pyplot, register, solved, window_sum, write_report

__all__ = ["GROUPS", "run", "group_members"]

#: Vintage groups (first and last vintage year, inclusive).
GROUPS = {"2006-08 (young)": (2006, 2008), "2003-05 (mid-life)": (2003, 2005), "2000-02 (old)": (2000, 2002)}
VARIANTS = (("calm α, λ", 1.0, 1.0), ("α = λ = 0", 0.0, 0.0))


def group_members(model, group: str) -> list[int]:
    a, b = GROUPS[group]
    return [k for k, p in enumerate(model.populations) if a <= p.vintage <= b]


def _rows(sc, eq, calm, shocked: str, variant: str) -> list[dict]:
    t, w, shock = eq.t, eq.model.weights, sc.events[0].time
    after2 = (t >= shock - 1e-9) & (t < shock + 2 - 1e-9)
    rows = []
    for g in GROUPS:
        ks = group_members(eq.model, g)
        active = (calm.active_mass[ks] > 0)[:, after2]  # a population's price after its maturity is not traded
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(active, (eq.vintage_price[ks] / calm.vintage_price[ks] - 1.0)[:, after2], np.nan)
        nav = float(np.sum(w[ks] * eq.active_mass[ks, int(np.searchsorted(t, shock - 1e-9))]))
        extra = (window_sum(t, eq.flow[ks].sum(axis=0), shock, shock + 1)
                 - window_sum(t, calm.flow[ks].sum(axis=0), shock, shock + 1)) / nav
        rows.append({"variant": variant, "shocked": shocked, "responding": g, "own": g == shocked,
                     "price_trough_pct": 100 * float(np.nanmin(rel)), "extra_sold_pct": 100 * extra,
                     "converged": bool(eq.converged)})
    return rows


def _measure(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = load("vintages", quick)
    ev = base.events[0]
    rows, paths = [], []
    for label, fa, fl in VARIANTS:
        pops = tuple(p.model_copy(update={"alpha": fa * p.alpha, "lam": fl * p.lam}) for p in base.model.populations)
        sc = base.model_copy(update={"model": base.model.model_copy(update={"populations": pops})})
        for g in GROUPS:
            names = tuple(sc.model.populations[k].name for k in group_members(sc.model, g))
            calm, eq = solved(sc, events=(ev.model_copy(update={"populations": names, "name": f"squeeze-{g}"}),))
            rows += _rows(sc, eq, calm, g, label)
            paths.append(pd.DataFrame({"variant": label, "shocked": g, "t": eq.t, "price": eq.price,
                                       "calm_price": calm.price}))
    return pd.DataFrame(rows), pd.concat(paths, ignore_index=True)


def _matrix(table, variant, col):
    m = table[table.variant == variant].pivot(index="shocked", columns="responding", values=col)
    return m.loc[list(GROUPS), list(GROUPS)]


def _md(m: pd.DataFrame, fmt: str) -> str:
    lines = ["| shocked \\ responding | " + " | ".join(m.columns) + " |", "|---|" + "---|" * len(m.columns)]
    lines += [f"| {i} | " + " | ".join(format(v, fmt) for v in r) + " |" for i, r in m.iterrows()]
    return "\n".join(lines)


@register("spillover")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Shock each vintage group of ``vintages`` in turn; the spillover matrices (module docstring)."""
    t0 = time.perf_counter()
    table, paths = _measure(quick)
    coarse = None if quick else _measure(True)[0]
    cross = table[~table.own]
    err = "" if coarse is None else (f" (largest difference to the quick grid: "
                                     f"{np.max(np.abs(table.extra_sold_pct - coarse.extra_sold_pct)):.2f} points of "
                                     f"exits, {np.max(np.abs(table.price_trough_pct - coarse.price_trough_pct)):.1f} "
                                     "of price)")
    heads = []
    for label, _, _ in VARIANTS:
        c = cross[cross.variant == label]
        heads.append(f"{label}: other groups' prices {c.price_trough_pct.max():.1f} to "
                     f"{c.price_trough_pct.min():.1f}%, their extra sales {c.extra_sold_pct.min():+.2f} to "
                     f"{c.extra_sold_pct.max():+.2f}% of own NAV")
    lines = ["# Cross-vintage spillover", "", f"{grid_text(load('vintages', quick))}; {time.perf_counter() - t0:.1f} s;"
             " a model prediction (docs/model.md 2.10: no empirical estimate).", "",
             f"**{'; '.join(heads)}{err}.**", ""]
    for label, _, _ in VARIANTS:
        lines += [f"## {label}: price trough (%)", _md(_matrix(table, label, "price_trough_pct"), "+.1f"), "",
                  f"## {label}: extra NAV sold in the year after (% of the group's NAV)",
                  _md(_matrix(table, label, "extra_sold_pct"), "+.2f"), ""]
    if quick:
        lines.append("Quick grid: the discretisation error is stated in the full run.")
    facts = {"quick": quick, "seconds": time.perf_counter() - t0,
             "cross_exits": {f"{r.variant}: {r.shocked} -> {r.responding}": r.extra_sold_pct
                             for r in cross.itertuples()}}
    report = ExperimentReport("spillover", "\n".join(lines) + "\n", facts,
                              {"spillover": table, "spillover_paths": paths}, {"spillover": _figure(table, paths)})
    return write_report(report, out)


def _figure(table: pd.DataFrame, paths: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
    for ax, (label, _, _) in zip(axes[:2], VARIANTS):
        m = _matrix(table, label, "extra_sold_pct")
        v = float(np.abs(m.to_numpy()).max()) or 1.0
        im = ax.imshow(m.to_numpy(), cmap="RdBu", vmin=-v, vmax=v)
        ax.set_xticks(range(len(m)), m.columns, rotation=15, fontsize=8)
        ax.set_yticks(range(len(m)), m.index, fontsize=8)
        ax.set(xlabel="responding group", ylabel="shocked group", title=f"extra NAV sold, % of own NAV [{label}]")
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, f"{m.iat[i, j]:+.2f}", ha="center", va="center", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8, label="% of the group's NAV")
    ax = axes[2]
    for g in GROUPS:
        p = paths[(paths.variant == VARIANTS[0][0]) & (paths.shocked == g) & (paths.t >= 2009.5) & (paths.t <= 2013)]
        ax.plot(p.t, p.price, label=f"{g} shocked")
    ax.plot(p.t, p.calm_price, color="grey", ls="--", label="no event")
    ax.set(xlabel="year", ylabel="price P (fraction of true NAV)", title="market price after each group's shock")
    ax.legend(fontsize=7, loc="lower right")
    return fig
