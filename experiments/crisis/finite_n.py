"""Finite-N check: each crisis equilibrium replayed in a market of N = 10⁵ LPs (docs/model.md 2.8).

For each crisis scenario (``crisis_2008``, ``covid_2020``, ``rates_2022``; ``shock_demo`` if
none is shipped) the MFG scenario equilibrium (:func:`mfg.lp_exit.scenarios.solve_scenario`) is
the policy of every LP in :func:`abm.lp_market.engine.simulate` (same grid step, same events), with the
solver's own two-point transition (``transition="two-point"``, docs/abm.md) so that the only
difference left is the finite number of LPs.  ``R`` independent markets give the mean path
and its standard error; per step ``z = (mean_N − MFG) / SE``.

**Verdict** "within error bars": for the price and the mean liquidity, every step's ``|z|``
stays below the Bonferroni bound of a family-wise 5% two-sided test over all the steps of
both series (Student's t with ``R − 1`` degrees of freedom).  The rms of ``z`` (about 1 when
the MFG is the N-market's mean) is reported beside it.  In the full run the exact Gaussian
OU step is also run, and its gap to the two-point market is reported (an ``O(dt)`` bias of
the solver's step, docs/abm.md).

What this check is, and what it is not: it shows that the MFG's path is what N LPs who
follow the MFG policy produce (a law of large numbers; with the logit temperature ε > 0 the
policy is continuous in the path, and each LP moves the price by ``O(1/N)``, so the MFG
policy is then an approximate Nash equilibrium of the N-player game).  It does not show that
the equilibria of the N-player game converge to this one: a mean-field equilibrium of a
stopping game need not be the limit of finite-N equilibria (there may be several mean-field
equilibria, and at ε = 0 pure equilibria may fail to exist, docs/lp_exit.md).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from abm.lp_market.engine import simulate
from mfg.lp_exit.params import load_scenario
from mfg.lp_exit.scenarios import solve_scenario

from .common import SCENARIO_DIR, ExperimentReport, register, write_report

__all__ = ["run", "check_scenario", "CRISES", "within_error_bars"]

CRISES = ("crisis_2008", "covid_2020", "rates_2022")
SERIES = ("price", "mean_liquidity")


def within_error_bars(z: np.ndarray, n_reps: int, level: float = 0.05) -> tuple[bool, float]:
    """``(passed, bound)``: every finite ``|z|`` below the Bonferroni bound of a two-sided test
    at family-wise ``level`` over the ``z`` given (Student's t, ``n_reps − 1`` dof)."""
    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    bound = float(stats.t.ppf(1.0 - level / (2.0 * max(z.size, 1)), max(n_reps - 1, 1)))
    return bool(np.all(np.abs(z) <= bound)), bound


def _z(sim, res, name):
    mean, se = sim.mean_se(name)
    ref = np.asarray(getattr(res, name), dtype=float)
    ok = np.isfinite(mean) & np.isfinite(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(ok & (se > 0), (mean - ref) / se, np.where(ok & (np.abs(mean - ref) < 1e-12), 0.0, np.nan))
    return mean, se, ref, z


def check_scenario(sc, *, n_agents: int, n_reps: int, seed: int = 2026, exact: bool = False) -> dict:
    """MFG scenario equilibrium against ``n_reps`` finite markets of ``n_agents`` LPs (two-point step)."""
    t0 = time.perf_counter()
    res = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    t_mfg = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim = simulate(sc.model, res, n_agents=n_agents, n_reps=n_reps, seed=seed, transition="two-point")
    t_sim = time.perf_counter() - t1
    out = {"res": res, "sim": sim, "seconds_mfg": t_mfg, "seconds_sim": t_sim, "series": {}}
    zs = []
    for name in SERIES:
        mean, se, ref, z = _z(sim, res, name)
        out["series"][name] = (mean, se, ref, z)
        zs.append(z)
    allz = np.concatenate(zs)
    passed, bound = within_error_bars(allz, n_reps)
    out["passed"], out["bound"] = passed, bound
    fz = allz[np.isfinite(allz)]
    out["rms_z"] = float(np.sqrt(np.mean(fz ** 2))) if fz.size else math.nan
    out["max_abs_z"] = float(np.max(np.abs(fz))) if fz.size else math.nan
    pm, _, pr, pz = out["series"]["price"]
    out["max_price_gap"] = float(np.nanmax(np.abs(pm - pr)))
    out["trough_mfg"] = float(np.min(pr))
    out["trough_N"] = float(np.min(pm))
    out["worst_t"] = float(res.t[int(np.nanargmax(np.abs(pz)))])
    if exact:
        sim_x = simulate(sc.model, res, n_agents=n_agents, n_reps=n_reps, seed=seed + 1, transition="exact")
        xm, xse = sim_x.mean_se("price")
        out["exact_minus_two_point_price_mean"] = float(np.mean(xm - pm))
        out["exact_minus_two_point_trough"] = float(np.min(xm) - np.min(pm))
        out["exact_price"] = xm
        se_pair = np.sqrt(xse ** 2 + out["series"]["price"][1] ** 2)
        out["exact_gap_se"] = float(np.sqrt(np.mean(se_pair ** 2)) / math.sqrt(len(se_pair)))
    return out


def _figure(checks: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(checks)
    fig, ax = plt.subplots(2, n, figsize=(4.2 * n, 6.5), squeeze=False)
    for j, (name, c) in enumerate(checks.items()):
        t = c["res"].t
        mean, se, ref, z = c["series"]["price"]
        a = ax[0, j]
        a.plot(t, ref, "k", lw=1, label="MFG")
        a.fill_between(t, mean - 2 * se, mean + 2 * se, color="tab:blue", alpha=0.35, label="N-market ± 2 SE")
        if "exact_price" in c:
            a.plot(t, c["exact_price"], color="tab:orange", lw=0.8, label="N-market, exact OU step")
        a.set_title(f"{name}: {'within' if c['passed'] else 'NOT within'} error bars", fontsize=9)
        a.set_ylabel("price (fraction of NAV)")
        a.legend(fontsize=7)
        a = ax[1, j]
        a.plot(t, z, lw=0.7, label="price")
        a.plot(t, c["series"]["mean_liquidity"][3], lw=0.7, label="mean liquidity")
        a.axhline(c["bound"], color="r", lw=0.6)
        a.axhline(-c["bound"], color="r", lw=0.6)
        a.set_ylabel("z = (N-market mean − MFG) / SE")
        a.set_xlabel("year")
        a.legend(fontsize=7)
    fig.suptitle("Finite-N check: MFG crisis equilibria replayed by N LPs (two-point step)")
    fig.tight_layout()
    return fig


@register("finite_n")
def run(out, *, quick: bool = False) -> ExperimentReport:
    """Replay each crisis equilibrium with N = 10⁵ LPs; write the report."""
    t_start = time.perf_counter()
    names = [n for n in CRISES if (SCENARIO_DIR / f"{n}.toml").is_file()] or ["shock_demo"]
    n_agents = 100_000
    n_reps = 8 if quick else 16
    checks, rows = {}, []
    for name in names:
        sc0 = load_scenario(SCENARIO_DIR / f"{name}.toml")
        grids = [("shipped", sc0)]
        if not quick:  # the P1 projection of the solver is an O(dL) bias: refine L 4x and halve dt
            g = sc0.grid.model_copy(update={"n_L": 4 * (sc0.grid.n_L - 1) + 1, "dt": sc0.grid.dt / 2})
            grids.append(("refined", sc0.model_copy(update={"grid": g})))
        for gname, sc in grids:
            c = check_scenario(sc, n_agents=n_agents, n_reps=n_reps, exact=(gname == "refined"))
            key = name if gname == "shipped" else f"{name} (refined)"
            checks[key] = c
            row = {"scenario": name, "grid": f"{gname}: {sc.grid.n_L} x 1/{round(1 / sc.grid.dt)}",
                   "n_agents": n_agents, "n_reps": n_reps, "steps": int(c["res"].t.size),
                   "within_error_bars": c["passed"], "bound": c["bound"], "max_abs_z": c["max_abs_z"],
                   "rms_z": c["rms_z"], "max_price_gap": c["max_price_gap"], "worst_t": c["worst_t"],
                   "trough_mfg": c["trough_mfg"], "trough_N": c["trough_N"],
                   "price_se_mean": float(np.nanmean(c["series"]["price"][1])),
                   "seconds_mfg": c["seconds_mfg"], "seconds_sim": c["seconds_sim"]}
            if "exact_minus_two_point_price_mean" in c:
                row["exact_minus_two_point_price_mean"] = c["exact_minus_two_point_price_mean"]
                row["exact_minus_two_point_trough"] = c["exact_minus_two_point_trough"]
            rows.append(row)
    table = pd.DataFrame(rows)
    paths = []
    for name, c in checks.items():
        d = {"scenario": name, "t": c["res"].t}
        for s in SERIES:
            mean, se, ref, z = c["series"][s]
            d.update({f"{s}_mfg": ref, f"{s}_N": mean, f"{s}_se": se, f"{s}_z": z})
        paths.append(pd.DataFrame(d))
    fig = _figure(checks)
    facts = {"checks": {k: {a: (v.item() if hasattr(v, "item") else v) for a, v in r.items()}
                        for k, r in zip(checks, rows)},
             "all_within": bool(table.within_error_bars.all()), "quick": quick,
             "seconds": time.perf_counter() - t_start}
    lines = ["# Finite-N check: crisis equilibria replayed by N LPs", "",
             f"N = {n_agents:,} LPs, R = {n_reps} independent markets, the MFG scenario result as every LP's policy "
             "(events included), two-point transition (the solver's step). z = (mean of the R markets − MFG)/SE per "
             "step; 'within error bars': every |z| of price and mean liquidity below the Bonferroni bound "
             "(family-wise 5%, Student t with R − 1 dof).", "",
             "| scenario | grid (n_L x dt) | steps | within error bars | max abs z (bound) | rms z | max price gap | "
             "worst at t | "
             "MFG trough | N-market trough | mean price SE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['grid']} | {r['steps']} | "
                     f"{'yes' if r['within_error_bars'] else '**no**'} | "
                     f"{r['max_abs_z']:.2f} ({r['bound']:.2f}) | {r['rms_z']:.2f} | {r['max_price_gap']:.2e} | "
                     f"{r['worst_t']:.3f} | {r['trough_mfg']:.4f} | {r['trough_N']:.4f} | {r['price_se_mean']:.1e} |")
    if not quick:
        lines += ["", "Exact Gaussian OU step minus two-point step (same N, R, refined grid; the solver's O(dt) bias):",
                  "", "| scenario | time-mean price gap | trough gap |", "|---|---|---|"]
        for r in rows:
            if "exact_minus_two_point_price_mean" not in r:
                continue
            lines.append(f"| {r['scenario']} | {r['exact_minus_two_point_price_mean']:+.2e} | "
                         f"{r['exact_minus_two_point_trough']:+.2e} |")
    lines += ["", "This is a law-of-large-numbers check of the MFG policy in the N-player market (with ε > 0 the "
              "policy is then an approximate Nash equilibrium of the N-player game); it does not show that "
              "N-player equilibria converge to this mean-field equilibrium, which need not hold for stopping "
              "games (several equilibria; no pure equilibrium at ε = 0).",
              f"Run time {facts['seconds']:.1f} s{' (quick)' if quick else ''}."]
    report = ExperimentReport("finite_n", "\n".join(lines) + "\n", facts,
                              {"checks": table, "paths": pd.concat(paths, ignore_index=True)}, {"finite_n": fig})
    return write_report(report, Path(out))
