"""The LP-exit mean-field game's solver: the fixed point on the price and mean-field paths (docs/model.md 2.5).

Data flow: :class:`~mfg.lp_exit.params.LPExitModel`, :class:`~mfg.lp_exit.params.Grid`,
:class:`~mfg.lp_exit.params.SolverOptions` → :func:`~mfg.lp_exit.discretisation.discretise`
→ :func:`solve` → :class:`~mfg.lp_exit.result.LPExitResult`.

One evaluation of the fixed-point map on a path ``(P^n, M^n)`` (:meth:`PathSweeps.evaluate`):

1. **backward sweep** per population: continuation value ``C`` by the second-order SL step
   (or the FD step, ``method="fd"``), the exit rule, ``V = C + q (G - C)``
   (:mod:`mfg.lp_exit.kernels`, :mod:`mfg.lp_exit.fd`);
2. **forward sweep** per population: the exact adjoint of the same step; the mass
   ``m_i q_i`` exits and is recorded, ``m_i (1 - q_i)`` moves on;
3. **market**: the recursion of docs/model.md 2.4b (:func:`mfg.lp_exit.market.market_path`)
   on the exited masses gives the new price path, and the NAV-weighted mean of ``L`` over
   active LPs the new mean field.

:func:`solve` then runs :func:`~mfg.lp_exit.fixed_point.anderson_fixed_point` on that map
(the price residual preconditioned by :func:`mfg.lp_exit.market.market_newton`), fills the
result's rows, computes the exploitability (:func:`exploitability`) and the mass
bookkeeping (:func:`bookkeeping`).

Buffers.  The sweeps run the buffered kernels (``SWEEP_KERNELS[method]``): during the
iterations the value and the density keep two rows only; the evaluation expected to be
the last one writes every row of the value, policy and density straight into the
result's arrays, and if another iterate is accepted its rows are recomputed once at the
end.  The arithmetic is the same in every case, so the results do not depend on the
buffering, nor on ``options.workers`` (populations are swept concurrently by threads;
every sum over populations is taken in population order).

Starting from a state (``initial=``), time-varying inputs (``inputs=``) and the time
indexing are those of :mod:`mfg.lp_exit.discretisation`; no sale happens at ``t_N``.
"""

from __future__ import annotations

import queue
import time
import warnings
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from ..resources import check_memory
from ..results import BoundaryMassWarning, ConvergenceWarning, message_of, status_of
from .clearing import ForwardOut, ForwardStack, clearing_forward, clearing_params
from .discretisation import LPDiscretisation, discretise
from .fd import fd_backward, fd_backward_sweep, fd_forward, fd_forward_sweep
from .fixed_point import anderson_fixed_point
from .inputs import LPState, MarketInputs
from .kernels import ExitRule, backward_sweep, forward_sweep, sl_backward, sl_forward
from .market import impact_params, market_newton, market_path
from .params import Grid, LPExitModel, SolverOptions
from .result import LPExitResult

__all__ = ["solve", "check_arguments", "memory_needed", "PathSweeps", "ImpactSweeps", "ClearingSweeps", "path_sweeps",
           "MarketPath", "Evaluation", "exploitability",
           "bookkeeping", "SWEEPS", "SWEEP_KERNELS", "EDGE_MASS_WARN", "LPExitResult", "LPState", "MarketInputs",
           "ConvergenceWarning", "BoundaryMassWarning", "backward_sweep", "forward_sweep"]

#: Mass on an end node above which :func:`solve` warns that the grid is too narrow.
EDGE_MASS_WARN = 1e-6

#: Sweeps per method: ``(backward, forward)`` with the arguments and returns of
#: :func:`~mfg.lp_exit.kernels.backward_sweep` and :func:`~mfg.lp_exit.kernels.forward_sweep`.
SWEEPS = {"sl": (backward_sweep, forward_sweep), "fd": (fd_backward_sweep, fd_forward_sweep)}

#: The same sweeps with the buffered contract of :func:`~mfg.lp_exit.kernels.sl_backward` and
#: :func:`~mfg.lp_exit.kernels.sl_forward`: what :func:`solve` runs.
SWEEP_KERNELS = {"sl": (sl_backward, sl_forward), "fd": (fd_backward, fd_forward)}

_NO_POLICY = np.zeros((1, 1))
_NO_C = np.empty((0, 0))


MarketPath = namedtuple("MarketPath", ["flow", "pressure", "price", "capital", "vintage_price", "withdrawn", "spend",
                                       "residual", "branch"])
