"""Second-order semi-Lagrangian solver of the LP-exit mean-field game (MODEL.md 2).

Data flow: :class:`~mfg.lp_exit.params.LPExitModel`, :class:`~mfg.lp_exit.params.Grid`,
:class:`~mfg.lp_exit.params.SolverOptions` → :func:`solve` → :class:`LPExitResult`.

One fixed-point iteration on the path ``(P^n, M^n)`` (MODEL.md 2.5):

1. :func:`backward_sweep` per population: continuation value ``C`` by the
   Carlini–Silva second-order SL step (MODEL.md 2.6), logit exit at bounded
   intensity (MODEL.md 2.3), ``V = C + q (G - C)``;
2. :func:`forward_sweep` per population: the exact adjoint of the same step; the mass
   ``m_i q_i`` exits and is recorded, ``m_i (1 - q_i)`` moves to the two feet;
3. the market recursion of MODEL.md 2.4 (:func:`mfg.lp_exit.market.market_path`) on the
   exited masses gives the new price path; the NAV-weighted mean of ``L`` over active
   LPs gives the new mean field;
4. the update: the price residual is preconditioned by a quasi-Newton step on the
   market recursion (:func:`_market_newton`), then a type-II Anderson step of depth
   ``options.anderson`` with mixing ``θ = options.damping`` is taken, with safeguards
   (docs/lp_exit_fixed_point.md); with ``anderson=0, precondition=False`` this is the
   damped update ``path <- (1 - θ) path + θ new``.

Starting from a state.  ``solve(..., initial=LPState(...))`` starts at a step ``t0`` of
the model's grid from given active masses, buyer capital and sell pressure (the window
becomes ``[t0, end]``; all schedules are those of the full grid, cut at ``t0``);
``inputs=MarketInputs(...)`` makes ``Kbar``, ``pbar`` and each population's ``sigma``
time-varying; :meth:`LPExitResult.state_at` returns the state at a step of a solution.
These serve unanticipated shocks (MODEL.md 2.7).

Time indexing.  ``t_n = start + n dt``, ``n = 0..N``; every time series has ``N + 1``
entries.  The exit decision of step ``n`` (from ``t_n`` to ``t_{n+1}``) uses the price
``P^n`` of that same step (which includes that step's flow, MODEL.md 2.4) and the
mean field ``M^n`` at ``t_n``.  A population enters at the step nearest its vintage
(or at ``start``) and leaves at the step nearest ``vintage + life`` (its terminal
value there is ``V = 1``: the fund pays NAV); a fund that outlives the window is
valued at par, ``V(t_N) = 1``, at the window's end (extend the window beyond the
period of interest to push that truncation away).  No sale happens at ``t_N``.

The kernels work on plain arrays (one population at a time) so the finite-N market
and the finite-difference method can reuse or replace them: ``_SWEEPS[method]`` pairs
the public sweeps, with the signatures and semantics of :func:`backward_sweep` and
:func:`forward_sweep` (``sigma`` an array over steps); ``solve`` runs the buffered
forms of the same kernels, ``_SWEEP_KERNELS[method]`` (:func:`_sl_backward`,
:func:`_sl_forward` and their FD twins: output arrays passed in and reused across
iterations, two rows of the value and the density kept during the iterations, the
mean-field moments and the preconditioner's exit sensitivity summed inside the forward
sweep).  The evaluation expected to be the last one writes every row of the value,
policy and density straight into the result's arrays; if another iterate is accepted,
its rows are recomputed once at the end.  The arithmetic is the same in every case, so
the results do not depend on the buffering.
"""

from __future__ import annotations

import math
import queue
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numba import njit

from .exit_rule import _last_stats, _logistic
from .fd import _fd_backward, _fd_forward, fd_backward_sweep, fd_forward_sweep
from .params import Grid, LPExitModel, SolverOptions
from .market import DEFAULT_K_FLOOR, market_constants, market_path
from ..semi_lagrangian import deposit_at

__all__ = [
    "LPExitResult",
    "LPState",
    "MarketInputs",
    "ConvergenceWarning",
    "BoundaryMassWarning",
    "solve",
    "backward_sweep",
    "forward_sweep",
]

#: Mass on an end node above which :func:`solve` warns that the grid is too narrow.
EDGE_MASS_WARN = 1e-6


class ConvergenceWarning(RuntimeWarning):
    """The fixed point stopped at ``max_iter`` before reaching ``tol``."""


class BoundaryMassWarning(RuntimeWarning):
    """Non-negligible mass sits on an end node of the liquidity grid."""


# ----------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------


#: Logit arguments below ``-LOGIT_CUTOFF`` give ``q = 0`` without calling ``exp``
#: (the neglected probability is below ``q_max * exp(-40) = 4e-18 q_max``); above
#: ``+LOGIT_CUTOFF`` the logistic function is exactly 1.0 in double precision anyway.
LOGIT_CUTOFF = 40.0


@njit(cache=True, inline="always")
def _interp_s(values, s, last):
    """P1 interpolant at the grid coordinate ``s = (y - lower)/dx`` (constant outside)."""
    if s <= 0.0:
        return values[0]
    if s >= last:
        return values[last]
    j = int(s)
    w = s - j
    return values[j] + w * (values[j + 1] - values[j])


@njit(cache=True, inline="always")
def _deposit_s(out, s, last, mass):
    """Adjoint of :func:`_interp_s`: ``mass`` at grid coordinate ``s`` split by the P1 weights."""
    if s <= 0.0:
        out[0] += mass
    elif s >= last:
        out[last] += mass
    else:
        j = int(s)
        w = s - j
        out[j] += mass - w * mass
        out[j + 1] += w * mass


@njit(cache=True, inline="always")
def _interior(rate, sp0, sm0, last, n):
    """Node range ``[i_in, i_out)`` whose feet ``i rate + s0±`` lie in ``(0, last)`` with a one-node margin."""
    if rate <= 0.0:
        return 0, 0
    lo = (1.0 - min(sp0, sm0)) / rate + 1.0
    hi = (last - 1.0 - max(sp0, sm0)) / rate - 1.0
    i_in = max(0, int(math.ceil(lo))) if lo > 0.0 else 0
    if hi < 0.0:
        return 0, 0
    i_out = min(n, int(math.floor(hi)) + 1)
    return i_in, max(i_in, i_out)


