"""Recovery after the trough: shape, share of the gap closed, half-lives (crisis_2008 and covid_2020).

The *gap* is ``g(t) = P_calm(t) − P(t) f(t)``: the no-event equilibrium's price (nothing stale
without a crisis) minus the scenario's price in units of reported NAV (docs/model.md 2.7), so the
calm seasonal swing is not read as recovery.  From the trough ``t*`` (largest gap after the LPs'
liquidity shock, Lehman in 2008) on, ``x(τ) = g(t* + τ)/g(t*)``:

* ``closed_6m``, ``closed_12m``: ``1 − x`` six and twelve months on (docs/model.md 2.10: about 60% of
  the 2009 gap closed within six months; the Cogent half-years give 70%);
* ``half_life``: first ``τ`` with ``x ≤ 1/2``; ``tail_half_life``: ``ln 2 / k`` of a log-linear fit
  of ``x`` from six months on while ``x > 2%`` (public: about seven months);
* shape: least-squares fits of one exponential (2 parameters) and two (4) over the two years
  after the trough; ΔAIC = AIC₂ − AIC₁ (negative: two speeds).  The path is deterministic: the
  fits measure misfit, not sampling error.

The full run repeats every number on the quick grid and states the difference beside it (the
discretisation error).  Tables ``recovery.csv``, ``recovery_paths.csv``; figure ``recovery.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .common import ExperimentReport, grid_text, load, pyplot, register, run_flag, solved, write_report

__all__ = ["fit_exponentials", "recovery_metrics", "run", "SCENARIOS"]

SCENARIOS = ("crisis_2008", "covid_2020")
FIT_YEARS = 2.0


def _one(tau, A, k):
    return A * np.exp(-k * tau)


def _two(tau, A1, k1, A2, k2):
    return A1 * np.exp(-k1 * tau) + A2 * np.exp(-k2 * tau)


def fit_exponentials(tau, x) -> dict:
    """One and two exponentials fitted to ``x(τ)``: rates, residual sums of squares, ΔAIC (two minus one)."""
    from scipy.optimize import curve_fit

    tau, x = np.asarray(tau, dtype=float), np.asarray(x, dtype=float)
    n = tau.size
    k0 = max(1e-3, -np.polyfit(tau, np.log(np.maximum(x, 1e-6)), 1)[0])
    p1, _ = curve_fit(_one, tau, x, p0=(1.0, k0), maxfev=20000)
    rss1 = float(np.sum((x - _one(tau, *p1)) ** 2))
    best = (np.array([p1[0], p1[1], 0.0, p1[1]]), rss1)
    for fast in (4.0, 8.0, 16.0):
        try:
            p2, _ = curve_fit(_two, tau, x, p0=(0.5, fast * k0, 0.5, 0.5 * k0), maxfev=20000,
                              bounds=([-2.0, 0.0, -2.0, 0.0], [3.0, 200.0, 3.0, 200.0]))
        except RuntimeError:
            continue
        rss = float(np.sum((x - _two(tau, *p2)) ** 2))
        if rss < best[1]:
            best = (p2, rss)
    p2, rss2 = best
    if p2[1] < p2[3]:
        p2 = np.array([p2[2], p2[3], p2[0], p2[1]])

    def aic(rss, p):
        return n * math.log(max(rss, 1e-300) / n) + 2 * p

    return {"A": float(p1[0]), "k": float(p1[1]), "rss_one": rss1, "A1": float(p2[0]), "k1": float(p2[1]),
            "A2": float(p2[2]), "k2": float(p2[3]), "rss_two": rss2, "delta_aic": aic(rss2, 4) - aic(rss1, 2)}


def recovery_metrics(t, reported, calm_price, shock: float) -> tuple[dict, pd.DataFrame]:
    """The measures of the module docstring for one path (prices as fractions of NAV)."""
    t = np.asarray(t, dtype=float)
    gap = np.asarray(calm_price, dtype=float) - np.asarray(reported, dtype=float)
    after = np.flatnonzero((t >= shock - 1e-9) & (np.arange(t.size) < t.size - 1))
    i = int(after[np.argmax(gap[after])])
    tau, x = t[i:-1] - t[i], gap[i:-1] / gap[i]

    def closed(months):
        j = int(np.searchsorted(tau, months / 12.0 - 1e-9))
        return float(1.0 - x[j]) if j < x.size else math.nan

    below = np.flatnonzero(x <= 0.5)
    tail = (tau >= 0.5 - 1e-9) & (x > 0.02)
    k_tail = -np.polyfit(tau[tail], np.log(x[tail]), 1)[0] if tail.sum() >= 3 else math.nan
    win = tau <= FIT_YEARS + 1e-9
    fit = fit_exponentials(tau[win], x[win])
    out = {"t_trough": float(t[i]), "months_to_trough": 12.0 * (t[i] - shock), "gap_trough": float(gap[i]),
           "closed_6m": closed(6), "closed_12m": closed(12),
           "half_life_months": float(12 * tau[below[0]]) if below.size else math.nan,
           "tail_half_life_months": 12 * math.log(2) / k_tail if k_tail > 0 else math.nan,
           "fast_half_life_months": 12 * math.log(2) / fit["k1"] if fit["k1"] > 0 else math.inf,
           "slow_half_life_months": 12 * math.log(2) / fit["k2"] if fit["k2"] > 0 else math.inf,
           "delta_aic": fit["delta_aic"], "rss_ratio": fit["rss_one"] / max(fit["rss_two"], 1e-300)}
    frame = pd.DataFrame({"tau": tau[win], "x": x[win], "one_exp": _one(tau[win], fit["A"], fit["k"]),
                          "two_exp": _two(tau[win], fit["A1"], fit["k1"], fit["A2"], fit["k2"])})
    return out, frame


def _measure(quick: bool):
    rows, paths, fits = [], [], []
    for name in SCENARIOS:
        sc = load(name, quick)
        calm, eq = solved(sc)
        rep = sc.reported(eq.t, eq.price)
        shock = min(e.time for e in sc.events if e.liquidity_shift != 0.0)
        m, frame = recovery_metrics(eq.t, rep, calm.price, shock)
        rows.append({"scenario": name, "converged": bool(eq.converged), "run": run_flag(eq.price), **m})
        paths.append(pd.DataFrame({"scenario": name, "t": eq.t, "reported_price": rep, "price": eq.price,
                                   "calm_price": calm.price}))
        fits.append(frame.assign(scenario=name))
    return pd.DataFrame(rows), pd.concat(paths, ignore_index=True), pd.concat(fits, ignore_index=True)


def _line(r, c) -> str:
    def e(col, fmt):
        v = getattr(r, col)
        return f"{v:{fmt}}" + ("" if c is None else f" (quick grid {getattr(c, col):{fmt}})")

    slow = (f"{r.slow_half_life_months:.1f} months" if r.slow_half_life_months < 10 * 12 * FIT_YEARS else
            "none: the second exponential is a level that does not decay within the two years")
    return (f"**{r.scenario}: trough {e('months_to_trough', '.1f')} months after the LPs' liquidity shock; "
            f"{e('closed_6m', '.0%')} of the gap closed in 6 months, {e('closed_12m', '.0%')} in 12; half-life "
            f"{e('half_life_months', '.1f')} months, tail half-life {e('tail_half_life_months', '.1f')} months; "
            f"two exponentials against one: ΔAIC {r.delta_aic:.0f} (fast half-life {r.fast_half_life_months:.1f} "
            f"months, slow {slow}).**")


@register("recovery")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Recovery measures of crisis_2008 and covid_2020 (module docstring)."""
    t0 = time.perf_counter()
    table, paths, fits = _measure(quick)
    coarse = None if quick else _measure(True)[0]
    lines = ["# Recovery after the trough", "", f"{grid_text(load('crisis_2008', quick))}; gap = no-event price − "
             "price in % of reported NAV; public (docs/model.md 2.10): about 60% in six months, tail half-life "
             "about 7 months (Cogent half-years: 70%).", ""]
    for i, r in enumerate(table.itertuples()):
        lines.append(_line(r, None if coarse is None else list(coarse.itertuples())[i]))
        if r.run:
            lines.append(r.run)
    if quick:
        lines.append("Quick grid: the discretisation error is stated in the full run.")
    summary = "\n".join(lines) + "\n"
    keys = ("closed_6m", "closed_12m", "half_life_months", "tail_half_life_months", "delta_aic")
    facts = {r.scenario: {k: getattr(r, k) for k in keys} for r in table.itertuples()}
    facts.update({"quick": quick, "seconds": time.perf_counter() - t0})
    report = ExperimentReport("recovery", summary, facts, {"recovery": table, "recovery_paths": paths,
                                                           "recovery_fits": fits}, {"recovery": _figure(paths, fits)})
    return write_report(report, out)