MarketPath.__doc__ = """The market's paths of one evaluation, each ``(n_t,)`` but ``vintage_price`` ``(n_pop, n_t)``:
sell flow (volume, NAV/yr), sell pressure (impact market; NaN in the clearing market), price,
buyer capital at the start of each step, vintage prices, withdrawn supply, buyers' spend,
relative clearing residual and how the price was set (``mfg.lp_exit.clearing.BRANCH_*``; the
last four NaN / -1 in the impact market)."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One evaluation of the fixed-point map on the path ``(P, M)``.

    ``exit_mass``: ``(n_pop, n_t)`` fraction of each population selling per step;
    ``market``: the :class:`MarketPath`;
    ``M_new``: the mean field the flows produce; ``sens``: ``(n_pop, n_t)`` derivative of
    the exiting mass with respect to the same step's price (for the preconditioner), or
    ``None``; ``residual_P``, ``residual_M``: ``max|P_new - P|``, ``max|M_new - M|``; ``masses``
    and ``edge``: the bookkeeping of a solve that keeps no density table (``store="paths"``).
    """

    P: np.ndarray
    M: np.ndarray
    exit_mass: np.ndarray
    market: tuple
    M_new: np.ndarray
    sens: np.ndarray | None
    residual_P: float
    residual_M: float
    masses: np.ndarray  # (n_pop, n_t) mass of each population at t_n (maturity step included)
    edge: np.ndarray  # (n_pop,) largest mass on an end node of the grid

    @property
    def P_new(self) -> np.ndarray:
        return self.market.price

    @property
    def residual(self) -> float:
        return max(self.residual_P, self.residual_M)


class PathSweeps:
    """The fixed-point map of one solve: sweeps of every population on a path, the market, the mean field.

    Owns the reusable buffers (one scratch set per thread), the thread pool of
    ``options.workers``, the per-phase timings, every evaluation's residuals, and the
    result's full-row arrays together with the evaluation whose rows they hold.  Use as a
    context manager (the pool is shut down on exit).  :func:`path_sweeps` picks the
    subclass of the model's market: :class:`ImpactSweeps` (each population swept on its
    own, then the market recursion) or :class:`ClearingSweeps` (the backward sweeps on
    their own, then one forward sweep of all populations with the market cleared at every
    step).
    """

    #: the per-phase timings of this market kind
    PHASES = ("backward", "forward", "sweeps", "market", "exploitability")

    def __init__(self, disc: LPDiscretisation, method: str, options: SolverOptions, store_tables: bool = True):
        self.disc = disc
        self.method = method
        self.store_tables = store_tables
        self.backward, self.forward = SWEEP_KERNELS[method]
        self.options = options
        self.rule = ExitRule(float(options.temperature), False, _NO_POLICY)
        self.herding = disc.herding
        self.mesh = disc.mesh
        self.pops = [disc.population(k) for k in range(disc.n_pop)]
        self.timings = dict.fromkeys(self.PHASES, 0.0)
        self.res_P: list[float] = []
        self.res_M: list[float] = []
        n_t, n_L = disc.n_t, disc.grid.n_L
        n_busy = int(disc.in_window.sum())
        # one scratch set per thread (not per population: the exit probabilities of one
        # population, 4 MB at 1,000 x 521, stay in cache between its two sweeps); the
        # sweeps read only the rows they wrote, so a set can serve any population
        self.scratch = queue.SimpleQueue()
        for _ in range(max(1, min(int(options.workers), n_busy))):
            self.scratch.put((np.zeros((n_t, n_L)), np.empty((2, n_L)), np.empty((2, n_L)), np.empty(n_t)))
        self.rows: tuple | None = None  # (value, exit_prob, threshold, masses), each (n_pop, n_t, ...)
        self.rows_owner: Evaluation | None = None
        self.last: Evaluation | None = None  # the latest evaluation (diagnostics)
        workers = min(int(options.workers), n_busy)
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown()

    def _map(self, fn, *iterables):
        """``fn`` over the populations, in threads when there is a pool (results in population order)."""
        if self.pool is None:
            return [fn(*a) for a in zip(*iterables)]
        return list(self.pool.map(fn, *iterables))

    def _result_rows(self):
        if self.rows is None and self.store_tables:
            n_pop, n_t, n_L = self.disc.n_pop, self.disc.n_t, self.disc.grid.n_L
            self.rows = (np.full((n_pop, n_t, n_L), np.nan), np.zeros((n_pop, n_t, n_L)),
                         np.full((n_pop, n_t), np.nan), np.zeros((n_pop, n_t, n_L)))
        return self.rows

    def _check_path(self, P: np.ndarray, M: np.ndarray) -> None:
        """Refuse a path the kernels cannot take (``P <= 0`` or non-finite), naming the step and the market state."""
        bad = ~(np.isfinite(P) & (P > 0.0))
        if bad.any():
            n = int(np.argmax(bad))
            raise FloatingPointError(f"the price path reached {P[n]:.3g} at step {n} (t={self.disc.t[n]:.6g}): "
                                     f"{self._collapse_hint(n)}")
        if not np.all(np.isfinite(M)):
            n = int(np.argmax(~np.isfinite(M)))
            raise FloatingPointError(f"the mean-field path is not finite at step {n} (t={self.disc.t[n]:.6g})")

    def _collapse_hint(self, n: int) -> str:
        return "the market has collapsed"

    def _check_market(self, market: "MarketPath", M_new: np.ndarray) -> None:
        for name, v in (("price", market.price), ("buyer capital", market.capital), ("mean-field", M_new)):
            if not np.all(np.isfinite(v)):
                n = int(np.argmax(~np.isfinite(v)))
                raise FloatingPointError(f"the market produced a non-finite {name} path at step {n} "
                                         f"(t={self.disc.t[n]:.6g}) from a finite iterate")

    def evaluate(self, P: np.ndarray, M: np.ndarray, keep_rows: bool = False) -> Evaluation:
        """The map on ``(P, M)``; with ``keep_rows`` every row goes into the result's arrays."""
        self._check_path(P, M)
        if keep_rows:
            self._result_rows()
        exit_mass, market, M_new, sens, masses, edge = self._map_path(P, M, keep_rows)
        self._check_market(market, M_new)
        self.res_P.append(float(np.max(np.abs(market.price - P))))
        self.res_M.append(float(np.max(np.abs(M_new - M))))
        ev = Evaluation(P, M, exit_mass, market, M_new, sens, self.res_P[-1], self.res_M[-1], masses, edge)
        self.last = ev
        if keep_rows:
            self.rows_owner = ev
        return ev

    def _map_path(self, P, M, keep_rows):  # pragma: no cover - interface
        """``(exit_mass, MarketPath, M_new, sens, masses, edge)`` of the map on ``(P, M)``."""
        raise NotImplementedError

    def step(self, ev: Evaluation) -> np.ndarray:
        """The price residual ``P_new - P`` (preconditioned where the market kind has a preconditioner)."""
        return ev.P_new - ev.P

    def finalise(self, ev: Evaluation) -> Evaluation:
        """The accepted evaluation made with ``keep_rows`` (every row of the values, policy, thresholds
        and masses in the result's arrays when tables are stored, and the market's diagnostics): if
        ``ev`` was not, one more evaluation on the very same path (bit-identical numbers; not an
        iteration: its residuals and timings are dropped)."""
        if self.rows_owner is not ev:
            n_res, kept = len(self.res_P), dict(self.timings)
            ev = self.evaluate(ev.P, ev.M, True)
            del self.res_P[n_res:], self.res_M[n_res:]
            self.timings.update(kept)
        return ev

    def extra_outputs(self) -> dict:
        """Result fields this market kind adds (the continuation values of the clearing market)."""
        return {"continuation": None}


