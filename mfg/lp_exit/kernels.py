"""numba kernels of the LP-exit game: the second-order SL sweeps and the exit rule (docs/model.md 2.3, 2.6).

One population at a time, on plain arrays grouped into named tuples (numba compiles
attribute access away):

* :class:`Mesh` ``(lower, dx, dt)`` — the liquidity grid ``lower + i dx`` and the step;
* :class:`PopulationData` ``(n_first, n_last, terminal, running, discount, q_max, drift_a)``
  — what does not depend on the price path (:meth:`LPDiscretisation.population
  <mfg.lp_exit.discretisation.LPDiscretisation.population>` builds it);
* :class:`StepCoefficients` ``(drift_c, sigma, G)`` — per step ``n``: the constant part of
  the drift ``b(t_n, L) = drift_c[n] - drift_a L``, the volatility and the exit value
  (:meth:`LPDiscretisation.coefficients <mfg.lp_exit.discretisation.LPDiscretisation.coefficients>`);
* :class:`ExitRule` ``(temperature, evaluate, q_given)`` — logit, hard rule or a given policy.

:func:`backward_sweep` and :func:`forward_sweep` allocate their outputs; the buffered forms
:func:`sl_backward` and :func:`sl_forward` write into arrays passed in (two rows kept on
request, the mean-field moments and the preconditioner's exit sensitivity summed inside
the forward sweep): what :func:`mfg.lp_exit.solve` runs.  The finite-difference kernels of
:mod:`mfg.lp_exit.fd` have the same contracts and share :func:`exit_rule`.

numba's ``cache=True`` does not see edits of a kernel called from another module: after
editing :func:`exit_rule` or the helpers here, delete the ``__pycache__`` folders.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

__all__ = [
    "Mesh",
    "PopulationData",
    "StepCoefficients",
    "ExitRule",
    "simple_population",
    "LOGIT_CUTOFF",
    "backward_sweep",
    "forward_sweep",
    "sl_backward",
    "sl_forward",
    "sl_transport",
    "step_moments",
    "exit_rule",
    "running_at",
    "no_moments",
]

Mesh = namedtuple("Mesh", ["lower", "dx", "dt"])
Mesh.__doc__ = "The liquidity grid ``lower + i dx`` and the time step ``dt`` (years)."

PopulationData = namedtuple("PopulationData", ["n_first", "n_last", "terminal", "running", "discount", "q_max",
                                               "drift_a", "dfac", "phi", "cost_shape", "eta_extra"])
PopulationData.__doc__ = """Path-independent data of one population (docs/model.md 2.3, 2.6).

