"""The discretisation of the LP-exit game on a time step and a liquidity grid (docs/model.md 2.6).

:func:`discretise` turns a validated :class:`~mfg.lp_exit.params.LPExitModel` into the
per-population, per-step arrays that the mean-field solver, the finite-N engine, the
convergence study and the benchmarks all use: one place decides the entry and maturity
steps, the running payoff, the discount, the per-step sale probability ``q_max``, the
drift's target and slope, the remaining-life factor and the initial masses.

Time indexing (docs/model.md 2.6): ``t_n = start + n dt`` on the model's grid; a solve
from a state at step ``n0`` works on the window ``t_{n0}..t_N`` and every array here is
cut to it (``t[0] = t_{n0}``).  A population enters at the step nearest its vintage (or
at the window's start) and leaves at the step nearest ``vintage + life``; decisions are
taken at steps ``n_first..n_last-1`` and the fund pays NAV at ``n_last`` when it
``matures`` inside the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..semi_lagrangian import deposit_at
from .inputs import LPState, MarketInputs
from .kernels import Mesh, PopulationData, StepCoefficients
from .params import Grid, LPExitModel, window_steps

__all__ = ["LPDiscretisation", "discretise", "window_steps", "initial_masses"]


def initial_masses(mean: float, std: float, x: np.ndarray, lower: float, dx: float) -> np.ndarray:
    """Nodal masses of the Gaussian initial law ``N(mean, std²)`` on the nodes ``x`` (unit total mass).

    The density is sampled at the nodes (the trapezoid rule is spectrally accurate for it)
    and normalised so the grid holds exactly unit mass; ``std = 0`` is a point mass split
    between the two nodes around ``mean`` by the P1 weights.
    """
    if std == 0.0:
        out = np.zeros(x.size)
        deposit_at(out, lower, dx, mean, 1.0)
        return out
    w = np.exp(-0.5 * ((x - mean) / std) ** 2)
    return w / w.sum()


@dataclass(frozen=True, eq=False)
class LPDiscretisation:
    """Everything the solver and the finite-N markets derive from a model on a step (and a grid).

    Per-population arrays lead with ``n_pop`` (order of ``model.populations``); time
    arrays have ``n_t = N + 1`` entries on ``t`` (the window).  The spatial fields
    (``x``, ``m0``, ``running``, ``terminal``) are ``None`` when only a step was given.
    """

    model: LPExitModel
    dt: float
    n0: int  # first step of the window on the model's grid
    t: np.ndarray  # (n_t,)
    names: tuple[str, ...]
    weights: np.ndarray  # (n_pop,) NAV weights, normalised
    n_first: np.ndarray  # (n_pop,) int: first decision step (window index)
    n_last: np.ndarray  # (n_pop,) int: maturity step, or N
    matures: np.ndarray  # (n_pop,) bool: the fund pays out at n_last inside the window
    in_window: np.ndarray  # (n_pop,) bool: False for a fund that matured before the window
    active: np.ndarray  # (n_pop, n_t) bool: rows on which the population holds stakes
    discount: np.ndarray  # (n_pop,) exp(-(r - g) dt)
    q_max: np.ndarray  # (n_pop, n_t) 1 - exp(-a_max(t_n) dt) (seasonal a_max_factor included)
    eta_extra: np.ndarray  # (n_pop, n_t) eta (eta_factor(t_n) - 1) dt: the seasonal extra holding cost
    drift_a: np.ndarray  # (n_pop,) kappa + lam
    lam: np.ndarray  # (n_pop,)
    alpha: np.ndarray  # (n_pop,)
    phi: np.ndarray  # (n_pop,)
    kappa_target: np.ndarray  # (n_pop, n_t) kappa (lbar + s(t_n))
    life_factor: np.ndarray  # (n_pop, n_t) A_k(remaining life)
    Kbar: np.ndarray  # (n_t,) target buyer capital
    pbar: np.ndarray  # (n_t,) calm price factor
    sigma: np.ndarray  # (n_pop, n_t) liquidity volatility
    K0: float  # buyer capital at t[0]
    S0: float  # sell pressure carried into step 0
    exited0: np.ndarray  # (n_pop,) sold before the window (bookkeeping)
    matured0: np.ndarray  # (n_pop,) paid out before the window (bookkeeping)
    grid: Grid | None = None
    x: np.ndarray | None = None  # (n_L,) liquidity nodes
    m0: np.ndarray | None = None  # (n_pop, n_L) masses placed at n_first
    running: np.ndarray | None = None  # (n_pop, n_L) (y - c(L)) dt
    cost_shape: np.ndarray | None = None  # (n_pop, n_L) (ell - L)^+
    dfac: np.ndarray | None = None  # (n_pop, n_L) distress factor of the deal price (1 - delta (ell - L)^+)^+
    terminal: np.ndarray | None = None  # (n_L,) V at maturity (= 1: the fund pays NAV)

    @property
    def n_pop(self) -> int:
        return len(self.names)

    @property
    def n_t(self) -> int:
        return int(self.t.size)

    @property
    def N(self) -> int:
        return int(self.t.size) - 1

    @property
    def herding(self) -> bool:
        """Whether the mean field feeds back (some population herds, ``lam > 0``)."""
        return bool(np.any(self.lam > 0.0))

    @property
    def mesh(self) -> Mesh:
        return Mesh(float(self.grid.L_min), float(self.grid.dL), self.dt)

    @property
    def market_kind(self) -> str:
        return self.model.market.kind

    def population(self, k: int) -> PopulationData:
        """The kernels' :class:`~mfg.lp_exit.kernels.PopulationData` of population ``k``."""
        return PopulationData(int(self.n_first[k]), int(self.n_last[k]), self.terminal, self.running[k],
                              float(self.discount[k]), self.q_max[k], float(self.drift_a[k]), self.dfac[k],
                              float(self.phi[k]), self.cost_shape[k], self.eta_extra[k])

    def drift_constant(self, P: np.ndarray, M: np.ndarray) -> np.ndarray:
        """``(n_pop, n_t)`` constant part of the drift on a path: ``kappa (lbar + s) + lam M + alpha log(P/P̄)``."""
        logp = np.log(P / self.pbar)
        return np.array([self.kappa_target[k] + self.lam[k] * M + self.alpha[k] * logp for k in range(self.n_pop)])

    def vintage_price(self, P: np.ndarray) -> np.ndarray:
        """``(n_pop, n_t)`` vintage price ``P A_k`` on a price path (the deal price of an LP who is not
        distressed; the exit value at liquidity ``L`` is ``P A_k dfac_k(L) - phi_k``)."""
        return np.array([P * self.life_factor[k] for k in range(self.n_pop)])

    def coefficients(self, P: np.ndarray, M: np.ndarray) -> list[StepCoefficients]:
        """The kernels' :class:`~mfg.lp_exit.kernels.StepCoefficients` of every population on the path ``(P, M)``."""
        c, gain = self.drift_constant(P, M), self.vintage_price(P)
        return [StepCoefficients(c[k], self.sigma[k], gain[k]) for k in range(self.n_pop)]


