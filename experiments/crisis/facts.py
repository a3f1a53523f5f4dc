"""The facts of docs/model.md 2.11 as printed checks, computed from the shipped scenarios.

One row per fact, written to ``facts.csv`` with the columns ``fact, value, target, passed,
set_by`` (``set_by``: the parameters fitted or hand-set for the fact, or ``mechanism`` when no
parameter was tuned for it) and printed as a table with the failures marked.  How each value
is computed (docs/model.md 2.11 defines the checks; docs/crisis.md says why a failed row fails and
what in the model would have to change):

* **GFC price path**: the equilibrium of ``crisis_2008`` in units of reported NAV (``P f``,
  docs/model.md 2.7), half-year means H1 2008 … H2 2010 against the Cogent figures of 2.10;
  RMSE ≤ 4 points and no quarterly mean below 35.
* **GFC volume**: value traded (what buyers paid) in H1 2009 over H1 2008 ≤ 0.75.
* **withdrawn supply**: over H1 2009, the solver's ``withdrawn`` ``W = S(P̄(t)) − S(P)`` (NAV a
  year, docs/model.md 2.4: against the period's calm price, which the events' ``pbar_factor``
  moves) against the volume that traded, between 0.3 and 1.5, and positive at the trough step
  (the lowest price of H1 2009); the same against the pre-crisis calm price ``market.pbar`` is
  shown beside it (not the check).
* **recovery**: the gap of :mod:`experiments.crisis.recovery` (no-event price minus the price in
  units of reported NAV), its largest value after Lehman; the share closed six months later (45-75%).
* **COVID**: ``covid_2020`` (predicted from the 2008 fit, never fitted), reported half-year means
  of H1 2020 (80 ± 5) and H1 2021 (90 ± 5).
* **calm rows**: ``calm.toml`` over its report window (calm discount at every step 5-15%;
  turnover every year 1-2.5% of active NAV with max/min ≤ 1.5; second-half share every year
  55-65%).
* **LP types**: ``crisis_2008``: pensions' share of NAV sold in H1 2009 ≤ 10% and in 2010 within
  25-55%; sovereigns sell in the calm years (report window of calm.toml) and their sales in
  2009 are below their sales in the same year of the no-event path.
* **sanity**: every shipped scenario's equilibrium stays at or above 0.2 (a lower price would be
  reported as a run).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.lp_exit_report import annual_volume

from . import library
from .calibration import COVID, PRICES
from .common import ExperimentReport, grid_text, load, means, register, solved, window_mean, window_sum, write_report

__all__ = ["run", "facts_table", "supply_at", "format_table", "FIT_NAMES"]

FIT_NAMES = ", ".join(library.FIT_2008)
_FITTED = f"fitted (gelav crisis calibration): {FIT_NAMES}; hand-set: the stale-NAV markdown (public S&P 500 and NAV " \
          "write-down figures)"
_CALM = "calm.toml"


def supply_at(result, n: int, P: float) -> float:
    """``S^n(P)`` of docs/model.md 2.4 (NAV a year) from a result's continuation values and density."""
    from scipy.special import expit

    from mfg.lp_exit.discretisation import discretise

    disc = discretise(result.model, result.grid)
    eps = float(result.options.temperature)
    s = 0.0
    for k in range(disc.n_pop):
        if not (disc.n_first[k] <= n < disc.n_last[k]):
            continue
        m = result.density[k, n] * result.dL
        z = (P * disc.life_factor[k, n] * disc.dfac[k] - disc.phi[k] - result.continuation[k, n]) / eps
        s += disc.weights[k] * disc.q_max[k, n] / disc.dt * float(np.dot(m, expit(z)))
    return s


