"""Multiple equilibria after the largest shipped shock, and the one a finite market of learning LPs selects.

The largest shipped shock is Lehman in ``crisis_2008`` (2008.75: the deepest trough of the shipped
files).  From the state just after it, with what LPs know then (the events up to 2008.75; the
2009.0 step of the liquidity shock is not anticipated, docs/model.md 2.7), the fixed point of
docs/model.md 2.5 is started from several price paths (:func:`mfg.lp_exit.equilibria.find_equilibria`):
the calm price ``P̄(t)``, 40% of it, the cap, 10% of it (a freeze), the pre-shock continuation and the
scenario's own path; converged solutions closer than ``1e-4`` are merged.  Every one found is
reported (lowest price, mean price, which starts led to it).

**Selection by the finite market** (docs/model.md 2.8: the N-player market runs with a given policy,
so it cannot pick an equilibrium by itself; here its LPs learn).  Round 0: every LP keeps its
pre-shock reservation values (those of the scenario's segment before Lehman); ``N`` LPs trade from 2005
through the shock (the scenario's policy before it, the events up to 2008.75);
the mean realised price and mean-field paths after the shock are the LPs' new belief (averaged
with the previous one, weight 1/2), each LP's reservation values are its best response to that
belief (a backward sweep), and the market is run again.  After the last round the realised price
path is compared with every equilibrium found (largest absolute gap over the two years after the
shock): the nearest is the one the learning finite market selects.  Tables
``equilibria.csv``, ``learning.csv``; figure ``equilibria.png``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mfg.lp_exit import ConvergenceWarning
from mfg.lp_exit.baselines import continuation_on
from mfg.lp_exit.discretisation import discretise
from mfg.lp_exit.equilibria import find_equilibria
from mfg.lp_exit.scenarios import apply_shock, scenario_inputs

from .common import ExperimentReport, grid_text, load, pyplot, register, run_flag, solved, write_report

__all__ = ["run", "search", "learn", "SHOCK"]

SHOCK = 2008.75


def search(sc, calm, eq) -> tuple[list, dict]:
    """Every equilibrium found after the shock, and the set-up ``(n, state, inputs, events)`` of the segment."""
    dt = float(sc.grid.dt)
    n = int(round((SHOCK - sc.model.start) / dt))
    known = tuple(e for e in sc.events if e.time <= SHOCK + 1e-9)
    i = max(j for j, s0 in enumerate(eq.segment_starts) if s0 < n)  # the segment before the shock
    seg, s0 = eq.segments[i], eq.segment_starts[i]
    state = seg.state_at(n - s0)
    for e in (e for e in known if abs(e.time - SHOCK) < 1e-9):
        state, _ = apply_shock(state, e, sc.model, sc.grid)
    inputs = scenario_inputs(sc.model, known, calm.t[n:], dt)
    pbar = inputs.pbar
    starts = {"freeze (0.1 P̄)": 0.1 * pbar, "pre_shock": seg.price[n - s0:] * pbar / seg.inputs.pbar[n - s0:],
              "scenario path": np.asarray(eq.price[n:], dtype=float)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        found = find_equilibria(sc.model, sc.grid, sc.solver, initial=state, inputs=inputs, starts=starts)
    before = np.array(eq.continuation, dtype=float)  # the scenario's reservation values up to the shock
    return found, {"n": n, "state": state, "inputs": inputs, "events": known, "before": before,
                   "pre_shock_C": np.array(seg.continuation[:, n - s0:], dtype=float)}


def _policy(calm, before, C_after, n: int):
    """A reservation-value policy for the finite market: ``before`` (the scenario's values) before step ``n``,
    ``C_after`` from it."""
    C = np.array(before, dtype=float)
    C[:, n:, :] = C_after
    return SimpleNamespace(t=calm.t, L=calm.L, populations=calm.populations, grid=calm.grid, dt=calm.dt,
                           inputs=calm.inputs, model=calm.model, options=calm.options, continuation=C, exit_prob=None)


def learn(sc, calm, setup: dict, *, rounds: int, n_agents: int, n_reps: int, seed: int = 2026) -> list[dict]:
    """The learning finite market of the module docstring; one entry per round (realised paths, belief)."""
    from abm.lp_market.engine import simulate

    n = setup["n"]
    disc = discretise(sc.model, sc.grid, initial=setup["state"], inputs=setup["inputs"])
    C = setup["pre_shock_C"]
    belief = None
    out = []
    for k in range(rounds):
        sim = simulate(sc.model, _policy(calm, setup["before"], C, n), n_agents=n_agents, n_reps=n_reps, seed=seed + k,
                       events=setup["events"])
        P, _ = sim.mean_se("price")
        M, _ = sim.mean_se("mean_liquidity")
        real = (np.asarray(P[n:], dtype=float), np.asarray(M[n:], dtype=float))
        belief = real if belief is None else tuple(0.5 * (b + r) for b, r in zip(belief, real))
        out.append({"round": k, "price": real[0], "belief": belief[0]})
        C = continuation_on(disc, belief[0], belief[1], sc.solver)
    return out


def _floor(sc, calm, setup, result, *, n_agents: int, n_reps: int) -> float:
    """Largest gap over two years between an equilibrium and the finite market that plays its own policy."""
    from abm.lp_market.engine import simulate

    n = setup["n"]
    sim = simulate(sc.model, _policy(calm, setup["before"], result.continuation, n), n_agents=n_agents,
                   n_reps=n_reps, seed=7, events=setup["events"])
    P, _ = sim.mean_se("price")
    sel = calm.t[n:] < SHOCK + 2.0
    return float(np.max(np.abs(np.asarray(P[n:])[sel] - result.price[sel])))


@register("equilibria")
def run(out: Path, *, quick: bool = False) -> ExperimentReport:
    """Equilibria after Lehman in crisis_2008 and the finite market's selection (module docstring)."""
    t0 = time.perf_counter()
    sc = load("crisis_2008", quick)
    calm, eq = solved(sc)
    found, setup = search(sc, calm, eq)
    n = setup["n"]
    t = calm.t[n:]
    horizon = t < SHOCK + 2.0
    hist = learn(sc, calm, setup, rounds=3 if quick else 5, n_agents=20_000 if quick else 50_000,
                 n_reps=2 if quick else 4)
    last = hist[-1]["price"]
    floor = _floor(sc, calm, setup, found[0].result, n_agents=20_000 if quick else 50_000, n_reps=2 if quick else 4)
    rows = []
    for i, e in enumerate(found):
        gap = float(np.max(np.abs(last[horizon] - e.result.price[horizon])))
        rows.append({"equilibrium": i, "starts": ", ".join(e.starts), "lowest_price": e.min_price,
                     "mean_price_2y": float(np.mean(e.result.price[horizon])), "iterations": e.result.iterations,
                     "gap_to_learning_market": gap, "run": run_flag(e.result.price)})
    table = pd.DataFrame(rows)
    chosen = int(table.gap_to_learning_market.idxmin()) if len(table) else -1
    learning = pd.DataFrame([{"round": h["round"], "lowest_realised_price": float(np.min(h["price"][horizon])),
                              **{f"gap_to_{i}": float(np.max(np.abs(h["price"][horizon] - e.result.price[horizon])))
                                 for i, e in enumerate(found)}} for h in hist])
    lines = ["# Equilibria after Lehman (crisis_2008) and the finite market's selection", "",
             f"{grid_text(sc)}; {time.perf_counter() - t0:.1f} s.", "",
             f"**{len(found)} distinct equilibri{'um' if len(found) == 1 else 'a'} found from {6} starting paths; the "
             f"learning finite market (N = {20_000 if quick else 50_000:,}) ends "
             f"{table.gap_to_learning_market.min():.4f} from equilibrium {chosen}"
             + (f" (lowest price {table.lowest_price[chosen]:.3f})" if chosen >= 0 else "")
             + f"; the same market playing equilibrium 0's own policy ends {floor:.4f} from it (finite N and the "
               "exact OU step).**", "",
             "| equilibrium | starts | lowest price | mean price, 2 years | gap to the learning market | run |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.equilibrium} | {r.starts} | {r.lowest_price:.4f} | {r.mean_price_2y:.4f} | "
              f"{r.gap_to_learning_market:.4f} | {r.run or 'no'} |" for r in table.itertuples()]
    gaps = [c for c in learning.columns if c.startswith("gap_")]
    lines += ["", "Learning rounds (largest gap of the realised price to each equilibrium over two years): "
              + "; ".join(f"round {int(r['round'])}: " + ", ".join(f"{r[c]:.4f}" for c in gaps)
                          for _, r in learning.iterrows())]
    facts = {"n_equilibria": len(found), "selected": chosen, "own_policy_gap": floor,
             "table": table.to_dict("records"), "quick": quick,
             "seconds": time.perf_counter() - t0}
    report = ExperimentReport("equilibria", "\n".join(lines) + "\n", facts,
                              {"equilibria": table, "learning": learning}, {"equilibria": _figure(t, found, hist)})
    return write_report(report, out)


def _figure(t, found, hist):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    sel = t < SHOCK + 3.0
    for i, e in enumerate(found):
        ax.plot(t[sel], e.result.price[sel], lw=2, label=f"equilibrium {i} (starts: {', '.join(e.starts)})")
    for h in hist:
        ax.plot(t[sel], h["price"][sel], lw=0.8, ls="--", label=f"learning market, round {h['round']}")
    ax.set(xlabel="year", ylabel="price P (fraction of true NAV)", title="after Lehman: equilibria and the learning "
                                                                          "finite market")
    ax.legend(fontsize=7, loc="lower right")
    return fig