``n_first``/``n_last``: first decision step and terminal step (``V[n_last] = terminal``);
``running``: ``(y - c(L)) dt`` at the nodes; ``discount``: ``exp(-(r - g) dt)``;
``q_max``: ``(n_t,)`` per-step sale-process probability ``1 - exp(-a_max(t_n) dt)``;
``drift_a``: ``kappa + lam`` (the drift's slope); ``dfac``: ``(n_L,)`` distress factor of the
deal price ``(1 - delta (ell - L)^+)^+``; ``phi``: transaction cost; ``cost_shape``:
``(ell - L)^+`` and ``eta_extra``: ``(n_t,)`` the seasonal extra holding cost
``eta (eta_factor(t_n) - 1) dt``, so that step ``n`` pays ``running - eta_extra[n] cost_shape``."""

StepCoefficients = namedtuple("StepCoefficients", ["drift_c", "sigma", "gain"])
StepCoefficients.__doc__ = """Per-step coefficients of one population on a price path, each ``(n_t,)``:
the drift's constant part ``drift_c``, the volatility ``sigma`` and the vintage price
``gain = P A(remaining life)``; the exit value at node ``i`` is ``gain dfac_i - phi``."""

ExitRule = namedtuple("ExitRule", ["temperature", "evaluate", "q_given"])
ExitRule.__doc__ = """The exit decision: ``q = q_max logistic((G - C)/temperature)`` for ``temperature > 0``,
``q_max 1{G > C}`` at 0, or ``q_given[n, i]`` when ``evaluate`` (policy evaluation)."""

#: Logit arguments below ``-LOGIT_CUTOFF`` give ``q = 0`` without calling ``exp``
#: (the neglected probability is below ``q_max * exp(-40) = 4e-18 q_max``); above
#: ``+LOGIT_CUTOFF`` the logistic function is exactly 1.0 in double precision anyway.
LOGIT_CUTOFF = 40.0


def simple_population(n_first: int, n_last: int, terminal, running, discount: float, q_max: float, drift_a: float,
                      n_t: int) -> PopulationData:
    """A :class:`PopulationData` with a constant ``q_max``, no distress discount (``dfac = 1``), no
    transaction cost and no seasonal holding cost: the exit value is then the step's ``gain``."""
    n = np.asarray(running).shape[0]
    return PopulationData(int(n_first), int(n_last), np.asarray(terminal, dtype=float),
                          np.asarray(running, dtype=float), float(discount), np.full(n_t, float(q_max)),
                          float(drift_a), np.ones(n), 0.0, np.zeros(n), np.zeros(n_t))


def no_moments():
    """The ``moments`` argument of :func:`sl_forward` when no moments are wanted."""
    return (np.empty(0), np.empty((0, 0)))


# ----------------------------------------------------------------------------------
# scalar helpers
# ----------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _logistic(x):
    # the two branches avoid overflow of exp for large |x|
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def _interp_s(values, s, last):
    """P1 interpolant at the grid coordinate ``s = (y - lower)/dx`` (constant outside; NaN: the first node)."""
    if not s > 0.0:
        return values[0]
    if s >= last:
        return values[last]
    j = int(s)
    w = s - j
    return values[j] + w * (values[j + 1] - values[j])


@njit(cache=True, inline="always")
def _deposit_s(out, s, last, mass):
    """Adjoint of :func:`_interp_s`: ``mass`` at grid coordinate ``s`` split by the P1 weights."""
    if not s > 0.0:
        out[0] += mass
    elif s >= last:
        out[last] += mass
    else:
        j = int(s)
        w = s - j
        out[j] += mass - w * mass
        out[j + 1] += w * mass


@njit(cache=True, inline="always")
def interior_range(rate, sp0, sm0, last, n):
    """Node range ``[i_in, i_out)``, ``0 <= i_in <= i_out <= n``, whose feet ``i rate + s0±`` lie in
    ``(0, last)`` with a one-node margin; ``(0, 0)`` when no node qualifies (every node is then
    handled by the clamped loops).

    Both bounds are computed in floating point and compared with ``n`` before any conversion
    to an integer, so that feet far outside the grid (a strong drift: every foot below the
    grid, say) or non-finite coordinates give an empty range, never an index past ``n``.
    """
    if not rate > 0.0:
        return 0, 0
    lo = (1.0 - min(sp0, sm0)) / rate + 1.0
    hi = (last - 1.0 - max(sp0, sm0)) / rate - 1.0
    if not (lo < n and hi >= 0.0 and hi >= lo - 1.0):  # also False for NaN
        return 0, 0
    i_in = int(math.ceil(lo)) if lo > 0.0 else 0
    i_out = min(n, int(math.floor(min(hi, float(n)))) + 1)
    if i_out <= i_in:
        return 0, 0
    return i_in, i_out


@njit(cache=True, inline="always")
def _feet(drift_c_t, sigma_t, drift_a, mesh):
    """Grid coordinates of the two feet of node 0 for one step, and the per-node rate: ``(sp0, sm0, rate)``."""
    dt = mesh.dt
    sq = sigma_t * math.sqrt(dt) / mesh.dx
    base = (drift_c_t * dt - drift_a * dt * mesh.lower) / mesh.dx
    return base + sq, base - sq, 1.0 - drift_a * dt


# ----------------------------------------------------------------------------------
# the exit rule (shared with the FD kernels)
# ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def exit_rule(crow, gain_t, pop, rule, t, cur, qt, lower, dx):
    """The exit step of docs/model.md 2.3 on one row: ``q`` into ``qt``, ``V = C + q (G - C)`` into ``cur``.

    ``crow``: continuation values ``C`` at the nodes; the exit value at node ``i`` is
    ``G_i = gain_t dfac_i - phi`` (``gain_t = P A`` of the step); ``rule``: :class:`ExitRule`
    (``q_given[t]`` is read when evaluating a policy).  Where the logit is cut off
    (``(G - C)/temperature < -LOGIT_CUTOFF``), ``q = 0`` and ``V = C`` exactly.  Returns the
    exit threshold: the highest zero of the P1 interpolant of ``C - G`` (exit below it),
    NaN where ``C - G`` has no sign change.
    """
    n = crow.shape[0]
    temperature = rule.temperature
    hard = temperature == 0.0
    q_max = pop.q_max[t]
    dfac = pop.dfac
    phi = pop.phi
    above = -1  # highest node i-1 with C - G <= 0 at i-1 and C - G > 0 at i
    d_lo = 0.0
    d_hi = 0.0
    prev_d = 0.0
    # specialised by kind (no per-node test of the kind)
    if rule.evaluate or hard:
        for i in range(n):
            c = crow[i]
            d = (gain_t * dfac[i] - phi) - c
            if rule.evaluate:
                qi = rule.q_given[t, i]
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
        inv_temp = 1.0 / temperature
        for i in range(n):
            c = crow[i]
            d = (gain_t * dfac[i] - phi) - c
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
        return lower + dx * (above + d_lo / (d_lo - d_hi))
    return np.nan


@njit(cache=True, inline="always")
def running_at(pop, t, i):
    """The running payoff of step ``t`` at node ``i``: ``running_i - eta_extra[t] cost_shape_i``."""
    return pop.running[i] - pop.eta_extra[t] * pop.cost_shape[i]


@njit(cache=True, inline="always")
def row_pair(a, t, full):
    """Rows ``t`` and ``t + 1`` of ``a``: ``a[t], a[t + 1]``, or ``a[t % 2], a[(t + 1) % 2]`` when two rows are kept."""
    if full:
        return a[t], a[t + 1]
    return a[t & 1], a[(t + 1) & 1]


@njit(cache=True, inline="always")
def keeps_every_row(a, n_t):
    """Whether a buffer ``a`` keeps every row (``(n_t, n)``) rather than two (``(2, n)``)."""
    return a.shape[0] != 2 or n_t == 2


@njit(cache=True, inline="always")
def last_moments(m, n_last, full, moments):
    """Moments of row ``n_last`` of a forward sweep (mass, first moment, no exit sensitivity; with
    five rows of ``stats`` the masses on the end nodes)."""
    x, stats = moments
    cur = m[n_last] if full else m[n_last & 1]
    s0 = 0.0
    s1 = 0.0
    for i in range(cur.shape[0]):
        s0 += cur[i]
        s1 += x[i] * cur[i]
    stats[0, n_last] = s0
    stats[1, n_last] = s1
    stats[2, n_last] = 0.0
    if stats.shape[0] >= 5:
        stats[3, n_last] = cur[0]
        stats[4, n_last] = cur[cur.shape[0] - 1]


# ----------------------------------------------------------------------------------
# SL sweeps
# ----------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def backward_sweep(pop, coef, rule, mesh):
    """Backward SL sweep with the exit step of docs/model.md 2.3 for one population.

    Feet ``y± = L_i + b dt ± sigma[n] sqrt(dt)`` with ``b = drift_c[n] - drift_a L_i``;
    ``C = running_i + discount * (I[V^{n+1}](y+) + I[V^{n+1}](y-)) / 2``; the exit rule
    (:func:`exit_rule`) gives ``q`` and ``V = C + q (G - C)``.  Decisions are taken at steps
    ``n_first..n_last-1``; ``V[n_last] = terminal``.  Returns ``(V, q, threshold)``: rows
    outside ``[n_first, n_last]`` are NaN (value) or 0 (``q``); ``threshold[n]`` as returned
    by :func:`exit_rule`, NaN outside the decision steps.  The work is done by :func:`sl_backward`.
    """
    n_t = coef.drift_c.shape[0]
    n = pop.running.shape[0]
    V = np.full((n_t, n), np.nan)
    q = np.zeros((n_t, n))
    thr = np.full(n_t, np.nan)
    sl_backward(pop, coef, rule, mesh, V, q, thr, np.empty((0, 0)))
    return V, q, thr


@njit(cache=True, nogil=True)
def sl_backward(pop, coef, rule, mesh, V, q, thr, C):
    """:func:`backward_sweep` into given arrays (the buffered contract shared with the FD kernel).

    ``V``: ``(n_t, n)`` to keep every row, or ``(2, n)`` to keep two rows (row ``t`` is
    ``V[t % 2]``; the value at ``n_first`` ends in ``V[n_first % 2]``).  Writes ``V`` rows
    ``n_first..n_last``, ``q`` rows ``n_first..n_last-1`` and ``thr[n_first:n_last]``, and,
    when ``C`` is ``(n_t, n)`` (not empty), the continuation values of rows
    ``n_first..n_last-1`` (what the clearing market needs); nothing else is touched.

    The drift is affine in ``L``, so the feet are affine in the node index: the grid
    coordinate of ``y±`` is ``s± = i (1 - drift_a dt) + s0±``, computed without a division
    per node (the same formula as :func:`sl_forward`, so the two stay exact adjoints).
    """
    n = pop.running.shape[0]
    last = n - 1
    full = keeps_every_row(V, coef.drift_c.shape[0])
    nl = pop.n_last if full else pop.n_last & 1
    for i in range(n):
        V[nl, i] = pop.terminal[i]
    keep_C = C.shape[0] > 0
    crow = np.empty(n)
    half_disc = 0.5 * pop.discount
    for t in range(pop.n_last - 1, pop.n_first - 1, -1):
        sp0, sm0, rate = _feet(coef.drift_c[t], coef.sigma[t], pop.drift_a, mesh)
        cur, nxt = row_pair(V, t, full)
        # nodes whose two feet lie strictly inside the grid (with a margin of one node
        # against rounding) need no clamping: the middle loop has no branch
        i_in, i_out = interior_range(rate, sp0, sm0, last, n)
        for i in range(i_in):
            fi = i * rate
            crow[i] = running_at(pop, t, i) + half_disc * (_interp_s(nxt, fi + sp0, last)
                                                           + _interp_s(nxt, fi + sm0, last))
        for i in range(i_in, i_out):
            fi = i * rate
            sp = fi + sp0
            jp = int(sp)
            wp = sp - jp
            sm = fi + sm0
            jm = int(sm)
            wm = sm - jm
            crow[i] = running_at(pop, t, i) + half_disc * ((nxt[jp] + wp * (nxt[jp + 1] - nxt[jp]))
                                                           + (nxt[jm] + wm * (nxt[jm + 1] - nxt[jm])))
        for i in range(max(i_in, i_out), n):
            fi = i * rate
            crow[i] = running_at(pop, t, i) + half_disc * (_interp_s(nxt, fi + sp0, last)
                                                           + _interp_s(nxt, fi + sm0, last))
        if keep_C:
            C[t, :] = crow
        thr[t] = exit_rule(crow, coef.gain[t], pop, rule, t, cur, q[t], mesh.lower, mesh.dx)


@njit(cache=True, nogil=True)
def forward_sweep(m0, pop, coef, q, mesh):
    """Exact adjoint of :func:`backward_sweep` (docs/model.md 2.6) for one population.

    ``m0`` are nodal masses (summing to at most 1) placed at step ``n_first``.  In step
    ``n`` the mass ``m_i q_i`` exits (summed into ``exited[n]``) and ``m_i (1 - q_i)``
    moves to the feet ``y±`` with weight 1/2 each, split by the P1 weights (clamped at
    the ends, so no mass is lost).  Returns ``m`` of shape ``(n_t, n)`` (zero outside
    ``[n_first, n_last]``) and ``exited`` of shape ``(n_t,)``.  The work is done by
    :func:`sl_forward`.
    """
    n_t = coef.drift_c.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_t, n))
    exited = np.zeros(n_t)
    sl_forward(m0, pop, coef, q, mesh, m, exited, (np.empty(0), np.empty((0, 0))))
    return m, exited


