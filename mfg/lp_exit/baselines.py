"""The baselines a shock is measured against (docs/model.md 2.7): DCF, first round, myopic, equilibrium.

Each is a pure function of ``(model, grid, options, events)`` that returns a
:class:`BaselinePath` with the market series of :func:`mfg.lp_exit.solve` (``price,
sell_flow`` (the volume), ``withdrawn, buyer_capital, spend, deal_price, market_branch,
clearing_residual, flow, active_mass, ...``); before the first event every path is the
no-event equilibrium (``calm``, segment 0 of :func:`~mfg.lp_exit.scenarios.solve_scenario`),
from it on:

1. :func:`dcf` — each stake valued in isolation at a fixed discount: the price is the
   no-event equilibrium's times the fundamental factor (the events' ``pbar_factor``), so it
   moves only with the fundamentals.  LPs sell at that price what they would sell given
   their continuation values on that path (a backward sweep on it), and buyers take it all:
   no market.  ``withdrawn`` is 0; ``buyer_capital`` is the accounting balance
   ``K' = (K - spend) + dt θ_K (K̄ - (K - spend))`` (negative when the DCF sales could not
   have been financed; reported, not a constraint).
2. :func:`first_round` — the shocked LPs' sales hit the clearing market (docs/model.md 2.4)
   while every LP keeps its pre-shock reservation values: the continuation values ``C`` of
   the no-event equilibrium, read at each LP's (shifted) liquidity.  The market clears every
   step against buyers' capital with the events' cuts and factors; liquidity moves with the
   realised price and mean field (the mark-to-market α and herding λ terms are physical).
   What is left out is anticipation: nobody revises a reservation value.
3. :func:`myopic` — every LP best-responds to today's price as if it were permanent: at step
   ``n`` its continuation value is that of the single-LP problem with the constant price
   path ``P ≡ P^n`` (and the mean field of the no-event path), so the supply at a candidate
   price ``P`` uses ``C(L; P)``.  ``C(·; P)`` is tabulated by backward sweeps on a geometric
   grid of ``n_prices`` constant prices and interpolated linearly in ``log P`` (the
   tabulation error is measured in ``docs/crisis.md``); the path stops ``horizon`` years after
   the first event (NaN after it).
4. :func:`equilibrium` — full anticipation: :func:`~mfg.lp_exit.scenarios.solve_scenario`.

First round and myopic clear the market step by step with an independent root finder
(``scipy.optimize.brentq`` on ``S(P) = D(P, K)`` in ``log P``, the ``P_cap`` rule of 2.4);
fed the equilibrium's own continuation values, the same loop reproduces the equilibrium's
prices to round-off (tests/test_crisis_amplification.py).  They need the clearing market and
``temperature > 0``.  :func:`solve_baseline` dispatches by name.  :func:`shock_discount` is
the discount a path's price shows against the no-event equilibrium at the same date, and
:func:`trough` its largest value after a time; the amplification multiplier is
``trough(equilibrium) / trough(first round)`` (docs/model.md 2.7).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from ..results import ConvergenceWarning
from .clearing import BRANCH_CAP, BRANCH_CLOSED, BRANCH_IDLE, BRANCH_ROOT
from .discretisation import LPDiscretisation, discretise
from .events import ShockEvent
from .fd import fd_transport
from .inputs import LPState, MarketInputs
from .kernels import ExitRule, sl_transport
from .params import Grid, LPExitModel, SolverOptions
from .result import LPExitResult, SeriesResult
from .scenarios import _check, apply_shock, event_groups, scenario_inputs, solve_scenario
from .solver import SWEEP_KERNELS, solve

__all__ = ["BaselinePath", "BASELINES", "dcf", "first_round", "myopic", "equilibrium", "solve_baseline",
           "baseline_paths", "continuation_on", "shock_discount", "trough", "MYOPIC_HORIZON", "MYOPIC_PRICES"]

#: Names of the four paths of docs/model.md 2.7, in the order they are reported.
BASELINES = ("dcf", "first_round", "myopic", "equilibrium")
#: Years after the first event over which the myopic path is computed (NaN after).
MYOPIC_HORIZON = 3.0
#: Constant prices on which the myopic continuation values are tabulated.
MYOPIC_PRICES = 24


@dataclass(frozen=True, eq=False)
class BaselinePath(SeriesResult):
    """One path of docs/model.md 2.7 on the model's whole window (the no-event equilibrium before ``shock_step``).

    Series as :class:`~mfg.lp_exit.LPExitResult` (``threshold`` only before the shock; NaN where a
    path was not computed).  ``kind``: one of :data:`BASELINES`; ``calm``: the no-event
    equilibrium; ``shock_step``: the first event's step; ``converged``: the equilibrium's (the
    other paths need no fixed point: True); ``inputs``: the realised ``K̄, P̄, σ``.
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
    withdrawn: np.ndarray
    spend: np.ndarray
    deal_price: np.ndarray
    clearing_residual: np.ndarray
    market_branch: np.ndarray
    flow: np.ndarray
    active_mass: np.ndarray
    exited_mass: np.ndarray
    matured_mass: np.ndarray
    mean_liquidity: np.ndarray
    threshold: np.ndarray
    shock_step: int
    converged: bool
    message: str
    timings: dict
    events: tuple[ShockEvent, ...]
    inputs: MarketInputs = field(repr=False)
    calm: LPExitResult = field(repr=False)
    model: LPExitModel = field(repr=False)
    grid: Grid = field(repr=False)
    options: SolverOptions = field(repr=False)

    def to_frame(self, kind: str = "market"):
        """Tidy frames as :meth:`mfg.lp_exit.LPExitResult.to_frame` (``"market"`` or ``"populations"``)."""
        extra = {"Kbar": self.inputs.Kbar, "pbar": self.inputs.pbar} if kind == "market" else None
        return self._frame(kind, market_extra=extra)


