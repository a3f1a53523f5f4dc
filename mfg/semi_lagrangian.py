"""Semi-Lagrangian (SL) building blocks on a uniform 1-D grid.

These are the pieces both continuum solvers share (docs/model.md 1.2 and 2.6):

* :class:`UniformGrid` — nodes ``x_i = lower + i * spacing``, ``i = 0..n-1``;
* :func:`interp_p1` — the P1 (hat-function) interpolant ``I[u](y)``;
* :func:`deposit_p1` — its adjoint: mass sitting at a foot ``y`` is split between
  the two nodes around ``y`` with the same P1 weights, so mass is conserved exactly
  and stays non-negative;
* :func:`minimise_p1` — the exact minimisation of
  ``I[u](x + h v) + h (l(v) + w v)`` over ``v`` for a power-law impact
  ``l(v) = scale * |v|**p`` (``p > 1``) on P1 data.

Boundary conventions.  A foot that leaves ``[lower, upper]`` is clamped to the
nearest end: interpolation extends ``I[u]`` by a constant outside the domain and the
mass deposit puts the mass on the boundary node, so the two stay adjoint and mass is
conserved exactly (the second-order LP-exit sweep relies on this, with a domain wide
enough that the clamped mass is negligible).  The first-order minimisation can
instead keep the feet inside the domain (``constrain=True``, a state constraint):
only feet in ``[lower, upper]`` are admissible, so no foot is ever clamped.  The
price-formation solver uses the state constraint; it is what reproduces the
published errors of Ashrafyan & Gomes (docs/price_formation.md).

The scalar kernels are ``@njit`` functions that other numba kernels call directly;
the array functions are thin, validated wrappers for Python callers.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = [
    "UniformGrid",
    "interp_p1",
    "deposit_p1",
    "minimise_p1",
    "locate",
    "interp_at",
    "deposit_at",
    "minimise_at",
    "power_cost",
    "power_marginal",
    "power_marginal_inverse",
    "power_marginal_inverse_derivative",
    "slope_range",
]


@dataclass(frozen=True)
class UniformGrid:
    """A uniform grid of ``n`` nodes on ``[lower, upper]`` (``n >= 2``)."""

    lower: float
    upper: float
    n: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"grid bounds must be finite, got [{self.lower}, {self.upper}]")
        if not self.upper > self.lower:
            raise ValueError(f"grid is empty: upper ({self.upper}) must exceed lower ({self.lower})")
        if not isinstance(self.n, numbers.Integral):
            raise ValueError(f"the number of grid nodes must be an integer, got n={self.n!r}")
        if self.n < 2:
            raise ValueError(f"a grid needs at least 2 nodes, got n={self.n}")

    @classmethod
    def from_spacing(cls, lower: float, upper: float, spacing: float, *, name: str = "spacing") -> "UniformGrid":
        """Grid with the given spacing; ``(upper - lower) / spacing`` must be an integer."""
        if not (math.isfinite(spacing) and spacing > 0):
            raise ValueError(f"{name} must be a positive finite number, got {spacing!r}")
        cells = (upper - lower) / spacing
        n_cells = round(cells)
        if n_cells < 1 or abs(cells - n_cells) > 1e-9 * max(1.0, cells):
            raise ValueError(
                f"{name}={spacing!r} does not divide the interval [{lower}, {upper}] "
                f"into a whole number of cells ({cells:.6g})"
            )
        return cls(float(lower), float(upper), int(n_cells) + 1)

    @property
    def spacing(self) -> float:
        return (self.upper - self.lower) / (self.n - 1)

    @property
    def nodes(self) -> np.ndarray:
        return np.linspace(self.lower, self.upper, self.n)


# ----------------------------------------------------------------------------------
# scalar kernels
# ----------------------------------------------------------------------------------


@njit(cache=True)
def locate(y, lower, dx, n):
    """Cell ``j`` and weight ``w`` of node ``j+1`` for the (clamped) point ``y``.

    ``I[u](y) = (1 - w) u[j] + w u[j+1]`` with ``0 <= j <= n-2`` and ``0 <= w <= 1``.  A NaN
    point falls on the first node (never an index outside the grid).
    """
    s = (y - lower) / dx
    if not s > 0.0:  # also NaN
        return 0, 0.0
    if s >= n - 1:
        return n - 2, 1.0
    j = int(math.floor(s))
    if j > n - 2:
        j = n - 2
    return j, s - j


@njit(cache=True)
def interp_at(values, lower, dx, y):
    """P1 interpolant of nodal ``values`` at ``y`` (constant extension outside)."""
    j, w = locate(y, lower, dx, values.shape[0])
    return (1.0 - w) * values[j] + w * values[j + 1]


@njit(cache=True)
def deposit_at(out, lower, dx, y, mass):
    """Add ``mass`` located at ``y`` to the nodes of ``out`` with P1 weights."""
    j, w = locate(y, lower, dx, out.shape[0])
    out[j] += (1.0 - w) * mass
    out[j + 1] += w * mass


@njit(cache=True)
def power_cost(v, p, scale):
    """``l(v) = scale * |v|**p``."""
    if p == 2.0:  # the common quadratic case without a call to pow
        return scale * v * v
    return scale * abs(v) ** p


@njit(cache=True)
def power_marginal(v, p, scale):
    """``l'(v) = scale * p * |v|**(p-1) * sign(v)``."""
    if p == 2.0:
        return 2.0 * scale * v
    if v == 0.0:
        return 0.0
    return math.copysign(scale * p * abs(v) ** (p - 1.0), v)