def _gfc_rows(sc, eq, calm) -> list[dict]:
    t = eq.t
    rep = 100.0 * sc.reported(t, eq.price)
    halves = np.array([window_mean(t, rep, a, a + 0.5) for _, a, _ in PRICES])
    data = np.array([p for _, _, p in PRICES])
    rmse = float(np.sqrt(np.mean((halves - data) ** 2)))
    q = means(t, rep, 2008.0, 2011.0, 0.25)
    qmin = min(v for _, v in q)
    ratio = window_sum(t, eq.spend, 2009.0, 2009.5) / window_sum(t, eq.spend, 2008.0, 2008.5)
    nav_ratio = window_sum(t, eq.sell_flow, 2009.0, 2009.5) / window_sum(t, eq.sell_flow, 2008.0, 2008.5)
    steps = np.flatnonzero((t >= 2009.0 - 1e-9) & (t < 2009.5 - 1e-9))
    pbar0 = float(eq.model.market.pbar)
    w0 = np.array([max(supply_at(eq, int(n), pbar0) - eq.sell_flow[n], 0.0) if eq.price[n] < pbar0 else 0.0
                   for n in steps])
    vol = float(np.sum(eq.sell_flow[steps]))
    n_tr = steps[int(np.argmin(eq.price[steps]))]
    w_calm = float(w0.sum()) / vol
    w_ratio = float(np.sum(eq.withdrawn[steps])) / vol
    w_trough = float(eq.withdrawn[n_tr])
    return [
        {"fact": "GFC price path", "value": f"RMSE {rmse:.2f} points (model {', '.join(f'{h:.1f}' for h in halves)}); "
                                             f"lowest quarter {qmin:.1f}",
         "target": "RMSE <= 4 over H1 2008..H2 2010 (84.7, 61, 42.5, 72, 80, 84); no quarter below 35",
         "passed": bool(rmse <= 4.0 and qmin >= 35.0), "set_by": _FITTED},
        {"fact": "GFC volume", "value": f"H1 2009 / H1 2008 value traded {ratio:.2f} (NAV sold {nav_ratio:.2f})",
         "target": "<= 0.75", "passed": bool(ratio <= 0.75),
         "set_by": f"fitted: the calibration's volume target (0.61) with {FIT_NAMES}"},
        {"fact": "withdrawn supply", "value": f"H1 2009: W / volume {w_ratio:.2f} (W against the period's P̄(t), "
                                              f"docs/model.md 2.4), W at the trough step {w_trough:.2g}; against the "
                                              f"pre-crisis calm price {pbar0:g} instead: {w_calm:.2f}",
         "target": "W > 0 at the trough; W / volume in [0.3, 1.5]",
         "passed": bool(0.3 <= w_ratio <= 1.5 and w_trough > 0), "set_by": "mechanism"},
        _recovery_row(sc, eq, calm),
    ]


def _recovery_row(sc, eq, calm) -> dict:
    from .recovery import recovery_metrics

    shock = min(e.time for e in sc.events if e.liquidity_shift != 0.0)
    m, _ = recovery_metrics(eq.t, sc.reported(eq.t, eq.price), calm.price, shock)
    closed = m["closed_6m"]
    return {"fact": "recovery", "value": f"{100 * closed:.0f}% of the gap closed six months after the trough "
                                         f"({m['t_trough']:.3f}: gap {100 * m['gap_trough']:.1f} points; "
                                         f"gelav crisis recovery)",
            "target": "45-75% of the gap closed six months after the trough", "passed": bool(0.45 <= closed <= 0.75),
            "set_by": f"fit of the price path (H1 and H2 2009 are targets): {FIT_NAMES}"}


def _covid_row(quick: bool) -> dict:
    sc = load("covid_2020", quick)
    _, eq = solved(sc)
    rep = 100.0 * sc.reported(eq.t, eq.price)
    got = {label: window_mean(eq.t, rep, a, a + 0.5) for label, a, _ in COVID}
    ok = abs(got["H1 2020"] - 80.0) <= 5.0 and abs(got["H1 2021"] - 90.0) <= 5.0
    return {"fact": "COVID, held out of every fit",
            "value": ", ".join(f"{k} {v:.1f}" for k, v in got.items()),
            "target": "H1 2020 within 5 of 80; H1 2021 within 5 of 90", "passed": bool(ok),
            "set_by": "prediction: the 2008 fit moved by public S&P 500 figures (no COVID figure used); hand-set: "
                      "markdown (S&P 500, 2008 NAV pass-through)"}


def _calm_rows(quick: bool) -> list[dict]:
    sc = load("calm", quick)
    calm = solved(sc)[0]
    r0, r1 = sc.report_window
    t = calm.t
    inside = (t >= r0 - 1e-9) & (t < r1 - 1e-9)
    disc = 100.0 * (1.0 - calm.price[inside])
    years = annual_volume(calm, (r0, r1))
    years = years[years.full]
    turn, h2 = years.pct_active.to_numpy(), 100.0 * years.second_half.to_numpy()
    return [
        {"fact": "calm discount", "value": f"{disc.min():.1f}% to {disc.max():.1f}% (mean {disc.mean():.1f}%)",
         "target": "5-15% at every step of the report window", "passed": bool(disc.min() >= 5 and disc.max() <= 15),
         "set_by": f"{_CALM}: ell (all types), pbar"},
        {"fact": "calm turnover", "value": f"{turn.min():.2f} to {turn.max():.2f}% a year, max/min "
                                           f"{turn.max() / turn.min():.3f}",
         "target": "1-2.5% of NAV every year; max/min <= 1.5",
         "passed": bool(turn.min() >= 1 and turn.max() <= 2.5 and turn.max() / turn.min() <= 1.5),
         "set_by": f"{_CALM}: Kbar (level); mechanism: no drift (the vintage ladder)"},
        {"fact": "seasonality (calm)", "value": f"second-half share {h2.min():.1f}% to {h2.max():.1f}%",
         "target": "55-65% every year", "passed": bool(h2.min() >= 55 and h2.max() <= 65),
         "set_by": f"{_CALM}: a_max_factor 8 in Q3-Q4, gamma 4"},
    ]