# ----------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------


def continuation_on(disc: LPDiscretisation, P: np.ndarray, M: np.ndarray, options: SolverOptions,
                    method: str = "sl") -> np.ndarray:
    """``(n_pop, n_t, n_L)`` continuation values ``C`` of the backward sweeps (docs/model.md 2.3, 2.6) on the
    path ``(P, M)`` of the discretisation's window (0 where a population takes no decision)."""
    backward = SWEEP_KERNELS[method][0]
    rule = ExitRule(float(options.temperature), False, np.zeros((1, 1)))
    n_t, n_L = disc.n_t, disc.grid.n_L
    C = np.zeros((disc.n_pop, n_t, n_L))
    for k, coef in enumerate(disc.coefficients(np.asarray(P, dtype=float), np.asarray(M, dtype=float))):
        if disc.in_window[k]:
            backward(disc.population(k), coef, rule, disc.mesh, np.empty((2, n_L)), np.zeros((n_t, n_L)),
                     np.empty(n_t), C[k])
    return C


def _calm_and_events(model, grid, options, events, method, calm):
    """Checked options and events, the no-event solve, and the event groups ``{step: [events]}``."""
    options, evs = _check(model, grid, options, events, method)
    if not evs:
        raise ValueError("a baseline needs at least one event (the shock it is measured against)")
    if calm is None:
        calm = solve(model, grid, options, method)
    return options, evs, calm, event_groups(model, evs, float(grid.dt))


def _stitched(kind, calm, n0, loop, evs, inputs, t_start, converged=True, message="",
              threshold=None) -> BaselinePath:
    """A :class:`BaselinePath`: the no-event solve before step ``n0``, the ``loop`` arrays from it on
    (``threshold``: the whole window's, else the no-event one before ``n0`` and NaN after)."""
    out = {}
    for name in ("price", "buyer_capital", "sell_flow", "withdrawn", "spend", "clearing_residual",
                 "mean_liquidity", "vintage_price", "flow", "active_mass", "exited_mass", "matured_mass"):
        arr = np.array(getattr(calm, name), dtype=float)
        arr[..., n0:] = loop[name]
        out[name] = arr
    branch = np.array(calm.market_branch)
    branch[n0:] = loop["market_branch"]
    if threshold is None:
        threshold = np.array(calm.threshold, dtype=float)
        threshold[:, n0:] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        deal = np.where(out["sell_flow"] > 0.0, out["spend"] / (out["sell_flow"] * calm.dt), np.nan)
    return BaselinePath(kind=kind, t=calm.t, L=calm.L, populations=calm.populations,
                        sell_pressure=np.full(calm.t.size, np.nan), deal_price=deal, market_branch=branch,
                        threshold=threshold, shock_step=int(n0), converged=bool(converged),
                        message=message or f"{kind}: computed", timings={"total": time.perf_counter() - t_start},
                        events=tuple(evs), inputs=inputs, calm=calm, model=calm.model, grid=calm.grid,
                        options=calm.options, **out)


