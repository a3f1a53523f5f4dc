"""The finite-N price-formation market (docs/model.md 1.5).

N price-taking traders hold ``x_i(0)`` drawn from ``m_0`` (seeded, exact sampling of
its P1 interpolant, :mod:`abm.price_formation.sampling`).  Each trades with the MFG feedback evaluated
at its own holding, and the price clears the market, ``(1/N) sum_i v_i = Q(t_k)``, at
every step.

Model: the discrete SL model of docs/model.md 1.2 with the grid transport replaced by particles
-------------------------------------------------------------------------------------------
The N-trader equilibrium price path ``price^N`` on ``t_0..t_{K-1}`` (``K = T/h``) is
the fixed point of the same iteration as :func:`mfg.price_formation.solve`; only the
forward sweep changes:

1. backward HJ sweep :func:`mfg.price_formation.hj_backward` on the ``rho`` grid for the
   current price path (a trader's value function depends on the other traders only
   through the price, so it is the MFG's value function *for the N-market price*);
2. forward particle sweep: at step ``k`` every trader takes the exact SL minimiser at
   its own holding, ``v_i = argmin_v I[u_{k+1}](x_i + h v) + h (l(v) + price_k v)``
   (:func:`mfg.semi_lagrangian.minimise_at`, with the state constraint the solver uses,
   so no holding ever leaves ``[a, b]``), and moves, ``x_i <- x_i + h v_i``;
3. price update per step by :func:`mfg.price_formation.balance_price` with weights
   ``1/N`` instead of ``rho m_{i,k}`` (docs/model.md 1.2, "Balance").

Stop when ``max_k |price^{n+1}_k - price^n_k| <= tol``.

What N -> inf gives on a fixed mesh.  The particles' empirical measure replaces the
nodal density, so ``price^N`` tends to the *particle scheme's* mean-field price, a
consistent discretisation of the MFG like the nodal solver's but not the same one: the
nodal transport samples the piecewise-constant P1 slopes of ``u`` at the node feet, the
particles at continuously spread feet.  The two mean-field prices differ by ``O(rho)``
(6e-4 in sup norm on the paper's test 1 at ``rho = 0.01, h = 0.02``, where both are
4.5e-3 from the exact price); :mod:`experiments.finite_n_price` therefore measures the
finite-N effect against the particle market on a large quantile population.  For
finite N the deviation is the law of docs/model.md 1.5 (below) plus an ``O(rho)/sqrt(N)``
noise from where each trader sits inside its cell (a few % of the law at these meshes).
In the LQ case, shifting every holding by a whole number of cells is an exact symmetry
of the discrete scheme, and the discrete law ``-(gamma + eta (T - t_{k+1})) delta``
(the potential is charged on steps k+1..K-1) then holds to round-off.

Why the equilibrium and not "freeze u_x and clear the price"
-------------------------------------------------------------
A tempting shortcut keeps the MFG's value function and only re-clears the price with
the N traders.  In the LQ case (``l = c v^2/2``, ``u = a x^2/2 + b x + e`` with the
Riccati curvature ``a``) that gives ``v_i = -(price^N + a x_i + b)/c``, so clearing
yields ``price^N - price = -a(t) (xbar^N(t) - xbar(t)) = -a(t) (xbar^N_0 - xbar_0)``.
That is not the N-trader equilibrium: traders who face ``price^N`` re-optimise, which
changes ``b`` (the linear coefficient feels the whole future price path).  In the
equilibrium, each trader best-responding to the N-market price path, the price is the
closed form of docs/model.md 1.3 with ``xbar_0`` replaced by the sample mean, i.e.

    price^N(t) - price(t) = -(gamma + eta (T - t)) (xbar^N_0 - xbar_0),

an exact ``O(1/sqrt(N))`` law (docs/model.md 1.5).  The two differ: for the paper's test 1,
``a(0) = tanh(1) = 0.76`` against ``gamma + eta T = 1``.  The fixed point above is the
equilibrium, because step 1 recomputes ``u`` from the N-market price.

Implementation notes
--------------------
The particle sweep is one numba kernel, optionally parallel over traders (from
``PARALLEL_MIN_TRADERS`` on, where threads pay); per step it stores
nothing of size ``N x steps`` (the price update is applied step by step with
``balance_price`` on ``(1, N)`` views, which is the same computation as one call on
the whole ``(steps, N)`` array, without its memory: 400 MB at ``N = 10**6``).  Every
per-trader quantity is computed independently and every sum is a serial loop, so a run
is bit-identical for any number of threads.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange

from mfg.price_formation import (
    ConvergenceWarning,
    PriceFormationProblem,
    balance_price,
    discretise,
    hj_backward,
)
from mfg.results import BoundaryMassWarning
from mfg.semi_lagrangian import minimise_at, slope_range

from .sampling import DEFAULT_CELLS, as_generator, p1_density

__all__ = [
    "PARALLEL_MIN_TRADERS",
    "PriceFormationMarketResult",
    "simulate_price_formation_market",
    "sample_initial_holdings",
    "particle_forward",
]


#: From this many traders on, the particle sweep runs on numba's threads by default.
#: Each sweep opens 1/h parallel regions (one per step); with few traders waking the
#: threads costs more than the work.  Measured on the project's 2-core machine under
#: load (test 1, h = 0.02): one sweep at N = 1e4 took 0.03-0.05 s on one thread and
#: 0.03-0.4 s on two; at N = 1e6 two threads gained between nothing and 2x.
PARALLEL_MIN_TRADERS = 200_000


@dataclass(frozen=True)
class PriceFormationMarketResult:
    """Equilibrium of the N-trader market (docs/model.md 1.5) on a ``(rho, h)`` mesh.

    Attributes
    ----------
    t : (K+1,) time nodes t_0..t_K (``K = T/h`` steps).
    price : (K,) the N-market price on t_0..t_{K-1}.
    initial_holdings : (N,) the traders' holdings at t_0 (sampled or given).
    holdings : (N,) holdings at t_K after the last sweep.
    mean_holding : (K+1,) ``(1/N) sum_i x_i(t_k)``; at the fixed point it moves by
        ``h Q(t_k)`` per step (clearing).
    initial_mean : the sample mean ``xbar^N_0`` (the closed form of docs/model.md 1.3 uses it).
    path : (K+1, N) holdings at every step if ``keep_path=True``, else ``None``.
    iterations, residuals, converged : as in :class:`mfg.price_formation.PriceFormationResult`.
    n_traders : N.
    seed : the seed the holdings were drawn with (``None`` when ``holdings`` were given).
    wall_time : seconds in :func:`simulate_price_formation_market` (sampling included).
    """

    t: np.ndarray
    price: np.ndarray
    initial_holdings: np.ndarray = field(repr=False)
    holdings: np.ndarray = field(repr=False)
    mean_holding: np.ndarray
    initial_mean: float
    path: np.ndarray | None = field(repr=False)
    iterations: int
    residuals: np.ndarray
    converged: bool
    n_traders: int
    seed: object
    wall_time: float
    rho: float
    h: float

    @property
    def price_times(self) -> np.ndarray:
        """Times at which :attr:`price` is defined (t_0..t_{K-1})."""
        return self.t[:-1]

    def __repr__(self) -> str:
        return (
            f"PriceFormationMarketResult(n_traders={self.n_traders}, rho={self.rho}, h={self.h}, "
            f"steps={self.price.size}, iterations={self.iterations}, converged={self.converged}, "
            f"last_residual={self.residuals[-1]:.3g}, initial_mean={self.initial_mean:.6g}, "
            f"wall_time={self.wall_time:.3g}s)"
        )


# ----------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------


@njit(cache=True)
def _trade(nxt, lower, upper, dx, h, price_k, p, scale, smin, smax, x, v, i):
    """Trader ``i`` takes the exact SL minimiser at its own holding and moves."""
    vi, _ = minimise_at(nxt, lower, dx, x[i], h, price_k, p, scale, smin, smax, True)
    v[0, i] = vi
    # the state constraint admits feet in [lower, upper] only; the clip removes round-off
    x[i] = min(max(x[i] + h * vi, lower), upper)


@njit(cache=True, parallel=True)
def _trade_all_parallel(nxt, lower, upper, dx, h, price_k, p, scale, smin, smax, x, v):
    for i in prange(x.shape[0]):
        _trade(nxt, lower, upper, dx, h, price_k, p, scale, smin, smax, x, v, i)


@njit(cache=True)
def _trade_all_serial(nxt, lower, upper, dx, h, price_k, p, scale, smin, smax, x, v):
    for i in range(x.shape[0]):
        _trade(nxt, lower, upper, dx, h, price_k, p, scale, smin, smax, x, v, i)


@njit(cache=True)
def particle_forward(x0, u, price, supply, lower, dx, h, p, scale, keep_path, parallel):
    """Forward particle sweep and price update for one fixed-point iteration.

    ``u`` (K+1, M) comes from :func:`hj_backward` for ``price``; trader ``i`` trades the
    exact SL minimiser at its own holding (state constraint), then the step's price is
    updated by :func:`balance_price` with weights ``1/N``.  ``parallel`` spreads the
    traders over numba's threads; every trader is computed independently and every sum
    is a serial loop, so the result is bit-identical either way.

    Returns ``(x_final, new_price, mean, n_edge, path)``: final holdings, the updated
    price (K,), the mean holding (K+1,), the number of traders sitting on an end of the
    domain at each step (K+1,) and the (K+1, N) path (``(1, 0)`` unless ``keep_path``).
    """
    n_steps = price.shape[0]
    n = x0.shape[0]
    upper = lower + (u.shape[1] - 1) * dx
    edge_tol = 1e-9 * dx
    x = x0.copy()
    v = np.empty((1, n))
    weights = np.full((1, n), 1.0 / n)
    new_price = np.empty(n_steps)
    mean = np.empty(n_steps + 1)
    n_edge = np.zeros(n_steps + 1, dtype=np.int64)
    path = np.empty((n_steps + 1, n)) if keep_path else np.empty((1, 0))
    for k in range(n_steps + 1):
        s = 0.0
        e = 0
        for i in range(n):
            s += x[i]
            if x[i] - lower <= edge_tol or upper - x[i] <= edge_tol:
                e += 1
        mean[k] = s / n
        n_edge[k] = e
        if keep_path:
            for i in range(n):
                path[k, i] = x[i]
        if k == n_steps:
            break
        nxt = u[k + 1]
        smin, smax = slope_range(nxt, dx)
        if parallel:
            _trade_all_parallel(nxt, lower, upper, dx, h, price[k], p, scale, smin, smax, x, v)
        else:
            _trade_all_serial(nxt, lower, upper, dx, h, price[k], p, scale, smin, smax, x, v)
        # balance_price on the (1, N) slice of step k: the same arithmetic as one call on
        # the whole (K, N) array, without storing it
        new_price[k] = balance_price(price[k:k + 1], v, weights, supply[k:k + 1], p, scale)[0]
    return x, new_price, mean, n_edge, path


# ----------------------------------------------------------------------------------
# Python API
# ----------------------------------------------------------------------------------


def sample_initial_holdings(problem: PriceFormationProblem, n_traders: int, *, seed,
                            n_cells: int = DEFAULT_CELLS) -> np.ndarray:
    """``n_traders`` exact draws from the P1 interpolant of ``problem.initial_density``
    on ``n_cells`` cells over ``problem.domain`` (:mod:`abm.price_formation.sampling`)."""
    _check_n_traders(n_traders)
    density = p1_density(problem.initial_density, problem.domain, n_cells=n_cells, name="initial_density")
    return density.sample(int(n_traders), as_generator(seed))


def _check_n_traders(n_traders) -> int:
    if isinstance(n_traders, (bool, np.bool_)) or not isinstance(n_traders, (int, np.integer)) or n_traders < 1:
        raise ValueError(f"n_traders must be a positive integer, got {n_traders!r}")
    return int(n_traders)


def _check_holdings(holdings, domain, n_traders) -> np.ndarray:
    x = np.array(holdings, dtype=float)  # a copy: the result must not alias user data
    if x.ndim != 1 or x.size < 1:
        raise ValueError(f"holdings must be a non-empty one-dimensional array, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"holdings must be finite: holdings[{i}] = {x[i]}")
    a, b = domain
    out = (x < a) | (x > b)
    if out.any():
        i = int(np.argmax(out))
        raise ValueError(
            f"holdings must lie in the problem's domain [{a}, {b}] (state constraint): holdings[{i}] = {x[i]:.6g}"
        )
    if n_traders is not None and _check_n_traders(n_traders) != x.size:
        raise ValueError(f"n_traders={n_traders} does not match the {x.size} holdings given")
    return x


def _fixed_point(disc, x0, price, tol, max_iter, keep_path, parallel):
    """Iterate HJ sweep, particle sweep and price update until the residual is <= tol."""
    g = disc.grid
    residuals = []
    for _ in range(max_iter):
        u, _v = hj_backward(disc.terminal, disc.potential, price, g.lower, g.spacing, disc.h, disc.p, disc.scale)
        if not np.isfinite(u).all():
            k = int(np.flatnonzero(~np.isfinite(u).all(axis=1)).max())
            raise FloatingPointError(
                f"the Hamilton-Jacobi sweep produced a non-finite value at time step k={k} (t={disc.t[k]:.6g})"
            )
        x_final, new_price, mean, n_edge, path = particle_forward(
            x0, u, price, disc.supply, g.lower, g.spacing, disc.h, disc.p, disc.scale, keep_path, parallel
        )
        bad = ~np.isfinite(new_price)
        if bad.any():
            k = int(np.argmax(bad))
            raise FloatingPointError(
                f"the price update produced a non-finite price at time step k={k} (t={disc.t[k]:.6g})"
            )
        residuals.append(float(np.max(np.abs(new_price - price))))
        price = new_price
        if residuals[-1] <= tol:
            break
    return price, residuals, x_final, mean, n_edge, path


def simulate_price_formation_market(
    problem: PriceFormationProblem,
    *,
    rho: float,
    h: float,
    n_traders: int | None = None,
    seed=None,
    holdings=None,
    tol: float = 1e-8,
    max_iter: int = 100,
    initial_price=None,
    keep_path: bool = False,
    parallel: bool | None = None,
) -> PriceFormationMarketResult:
    """Equilibrium price path of the N-trader market (docs/model.md 1.5) on the ``(rho, h)`` mesh.

    Holdings are drawn from ``m_0`` with ``seed`` (an int, a ``SeedSequence`` or a
    ``Generator``; see :func:`sample_initial_holdings`), or given directly as
    ``holdings`` (then ``seed`` is not used and ``n_traders`` may be omitted).  The
    fixed point is the one of :func:`mfg.price_formation.solve` with a particle
    forward sweep (module docstring); it starts from ``price^0 = -Q`` or
    ``initial_price`` (e.g. the MFG price, which is within ``O(1/sqrt(N))``) and stops
    when ``max_k |price^{n+1}_k - price^n_k| <= tol``.  The returned price is the last
    update and the holdings belong to the last sweep, as in ``solve``.

    ``keep_path=True`` also returns every holding at every step (``(K+1) x N`` floats).
    ``parallel`` spreads the traders over numba's threads; the default uses threads
    from :data:`PARALLEL_MIN_TRADERS` traders on, where they pay.  The result is
    bit-identical either way.

    Emits :class:`mfg.price_formation.ConvergenceWarning` if ``max_iter`` is reached,
    and a ``UserWarning`` when more than a ``1e-6`` fraction of the traders sits on an
    end of the domain (the state constraint binds: enlarge the domain for a
    whole-line answer).
    """
    start = time.perf_counter()
    if not isinstance(problem, PriceFormationProblem):
        raise TypeError(f"problem must be a PriceFormationProblem, got {type(problem).__name__}")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    disc = discretise(problem, rho=rho, h=h)
    if holdings is None:
        if n_traders is None:
            raise ValueError("give n_traders (with a seed) to sample the holdings from m_0, or pass holdings=")
        n = _check_n_traders(n_traders)
        if seed is None:
            raise ValueError("seed is required to sample the holdings (runs must be reproducible); "
                             "pass an int, a numpy SeedSequence or a Generator")
        x0 = sample_initial_holdings(problem, n, seed=seed)
    else:
        x0 = _check_holdings(holdings, problem.domain, n_traders)
        seed = None
    n = x0.size
    if initial_price is None:
        price = -disc.supply.copy()
    else:
        price = np.array(initial_price, dtype=float)
        if price.shape != disc.supply.shape or not np.isfinite(price).all():
            raise ValueError(
                f"initial_price must be {disc.supply.size} finite values (one per t_0..t_K-1), got shape {price.shape}"
            )
    if parallel is None:
        parallel = n >= PARALLEL_MIN_TRADERS and numba.get_num_threads() > 1
    price, residuals, x_final, mean, n_edge, path = _fixed_point(
        disc, x0, price, tol, int(max_iter), bool(keep_path), bool(parallel)
    )
    converged = residuals[-1] <= tol
    if not converged:
        warnings.warn(
            f"N-trader price iteration stopped after {max_iter} iterations with residual "
            f"{residuals[-1]:.3g} > tol={tol:g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    k = int(np.argmax(n_edge))
    if n_edge[k] > 1e-6 * n:
        warnings.warn(
            f"{n_edge[k]} of {n} traders sit on an end of the domain at t={disc.t[k]:.4g}: the state "
            "constraint binds there; enlarge the domain for a whole-line answer",
            BoundaryMassWarning,
            stacklevel=2,
        )
    return PriceFormationMarketResult(
        t=disc.t,
        price=price,
        initial_holdings=x0,
        holdings=x_final,
        mean_holding=mean,
        initial_mean=float(mean[0]),
        path=path if keep_path else None,
        iterations=len(residuals),
        residuals=np.array(residuals),
        converged=converged,
        n_traders=n,
        seed=seed,
        wall_time=time.perf_counter() - start,
        rho=disc.rho,
        h=disc.h,
    )
