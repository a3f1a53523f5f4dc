"""LP types in the 2008 crisis: who sells at the trough and in the recovery, and who buys time by waiting.

Scenario ``crisis_2008.toml`` (pensions, endowments, sovereigns; the Lehman shock at 2008.75).
Its first segment (the whole window solved without the shock) is the no-shock counterfactual.

* **Seller composition by type**: each type's share of the NAV sold in a window (shares sum
  to 1): the year before the shock, the six months after it (the trough), calendar H1 2009,
  and calendar 2010 (the recovery).  Public (docs/model.md 2.10): pensions about 5% of sellers at
  the 2009 trough and about 40% in 2010; endowments the stressed sellers; sovereign wealth
  funds postponed rather than sold.
* **Who buys time by waiting**: per type and step, the mean liquidity of its active LPs
  against its exit threshold ``ℓ*`` (LPs below it sell), the mass below the threshold, and the
  **value of waiting** ``V − G`` (the value of holding on with the option to sell later,
  minus the exit value ``G = π − φ`` now), averaged over the type's active LPs; where it is
  positive for nearly all of a type's mass, that type waits the crisis out.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit.params import load_scenario
from mfg.lp_exit.scenarios import solve_scenario

from .common import SCENARIO_DIR, ExperimentReport, register, write_report

__all__ = ["run", "composition", "waiting_paths", "load_crisis"]


def load_crisis(name: str = "crisis_2008", fallback: str = "shock_demo"):
    """The shipped scenario ``name`` (falls back to ``fallback`` if it is not there)."""
    path = SCENARIO_DIR / f"{name}.toml"
    if not path.is_file():
        path = SCENARIO_DIR / f"{fallback}.toml"
    return load_scenario(path), path.stem


def _types(res) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for k, p in enumerate(res.model.populations):
        out.setdefault(p.lp_type, []).append(k)
    return {t: np.asarray(v) for t, v in out.items()}


def composition(res, windows: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Share of each LP type in the NAV sold over each window ``[a, b)`` (steps ``t_n`` in it).

    One row per (window, type): ``window, start, end, lp_type, volume`` (fraction of market
    NAV), ``share`` (of the window's volume; the shares of a window sum to 1)."""
    t = np.asarray(res.t[:-1])
    dt = float(res.t[1] - res.t[0])
    tol = 1e-9 * dt
    types = _types(res)
    rows = []
    for w, (a, b) in windows.items():
        sel = (t >= a - tol) & (t < b - tol)
        vols = {ty: float(np.asarray(res.flow)[ks][:, :-1][:, sel].sum() * dt) for ty, ks in types.items()}
        tot = sum(vols.values())
        for ty, v in vols.items():
            rows.append({"window": w, "start": a, "end": b, "lp_type": ty, "volume": v,
                         "share": v / tot if tot > 0 else math.nan})
    return pd.DataFrame(rows)