@njit(cache=True, nogil=True)
def backward_sweep(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                   evaluate, q_given, lower, dx):
    """Backward SL sweep with the exit step of MODEL.md 2.3 for one population.

    Drift ``b(t_n, L) = drift_c[n] - drift_a * L``; feet ``y± = L_i + b dt ± sigma[n] sqrt(dt)``;
    ``C = running_i + discount * (I[V^{n+1}](y+) + I[V^{n+1}](y-)) / 2`` with
    ``running = (y - c(L)) dt`` and ``discount = exp(-(r - g) dt)``; exit value ``G[n]``.
    ``sigma`` is an array over time steps (``(n_t,)``).  The exit probability is

    * ``q = q_max * logistic((G - C) / temperature)`` for ``temperature > 0`` (the
      temperature is a value gap in NAV units, independent of ``dt``; see
      :class:`~mfg.lp_exit.params.SolverOptions` for why this departs from MODEL.md 2.3;
      ``q = 0`` once ``(G - C)/temperature < -LOGIT_CUTOFF``),
    * ``q = q_max * 1{G > C}`` for ``temperature == 0`` (hard rule, the best response),
    * ``q = q_given[n, i]`` when ``evaluate`` (policy evaluation),

    and ``V = C + q (G - C)``.  Decisions are taken at steps ``n_first..n_last-1``;
    ``V[n_last] = terminal``.  Rows outside ``[n_first, n_last]`` are NaN (value) or
    0 (``q``).  ``threshold[n]`` is the exit boundary: the highest zero of the P1
    interpolant of ``C - G`` (exit below it), NaN where ``C - G`` has no sign change.

    The drift is affine in ``L``, so the feet are affine in the node index: the grid
    coordinate of ``y±`` is ``s± = i (1 - drift_a dt) + s0±``, computed without a
    division per node (the same formula as :func:`forward_sweep`, so the two stay
    exact adjoints).  The work is done by :func:`_sl_backward` into arrays allocated
    here (:func:`solve` reuses its own buffers and keeps two value rows only).
    """
    n_t = drift_c.shape[0]
    n = running.shape[0]
    V = np.full((n_t, n), np.nan)
    q = np.zeros((n_t, n))
    thr = np.full(n_t, np.nan)
    _sl_backward(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                 evaluate, q_given, lower, dx, V, q, thr)
    return V, q, thr


@njit(cache=True, nogil=True)
def _sl_backward(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                 evaluate, q_given, lower, dx, V, q, thr):
    """:func:`backward_sweep` into given arrays (the buffered contract shared with the FD kernel).

    ``V``: ``(n_t, n)`` to keep every row (row ``t`` is ``V[t]``), or ``(2, n)`` to keep two
    rows (row ``t`` is ``V[t % 2]``; the value at ``n_first`` ends in ``V[n_first % 2]``).
    Writes ``V`` rows ``n_first..n_last``, ``q`` rows ``n_first..n_last-1`` and
    ``thr[n_first:n_last]`` (NaN where no threshold); nothing else is touched.
    """
    n = running.shape[0]
    last = n - 1
    full = V.shape[0] != 2 or drift_c.shape[0] == 2
    nl = n_last if full else n_last & 1
    for i in range(n):
        V[nl, i] = terminal[i]
    rate = 1.0 - drift_a * dt
    hard = temperature == 0.0
    inv_temp = 1.0 / temperature if temperature > 0.0 else 0.0
    crow = np.empty(n)
    half_disc = 0.5 * discount
    for t in range(n_last - 1, n_first - 1, -1):
        sq = sigma[t] * math.sqrt(dt) / dx
        base = (drift_c[t] * dt - drift_a * dt * lower) / dx
        sp0 = base + sq
        sm0 = base - sq
        if full:
            nxt = V[t + 1]
            cur = V[t]
        else:
            nxt = V[(t + 1) & 1]
            cur = V[t & 1]
        qt = q[t]
        gt = G[t]
        # nodes whose two feet lie strictly inside the grid (with a margin of one node
        # against rounding) need no clamping: the middle loop has no branch; C is
        # computed first (into a scratch row), then the exit rule and the threshold
        i_in, i_out = _interior(rate, sp0, sm0, last, n)
        for i in range(i_in):
            fi = i * rate
            crow[i] = running[i] + half_disc * (_interp_s(nxt, fi + sp0, last) + _interp_s(nxt, fi + sm0, last))
        for i in range(i_in, i_out):
            fi = i * rate
            sp = fi + sp0
            jp = int(sp)
            wp = sp - jp
            sm = fi + sm0
            jm = int(sm)
            wm = sm - jm
            crow[i] = running[i] + half_disc * ((nxt[jp] + wp * (nxt[jp + 1] - nxt[jp]))
                                                + (nxt[jm] + wm * (nxt[jm + 1] - nxt[jm])))
        for i in range(max(i_in, i_out), n):
            fi = i * rate
            crow[i] = running[i] + half_disc * (_interp_s(nxt, fi + sp0, last) + _interp_s(nxt, fi + sm0, last))
        above = -1  # highest node i-1 with C - G <= 0 at i-1 and C - G > 0 at i
        d_lo = 0.0
        d_hi = 0.0
        prev_d = 0.0
        # the exit rule, specialised by kind (no per-node test of the kind); where the
        # logit is cut off, q = 0 and V = C exactly (C + 0 * d)
        if evaluate or hard:
            for i in range(n):
                c = crow[i]
                d = gt - c
                if evaluate:
                    qi = q_given[t, i]
                else:
                    qi = q_max if d > 0.0 else 0.0
                qt[i] = qi
                cur[i] = c + qi * d
                if i > 0 and prev_d >= 0.0 and d < 0.0:
                    above = i - 1
                    d_lo = prev_d
                    d_hi = d
                prev_d = d
        else:
            for i in range(n):
                c = crow[i]
                d = gt - c
                z = d * inv_temp
                if z < -LOGIT_CUTOFF:
                    qt[i] = 0.0
                    cur[i] = c
                else:
                    if z > LOGIT_CUTOFF:
                        qi = q_max
                    else:
                        qi = q_max * _logistic(z)  # logistic(z) rounds to 1.0 for z > 37
                    qt[i] = qi
                    cur[i] = c + qi * d
                if prev_d >= 0.0 and d < 0.0 and i > 0:
                    above = i - 1
                    d_lo = prev_d
                    d_hi = d
                prev_d = d
        if above >= 0:
            # zero of the P1 interpolant of C - G = -d between nodes above and above + 1
            thr[t] = lower + dx * (above + d_lo / (d_lo - d_hi))
        else:
            thr[t] = np.nan


@njit(cache=True, nogil=True)
def forward_sweep(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx):
    """Exact adjoint of :func:`backward_sweep` (MODEL.md 2.6) for one population.

    ``m0`` are nodal masses (summing to at most 1) placed at step ``n_first``.  In step
    ``n`` the mass ``m_i q_i`` exits (summed into ``exited[n]``) and ``m_i (1 - q_i)``
    moves to the feet ``y±`` with weight 1/2 each, split by the P1 weights (clamped at
    the ends, so no mass is lost).  ``sigma`` is an array over time steps.  Returns
    ``m`` of shape ``(n_t, n)`` (zero outside ``[n_first, n_last]``) and ``exited`` of
    shape ``(n_t,)``.  The work is done by :func:`_sl_forward`.
    """
    n_t = drift_c.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_t, n))
    exited = np.zeros(n_t)
    _sl_forward(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx, m, exited, m0, 0.0,
                np.empty((0, 0)))
    return m, exited


