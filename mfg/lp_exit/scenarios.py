"""Shock scenarios, the no-feedback ("DCF") baseline and the amplification ratio (docs/model.md 2.7).

:func:`solve_scenario` — unanticipated ("MIT") shocks.  Before the first event LPs
expect none: the whole window is solved without events (segment 0).  At each event
time ``τ`` (a step ``n_τ`` of the grid):

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
next segment from ``n_{k+1}`` on; at an event step it shows the post-shock state.

:func:`solve_baseline` — the no-feedback baseline of docs/model.md 2.7: LPs decide as if the
price stayed at ``P̄`` (a solve with ``β = 0``, so ``P ≡ P̄(t)``: the exit value is
``P̄ A_k − φ_k`` and the mark-to-market term ``α log(P/P̄)`` vanishes), each LP in
isolation from the price.  Herding is kept: ``M`` is the mean of the baseline LPs' own
liquidity (a fixed point in ``M`` alone), because ``M`` is a physical aggregate of
liquidity, not a price forecast.  The mark-to-market term is off in the realised
liquidity dynamics too (no feedback of any kind; otherwise the realised price would
feed back into liquidity and exits, which is again an equilibrium).  The same shocks
hit the baseline at the same times (from the baseline's own distribution).  The
realised price path is then computed from the baseline's exit flows by the real market
recursion (docs/model.md 2.4, :func:`mfg.lp_exit.market.market_path`) with the real ``β``, the
capital cuts applied at the events and the realised ``K̄(t), P̄(t)``.  A variant,
``belief="no_shock"``, lets LPs decide on the no-event equilibrium's price path instead
of ``P̄`` (their pre-shock forecast, never revised): it removes only the shock's
feedback, not the calm discount.

In this model the baseline's realised trough is DEEPER than the equilibrium's: LPs who
ignore the price keep selling into depleted buyer capital, while equilibrium sellers
hold out (a reservation price; docs/model.md 2.10: volume fell at the 2009 trough).  The
amplification ratio is then below 1: the price feedback as a whole dampens the shock,
although its mark-to-market part (``α``) amplifies it.

:func:`amplification` — trough discounts, times to trough, exit volumes and the ratio.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from ..results import BoundaryMassWarning, Status
from ..semi_lagrangian import UniformGrid, deposit_p1
from .events import ShockEvent, ShockSchedule, check_events
from .inputs import LPState, MarketInputs
from .market import impact_params, market_path
from .params import Grid, LPExitModel, SolverOptions
from .result import LPExitResult, SeriesResult
from .solver import check_arguments, solve

__all__ = [
    "ScenarioResult",
    "Amplification",
    "solve_scenario",
    "solve_baseline",
    "amplification",
    "trough_discount",
    "apply_shock",
    "shift_masses",
    "scenario_inputs",
    "realised_market",
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

    ``kind``: ``"equilibrium"`` (:func:`solve_scenario`) or ``"baseline"``
    (:func:`solve_baseline`: the market series ``price, vintage_price, buyer_capital,
    sell_pressure, sell_flow`` are then the realised ones; ``exit_prob``, ``value`` and
    ``threshold`` those of the decisions taken at ``P̄``).  Series on ``t`` (the
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


def _segments(model, solve_model, grid, options, events, method, belief=None):
    """Run the segments; returns ``(segments, starts, pushed)``.

    ``belief``: optional ``(n_t,)`` path that replaces the model's ``P̄`` in every
    segment's inputs (times the events' ``pbar_factor``); with ``β = 0`` it is the price
    path the LPs decide on.
    """
    dt = float(grid.dt)
    groups: dict[int, list[ShockEvent]] = {}
    for e in events:
        groups.setdefault(int(round((e.time - model.start) / dt)), []).append(e)
    seg = solve(solve_model, grid, options, method,
                inputs=None if belief is None else MarketInputs(pbar=belief))
    N = seg.t.size - 1
    segments, starts, pushed = [seg], [0], []
    happened: list[ShockEvent] = []
    for n, evs in sorted(groups.items()):
        if not 0 <= n < N:  # check_events refuses these; guard against rounding at the window's end
            raise ValueError(f"event(s) {[e.label for e in evs]} at step {n}: outside the steps 0..{N - 1}")
        s0 = starts[-1]
        state = seg.state_at(n - s0)
        for e in evs:
            state, lost = apply_shock(state, e, model, grid)
            pushed.append(lost)
        happened.extend(evs)
        t_seg = seg.t[n - s0:]
        inputs = scenario_inputs(model, happened, t_seg, dt)
        if belief is not None:
            inputs = MarketInputs(Kbar=inputs.Kbar, sigma=inputs.sigma,
                                  pbar=belief[n:] * (inputs.pbar / float(model.market.pbar)))
        # warm start: the pre-shock continuation, rescaled by any change of the calm price
        P_g = seg.price[n - s0:] * (inputs.pbar / seg.inputs.pbar[n - s0:])
        M_g = seg.mean_liquidity[n - s0:]
        seg = solve(solve_model, grid, options, method, initial=state, inputs=inputs, guess=(P_g, M_g))
        segments.append(seg)
        starts.append(n)
    return segments, starts, pushed


def _stitch(kind, model, grid, options, events, segments, starts, pushed, t_start, market=None) -> ScenarioResult:
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
    if market is not None:
        out.update(market)
    timings = {"segments": [s.timings.get("total", float("nan")) for s in segments],
               "total": time.perf_counter() - t_start}
    return ScenarioResult(kind=kind, t=full.t, L=full.L, populations=full.populations, inputs=inputs,
                          segments=tuple(segments), segment_starts=tuple(starts), events=tuple(events),
                          pushed=tuple(pushed), timings=timings, model=model, grid=grid, options=options, **out)


def solve_scenario(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                   events: Sequence[ShockEvent] = (), method: str = "sl") -> ScenarioResult:
    """Equilibrium path under unanticipated shocks (docs/model.md 2.7); see the module docstring.

    ``events`` need not be sorted; events at the same step are applied in their given
    order and start one segment.  Raises ``ValueError`` for an event outside
    ``[start, end)``, off the step grid by more than ``1e-9 dt``, or naming an unknown
    population.  Without events the result holds the single no-event solve.
    """
    t_start = time.perf_counter()
    options, evs = _check(model, grid, options, events, method)
    segments, starts, pushed = _segments(model, model, grid, options, evs, method)
    return _stitch("equilibrium", model, grid, options, evs, segments, starts, pushed, t_start)


def realised_market(model: LPExitModel, t: np.ndarray, flow: np.ndarray, Kbar: np.ndarray, pbar: np.ndarray,
                    dt: float, starts: Sequence[int] = (0,), cuts: Sequence[float] = (0.0,)) -> dict:
    """The market recursion of docs/model.md 2.4 driven by given exit flows, with capital cuts.

    ``flow``: ``(n_pop, n_t)`` each population's sell flow (NAV/yr, ``w_k E_k / dt``);
    ``Kbar, pbar``: ``(n_t,)`` realised inputs; ``starts[j]``: step at which ``K`` is
    multiplied by ``1 - cuts[j]`` (``starts[0] = 0`` for the initial ``K0``; ``cuts[0]``
    is applied to ``K0``).  Starts from the model's ``S0, K0``.  Returns the dict of
    ``price, vintage_price, buyer_capital, sell_pressure, sell_flow``.
    """
    mk = model.market
    n_pop, n_t = flow.shape
    life = np.array([mk.remaining_life_factor(p.maturity - t) for p in model.populations])
    E = flow * dt  # market_path only uses products w_k E_k: pass w = 1 and E = w_k E_k
    ones = np.ones(n_pop)
    P = np.empty(n_t)
    K = np.empty(n_t)
    sh = np.empty(n_t)
    S = np.empty(n_t)
    pi = np.empty((n_pop, n_t))
    s_prev, cap = float(mk.S0), float(mk.K0)
    ends = list(starts[1:]) + [n_t]
    for a, b, cut in zip(starts, ends, cuts):
        cap *= 1.0 - cut
        c = min(b + 1, n_t)  # one step more to get K at the start of step b
        S_, sh_, P_, K_, pi_ = market_path(E[:, a:c], ones, life[:, a:c], Kbar[a:c], pbar[a:c], dt,
                                           impact_params(mk), s_prev, cap)
        m = b - a
        S[a:b], sh[a:b], P[a:b], K[a:b], pi[:, a:b] = S_[:m], sh_[:m], P_[:m], K_[:m], pi_[:, :m]
        if b < n_t:
            s_prev, cap = float(sh_[m - 1]), float(K_[m])
    return {"price": P, "vintage_price": pi, "buyer_capital": K, "sell_pressure": sh, "sell_flow": S}


def solve_baseline(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                   events: Sequence[ShockEvent] = (), method: str = "sl", *, belief: str = "pbar") -> ScenarioResult:
    """No-feedback ("DCF") baseline of docs/model.md 2.7 under the same events; see the module docstring.

    Decisions and liquidity come from the segments of :func:`solve_scenario` run on the
    model with ``β = 0``, so that the price the LPs decide on is the input path ``P̄``:

    * ``belief="pbar"`` (docs/model.md 2.7, default): ``P ≡ P̄(t)``, the model's calm price
      (times the ``pbar_factor`` of events already happened);
    * ``belief="no_shock"``: the price path of the no-event equilibrium (the LPs' pre-shock
      forecast, never revised; times the ``pbar_factor`` of events already happened): a
      variant that removes only the shock's feedback, not the calm discount.

    The mark-to-market term ``α log(P/P̄)`` is zero in both (the belief is the
    reference).  The realised price, vintage prices, buyer capital and sell pressure
    are recomputed from the baseline's flows with the real ``β`` and the real ``P̄(t)``
    (:func:`realised_market`), the events' capital cuts applied at their steps.
    ``inputs`` of the result are the real (realised) ones.
    """
    t_start = time.perf_counter()
    options, evs = _check(model, grid, options, events, method)
    if belief not in ("pbar", "no_shock"):
        raise ValueError(f"belief must be 'pbar' or 'no_shock', got {belief!r}")
    path = None
    if belief == "no_shock":
        path = solve(model, grid, options, method).price
    blind = model.model_copy(update={"market": model.market.model_copy(update={"beta": 0.0})})
    segments, starts, pushed = _segments(model, blind, grid, options, evs, method, belief=path)
    res = _stitch("baseline", model, grid, options, evs, segments, starts, pushed, t_start)
    real = res.inputs
    if path is not None:  # the real calm price path: the model's times the factors each segment knew
        pb = np.empty_like(real.pbar)
        ends = list(starts[1:]) + [res.t.size]
        happened = [[e for e in evs if e.time <= res.t[a] + STEP_TOL * res.dt] for a in starts]
        for a, b, known in zip(starts, ends, happened):
            pb[a:b] = scenario_inputs(model, known, res.t[a:b], res.dt).pbar
        real = MarketInputs(Kbar=real.Kbar, pbar=pb, sigma=real.sigma)
    by_step: dict[int, float] = {}
    for e, n in zip(evs, res.event_steps):
        by_step[n] = 1.0 - (1.0 - by_step.get(n, 0.0)) * (1.0 - e.capital_cut)
    starts_m = [0] + [n for n in sorted(by_step) if n > 0]
    cuts = [by_step.get(0, 0.0)] + [by_step[n] for n in starts_m[1:]]
    mkt = realised_market(model, res.t, res.flow, real.Kbar, real.pbar, res.dt, starts_m, cuts)
    res = _stitch("baseline", model, grid, options, evs, segments, starts, pushed, t_start, market=mkt)
    return replace(res, inputs=real, timings={**res.timings, "total": time.perf_counter() - t_start})


# ----------------------------------------------------------------------------------
# amplification
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Amplification:
    """Equilibrium vs baseline after a shock (:func:`amplification`).

    ``trough_*``: largest discount ``1 - P(t)/ref`` over ``[shock_time, shock_time +
    horizon]``; ``t_trough_*``: first time it is reached; ``time_to_trough_*`` =
    ``t_trough - shock_time``; ``exit_volume_*``: NAV sold (fraction of market NAV)
    over the steps ``t_n`` in ``[shock_time, shock_time + volume_window)``;
    ``ratio = trough_eq / trough_base`` (``inf`` if only the baseline trough is <= 0 with
    a positive equilibrium one, NaN when both are <= 0); ``volume_ratio`` likewise.
    ``ref_eq``/``ref_base``: the reference prices used.
    """

    reference: str
    shock_time: float
    horizon: float
    volume_window: float
    ref_eq: float
    ref_base: float
    trough_eq: float
    trough_base: float
    t_trough_eq: float
    t_trough_base: float
    time_to_trough_eq: float
    time_to_trough_base: float
    exit_volume_eq: float
    exit_volume_base: float
    ratio: float
    volume_ratio: float


def _ratio(a: float, b: float) -> float:
    if b > 0.0:
        return a / b
    return math.inf if a > 0.0 else math.nan


def trough_discount(t, price, shock_time: float, ref: float, horizon: float = math.inf) -> tuple[float, float]:
    """``(max d, first t of the max)`` of ``d(t) = 1 - P(t)/ref`` over ``[shock_time, shock_time + horizon]``."""
    t = np.asarray(t, dtype=float)
    price = np.asarray(price, dtype=float)
    tol = 1e-9 * (float(t[1] - t[0]) if t.size > 1 else 1.0)
    sel = np.flatnonzero((t >= shock_time - tol) & (t <= shock_time + horizon + tol))
    if sel.size == 0:
        raise ValueError(f"no time step in [{shock_time}, {shock_time + horizon}]")
    d = 1.0 - price[sel] / ref
    i = int(np.argmax(d))
    return float(d[i]), float(t[sel[i]])


def amplification(eq, base, *, shock_time: float | None = None, reference: str = "pbar", pbar: float | None = None,
                  horizon: float = math.inf, volume_window: float = 1.0) -> Amplification:
    """Amplification of a shock by the price feedback: equilibrium vs no-feedback baseline (docs/model.md 2.7).

    ``eq``, ``base``: results with ``t``, ``price`` and ``sell_flow`` (e.g. from
    :func:`solve_scenario` and :func:`solve_baseline`).  ``shock_time``: default the
    first event of ``eq.events`` (the window's start without events).  The discount is
    ``d(t) = 1 - P(t)/ref`` with

    * ``reference="pbar"`` (default): ``ref = P̄``, the model's calm price
      (``eq.model.market.pbar``, or ``pbar=``), the same for both; the discount is the
      whole price-impact discount (``1 - exp(-β Ŝ/K)`` when no event moves ``P̄``; a
      ``pbar_factor`` shock counts in it);
    * ``reference="pre_shock"``: ``ref`` = each path's own price in the step before the
      shock (``P̄`` for a shock at the window's start): only the shock's extra discount,
      net of each path's calm level.

    The trough is over ``[shock_time, shock_time + horizon]``.  ``ratio = trough_eq /
    trough_base`` (> 1: the price feedback amplifies the shock).
    """
    if reference not in ("pbar", "pre_shock"):
        raise ValueError(f"reference must be 'pbar' or 'pre_shock', got {reference!r}")
    if not (volume_window > 0.0 and horizon > 0.0):
        raise ValueError("volume_window and horizon must be > 0")
    t = np.asarray(eq.t, dtype=float)
    if np.asarray(base.t).shape != t.shape or not np.allclose(base.t, t, rtol=0, atol=1e-9):
        raise ValueError("eq and base must share the time grid")
    if shock_time is None:
        evs = tuple(getattr(eq, "events", ()) or ())
        shock_time = float(min(e.time for e in evs)) if evs else float(t[0])
    if pbar is None:
        pbar = float(eq.model.market.pbar)
    dt = float(t[1] - t[0])
    n_s = int(np.searchsorted(t, shock_time - 1e-9 * dt))
    if reference == "pbar" or n_s == 0:
        ref_eq = ref_base = float(pbar)
    else:
        ref_eq, ref_base = float(eq.price[n_s - 1]), float(base.price[n_s - 1])
    d_eq, t_eq = trough_discount(t, eq.price, shock_time, ref_eq, horizon)
    d_b, t_b = trough_discount(t, base.price, shock_time, ref_base, horizon)
    win = (t >= shock_time - 1e-9 * dt) & (t < shock_time + volume_window - 1e-9 * dt)
    v_eq = float(np.sum(np.asarray(eq.sell_flow)[win]) * dt)
    v_b = float(np.sum(np.asarray(base.sell_flow)[win]) * dt)
    return Amplification(reference=reference, shock_time=float(shock_time), horizon=float(horizon),
                         volume_window=float(volume_window), ref_eq=ref_eq, ref_base=ref_base, trough_eq=d_eq,
                         trough_base=d_b, t_trough_eq=t_eq, t_trough_base=t_b, time_to_trough_eq=t_eq - shock_time,
                         time_to_trough_base=t_b - shock_time, exit_volume_eq=v_eq, exit_volume_base=v_b,
                         ratio=_ratio(d_eq, d_b), volume_ratio=_ratio(v_eq, v_b))