def waiting_paths(res) -> pd.DataFrame:
    """Per step and LP type: mean liquidity of the active LPs, mass-weighted mean exit threshold,
    mass below the threshold (fraction of active mass), and the value of waiting ``V − G``
    (mean over the active LPs; ``G = π_k − φ_k``), with the fraction of mass for which
    ``V − G > 0``.  ``V`` is the value after the step's exit decision (NAV units).
    ``active_mass``: the type's active mass (sum over its populations)."""
    L = np.asarray(res.L)
    dens = np.asarray(res.density)
    val = np.asarray(res.value)
    thr = np.asarray(res.threshold)
    G = np.asarray(res.vintage_price) - np.array([p.phi for p in res.model.populations])[:, None]
    rows = []
    for ty, ks in _types(res).items():
        d = dens[ks]  # (k, n, L)
        m_k = d.sum(axis=2)
        m = m_k.sum(axis=0)
        gap = np.nan_to_num(val[ks] - G[ks][:, :, None], nan=0.0)
        below = np.where(L[None, None, :] < np.nan_to_num(thr[ks], nan=-np.inf)[:, :, None], d, 0.0).sum(axis=(0, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_L = np.einsum("knl,l->n", d, L) / m
            th = np.where(np.isfinite(thr[ks]), thr[ks] * m_k, 0.0).sum(axis=0) / \
                np.where(np.isfinite(thr[ks]), m_k, 0.0).sum(axis=0)
            wait = (d * gap).sum(axis=(0, 2)) / m
            pos = np.where(gap > 0, d, 0.0).sum(axis=(0, 2)) / m
        rows.append(pd.DataFrame({"t": res.t, "lp_type": ty, "mean_L": mean_L, "threshold": th,
                                  "distance": mean_L - th, "mass_below": below / m, "value_of_waiting": wait,
                                  "waiting_mass": pos, "active_mass": m * float(L[1] - L[0])}))
    return pd.concat(rows, ignore_index=True)


_COLORS = {"pension": "tab:orange", "endowment": "tab:blue", "sovereign": "tab:green"}


def _color(ty: str, j: int) -> str:
    return _COLORS.get(ty, f"C{3 + j}")


def _figure(res, comp: pd.DataFrame, wait: pd.DataFrame, shock: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    a = ax[0, 0]
    piv = comp.pivot(index="window", columns="lp_type", values="share").loc[list(dict.fromkeys(comp.window))]
    bottom = np.zeros(len(piv))
    for j, ty in enumerate(piv.columns):
        a.bar(range(len(piv)), 100 * piv[ty].values, bottom=bottom, label=ty, color=_color(ty, j))
        bottom += 100 * piv[ty].values
    a.set_xticks(range(len(piv)), [w.replace(" after", "\nafter").replace(" before", "\nbefore") for w in piv.index],
                 fontsize=8)
    a.set_ylabel("share of NAV sold (%)")
    a.legend(fontsize=8)
    a.set_title("sellers by type", fontsize=9)
    a = ax[0, 1]
    for j, (ty, g) in enumerate(wait.groupby("lp_type", sort=False)):
        c = _color(ty, j)
        a.plot(g.t, g.mean_L, color=c, label=f"{ty}: mean L")
        a.plot(g.t, g.threshold, color=c, ls="--", label=f"{ty}: threshold")
    a.axvline(shock, color="k", lw=0.6)
    a.set_ylabel("liquidity")
    a.legend(fontsize=7, ncol=2)
    a.set_title("liquidity against the exit threshold", fontsize=9)
    a = ax[1, 0]
    for j, (ty, g) in enumerate(wait.groupby("lp_type", sort=False)):
        a.plot(g.t, g.value_of_waiting, color=_color(ty, j), label=ty)
    a.axvline(shock, color="k", lw=0.6)
    a.set_ylabel("value of waiting V - G (NAV), mean over active LPs")
    a.legend(fontsize=8)
    a = ax[1, 1]
    a.plot(res.t, res.price, color="k", label="price P")
    a.axvline(shock, color="k", lw=0.6)
    a2 = a.twinx()
    for j, (ty, ks) in enumerate(_types(res).items()):
        a2.plot(res.t, np.maximum(np.asarray(res.flow)[ks].sum(axis=0), 1e-6), color=_color(ty, j), lw=0.8, label=ty)
    a2.set_yscale("log")
    a2.set_ylim(1e-5, None)
    a2.set_ylabel("sell flow (NAV/yr, log)")
    a2.legend(fontsize=8)
    a.set_ylabel("price (fraction of NAV)")
    fig.suptitle("LP types in the 2008 crisis (crisis_2008.toml)")
    fig.tight_layout()
    return fig


@register("lp_types")
def run(out, *, quick: bool = False) -> ExperimentReport:
    """Seller composition and the value of waiting by LP type in crisis_2008; write the report."""
    t0 = time.perf_counter()
    sc, name = load_crisis("crisis_2008")
    grid = sc.grid
    if quick:
        grid = grid.model_copy(update={"n_L": max(101, (grid.n_L - 1) // 2 + 1)})
    res = solve_scenario(sc.model, grid, sc.solver, sc.events)
    shock = float(min(e.time for e in sc.events)) if sc.events else float(res.t[0])
    windows = {"year before shock": (shock - 1.0, shock), "6 months after shock": (shock, shock + 0.5),
               "H1 2009": (2009.0, 2009.5), "2010": (2010.0, 2011.0)}
    if name != "crisis_2008":  # fallback scenario: windows relative to its shock
        windows = {"year before shock": (shock - 1.0, shock), "6 months after shock": (shock, shock + 0.5),
                   "months 6-18": (shock + 0.5, shock + 1.5), "months 18-30": (shock + 1.5, shock + 2.5)}
    comp = composition(res, windows)
    calm = composition(res.segments[0], windows).assign(case="no shock")
    comp = comp.assign(case="crisis")
    wait = waiting_paths(res)
    n_tr = int(np.argmin(res.price))
    t_tr = float(res.t[n_tr])
    at_tr = wait[np.isclose(wait.t, t_tr)].set_index("lp_type")
    rec = wait[(wait.t >= 2010.0) & (wait.t < 2011.0)].groupby("lp_type").mean(numeric_only=True) \
        if name == "crisis_2008" else wait[wait.t >= shock + 1.5].groupby("lp_type").mean(numeric_only=True)
    pre = wait[(wait.t >= shock - 1.0) & (wait.t < shock)].groupby("lp_type").mean(numeric_only=True)
    share = comp.set_index(["window", "lp_type"]).share
    facts = {"scenario": name, "trough_time": t_tr, "trough_price": float(res.price[n_tr]),
             "composition": {w: {ty: float(share[(w, ty)]) for ty in comp.lp_type.unique()} for w in windows},
             "composition_no_shock": {w: {ty: float(v) for ty, v in g.set_index("lp_type").share.items()}
                                      for w, g in calm.groupby("window", sort=False)},
             "waiting_at_trough": {ty: {c: float(at_tr.loc[ty, c]) for c in
                                        ("mean_L", "threshold", "distance", "mass_below", "value_of_waiting",
                                         "waiting_mass")} for ty in at_tr.index},
             "waiting_recovery": {ty: {c: float(rec.loc[ty, c]) for c in ("mean_L", "threshold", "value_of_waiting",
                                                                          "mass_below")} for ty in rec.index},
             "waiting_pre": {ty: {c: float(pre.loc[ty, c]) for c in ("mean_L", "threshold", "value_of_waiting",
                                                                     "mass_below")} for ty in pre.index},
             "quick": quick}
    fig = _figure(res, comp, wait, shock)
    facts["seconds"] = time.perf_counter() - t0

    def pct(v):
        return f"{100 * v:.1f}%"

    types = list(comp.lp_type.unique())
    lines = [f"# LP types in the 2008 crisis ({name}.toml, {grid.n_L} x {res.t.size} grid)", "",
             f"Trough: price {res.price[n_tr]:.3f} at t = {t_tr:.3f}.", "",
             "Share of the NAV sold, by LP type (crisis; in brackets the same window without the shock):", "",
             "| window | " + " | ".join(types) + " | NAV sold (% of market NAV) |",
             "|---|" + "---|" * (len(types) + 1)]
    cs = calm.set_index(["window", "lp_type"]).share
    for w in windows:
        g = comp[comp.window == w]
        lines.append(f"| {w} | " + " | ".join(f"{pct(share[(w, ty)])} ({pct(cs[(w, ty)])})" for ty in types)
                     + f" | {100 * g.volume.sum():.2f} |")
    lines += ["", "Who waits: per type, mean liquidity of active LPs, mean exit threshold, mass below it, and the "
              "value of waiting V - G (NAV, mean over active LPs) with the share of mass for which it is > 0:", "",
              "| type | when | mean L | threshold | mass below | V - G | mass with V > G |",
              "|---|---|---|---|---|---|---|"]
    for ty in types:
        for lab, src in (("year before", pre), ("trough", at_tr), ("recovery", rec)):
            r = src.loc[ty]
            wm = f"{pct(r.waiting_mass)}" if "waiting_mass" in r else ""
            lines.append(f"| {ty} | {lab} | {r.mean_L:.3f} | {r.threshold:.3f} | {pct(r.mass_below)} | "
                         f"{r.value_of_waiting:.4f} | {wm} |")
    lines += ["", "Public (docs/model.md 2.10): pensions about 5% of sellers at the 2009 trough and about 40% in 2010; "
              "endowments the stressed sellers; sovereign wealth funds postponed rather than sold.",
              f"Run time {facts['seconds']:.1f} s{' (quick)' if quick else ''}."]
    report = ExperimentReport("lp_types", "\n".join(lines) + "\n", facts,
                              {"composition": pd.concat([comp, calm], ignore_index=True), "waiting": wait},
                              {"lp_types": fig})
    return write_report(report, Path(out))