@njit(cache=True, nogil=True)
def _sl_forward(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx, m, exited, x, q_max, stats):
    """:func:`forward_sweep` into given arrays (the buffered contract shared with the FD kernel).

    ``m``: ``(n_t, n)`` to keep every row, or ``(2, n)`` to keep two rows (row ``t`` is
    ``m[t % 2]``); rows outside ``[n_first, n_last]`` are not touched.  ``exited[n]`` is
    written for ``n_first <= n < n_last``.  ``stats``: ``(3, n_t)`` or empty; when given,
    ``stats[0, n] = sum_i m_i``, ``stats[1, n] = sum_i x_i m_i`` for ``n_first <= n <=
    n_last`` and ``stats[2, n] = sum_{q_i > 0} m_i q_i (1 - q_i / q_max)`` (0 if ``q_max
    <= 0``) for ``n_first <= n < n_last``: the moments of the mean field and the exit
    sensitivity of the preconditioner, summed in node order.
    """
    n = m0.shape[0]
    last = n - 1
    full = m.shape[0] != 2 or drift_c.shape[0] == 2
    want = stats.shape[0] == 3
    sens = want and q_max > 0.0
    inv = 1.0 / q_max if sens else 0.0
    r0 = n_first if full else n_first & 1
    for i in range(n):
        m[r0, i] = m0[i]
    rate = 1.0 - drift_a * dt
    for t in range(n_first, n_last):
        sq = sigma[t] * math.sqrt(dt) / dx
        base = (drift_c[t] * dt - drift_a * dt * lower) / dx
        sp0 = base + sq
        sm0 = base - sq
        if full:
            cur = m[t]
            nxt = m[t + 1]
        else:
            cur = m[t & 1]
            nxt = m[(t + 1) & 1]
        nxt[:] = 0.0
        qt = q[t]
        e = 0.0
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        i_in, i_out = _interior(rate, sp0, sm0, last, n)
        for i in range(n):
            mass = cur[i]
            if want:
                s0 += mass
                s1 += x[i] * mass
            if mass == 0.0:
                continue
            qi = qt[i]
            out = mass * qi
            e += out
            if sens and qi > 0.0:
                s2 += mass * qi * (1.0 - qi * inv)
            half = 0.5 * (mass - out)
            fi = i * rate
            if i_in <= i < i_out:  # both feet strictly inside: no clamping
                sp = fi + sp0
                jp = int(sp)
                wp = sp - jp
                nxt[jp] += half - wp * half
                nxt[jp + 1] += wp * half
                sm = fi + sm0
                jm = int(sm)
                wm = sm - jm
                nxt[jm] += half - wm * half
                nxt[jm + 1] += wm * half
            else:
                _deposit_s(nxt, fi + sp0, last, half)
                _deposit_s(nxt, fi + sm0, last, half)
        exited[t] = e
        if want:
            stats[0, t] = s0
            stats[1, t] = s1
            stats[2, t] = s2
    if want:
        _last_stats(m, n_last, full, x, stats)


@njit(cache=True)
def _market_newton(f, sens, weights, life, E, P, s_hat, K, dt, beta, tau_s, theta_K, K_floor):
    """Solve ``delta = f + J delta`` for the price correction ``delta`` (a quasi-Newton step).

    ``J`` is the linearised response of the market recursion (MODEL.md 2.4) to the price
    path when each step's exits react to that same step's price only, ``dE_k^n =
    sens[k, n] delta^n`` (``sens``: derivative of the exiting mass of population ``k``
    in step ``n`` with respect to ``P^n``; anticipation through continuation values and
    the transport of mass are neglected).  ``J`` is causal (lower triangular: a sale
    moves the sell pressure ``Ŝ`` and the buyer capital ``K`` of later steps), so the
    solve is one forward recursion.  ``P, s_hat, K`` and ``E`` (exit masses) are the
    market's current path.
    """
    n_pop, n_t = sens.shape
    delta = np.empty(n_t)
    c1 = 1.0 - dt / tau_s
    dsh = 0.0  # d S_hat^{n-1}
    dK = 0.0  # d K^n
    for n in range(n_t):
        Kc = max(K[n], K_floor)
        u = 0.0
        for k in range(n_pop):
            u += weights[k] * sens[k, n]
        pb = P[n] * beta / Kc
        a = -pb * c1 * dsh
        if K[n] > K_floor:
            a += pb * s_hat[n] * dK / Kc
        b = -pb * u / tau_s
        d = (f[n] + a) / (1.0 - b)
        delta[n] = d
        dsh = c1 * dsh + u * d / tau_s
        dP = a + b * d
        spent = 0.0
        for k in range(n_pop):
            spent += weights[k] * life[k, n] * (dP * E[k, n] + P[n] * sens[k, n] * d)
        dK = (1.0 - dt * theta_K) * dK - spent
    return delta


# ----------------------------------------------------------------------------------
# state and time-varying inputs (scenario shocks, MODEL.md 2.7)
# ----------------------------------------------------------------------------------


def _frozen_array(a, name, ndim):
    arr = np.array(a, dtype=float)  # a copy: the caller's array may change later
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class LPState:
    """State of the market at time ``t0`` (a node of the model's step grid), before step ``t0``'s sales.

    ``masses``: ``(n_pop, n_L)`` nodal masses of the ACTIVE LPs of each population (order
    of ``model.populations``), each row summing to at most 1: the rest has sold or
    matured.  A population that has not entered yet at ``t0`` must have a zero row (it
    enters later with its initial law); one that has matured has a zero row too.
    ``K``: buyer capital ``K`` at the start of the step; ``S_hat``: the sell pressure
    ``Ŝ`` carried into the step (``Ŝ^{n-1}``).  ``exited``, ``matured``: optional
    ``(n_pop,)`` fractions that have sold / been paid out before ``t0``, for the
    bookkeeping of the result only; by default the missing mass of a population active
    at ``t0`` counts as exited, that of a matured population as matured.
    :meth:`LPExitResult.state_at` builds one; a shock is applied by editing a copy
    (shift ``masses`` along the grid, scale ``K``) and solving from it with
    ``solve(..., initial=state)``.
    """

    t0: float
    masses: np.ndarray
    K: float
    S_hat: float
    exited: np.ndarray | None = None
    matured: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "t0", float(self.t0))
        object.__setattr__(self, "K", float(self.K))
        object.__setattr__(self, "S_hat", float(self.S_hat))
        if not (math.isfinite(self.t0) and math.isfinite(self.K) and math.isfinite(self.S_hat)):
            raise ValueError("LPState: t0, K and S_hat must be finite")
        if self.S_hat < 0.0:
            raise ValueError(f"LPState.S_hat must be >= 0, got {self.S_hat}")
        masses = _frozen_array(self.masses, "LPState.masses", 2)
        if np.any(masses < 0.0):
            raise ValueError("LPState.masses must be >= 0")
        if np.any(masses.sum(axis=1) > 1.0 + 1e-9):
            raise ValueError("LPState.masses: each population's active mass must sum to at most 1")
        object.__setattr__(self, "masses", masses)
        for name in ("exited", "matured"):
            v = getattr(self, name)
            if v is not None:
                v = _frozen_array(v, f"LPState.{name}", 1)
                if v.shape[0] != masses.shape[0] or np.any(v < 0.0):
                    raise ValueError(f"LPState.{name} must hold one fraction >= 0 per population")
                object.__setattr__(self, name, v)


