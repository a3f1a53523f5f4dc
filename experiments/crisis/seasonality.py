"""Seasonality of LP sales: quarterly volume shares, the second-half (H2) share, and the pensions' Q4 term.

docs/model.md 2.10: 55 to 65% of a normal year's LP sales happen in its second half (fiscal
year-ends of pensions, banks, insurers).  The only seasonal element of the model is the
pensions' schedule ``s(t)`` (docs/model.md 2.2): a box of ``amplitude`` (< 0) on the liquidity
target in Q4.  This experiment sweeps that amplitude and measures the quarterly shares of
annual sales.

**The front-loading confound.** In ``calm.toml`` every fund has a finite life and the window
ends in 2025 (funds outliving it are valued at par there): sales fall from year to year
(by 13 to 28% a year), so each year's first half outsells its second half whatever the
seasonal term does.  Measured on such a market the H2 share mixes the seasonal effect with
the trend.  The experiment therefore measures on a **stationary market**: the three LP
types of ``calm.toml`` (one population each, parameters unchanged) in funds that outlive a
long window (``life`` beyond the window's end, so the remaining-life factor ``A`` is 1 to
``e^{-20}``), with shares reported on interior years only (after a burn-in, and long before
the window's end, whose par valuation damps sales).  Stationarity is checked and reported:
the trend of annual volume over the reported years (% per year).  The calm market's shares
under the same sweep are reported beside it (the confounded measure).

**Mechanism.** With the Q4 term on, the pensions' liquidity drifts towards ``L̄ + s`` in Q4,
so more of their mass lies below the exit threshold; the threshold itself moves (LPs know the
dip is temporary).  Per quarter the experiment reports the pensions' mean liquidity, their
mean threshold, their mass below it, their share of sales and the price.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit import solve
from mfg.lp_exit.params import Grid, Scenario, Seasonal, load_scenario

from .common import SCENARIO_DIR, ExperimentReport, register, write_report

__all__ = ["run", "stationary_scenario", "quarterly_shares", "quarter_diagnostics", "sweep", "AMPLITUDES"]

#: Q4 amplitudes of the pensions' liquidity target swept (calm.toml has -0.15).
AMPLITUDES = (0.0, -0.05, -0.1, -0.15, -0.2, -0.3, -0.4)
QUICK_AMPLITUDES = (0.0, -0.15, -0.3)
#: The mechanism check: pensions whose liquidity tracks its target within a quarter.
FAST_KAPPA = 4.0
FAST_AMPLITUDES = (-0.15, -0.3)


def _with_amplitude(sc: Scenario, amplitude: float, lp_type: str = "pension") -> Scenario:
    pops = []
    for p in sc.model.populations:
        if p.lp_type == lp_type:
            seas = None if amplitude == 0.0 else Seasonal(amplitude=amplitude, start=0.75, end=1.0)
            p = p.model_copy(update={"seasonal": seas})
        pops.append(p)
    return sc.model_copy(update={"model": sc.model.model_copy(update={"populations": tuple(pops)})})


def stationary_scenario(amplitude: float = -0.15, *, life: float = 12.0, span: int = 6, lead_out: int = 4,
                        per_year: int = 4, n_L: int = 121, dt: float = 1 / 24,
                        types: tuple[str, ...] = ("pension", "endowment"), pension_kappa: float | None = None,
                        source: str | Path | None = None) -> tuple[Scenario, tuple[int, int]]:
    """A cohort-stationary market and the whole years on which it is stationary.

    Funds of every LP type in ``types`` (parameters of the first population of that type in
    ``calm.toml``, the type's total weight split evenly over its cohorts) start every
    ``1/per_year`` of a year from 2000 on, each with life ``life``; new funds keep starting
    ``lead_out`` years after the reported years.  On the ``span`` reported years
    ``[2000 + life, 2000 + life + span)`` every age from 0 to ``life`` is present in the
    same proportions, funds start in every quarter alike, and every fund matures inside the
    window (no par valuation at the window's end), so the only calendar effect left is
    ``s(t)``.  Sovereigns are left out by default: they never sell in calm.toml.  The
    pensions' Q4 amplitude is set to ``amplitude``.  ``dt = 1/24``: 6 steps per quarter.
    ``pension_kappa``: the pensions' mean reversion (σ scaled by ``sqrt(kappa / kappa_0)`` so
    that their stationary variance ``σ²/2κ`` is unchanged).
    Returns ``(scenario, (first_year, last_year))``.
    """
    sc = load_scenario(source or SCENARIO_DIR / "impact_calm.toml")
    start = 2000.0
    n_v = int(round((life + span + lead_out) * per_year))
    end = start + (n_v - 1) / per_year + life
    proto: dict[str, object] = {}
    for p in sc.model.populations:
        proto.setdefault(p.lp_type, p)
    if pension_kappa is not None:
        pp = proto["pension"]
        proto["pension"] = pp.model_copy(update={"kappa": pension_kappa,
                                                 "sigma": pp.sigma * math.sqrt(pension_kappa / pp.kappa)})
    pops = []
    for t in types:
        w = sum(q.weight for q in sc.model.populations if q.lp_type == t)
        for j in range(n_v):
            v = start + j / per_year
            pops.append(proto[t].model_copy(update={"name": f"{t}-{v:.2f}", "vintage": v, "life": life,
                                                    "weight": w / n_v}))
    model = sc.model.model_copy(update={"populations": tuple(pops), "start": start, "end": end})
    grid = Grid(L_min=sc.grid.L_min, L_max=sc.grid.L_max, n_L=n_L, dt=dt)
    solver = sc.solver.model_copy(update={"max_iter": 80})
    out = _with_amplitude(Scenario(model=model, grid=grid, solver=solver), amplitude)
    return out, (int(start + life), int(start + life + span - 1))


def _type_index(res) -> dict[str, np.ndarray]:
    types: dict[str, list[int]] = {}
    for k, p in enumerate(res.model.populations):
        types.setdefault(p.lp_type, []).append(k)
    return {t: np.asarray(ks) for t, ks in types.items()}


def _step_table(res) -> pd.DataFrame:
    """One row per step 0..N-1: time, year, quarter, NAV sold (total and per LP type), price."""
    dt = float(res.t[1] - res.t[0])
    t = np.asarray(res.t[:-1], dtype=float)
    eps = 1e-9 * dt
    year = np.floor(t + eps).astype(int)
    q = np.minimum(np.floor((t + eps - year) * 4).astype(int), 3) + 1
    cols = {"t": t, "year": year, "quarter": q, "volume": np.asarray(res.sell_flow[:-1]) * dt,
            "price": np.asarray(res.price[:-1]), "active_nav": np.asarray(res.active_nav[:-1])}
    for name, ks in _type_index(res).items():
        cols[f"vol_{name}"] = np.asarray(res.flow[ks, :-1]).sum(axis=0) * dt
    return pd.DataFrame(cols)


def quarterly_shares(res, years: tuple[int, int] | None = None) -> dict:
    """Quarterly shares of the sales of whole calendar years ``years = (first, last)`` (inclusive;
    default all whole years), their H2 share, the annual volume trend ``g`` (% per year, a
    log-linear fit of each year's NAV sold per unit of active NAV), and the H2 share
    detrended by it (each step's volume times ``exp(-g (t - mid-year))``)."""
    df = _step_table(res)
    t0, t1 = float(res.t[0]), float(res.t[-1])
    lo = int(math.ceil(t0 - 1e-9)) if years is None else years[0]
    hi = int(math.floor(t1 + 1e-9)) - 1 if years is None else years[1]
    df = df[(df.year >= lo) & (df.year <= hi)].copy()
    by_q = df.groupby("quarter")["volume"].sum()
    tot = float(by_q.sum())
    shares = {int(q): float(v / tot) for q, v in by_q.items()}
    df["turn"] = df.volume / df.active_nav
    yearly = df.groupby("year")["turn"].sum()
    yrs = np.asarray(yearly.index, dtype=float)
    turn = np.asarray(yearly.values, dtype=float)
    trend = float(np.polyfit(yrs, np.log(turn), 1)[0]) if yrs.size > 1 and np.all(turn > 0) else 0.0
    df["h2"] = df.quarter >= 3
    per_year_h2 = df[df.h2].groupby("year")["volume"].sum() / df.groupby("year")["volume"].sum()
    w = df.volume * np.exp(-trend * (df.t - df.year - 0.5))
    h2_detr = float(w[df.h2].sum() / w.sum())
    return {"years": (lo, hi), "Q": shares, "h2": shares.get(3, 0.0) + shares.get(4, 0.0),
            "h2_detrended": h2_detr, "h2_min": float(per_year_h2.min()), "h2_max": float(per_year_h2.max()),
            "turnover_pct": 100.0 * float(turn.mean()), "trend_pct_per_year": 100.0 * trend}


def quarter_diagnostics(res, lp_type: str = "pension", years: tuple[int, int] | None = None) -> pd.DataFrame:
    """Per quarter (over ``years``), for the LP type's populations together: mean liquidity and
    mass-weighted mean exit threshold of the active LPs, the mass below their own
    population's threshold (fraction of the type's active mass), the type's share of all
    sales; the share of all sales in the quarter and the mean price."""
    ks = _type_index(res)[lp_type]
    df = _step_table(res)
    dens = np.asarray(res.density[ks, :-1])  # (k, n, L)
    L = np.asarray(res.L)
    thr = np.asarray(res.threshold[ks, :-1])  # (k, n)
    mass_k = dens.sum(axis=2)
    mass = mass_k.sum(axis=0)
    below_k = np.where(L[None, None, :] < np.nan_to_num(thr, nan=-np.inf)[:, :, None], dens, 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["mean_L"] = np.einsum("knl,l->n", dens, L) / mass
        df["threshold"] = np.nansum(np.where(np.isfinite(thr), thr * mass_k, 0.0), axis=0) / \
            np.where(np.isfinite(thr), mass_k, 0.0).sum(axis=0)
        df["below"] = below_k.sum(axis=0) / mass
    if years is not None:
        df = df[(df.year >= years[0]) & (df.year <= years[1])]
    tot = float(df.volume.sum())
    rows = []
    for q, g in df.groupby("quarter"):
        v = float(g.volume.sum())
        rows.append({"quarter": f"Q{q}", "share_of_sales": v / tot,
                     f"{lp_type}_share": float(g[f"vol_{lp_type}"].sum()) / v if v > 0 else math.nan,
                     f"{lp_type}_mean_L": float(g.mean_L.mean()),
                     f"{lp_type}_threshold": float(np.nanmean(g.threshold)),
                     f"{lp_type}_mass_below": float(g.below.mean()), "price": float(g.price.mean())})
    return pd.DataFrame(rows)


def _row(market, a, s, res, secs):
    return {"market": market, "amplitude": a, "Q1": s["Q"].get(1, 0.0), "Q2": s["Q"].get(2, 0.0),
            "Q3": s["Q"].get(3, 0.0), "Q4": s["Q"].get(4, 0.0), "h2_share": s["h2"],
            "h2_detrended": s["h2_detrended"], "h2_min_year": s["h2_min"], "h2_max_year": s["h2_max"],
            "turnover_pct": s["turnover_pct"], "trend_pct_per_year": s["trend_pct_per_year"],
            "years": f"{s['years'][0]}-{s['years'][1]}", "mean_discount_pct": 100.0 * (1.0 - float(np.mean(res.price))),
            "iterations": res.iterations, "converged": bool(res.converged), "seconds": secs}


def sweep(amplitudes, market: str = "stationary", **kw) -> tuple:
    """Solve the stationary market (:func:`stationary_scenario` with ``kw``) for each amplitude;
    returns ``(table, {amplitude: (result, years)})``."""
    rows, results = [], {}
    for a in amplitudes:
        sc, yrs = stationary_scenario(a, **kw)
        t0 = time.perf_counter()
        res = solve(sc.model, sc.grid, sc.solver)
        secs = time.perf_counter() - t0
        rows.append(_row(market, a, quarterly_shares(res, yrs), res, secs))
        results[a] = (res, yrs)
    return pd.DataFrame(rows), results


def calm_sweep(amplitudes) -> pd.DataFrame:
    """The same sweep on calm.toml (finite fund lives, front-loaded sales): the confounded measure."""
    base = load_scenario(SCENARIO_DIR / "impact_calm.toml")
    rows = []
    for a in amplitudes:
        sc = _with_amplitude(base, a)
        t0 = time.perf_counter()
        res = solve(sc.model, sc.grid, sc.solver)
        rows.append(_row("calm (front-loaded)", a, quarterly_shares(res, (2015, 2023)), res,
                         time.perf_counter() - t0))
    return pd.DataFrame(rows)


def _figure(table: pd.DataFrame, calm: pd.DataFrame, diag_on: pd.DataFrame, diag_off: pd.DataFrame,
            res_on, yrs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    a = ax[0, 0]
    a.plot(-table.amplitude, 100 * table.h2_detrended, "o-", label="stationary market (detrended)")
    cm = calm[calm.market.str.startswith("calm")]
    if len(cm):
        a.plot(-cm.amplitude, 100 * cm.h2_share, "s--", label="calm.toml 2015-2023 (front-loaded)")
    for j, (mk, fm) in enumerate(calm[calm.market.str.contains("kappa")].groupby("market", sort=False)):
        a.plot(-fm.amplitude, 100 * fm.h2_detrended, "D^v"[j % 3], ms=7, label=mk)
    a.axhspan(55, 65, color="tab:green", alpha=0.15, label="public 55-65%")
    a.axhline(50, color="k", lw=0.6)
    a.set_xlabel("pensions' Q4 dip of the liquidity target, -amplitude")
    a.set_ylabel("H2 share of annual sales (%)")
    a.legend(fontsize=8)
    a = ax[0, 1]
    x = np.arange(4)
    for _, r in table.iterrows():
        a.plot(x + 1, [100 * r.Q1, 100 * r.Q2, 100 * r.Q3, 100 * r.Q4], "o-", label=f"amplitude {r.amplitude:g}")
    a.axhline(25, color="k", lw=0.6)
    a.set_xticks(x + 1, ["Q1", "Q2", "Q3", "Q4"])
    a.set_ylabel("share of annual sales (%)")
    a.legend(fontsize=7)
    a = ax[1, 0]
    w = 0.38
    a.bar(x - w / 2, diag_off.pension_mass_below * 100, w, label="Q4 term off")
    a.bar(x + w / 2, diag_on.pension_mass_below * 100, w, label="Q4 term on (-0.15)")
    a.set_xticks(x, diag_on.quarter)
    a.set_ylabel("pensions' mass below their threshold (%)")
    a.legend(fontsize=8)
    a = ax[1, 1]
    ks = _type_index(res_on)["pension"]
    sel = (res_on.t >= yrs[0]) & (res_on.t < yrs[0] + 3)
    dens = res_on.density[ks]
    mass = dens.sum(axis=2)
    mL = np.einsum("knl,l->n", dens, res_on.L) / mass.sum(axis=0)
    thr = res_on.threshold[ks]
    thr_m = np.where(np.isfinite(thr), thr * mass, 0.0).sum(axis=0) / np.where(np.isfinite(thr), mass, 0.0).sum(axis=0)
    a.plot(res_on.t[sel], mL[sel], label="pensions' mean L")
    a.plot(res_on.t[sel], thr_m[sel], label="pensions' mean exit threshold")
    a2 = a.twinx()
    a2.plot(res_on.t[sel], res_on.flow[ks].sum(axis=0)[sel], color="tab:red", lw=0.8)
    a2.set_ylabel("pensions' sell flow (NAV/yr)", color="tab:red")
    for y in range(yrs[0], yrs[0] + 3):
        a.axvspan(y + 0.75, y + 1.0, color="0.9")
    a.set_xlabel("year (Q4 shaded)")
    a.legend(fontsize=8, loc="upper left")
    a.set_title("three stationary years, amplitude -0.15", fontsize=9)
    fig.suptitle("Seasonality of LP sales: the pensions' Q4 term")
    fig.tight_layout()
    return fig


@register("seasonality")
def run(out, *, quick: bool = False) -> ExperimentReport:
    """Sweep the pensions' Q4 amplitude on the stationary market (and on calm.toml); write the report."""
    t_start = time.perf_counter()
    if quick:
        amps, kw = QUICK_AMPLITUDES, dict(life=6.0, span=3, lead_out=2, n_L=81)
        calm_amps = ()
    else:
        amps, kw = AMPLITUDES, dict(life=12.0, span=6, lead_out=4, n_L=121)
        calm_amps = AMPLITUDES
    table, results = sweep(amps, **kw)
    fast, _ = sweep(FAST_AMPLITUDES[:1] if quick else FAST_AMPLITUDES,
                    market=f"stationary (life {kw['life']:g}), pension kappa {FAST_KAPPA:g}", pension_kappa=FAST_KAPPA,
                    **kw)
    if not quick:  # the same with funds of life 6: fewer sales, the regime where the seasonality shows
        kw6 = dict(life=6.0, span=3, lead_out=2, n_L=121)
        fast6, _ = sweep(FAST_AMPLITUDES, market=f"stationary (life 6), pension kappa {FAST_KAPPA:g}",
                         pension_kappa=FAST_KAPPA, **kw6)
        base6, _ = sweep((-0.15,), market="stationary (life 6), pension kappa 1", **kw6)
        fast = pd.concat([fast, base6, fast6], ignore_index=True)
    calm = pd.concat([fast, calm_sweep(calm_amps)], ignore_index=True) if calm_amps else fast
    res_on, yrs = results[-0.15]
    res_off, _ = results[0.0]
    diag_on = quarter_diagnostics(res_on, "pension", yrs).assign(amplitude=-0.15)
    diag_off = quarter_diagnostics(res_off, "pension", yrs).assign(amplitude=0.0)
    diag = pd.concat([diag_off, diag_on], ignore_index=True)
    on = table[table.amplitude == -0.15].iloc[0]
    off = table[table.amplitude == 0.0].iloc[0]
    hit = table[(table.h2_detrended >= 0.55) & (table.h2_detrended <= 0.65)]
    best = table.loc[table.h2_detrended.idxmax()]
    facts = {
        "h2_share_on": float(on.h2_share), "h2_share_off": float(off.h2_share),
        "h2_detrended_on": float(on.h2_detrended), "h2_detrended_off": float(off.h2_detrended),
        "q4_share_on": float(on.Q4), "q4_share_off": float(off.Q4), "q1_share_on": float(on.Q1),
        "trend_pct_per_year_on": float(on.trend_pct_per_year), "trend_pct_per_year_off": float(off.trend_pct_per_year),
        "turnover_pct_on": float(on.turnover_pct), "turnover_pct_off": float(off.turnover_pct),
        "amplitudes_in_public_band": [float(a) for a in hit.amplitude],
        "max_h2_detrended": float(best.h2_detrended), "max_h2_amplitude": float(best.amplitude),
        "h2_by_amplitude": {float(a): float(h) for a, h in zip(table.amplitude, table.h2_detrended)},
        "calm_h2_by_amplitude": {float(r.amplitude): float(r.h2_share) for r in calm.itertuples()
                                 if r.market.startswith("calm")},
        "variants": [{"market": r.market, "amplitude": float(r.amplitude), "h2_detrended": float(r.h2_detrended),
                      "Q4": float(r.Q4), "turnover_pct": float(r.turnover_pct)} for r in calm.itertuples()
                     if "kappa" in r.market],
        "pension_mass_below_by_quarter_on": [float(v) for v in diag_on.pension_mass_below],
        "pension_mass_below_by_quarter_off": [float(v) for v in diag_off.pension_mass_below],
        "pension_threshold_by_quarter_on": [float(v) for v in diag_on.pension_threshold],
        "pension_mean_L_by_quarter_on": [float(v) for v in diag_on.pension_mean_L],
        "pension_share_by_quarter_on": [float(v) for v in diag_on.pension_share],
        "years": yrs, "quick": quick, "populations": len(res_on.populations),
    }
    fig = _figure(table, calm, diag_on, diag_off, res_on, yrs)
    facts["seconds"] = time.perf_counter() - t_start

    def pct(v):
        return f"{100 * v:.1f}%"

    lines = [
        "# Seasonality: quarterly sales and the pensions' Q4 term", "",
        f"Stationary market: calm.toml's pensions and endowments in funds of life {kw['life']:g} years (variants: "
        f"life 6; pensions' kappa {FAST_KAPPA:g} with sigma scaled to keep their stationary variance) starting "
        f"every quarter ({len(res_on.populations)} populations), {kw['n_L']} liquidity nodes, dt = 1/24; "
        f"shares over the years {yrs[0]}-{yrs[1]}, on which every fund age is present alike. "
        "'detrended': each step's volume times exp(-g (t - mid-year)), g the annual volume trend.", "",
        "| market | Q4 amplitude | Q1 | Q2 | Q3 | Q4 | H2 share | H2 detrended | H2 range by year | turnover %/yr | "
        "trend %/yr |", "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in pd.concat([table, calm], ignore_index=True).iterrows():
        lines.append(f"| {r.market} | {r.amplitude:g} | {pct(r.Q1)} | {pct(r.Q2)} | {pct(r.Q3)} | {pct(r.Q4)} | "
                     f"{pct(r.h2_share)} | **{pct(r.h2_detrended)}** | {pct(r.h2_min_year)}-{pct(r.h2_max_year)} | "
                     f"{r.turnover_pct:.2f} | {r.trend_pct_per_year:+.2f} |")
    lines += ["", "Per quarter on the stationary market (pensions; amplitude 0 and -0.15):", "",
              "| amplitude | quarter | share of sales | pensions' share | pensions' mean L | pensions' threshold | "
              "pensions' mass below threshold | price |", "|---|---|---|---|---|---|---|---|"]
    for _, r in diag.iterrows():
        lines.append(f"| {r.amplitude:g} | {r.quarter} | {pct(r.share_of_sales)} | {pct(r.pension_share)} | "
                     f"{r.pension_mean_L:.3f} | {r.pension_threshold:.3f} | {pct(r.pension_mass_below)} | "
                     f"{r.price:.4f} |")
    lines += ["", "Public (docs/model.md 2.10): H2 share 55-65%. Swept amplitudes with the detrended stationary "
              "H2 share "
              f"in that band: {', '.join(f'{a:g}' for a in hit.amplitude) or 'none'}; the highest is "
              f"{pct(best.h2_detrended)} (amplitude {best.amplitude:g}).",
              f"Run time {facts['seconds']:.1f} s{' (quick)' if quick else ''}."]
    report = ExperimentReport("seasonality", "\n".join(lines) + "\n", facts,
                              {"shares": pd.concat([table, calm], ignore_index=True), "quarters": diag},
                              {"seasonality": fig})
    return write_report(report, Path(out))