@njit(cache=True)
def _power(x, e):
    """``x**e`` for ``x >= 0``, by multiplication when ``e`` is a small whole number.

    ``1/(p - 1)`` is whole for the usual impacts (p = 2, 3/2, 4/3: e = 1, 2, 3) but is
    computed with round-off (``1/(4/3 - 1) = 3.0000000000000004``), and ``pow`` is
    several times slower than a product in the innermost loops.
    """
    k = round(e)
    if abs(e - k) < 1e-12:
        if k == 1:
            return x
        if k == 2:
            return x * x
        if k == 3:
            return x * x * x
        if k == 4:
            y = x * x
            return y * y
        if k == 0:
            return 1.0
    return x**e


@njit(cache=True)
def power_marginal_inverse(w, p, scale):
    """The ``v`` with ``l'(v) = w`` (``l'`` is a strictly increasing bijection for ``p > 1``)."""
    if p == 2.0:
        return w / (2.0 * scale)
    if w == 0.0:
        return 0.0
    return math.copysign(_power(abs(w) / (scale * p), 1.0 / (p - 1.0)), w)


@njit(cache=True)
def power_marginal_inverse_derivative(w, p, scale):
    """``d/dw (l')^{-1}(w) = 1 / l''(v)``; ``inf`` where ``l''`` vanishes (``p > 2``, ``w = 0``)."""
    e = 1.0 / (p - 1.0)
    if w == 0.0:
        if e > 1.0:
            return 0.0
        if e == 1.0:
            return 1.0 / (scale * p)
        return math.inf
    return e * _power(abs(w) / (scale * p), e - 1.0) / (scale * p)


@njit(cache=True)
def slope_range(values, dx):
    """Smallest and largest cell slope of the P1 data, widened to include 0.

    The 0 accounts for the constant extension outside the grid.  Every minimiser
    of :func:`minimise_at` lies where ``l'(v) + w`` is within minus this range.
    """
    smin = 0.0
    smax = 0.0
    for j in range(values.shape[0] - 1):
        s = (values[j + 1] - values[j]) / dx
        if s < smin:
            smin = s
        if s > smax:
            smax = s
    return smin, smax