@dataclass(frozen=True, eq=False)
class MarketInputs:
    """Time-varying exogenous inputs over the solve's window (MODEL.md 2.7).

    Each array lives on the solve's time grid ``t0, t0 + dt, ..., end`` (``n_t`` entries;
    ``t0`` is the model's ``start`` or the initial state's ``t0``); ``None`` means the
    model's constant.  ``Kbar``: ``(n_t,)`` target buyer capital; ``pbar``: ``(n_t,)``
    calm price factor ``P̄`` (it sets both the price level and the mark-to-market term
    ``alpha log(P/P̄)``); ``sigma``: ``(n_pop, n_t)`` liquidity volatility per population.
    Entry ``n`` acts on step ``n`` (from ``t_n`` to ``t_{n+1}``).
    """

    Kbar: np.ndarray | None = None
    pbar: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def __post_init__(self):
        for name, ndim in (("Kbar", 1), ("pbar", 1), ("sigma", 2)):
            v = getattr(self, name)
            if v is None:
                continue
            v = _frozen_array(v, f"MarketInputs.{name}", ndim)
            if name == "sigma" and np.any(v < 0.0):
                raise ValueError("MarketInputs.sigma must be >= 0")
            if name != "sigma" and np.any(v <= 0.0):
                raise ValueError(f"MarketInputs.{name} must be > 0")
            object.__setattr__(self, name, v)

    def resolved(self, model: LPExitModel, n_t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(Kbar, pbar, sigma)`` as full arrays of shapes ``(n_t,), (n_t,), (n_pop, n_t)``."""
        n_pop = len(model.populations)
        Kbar = np.full(n_t, float(model.market.Kbar)) if self.Kbar is None else self.Kbar
        pbar = np.full(n_t, float(model.market.pbar)) if self.pbar is None else self.pbar
        sigma = (np.tile(np.array([float(p.sigma) for p in model.populations])[:, None], (1, n_t))
                 if self.sigma is None else self.sigma)
        for name, v, shape in (("Kbar", Kbar, (n_t,)), ("pbar", pbar, (n_t,)), ("sigma", sigma, (n_pop, n_t))):
            if v.shape != shape:
                raise ValueError(f"MarketInputs.{name} has shape {v.shape}; this solve needs {shape} "
                                 f"(n_pop={n_pop}, n_t={n_t} steps of the window)")
        return (np.ascontiguousarray(Kbar, dtype=float), np.ascontiguousarray(pbar, dtype=float),
                np.ascontiguousarray(sigma, dtype=float))


# ----------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------


class _SeriesResult:
    """Properties and frames shared by :class:`LPExitResult` and
    :class:`~mfg.lp_exit.scenarios.ScenarioResult` (same series fields, ``model`` and ``grid``)."""

    @property
    def dt(self) -> float:
        return float(self.grid.dt)

    @property
    def dL(self) -> float:
        return float(self.L[1] - self.L[0])

    @property
    def active_nav(self) -> np.ndarray:
        """(n_t,) NAV still held by active LPs, as a fraction of the market's NAV (``sum_k w_k active_k``)."""
        return self.model.weights @ self.active_mass

    @property
    def turnover(self) -> np.ndarray:
        """(n_t,) sell flow per unit of active NAV (1/yr; NaN where nobody is active)."""
        nav = self.active_nav
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(nav > 0.0, self.sell_flow / nav, np.nan)

    def _initial_S_hat(self) -> float:
        raise NotImplementedError

    def _state_at(self, n: int) -> LPState:
        n_t = self.t.size
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"n must be an integer step index, got {type(n).__name__}")
        if not 0 <= n < n_t:
            raise IndexError(f"step {n} is outside 0..{n_t - 1}")
        n = int(n)
        return LPState(
            t0=float(self.t[n]),
            masses=self.density[:, n, :] * self.dL,
            K=float(self.buyer_capital[n]),
            S_hat=float(self.sell_pressure[n - 1]) if n > 0 else self._initial_S_hat(),
            exited=self.exited_mass[:, n].copy(),
            matured=self.matured_mass[:, n].copy(),
        )

    def _frame(self, kind: str, segment: np.ndarray | None = None, market_extra: dict | None = None) -> pd.DataFrame:
        """The frames of ``to_frame``; ``segment`` (n_t,) adds a ``segment`` column after ``t``,
        ``market_extra`` columns after the market frame's ``turnover``."""
        if kind == "market":
            return pd.DataFrame({
                "t": self.t,
                **({} if segment is None else {"segment": segment}),
                "price": self.price,
                "discount": 1.0 - self.price,
                "buyer_capital": self.buyer_capital,
                "sell_pressure": self.sell_pressure,
                "sell_flow": self.sell_flow,
                "mean_liquidity": self.mean_liquidity,
                "active_nav": self.active_nav,
                "turnover": self.turnover,
                **(market_extra or {}),
            })
        if kind == "populations":
            n_pop, n_t = self.flow.shape
            return pd.DataFrame({
                "t": np.tile(self.t, n_pop),
                **({} if segment is None else {"segment": np.tile(segment, n_pop)}),
                "population": np.repeat(np.array(self.populations, dtype=object), n_t),
                "vintage_price": self.vintage_price.ravel(),
                "flow": self.flow.ravel(),
                "active_mass": self.active_mass.ravel(),
                "exited_mass": self.exited_mass.ravel(),
                "matured_mass": self.matured_mass.ravel(),
                "threshold": self.threshold.ravel(),
            })
        raise ValueError(f"kind must be 'market' or 'populations', got {kind!r}")


@dataclass(frozen=True)
class LPExitResult(_SeriesResult):
    """Equilibrium of the discrete LP-exit game (MODEL.md 2.3–2.6).

    Time series have ``n_t = N + 1`` entries on ``t``; per-population arrays lead with
    ``n_pop`` (order of ``model.populations``).

    Attributes
    ----------
    t : (n_t,) times, years.          L : (n_L,) liquidity nodes.
    populations : population names.
    price : (n_t,) market price factor ``P^n`` (fraction of NAV).
    vintage_price : (n_pop, n_t) ``pi_k^n = P^n A_k(remaining life)``.
    buyer_capital : (n_t,) ``K^n`` at the start of step n.
    sell_pressure : (n_t,) ``Ŝ^n``.     sell_flow : (n_t,) ``S^n`` (NAV/yr).
    flow : (n_pop, n_t) each population's share of ``S^n`` (NAV/yr; sums to ``sell_flow``).
    active_mass, exited_mass, matured_mass : (n_pop, n_t) fractions of each
        population still holding, having sold before ``t_n``, and paid out at maturity;
        they sum to 1 from the population's entry on (0 before it).
    mean_liquidity : (n_t,) NAV-weighted mean ``M^n`` of ``L`` over active LPs.
    exit_prob : (n_pop, n_t, n_L) ``q`` (0 where no decision is taken).
    value : (n_pop, n_t, n_L) ``V`` per unit NAV (NaN before entry and after maturity).
    density : (n_pop, n_t, n_L) density of active LPs in ``L`` (``sum * dL = active_mass``).
    threshold : (n_pop, n_t) exit boundary (NaN without one).
    residuals : (iterations,) ``max(price_residuals, mean_residuals)``, one per
        evaluation of the fixed-point map (Anderson steps that were rejected included).
    price_residuals, mean_residuals : (iterations,) ``max|P_new - P|``, ``max|M_new - M|``.
    exploitability : NAV-weighted gain of a single LP who best-responds (hard rule) to
        the final path (``price``, ``mean_liquidity``: the path the policy's own flows
        produce) instead of following ``exit_prob``, integrated over the initial laws (or
        the initial state); ``O(temperature)`` at an exact logit equilibrium (about
        ``temperature²`` measured), zero for an exact hard one.
    anderson_rejections : Anderson steps rejected by the safeguard (invalid path or a
        larger residual) and replaced by the damped step.
    edge_mass : largest nodal mass seen on an end node of the grid.
    timings : seconds per phase (``backward``, ``forward``, ``sweeps``, ``market``,
        ``final``: the extra evaluation that fills ``value``/``exit_prob``/``density`` when
        the last one did not, ``exploitability``, ``total``); JIT compilation is in the
        first call's figures.
    initial : the :class:`LPState` the solve started from (``state_at(0)`` holds the
        same masses).   inputs : the resolved :class:`MarketInputs`.
    """

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
    exit_prob: np.ndarray
    value: np.ndarray
    density: np.ndarray
    threshold: np.ndarray
    residuals: np.ndarray
    price_residuals: np.ndarray
    mean_residuals: np.ndarray
    exploitability: float
    iterations: int
    converged: bool
    anderson_rejections: int
    edge_mass: float
    timings: dict
    initial: LPState = field(repr=False)
    inputs: MarketInputs = field(repr=False)
    model: LPExitModel = field(repr=False)
    grid: Grid = field(repr=False)
    options: SolverOptions = field(repr=False)

    def _initial_S_hat(self) -> float:
        return self.initial.S_hat

    def state_at(self, n: int) -> LPState:
        """The :class:`LPState` at step ``n`` (time ``t[n]``, before step ``n``'s sales).

        Active masses, buyer capital ``K^n``, the sell pressure ``Ŝ^{n-1}`` carried into
        step ``n``, and the exited / matured fractions.  ``solve(..., initial=state_at(0))``
        reproduces this result; ``state_at(n)`` for ``0 < n < N`` starts a new solve at
        ``t[n]`` (an unanticipated shock, MODEL.md 2.7, is applied to a copy of it).
        """
        return self._state_at(n)

    def to_frame(self, kind: str = "populations") -> pd.DataFrame:
        """Tidy frames of the time series.

        ``kind="market"``: one row per time, columns ``t, price, discount,
        buyer_capital, sell_pressure, sell_flow, mean_liquidity, active_nav, turnover``.
        ``kind="populations"``: one row per (time, population), columns ``t,
        population, vintage_price, flow, active_mass, exited_mass, matured_mass,
        threshold``.
        """
        return self._frame(kind)

    def __repr__(self) -> str:
        last = self.residuals[-1] if self.residuals.size else float("nan")
        return (f"LPExitResult(populations={self.populations}, n_t={self.t.size}, n_L={self.L.size}, "
                f"iterations={self.iterations}, converged={self.converged}, last_residual={last:.3g}, "
                f"exploitability={self.exploitability:.3g}, total={self.timings.get('total', float('nan')):.3g}s)")