@njit(cache=True, nogil=True)
def sl_forward(m0, pop, coef, q, mesh, m, exited, moments):
    """:func:`forward_sweep` into given arrays (the buffered contract shared with the FD kernel).

    ``m``: ``(n_t, n)`` to keep every row, or ``(2, n)`` to keep two rows (row ``t`` is
    ``m[t % 2]``); rows outside ``[n_first, n_last]`` are not touched.  ``exited[n]`` is
    written for ``n_first <= n < n_last``.  ``moments``: ``(x, stats)`` with ``stats`` of
    shape ``(3, n_t)`` or ``(5, n_t)`` (rows 3, 4: the masses on the end nodes), or empty
    arrays (:func:`no_moments`); when given,
    ``stats[0, n] = sum_i m_i``, ``stats[1, n] = sum_i x_i m_i`` for ``n_first <= n <=
    n_last`` and ``stats[2, n] = sum_{q_i > 0} m_i q_i (1 - q_i / q_max)`` (0 if ``q_max
    <= 0``) for ``n_first <= n < n_last``: the moments of the mean field and the exit
    sensitivity of the preconditioner, summed in node order.
    """
    n = m0.shape[0]
    full = keeps_every_row(m, coef.drift_c.shape[0])
    want = moments[1].shape[0] >= 3
    r0 = pop.n_first if full else pop.n_first & 1
    for i in range(n):
        m[r0, i] = m0[i]
    for t in range(pop.n_first, pop.n_last):
        cur, nxt = row_pair(m, t, full)
        if want:
            step_moments(cur, q[t], pop.q_max[t], moments, t)
        exited[t] = sl_transport(cur, nxt, q[t], coef.drift_c[t], coef.sigma[t], pop.drift_a, mesh)
    if want:
        last_moments(m, pop.n_last, full, moments)