class ImpactSweeps(PathSweeps):
    """The map with the impact market of docs/model.md 2.4b: each population swept on its own (backward,
    then forward with its exits), then the market recursion on the exits."""

    def __init__(self, disc, method, options, store_tables=True):
        super().__init__(disc, method, options, store_tables)
        self.market_params = impact_params(disc.model.market)
        self.act_f = disc.active.astype(float)
        self.zeros_t = np.zeros(disc.n_t)
        self.zeros_stats = np.zeros((5, disc.n_t))

    def _population(self, k, coef, full):
        """Exits and ``(mass, first moment, exit sensitivity)`` per step of population ``k``;
        with ``full``, every row of its value, policy, threshold and masses into the result's arrays."""
        disc = self.disc
        if not disc.in_window[k]:
            return self.zeros_t, self.zeros_stats, 0.0, 0.0
        e = np.zeros(disc.n_t)
        stats = np.zeros((5, disc.n_t))
        buf = self.scratch.get()
        try:
            if full and self.store_tables:
                V_all, Q_all, TH_all, m_all = self.rows
                v_rows, q_buf, thr_buf, m_rows = V_all[k], Q_all[k], TH_all[k], m_all[k]
            else:
                q_buf, v_rows, m_rows, thr_buf = buf
            s0 = time.perf_counter()
            self.backward(self.pops[k], coef, self.rule, self.mesh, v_rows, q_buf, thr_buf, _NO_C)
            s1 = time.perf_counter()
            self.forward(disc.m0[k], self.pops[k], coef, q_buf, self.mesh, m_rows, e, (disc.x, stats))
            s2 = time.perf_counter()
        finally:
            self.scratch.put(buf)
        return e, stats, s1 - s0, s2 - s1

    def _mean_field(self, outs, M):
        """NAV-weighted mean of ``L`` over the active populations (summed in population order)."""
        num = np.zeros(self.disc.n_t)
        den = np.zeros(self.disc.n_t)
        for w, o, a in zip(self.disc.weights, outs, self.act_f):
            den += (w * o[1][0]) * a
            num += (w * o[1][1]) * a
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0.0, num / den, M)

    def _collapse_hint(self, n: int) -> str:
        mk = self.disc.model.market
        state = ""
        if self.last is not None:
            sh, K = self.last.market.pressure, self.last.market.capital
            state = (f"; the map's last market there: sell pressure {sh[n]:.3g}, buyer capital {K[n]:.3g}, "
                     f"beta * S_hat / K = {mk.beta * sh[n] / max(K[n], self.market_params.K_floor):.3g}")
        return (f"the market has collapsed (docs/model.md 2.4b: the impact market can drive the price to 0){state}; "
                f"inputs most likely responsible: market.beta={mk.beta:g}, market.S0={mk.S0:g}, "
                f"market.K0={mk.K0:g}, market.Kbar={mk.Kbar:g}, market.pbar={mk.pbar:g} and the populations' alpha")

    def _map_path(self, P, M, keep_rows):
        disc = self.disc
        s = time.perf_counter()
        outs = self._map(self._population, range(disc.n_pop), disc.coefficients(P, M), [keep_rows] * disc.n_pop)
        self.timings["backward"] += sum(o[2] for o in outs)
        self.timings["forward"] += sum(o[3] for o in outs)
        self.timings["sweeps"] += time.perf_counter() - s
        s = time.perf_counter()
        exit_mass = np.array([o[0] for o in outs])
        S, s_hat, P_new, K, pi = market_path(exit_mass, disc.weights, disc.life_factor, disc.Kbar, disc.pbar,
                                             disc.dt, self.market_params, disc.S0, disc.K0)
        nan = np.full(disc.n_t, np.nan)
        market = MarketPath(S, s_hat, P_new, K, pi, nan, nan, nan, np.full(disc.n_t, -1))
        M_new = self._mean_field(outs, M)
        self.timings["market"] += time.perf_counter() - s
        masses = np.array([o[1][0] for o in outs])
        edge = np.array([max(float(np.max(o[1][3])), float(np.max(o[1][4]))) for o in outs])
        sens = None
        if self.options.precondition and self.rule.temperature > 0.0:
            sens = np.zeros((disc.n_pop, disc.n_t))
            for k in range(disc.n_pop):
                if disc.in_window[k]:
                    sens[k] = (disc.life_factor[k] / self.rule.temperature) * outs[k][1][2]
        return exit_mass, market, M_new, sens, masses, edge

    def step(self, ev: Evaluation) -> np.ndarray:
        """The preconditioned price residual ``D (P_new - P)``: a quasi-Newton step on the market recursion
        where each step's exits react to that step's price (logit derivative)."""
        fP = ev.P_new - ev.P
        if ev.sens is None:
            return fP
        mk = ev.market
        return market_newton(fP, ev.sens, self.disc.weights, self.disc.life_factor, ev.exit_mass,
                             (mk.price, mk.pressure, mk.capital), self.disc.dt, self.market_params)