# ----------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PopArrays:
    """Nodal data of one population on the solve's window (internal).

    ``n_first``/``n_last`` are step indices of the window; ``in_window`` is False for a
    population whose life ended at or before the window's first step (it takes no
    decision and holds no mass).  ``m0`` is the mass placed at ``n_first``.
    """

    n_first: int
    n_last: int
    matures: bool  # the fund pays out at t[n_last] inside the window
    in_window: bool
    m0: np.ndarray
    running: np.ndarray
    discount: float
    q_max: float
    kappa_target: np.ndarray  # kappa * (lbar + s(t_n))
    drift_a: float
    life_factor: np.ndarray
    exited0: float  # sold before the window (bookkeeping)
    matured0: float  # paid out before the window (bookkeeping)


def _steps(model: LPExitModel, grid: Grid) -> int:
    span = (model.end - model.start) / grid.dt
    n = round(span)
    if n < 1 or abs(span - n) > 1e-9 * max(1.0, span):
        raise ValueError(f"dt={grid.dt!r} does not divide the window [{model.start}, {model.end}] into whole steps "
                         f"({span:.6g})")
    if grid.dt > model.market.tau_s:
        raise ValueError(f"dt={grid.dt!r} exceeds market.tau_s={model.market.tau_s!r}: the sell-pressure update "
                         "Ŝ += (dt/tau_s)(S - Ŝ) would overshoot")
    return n


def _initial_masses(mean: float, std: float, x: np.ndarray, lower: float, dx: float) -> np.ndarray:
    if std == 0.0:
        out = np.zeros(x.size)
        deposit_at(out, lower, dx, mean, 1.0)
        return out
    # Gaussian density sampled at the nodes (the trapezoid rule is spectrally accurate
    # for it), normalised so the grid holds exactly unit mass.
    w = np.exp(-0.5 * ((x - mean) / std) ** 2)
    return w / w.sum()


def _start_step(model: LPExitModel, grid: Grid, N: int, initial: LPState | None) -> int:
    if initial is None:
        return 0
    if not isinstance(initial, LPState):
        raise TypeError(f"initial must be an LPState, got {type(initial).__name__}")
    s = (initial.t0 - model.start) / grid.dt
    n0 = round(s)
    if abs(s - n0) > 1e-6 or not 0 <= n0 < N:
        raise ValueError(f"initial.t0={initial.t0!r} is not a step of the grid start + k dt, 0 <= k < {N} "
                         f"(start={model.start}, dt={grid.dt})")
    if initial.masses.shape != (len(model.populations), grid.n_L):
        raise ValueError(f"initial.masses has shape {initial.masses.shape}; expected "
                         f"({len(model.populations)}, {grid.n_L}) = (populations, n_L)")
    return n0


def _population_arrays(model: LPExitModel, grid: Grid, t_full: np.ndarray, x: np.ndarray, n0: int,
                       initial: LPState | None) -> list[_PopArrays]:
    """Per-population arrays on the full step grid, cut to the window ``n0..N``."""
    N = t_full.size - 1
    dt = grid.dt
    out = []
    for k, p in enumerate(model.populations):
        n_first = max(0, round((p.vintage - model.start) / dt))
        mat = (p.maturity - model.start) / dt
        matures = round(mat) <= N
        n_last = min(N, round(mat))
        if n_first >= n_last:
            raise ValueError(f"population {p.name!r} is active for less than one time step of dt={dt}")
        if n_first > 0 and n_first >= N:
            raise ValueError(f"population {p.name!r}: vintage={p.vintage} enters at the window's end")
        m0 = _initial_masses(p.initial_mean, p.initial_std, x, grid.L_min, grid.dL)
        exited0 = matured0 = 0.0
        in_window = True
        if initial is not None:
            row = initial.masses[k]
            if n_first > n0:  # enters later with its initial law
                if np.any(row != 0.0):
                    raise ValueError(f"initial.masses: population {p.name!r} enters after t0={initial.t0} "
                                     "and must have a zero row")
            elif matures and n_last <= n0:  # paid out before the window
                if np.any(row != 0.0):
                    raise ValueError(f"initial.masses: population {p.name!r} has matured by t0={initial.t0} "
                                     "and must have a zero row")
                in_window = False
                exited0 = 0.0 if initial.exited is None else float(initial.exited[k])
                matured0 = 1.0 - exited0 if initial.matured is None else float(initial.matured[k])
            else:  # active at t0: start from the given masses
                m0 = np.array(row, dtype=float)
                matured0 = 0.0 if initial.matured is None else float(initial.matured[k])
                exited0 = (max(0.0, 1.0 - m0.sum() - matured0) if initial.exited is None
                           else float(initial.exited[k]))
        tau = p.maturity - t_full[n0:]
        out.append(_PopArrays(
            n_first=max(n_first - n0, 0),
            n_last=max(n_last - n0, 0),
            matures=bool(matures),
            in_window=in_window,
            m0=m0,
            running=(p.y - p.eta * np.maximum(p.ell - x, 0.0)) * dt,
            discount=math.exp(-(p.r - p.g) * dt),
            q_max=-math.expm1(-p.a_max * dt),
            kappa_target=p.kappa * (p.lbar + p.schedule(t_full[n0:])),
            drift_a=p.kappa + p.lam,
            life_factor=model.market.remaining_life_factor(tau),
            exited0=exited0,
            matured0=matured0,
        ))
    return out


