"""What a solve starts from and what drives it from outside (docs/model.md 2.7).

:class:`LPState` is the market's state at a step (active masses, buyer capital, carried
sell pressure): a solve can start from it (an unanticipated shock is applied to a copy of a
result's state).  :class:`MarketInputs` makes ``Kbar``, ``pbar`` and each population's
``sigma`` time-varying over a solve's window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .params import LPExitModel

__all__ = ["LPState", "MarketInputs"]


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
    """Time-varying exogenous inputs over the solve's window (docs/model.md 2.7).

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
