"""Finite-difference kernels of the LP-exit game: the independent second method (docs/model.md 2).

:func:`fd_backward_sweep` and :func:`fd_forward_sweep` are drop-in replacements of
:func:`mfg.lp_exit.backward_sweep` and :func:`mfg.lp_exit.forward_sweep`: the same
arguments, the same return values, the same time indexing (decisions at steps
``n_first..n_last-1``, ``V[n_last] = terminal``, NaN value / zero ``q`` outside), the
same exit rule and threshold (:func:`mfg.lp_exit.kernels.exit_rule`, shared by both
methods).  Only the transition
of ``L`` over a step is discretised differently, so that comparing the two methods
checks the semi-Lagrangian scheme against an independent one.  :func:`mfg.lp_exit.solve`
uses them with ``method="fd"``, through their buffered forms :func:`fd_backward` and
:func:`fd_forward` (the contract of :func:`mfg.lp_exit.kernels.sl_backward` and
:func:`mfg.lp_exit.kernels.sl_forward`: output arrays passed in, two rows kept on request, the
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
applied exactly, both as in the SL kernel (docs/model.md 2.3), so the two methods differ in
the transition operator only.  (The textbook variant ``((1 + ρ dt) I - dt A) C =
running + V^{n+1}`` differs by ``O(dt²)`` per step; putting the discount outside the
resolvent keeps ``P_n`` stochastic, which the forward sweep needs for exact mass
conservation.)

Exit: operator splitting, the exit step explicit after the implicit transition step.
This is the decision model of docs/model.md 2.3 itself (a per-step probability
``q = q_max * ...`` with ``q_max = 1 - exp(-a_max dt)``, taken at ``t_n`` against the
continuation value), so FD and SL discretise the very same discrete-time game; the
decision needs no nonlinear solve, and at ``q_max → 1`` with the hard rule it is the
explicit projection ``V = max(C, G)`` of the obstacle problem, which converges to the
free-boundary solution (docs/model.md 2.9).  A fully implicit exit solved by policy
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

from .kernels import exit_rule, keeps_every_row, last_moments, row_pair, running_at, step_moments

__all__ = ["fd_backward_sweep", "fd_forward_sweep", "fd_backward", "fd_forward", "fd_transport"]


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
def _solve_step(drift_c_t, sigma_t, drift_a, mesh, rhs, transpose, cp, out):
    """Solve ``(I - dt A_n) x = rhs`` (or its transpose) by the Thomas algorithm.

    Row ``i`` of ``I - dt A_n``: ``-lo_i`` at ``i-1``, ``1 + lo_i + up_i`` at ``i``, ``-up_i``
    at ``i+1`` (rates from :func:`_rates`, computed on the fly); the transpose has
    ``-up_{i-1}`` at ``i-1`` and ``-lo_{i+1}`` at ``i+1``.  Every term of the elimination is
    non-negative (off-diagonal magnitudes ``>= 0``, pivots ``>= 1``), so a non-negative
    ``rhs`` gives a non-negative ``x`` exactly, with no cancellation.  ``cp`` is scratch;
    ``out`` may not alias ``rhs``.
    """
    dt, lower, dx = mesh.dt, mesh.lower, mesh.dx
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
def fd_backward_sweep(pop, coef, rule, mesh):
    """Backward implicit finite-difference sweep with the exit step of docs/model.md 2.3 (one population).

    Same arguments and returns ``(V, q, threshold)`` as :func:`mfg.lp_exit.kernels.backward_sweep`;
    the continuation value is ``C = running + discount * (I - dt A_n)^{-1} V^{n+1}`` (module
    docstring) instead of the SL two-foot average.  The work is done by :func:`fd_backward`.
    """
    n_t = coef.drift_c.shape[0]
    n = pop.running.shape[0]
    V = np.full((n_t, n), np.nan)
    q = np.zeros((n_t, n))
    thr = np.full(n_t, np.nan)
    fd_backward(pop, coef, rule, mesh, V, q, thr, np.empty((0, 0)))
    return V, q, thr


@njit(cache=True, nogil=True)
def fd_backward(pop, coef, rule, mesh, V, q, thr, C):
    """:func:`fd_backward_sweep` into given arrays: the buffered contract of :func:`mfg.lp_exit.kernels.sl_backward`.

    ``V`` is ``(n_t, n)`` (every row) or ``(2, n)`` (two rows, row ``t`` in ``V[t % 2]``);
    writes ``V`` rows ``n_first..n_last``, ``q`` rows ``n_first..n_last-1``,
    ``thr[n_first:n_last]`` (NaN where no threshold) and, when ``C`` is not empty, the
    continuation values.
    """
    n = pop.running.shape[0]
    keep_C = C.shape[0] > 0
    full = keeps_every_row(V, coef.drift_c.shape[0])
    crow = np.empty(n)
    cp = np.empty(n)
    E = np.empty(n)
    nl = pop.n_last if full else pop.n_last & 1
    for i in range(n):
        V[nl, i] = pop.terminal[i]
    for t in range(pop.n_last - 1, pop.n_first - 1, -1):
        cur, nxt = row_pair(V, t, full)
        _solve_step(coef.drift_c[t], coef.sigma[t], pop.drift_a, mesh, nxt, False, cp, E)
        for i in range(n):
            crow[i] = running_at(pop, t, i) + pop.discount * E[i]
        if keep_C:
            C[t, :] = crow
        thr[t] = exit_rule(crow, coef.gain[t], pop, rule, t, cur, q[t], mesh.lower, mesh.dx)


@njit(cache=True, nogil=True)
def fd_forward_sweep(m0, pop, coef, q, mesh):
    """Exact transpose of :func:`fd_backward_sweep` (one population).

    Same arguments and returns ``(m, exited)`` as :func:`mfg.lp_exit.kernels.forward_sweep`:
    ``m0`` (nodal masses) is placed at step ``n_first``; in step ``n`` the mass
    ``m_i q_i`` exits and ``m^{n+1}`` solves ``(I - dt A_n)^T m^{n+1} = m^n (1 - q)``.
    The work is done by :func:`fd_forward`.
    """
    n_t = coef.drift_c.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_t, n))
    exited = np.zeros(n_t)
    fd_forward(m0, pop, coef, q, mesh, m, exited, (np.empty(0), np.empty((0, 0))))
    return m, exited


@njit(cache=True, nogil=True)
def fd_forward(m0, pop, coef, q, mesh, m, exited, moments):
    """:func:`fd_forward_sweep` into given arrays: the buffered contract of :func:`mfg.lp_exit.kernels.sl_forward`.

    ``m`` is ``(n_t, n)`` or ``(2, n)`` (row ``t`` in ``m[t % 2]``); ``moments`` is ``(x, stats)``
    with ``stats`` of shape ``(3, n_t)`` (mass, first moment over ``x``, exit sensitivity per
    step, summed in node order) or empty arrays.
    """
    n = m0.shape[0]
    full = keeps_every_row(m, coef.drift_c.shape[0])
    want = moments[1].shape[0] >= 3
    cp = np.empty(n)
    rhs = np.empty(n)
    r0 = pop.n_first if full else pop.n_first & 1
    for i in range(n):
        m[r0, i] = m0[i]
    for t in range(pop.n_first, pop.n_last):
        cur, nxt = row_pair(m, t, full)
        if want:
            step_moments(cur, q[t], pop.q_max[t], moments, t)
        exited[t] = fd_transport(cur, nxt, q[t], coef.drift_c[t], coef.sigma[t], pop.drift_a, mesh, cp, rhs)
    if want:
        last_moments(m, pop.n_last, full, moments)


@njit(cache=True, nogil=True)
def fd_transport(cur, nxt, qt, drift_c_t, sigma_t, drift_a, mesh, cp, rhs):
    """One FD forward step of one population: the mass ``m_i q_i`` exits and ``nxt`` solves
    ``(I - dt A_n)^T nxt = cur (1 - q)``; ``cp``, ``rhs`` are scratch.  Returns the exited mass."""
    e = 0.0
    for i in range(cur.shape[0]):
        mass = cur[i]
        out = mass * qt[i]
        e += out
        rhs[i] = mass - out
    _solve_step(drift_c_t, sigma_t, drift_a, mesh, rhs, True, cp, nxt)
    return e