# ----------------------------------------------------------------------------------
# Anderson acceleration
# ----------------------------------------------------------------------------------


class _Anderson:
    """Type-II Anderson mixing (Walker & Ni 2011) of depth ``m`` with mixing ``theta``.

    With ``f_k = g(x_k) - x_k`` and the last ``m`` differences ``ΔX``, ``ΔF`` of
    accepted iterates and residuals, ``γ = argmin |f_k - ΔF γ|_2`` and
    ``x_{k+1} = x_k + θ f_k - (ΔX + θ ΔF) γ``; with no history this is the damped step.
    """

    def __init__(self, depth: int, theta: float):
        self.depth = depth
        self.theta = theta
        self.dX: list[np.ndarray] = []
        self.dF: list[np.ndarray] = []
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.dX.clear()
        self.dF.clear()

    def record(self, x: np.ndarray, f: np.ndarray) -> None:
        """Register the accepted iterate ``x`` with residual ``f``."""
        if self.last is not None:
            self.dX.append(x - self.last[0])
            self.dF.append(f - self.last[1])
            if len(self.dX) > self.depth:
                del self.dX[0], self.dF[0]
        self.last = (x, f)

    def propose(self, x: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, bool]:
        """Next iterate and whether it is an Anderson (not a plain damped) step."""
        damped = x + self.theta * f
        if not self.dX:
            return damped, False
        dF = np.column_stack(self.dF)
        dX = np.column_stack(self.dX)
        scale = np.linalg.norm(dF, axis=0)
        keep = scale > 0.0
        if not keep.any():
            return damped, False
        dF, dX, scale = dF[:, keep], dX[:, keep], scale[keep]
        gamma = np.linalg.lstsq(dF / scale, f, rcond=1e-10)[0] / scale
        return damped - (dX + self.theta * dF) @ gamma, True


# ----------------------------------------------------------------------------------
# solver
# ----------------------------------------------------------------------------------

#: Sweeps per method: ``(backward, forward)`` with the signatures and semantics of
#: :func:`backward_sweep` and :func:`forward_sweep` (``sigma`` an array over steps).
_SWEEPS = {"sl": (backward_sweep, forward_sweep), "fd": (fd_backward_sweep, fd_forward_sweep)}

#: The same sweeps with the buffered contract of :func:`_sl_backward` / :func:`_sl_forward`
#: (output arrays passed in, two rows kept on request, the mean-field moments and the exit
#: sensitivity summed inside the forward sweep): what :func:`solve` runs.
_SWEEP_KERNELS = {"sl": (_sl_backward, _sl_forward), "fd": (_fd_backward, _fd_forward)}