@njit(cache=True)
def minimise_at(values, lower, dx, x, h, price, p, scale, smin, smax, constrain):
    """Exact ``min_v I[u](x + h v) + h (l(v) + price * v)`` for P1 data ``u``.

    ``I[u]`` (extended by constants outside the grid) is linear on each cell, so on
    each cell the objective is convex and its minimum is the cell's stationary point
    ``v = (l')^{-1}(-(slope + price))`` clipped to the cell: this covers the cellwise
    stationary points and the node feet.  Only cells that can hold a minimiser are
    visited: on the left of ``v_lo = (l')^{-1}(-(price + smax))`` every one-sided
    derivative of the objective is negative, on the right of
    ``v_hi = (l')^{-1}(-(price + smin))`` every one is positive.  The cost is
    ``O(h (v_hi - v_lo) / dx)`` cells, independent of the grid size for fixed h/dx;
    no convexity of ``u`` is needed.  Ties go to the smallest ``v``.

    With ``constrain`` the admissible feet are ``[lower, upper]`` (state
    constraint); otherwise ``I[u]`` is extended by constants outside the grid.
    ``smin, smax`` come from :func:`slope_range` of the same ``values``.

    Returns ``(v_star, minimum)``.
    """
    n = values.shape[0]
    upper = lower + (n - 1) * dx
    v_lo = power_marginal_inverse(-(price + smax), p, scale)
    v_hi = power_marginal_inverse(-(price + smin), p, scale)
    if constrain:
        v_min = (lower - x) / h
        v_max = (upper - x) / h
        v_lo = min(max(v_lo, v_min), v_max)
        v_hi = min(max(v_hi, v_min), v_max)
    y_lo = x + h * v_lo
    y_hi = x + h * v_hi
    # pieces: -1 = (-inf, lower], 0..n-2 = cells, n-1 = [upper, inf)
    if y_lo < lower:
        first = -1
    elif y_lo >= upper:
        first = n - 1
    else:
        first = min(int(math.floor((y_lo - lower) / dx)), n - 2)
    if y_hi < lower:
        last = -1
    elif y_hi >= upper:
        last = n - 1
    else:
        last = min(int(math.floor((y_hi - lower) / dx)), n - 2)

    # v_lo is itself admissible; starting from it keeps the result finite even when
    # round-off empties every piece's interval (a node sitting exactly on an end).
    best_v = v_lo
    best = interp_at(values, lower, dx, x + h * v_lo) + h * (power_cost(v_lo, p, scale) + price * v_lo)
    for j in range(first, last + 1):
        if j == -1:
            slope = 0.0
            y_left = -math.inf
            y_right = lower
            base = values[0]
            x_base = lower
        elif j == n - 1:
            slope = 0.0
            y_left = upper
            y_right = math.inf
            base = values[n - 1]
            x_base = upper
        else:
            x_base = lower + j * dx
            y_left = x_base
            y_right = x_base + dx
            base = values[j]
            slope = (values[j + 1] - values[j]) / dx
        v_left = max((y_left - x) / h, v_lo)
        v_right = min((y_right - x) / h, v_hi)
        if v_left > v_right:
            continue
        v = power_marginal_inverse(-(slope + price), p, scale)
        if v < v_left:
            v = v_left
        elif v > v_right:
            v = v_right
        y = x + h * v
        val = base + slope * (y - x_base) + h * (power_cost(v, p, scale) + price * v)
        if val < best:
            best = val
            best_v = v
    return best_v, best


# ----------------------------------------------------------------------------------
# array wrappers
# ----------------------------------------------------------------------------------


@njit(cache=True)
def _interp_many(values, lower, dx, points, out):
    for i in range(points.shape[0]):
        out[i] = interp_at(values, lower, dx, points[i])


@njit(cache=True)
def _deposit_many(out, lower, dx, points, masses):
    for i in range(points.shape[0]):
        deposit_at(out, lower, dx, points[i], masses[i])


@njit(cache=True)
def _minimise_many(values, lower, dx, xs, h, price, p, scale, constrain, v_out, val_out):
    smin, smax = slope_range(values, dx)
    for i in range(xs.shape[0]):
        v_out[i], val_out[i] = minimise_at(values, lower, dx, xs[i], h, price, p, scale, smin, smax, constrain)


def _as_1d(name: str, a) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def interp_p1(grid: UniformGrid, values, points) -> np.ndarray:
    """``I[values](points)`` on ``grid``; points outside the grid are clamped."""
    values = _as_1d("values", values)
    if values.shape[0] != grid.n:
        raise ValueError(f"values has {values.shape[0]} entries, the grid has {grid.n} nodes")
    pts = np.ascontiguousarray(points, dtype=np.float64)
    flat = pts.ravel()
    out = np.empty_like(flat)
    _interp_many(values, grid.lower, grid.spacing, flat, out)
    return out.reshape(pts.shape)


def deposit_p1(grid: UniformGrid, points, masses) -> np.ndarray:
    """Nodal masses obtained by splitting each ``masses[k]`` at ``points[k]`` (adjoint of :func:`interp_p1`)."""
    pts = _as_1d("points", points)
    ms = _as_1d("masses", np.broadcast_to(masses, pts.shape))
    out = np.zeros(grid.n)
    _deposit_many(out, grid.lower, grid.spacing, pts, ms)
    return out


def minimise_p1(grid: UniformGrid, values, points, h: float, price: float, p: float, scale: float,
                *, constrain: bool = True):
    """Vectorised :func:`minimise_at` at ``points``; returns ``(v_star, minimum)`` arrays.

    ``constrain=True`` admits only feet inside the grid (state constraint); ``False``
    extends ``I[u]`` by constants outside it.
    """
    values = _as_1d("values", values)
    if values.shape[0] != grid.n:
        raise ValueError(f"values has {values.shape[0]} entries, the grid has {grid.n} nodes")
    if not (h > 0 and p > 1 and scale > 0):
        raise ValueError("need h > 0, p > 1 and scale > 0")
    xs = _as_1d("points", points)
    v = np.empty_like(xs)
    val = np.empty_like(xs)
    _minimise_many(values, grid.lower, grid.spacing, xs, float(h), float(price), float(p), float(scale),
                   bool(constrain), v, val)
    return v, val