def _start_step(model: LPExitModel, dt: float, N: int, n_L: int | None, initial: LPState | None) -> int:
    if initial is None:
        return 0
    if not isinstance(initial, LPState):
        raise TypeError(f"initial must be an LPState, got {type(initial).__name__}")
    s = (initial.t0 - model.start) / dt
    n0 = round(s)
    if abs(s - n0) > 1e-6 or not 0 <= n0 < N:
        raise ValueError(f"initial.t0={initial.t0!r} is not a step of the grid start + k dt, 0 <= k < {N} "
                         f"(start={model.start}, dt={dt})")
    if initial.masses.shape != (len(model.populations), n_L):
        raise ValueError(f"initial.masses has shape {initial.masses.shape}; expected "
                         f"({len(model.populations)}, {n_L}) = (populations, n_L)")
    return n0


def _entry_and_maturity(model: LPExitModel, dt: float, N: int):
    """Entry step, maturity step and whether the fund matures inside the window, per population (full grid)."""
    n_first, n_last, matures = [], [], []
    for p in model.populations:
        nf = max(0, round((p.vintage - model.start) / dt))
        mat = round((p.maturity - model.start) / dt)
        nl = min(N, mat)
        if nf >= nl:
            raise ValueError(f"population {p.name!r} is active for less than one time step of dt={dt}")
        if nf > 0 and nf >= N:
            raise ValueError(f"population {p.name!r}: vintage={p.vintage} enters at the window's end")
        n_first.append(nf)
        n_last.append(nl)
        matures.append(mat <= N)
    return np.array(n_first, dtype=np.int64), np.array(n_last, dtype=np.int64), np.array(matures, dtype=bool)


def _state_rows(model, initial, n0, n_first, n_last, matures, m0):
    """Masses at entry, bookkeeping and window membership when the solve starts from ``initial`` at ``n0``."""
    n_pop = len(model.populations)
    exited0, matured0, in_window = np.zeros(n_pop), np.zeros(n_pop), np.ones(n_pop, dtype=bool)
    if initial is None:
        return m0, exited0, matured0, in_window
    m0 = m0.copy()
    for k, p in enumerate(model.populations):
        row = initial.masses[k]
        if n_first[k] > n0:  # enters later with its initial law
            if np.any(row != 0.0):
                raise ValueError(f"initial.masses: population {p.name!r} enters after t0={initial.t0} "
                                 "and must have a zero row")
        elif matures[k] and n_last[k] <= n0:  # paid out before the window
            if np.any(row != 0.0):
                raise ValueError(f"initial.masses: population {p.name!r} has matured by t0={initial.t0} "
                                 "and must have a zero row")
            in_window[k] = False
            m0[k] = 0.0
            exited0[k] = 0.0 if initial.exited is None else float(initial.exited[k])
            matured0[k] = 1.0 - exited0[k] if initial.matured is None else float(initial.matured[k])
        else:  # active at t0: start from the given masses
            m0[k] = np.array(row, dtype=float)
            matured0[k] = 0.0 if initial.matured is None else float(initial.matured[k])
            exited0[k] = (max(0.0, 1.0 - m0[k].sum() - matured0[k]) if initial.exited is None
                          else float(initial.exited[k]))
    return m0, exited0, matured0, in_window