class ClearingSweeps(PathSweeps):
    """The map with the clearing market of docs/model.md 2.4: the backward sweeps (in threads) store the
    continuation values on the iterate's path; one forward sweep of all populations then clears the
    market at every step (:func:`mfg.lp_exit.clearing.clearing_forward`)."""

    PHASES = ("backward", "forward", "sweeps", "exploitability")

    def __init__(self, disc, method, options, store_tables=True):
        super().__init__(disc, method, options, store_tables)
        self.params = clearing_params(disc.model.market)
        n_pop, n_t, n_L = disc.n_pop, disc.n_t, disc.grid.n_L
        self.C_work = np.zeros((n_pop, n_t, n_L))
        self.C_rows: np.ndarray | None = None
        self.m_work = np.zeros((n_pop, 2, n_L))
        self.stack = ForwardStack(disc.n_first, disc.n_last, disc.matures, disc.weights, disc.q_max,
                                  disc.kappa_target, disc.life_factor, disc.sigma, disc.lam, disc.alpha,
                                  disc.drift_a, disc.phi, disc.dfac, disc.x, disc.pbar, disc.Kbar)
        self.iterations_root = 0

    def _backward(self, k, coef, C, keep_rows):
        if not self.disc.in_window[k]:
            return 0.0
        buf = self.scratch.get()
        try:
            q_buf, v_rows, _, thr_buf = buf
            if keep_rows:
                V_all, _, TH_all, _ = self.rows
                v_rows, thr_buf = V_all[k], TH_all[k]
            s0 = time.perf_counter()
            self.backward(self.pops[k], coef, self.rule, self.mesh, v_rows, q_buf, thr_buf, C[k])
            return time.perf_counter() - s0
        finally:
            self.scratch.put(buf)

    def _collapse_hint(self, n: int) -> str:
        return "a clearing price cannot reach 0 while buyers hold capital (docs/model.md 2.4): this is a bug"

    def _map_path(self, P, M, keep_rows):
        disc = self.disc
        n_pop, n_t, n_L = disc.n_pop, disc.n_t, disc.grid.n_L
        s = time.perf_counter()
        tables = keep_rows and self.store_tables
        if tables:
            if self.C_rows is None:
                self.C_rows = np.zeros((n_pop, n_t, n_L))
            C = self.C_rows
        else:
            C = self.C_work
        secs = self._map(self._backward, range(n_pop), disc.coefficients(P, M), [C] * n_pop, [tables] * n_pop)
        self.timings["backward"] += sum(secs)
        s1 = time.perf_counter()
        nan = np.full(n_t, np.nan)
        out = ForwardOut(price=np.empty(n_t), volume=np.zeros(n_t), withdrawn=np.zeros(n_t), capital=np.empty(n_t),
                         spend=np.zeros(n_t), residual=np.zeros(n_t), branch=np.zeros(n_t, dtype=np.int64),
                         mean_field=np.empty(n_t), exits=np.zeros((n_pop, n_t)),
                         vintage_price=np.zeros((n_pop, n_t)), stats=np.zeros((n_pop, 3, n_t)),
                         edge=np.zeros(n_pop), q=self.rows[1] if tables else np.empty((0, 0, 0)),
                         m=self.rows[3] if tables else self.m_work)
        self.iterations_root += clearing_forward(self.stack, self.params, self.mesh, C, disc.m0, P,
                                                 float(self.rule.temperature), float(disc.K0),
                                                 0 if self.method == "sl" else 1, keep_rows, out)
        self.timings["forward"] += time.perf_counter() - s1
        self.timings["sweeps"] += time.perf_counter() - s
        market = MarketPath(out.volume, nan, out.price, out.capital, out.vintage_price, out.withdrawn, out.spend,
                            out.residual, out.branch)
        return out.exits, market, out.mean_field, None, out.stats[:, 0, :], out.edge

    def extra_outputs(self) -> dict:
        return {"continuation": self.C_rows}


