"""Recovery after the trough: the gap's path, the share closed in six months, the tail's half-life, non-linearity.

For a shock scenario the *gap* is ``g(t) = P_calm(t) − P(t)``: the equilibrium price against the
no-event equilibrium of the same market (segment 0 of :func:`mfg.lp_exit.scenarios.solve_scenario`),
so that the slow drift of the calm price (the window's end, the funds' ageing) is not read as
recovery.  From the trough ``t*`` (largest gap after the shock) on, ``x(τ) = g(t* + τ)/g(t*)``:

* ``closed_6m``, ``closed_12m``: ``1 − x`` at six and twelve months (docs/model.md 2.10: about 60%
  of the 2009 gap closed within six months);
* ``half_life_months``: first ``τ`` with ``x ≤ 1/2``;
* ``tail_half_life_months``: ``ln 2 / k`` of a log-linear fit of ``x`` from six months on (while
  ``x > 2%``) (docs/model.md 2.10: about seven months in 2009-10);
* non-linearity: least-squares fits of one exponential ``A e^{−kτ}`` (2 parameters) and two
  ``A₁ e^{−k₁τ} + A₂ e^{−k₂τ}`` (4) on ``x`` over the two years after the trough; the residual
  sums of squares, the F statistic of the nested pair with its p-value, and ΔAIC = AIC₂ − AIC₁
  (negative: two exponentials are better).  The path is deterministic, so the p-value is a
  goodness-of-fit contrast, not sampling uncertainty.

Scenarios: ``crisis_2008`` and ``covid_2020``, with the calm ``α`` and with ``α = 0``.
Tables ``recovery.csv`` (one row per scenario × α), ``recovery_paths.csv`` (tidy paths);
figure ``recovery.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit.scenarios import solve_scenario

from .amplification import _quiet, load, scale_alpha
from .common import ExperimentReport, register, write_report

__all__ = ["PUBLIC_2008", "fit_exponentials", "recovery_metrics", "run"]

#: Cogent average high bid, % of NAV / 100, at the middle of each half-year (docs/model.md 2.10).
PUBLIC_2008 = ((2008.25, 0.847), (2008.75, 0.61), (2009.25, 0.425), (2009.75, 0.72), (2010.25, 0.80),
               (2010.75, 0.84))

FIT_YEARS = 2.0


def _one(tau, A, k):
    return A * np.exp(-k * tau)


def _two(tau, A1, k1, A2, k2):
    return A1 * np.exp(-k1 * tau) + A2 * np.exp(-k2 * tau)


def fit_exponentials(tau, x) -> dict:
    """Fit one and two exponentials to ``x(τ)``; RSS, F test (nested 2 vs 4 parameters), ΔAIC, rates."""
    from scipy import stats
    from scipy.optimize import curve_fit

    tau = np.asarray(tau, dtype=float)
    x = np.asarray(x, dtype=float)
    n = tau.size
    k0 = max(1e-3, -np.polyfit(tau, np.log(np.maximum(x, 1e-6)), 1)[0])
    p1, _ = curve_fit(_one, tau, x, p0=(1.0, k0), maxfev=20000)
    rss1 = float(np.sum((x - _one(tau, *p1)) ** 2))
    best = None
    for fast in (4.0, 8.0, 16.0):  # a few starts: fast component first
        try:
            p2, _ = curve_fit(_two, tau, x, p0=(0.5, fast * k0, 0.5, 0.5 * k0), maxfev=20000,
                              bounds=([-2.0, 0.0, -2.0, 0.0], [3.0, 200.0, 3.0, 200.0]))
        except RuntimeError:
            continue
        rss = float(np.sum((x - _two(tau, *p2)) ** 2))
        if best is None or rss < best[1]:
            best = (p2, rss)
    if best is None:
        p2, rss2 = np.array([p1[0], p1[1], 0.0, p1[1]]), rss1
    else:
        p2, rss2 = best
    if p2[1] < p2[3]:  # order: component 1 is the fast one
        p2 = np.array([p2[2], p2[3], p2[0], p2[1]])
    rss2 = min(rss2, rss1)
    F = ((rss1 - rss2) / 2.0) / (rss2 / (n - 4)) if rss2 > 0 else math.inf
    pval = float(stats.f.sf(F, 2, n - 4)) if math.isfinite(F) else 0.0

    def aic(rss, p):
        return n * math.log(max(rss, 1e-300) / n) + 2 * p

    return {"n": n, "A": float(p1[0]), "k": float(p1[1]), "rss_one": rss1,
            "A1": float(p2[0]), "k1": float(p2[1]), "A2": float(p2[2]), "k2": float(p2[3]), "rss_two": rss2,
            "F": float(F), "p_value": pval, "delta_aic": aic(rss2, 4) - aic(rss1, 2),
            "rss_ratio": rss1 / rss2 if rss2 > 0 else math.inf}


def recovery_metrics(t, price, calm_price, shock_time: float) -> tuple[dict, pd.DataFrame]:
    """Metrics of the recovery of ``price`` towards ``calm_price`` after ``shock_time`` (see the module docstring)."""
    t = np.asarray(t, dtype=float)
    gap = np.asarray(calm_price, dtype=float) - np.asarray(price, dtype=float)
    dt = float(t[1] - t[0])
    after = np.flatnonzero(t >= shock_time - 1e-9 * dt)
    i_tr = int(after[np.argmax(gap[after])])
    g0 = float(gap[i_tr])
    tau = t[i_tr:] - t[i_tr]
    x = gap[i_tr:] / g0

    def at(months):
        j = int(np.searchsorted(tau, months / 12.0 - 1e-9))
        return float(1.0 - x[j]) if j < x.size else math.nan

    below = np.flatnonzero(x <= 0.5)
    half = float(12 * tau[below[0]]) if below.size else math.nan
    tail = (tau >= 0.5 - 1e-9) & (x > 0.02)
    if tail.sum() >= 3:
        k_tail = -np.polyfit(tau[tail], np.log(x[tail]), 1)[0]
        tail_half = float(12 * math.log(2) / k_tail) if k_tail > 0 else math.inf
    else:
        tail_half = math.nan
    win = tau <= FIT_YEARS + 1e-9
    fit = fit_exponentials(tau[win], x[win])
    out = {"shock_time": shock_time, "t_trough": float(t[i_tr]), "months_to_trough": float(12 * (t[i_tr] - shock_time)),
           "price_trough": float(price[i_tr]), "calm_price_at_trough": float(calm_price[i_tr]), "gap_trough": g0,
           "closed_6m": at(6), "closed_12m": at(12), "half_life_months": half, "tail_half_life_months": tail_half,
           "one_exp_half_life_months": 12 * math.log(2) / fit["k"] if fit["k"] > 0 else math.inf,
           "fast_half_life_months": 12 * math.log(2) / fit["k1"] if fit["k1"] > 0 else math.inf,
           "slow_half_life_months": 12 * math.log(2) / fit["k2"] if fit["k2"] > 0 else math.inf,
           **{f"fit_{k}": v for k, v in fit.items()}}
    frame = pd.DataFrame({"tau": tau[win], "x": x[win], "one_exp": _one(tau[win], fit["A"], fit["k"]),
                          "two_exp": _two(tau[win], fit["A1"], fit["k1"], fit["A2"], fit["k2"])})
    return out, frame


def _public_metrics() -> dict:
    t = np.array([p[0] for p in PUBLIC_2008])
    p = np.array([p[1] for p in PUBLIC_2008])
    pre, tr = p[0], p.min()
    i = int(np.argmin(p))
    return {"closed_6m": float((p[i + 1] - tr) / (pre - tr)), "closed_12m": float((p[i + 2] - tr) / (pre - tr)),
            "trough": float(tr), "t_trough": float(t[i])}


@register("recovery")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Recovery metrics of ``crisis_2008`` and ``covid_2020`` (calm α and α = 0); write to ``out/recovery/``."""
    t0 = time.perf_counter()
    rows, paths, fits = [], [], []
    for name in ("crisis_2008", "covid_2020"):
        sc = load(name, quick)
        tau = min(e.time for e in sc.events)
        for f in (1.0, 0.0):
            eq = _quiet(solve_scenario, scale_alpha(sc.model, f), sc.grid, sc.solver, sc.events)
            calm = eq.segments[0].price
            m, frame = recovery_metrics(eq.t, eq.price, calm, tau)
            rows.append({"scenario": name, "alpha_scale": f, "converged": bool(eq.converged), **m})
            paths.append(pd.DataFrame({"scenario": name, "alpha_scale": f, "t": eq.t, "price": eq.price,
                                       "calm_price": calm}))
            fits.append(frame.assign(scenario=name, alpha_scale=f))
    table = pd.DataFrame(rows)
    paths_df = pd.concat(paths, ignore_index=True)
    fits_df = pd.concat(fits, ignore_index=True)
    pub = _public_metrics()
    h = table[(table.scenario == "crisis_2008") & (table.alpha_scale == 1.0)].iloc[0]
    c = table[(table.scenario == "covid_2020") & (table.alpha_scale == 1.0)].iloc[0]
    facts = {
        "seconds": time.perf_counter() - t0, "quick": quick,
        "crisis_2008_closed_6m": float(h.closed_6m), "crisis_2008_closed_12m": float(h.closed_12m),
        "crisis_2008_half_life_months": float(h.half_life_months),
        "crisis_2008_tail_half_life_months": float(h.tail_half_life_months),
        "crisis_2008_rss_ratio": float(h.fit_rss_ratio), "crisis_2008_delta_aic": float(h.fit_delta_aic),
        "crisis_2008_p_value": float(h.fit_p_value),
        "covid_2020_closed_6m": float(c.closed_6m), "covid_2020_tail_half_life_months": float(c.tail_half_life_months),
        "two_exp_better_everywhere": bool((table.fit_delta_aic < 0).all()),
        "public_2008_closed_6m_from_cogent": pub["closed_6m"],
    }
    cols = ["scenario", "alpha_scale", "months_to_trough", "price_trough", "gap_trough", "closed_6m", "closed_12m",
            "half_life_months", "tail_half_life_months", "fast_half_life_months", "slow_half_life_months",
            "fit_rss_ratio", "fit_F", "fit_p_value", "fit_delta_aic"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table[cols].itertuples(index=False):
        cells = []
        for c_, v in zip(cols, r):
            cells.append(v if isinstance(v, str) else (f"{v:.3g}" if c_ in ("fit_p_value", "fit_F", "fit_rss_ratio")
                                                        else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    grid_txt = "quick grid (121 nodes, monthly steps)" if quick else "shipped grids (221 nodes, half-monthly steps)"
    summary = f"""# Recovery after the trough

Scenarios `crisis_2008`, `covid_2020` on the {grid_txt}; {facts['seconds']:.1f} s.  Gap = no-event
equilibrium price − scenario price; x = gap / gap at the trough.

**Headline (crisis_2008, calm α):** trough {h.months_to_trough:.1f} months after the shock at
P = {h.price_trough:.3f}; {100 * h.closed_6m:.0f}% of the gap closed after six months and
{100 * h.closed_12m:.0f}% after twelve (docs/model.md 2.10: about 60% in six months; the Cogent half-year
points give {100 * pub['closed_6m']:.0f}% from the H1 2009 trough to H2 2009); half-life of the gap
{h.half_life_months:.1f} months, of the tail (from six months on) {h.tail_half_life_months:.1f} months
(public: about 7).  Non-linear: two exponentials fit the first two years with a residual
{h.fit_rss_ratio:.3g} times smaller than one (ΔAIC {h.fit_delta_aic:.0f}, F = {h.fit_F:.3g},
p = {h.fit_p_value:.2g}; fast half-life {h.fast_half_life_months:.1f} months, slow
{h.slow_half_life_months:.1f}).  COVID: {100 * c.closed_6m:.0f}% closed in six months, tail half-life
{c.tail_half_life_months:.1f} months.  Two exponentials beat one (ΔAIC < 0) in every row:
{facts['two_exp_better_everywhere']}.

{chr(10).join(lines)}

Why two speeds: right after the trough the sell pressure Ŝ decays at its own memory τ_s = 0.25 y
and the panic sellers are gone (fast); the rest waits for buyer capital K to refill at θ_K = 1/yr
from a K̄ still depressed for 1.5 years (2008) and for the LPs' liquidity to mean-revert (slow).
"""
    fig = _figure(paths_df, fits_df, table)
    report = ExperimentReport("recovery", summary, facts,
                              tables={"recovery": table, "recovery_paths": paths_df, "recovery_fits": fits_df},
                              figures={"recovery": fig})
    return write_report(report, out)


def _figure(paths: pd.DataFrame, fits: pd.DataFrame, table: pd.DataFrame):
    from experiments.lp_exit_report import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), layout="constrained")
    for ax, name in zip(axes[:2], ("crisis_2008", "covid_2020")):
        for f, c in ((1.0, "tab:green"), (0.0, "tab:blue")):
            p = paths[(paths.scenario == name) & (paths.alpha_scale == f)]
            ax.plot(p.t, p.price, color=c, label=f"equilibrium, alpha x{f:g}")
        ax.plot(p.t, p.calm_price, color="grey", ls="--", label="no-event equilibrium")
        if name == "crisis_2008":
            ax.plot([q[0] for q in PUBLIC_2008], [q[1] for q in PUBLIC_2008], "ks", ms=5,
                    label="Cogent high bid (docs/model.md 2.10)")
        ax.set(title=f"{name}: price (fraction of NAV)", xlabel="year")
        ax.legend(fontsize=7)
    ax = axes[2]
    for name, c in (("crisis_2008", "tab:red"), ("covid_2020", "tab:purple")):
        q = fits[(fits.scenario == name) & (fits.alpha_scale == 1.0)]
        ax.plot(12 * q.tau, np.maximum(q.x, 1e-4), color=c, lw=2, label=f"{name}: gap / trough gap")
        ax.plot(12 * q.tau, np.maximum(q.one_exp, 1e-4), color=c, ls=":", label="one exponential")
        ax.plot(12 * q.tau, np.maximum(q.two_exp, 1e-4), color=c, ls="--", label="two exponentials")
    ax.axhline(0.4, color="grey", lw=0.6)
    ax.axvline(6, color="grey", lw=0.6)
    ax.set_yscale("log")
    ax.set(title="recovery of the gap (log scale); grey: 60% closed at 6 months", xlabel="months after the trough")
    ax.legend(fontsize=7)
    return fig