def discretise(model: LPExitModel, grid: Grid | float, *, initial: LPState | None = None,
               inputs: MarketInputs | None = None) -> LPDiscretisation:
    """The :class:`LPDiscretisation` of ``model`` on ``grid`` (docs/model.md 2.6).

    ``grid``: a :class:`~mfg.lp_exit.params.Grid`, or a time step ``dt`` alone (no spatial
    arrays: what the finite-N engine needs).  ``initial``: an
    :class:`~mfg.lp_exit.inputs.LPState` at a step ``t0`` of the model's grid (the window
    becomes ``[t0, end]``; needs a Grid).  ``inputs``: time-varying ``Kbar, pbar, sigma``
    on the window (default: the model's constants).
    """
    if not isinstance(model, LPExitModel):
        raise TypeError(f"model must be an LPExitModel, got {type(model).__name__}")
    spatial = isinstance(grid, Grid)
    dt = float(grid.dt) if spatial else float(grid)
    if spatial:
        grid.check_covers(model)
    elif initial is not None:
        raise ValueError("a solve from an initial state needs a Grid, not only a time step")
    inputs = MarketInputs() if inputs is None else inputs
    if not isinstance(inputs, MarketInputs):
        raise TypeError(f"inputs must be MarketInputs, got {type(inputs).__name__}")
    N_full = window_steps(model, dt)
    n0 = _start_step(model, dt, N_full, grid.n_L if spatial else None, initial)
    t_full = model.start + dt * np.arange(N_full + 1)
    t = t_full[n0:]
    N = t.size - 1
    pops = model.populations
    n_first, n_last, matures = _entry_and_maturity(model, dt, N_full)
    m0 = x = running = terminal = cost_shape = dfac = None
    if spatial:
        x = np.linspace(grid.L_min, grid.L_max, grid.n_L)
        m0 = np.array([initial_masses(p.initial_mean, p.initial_std, x, grid.L_min, grid.dL) for p in pops])
        running = np.array([(p.y - p.eta * np.maximum(p.ell - x, 0.0)) * dt for p in pops])
        cost_shape = np.array([np.maximum(p.ell - x, 0.0) for p in pops])
        dfac = np.array([np.maximum(1.0 - p.delta * np.maximum(p.ell - x, 0.0), 0.0) for p in pops])
        terminal = np.ones(grid.n_L)
    m0, exited0, matured0, in_window = _state_rows(model, initial, n0, n_first, n_last, matures, m0)
    n_first = np.maximum(n_first - n0, 0)
    n_last = np.maximum(n_last - n0, 0)
    active = np.zeros((len(pops), N + 1), dtype=bool)
    for k in range(len(pops)):
        if in_window[k]:
            active[k, n_first[k]: n_last[k] if matures[k] else N + 1] = True
    Kbar, pbar, sigma = inputs.resolved(model, N + 1)
    mk = model.market
    return LPDiscretisation(
        model=model, dt=dt, n0=n0, t=t, names=tuple(p.name for p in pops), weights=model.weights,
        n_first=n_first, n_last=n_last, matures=matures, in_window=in_window, active=active,
        discount=np.array([math.exp(-(p.r - p.g) * dt) for p in pops]),
        q_max=np.ascontiguousarray(np.array([-np.expm1(-(p.a_max * p.seasonal_factor("a_max_factor", t)) * dt)
                                             for p in pops])),
        eta_extra=np.ascontiguousarray(np.array([p.eta * (p.seasonal_factor("eta_factor", t) - 1.0) * dt
                                                 for p in pops])),
        drift_a=np.array([p.kappa + p.lam for p in pops], dtype=float),
        lam=np.array([p.lam for p in pops], dtype=float),
        alpha=np.array([p.alpha for p in pops], dtype=float),
        phi=np.array([p.phi for p in pops], dtype=float),
        kappa_target=np.ascontiguousarray(np.array([p.kappa * (p.lbar + p.schedule(t)) for p in pops])),
        life_factor=np.ascontiguousarray(np.array([mk.remaining_life_factor(p.maturity - t) for p in pops])),
        Kbar=Kbar, pbar=pbar, sigma=sigma,
        K0=float(mk.K0) if initial is None else initial.K,
        S0=float(getattr(mk, "S0", 0.0)) if initial is None else initial.S_hat,
        exited0=exited0, matured0=matured0,
        grid=grid if spatial else None, x=x, m0=m0, running=running, cost_shape=cost_shape, dfac=dfac,
        terminal=terminal,
    )