def path_sweeps(disc: LPDiscretisation, method: str, options: SolverOptions, store_tables: bool = True) -> PathSweeps:
    """The :class:`PathSweeps` of the model's market kind."""
    return (ClearingSweeps if disc.market_kind == "clearing" else ImpactSweeps)(disc, method, options, store_tables)


def exploitability(sweeps: PathSweeps, P: np.ndarray, M: np.ndarray, policy: np.ndarray) -> float:
    """NAV-weighted gain of one LP who plays the hard best response to the path ``(P, M)`` instead of ``policy``.

    ``policy``: ``(n_pop, n_t, n_L)`` exit probabilities.  Both values come from the
    backward sweep (best response at temperature 0, and policy evaluation), integrated
    over each population's masses at entry (docs/model.md 2.5).  Only the value at entry
    is needed, so the sweeps keep two rows.
    """
    disc = sweeps.disc

    def gain_of(k, coef):
        if not disc.in_window[k]:
            return 0.0
        pop, n_first = sweeps.pops[k], int(disc.n_first[k])
        q_buf, rows, _, thr_buf = buf = sweeps.scratch.get()
        try:
            sweeps.backward(pop, coef, ExitRule(0.0, False, _NO_POLICY), sweeps.mesh, rows, q_buf, thr_buf, _NO_C)
            v_br = rows[n_first & 1].copy()
            sweeps.backward(pop, coef, ExitRule(0.0, True, policy[k]), sweeps.mesh, rows, q_buf, thr_buf, _NO_C)
            return float(np.dot(disc.m0[k], v_br - rows[n_first & 1]))
        finally:
            sweeps.scratch.put(buf)

    gains = sweeps._map(gain_of, range(disc.n_pop), disc.coefficients(P, M))
    gain = 0.0
    for w, g_k in zip(disc.weights, gains):  # summed in population order whatever the thread count
        gain += w * g_k
    return gain


def _policy_of(sweeps: PathSweeps, k: int, coef_it, P_final: np.ndarray) -> np.ndarray:
    """Population ``k``'s equilibrium policy table ``(n_t, n_L)`` recomputed without the stored tables.

    Impact market: the exit probabilities of the backward sweep on the accepted iterate's path.
    Clearing market: the continuation values of that sweep and the cleared prices
    ``P_final``, ``q = q_max logistic((P A dfac - phi - C) / eps)`` (the hard rule at
    ``eps = 0``, without the rationing of a marginal group)."""
    disc = sweeps.disc
    n_t, n_L = disc.n_t, disc.grid.n_L
    pop = sweeps.pops[k]
    q = np.zeros((n_t, n_L))
    C = np.zeros((n_t, n_L)) if disc.market_kind == "clearing" else _NO_C
    sweeps.backward(pop, coef_it, sweeps.rule, sweeps.mesh, np.empty((2, n_L)), q, np.empty(n_t), C)
    if disc.market_kind != "clearing":
        return q
    rows = slice(int(pop.n_first), int(pop.n_last))
    G = (P_final[rows] * disc.life_factor[k, rows])[:, None] * pop.dfac[None, :] - pop.phi
    eps = sweeps.rule.temperature
    out = np.zeros((n_t, n_L))
    if eps > 0.0:
        out[rows] = pop.q_max[rows, None] * expit((G - C[rows]) / eps)
    else:
        out[rows] = np.where(G > C[rows], pop.q_max[rows, None], 0.0)
    return out


