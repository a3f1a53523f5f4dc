"""Shock scenarios: unanticipated ("MIT") shocks stitched into one path (docs/model.md 2.7).

:func:`solve_scenario` — before the first event LPs expect none: the whole window is solved
without events (segment 0).  At each event time ``τ`` (a step ``n_τ`` of the grid):

1. the state reached *under the pre-shock expectations* is taken from the current
   segment, ``segment.state_at(n_τ)`` (distribution of the active LPs, buyer capital
   ``K^{n_τ}``, carried sell pressure ``Ŝ^{n_τ - 1}``, exited / matured fractions);
2. the events at ``τ`` are applied in their order (:func:`apply_shock`): the masses of
   the hit populations are shifted by ``δ`` along the ``L`` grid (P1 deposit of each
   node's mass at ``x_i + δ``: exact conservation for any fractional shift; mass pushed
   past an end of the grid lands on the end node, with a :class:`BoundaryMassWarning`
   above ``1e-6``), ``K -> (1 - ψ) K``;
3. a new equilibrium with perfect foresight is solved on ``[τ, end]`` from that state,
   with the time-varying ``K̄, P̄, σ`` of every event already happened (``time <= τ``;
   later events are not anticipated), starting the fixed point from the previous
   segment's path (``guess=``, ``P`` rescaled by any change of ``P̄``).

The stitched :class:`ScenarioResult` holds segment ``k`` on ``[n_k, n_{k+1})`` and the
next segment from ``n_{k+1}`` on; at an event step it shows the post-shock state.  A
no-event solve of the same model, grid and options can be passed as ``calm=`` (segment 0
is then not solved again: experiments that put many shocks on one market reuse it).

The baselines a shock is measured against (DCF valuation, first round, myopic
price-takers) are in :mod:`mfg.lp_exit.baselines`.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..results import BoundaryMassWarning, Status
from ..semi_lagrangian import UniformGrid, deposit_p1
from .events import ShockEvent, ShockSchedule, check_events
from .inputs import LPState, MarketInputs
from .params import Grid, LPExitModel, SolverOptions
from .result import LPExitResult, SeriesResult
from .solver import check_arguments, solve

__all__ = [
    "ScenarioResult",
    "solve_scenario",
    "scenario_equilibrium",
    "apply_shock",
    "shift_masses",
    "scenario_inputs",
    "event_groups",
    "SHIFT_LOSS_WARN",
]

#: Mass pushed past an end of the grid by a liquidity shift above which a warning is issued.
SHIFT_LOSS_WARN = 1e-6

#: Tolerance, in steps, for an event time to count as a step of the grid.
STEP_TOL = 1e-9


# ----------------------------------------------------------------------------------
# shocks on a state
# ----------------------------------------------------------------------------------


def shift_masses(masses: np.ndarray, delta: float, grid: Grid) -> tuple[np.ndarray, float]:
    """Nodal masses moved by ``delta`` along the grid: each node's mass deposited (P1) at ``x_i + delta``.

    Returns ``(shifted, pushed)``; ``pushed`` is the mass whose target lay outside
    ``[L_min, L_max]`` (it lands on the end node).  The total is conserved to round-off
    for any (fractional) shift; a shift by whole cells moves the masses exactly.
    """
    m = np.asarray(masses, dtype=float)
    if delta == 0.0:
        return m.copy(), 0.0
    x = np.linspace(grid.L_min, grid.L_max, grid.n_L)
    nz = m != 0.0
    y = x[nz] + float(delta)
    out = deposit_p1(UniformGrid(float(grid.L_min), float(grid.L_max), int(grid.n_L)), y, m[nz])
    pushed = float(m[nz][(y < grid.L_min) | (y > grid.L_max)].sum())
    return out, pushed


def apply_shock(state: LPState, event: ShockEvent, model: LPExitModel, grid: Grid) -> tuple[LPState, float]:
    """The state just after ``event``: hit populations' masses shifted, ``K`` scaled by ``1 - capital_cut``.

    Populations that are not active at the event (zero rows: not entered yet, matured)
    are untouched; a population entering later enters with its initial law.  ``Ŝ`` and
    the exited / matured fractions are kept.  Returns ``(state, pushed)`` with the
    largest mass of one population pushed past an end of the grid.
    """
    masses = np.array(state.masses, dtype=float)
    pushed = 0.0
    for k, p in enumerate(model.populations):
        if event.liquidity_shift != 0.0 and event.hits(p.name) and masses[k].any():
            masses[k], lost = shift_masses(masses[k], event.liquidity_shift, grid)
            pushed = max(pushed, lost)
    if pushed > SHIFT_LOSS_WARN:
        warnings.warn(f"event {event.label}: liquidity_shift={event.liquidity_shift} pushes {pushed:.3g} of a "
                      f"population's mass past [{grid.L_min}, {grid.L_max}] onto the end node; widen the grid",
                      BoundaryMassWarning, stacklevel=3)
    return LPState(t0=state.t0, masses=masses, K=state.K * (1.0 - event.capital_cut), S_hat=state.S_hat,
                   exited=state.exited, matured=state.matured), pushed


def scenario_inputs(model: LPExitModel, events: Sequence[ShockEvent], t: np.ndarray, dt: float) -> MarketInputs:
    """:class:`MarketInputs` on the times ``t``: the model's ``K̄, P̄, σ_k`` times the factors of ``events``.

    A factor acts on step ``n`` when ``t_n`` lies in ``[time, time + duration)`` (to
    ``1e-9 dt``); factors of overlapping periods multiply; ``sigma_factor`` only on the
    event's populations.
    """
    names = [p.name for p in model.populations]
    kb, pb, sg = ShockSchedule(events=tuple(events)).factors(t, names, tol=STEP_TOL * dt)
    sigma = np.array([float(p.sigma) for p in model.populations])[:, None] * sg
    return MarketInputs(Kbar=float(model.market.Kbar) * kb, pbar=float(model.market.pbar) * pb, sigma=sigma)


# ----------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ScenarioResult(SeriesResult):
    """A scenario's stitched path (docs/model.md 2.7), with the attribute names of :class:`~mfg.lp_exit.LPExitResult`.

    ``kind``: ``"equilibrium"`` (:func:`solve_scenario`).  Series on ``t`` (the
    model's whole window); per-population arrays lead with ``n_pop``.  At an event step
    the series show the post-shock state (masses shifted, ``K`` cut).
    ``segments``: the per-segment :class:`LPExitResult` (segment 0: the no-event solve
    of the whole window; segment ``k`` starts at step ``segment_starts[k]``);
    ``events``: the events, sorted; ``inputs``: the realised ``K̄, P̄, σ`` over the
    window (each segment's inputs on its stretch); ``pushed``: per event, the largest
    mass of one population pushed past the grid's ends by its liquidity shift.
    """

    kind: str
    t: np.ndarray
    L: np.ndarray
    populations: tuple[str, ...]
    price: np.ndarray
    vintage_price: np.ndarray
    buyer_capital: np.ndarray
    sell_pressure: np.ndarray
    sell_flow: np.ndarray
    flow: np.ndarray
    active_mass: np.ndarray
    exited_mass: np.ndarray
    matured_mass: np.ndarray
    mean_liquidity: np.ndarray
    withdrawn: np.ndarray
    spend: np.ndarray
    deal_price: np.ndarray
    clearing_residual: np.ndarray
    market_branch: np.ndarray
    threshold: np.ndarray
    density: np.ndarray
    exit_prob: np.ndarray
    value: np.ndarray
    inputs: MarketInputs = field(repr=False)
    segments: tuple[LPExitResult, ...] = field(repr=False)
    segment_starts: tuple[int, ...]
    events: tuple[ShockEvent, ...]
    pushed: tuple[float, ...]
    timings: dict
    model: LPExitModel = field(repr=False)
    grid: Grid = field(repr=False)
    options: SolverOptions = field(repr=False)
    continuation: np.ndarray | None = field(default=None, repr=False)

    @property
    def iterations(self) -> tuple[int, ...]:
        """Fixed-point evaluations per segment."""
        return tuple(s.iterations for s in self.segments)

    @property
    def converged(self) -> bool:
        return all(s.converged for s in self.segments)

    @property
    def status(self) -> Status:
        """The worst status of the segments (docs/model.md 3.3)."""
        return max(s.status for s in self.segments)

    @property
    def message(self) -> str:
        """One line per segment that did not converge, or that all did."""
        bad = [f"segment {i}: {s.message}" for i, s in enumerate(self.segments) if not s.converged]
        return "; ".join(bad) if bad else f"all {len(self.segments)} segment(s) converged"

    @property
    def exploitability(self) -> tuple[float, ...]:
        """Exploitability of each segment's equilibrium (from its own start state)."""
        return tuple(s.exploitability for s in self.segments)

    @property
    def event_steps(self) -> tuple[int, ...]:
        """Step index of each event (sorted, as ``events``)."""
        return tuple(int(round((e.time - float(self.t[0])) / self.dt)) for e in self.events)

    @property
    def segment_of_step(self) -> np.ndarray:
        """(n_t,) index of the segment each step's values come from."""
        return np.searchsorted(np.array(self.segment_starts), np.arange(self.t.size), side="right") - 1

    def _initial_S_hat(self) -> float:
        return self.segments[0].initial.S_hat

    def state_at(self, n: int) -> LPState:
        """The stitched :class:`LPState` at step ``n`` (post-shock at an event step)."""
        return self._state_at(n)

    def to_frame(self, kind: str = "populations") -> pd.DataFrame:
        """Tidy frames as :meth:`LPExitResult.to_frame`, plus a ``segment`` column.

        ``kind="market"``: one row per time (``t, segment, price, discount, buyer_capital,
        sell_pressure, sell_flow, mean_liquidity, active_nav, turnover, Kbar, pbar``);
        ``kind="populations"``: one row per (time, population).
        """
        extra = {"Kbar": self.inputs.Kbar, "pbar": self.inputs.pbar} if kind == "market" else None
        return self._frame(kind, segment=self.segment_of_step, market_extra=extra)

    def __repr__(self) -> str:
        return (f"ScenarioResult(kind={self.kind!r}, populations={self.populations}, n_t={self.t.size}, "
                f"events={[e.label for e in self.events]}, iterations={self.iterations}, "
                f"converged={self.converged}, total={self.timings.get('total', float('nan')):.3g}s)")


# ----------------------------------------------------------------------------------
# solving
# ----------------------------------------------------------------------------------

_STITCHED_T = ("price", "buyer_capital", "sell_pressure", "sell_flow", "mean_liquidity", "withdrawn", "spend",
               "deal_price", "clearing_residual", "market_branch")  # (n_t,)
_STITCHED_KT = ("vintage_price", "flow", "active_mass", "exited_mass", "matured_mass", "threshold")  # (n_pop, n_t)
_STITCHED_KTL = ("density", "exit_prob", "value")  # (n_pop, n_t, n_L)


def _check(model, grid, options, events, method="sl"):
    options = check_arguments(model, grid, options, method)
    evs = check_events(events, [p.name for p in model.populations], model.start, model.end, float(grid.dt))
    return options, evs


def event_groups(model: LPExitModel, events: Sequence[ShockEvent], dt: float) -> dict[int, list[ShockEvent]]:
    """The events grouped by their step on the model's grid, ``{step: [events in their order]}``, sorted."""
    groups: dict[int, list[ShockEvent]] = {}
    for e in events:
        groups.setdefault(int(round((e.time - model.start) / dt)), []).append(e)
    return dict(sorted(groups.items()))


def _segments(model, grid, options, events, method, calm=None):
    """Run the segments; returns ``(segments, starts, pushed)``.  ``calm``: a no-event solve of the same
    problem used as segment 0 (else it is solved)."""
    dt = float(grid.dt)
    seg = solve(model, grid, options, method) if calm is None else calm
    N = seg.t.size - 1
    segments, starts, pushed = [seg], [0], []
    happened: list[ShockEvent] = []
    for n, evs in event_groups(model, events, dt).items():
        if not 0 <= n < N:  # check_events refuses these; guard against rounding at the window's end
            raise ValueError(f"event(s) {[e.label for e in evs]} at step {n}: outside the steps 0..{N - 1}")
        s0 = starts[-1]
        state = seg.state_at(n - s0)
        for e in evs:
            state, lost = apply_shock(state, e, model, grid)
            pushed.append(lost)
        happened.extend(evs)
        inputs = scenario_inputs(model, happened, seg.t[n - s0:], dt)
        # warm start: the pre-shock continuation, rescaled by any change of the calm price
        P_g = seg.price[n - s0:] * (inputs.pbar / seg.inputs.pbar[n - s0:])
        M_g = seg.mean_liquidity[n - s0:]
        seg = solve(model, grid, options, method, initial=state, inputs=inputs, guess=(P_g, M_g))
        segments.append(seg)
        starts.append(n)
    return segments, starts, pushed


def _check_calm(calm, model, grid, options) -> None:
    """Refuse a ``calm=`` that is not a full no-event solve of this very problem."""
    if not isinstance(calm, LPExitResult):
        raise TypeError(f"calm must be an LPExitResult (a no-event solve), got {type(calm).__name__}")
    same = calm.model == model and calm.grid == grid and calm.options == options and calm.t[0] == model.start
    if not same or calm.density is None:
        raise ValueError("calm must be solve(model, grid, options) of this very model, grid and options, "
                         "from the model's start and with store='all'")


def _stitch(kind, model, grid, options, events, segments, starts, pushed, t_start) -> ScenarioResult:
    full = segments[0]
    n_t = full.t.size
    ends = list(starts[1:]) + [n_t]
    out = {}
    for name in _STITCHED_T + _STITCHED_KT + _STITCHED_KTL:
        ref = getattr(full, name)
        arr = np.empty_like(ref)
        for seg, a, b in zip(segments, starts, ends):
            src = getattr(seg, name)
            if ref.ndim == 3:
                arr[:, a:b] = src[:, :b - a]
            else:
                arr[..., a:b] = src[..., :b - a]
        out[name] = arr
    ins = {}
    for name in ("Kbar", "pbar", "sigma"):
        ref = getattr(full.inputs, name)
        arr = np.empty_like(ref)
        for seg, a, b in zip(segments, starts, ends):
            arr[..., a:b] = getattr(seg.inputs, name)[..., :b - a]
        ins[name] = arr
    inputs = MarketInputs(**ins)
    if full.continuation is not None:
        C = np.empty_like(full.continuation)
        for seg, a, b in zip(segments, starts, ends):
            C[:, a:b] = seg.continuation[:, :b - a]
        out["continuation"] = C
    timings = {"segments": [s.timings.get("total", float("nan")) for s in segments],
               "total": time.perf_counter() - t_start}
    return ScenarioResult(kind=kind, t=full.t, L=full.L, populations=full.populations, inputs=inputs,
                          segments=tuple(segments), segment_starts=tuple(starts), events=tuple(events),
                          pushed=tuple(pushed), timings=timings, model=model, grid=grid, options=options, **out)


def solve_scenario(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                   events: Sequence[ShockEvent] = (), method: str = "sl", *,
                   calm: LPExitResult | None = None) -> ScenarioResult:
    """Equilibrium path under unanticipated shocks (docs/model.md 2.7); see the module docstring.

    ``events`` need not be sorted; events at the same step are applied in their given
    order and start one segment.  Raises ``ValueError`` for an event outside
    ``[start, end)``, off the step grid by more than ``1e-9 dt``, or naming an unknown
    population.  Without events the result holds the single no-event solve.  ``calm``:
    ``solve(model, grid, options, method)`` already computed (reused as segment 0).
    """
    t_start = time.perf_counter()
    options, evs = _check(model, grid, options, events, method)
    if calm is not None:
        _check_calm(calm, model, grid, options)
    segments, starts, pushed = _segments(model, grid, options, evs, method, calm)
    return _stitch("equilibrium", model, grid, options, evs, segments, starts, pushed, t_start)


#: The last few equilibria of :func:`scenario_equilibrium`, keyed by the scenario's content (JSON).
EQUILIBRIA: OrderedDict[str, object] = OrderedDict()
EQUILIBRIA_SIZE = 4


def scenario_equilibrium(sc):
    """The equilibrium of a :class:`~mfg.lp_exit.params.Scenario` on its own grid and solver options:
    :func:`~mfg.lp_exit.solve`, or :func:`solve_scenario` when it has shock events.  The last
    :data:`EQUILIBRIA_SIZE` results are kept, keyed by the scenario's content (results are frozen),
    so a Mesa batch run or a dataset of another seed or size does not solve again."""
    key = sc.model_dump_json()
    if key in EQUILIBRIA:
        EQUILIBRIA.move_to_end(key)
        return EQUILIBRIA[key]
    if sc.events:
        res = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    else:
        res = solve(sc.model, sc.grid, sc.solver)
    EQUILIBRIA[key] = res
    while len(EQUILIBRIA) > EQUILIBRIA_SIZE:
        EQUILIBRIA.popitem(last=False)
    return res