@njit(cache=True, inline="always")
def step_moments(cur, qt, q_max, moments, t):
    """Mass, first moment and exit sensitivity ``sum_{q_i > 0} m_i q_i (1 - q_i / q_max)`` of row ``cur``
    into ``stats[:, t]`` (summed in node order)."""
    x, stats = moments
    sens = q_max > 0.0
    inv = 1.0 / q_max if sens else 0.0
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    for i in range(cur.shape[0]):
        mass = cur[i]
        s0 += mass
        s1 += x[i] * mass
        qi = qt[i]
        if sens and mass != 0.0 and qi > 0.0:
            s2 += mass * qi * (1.0 - qi * inv)
    stats[0, t] = s0
    stats[1, t] = s1
    stats[2, t] = s2
    if stats.shape[0] >= 5:  # the masses on the end nodes (bookkeeping without the density table)
        stats[3, t] = cur[0]
        stats[4, t] = cur[cur.shape[0] - 1]


@njit(cache=True, nogil=True)
def sl_transport(cur, nxt, qt, drift_c_t, sigma_t, drift_a, mesh):
    """One SL forward step of one population: the mass ``m_i q_i`` exits, ``m_i (1 - q_i)`` moves to the
    feet ``y±`` with weight 1/2 each, split by the P1 weights (clamped at the ends, so no mass is lost).
    Overwrites ``nxt``; returns the exited mass (summed in node order)."""
    n = cur.shape[0]
    last = n - 1
    sp0, sm0, rate = _feet(drift_c_t, sigma_t, drift_a, mesh)
    nxt[:] = 0.0
    e = 0.0
    i_in, i_out = interior_range(rate, sp0, sm0, last, n)
    for i in range(n):
        mass = cur[i]
        if mass == 0.0:
            continue
        out = mass * qt[i]
        e += out
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
    return e