def _figure(paths: pd.DataFrame, fits: pd.DataFrame):
    from .calibration import COVID, PRICES

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
    for ax, name, data, span in ((axes[0], "crisis_2008", PRICES, (2007.5, 2012)),
                                 (axes[1], "covid_2020", COVID, (2019, 2022.5))):
        p = paths[(paths.scenario == name) & (paths.t >= span[0]) & (paths.t <= span[1])]
        ax.plot(p.t, 100 * p.reported_price, label="equilibrium, % of reported NAV")
        ax.plot(p.t, 100 * p.calm_price, color="grey", ls="--", label="no-event equilibrium")
        ax.plot([a + 0.25 for _, a, _ in data], [d for _, _, d in data], "ks", ms=5, label="public half-year means")
        ax.set(title=name, xlabel="year", ylabel="price, % of NAV")
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    for name, c in zip(SCENARIOS, ("tab:red", "tab:purple")):
        q = fits[fits.scenario == name]
        ax.plot(12 * q.tau, np.maximum(q.x, 1e-4), color=c, lw=2, label=f"{name}: gap / trough gap")
        ax.plot(12 * q.tau, np.maximum(q.one_exp, 1e-4), color=c, ls=":", label="one exponential")
        ax.plot(12 * q.tau, np.maximum(q.two_exp, 1e-4), color=c, ls="--", label="two exponentials")
    ax.axhline(0.4, color="grey", lw=0.6)
    ax.axvline(6, color="grey", lw=0.6)
    ax.set_yscale("log")
    ax.set(xlabel="months after the trough", ylabel="gap / gap at the trough (log scale)",
           title="shape of the recovery (grey: 60% closed at 6 months)")
    ax.legend(fontsize=7, loc="lower left")
    return fig