def _type_volume(res, lp_type: str, a: float, b: float) -> float:
    ks = [k for k, p in enumerate(res.model.populations) if p.lp_type == lp_type]
    return window_sum(res.t, np.asarray(res.flow)[ks].sum(axis=0), a, b)


def _types_row(sc, eq, calm, quick: bool) -> dict:
    def share(res, ty, a, b):
        tot = sum(_type_volume(res, x, a, b) for x in ("pension", "endowment", "sovereign"))
        return _type_volume(res, ty, a, b) / tot

    p_tr, p_10 = share(eq, "pension", 2009.0, 2009.5), share(eq, "pension", 2010.0, 2011.0)
    sov_crisis, sov_calm = _type_volume(eq, "sovereign", 2009.0, 2010.0), _type_volume(calm, "sovereign", 2009.0,
                                                                                        2010.0)
    cs = load("calm", quick)
    c = solved(cs)[0]
    r0, r1 = cs.report_window
    sov_years = [_type_volume(c, "sovereign", y, y + 1.0) for y in range(int(r0), int(r1))]
    ok = p_tr <= 0.10 and 0.25 <= p_10 <= 0.55 and min(sov_years) > 0 and sov_crisis < sov_calm
    return {"fact": "LP types",
            "value": f"pensions {100 * p_tr:.1f}% of NAV sold in H1 2009, {100 * p_10:.1f}% in 2010; sovereigns sell "
                     f"{100 * min(sov_years):.3f}% or more of market NAV every calm year; 2009: {100 * sov_crisis:.3f}%"
                     f" against {100 * sov_calm:.3f}% without the crisis",
            "target": "pensions <= 10% at the trough, 25-55% in 2010; sovereigns sell in calm years, less in the "
                      "crisis than in calm", "passed": bool(ok),
            "set_by": "hand-set: the type ratios of the liquidity shifts (0.35, 0.12); calm.toml: the ell split "
                      "(pensions' calm share)"}


def _sanity_row(quick: bool) -> dict:
    lows = {}
    for name in ("calm", "crisis_2008", "covid_2020", "rates_2022", "lp_types", "vintages", "shock_demo"):
        sc = load(name, quick)
        eq = solved(sc)[1]
        lows[name] = float(np.min(eq.price[:-1]))
    worst = min(lows, key=lows.get)
    return {"fact": "sanity", "value": f"lowest equilibrium price {lows[worst]:.3f} ({worst}); runs reported by the "
                                       "experiments: see their summaries",
            "target": "no shipped price below 0.2 unless reported as a run", "passed": bool(lows[worst] >= 0.2),
            "set_by": "mechanism"}


def facts_table(quick: bool = False) -> pd.DataFrame:
    """Every row of docs/model.md 2.11 (see the module docstring)."""
    sc = load("crisis_2008", quick)
    calm, eq = solved(sc)
    rows = _gfc_rows(sc, eq, calm)
    rows.insert(4, _covid_row(quick))
    rows += _calm_rows(quick)
    rows.append(_types_row(sc, eq, calm, quick))
    rows.append(_sanity_row(quick))
    return pd.DataFrame(rows, columns=["fact", "value", "target", "passed", "set_by"])


def format_table(table: pd.DataFrame) -> str:
    """The console table: one line per fact, failures marked ``FAILED``."""
    lines = [f"{'fact':<30} {'':<6} value  [target]"]
    for r in table.itertuples():
        mark = "ok" if r.passed else "FAILED"
        lines.append(f"{r.fact:<30} {mark:<6} {r.value}  [{r.target}]")
        lines.append(f"{'':<37}set by: {r.set_by}")
    n = int(table.passed.sum())
    lines.append(f"{n} of {len(table)} facts pass" + ("" if n == len(table) else
                 f"; failed: {', '.join(table.fact[~table.passed])} (docs/crisis.md says what would have to change)"))
    return "\n".join(lines)


@register("facts")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Compute every fact of docs/model.md 2.11; write ``facts.csv`` and the summary to ``out/facts/``."""
    t0 = time.perf_counter()
    table = facts_table(quick)
    grid = grid_text(load("crisis_2008", quick))
    text = format_table(table)
    where = "the quick grid" if quick else "their grids"
    summary = (f"# The facts of docs/model.md 2.11\n\nShipped scenarios on {where}"
               f" ({grid}); {time.perf_counter() - t0:.1f} s.\n\n**{int(table.passed.sum())} of {len(table)} facts "
               f"pass.**\n\n```\n{text}\n```\n")
    facts = {"passed": int(table.passed.sum()), "rows": len(table), "table": text, "quick": quick,
             "failed": list(table.fact[~table.passed]), "seconds": time.perf_counter() - t0}
    return write_report(ExperimentReport("facts", summary, facts, tables={"facts": table}), out)