def solve(model: LPExitModel, grid: Grid, options: SolverOptions | None = None, method: str = "sl", *,
          initial: LPState | None = None, inputs: MarketInputs | None = None,
          guess: tuple[np.ndarray, np.ndarray] | None = None) -> LPExitResult:
    """Solve the LP-exit MFG (MODEL.md 2.5) by a damped, Anderson-accelerated fixed point on ``(P^n, M^n)``.

    ``method``: a key of ``_SWEEPS`` (``"sl"``: the second-order semi-Lagrangian scheme
    of MODEL.md 2.6).  ``initial``: an :class:`LPState` to start from at ``initial.t0``
    (the window becomes ``[t0, model.end]``) instead of the model's initial laws at
    ``model.start``.  ``inputs``: :class:`MarketInputs` with time-varying ``Kbar``,
    ``pbar`` and ``sigma`` on the window's time grid (default: the model's constants).
    ``guess``: an initial path ``(P, M)`` on the window's time grid (e.g. a previous
    solution of a nearby problem) instead of the default below.

    The iterate is the price path ``P`` and, when some population herds (``lam > 0``),
    the mean-field path ``M`` (otherwise ``M`` does not feed back: it is taken as
    computed, and its residual still counts for ``tol``).  The initial path is ``P = P̄``
    and ``M`` constant at the NAV-weighted mean of the initial laws.  Each iteration
    proposes the Anderson step of depth ``options.anderson`` (0: the damped step
    ``x + θ (g(x) - x)``); the proposal falls back to the damped step when the path is
    invalid (``P <= 0`` or non-finite) or when its residual exceeds the current one
    (the rejected evaluation counts as an iteration and the history restarts).
    Emits :class:`ConvergenceWarning` at ``max_iter`` and :class:`BoundaryMassWarning`
    when an end node of the grid holds more than ``EDGE_MASS_WARN`` of a population's mass.
    """
    if method not in _SWEEPS:
        if method == "fd":
            raise NotImplementedError("method='fd' (the finite-difference scheme) is not registered; use method='sl'")
        raise ValueError(f"method must be one of {sorted(_SWEEPS)}, got {method!r}")
    backward, forward = _SWEEP_KERNELS[method]
    if not isinstance(model, LPExitModel):
        raise TypeError(f"model must be an LPExitModel, got {type(model).__name__}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
    options = SolverOptions() if options is None else options
    if not isinstance(options, SolverOptions):
        raise TypeError(f"options must be SolverOptions, got {type(options).__name__}")
    inputs = MarketInputs() if inputs is None else inputs
    if not isinstance(inputs, MarketInputs):
        raise TypeError(f"inputs must be MarketInputs, got {type(inputs).__name__}")
    grid.check_covers(model)

    t_start = time.perf_counter()
    N_full = _steps(model, grid)
    n0 = _start_step(model, grid, N_full, initial)
    dt = float(grid.dt)
    lower, dx = float(grid.L_min), float(grid.dL)
    x = np.linspace(grid.L_min, grid.L_max, grid.n_L)
    t_full = model.start + dt * np.arange(N_full + 1)
    t = t_full[n0:]
    N = t.size - 1
    pops = _population_arrays(model, grid, t_full, x, n0, initial)
    n_pop = len(pops)
    weights = model.weights
    mk = model.market
    _, beta, tau_s, theta_K, S0, K0 = market_constants(mk)
    if initial is not None:
        S0, K0 = initial.S_hat, initial.K
    Kbar, pbar, sigma = inputs.resolved(model, N + 1)
    inputs = MarketInputs(Kbar=Kbar, pbar=pbar, sigma=sigma)
    herding = any(p.lam > 0.0 for p in model.populations)
    terminal = np.ones(grid.n_L)
    dummy_q = np.zeros((1, 1))
    life = np.array([pa.life_factor for pa in pops])
    # active rows: entry .. maturity (exclusive) or the window's end (inclusive)
    active = []
    for pa in pops:
        a = np.zeros(N + 1, dtype=bool)
        if pa.in_window:
            a[pa.n_first: pa.n_last if pa.matures else N + 1] = True
        active.append(a)

    m_start = [pa.m0 if pa.in_window else np.zeros(grid.n_L) for pa in pops]
    if initial is None:
        M_init = float(np.dot(weights, [p.initial_mean for p in model.populations]))
    else:
        num = sum(w * float(m @ x) for w, m, a in zip(weights, m_start, active) if a[0])
        den = sum(w * float(m.sum()) for w, m, a in zip(weights, m_start, active) if a[0])
        M_init = num / den if den > 0.0 else float(np.dot(weights, [p.initial_mean for p in model.populations]))
    P = pbar.copy()
    M = np.full(N + 1, M_init)
    if guess is not None:
        P_g, M_g = (np.array(a, dtype=float) for a in guess)
        if P_g.shape != (N + 1,) or M_g.shape != (N + 1,):
            raise ValueError(f"guess must be two arrays of shape ({N + 1},), got {P_g.shape} and {M_g.shape}")
        if not (np.all(np.isfinite(P_g)) and np.all(P_g > 0.0) and np.all(np.isfinite(M_g))):
            raise ValueError("guess: P must be finite and > 0, M finite")
        P, M = P_g, M_g
    timings = {"backward": 0.0, "forward": 0.0, "sweeps": 0.0, "market": 0.0, "exploitability": 0.0}
    res_P, res_M = [], []
    temperature = float(options.temperature)

    def drift_and_exit_value(P, M):
        logp = np.log(P / pbar)
        return [(pa.kappa_target + p.lam * M + p.alpha * logp, P * pa.life_factor - p.phi)
                for p, pa in zip(model.populations, pops)]

    n_L = grid.n_L
    act_f = [a.astype(float) for a in active]

    # Buffers reused by every evaluation of the map: an iteration needs the exit
    # probabilities (backward -> forward), the exits, the mean-field moments and the exit
    # sensitivity, so the value and the density keep two rows only.  The evaluation that
    # is expected to be the last one (the residuals extrapolated geometrically reach
    # ``tol``, or ``max_iter`` is reached) writes every row into the result's arrays
    # instead; if the accepted iterate is not the one that did, its rows are recomputed
    # once at the end.  The arithmetic is the same either way, so are the numbers.
    # One set of scratch arrays per thread (not per population: the exit probabilities
    # of one population, 4 MB at 1,000 x 521, stay in cache between its two sweeps).
    # The sweeps read only the rows they wrote, so a set can serve any population.
    scratch = queue.SimpleQueue()
    for _ in range(max(1, min(int(options.workers), sum(pa.in_window for pa in pops)))):
        scratch.put((np.zeros((N + 1, n_L)), np.empty((2, n_L)), np.empty((2, n_L)), np.empty(N + 1)))
    zeros_t = np.zeros(N + 1)
    zeros_stats = np.zeros((3, N + 1))
    # the result's value, policy, threshold and nodal masses (made the density in place
    # at the end), and the evaluation whose rows they hold
    full_rows = {"arrays": None, "owner": None}

    def result_arrays():
        if full_rows["arrays"] is None:
            full_rows["arrays"] = (np.full((n_pop, N + 1, n_L), np.nan), np.zeros((n_pop, N + 1, n_L)),
                                   np.full((n_pop, N + 1), np.nan), np.zeros((n_pop, N + 1, n_L)))
        return full_rows["arrays"]

    def one_population(k, c, G, full):
        """Exits and ``(mass, first moment, exit sensitivity)`` per step of population ``k``;
        with ``full``, every row of its value, policy, threshold and masses into the result's arrays."""
        pa = pops[k]
        if not pa.in_window:
            return zeros_t, zeros_stats, 0.0, 0.0
        e = np.zeros(N + 1)
        stats = np.zeros((3, N + 1))
        buf = scratch.get()
        try:
            if full:
                V_all, Q_all, TH_all, m_all = full_rows["arrays"]
                v_rows, q_buf, thr_buf, m_rows = V_all[k], Q_all[k], TH_all[k], m_all[k]
            else:
                q_buf, v_rows, m_rows, thr_buf = buf
            s0 = time.perf_counter()
            backward(pa.n_first, pa.n_last, terminal, c, pa.drift_a, sigma[k], dt, pa.discount, pa.running, G,
                     pa.q_max, temperature, False, dummy_q, lower, dx, v_rows, q_buf, thr_buf)
            s1 = time.perf_counter()
            forward(m_start[k], pa.n_first, pa.n_last, c, pa.drift_a, sigma[k], dt, q_buf, lower, dx, m_rows, e,
                    x, pa.q_max, stats)
            s2 = time.perf_counter()
        finally:
            scratch.put(buf)
        return e, stats, s1 - s0, s2 - s1

    def sweep(P, M, full=False):
        s = time.perf_counter()
        coeffs = drift_and_exit_value(P, M)
        if full:
            result_arrays()
        if pool is None:
            outs = [one_population(k, c, G, full) for k, (c, G) in enumerate(coeffs)]
        else:  # populations are independent: same arithmetic, same results, any thread count
            outs = list(pool.map(one_population, range(n_pop), *zip(*coeffs), [full] * n_pop))
        timings["backward"] += sum(o[2] for o in outs)
        timings["forward"] += sum(o[3] for o in outs)
        timings["sweeps"] += time.perf_counter() - s
        s = time.perf_counter()
        exit_mass = np.array([o[0] for o in outs])
        mkt = market_path(exit_mass, weights, life, Kbar, dt, pbar, beta, tau_s, theta_K, S0, K0, DEFAULT_K_FLOOR)
        # NAV-weighted mean of L over the active populations (summed in population order)
        num = np.zeros(N + 1)
        den = np.zeros(N + 1)
        for w, o, a in zip(weights, outs, act_f):
            den += (w * o[1][0]) * a
            num += (w * o[1][1]) * a
        with np.errstate(invalid="ignore", divide="ignore"):
            M_new = np.where(den > 0.0, num / den, M)
        timings["market"] += time.perf_counter() - s
        if not (np.isfinite(mkt[2]).all() and np.isfinite(M_new).all()):
            raise FloatingPointError("the fixed point produced a non-finite price or mean-field path")
        res_P.append(float(np.max(np.abs(mkt[2] - P))))
        res_M.append(float(np.max(np.abs(M_new - M))))
        # quasi-Newton preconditioner on the price: exits react to the same step's price
        # (logit derivative), the market recursion carries that to later steps
        if options.precondition and temperature > 0.0:
            sens = np.zeros((n_pop, N + 1))
            for k, pa in enumerate(pops):
                if pa.in_window:
                    sens[k] = (life[k] / temperature) * outs[k][1][2]
            scale_P = (sens, exit_mass, mkt)
        else:
            scale_P = None
        result = (P, M, exit_mass, mkt, M_new, scale_P)
        if full:
            full_rows["owner"] = result
        return result, max(res_P[-1], res_M[-1])

    def pack(P, M):
        return np.concatenate([P, M]) if herding else P.copy()

    def residual(out, P, M):
        """Preconditioned residual ``D (g(x) - x)`` of the iterate."""
        fP = out[3][2] - P
        if out[5] is not None:
            sens, E, (S_, sh_, P_, K_, _) = out[5]
            fP = _market_newton(fP, sens, weights, life, E, P_, sh_, K_, dt, beta, tau_s, theta_K, DEFAULT_K_FLOOR)
        return np.concatenate([fP, out[4] - M]) if herding else fP

    def unpack(z, M_fallback):
        return (z[:N + 1], z[N + 1:]) if herding else (z, M_fallback)

    theta = float(options.damping)

    def valid(P_c, M_c):
        return bool(np.all(np.isfinite(P_c)) and np.all(P_c > 0.0) and np.all(np.isfinite(M_c)))

    def damped_step(xk, fk, P, M, out):
        """``x + θ D f``; if that leaves ``P > 0``, the plain ``(1 - θ) x + θ g(x)``."""
        P_c, M_c = unpack(xk + theta * fk, out[4])
        if valid(P_c, M_c):
            return P_c, M_c
        return P + theta * (out[3][2] - P), (M + theta * (out[4] - M) if herding else out[4])

    n_busy = sum(pa.in_window for pa in pops)
    workers = min(int(options.workers), n_busy)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        acc = _Anderson(int(options.anderson), theta)
        rejections = 0
        out, res = sweep(P, M, options.max_iter == 1)
        converged = res <= options.tol
        accepted = [res]

        def last_one():
            """Whether the next evaluation is expected to be the accepted last one."""
            if len(res_P) + 1 >= options.max_iter:
                return True
            return len(accepted) >= 2 and accepted[-1] * accepted[-1] <= options.tol * accepted[-2]

        while not converged and len(res_P) < options.max_iter:
            xk = pack(P, M)
            fk = residual(out, P, M)
            acc.record(xk, fk)
            cand, is_aa = acc.propose(xk, fk)
            P_c, M_c = unpack(cand, out[4])
            if is_aa and not valid(P_c, M_c):
                P_c, M_c = damped_step(xk, fk, P, M, out)
                is_aa = False
                rejections += 1
                acc.reset()
            elif not is_aa and not valid(P_c, M_c):
                P_c, M_c = damped_step(xk, fk, P, M, out)
            out_c, res_c = sweep(P_c, M_c, last_one())
            if is_aa and res_c > res and len(res_P) < options.max_iter:
                # the Anderson step made things worse: take the damped step instead
                rejections += 1
                acc.reset()
                acc.last = (xk, fk)
                P_c, M_c = damped_step(xk, fk, P, M, out)
                out_c, res_c = sweep(P_c, M_c, last_one())
            P, M, out, res = P_c, M_c, out_c, res_c
            accepted.append(res)
            converged = res <= options.tol
        if not converged:
            warnings.warn(f"LP-exit fixed point stopped after {len(res_P)} iterations with residual "
                          f"{res:.3g} > tol={options.tol:g}", ConvergenceWarning, stacklevel=2)

        # every row of the accepted iterate's values, policy and densities: if the
        # evaluation that produced ``out`` did not keep them, one more evaluation on the
        # very same path (bit-identical numbers)
        s = time.perf_counter()
        P_it, M_it, exit_mass, mkt, M_final, _ = out
        if full_rows["owner"] is not out:
            n_res, kept = (len(res_P), len(res_M)), dict(timings)
            sweep(P_it, M_it, True)
            del res_P[n_res[0]:], res_M[n_res[1]:]  # not an iteration: drop its residuals and timings
            timings.update(kept)
            full_rows["owner"] = out
        V_all, Q_all, TH_all, m_all = full_rows["arrays"]
        timings["final"] = time.perf_counter() - s
        S, s_hat, P_final, K, pi = mkt

        # exploitability on the final path (the one the policy's own flows produce): hard
        # best response vs the equilibrium policy.  Against the iterate's path instead, the
        # policy values would already be at hand, but a hard (temperature 0) iterate would
        # then always score exactly 0, converged or not.  Only the value at entry is
        # needed: the sweeps keep two rows.
        s = time.perf_counter()

        def gain_of(k, c, G):
            pa = pops[k]
            if not pa.in_window:
                return 0.0
            args = (pa.n_first, pa.n_last, terminal, c, pa.drift_a, sigma[k], dt, pa.discount, pa.running, G,
                    pa.q_max)
            q_buf, rows, _, thr_buf = buf = scratch.get()
            try:
                backward(*args, 0.0, False, dummy_q, lower, dx, rows, q_buf, thr_buf)
                v_br = rows[pa.n_first & 1].copy()
                backward(*args, 0.0, True, Q_all[k], lower, dx, rows, q_buf, thr_buf)
                return float(np.dot(m_start[k], v_br - rows[pa.n_first & 1]))
            finally:
                scratch.put(buf)

        coeffs = drift_and_exit_value(P_final, M_final)
        if pool is None:
            gains = [gain_of(k, c, G) for k, (c, G) in enumerate(coeffs)]
        else:
            gains = list(pool.map(gain_of, range(n_pop), *zip(*coeffs)))
        gain = 0.0
        for w, g_k in zip(weights, gains):  # summed in population order whatever the thread count
            gain += w * g_k
        timings["exploitability"] = time.perf_counter() - s
    finally:
        if pool is not None:
            pool.shutdown()

    # bookkeeping of masses: active / exited / matured
    density = m_all
    active_mass = np.zeros((n_pop, N + 1))
    exited_mass = np.zeros((n_pop, N + 1))
    matured_mass = np.zeros((n_pop, N + 1))
    edge = 0.0
    for k, (pa, m, e, a) in enumerate(zip(pops, m_all, exit_mass, active)):
        if not pa.in_window:
            exited_mass[k] = pa.exited0
            matured_mass[k] = pa.matured0
            continue
        edge = max(edge, float(np.max(m[:, 0])), float(np.max(m[:, -1])))
        exited_mass[k, pa.n_first:] = pa.exited0
        exited_mass[k, pa.n_first + 1:] += np.cumsum(e[pa.n_first:N])
        matured_mass[k, pa.n_first:] = pa.matured0
        if pa.matures:
            matured_mass[k, pa.n_last:] += m[pa.n_last].sum()
        active_mass[k] = np.where(a, m.sum(axis=1), 0.0)
        m[~a] = 0.0  # the density of the active LPs: m / dx on active rows, 0 elsewhere
        np.divide(m, dx, out=m)
    if edge > EDGE_MASS_WARN:
        warnings.warn(f"up to {edge:.2g} of a population's mass sits on an end node of [{grid.L_min}, {grid.L_max}]: "
                      "the clamped boundary is felt; widen the grid", BoundaryMassWarning, stacklevel=2)
    if initial is None:
        initial = LPState(t0=float(t[0]), masses=np.array([m if a[0] else np.zeros(grid.n_L)
                                                            for m, a in zip(m_start, active)]),
                          K=K0, S_hat=S0)
    timings["total"] = time.perf_counter() - t_start
    return LPExitResult(
        t=t,
        L=x,
        populations=tuple(p.name for p in model.populations),
        price=P_final,
        vintage_price=pi,
        buyer_capital=K,
        sell_pressure=s_hat,
        sell_flow=S,
        flow=weights[:, None] * exit_mass / dt,
        active_mass=active_mass,
        exited_mass=exited_mass,
        matured_mass=matured_mass,
        mean_liquidity=M_final,
        exit_prob=Q_all,
        value=V_all,
        density=density,
        threshold=TH_all,
        residuals=np.maximum(res_P, res_M),
        price_residuals=np.array(res_P),
        mean_residuals=np.array(res_M),
        exploitability=gain,
        iterations=len(res_P),
        converged=bool(converged),
        anderson_rejections=rejections,
        edge_mass=edge,
        timings=timings,
        initial=initial,
        inputs=inputs,
        model=model,
        grid=grid,
        options=options,
    )