def exploitability_streamed(sweeps: PathSweeps, ev: Evaluation, P: np.ndarray, M: np.ndarray) -> float:
    """:func:`exploitability` when no policy table is stored (``store="paths"``): each population's
    policy is recomputed on the accepted iterate ``ev`` (:func:`_policy_of`), one population at a
    time, so the memory is one table per thread, not one per population."""
    disc = sweeps.disc

    def gain_of(k, coef_it, coef):
        if not disc.in_window[k]:
            return 0.0
        policy = _policy_of(sweeps, k, coef_it, P)
        pop, n_first, n_L = sweeps.pops[k], int(disc.n_first[k]), disc.grid.n_L
        rows, q_buf, thr_buf = np.empty((2, n_L)), np.zeros((disc.n_t, n_L)), np.empty(disc.n_t)
        sweeps.backward(pop, coef, ExitRule(0.0, False, _NO_POLICY), sweeps.mesh, rows, q_buf, thr_buf, _NO_C)
        v_br = rows[n_first & 1].copy()
        sweeps.backward(pop, coef, ExitRule(0.0, True, policy), sweeps.mesh, rows, q_buf, thr_buf, _NO_C)
        return float(np.dot(disc.m0[k], v_br - rows[n_first & 1]))

    gains = sweeps._map(gain_of, range(disc.n_pop), disc.coefficients(ev.P, ev.M), disc.coefficients(P, M))
    gain = 0.0
    for w, g_k in zip(disc.weights, gains):
        gain += w * g_k
    return gain


def bookkeeping_from_masses(disc: LPDiscretisation, masses: np.ndarray, edges: np.ndarray, exit_mass: np.ndarray):
    """:func:`bookkeeping` from the masses per step ``(n_pop, n_t)`` and the end-node masses that the
    sweeps record (``store="paths"``: no density table)."""
    n_pop, n_t, N = disc.n_pop, disc.n_t, disc.N
    active_mass, exited_mass, matured_mass = np.zeros((n_pop, n_t)), np.zeros((n_pop, n_t)), np.zeros((n_pop, n_t))
    edge = 0.0
    for k in range(n_pop):
        e, a = exit_mass[k], disc.active[k]
        n_first, n_last = int(disc.n_first[k]), int(disc.n_last[k])
        if not disc.in_window[k]:
            exited_mass[k] = disc.exited0[k]
            matured_mass[k] = disc.matured0[k]
            continue
        edge = max(edge, float(edges[k]))
        exited_mass[k, n_first:] = disc.exited0[k]
        exited_mass[k, n_first + 1:] += np.cumsum(e[n_first:N])
        matured_mass[k, n_first:] = disc.matured0[k]
        if disc.matures[k]:
            matured_mass[k, n_last:] += masses[k, n_last]
        active_mass[k] = np.where(a, masses[k], 0.0)
    return active_mass, exited_mass, matured_mass, edge


def bookkeeping(disc: LPDiscretisation, masses: np.ndarray, exit_mass: np.ndarray):
    """Active, exited and matured fractions per population and step, and the largest mass on an end node.

    ``masses``: ``(n_pop, n_t, n_L)`` nodal masses of the sweeps, turned IN PLACE into the
    density of the active LPs (``m / dL`` on active rows, 0 elsewhere).  Returns
    ``(active_mass, exited_mass, matured_mass, edge)``.
    """
    n_pop, n_t, N = disc.n_pop, disc.n_t, disc.N
    active_mass, exited_mass, matured_mass = np.zeros((n_pop, n_t)), np.zeros((n_pop, n_t)), np.zeros((n_pop, n_t))
    edge = 0.0
    for k in range(n_pop):
        m, e, a = masses[k], exit_mass[k], disc.active[k]
        n_first, n_last = int(disc.n_first[k]), int(disc.n_last[k])
        if not disc.in_window[k]:
            exited_mass[k] = disc.exited0[k]
            matured_mass[k] = disc.matured0[k]
            continue
        edge = max(edge, float(np.max(m[:, 0])), float(np.max(m[:, -1])))
        exited_mass[k, n_first:] = disc.exited0[k]
        exited_mass[k, n_first + 1:] += np.cumsum(e[n_first:N])
        matured_mass[k, n_first:] = disc.matured0[k]
        if disc.matures[k]:
            matured_mass[k, n_last:] += m[n_last].sum()
        active_mass[k] = np.where(a, m.sum(axis=1), 0.0)
        m[~a] = 0.0
        np.divide(m, disc.grid.dL, out=m)
    return active_mass, exited_mass, matured_mass, edge


