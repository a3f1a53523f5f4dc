"""Several equilibria of one problem: the fixed point started from several price paths (docs/model.md 2.5).

After a large shock a stopping game can have more than one equilibrium (a recovery and a
market freeze, say); which one the fixed point finds depends on where it starts.
:func:`find_equilibria` starts it from several paths (the calm price, paths pinned low and
high, and any the caller adds), keeps every converged solution, and merges the ones that
coincide (``max |P_i - P_j| <= distinct``), recording which starts led to each.
:func:`equilibria_after` does this on the state just after a scenario's shock.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..results import ConvergenceWarning
from .discretisation import discretise
from .events import ShockEvent, check_events
from .inputs import LPState, MarketInputs
from .params import Grid, LPExitModel, SolverOptions
from .result import LPExitResult
from .scenarios import apply_shock, scenario_inputs, solve_scenario
from .solver import solve

__all__ = ["Equilibrium", "find_equilibria", "equilibria_after", "default_starts"]


@dataclass(frozen=True)
class Equilibrium:
    """One equilibrium found: the solve, and the names of the starting paths that led to it."""

    result: LPExitResult = field(repr=False)
    starts: tuple[str, ...]

    @property
    def min_price(self) -> float:
        return float(np.min(self.result.price))

    @property
    def mean_price(self) -> float:
        return float(np.mean(self.result.price))


def default_starts(pbar: np.ndarray, P_cap: float | None) -> dict[str, np.ndarray]:
    """Starting price paths: the calm price, a path pinned at 40% of it (a freeze), and the cap (or 1.1 P̄)."""
    high = np.full_like(pbar, P_cap) if P_cap is not None else 1.1 * pbar
    return {"calm": pbar.copy(), "low": 0.4 * pbar, "high": high}


def find_equilibria(model: LPExitModel, grid: Grid, options: SolverOptions | None = None, method: str = "sl", *,
                    initial: LPState | None = None, inputs: MarketInputs | None = None,
                    starts: dict[str, np.ndarray] | None = None, distinct: float = 1e-4) -> list[Equilibrium]:
    """Every distinct converged equilibrium reached from the starting price paths (see the module docstring).

    ``starts``: extra named price paths on the solve's window (added to :func:`default_starts`;
    the mean-field path starts constant). Returns the equilibria sorted by their mean price,
    lowest first; a start that does not converge is left out (and warned about).
    """
    options = SolverOptions() if options is None else options
    disc = discretise(model, grid, initial=initial, inputs=inputs)
    cap = float(model.market.P_cap) if model.market.kind == "clearing" else None
    paths = default_starts(disc.pbar, cap)
    paths.update(starts or {})
    M0 = np.full(disc.n_t, float(np.dot(disc.weights, [p.initial_mean for p in model.populations])))
    found: list[tuple[LPExitResult, list[str]]] = []
    for name, P0 in paths.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r = solve(model, grid, options, method, initial=initial, inputs=inputs,
                      guess=(np.asarray(P0, dtype=float), M0))
        if not r.converged:
            warnings.warn(f"the fixed point started from the {name!r} path did not converge ({r.message})",
                          ConvergenceWarning, stacklevel=2)
            continue
        for res, names in found:
            if np.max(np.abs(res.price - r.price)) <= distinct:
                names.append(name)
                break
        else:
            found.append((r, [name]))
    out = [Equilibrium(res, tuple(names)) for res, names in found]
    return sorted(out, key=lambda e: e.mean_price)


def equilibria_after(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                     events: Sequence[ShockEvent] = (), method: str = "sl", *,
                     starts: dict[str, np.ndarray] | None = None, distinct: float = 1e-4) -> list[Equilibrium]:
    """The equilibria from the state just after the LAST group of ``events`` (docs/model.md 2.7).

    The path up to that time is the scenario's (:func:`mfg.lp_exit.scenarios.solve_scenario`
    with the earlier events); the pre-shock continuation is added to the starting paths as
    ``"pre_shock"``.
    """
    options = SolverOptions() if options is None else options
    evs = check_events(events, [p.name for p in model.populations], model.start, model.end, float(grid.dt))
    if not evs:
        raise ValueError("equilibria_after needs at least one event")
    t_last = evs[-1].time
    before = [e for e in evs if e.time < t_last]
    last = [e for e in evs if e.time == t_last]
    path = solve_scenario(model, grid, options, before, method)
    n = int(round((t_last - model.start) / grid.dt))
    state = path.state_at(n)
    for e in last:
        state, _ = apply_shock(state, e, model, grid)
    t = path.t[n:]
    inputs = scenario_inputs(model, evs, t, float(grid.dt))
    extra = {"pre_shock": path.price[n:] * (inputs.pbar / path.inputs.pbar[n:])}
    extra.update(starts or {})
    return find_equilibria(model, grid, options, method, initial=state, inputs=inputs, starts=extra,
                           distinct=distinct)
