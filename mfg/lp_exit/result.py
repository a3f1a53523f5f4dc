"""The result of an LP-exit solve (docs/model.md 2.5, 3.3).

:class:`LPExitResult` follows the project's result convention (:mod:`mfg.results`:
``converged``, ``status``, ``message``, ``iterations``, ``residuals``, ``timings``);
:class:`SeriesResult` holds what it shares with the stitched
:class:`~mfg.lp_exit.scenarios.ScenarioResult` (derived series, the state at a step, frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..results import Status
from .inputs import LPState, MarketInputs
from .params import Grid, LPExitModel, SolverOptions

__all__ = ["SeriesResult", "LPExitResult"]


class SeriesResult:
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

    def _carried_pressure(self, n: int) -> float:
        """``Ŝ^{n-1}`` carried into step ``n`` (impact market); 0 in the clearing market, which has none."""
        if n == 0:
            return self._initial_S_hat()
        v = float(self.sell_pressure[n - 1])
        return v if math.isfinite(v) else 0.0

    def _state_at(self, n: int) -> LPState:
        if self.density is None:
            raise ValueError("this result keeps no density (solved with store='paths'): solve with store='all'")
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
            S_hat=self._carried_pressure(n),
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
                "withdrawn": self.withdrawn,
                "deal_price": self.deal_price,
                **{name: getattr(self, name) for name in ("spend", "clearing_residual", "market_branch")
                   if hasattr(self, name)},
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
class LPExitResult(SeriesResult):
    """Equilibrium of the discrete LP-exit game (docs/model.md 2.3–2.6).

    Time series have ``n_t = N + 1`` entries on ``t``; per-population arrays lead with
    ``n_pop`` (order of ``model.populations``).

    Attributes
    ----------
    t : (n_t,) times, years.          L : (n_L,) liquidity nodes.
    populations : population names.
    price : (n_t,) market price factor ``P^n`` (fraction of NAV).
    vintage_price : (n_pop, n_t) ``pi_k^n = P^n A_k(remaining life)``.
    buyer_capital : (n_t,) ``K^n`` at the start of step n.
    sell_flow : (n_t,) the volume that trades, ``S^n`` (NAV/yr).
    sell_pressure : (n_t,) ``Ŝ^n`` of the impact market (NaN in the clearing market).
    withdrawn : (n_t,) supply withdrawn because the price is below ``pbar``: what would have
        sold at ``pbar`` minus what sold (NAV/yr; clearing market, NaN in the impact market).
    spend : (n_t,) buyers' spend in step n (NAV; NaN in the impact market).
    deal_price : (n_t,) volume-weighted mean deal price (fraction of NAV; NaN without sales).
    clearing_residual : (n_t,) ``|S - D| / D`` at the cleared price (0 where no root is
        needed; NaN in the impact market).
    market_branch : (n_t,) how each price was set (``mfg.lp_exit.clearing.BRANCH_*``: the root,
        the cap, no seller, the closed last step; -1 in the impact market).
    flow : (n_pop, n_t) each population's share of ``S^n`` (NAV/yr; sums to ``sell_flow``).
    active_mass, exited_mass, matured_mass : (n_pop, n_t) fractions of each
        population still holding, having sold before ``t_n``, and paid out at maturity;
        they sum to 1 from the population's entry on (0 before it).
    mean_liquidity : (n_t,) NAV-weighted mean ``M^n`` of ``L`` over active LPs.
    exit_prob : (n_pop, n_t, n_L) ``q`` (0 where no decision is taken).
    value : (n_pop, n_t, n_L) ``V`` per unit NAV (NaN before entry and after maturity).
    density : (n_pop, n_t, n_L) density of active LPs in ``L`` (``sum * dL = active_mass``).
        These three (and ``continuation``) are ``None`` for ``solve(..., store="paths")``.
    threshold : (n_pop, n_t) exit boundary (NaN without one).
    residuals : (iterations,) ``max(price_residuals, mean_residuals)``, one per
        evaluation of the fixed-point map (Anderson steps that were rejected included).
    price_residuals, mean_residuals : (iterations,) ``max|P_new - P|``, ``max|M_new - M|``.
    exploitability : NAV-weighted gain of a single LP who best-responds (hard rule) to
        the final path (``price``, ``mean_liquidity``: the path the policy's own flows
        produce) instead of following ``exit_prob``, integrated over the initial laws (or
        the initial state); ``O(temperature)`` at an exact logit equilibrium (about
        ``temperature²`` measured), zero for an exact hard one.
    converged, status, message : whether ``tol`` was reached, the :class:`mfg.results.Status`
        code and a one-line account (docs/model.md 3.3).
    anderson_rejections : Anderson steps rejected by the safeguard (invalid path or a
        larger residual) and replaced by the damped step.
    edge_mass : largest nodal mass seen on an end node of the grid.
    timings : seconds per phase (``backward``, ``forward``, ``sweeps``, ``market``,
        ``final``: the extra evaluation that fills ``value``/``exit_prob``/``density`` when
        the last one did not, ``exploitability``, ``total``); JIT compilation is in the
        first call's figures.
    initial : the :class:`LPState` the solve started from (``state_at(0)`` holds the
        same masses).   inputs : the resolved :class:`MarketInputs`.
    continuation : (n_pop, n_t, n_L) continuation values ``C`` of the equilibrium policy
        (clearing market: the reservation values the finite-N auction uses; ``None`` in the
        impact market).
    """

    t: np.ndarray
    L: np.ndarray
    populations: tuple[str, ...]
    price: np.ndarray
    vintage_price: np.ndarray
    buyer_capital: np.ndarray
    sell_pressure: np.ndarray
    sell_flow: np.ndarray
    withdrawn: np.ndarray
    spend: np.ndarray
    deal_price: np.ndarray
    clearing_residual: np.ndarray
    market_branch: np.ndarray
    flow: np.ndarray
    active_mass: np.ndarray
    exited_mass: np.ndarray
    matured_mass: np.ndarray
    mean_liquidity: np.ndarray
    exit_prob: np.ndarray | None
    value: np.ndarray | None
    density: np.ndarray | None
    threshold: np.ndarray
    residuals: np.ndarray
    price_residuals: np.ndarray
    mean_residuals: np.ndarray
    exploitability: float
    iterations: int
    converged: bool
    status: Status
    message: str
    anderson_rejections: int
    edge_mass: float
    timings: dict
    initial: LPState = field(repr=False)
    inputs: MarketInputs = field(repr=False)
    model: LPExitModel = field(repr=False)
    grid: Grid = field(repr=False)
    options: SolverOptions = field(repr=False)
    continuation: np.ndarray | None = field(default=None, repr=False)

    def _initial_S_hat(self) -> float:
        return self.initial.S_hat

    def state_at(self, n: int) -> LPState:
        """The :class:`LPState` at step ``n`` (time ``t[n]``, before step ``n``'s sales).

        Active masses, buyer capital ``K^n``, the sell pressure ``Ŝ^{n-1}`` carried into
        step ``n``, and the exited / matured fractions.  ``solve(..., initial=state_at(0))``
        reproduces this result; ``state_at(n)`` for ``0 < n < N`` starts a new solve at
        ``t[n]`` (an unanticipated shock, docs/model.md 2.7, is applied to a copy of it).
        """
        return self._state_at(n)

    def to_frame(self, kind: str = "populations") -> pd.DataFrame:
        """Tidy frames of the time series.

        ``kind="market"``: one row per time, columns ``t, price, discount,
        buyer_capital, sell_pressure, sell_flow, withdrawn, deal_price, spend,
        clearing_residual, market_branch, mean_liquidity, active_nav, turnover`` (the
        clearing columns are NaN, and ``sell_pressure`` is, in the market that lacks them).
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