def memory_needed(disc: LPDiscretisation, options: SolverOptions, store: str = "all") -> float:
    """Bytes a solve allocates (docs/lp_exit.md, "Memory").

    ``store="all"``: the result's value, exit probabilities and densities, ``3 n_pop n_t n_L``
    doubles, and in the clearing market its continuation values twice (the working copy and
    the result's); ``store="paths"``: the clearing market's working continuation values only.
    Plus one scratch set per thread, ``n_t (n_L + 1) + 4 n_L`` doubles (``store="paths"``: two
    more tables per thread for the streamed exploitability)."""
    n_t, n_L = disc.n_t, disc.grid.n_L
    workers = max(1, min(int(options.workers), int(disc.in_window.sum())))
    clearing = disc.market_kind == "clearing"
    if store == "all":
        tables = 5 if clearing else 3
        per_thread = n_t * (n_L + 1) + 4 * n_L
    else:
        tables = 1 if clearing else 0
        per_thread = 3 * n_t * n_L + n_t + 6 * n_L
    return 8.0 * (tables * disc.n_pop * n_t * n_L + workers * per_thread)


def _thresholds(sweeps: PathSweeps, ev: Evaluation) -> np.ndarray:
    """``(n_pop, n_t)`` exit thresholds of the accepted iterate (``store="paths"``: the final evaluation
    did not write them), from one backward sweep per population."""
    disc = sweeps.disc
    n_t, n_L = disc.n_t, disc.grid.n_L
    out = np.full((disc.n_pop, n_t), np.nan)
    for k, coef in enumerate(disc.coefficients(ev.P, ev.M)):
        if disc.in_window[k]:
            sweeps.backward(sweeps.pops[k], coef, sweeps.rule, sweeps.mesh, np.empty((2, n_L)), np.zeros((n_t, n_L)),
                            out[k], _NO_C)
    return out


def _initial_path(disc: LPDiscretisation, initial: LPState | None, guess):
    """The first iterate: ``P = P̄`` and ``M`` constant at the NAV-weighted mean of the masses at entry, or ``guess``."""
    pops = disc.model.populations
    if initial is None:
        M_init = float(np.dot(disc.weights, [p.initial_mean for p in pops]))
    else:
        num = sum(w * float(m @ disc.x) for w, m, a in zip(disc.weights, disc.m0, disc.active) if a[0])
        den = sum(w * float(m.sum()) for w, m, a in zip(disc.weights, disc.m0, disc.active) if a[0])
        M_init = num / den if den > 0.0 else float(np.dot(disc.weights, [p.initial_mean for p in pops]))
    P, M = disc.pbar.copy(), np.full(disc.n_t, M_init)
    if guess is not None:
        P_g, M_g = (np.array(a, dtype=float) for a in guess)
        if P_g.shape != (disc.n_t,) or M_g.shape != (disc.n_t,):
            raise ValueError(f"guess must be two arrays of shape ({disc.n_t},), got {P_g.shape} and {M_g.shape}")
        if not (np.all(np.isfinite(P_g)) and np.all(P_g > 0.0) and np.all(np.isfinite(M_g))):
            raise ValueError("guess: P must be finite and > 0, M finite")
        P, M = P_g, M_g
    return P, M


