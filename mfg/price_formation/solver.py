"""Fully discrete semi-Lagrangian solver for the price-formation MFG (docs/model.md 1).

Data flow: :class:`PriceFormationProblem` (continuous data) → :func:`discretise`
(nodal arrays on the ``(rho, h)`` mesh, validated) → :func:`solve` (fixed point of
backward HJ sweep, forward adjoint transport, price update) →
:class:`PriceFormationResult`.

The numerical kernels (:func:`hj_backward`, :func:`transport_forward`,
:func:`balance_price`) work on plain arrays so the finite-N market in
:mod:`abm.price_formation.market` reuses them unchanged.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numba import njit

from ..results import BoundaryMassWarning, ConvergenceWarning, Status, message_of, status_of
from ..semi_lagrangian import (
    UniformGrid,
    deposit_at,
    minimise_at,
    power_marginal,
    power_marginal_inverse,
    power_marginal_inverse_derivative,
    slope_range,
)
from .callables import evaluate_callable
from .impact import Impact, PowerImpact, QuadraticImpact

__all__ = [
    "PriceFormationProblem",
    "PriceFormationResult",
    "DiscreteProblem",
    "ConvergenceWarning",
    "QuadraticImpact",
    "PowerImpact",
    "discretise",
    "solve",
    "hj_backward",
    "transport_forward",
    "balance_price",
]


@dataclass(frozen=True)
class PriceFormationProblem:
    """Continuous data of the price-formation MFG (docs/model.md 1.1).

    ``potential(x)``, ``terminal(x)``, ``initial_density(x)`` and ``supply(t)`` are
    vectorised callables (scalars are broadcast).  ``initial_density`` may be
    unnormalised; it is normalised on the grid so that ``sum(rho * m) = 1``.
    """

    impact: Impact
    potential: Callable
    terminal: Callable
    supply: Callable
    initial_density: Callable
    domain: tuple[float, float]
    horizon: float

    def __post_init__(self) -> None:
        if not isinstance(self.impact, PowerImpact):
            raise TypeError(
                "impact must be a convex impact cost (QuadraticImpact or PowerImpact), "
                f"got {type(self.impact).__name__}"
            )
        for name in ("potential", "terminal", "supply", "initial_density"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be a vectorised callable, got {type(getattr(self, name)).__name__}")
        try:
            a, b = (float(v) for v in self.domain)
        except (TypeError, ValueError):
            raise ValueError(f"domain must be a pair (a, b), got {self.domain!r}") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"domain must be finite, got ({a}, {b})")
        if not b > a:
            raise ValueError(f"domain is empty: ({a}, {b}) needs a < b")
        object.__setattr__(self, "domain", (a, b))
        T = self.horizon
        if not (isinstance(T, numbers.Real) and math.isfinite(T) and T > 0):
            raise ValueError(f"horizon must be a positive finite number, got {T!r}")


@dataclass(frozen=True)
class DiscreteProblem:
    """Nodal data of a problem on a ``(rho, h)`` mesh; every array checked finite."""

    grid: UniformGrid
    t: np.ndarray  # t_0..t_N
    h: float
    potential: np.ndarray  # V(x_i)
    terminal: np.ndarray  # u_T(x_i)
    supply: np.ndarray  # Q(t_k), k = 0..N-1
    m0: np.ndarray  # normalised: sum(rho * m0) = 1
    p: float
    scale: float

    @property
    def rho(self) -> float:
        return self.grid.spacing


@dataclass(frozen=True)
class PriceFormationResult:
    """Solution of the discrete system (docs/model.md 1.2).

    Attributes
    ----------
    t : (N+1,) time nodes t_0..t_N.
    x : (M,) space nodes.
    price : (N,) the price on t_0..t_{N-1} (no trade happens at t_N).
    u : (N+1, M) value function; ``u[N]`` is the terminal cost.
    m : (N+1, M) nodal density, ``sum(rho * m[k]) = 1``.
    v : (N, M) optimal trading rate at each node.
    iterations : fixed-point iterations performed.
    residuals : ``max_k |price^{n+1}_k - price^n_k|`` for each iteration.
    converged : whether the last residual is within ``tol``.
    status, message : :class:`mfg.results.Status` code and a one-line account (docs/model.md 3.3).
    timings : seconds per phase (``iterations``: the fixed point, ``total``: the whole
        call, JIT compilation excluded once cached).
    """

    t: np.ndarray
    x: np.ndarray
    price: np.ndarray
    u: np.ndarray
    m: np.ndarray
    v: np.ndarray
    iterations: int
    residuals: np.ndarray
    converged: bool
    status: Status
    message: str
    timings: dict
    rho: float
    h: float
    problem: PriceFormationProblem = field(repr=False)

    @property
    def price_times(self) -> np.ndarray:
        """Times at which :attr:`price` is defined (t_0..t_{N-1})."""
        return self.t[:-1]

    @property
    def wall_time(self) -> float:
        """``timings["total"]`` (the name of the first release)."""
        return self.timings["total"]

    @property
    def mean_holding(self) -> np.ndarray:
        """``sum_i rho x_i m_{i,k}`` for every time step."""
        return self.rho * (self.m @ self.x)

    def __repr__(self) -> str:
        return (
            f"PriceFormationResult(rho={self.rho}, h={self.h}, grid={self.m.shape}, "
            f"iterations={self.iterations}, converged={self.converged}, "
            f"last_residual={self.residuals[-1]:.3g}, total={self.timings['total']:.3g}s)"
        )


# ----------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------


@njit(cache=True)
def hj_backward(terminal, potential, price, lower, dx, h, p, scale):
    """Backward SL sweep: ``u_{i,k} = min_v {I[u_{k+1}](x_i + h v) + h(l(v) + price_k v)} + h V(x_i)``.

    The minimisation is over feet inside the domain (state constraint, see
    :func:`mfg.semi_lagrangian.minimise_at`); with it the paper's published errors
    are reproduced, while a constant extension of ``u`` outside the domain pulls
    agents onto the boundary.  The sweep is serial: a parallel region per time step
    costs more than it saves at these grid sizes (a few hundred nodes per step) and
    spins badly on a loaded machine (measured in benchmarks/README.md).  Returns ``u`` of
    shape (N+1, M) and the minimisers ``v`` of shape (N, M).
    """
    n_steps = price.shape[0]
    n = terminal.shape[0]
    u = np.empty((n_steps + 1, n))
    v = np.empty((n_steps, n))
    u[n_steps] = terminal
    for k in range(n_steps - 1, -1, -1):
        nxt = u[k + 1]
        smin, smax = slope_range(nxt, dx)
        for i in range(n):
            vi, val = minimise_at(nxt, lower, dx, lower + i * dx, h, price[k], p, scale, smin, smax, True)
            v[k, i] = vi
            u[k, i] = val + h * potential[i]
    return u, v


@njit(cache=True)
def transport_forward(m0, v, lower, dx, h):
    """Adjoint SL transport: the mass of node j moves to ``x_j + h v_{j,k}`` (P1 split)."""
    n_steps = v.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_steps + 1, n))
    m[0] = m0
    for k in range(n_steps):
        for j in range(n):
            mass = m[k, j]
            if mass != 0.0:
                deposit_at(m[k + 1], lower, dx, lower + j * dx + h * v[k, j], mass)
    return m


@njit(cache=True)
def _solve_balance(weights, offsets, target, guess, p, scale):
    """Solve ``sum_i weights_i (l')^{-1}(-(w + offsets_i)) = target`` for ``w``.

    The left side is strictly decreasing in ``w``; a bracket follows from
    ``(l')^{-1}`` being increasing, and a safeguarded Newton iteration (bisection when
    a Newton step leaves the bracket) converges in one step for quadratic ``l``.
    """
    d_lo = math.inf
    d_hi = -math.inf
    total = 0.0
    for i in range(weights.shape[0]):
        if weights[i] > 0.0:
            total += weights[i]
            if offsets[i] < d_lo:
                d_lo = offsets[i]
            if offsets[i] > d_hi:
                d_hi = offsets[i]
    if total <= 0.0:
        return math.nan
    if p == 2.0:
        # quadratic impact: (l')^{-1}(z) = z / (2 scale) is linear, the balance is
        # explicit, sum_i w_i (-(x + D_i)) / (2 scale) = target
        acc = 0.0
        for i in range(weights.shape[0]):
            if weights[i] > 0.0:
                acc += weights[i] * offsets[i]
        return -(2.0 * scale * target + acc) / total
    mq = power_marginal(target / total, p, scale)
    lo = -mq - d_hi  # F(lo) >= 0
    hi = -mq - d_lo  # F(hi) <= 0
    w = min(max(guess, lo), hi)
    for _ in range(200):
        f = -target
        df = 0.0
        for i in range(weights.shape[0]):
            if weights[i] > 0.0:
                a = -(w + offsets[i])
                f += weights[i] * power_marginal_inverse(a, p, scale)
                df -= weights[i] * power_marginal_inverse_derivative(a, p, scale)
        if f == 0.0:
            return w
        if f > 0.0:
            lo = w
        else:
            hi = w
        if df < 0.0 and math.isfinite(df):
            w_new = w - f / df
        else:
            w_new = 0.5 * (lo + hi)
        # strictly inside: a Newton step that lands back on a bracket end (round-off
        # makes f bounce between two neighbouring iterates at large N) would repeat
        # forever without shrinking the bracket; bisect instead
        if not (lo < w_new < hi):
            w_new = 0.5 * (lo + hi)
        if abs(w_new - w) <= 1e-15 * (1.0 + abs(w)) or hi - lo <= 1e-15 * (1.0 + abs(w)):
            return w_new
        w = w_new
    return w


@njit(cache=True)
def balance_price(price, v, weights, supply, p, scale):
    """Price update of docs/model.md 1.2 for every step.

    With ``D = -l'(v) - price`` frozen (the slope of ``u`` seen by each agent), solve
    ``sum_i weights_{k,i} (l')^{-1}(-(price_new_k + D_{k,i})) = supply_k``.
    ``weights`` are ``rho * m`` for the MFG and ``1/N`` for N traders.
    """
    n_steps = price.shape[0]
    out = np.empty(n_steps)
    offsets = np.empty(v.shape[1])
    for k in range(n_steps):
        for i in range(v.shape[1]):
            offsets[i] = -power_marginal(v[k, i], p, scale) - price[k]
        out[k] = _solve_balance(weights[k], offsets, supply[k], price[k], p, scale)
    return out


# ----------------------------------------------------------------------------------
# discretisation and the fixed point
# ----------------------------------------------------------------------------------


def discretise(problem: PriceFormationProblem, *, rho: float, h: float, _stacklevel: int = 2) -> DiscreteProblem:
    """Nodal data on the mesh ``x_i = a + i rho``, ``t_k = k h`` (docs/model.md 1.2)."""
    if not (isinstance(rho, numbers.Real) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be positive, got {rho!r}")
    if not (isinstance(h, numbers.Real) and math.isfinite(h) and h > 0):
        raise ValueError(f"h must be positive, got {h!r}")
    a, b = problem.domain
    grid = UniformGrid.from_spacing(a, b, rho, name="rho")
    T = float(problem.horizon)
    steps = T / h
    n_steps = round(steps)
    if n_steps < 1 or abs(steps - n_steps) > 1e-9 * max(1.0, steps):
        raise ValueError(f"h={h!r} does not divide the horizon T={T} into a whole number of steps ({steps:.6g})")
    ratio = h / rho
    if not 1 / 8 <= ratio <= 8:
        warnings.warn(
            f"h/rho = {ratio:.3g} is far from order one; the SL scheme's error behaves like "
            "h + rho**2/h, so it is best with h and rho of the same order (the paper uses h = 2 rho)",
            stacklevel=_stacklevel,
        )
    x = grid.nodes
    t = np.linspace(0.0, T, n_steps + 1)
    V = evaluate_callable("potential", problem.potential, x, "x")
    uT = evaluate_callable("terminal", problem.terminal, x, "x")
    Q = evaluate_callable("supply", problem.supply, t[:-1], "t")
    m0 = evaluate_callable("initial_density", problem.initial_density, x, "x")
    if (m0 < 0).any():
        i = int(np.argmax(m0 < 0))
        raise ValueError(f"initial_density is negative at x={x[i]:.6g} (value {m0[i]:.3g})")
    mass = grid.spacing * m0.sum()
    if not mass > 0:
        raise ValueError(f"initial_density has no mass on the domain {problem.domain} at rho={rho}")
    p, scale = problem.impact.kernel_params
    return DiscreteProblem(grid=grid, t=t, h=float(h), potential=V, terminal=uT, supply=Q, m0=m0 / mass, p=p,
                           scale=scale)


def iterate(disc: DiscreteProblem, price: np.ndarray):
    """One fixed-point step: HJ sweep, transport and price update for ``price``.

    Returns ``(u, v, m, new_price)``; raises ``FloatingPointError`` naming the time
    step where the sweep produced a non-finite value.
    """
    g = disc.grid
    u, v = hj_backward(disc.terminal, disc.potential, price, g.lower, g.spacing, disc.h, disc.p, disc.scale)
    finite = np.isfinite(u).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite).max())
        raise FloatingPointError(
            f"the Hamilton-Jacobi sweep produced a non-finite value at time step k={k} (t={disc.t[k]:.6g}); "
            f"price there is {price[min(k, price.size - 1)]:.6g}"
        )
    m = transport_forward(disc.m0, v, g.lower, g.spacing, disc.h)
    new_price = balance_price(price, v, g.spacing * m[:-1], disc.supply, disc.p, disc.scale)
    bad = ~np.isfinite(new_price)
    if bad.any():
        k = int(np.argmax(bad))
        raise FloatingPointError(f"the price update produced a non-finite price at time step k={k} (t={disc.t[k]:.6g})")
    return u, v, m, new_price


def solve(
    problem: PriceFormationProblem,
    *,
    rho: float,
    h: float,
    tol: float = 1e-8,
    max_iter: int = 100,
    initial_price: np.ndarray | None = None,
) -> PriceFormationResult:
    """Solve the discrete price-formation MFG by the fixed point of docs/model.md 1.2.

    Starting from ``price^0 = -Q`` (or ``initial_price``), repeat: backward HJ sweep,
    forward transport, price update; stop when ``max_k |price^{n+1} - price^n| <= tol``.
    The returned ``u``, ``m``, ``v`` belong to the last sweep and ``price`` is the
    last update.  Emits :class:`ConvergenceWarning` if ``max_iter`` is reached.
    """
    if not (isinstance(tol, numbers.Real) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    if not (isinstance(max_iter, numbers.Integral) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    start = time.perf_counter()
    disc = discretise(problem, rho=rho, h=h, _stacklevel=3)
    if initial_price is None:
        price = -disc.supply.copy()
    else:
        price = np.array(initial_price, dtype=float)
        if price.shape != disc.supply.shape or not np.isfinite(price).all():
            raise ValueError(f"initial_price must be {disc.supply.size} finite values (one per t_0..t_N-1)")
    residuals = []
    loop_start = time.perf_counter()
    for _ in range(max_iter):
        u, v, m, new_price = iterate(disc, price)
        residuals.append(float(np.max(np.abs(new_price - price))))
        price = new_price
        if residuals[-1] <= tol:
            break
    converged = residuals[-1] <= tol
    loop_time = time.perf_counter() - loop_start
    if not converged:
        warnings.warn(
            f"price iteration stopped after {max_iter} iterations with residual {residuals[-1]:.3g} > tol={tol:g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    _warn_boundary_mass(disc, m)
    return PriceFormationResult(
        t=disc.t,
        x=disc.grid.nodes,
        price=price,
        u=u,
        m=m,
        v=v,
        iterations=len(residuals),
        residuals=np.array(residuals),
        converged=converged,
        status=status_of(converged),
        message=message_of(converged, len(residuals), residuals[-1], tol),
        timings={"iterations": loop_time, "total": time.perf_counter() - start},
        rho=disc.rho,
        h=disc.h,
        problem=problem,
    )


def _warn_boundary_mass(disc: DiscreteProblem, m: np.ndarray, threshold: float = 1e-6) -> None:
    """Feet are kept inside the domain; warn when mass piles up on its ends."""
    edge = disc.rho * (m[:, 0] + m[:, -1])
    k = int(np.argmax(edge))
    if edge[k] > threshold:
        warnings.warn(
            f"{edge[k]:.2g} of the mass sits on the boundary nodes at t={disc.t[k]:.4g}: the state "
            "constraint binds there; enlarge the domain for a whole-line answer",
            BoundaryMassWarning,
            stacklevel=3,
        )
