"""Finite-difference kernels of the LP-exit game: the independent second method (MODEL.md 2).

:func:`fd_backward_sweep` and :func:`fd_forward_sweep` are drop-in replacements of
:func:`mfg.lp_exit.backward_sweep` and :func:`mfg.lp_exit.forward_sweep`: the same
arguments, the same return values, the same time indexing (decisions at steps
``n_first..n_last-1``, ``V[n_last] = terminal``, NaN value / zero ``q`` outside), the
same exit rule (logit with ``temperature`` in value units, hard rule at
``temperature == 0``, policy evaluation with ``evaluate`` and ``q_given``) and the same
``threshold`` (highest zero of the P1 interpolant of ``C - G``).  Only the transition
of ``L`` over a step is discretised differently, so that comparing the two methods
checks the semi-Lagrangian scheme against an independent one.  :func:`mfg.lp_exit.solve`
uses them with ``method="fd"``, through their buffered forms :func:`_fd_backward` and
:func:`_fd_forward` (the contract of :func:`mfg.lp_exit._sl_backward` and
:func:`mfg.lp_exit._sl_forward`: output arrays passed in, two rows kept on request, the
mean-field moments and the exit sensitivity summed in the forward sweep).

Scheme (one step ``n``, from ``t_n`` to ``t_{n+1}``)
-----------------------------------------------------

Generator.  ``A_n`` is the finite-difference generator of ``dL = b dt + σ dW`` with
``b_i = drift_c[n] - drift_a L_i`` and ``σ = sigma[n]``: node ``i`` jumps to ``i-1`` at
rate ``lo_i`` and to ``i+1`` at rate ``up_i``, ``A_ii = -(lo_i + up_i)``, with

* central differences, ``lo_i, up_i = σ²/(2 dL²) ∓ b_i/(2 dL)``, where both stay
  non-negative (cell Péclet number ``|b_i| dL / σ² <= 1``), and
* upwind differences, ``σ²/(2 dL²) + max(∓b_i, 0)/dL``, elsewhere

("central as much as possible", the standard monotone choice for HJB equations).  Both
reproduce the drift of linear functions exactly (``A x = b`` away from the ends).
Central differences add no numerical diffusion, so where they apply the scheme is
second order in ``dL`` (on the calm scenario's grids from ``n_L = 201`` on: at every
node); pure upwinding adds the diffusion ``|b| dL / 2``, first order in ``dL`` (on the
calm scenario at ``dL = 1/80``, ``dt = 1/52`` its mean discount was about 3e-3 off an
extrapolated reference against 0.8e-3 for the central scheme).  At the grid ends the
outward rate is dropped (reflecting, zero-flux boundary), so every row of ``A_n`` sums
to zero.  ``I - dt A_n`` is then a tridiagonal M-matrix (strictly diagonally dominant,
positive diagonal, non-positive off-diagonals): ``P_n = (I - dt A_n)^{-1}`` is
non-negative with unit row sums, i.e. a Markov transition matrix for every ``dt``
(unconditionally monotone, no CFL condition).

Backward (implicit Euler, exact discount)::

    (I - dt A_n) E^n = V^{n+1},        C^n = running + discount * E^n,
    q = exit rule(G[n] - C^n),         V^n = C^n + q (G[n] - C^n).

``E^n = P_n V^{n+1}`` replaces the SL scheme's two-foot average ``E[V(t_{n+1}, L')]``;
``running = (y - c(L)) dt`` is paid at ``t_n`` and ``discount = exp(-(r - g) dt)`` is
applied exactly, both as in the SL kernel (MODEL.md 2.3), so the two methods differ in
the transition operator only.  (The textbook variant ``((1 + ρ dt) I - dt A) C =
running + V^{n+1}`` differs by ``O(dt²)`` per step; putting the discount outside the
resolvent keeps ``P_n`` stochastic, which the forward sweep needs for exact mass
conservation.)

Exit: operator splitting, the exit step explicit after the implicit transition step.
This is the decision model of MODEL.md 2.3 itself (a per-step probability
``q = q_max * ...`` with ``q_max = 1 - exp(-a_max dt)``, taken at ``t_n`` against the
continuation value), so FD and SL discretise the very same discrete-time game; the
decision needs no nonlinear solve, and at ``q_max → 1`` with the hard rule it is the
explicit projection ``V = max(C, G)`` of the obstacle problem, which converges to the
free-boundary solution (MODEL.md 2.9).  A fully implicit exit solved by policy
iteration would change the meaning of ``q`` (an implicit killing rate) and the
forward adjoint along with it.

Forward: the exact transpose.  The mass ``m_i q_i`` exits (summed into ``exited[n]``)
and ``m^{n+1} = P_n^T (m^n (1 - q))``, i.e. ``(I - dt A_n)^T m^{n+1} = m^n (1 - q)``.
Hence ``sum m^n V^n = sum m^{n+1} V^{n+1} + G[n] exited[n]`` (no running payoff,
unit discount) to round-off, mass is conserved (``1^T P_n^T = 1^T``) and stays
non-negative.  Both tridiagonal solves use the Thomas algorithm (no pivoting is needed:
``I - dt A_n`` is diagonally dominant by rows, its transpose by columns).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .exit_rule import _last_stats, _logistic

__all__ = ["fd_backward_sweep", "fd_forward_sweep"]


@njit(cache=True, inline="always")
def _rates(i, n, diff, h0, h1, lower, dx):
    """``dt`` times the jump rates of node ``i`` to ``i-1`` and ``i+1``: ``(lo_i, up_i)``.

    ``diff = dt σ²/(2 dL²)``, ``h = dt b_i/(2 dL) = h0 - h1 L_i``.  Central differences where
    they keep both rates non-negative (cell Péclet number ``|b| dL / σ² <= 1``), upwind
    elsewhere; the outward rates of the end nodes are 0 (reflecting boundary).
    """
    h = h0 - h1 * (lower + i * dx)
    if diff >= abs(h):  # central
        lo = diff - h
        up = diff + h
    elif h > 0.0:  # upwind: b > 0 moves mass up only
        lo = diff
        up = diff + 2.0 * h
    else:
        lo = diff - 2.0 * h
        up = diff
    if i == 0:
        lo = 0.0
    if i == n - 1:
        up = 0.0
    return lo, up


@njit(cache=True)
def _solve_step(drift_c_t, drift_a, sigma_t, dt, lower, dx, rhs, transpose, cp, out):
    """Solve ``(I - dt A_n) x = rhs`` (or its transpose) by the Thomas algorithm.

    Row ``i`` of ``I - dt A_n``: ``-lo_i`` at ``i-1``, ``1 + lo_i + up_i`` at ``i``, ``-up_i``
    at ``i+1`` (rates from :func:`_rates`, computed on the fly); the transpose has
    ``-up_{i-1}`` at ``i-1`` and ``-lo_{i+1}`` at ``i+1``.  Every term of the elimination is
    non-negative (off-diagonal magnitudes ``>= 0``, pivots ``>= 1``), so a non-negative
    ``rhs`` gives a non-negative ``x`` exactly, with no cancellation.  ``cp`` is scratch;
    ``out`` may not alias ``rhs``.
    """
    n = rhs.shape[0]
    diff = 0.5 * sigma_t * sigma_t / (dx * dx) * dt
    h0 = 0.5 * dt / dx * drift_c_t
    h1 = 0.5 * dt / dx * drift_a
    lo, up = _rates(0, n, diff, h0, h1, lower, dx)
    inv = 1.0 / (1.0 + lo + up)
    out[0] = rhs[0] * inv
    if transpose:
        lo_next, up_next = _rates(1, n, diff, h0, h1, lower, dx)
        cp[0] = lo_next * inv
        for i in range(1, n):
            sub = up  # up_{i-1}
            lo, up = lo_next, up_next
            if i < n - 1:
                lo_next, up_next = _rates(i + 1, n, diff, h0, h1, lower, dx)
            else:
                lo_next = 0.0
            inv = 1.0 / (1.0 + lo + up - sub * cp[i - 1])
            cp[i] = lo_next * inv
            out[i] = (rhs[i] + sub * out[i - 1]) * inv
    else:
        cp[0] = up * inv
        for i in range(1, n):
            lo, up = _rates(i, n, diff, h0, h1, lower, dx)
            inv = 1.0 / (1.0 + lo + up - lo * cp[i - 1])
            cp[i] = up * inv
            out[i] = (rhs[i] + lo * out[i - 1]) * inv
    for i in range(n - 2, -1, -1):
        out[i] += cp[i] * out[i + 1]


@njit(cache=True, nogil=True)
def fd_backward_sweep(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max,
                      temperature, evaluate, q_given, lower, dx):
    """Backward implicit finite-difference sweep with the exit step of MODEL.md 2.3 (one population).

    Same signature, arguments and returns ``(V, q, threshold)`` as
    :func:`mfg.lp_exit.backward_sweep`; the continuation value is
    ``C = running + discount * (I - dt A_n)^{-1} V^{n+1}`` (module docstring) instead of
    the SL two-foot average.  The work is done by :func:`_fd_backward`.
    """
    n_t = drift_c.shape[0]
    n = running.shape[0]
    V = np.full((n_t, n), np.nan)
    q = np.zeros((n_t, n))
    thr = np.full(n_t, np.nan)
    _fd_backward(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                 evaluate, q_given, lower, dx, V, q, thr)
    return V, q, thr


@njit(cache=True, nogil=True)
def _fd_backward(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                 evaluate, q_given, lower, dx, V, q, thr):
    """:func:`fd_backward_sweep` into given arrays: the buffered contract of :func:`mfg.lp_exit._sl_backward`.

    ``V`` is ``(n_t, n)`` (every row) or ``(2, n)`` (two rows, row ``t`` in ``V[t % 2]``);
    writes ``V`` rows ``n_first..n_last``, ``q`` rows ``n_first..n_last-1`` and
    ``thr[n_first:n_last]`` (NaN where no threshold).
    """
    n = running.shape[0]
    full = V.shape[0] != 2 or drift_c.shape[0] == 2
    D = np.empty(n)
    cp = np.empty(n)
    E = np.empty(n)
    nl = n_last if full else n_last & 1
    for i in range(n):
        V[nl, i] = terminal[i]
    for t in range(n_last - 1, n_first - 1, -1):
        if full:
            nxt = V[t + 1]
            cur = V[t]
        else:
            nxt = V[(t + 1) & 1]
            cur = V[t & 1]
        _solve_step(drift_c[t], drift_a, sigma[t], dt, lower, dx, nxt, False, cp, E)
        gt = G[t]
        for i in range(n):
            c = running[i] + discount * E[i]
            d = gt - c
            if evaluate:
                qi = q_given[t, i]
            elif temperature > 0.0:
                qi = q_max * _logistic(d / temperature)
            elif d > 0.0:
                qi = q_max
            else:
                qi = 0.0
            q[t, i] = qi
            cur[i] = c + qi * d
            D[i] = -d
        thr[t] = np.nan
        for i in range(n - 2, -1, -1):
            if D[i] <= 0.0 and D[i + 1] > 0.0:
                thr[t] = lower + dx * (i + (-D[i]) / (D[i + 1] - D[i]))
                break


@njit(cache=True, nogil=True)
def fd_forward_sweep(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx):
    """Exact transpose of :func:`fd_backward_sweep` (one population).

    Same signature and returns ``(m, exited)`` as :func:`mfg.lp_exit.forward_sweep`:
    ``m0`` (nodal masses) is placed at step ``n_first``; in step ``n`` the mass
    ``m_i q_i`` exits and ``m^{n+1}`` solves ``(I - dt A_n)^T m^{n+1} = m^n (1 - q)``.
    The work is done by :func:`_fd_forward`.
    """
    n_t = drift_c.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_t, n))
    exited = np.zeros(n_t)
    _fd_forward(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx, m, exited, m0, 0.0,
                np.empty((0, 0)))
    return m, exited


@njit(cache=True, nogil=True)
def _fd_forward(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx, m, exited, x, q_max, stats):
    """:func:`fd_forward_sweep` into given arrays: the buffered contract of :func:`mfg.lp_exit._sl_forward`.

    ``m`` is ``(n_t, n)`` or ``(2, n)`` (row ``t`` in ``m[t % 2]``); ``stats`` is ``(3, n_t)``
    (mass, first moment over ``x``, exit sensitivity per step, summed in node order) or empty.
    """
    n = m0.shape[0]
    full = m.shape[0] != 2 or drift_c.shape[0] == 2
    want = stats.shape[0] == 3
    sens = want and q_max > 0.0
    inv = 1.0 / q_max if sens else 0.0
    cp = np.empty(n)
    rhs = np.empty(n)
    r0 = n_first if full else n_first & 1
    for i in range(n):
        m[r0, i] = m0[i]
    for t in range(n_first, n_last):
        if full:
            cur = m[t]
            nxt = m[t + 1]
        else:
            cur = m[t & 1]
            nxt = m[(t + 1) & 1]
        e = 0.0
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            mass = cur[i]
            qi = q[t, i]
            out = mass * qi
            e += out
            rhs[i] = mass - out
            if want:
                s0 += mass
                s1 += x[i] * mass
                if sens and qi > 0.0:
                    s2 += mass * qi * (1.0 - qi * inv)
        exited[t] = e
        if want:
            stats[0, t] = s0
            stats[1, t] = s1
            stats[2, t] = s2
        _solve_step(drift_c[t], drift_a, sigma[t], dt, lower, dx, rhs, True, cp, nxt)
    if want:
        _last_stats(m, n_last, full, x, stats)
