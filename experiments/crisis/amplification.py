"""Amplification against the right baselines: multiplier, convexity in depth and breadth, spiral sign.

On the 2008 shock (``crisis_2008``: its fitted events) the four paths of docs/model.md 2.7
(:mod:`mfg.lp_exit.baselines`: DCF, first round, myopic, equilibrium) and three measures, each
with the channel it isolates:

* **multiplier** = trough discount of the equilibrium / of the first round.  Both clear the
  same market from the same post-shock state; the first round keeps every LP's pre-shock
  reservation values, so the multiplier measures *anticipation*: LPs who foresee the
  depleted buyer capital and the path of prices revise their reservation values (pre-emption
  raises them into selling now, hold-out lowers them).  Channel: capital depletion and
  pre-emption.  Reported with the calm α, λ and with α = λ = 0.
* **convexity** of the trough discount in the shock's **depth** (every part of the shock
  scaled by ``s``: liquidity shifts and the capital cut times ``s``, factors to the power
  ``s``; ``s`` = 0, 1/4, 1/2, 3/4, 1) and **breadth** (the share ``b`` of every population
  whose liquidity is shifted: each population split into a hit and an unhit copy of weights
  ``b w`` and ``(1 - b) w``; ``b`` = 0, 1/2, 1), with the calm α, λ and with α = λ = 0
  (channel: mark-to-market α and herding λ).  Index ``(d(1) - 2 d(1/2) + d(0)) / (d(1) - d(0))``:
  0 linear, > 0 convex ("disproportionate"), < 0 concave.
* **spiral sign**: at breadth 1/2, the exit hazard (NAV sold per unit of their active NAV, per
  year) of the LPs who were *not* shocked, minus the same LPs' hazard on the no-event path,
  over the year after the Lehman shock: > 0 they sell more (a spiral), < 0 they hold out.
  Channels: with calm α, λ; α alone; λ alone; α = λ = 0 (price and buyer capital only).

The trough discount is ``1 - P/P_calm`` (true NAV, against the no-event equilibrium at the same
date, so the calm seasonal swing cancels), largest over 2008.0 to 2011.0.  The stale-NAV
markdown multiplies every path alike and is left out of these ratios.  Tables
``paths.csv``, ``measures.csv``, ``depth.csv``, ``breadth.csv``, ``spiral.csv``; figure
``amplification.png``.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mfg.lp_exit import ConvergenceWarning
from mfg.lp_exit.baselines import baseline_paths, trough

from .common import ExperimentReport, load, register, run_flag, solved, write_report

__all__ = ["run", "scaled_events", "split_model", "VARIANTS", "DEPTHS", "convexity", "hazard_change"]

#: (label, alpha factor, lambda factor) of the channel variants.
VARIANTS = (("calm α, λ", 1.0, 1.0), ("α only", 1.0, 0.0), ("λ only", 0.0, 1.0), ("α = λ = 0", 0.0, 0.0))
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
BREADTHS = (0.0, 0.5, 1.0)
WINDOW = (2008.0, 2011.0)
LEHMAN = 2008.75


def _variant(sc, fa: float, fl: float):
    pops = tuple(p.model_copy(update={"alpha": p.alpha * fa, "lam": p.lam * fl}) for p in sc.model.populations)
    return sc.model_copy(update={"model": sc.model.model_copy(update={"populations": pops})})


def scaled_events(events, s: float):
    """Every part of every event at depth ``s``: shifts and cuts times ``s``, factors to the power ``s``."""
    out = []
    for e in events:
        out.append(e.model_copy(update={"liquidity_shift": e.liquidity_shift * s, "capital_cut": e.capital_cut * s,
                                        "Kbar_factor": e.Kbar_factor ** s, "pbar_factor": e.pbar_factor ** s,
                                        "sigma_factor": e.sigma_factor ** s}))
    return tuple(out)


def split_model(sc, share: float):
    """Every population split into ``name`` (weight ``share w``: hit by the events' liquidity shifts) and
    ``name~unhit`` (weight ``(1 - share) w``: not hit); the events point at the hit copies."""
    pops = []
    for p in sc.model.populations:
        pops.append(p.model_copy(update={"weight": p.weight * share}))
        pops.append(p.model_copy(update={"name": f"{p.name}~unhit", "weight": p.weight * (1.0 - share)}))
    model = sc.model.model_copy(update={"populations": tuple(pops)})
    return sc.model_copy(update={"model": model})


def convexity(d0: float, dh: float, d1: float) -> float:
    """``(d1 - 2 dh + d0) / (d1 - d0)``: 0 linear, > 0 convex, < 0 concave (NaN without a change)."""
    return (d1 - 2.0 * dh + d0) / (d1 - d0) if d1 != d0 else math.nan


def _trough(sc, events) -> tuple[float, object, object]:
    calm, eq = solved(sc, events=events)
    d, _ = trough(eq, WINDOW[0], WINDOW[1] - WINDOW[0], calm=calm)
    return d, calm, eq


def _edge(eq) -> float:
    """Largest mass of a population seen on an end node of the grid in a solve (every segment)."""
    return float(max(s.edge_mass for s in getattr(eq, "segments", (eq,))))


def hazard_change(eq, calm, names, a: float, b: float) -> float:
    """Exit hazard of the populations ``names`` (NAV sold per unit of their active NAV, per year) on ``eq``
    minus on ``calm``, averaged over the steps in ``[a, b)``."""
    idx = [eq.populations.index(n) for n in names]
    w = eq.model.weights[idx][:, None]
    t = eq.t
    sel = (t >= a - 1e-9) & (t < b - 1e-9)

    def h(r):
        nav = (w * np.asarray(r.active_mass)[idx]).sum(axis=0)
        flow = np.asarray(r.flow)[idx].sum(axis=0)
        return float(np.mean(flow[sel] / nav[sel]))

    return h(eq) - h(calm)


def _depth(sc) -> pd.DataFrame:
    rows = []
    for label, fa, fl in (VARIANTS[0], VARIANTS[3]):
        v = _variant(sc, fa, fl)
        for s in DEPTHS:
            d, _, eq = (0.0, None, solved(v)[0]) if s == 0.0 else _trough(v, scaled_events(sc.events, s))
            rows.append({"variant": label, "depth": s, "trough": d, "edge_mass": _edge(eq)})
    return pd.DataFrame(rows)


def _breadth_and_spiral(sc) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, spiral = [], []
    buyers_only = tuple(e.model_copy(update={"liquidity_shift": 0.0}) for e in sc.events)
    for label, fa, fl in VARIANTS:
        v = _variant(sc, fa, fl)
        if label in (VARIANTS[0][0], VARIANTS[3][0]):
            for b, evs in ((0.0, buyers_only), (1.0, v.events)):
                d, _, eq = _trough(v, evs)
                rows.append({"variant": label, "breadth": b, "trough": d, "edge_mass": _edge(eq)})
        half = split_model(v, 0.5)
        d, calm, eq = _trough(half, half.events)
        if label in (VARIANTS[0][0], VARIANTS[3][0]):
            rows.append({"variant": label, "breadth": 0.5, "trough": d, "edge_mass": _edge(eq)})
        unhit = [p.name for p in half.model.populations if p.name.endswith("~unhit")]
        hit = [p.name[:-len("~unhit")] for p in half.model.populations if p.name.endswith("~unhit")]
        spiral.append({"variant": label, "unshocked_hazard_change": hazard_change(eq, calm, unhit, LEHMAN, LEHMAN + 1),
                       "shocked_hazard_change": hazard_change(eq, calm, hit, LEHMAN, LEHMAN + 1),
                       "trough": d, "converged": bool(eq.converged), "edge_mass": _edge(eq)})
    return pd.DataFrame(rows).sort_values(["variant", "breadth"]), pd.DataFrame(spiral)


def _paths(sc) -> tuple[dict, pd.DataFrame]:
    calm = solved(sc)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        paths = baseline_paths(sc.model, sc.grid, sc.solver, sc.events, calm=calm)
    rows = []
    for k, p in paths.items():
        d, t_d = trough(p, WINDOW[0], WINDOW[1] - WINDOW[0])
        rows.append({"path": k, "trough": d, "t_trough": t_d, "lowest_price": float(np.nanmin(p.price[:-1])),
                     "nav_sold_year_after": float(np.nansum(p.sell_flow[(p.t >= LEHMAN) & (p.t < LEHMAN + 1)])
                                                  * p.dt),
                     "lowest_capital": float(np.nanmin(p.buyer_capital)), "converged": p.converged,
                     "run": run_flag(p.price)})
    return paths, pd.DataFrame(rows)


def _multipliers(sc) -> dict:
    """Equilibrium / first-round trough with the calm α, λ and with α = λ = 0."""
    out = {}
    for label, fa, fl in (VARIANTS[0], VARIANTS[3]):
        v = _variant(sc, fa, fl)
        calm = solved(v)[0]
        paths = baseline_paths(v.model, v.grid, v.solver, v.events, calm=calm, kinds=("first_round", "equilibrium"))
        d_fr = trough(paths["first_round"], WINDOW[0], WINDOW[1] - WINDOW[0])[0]
        d_eq = trough(paths["equilibrium"], WINDOW[0], WINDOW[1] - WINDOW[0])[0]
        out[label] = {"first_round": d_fr, "equilibrium": d_eq, "multiplier": d_eq / d_fr}
    return out


def measures(sc) -> dict:
    """Every headline measure on one grid (see the module docstring)."""
    paths, table = _paths(sc)
    depth = _depth(sc)
    breadth, spiral = _breadth_and_spiral(sc)
    conv = {}
    for label in (VARIANTS[0][0], VARIANTS[3][0]):
        dd = depth[depth.variant == label].set_index("depth").trough
        bb = breadth[breadth.variant == label].set_index("breadth").trough
        conv[label] = {"depth": convexity(dd[0.0], dd[0.5], dd[1.0]),
                       "breadth": convexity(bb[0.0], bb[0.5], bb[1.0])}
    return {"paths": paths, "table": table, "depth": depth, "breadth": breadth, "spiral": spiral,
            "multiplier": _multipliers(sc), "convexity": conv}


@register("amplification")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """The four paths and the three measures on crisis_2008 (module docstring); the full run repeats the
    headline measures on the quick grid to state their discretisation error."""
    from .amplification_report import figure, summary

    t0 = time.perf_counter()
    sc = load("crisis_2008", quick)
    m = measures(sc)
    coarse = None if quick else measures(load("crisis_2008", True))
    text, facts = summary(m, coarse, sc, quick, time.perf_counter() - t0)
    spiral = m["spiral"]
    tables = {"measures": m["table"], "depth": m["depth"], "breadth": m["breadth"], "spiral": spiral,
              "paths": pd.concat([p.to_frame("market").assign(path=k) for k, p in m["paths"].items()],
                                 ignore_index=True)}
    report = ExperimentReport("amplification", text, facts, tables, {"amplification": figure(m, sc)})
    return write_report(report, out)

