"""The result of a finite-N LP market run (docs/model.md 2.8): :class:`MarketSimulation`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["MarketSimulation", "STATUS_NAMES", "BLOCK_SIZE"]

STATUS_NAMES = ("pending", "active", "sold", "matured")

#: Agents per block (a fixed unit of work with its own random stream).
BLOCK_SIZE = 1 << 15


@dataclass(frozen=True, eq=False)
class MarketSimulation:
    """``n_reps`` finite-N markets (docs/model.md 2.8).  Series lead with the replication axis.

    Attributes
    ----------
    t : (n_t,) times (years), the MFG's ``t``.
    populations : names.   n_per_population : (n_pop,) LPs per population.
    weights : (n_pop,) NAV weights (normalised); each LP of ``k`` carries ``weights[k] / n_k``.
    price : (R, n_t) ``P^n``.   vintage_price : (R, n_pop, n_t) ``pi_k^n``.
    buyer_capital : (R, n_t) ``K^n`` at the start of step ``n`` (after a capital cut at ``t_n``).
    sell_pressure : (R, n_t) ``Ŝ^n`` (impact market; NaN in the clearing market).
    sell_flow : (R, n_t) the volume that trades, ``S^n`` (NAV/yr).
    withdrawn : (R, n_t) offers that would have sold at ``pbar`` and did not, NAV/yr
        (clearing market; NaN in the impact market).
    mean_liquidity : (R, n_t) ``M^n`` (NaN where nobody is active).
    exits : (R, n_pop, n_t) LPs selling in step ``n``.
    active_count : (R, n_pop, n_t) active LPs at ``t_n`` (before the step's sales).
    snapshot_steps : (S,) steps with snapshots;  snapshot_liquidity (R, S, n_agents) and
        snapshot_status (R, S, n_agents) (codes :data:`STATUS_NAMES`) at ``t_n`` before the
        step's sales, or ``None``.   agent_population : (n_agents,) population of each LP.
    liquidity, status : (R, n_agents) at the end (``t_N``).
    seed_entropy : entropy of the root ``SeedSequence`` (rerun with ``seed=seed_entropy``).
    """

    t: np.ndarray
    populations: tuple[str, ...]
    n_per_population: np.ndarray
    weights: np.ndarray
    price: np.ndarray
    vintage_price: np.ndarray
    buyer_capital: np.ndarray
    sell_pressure: np.ndarray
    sell_flow: np.ndarray
    withdrawn: np.ndarray
    mean_liquidity: np.ndarray
    exits: np.ndarray
    active_count: np.ndarray
    agent_population: np.ndarray = field(repr=False)
    liquidity: np.ndarray = field(repr=False)
    status: np.ndarray = field(repr=False)
    snapshot_steps: np.ndarray | None = None
    snapshot_liquidity: np.ndarray | None = field(default=None, repr=False)
    snapshot_status: np.ndarray | None = field(default=None, repr=False)
    dt: float = 0.0
    transition: str = "exact"
    block_size: int = BLOCK_SIZE
    seed_entropy: object = None
    threads: int = 1
    wall_time: float = 0.0

    @property
    def n_reps(self) -> int:
        return int(self.price.shape[0])

    @property
    def n_agents(self) -> int:
        return int(self.n_per_population.sum())

    @property
    def exit_fraction(self) -> np.ndarray:
        """(R, n_pop, n_t) ``exits / n_k``: the MFG's exited mass of step ``n``."""
        return self.exits / np.maximum(self.n_per_population, 1)[None, :, None]

    @property
    def active_mass(self) -> np.ndarray:
        """(R, n_pop, n_t) ``active_count / n_k`` (the MFG's ``active_mass``)."""
        return self.active_count / np.maximum(self.n_per_population, 1)[None, :, None]

    @property
    def exited_mass(self) -> np.ndarray:
        """(R, n_pop, n_t) fraction of each population that sold before ``t_n``."""
        c = np.cumsum(self.exit_fraction, axis=2)
        out = np.zeros_like(c)
        out[..., 1:] = c[..., :-1]
        return out

    @property
    def flow(self) -> np.ndarray:
        """(R, n_pop, n_t) each population's share of ``S^n`` (NAV/yr)."""
        return self.weights[None, :, None] * self.exit_fraction / self.dt

    @property
    def active_nav(self) -> np.ndarray:
        """(R, n_t) NAV held by active LPs (fraction of the market's NAV)."""
        return np.einsum("k,rkn->rn", self.weights, self.active_mass)

    def mean_se(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean over replications and its standard error (NaN with one replication)."""
        v = np.asarray(getattr(self, name), dtype=float)
        m = v.mean(axis=0)
        se = v.std(axis=0, ddof=1) / math.sqrt(v.shape[0]) if v.shape[0] > 1 else np.full(m.shape, np.nan)
        return m, se

    def to_frame(self, kind: str = "market") -> pd.DataFrame:
        """Tidy frames.

        ``"market"``: one row per (replication, time): ``replication, step, t, price,
        discount, buyer_capital, sell_pressure, sell_flow, withdrawn, mean_liquidity, active_nav``.
        ``"populations"``: one row per (replication, population, time): ``replication,
        population, step, t, vintage_price, exits, exit_fraction, active_count, active_mass, flow``.
        ``"agents"``: the snapshots, one row per (replication, snapshot, agent):
        ``replication, step, t, agent, population, liquidity, status``.
        """
        R, n_t = self.price.shape
        if kind == "market":
            return pd.DataFrame({
                "replication": np.repeat(np.arange(R), n_t),
                "step": np.tile(np.arange(n_t), R),
                "t": np.tile(self.t, R),
                "price": self.price.ravel(),
                "discount": 1.0 - self.price.ravel(),
                "buyer_capital": self.buyer_capital.ravel(),
                "sell_pressure": self.sell_pressure.ravel(),
                "sell_flow": self.sell_flow.ravel(),
                "withdrawn": self.withdrawn.ravel(),
                "mean_liquidity": self.mean_liquidity.ravel(),
                "active_nav": self.active_nav.ravel(),
            })
        if kind == "populations":
            n_pop = len(self.populations)
            return pd.DataFrame({
                "replication": np.repeat(np.arange(R), n_pop * n_t),
                "population": np.tile(np.repeat(np.array(self.populations, dtype=object), n_t), R),
                "step": np.tile(np.arange(n_t), R * n_pop),
                "t": np.tile(self.t, R * n_pop),
                "vintage_price": self.vintage_price.ravel(),
                "exits": self.exits.ravel(),
                "exit_fraction": self.exit_fraction.ravel(),
                "active_count": self.active_count.ravel(),
                "active_mass": self.active_mass.ravel(),
                "flow": self.flow.ravel(),
            })
        if kind == "agents":
            if self.snapshot_steps is None:
                raise ValueError("no snapshots: simulate(..., snapshot_times=[...])")
            S = self.snapshot_steps.size
            n = self.n_agents
            names = np.array(self.populations, dtype=object)
            return pd.DataFrame({
                "replication": np.repeat(np.arange(R), S * n),
                "step": np.tile(np.repeat(self.snapshot_steps, n), R),
                "t": np.tile(np.repeat(self.t[self.snapshot_steps], n), R),
                "agent": np.tile(np.arange(n), R * S),
                "population": np.tile(names[self.agent_population], R * S),
                "liquidity": self.snapshot_liquidity.ravel(),
                "status": pd.Categorical.from_codes(self.snapshot_status.ravel().astype(np.int64),
                                                    categories=list(STATUS_NAMES)),
            })
        raise ValueError(f"kind must be 'market', 'populations' or 'agents', got {kind!r}")

    def __repr__(self) -> str:
        return (f"MarketSimulation(n_agents={self.n_agents}, n_reps={self.n_reps}, n_t={self.t.size}, "
                f"populations={self.populations}, transition={self.transition!r}, threads={self.threads}, "
                f"wall_time={self.wall_time:.3g}s)")