def check_arguments(model, grid, options, method: str = "sl") -> SolverOptions:
    """Type checks of :func:`solve`'s arguments; returns the options (defaults for ``None``)."""
    if method not in SWEEPS:
        raise ValueError(f"method must be one of {sorted(SWEEPS)}, got {method!r}")
    if not isinstance(model, LPExitModel):
        raise TypeError(f"model must be an LPExitModel, got {type(model).__name__}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
    options = SolverOptions() if options is None else options
    if not isinstance(options, SolverOptions):
        raise TypeError(f"options must be SolverOptions, got {type(options).__name__}")
    return options


STORE = ("all", "paths")


def solve(model: LPExitModel, grid: Grid, options: SolverOptions | None = None, method: str = "sl", *,
          initial: LPState | None = None, inputs: MarketInputs | None = None,
          guess: tuple[np.ndarray, np.ndarray] | None = None, store: str = "all") -> LPExitResult:
    """Solve the LP-exit MFG (docs/model.md 2.5) by a safeguarded, Anderson-accelerated fixed point on ``(P^n, M^n)``.

    ``method``: ``"sl"`` (the second-order semi-Lagrangian scheme of docs/model.md 2.6) or
    ``"fd"`` (the finite-difference cross-check).  ``initial``: an :class:`LPState` to
    start from at ``initial.t0`` (the window becomes ``[t0, model.end]``).  ``inputs``:
    :class:`MarketInputs` with time-varying ``Kbar``, ``pbar`` and ``sigma`` on the
    window's time grid.  ``guess``: an initial path ``(P, M)`` on the window's time grid
    (e.g. a nearby problem's solution) instead of ``P = P̄`` and ``M`` constant.  ``store``:
    ``"all"`` keeps every table (value, exit probabilities, density, and the clearing
    market's continuation values: what a finite-N market needs as a policy); ``"paths"``
    keeps only the time series (these four are then ``None``), a fraction of the memory
    (:func:`memory_needed`).

    The result follows docs/model.md 3.3 (``converged``, ``status``, ``message``,
    ``iterations``, ``residuals``, ``timings``).  Emits :class:`ConvergenceWarning` at
    ``max_iter`` and :class:`BoundaryMassWarning` when an end node of the grid holds more
    than ``EDGE_MASS_WARN`` of a population's mass.
    """
    options = check_arguments(model, grid, options, method)
    if store not in STORE:
        raise ValueError(f"store must be one of {STORE}, got {store!r}")
    t_start = time.perf_counter()
    disc = discretise(model, grid, initial=initial, inputs=inputs)
    hint = "use a coarser grid (grid.n_L, grid.dt) or a shorter window" + (
        "; store='paths' keeps only the time series" if store == "all" else "")
    check_memory(memory_needed(disc, options, store),
                 f"an LP-exit solve on {disc.n_pop} population(s) x {disc.n_t} steps x {grid.n_L} nodes", hint)
    P0, M0 = _initial_path(disc, initial, guess)
    with path_sweeps(disc, method, options, store == "all") as sweeps:
        fp = anderson_fixed_point(sweeps, P0, M0, tol=options.tol, max_iter=options.max_iter,
                                  depth=int(options.anderson), theta=float(options.damping))
        res = fp.evaluation.residual
        if not fp.converged:
            warnings.warn(f"LP-exit fixed point stopped after {len(sweeps.res_P)} iterations with residual "
                          f"{res:.3g} > tol={options.tol:g}", ConvergenceWarning, stacklevel=2)
        s = time.perf_counter()
        ev = sweeps.finalise(fp.evaluation)
        V_all, Q_all, TH_all, m_all = sweeps.rows if sweeps.rows is not None else (None, None, None, None)
        sweeps.timings["final"] = time.perf_counter() - s
        mk = ev.market
        P_final, M_final = mk.price, ev.M_new
        # exploitability on the final path (the one the policy's own flows produce): against
        # the iterate's path a hard (temperature 0) iterate would always score exactly 0
        s = time.perf_counter()
        if Q_all is not None:
            gain = exploitability(sweeps, P_final, M_final, Q_all)
        else:
            gain = exploitability_streamed(sweeps, ev, P_final, M_final)
            TH_all = _thresholds(sweeps, ev)
        sweeps.timings["exploitability"] = time.perf_counter() - s
    if m_all is not None:
        active_mass, exited_mass, matured_mass, edge = bookkeeping(disc, m_all, ev.exit_mass)
    else:
        active_mass, exited_mass, matured_mass, edge = bookkeeping_from_masses(disc, ev.masses, ev.edge, ev.exit_mass)
    if edge > EDGE_MASS_WARN:
        warnings.warn(f"up to {edge:.2g} of a population's mass sits on an end node of [{grid.L_min}, {grid.L_max}]: "
                      "the clamped boundary is felt; widen the grid", BoundaryMassWarning, stacklevel=2)
    if initial is None:
        initial = LPState(t0=float(disc.t[0]), masses=np.where(disc.active[:, :1], disc.m0, 0.0),
                          K=disc.K0, S_hat=disc.S0)
    timings = sweeps.timings
    timings["total"] = time.perf_counter() - t_start
    iterations = len(sweeps.res_P)
    with np.errstate(invalid="ignore", divide="ignore"):
        deal_price = np.where(mk.flow > 0.0, mk.spend / (mk.flow * disc.dt), np.nan)
    return LPExitResult(
        t=disc.t, L=disc.x, populations=disc.names, price=P_final, vintage_price=mk.vintage_price,
        buyer_capital=mk.capital, sell_pressure=mk.pressure, sell_flow=mk.flow,
        withdrawn=mk.withdrawn, spend=mk.spend, deal_price=deal_price, clearing_residual=mk.residual,
        market_branch=mk.branch, flow=disc.weights[:, None] * ev.exit_mass / disc.dt,
        active_mass=active_mass, exited_mass=exited_mass, matured_mass=matured_mass, mean_liquidity=M_final,
        exit_prob=Q_all, value=V_all, density=m_all, threshold=TH_all,
        residuals=np.maximum(sweeps.res_P, sweeps.res_M), price_residuals=np.array(sweeps.res_P),
        mean_residuals=np.array(sweeps.res_M), exploitability=gain, iterations=iterations,
        converged=bool(fp.converged), status=status_of(fp.converged),
        message=message_of(fp.converged, iterations, res, options.tol), anderson_rejections=fp.rejections,
        edge_mass=edge, timings=timings, initial=initial,
        inputs=MarketInputs(Kbar=disc.Kbar, pbar=disc.pbar, sigma=disc.sigma), model=model, grid=grid,
        options=options, **(sweeps.extra_outputs() if store == "all" else {}),
    )