def _realised_inputs(model, evs, calm) -> MarketInputs:
    """The ``K̄, P̄, σ`` every path meets: the model's times the factors of all events (each from its time on)."""
    return scenario_inputs(model, evs, calm.t, float(calm.dt))


# ----------------------------------------------------------------------------------
# the step-by-step market of the first round, the myopic path and the DCF
# ----------------------------------------------------------------------------------


class _Loop:
    """Masses, buyer capital and the recorded series of a forward pass from the first event's state.

    ``disc``: the discretisation of ``[t_{n0}, end]`` from that state with the realised inputs;
    ``shocks``: ``{window step: [events]}`` of the later events (applied to the masses and to
    ``K`` at their step, as :func:`~mfg.lp_exit.scenarios.apply_shock` does)."""

    def __init__(self, disc: LPDiscretisation, options: SolverOptions, method: str, n_steps: int, shocks: dict):
        self.disc, self.method, self.n_steps, self.shocks = disc, method, n_steps, shocks
        self.eps = float(options.temperature)
        mk = disc.model.market  # the DCF runs on either market kind: it never clears
        self.tau_d, self.gamma = float(getattr(mk, "tau_d", 1.0)), float(getattr(mk, "gamma", 0.0))
        self.P_cap, self.theta = float(getattr(mk, "P_cap", 1.0)), float(mk.theta_K)
        n_pop, n_t, n_L = disc.n_pop, disc.n_t, disc.grid.n_L
        self.m = np.zeros((n_pop, n_L))
        self.K = float(disc.K0)
        self.M = math.nan
        self.scratch = (np.empty(n_L), np.empty(n_L), np.empty(n_L))
        nan = np.full(n_t, np.nan)
        self.rec = {"price": nan.copy(), "buyer_capital": nan.copy(), "sell_flow": nan.copy(),
                    "withdrawn": nan.copy(), "spend": nan.copy(), "clearing_residual": nan.copy(),
                    "mean_liquidity": nan.copy(), "market_branch": np.full(n_t, -1),
                    "vintage_price": np.full((n_pop, n_t), np.nan), "flow": np.full((n_pop, n_t), np.nan),
                    "active_mass": np.full((n_pop, n_t), np.nan), "exited_mass": np.full((n_pop, n_t), np.nan),
                    "matured_mass": np.full((n_pop, n_t), np.nan)}
        self.exited = disc.exited0.astype(float).copy()
        self.matured = disc.matured0.astype(float).copy()

    def deciding(self, n: int) -> np.ndarray:
        d = self.disc
        return np.flatnonzero(d.in_window & (d.n_first <= n) & (n < d.n_last))

    def begin_step(self, n: int) -> None:
        """Entries, the later events at step ``n``, bookkeeping and the mean field before the step's sales."""
        d = self.disc
        for k in range(d.n_pop):
            if d.in_window[k] and n == d.n_first[k]:
                self.m[k] = d.m0[k]
        if n in self.shocks:
            state = LPState(t0=float(d.t[n]), masses=self.m, K=self.K, S_hat=0.0)
            for e in self.shocks[n]:
                state, _ = apply_shock(state, e, d.model, d.grid)
            self.m, self.K = np.array(state.masses), state.K
        active = d.in_window & (d.n_first <= n) & ~(d.matures & (n >= d.n_last))
        mass = self.m.sum(axis=1)
        for k in range(d.n_pop):
            if d.in_window[k] and d.matures[k] and n == d.n_last[k]:
                self.matured[k] += mass[k]
                self.m[k] = 0.0
        den = float(np.dot(d.weights[active], mass[active]))
        if den > 0.0:
            self.M = float(np.dot(d.weights[active], self.m[active] @ d.x)) / den
        r = self.rec
        r["mean_liquidity"][n], r["buyer_capital"][n] = self.M, self.K
        r["active_mass"][:, n] = np.where(active, mass, 0.0)
        r["exited_mass"][:, n] = np.where(d.n_first <= n, self.exited, 0.0)
        r["matured_mass"][:, n] = np.where(d.n_first <= n, self.matured, 0.0)

    def demand(self, P: float, n: int) -> float:
        """``D(P, K)`` of docs/model.md 2.4 (NAV a year)."""
        if self.K <= 0.0:
            return 0.0
        pbar = float(self.disc.pbar[n])
        return min((self.K / self.tau_d) * (pbar / P) ** self.gamma / P, self.K / (P * self.disc.dt))

    def candidates(self, n: int, ks: np.ndarray):
        """``(a, wq)``: deal-price multipliers ``A_k dfac_k(L_i)`` and weights ``w_k q_max m_ki / dt`` of the
        populations ``ks`` deciding at ``n`` (arrays ``(len(ks), n_L)``)."""
        d = self.disc
        a = d.life_factor[ks, n][:, None] * d.dfac[ks]
        wq = (d.weights[ks] * d.q_max[ks, n] / d.dt)[:, None] * self.m[ks]
        return a, wq

    def accept(self, P: float, a, b) -> np.ndarray:
        """Share of a sale process that closes at ``P``: the logit of docs/model.md 2.3, the hard rule at ε = 0."""
        if self.eps > 0.0:
            return expit((P * a - b) / self.eps)
        return (P * a > b).astype(float)

    def supply(self, P: float, a, b, wq) -> float:
        return float(np.sum(wq * self.accept(P, a, b)))

    def clear(self, n: int, ks, a, wq, b_of: Callable[[float], np.ndarray]) -> tuple[float, int]:
        """The step's price (docs/model.md 2.4): ``P_cap`` when supply there does not reach demand, else the
        root of ``S(P) = D(P, K)`` in ``log P`` (brentq; ``b_of(P)``: the reservation values at ``P``)."""
        if ks.size == 0 or self.K <= 0.0 or not np.any(wq > 0.0):
            return self.P_cap, BRANCH_IDLE

        def h(x):
            P = math.exp(x)
            return self.supply(P, a, b_of(P), wq) - self.demand(P, n)

        hi = math.log(self.P_cap)
        if h(hi) <= 0.0:
            return self.P_cap, BRANCH_CAP
        lo = hi - 0.05
        while h(lo) >= 0.0:
            hi, lo = lo, lo - 2.0 * (hi - lo)
        x = brentq(h, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
        return math.exp(x), BRANCH_ROOT

    def trade_and_move(self, n: int, P: float, ks, a, b, branch: int) -> None:
        """Sales at ``P`` (the logit exit rule of 2.3 at the reservation values ``b``), buyers' spend and the
        refill of ``K``, then the transport of what stays with the realised drift (2.2)."""
        d, r = self.disc, self.rec
        q = np.zeros_like(self.m)
        if ks.size:
            q[ks] = d.q_max[ks, n][:, None] * self.accept(P, a, b)
        spend = sum(float(d.weights[k]) * P * float(np.dot(self.m[k] * q[k], d.life_factor[k, n] * d.dfac[k]))
                    for k in ks)
        vol = sum(float(d.weights[k] * np.dot(self.m[k], q[k])) for k in ks) / d.dt
        r["price"][n], r["market_branch"][n], r["sell_flow"][n], r["spend"][n] = P, branch, vol, spend
        r["vintage_price"][:, n] = P * d.life_factor[:, n]
        left = self.K - spend
        self.K = left + d.dt * self.theta * (float(d.Kbar[n]) - left)
        lp = math.log(P / float(d.pbar[n]))
        nxt, cp, rhs = self.scratch
        r["flow"][:, n] = 0.0
        for k in ks:
            c = float(d.kappa_target[k, n] + d.lam[k] * self.M + d.alpha[k] * lp)
            if self.method == "sl":
                e = sl_transport(self.m[k], nxt, q[k], c, float(d.sigma[k, n]), float(d.drift_a[k]), d.mesh)
            else:
                e = fd_transport(self.m[k], nxt, q[k], c, float(d.sigma[k, n]), float(d.drift_a[k]), d.mesh, cp, rhs)
            self.m[k] = nxt
            self.exited[k] += e
            r["flow"][k, n] = d.weights[k] * e / d.dt

    def close(self, n_end: int) -> dict:
        """The recorded series, the last recorded step ``n_end`` closed (no trade: the price carries over)."""
        r = self.rec
        if n_end == self.disc.N:
            r["price"][n_end] = r["price"][n_end - 1]
            r["market_branch"][n_end] = BRANCH_CLOSED
            r["vintage_price"][:, n_end] = r["price"][n_end] * self.disc.life_factor[:, n_end]
            r["sell_flow"][n_end] = r["spend"][n_end] = r["withdrawn"][n_end] = 0.0
            r["flow"][:, n_end] = 0.0
        r["clearing_residual"][np.isfinite(r["price"])] = 0.0
        return r


def _run_clearing(loop: _Loop, reservation: Callable[[int, np.ndarray, float], np.ndarray]) -> dict:
    """The clearing market step by step; ``reservation(n, ks, P)``: ``phi_k + C_k(t_n, L_i)`` of the deciding
    populations ``ks`` when the price is ``P`` (``(len(ks), n_L)``)."""
    d = loop.disc
    for n in range(loop.n_steps):
        loop.begin_step(n)
        ks = loop.deciding(n)
        a, wq = loop.candidates(n, ks)
        P, branch = loop.clear(n, ks, a, wq, functools.partial(reservation, n, ks))
        b = reservation(n, ks, P)
        if P < float(d.pbar[n]) and ks.size:
            pb = float(d.pbar[n])
            loop.rec["withdrawn"][n] = max(loop.supply(pb, a, reservation(n, ks, pb), wq)
                                           - loop.supply(P, a, b, wq), 0.0)
        else:
            loop.rec["withdrawn"][n] = 0.0
        loop.trade_and_move(n, P, ks, a, b, branch)
        if branch == BRANCH_ROOT:
            vol, dem = loop.rec["sell_flow"][n], loop.demand(P, n)
            loop.rec["clearing_residual"][n] = abs(vol - dem) / dem if dem > 0 else 0.0
    loop.begin_step(loop.n_steps)
    res = loop.rec["clearing_residual"].copy()
    out = loop.close(loop.n_steps)
    out["clearing_residual"] = np.where(np.isfinite(res), res, out["clearing_residual"])
    return out


def _setup(model, grid, options, events, method, calm, horizon=math.inf):
    """The shared start of the first-round, myopic and DCF paths: ``(options, evs, calm, n0, loop, inputs)``."""
    options, evs, calm, groups = _calm_and_events(model, grid, options, events, method, calm)
    n0 = next(iter(groups))
    state = calm.state_at(n0)
    for e in groups[n0]:
        state, _ = apply_shock(state, e, model, grid)
    inputs = _realised_inputs(model, evs, calm)
    window = MarketInputs(Kbar=inputs.Kbar[n0:], pbar=inputs.pbar[n0:], sigma=inputs.sigma[:, n0:])
    disc = discretise(model, grid, initial=state, inputs=window)
    n_steps = disc.N if not math.isfinite(horizon) else min(disc.N, int(round(horizon / float(grid.dt))))
    shocks = {n - n0: evs_n for n, evs_n in groups.items() if n > n0}
    return options, evs, calm, n0, _Loop(disc, options, method, n_steps, shocks), inputs


def _need_clearing(model, options, what: str) -> None:
    if model.market.kind != "clearing":
        raise ValueError(f"the {what} baseline needs the clearing market (docs/model.md 2.4); the reduced-form "
                         "impact market (2.4b) is kept for comparison only")
    if not options.temperature > 0.0:
        raise ValueError(f"the {what} baseline needs a logit temperature > 0 (solver.temperature)")


# ----------------------------------------------------------------------------------
# the four paths
# ----------------------------------------------------------------------------------


def first_round(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                events: Sequence[ShockEvent] = (), method: str = "sl", *, calm: LPExitResult | None = None,
                continuation: np.ndarray | None = None) -> BaselinePath:
    """The first-round path of docs/model.md 2.7 (module docstring, 2.).

    ``continuation``: ``(n_pop, n_t, n_L)`` reservation values to use instead of the no-event
    equilibrium's (on the model's whole window; a test feeds the equilibrium's own to check that
    the loop reproduces it)."""
    t_start = time.perf_counter()
    options = options or SolverOptions()
    _need_clearing(model, options, "first-round")
    options, evs, calm, n0, loop, inputs = _setup(model, grid, options, events, method, calm)
    C = (calm.continuation if continuation is None else np.asarray(continuation, dtype=float))[:, n0:, :]
    phi = loop.disc.phi

    def reservation(n, ks, P):
        return phi[ks][:, None] + C[ks, n]

    rec = _run_clearing(loop, reservation)
    return _stitched("first_round", calm, n0, rec, evs, inputs, t_start,
                     message="first round: reservation values of the no-event equilibrium, market cleared")


def _myopic_tables(loop: _Loop, options, method, calm, n0, prices, n_rows):
    """``(n_prices, n_pop, n_rows, n_L)`` continuation values for constant price paths (beliefs: the price
    stays at ``P_j``, the mean field follows the no-event path)."""
    disc = loop.disc
    M = np.asarray(calm.mean_liquidity[n0:], dtype=float)
    tab = np.empty((len(prices), disc.n_pop, n_rows, disc.grid.n_L))
    for j, P in enumerate(prices):
        tab[j] = continuation_on(disc, np.full(disc.n_t, P), M, options, method)[:, :n_rows]
    return tab


def myopic(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
           events: Sequence[ShockEvent] = (), method: str = "sl", *, calm: LPExitResult | None = None,
           horizon: float = MYOPIC_HORIZON, n_prices: int = MYOPIC_PRICES) -> BaselinePath:
    """The myopic path of docs/model.md 2.7 (module docstring, 3.) over ``horizon`` years after the first event.

    The beliefs use the inputs known after every event (``K̄, P̄, σ`` factors announced at the
    events are known from the first one on: a myopic LP does not forecast prices, not the
    announced schedules).  ``n_prices``: constant prices of the table, geometric from 0.1 P̄ to
    ``P_cap``."""
    t_start = time.perf_counter()
    options = options or SolverOptions()
    _need_clearing(model, options, "myopic")
    if n_prices < 4:
        raise ValueError(f"n_prices must be at least 4, got {n_prices}")
    options, evs, calm, n0, loop, inputs = _setup(model, grid, options, events, method, calm, horizon)
    mk = model.market
    prices = np.geomspace(0.1 * float(mk.pbar), float(mk.P_cap), n_prices)
    logp = np.log(prices)
    tab = _myopic_tables(loop, options, method, calm, n0, prices, loop.n_steps + 1)
    phi = loop.disc.phi

    def reservation(n, ks, P):
        x = min(max(math.log(P), logp[0]), logp[-1])
        j = min(int(np.searchsorted(logp, x, side="right")) - 1, len(prices) - 2)
        w = (x - logp[j]) / (logp[j + 1] - logp[j])
        return phi[ks][:, None] + (1.0 - w) * tab[j, ks, n] + w * tab[j + 1, ks, n]

    rec = _run_clearing(loop, reservation)
    return _stitched("myopic", calm, n0, rec, evs, inputs, t_start,
                     message=f"myopic: reservation values at the current price held for ever ({n_prices} prices), "
                             f"{horizon:g} years after the shock")


def dcf(model: LPExitModel, grid: Grid, options: SolverOptions | None = None, events: Sequence[ShockEvent] = (),
        method: str = "sl", *, calm: LPExitResult | None = None) -> BaselinePath:
    """The DCF path of docs/model.md 2.7 (module docstring, 1.): the no-event price times the fundamental factor,
    LPs' sales at that price, no market (any market kind; the impact market too)."""
    t_start = time.perf_counter()
    options = options or SolverOptions()
    options, evs, calm, groups = _calm_and_events(model, grid, options, events, method, calm)
    inputs = _realised_inputs(model, evs, calm)
    n0 = next(iter(groups))
    P_path = np.asarray(calm.price, dtype=float) * inputs.pbar / np.asarray(calm.inputs.pbar, dtype=float)
    state = calm.state_at(n0)
    for e in groups[n0]:
        state, _ = apply_shock(state, e, model, grid)
    window = MarketInputs(Kbar=inputs.Kbar[n0:], pbar=inputs.pbar[n0:], sigma=inputs.sigma[:, n0:])
    disc = discretise(model, grid, initial=state, inputs=window)
    C = continuation_on(disc, P_path[n0:], np.asarray(calm.mean_liquidity[n0:]), options, method)
    loop = _Loop(disc, options, method, disc.N, {n - n0: e for n, e in groups.items() if n > n0})
    for n in range(disc.N):
        loop.begin_step(n)
        ks = loop.deciding(n)
        a, _ = loop.candidates(n, ks)
        b = disc.phi[ks][:, None] + C[ks, n]
        loop.trade_and_move(n, float(P_path[n0 + n]), ks, a, b, BRANCH_ROOT)
        loop.rec["withdrawn"][n] = 0.0
    loop.begin_step(disc.N)
    rec = loop.close(disc.N)
    rec["clearing_residual"][:] = np.nan
    return _stitched("dcf", calm, n0, rec, evs, inputs, t_start,
                     message="DCF: the no-event price times the fundamental factor; every sale absorbed")


def equilibrium(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                events: Sequence[ShockEvent] = (), method: str = "sl", *,
                calm: LPExitResult | None = None) -> BaselinePath:
    """Full anticipation: :func:`~mfg.lp_exit.scenarios.solve_scenario`, as a :class:`BaselinePath`."""
    t_start = time.perf_counter()
    options, evs, calm, groups = _calm_and_events(model, grid, options, events, method, calm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in ``converged`` and ``message``
        eq = solve_scenario(model, grid, options, evs, method, calm=calm)
    n0 = next(iter(groups))
    rec = {name: np.asarray(getattr(eq, name))[..., n0:] for name in
           ("price", "buyer_capital", "sell_flow", "withdrawn", "spend", "clearing_residual", "mean_liquidity",
            "vintage_price", "flow", "active_mass", "exited_mass", "matured_mass", "market_branch")}
    return _stitched("equilibrium", calm, n0, rec, evs, eq.inputs, t_start, eq.converged, eq.message,
                     threshold=np.array(eq.threshold, dtype=float))


_SOLVERS = {"dcf": dcf, "first_round": first_round, "myopic": myopic, "equilibrium": equilibrium}


def solve_baseline(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                   events: Sequence[ShockEvent] = (), method: str = "sl", *, kind: str = "dcf",
                   calm: LPExitResult | None = None, **kwargs) -> BaselinePath:
    """The path ``kind`` (one of :data:`BASELINES`) on the same shock (docs/model.md 2.7)."""
    if kind not in _SOLVERS:
        raise ValueError(f"kind must be one of {BASELINES}, got {kind!r}")
    return _SOLVERS[kind](model, grid, options, events, method, calm=calm, **kwargs)


def baseline_paths(model: LPExitModel, grid: Grid, options: SolverOptions | None = None,
                   events: Sequence[ShockEvent] = (), method: str = "sl", *, calm: LPExitResult | None = None,
                   kinds: Sequence[str] = BASELINES, **myopic_kwargs) -> dict[str, BaselinePath]:
    """``{kind: BaselinePath}`` for ``kinds`` on one shared no-event solve (``myopic_kwargs`` go to :func:`myopic`)."""
    options = SolverOptions() if options is None else options
    if calm is None:
        calm = solve(model, grid, options, method)
    return {k: solve_baseline(model, grid, options, events, method, kind=k, calm=calm,
                              **(myopic_kwargs if k == "myopic" else {})) for k in kinds}


# ----------------------------------------------------------------------------------
# measures
# ----------------------------------------------------------------------------------


def shock_discount(path, calm=None) -> np.ndarray:
    """``(n_t,)`` discount of a path's price against the no-event equilibrium at the same date,
    ``1 - P(t) / P_calm(t)`` (the calm seasonal pattern cancels; NaN where the path is NaN)."""
    calm = path.calm if calm is None else calm
    return 1.0 - np.asarray(path.price, dtype=float) / np.asarray(calm.price, dtype=float)


def trough(path, after: float, horizon: float = math.inf, calm=None) -> tuple[float, float]:
    """``(largest shock discount, first time of it)`` over the steps ``t_n`` in ``[after, after + horizon]``,
    the window's last step (closed market) left out; ``(nan, nan)`` if no finite value is there."""
    t = np.asarray(path.t, dtype=float)
    d = shock_discount(path, calm)
    tol = 1e-9 * float(t[1] - t[0])
    sel = np.flatnonzero((t >= after - tol) & (t <= after + horizon + tol) & (np.arange(t.size) < t.size - 1)
                         & np.isfinite(d))
    if sel.size == 0:
        return math.nan, math.nan
    i = sel[int(np.argmax(d[sel]))]
    return float(d[i]), float(t[i])
