"""The finite-N LP market (docs/model.md 2.8) as a Mesa model: the readable reference.

:class:`LPMarketModel` is one market (one replication of :func:`abm.lp_market.engine.simulate`)
written agent by agent: each :class:`LPAgent` decides, draws its own random numbers
and moves.  For the same model, policy, ``n_agents``, seed, ``replication``,
``block_size`` and ``transition`` it produces the engine's paths to round-off (the
tests check it): every agent draws from its block's ``numpy.random.Generator``, agents
act in the engine's order (agent index order, which is block then population order),
and every sum is taken in the engine's nesting.  The step is the engine's
(:mod:`abm.lp_market.engine` has the full description):

1. ``M^n`` over the active LPs, active counts;
2. each active LP of a population before its maturity step calls :meth:`LPAgent.decide`
   (by default: ``q = exit_probability()``; a uniform is drawn if ``q > 0``; sell if it is below ``q``);
3. the market recursion :func:`mfg.lp_exit.market.market_step` on the realised exit fractions;
4. each LP still active calls :meth:`LPAgent.move` (exact OU step, or the solver's
   two-point step);
5. entries, maturities and shock events at ``t_{n+1}``.

Customise by subclassing :class:`LPAgent` (override :meth:`~LPAgent.exit_probability`
for another policy, :meth:`~LPAgent.decide` for any rule) and passing
``agent_class=``.  The engine is for scale; this model is for reading and for custom
agents (about 10⁵ agent-steps per second against the engine's 10⁸).

The :class:`mesa.datacollection.DataCollector` ``datacollector`` records, at the end of
each step ``n`` (Mesa's ``Step`` column is ``n``), the model reporters ``t, price,
buyer_capital`` (``K^n``, start of the step), ``sell_pressure, sell_flow,
mean_liquidity`` (``M^n``), ``active_share`` (NAV share of the market held by active LPs
at ``t_n``) and ``exits``, and the agent reporters ``population, liquidity, status``
(after the step: ``L`` at ``t_{n+1}``, status after the sale).

Mesa is imported by this module only (``abm/__init__`` does not import it): Mesa 3.3.1
sets the process's multiprocessing start method to "spawn" when imported; this module
puts back whatever start method was in force before.
"""

from __future__ import annotations

import math
import multiprocessing

import numpy as np

_start_method = multiprocessing.get_start_method(allow_none=True)
import mesa  # noqa: E402
from mesa.datacollection import DataCollector  # noqa: E402

if multiprocessing.get_start_method(allow_none=True) != _start_method:
    multiprocessing.set_start_method(_start_method, force=True)

from mfg.lp_exit.market import market_step  # noqa: E402

from .engine import (  # noqa: E402
    ACTIVE,
    BLOCK_SIZE,
    MATURED,
    PENDING,
    SOLD,
    STATUS_NAMES,
    block_generators,
    callable_q,
    initial_price,
    prepare,
    replication_seed,
)
from .policies import GIVEN  # noqa: E402

__all__ = ["LPAgent", "LPMarketModel"]


class LPAgent(mesa.Agent):
    """One LP: ``population`` (index), ``liquidity`` ``L``, ``status`` (``engine.STATUS_NAMES``).

    ``block_rng`` is the generator of the agent's block (shared with the block's other
    agents, drawn from in agent order).  ``index`` is the agent's position in the
    engine's arrays.
    """

    def __init__(self, model: "LPMarketModel", population: int, liquidity: float, status: int, index: int,
                 rng: np.random.Generator):
        super().__init__(model)
        self.population = int(population)
        self.liquidity = float(liquidity)
        self.status = int(status)
        self.index = int(index)
        self.block_rng = rng
        self.q_given = 0.0  # filled by the model for callable policies

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    def exit_probability(self) -> float:
        """Probability of selling in the current step: the model's policy at this LP's ``L``."""
        m = self.model
        bp = m.policy
        if bp.kind == GIVEN:
            return self.q_given
        return bp.q(self.population, m.step_index, self.liquidity)

    def decide(self) -> bool:
        """Sell in this step?  Default: with probability ``exit_probability()`` (one uniform
        from the block's generator, drawn only when that probability is positive)."""
        q = self.exit_probability()
        return q > 0.0 and self.block_rng.random() < q

    def move(self) -> None:
        """The step's liquidity transition with the model's frozen drift coefficients."""
        m = self.model
        su = m.setup
        k = self.population
        n = m.step_index
        x = self.liquidity
        if su.exact:
            z = self.block_rng.standard_normal()
            self.liquidity = x * su.decay[k] + m.drift_c[k] * su.gain[k] + su.sd[k, n] * z
        else:
            step = su.sq[k, n] if self.block_rng.random() < 0.5 else -su.sq[k, n]
            self.liquidity = x + (m.drift_c[k] - su.drift_a[k] * x) * su.dt + step


class LPMarketModel(mesa.Model):
    """One finite-N LP market (replication ``replication`` of :func:`abm.lp_market.engine.simulate`).

    Arguments as :func:`abm.lp_market.engine.simulate` (``model`` may be a Scenario; ``policy``
    ``None``, an MFG result, a :class:`abm.lp_market.policies.Policy` or a callable), plus
    ``agent_class`` (an :class:`LPAgent` subclass).  One :meth:`step` is one market
    step ``n`` (``step_index``); :meth:`run` runs to the end of the window.

    State: ``t`` (time of the current step), ``price``, ``buyer_capital``,
    ``sell_pressure``, ``sell_flow``, ``mean_liquidity``, ``exits`` (per population),
    ``vintage_price`` of the last step, ``K`` and ``s_hat`` carried into the next.
    """

    def __init__(self, model, policy=None, n_agents: int = 200, seed=None, *, replication: int = 0, dt=None,
                 inputs=None, events=(), block_size: int = BLOCK_SIZE, transition: str = "exact",
                 agent_class: type[LPAgent] = LPAgent):
        su = prepare(model, policy, n_agents, seed, dt=dt, inputs=inputs, events=events, block_size=block_size,
                     transition=transition)
        if not (isinstance(agent_class, type) and issubclass(agent_class, LPAgent)):
            raise TypeError("agent_class must be a subclass of LPAgent")
        rep_seed = replication_seed(su.seed, replication)
        super().__init__(seed=int(rep_seed.generate_state(1)[0]))  # Mesa's own rng (not used by the market)
        self.setup = su
        self.replication = int(replication)
        self.policy = su.policy
        self.generators = block_generators(rep_seed, su.n_blocks)
        L0 = su.initial_liquidity(self.generators)
        st0 = su.initial_statuses()
        self.lps: list[LPAgent] = []
        for b, g in enumerate(self.generators):
            for i in range(su.starts[b], su.starts[b + 1]):
                self.lps.append(agent_class(self, su.pop[i], L0[i], st0[i], i, g))
        for a in self.lps:  # a shock at t_0
            if a.active and su.shift[a.population, 0] != 0.0:
                a.liquidity += su.shift[a.population, 0]
        self.step_index = 0
        self.n_steps = su.n_steps
        self.K = su.K0 * (1.0 - su.cut[0])
        self.s_hat = su.S0
        self.price = initial_price(su)
        self.buyer_capital = self.K
        self.sell_pressure = self.s_hat
        self.sell_flow = 0.0
        self.mean_liquidity = math.nan
        self.active_share = 0.0
        n_pop = len(su.names)
        self.exits = np.zeros(n_pop, dtype=np.int64)
        self.active_count = np.zeros(n_pop, dtype=np.int64)
        self.vintage_price = np.zeros(n_pop)
        self.drift_c = np.zeros(n_pop)
        self.t = float(su.t[0])
        self.datacollector = DataCollector(
            model_reporters={
                "t": "t", "price": "price", "buyer_capital": "buyer_capital", "sell_pressure": "sell_pressure",
                "sell_flow": "sell_flow", "mean_liquidity": "mean_liquidity", "active_share": "active_share",
                "exits": lambda m: int(m.exits.sum()),
            },
            agent_reporters={"population": "population", "liquidity": "liquidity", "status": "status_name"},
        )

    def step(self) -> None:
        """Market step ``n = step_index`` (docs/model.md 2.8)."""
        su = self.setup
        n = self.step_index
        if n > su.n_steps:
            self.running = False
            return
        n_pop = len(su.names)
        nb = su.n_blocks
        self.t = float(su.t[n])
        if self.policy.kind == GIVEN:
            L_row = np.array([a.liquidity for a in self.lps])
            st_row = np.array([a.status for a in self.lps], dtype=np.int8)
            q = callable_q(su, self.policy, n, self.replication, L_row, st_row, self.price, self.K, self.s_hat)
            for a, qi in zip(self.lps, q):
                a.q_given = float(qi)
        # 1-2: mean field (sums nested as in the engine: block, population, agent order) and decisions
        sums = np.zeros((nb, n_pop))
        counts = np.zeros((nb, n_pop), dtype=np.int64)
        exits = np.zeros((nb, n_pop), dtype=np.int64)
        block = 0
        for a in self.lps:
            while a.index >= su.starts[block + 1]:
                block += 1
            if not a.active:
                continue
            k = a.population
            sums[block, k] += a.liquidity
            counts[block, k] += 1
            if n < su.n_last[k]:
                if a.decide():
                    a.status = SOLD
                    exits[block, k] += 1
        num = den = 0.0
        e_mass = np.zeros(n_pop)
        for k in range(n_pop):
            s = 0.0
            for b in range(nb):
                s += sums[b, k]
            c = int(counts[:, k].sum())
            self.active_count[k] = c
            self.exits[k] = int(exits[:, k].sum())
            num += su.per_w[k] * s
            den += su.per_w[k] * c
            e_mass[k] = self.exits[k] / su.n_per_pop[k] if su.n_per_pop[k] > 0 else 0.0
        M = num / den if den > 0.0 else math.nan
        # 3: the market
        pi = np.empty(n_pop)
        S, sh, P, K_next = market_step(self.s_hat, self.K, e_mass, su.weights, np.ascontiguousarray(su.life[:, n]),
                                       su.pbar[n], su.Kbar[n], su.dt, su.impact, pi)
        self.price, self.buyer_capital, self.sell_pressure, self.sell_flow = P, self.K, sh, S
        self.mean_liquidity = M
        self.vintage_price = pi
        self.active_share = float(den)
        self.s_hat = sh
        self.K = K_next * (1.0 - su.cut[n + 1]) if n < su.n_steps else K_next
        lp = math.log(P / su.pbar[n])
        mf = M if den > 0.0 else 0.0
        self.drift_c = np.array([su.kappa_target[k, n] + su.lam[k] * mf + su.alpha[k] * lp for k in range(n_pop)])
        # 4-5: transport, entries, maturities, shocks at t_{n+1}
        if n < su.n_steps:
            m = n + 1
            for a in self.lps:
                k = a.population
                if a.status == ACTIVE:
                    a.move()
                elif a.status == PENDING and m == su.n_first[k]:
                    a.status = ACTIVE
                if a.status == ACTIVE:
                    if su.matures[k] and m == su.n_last[k]:
                        a.status = MATURED
                    elif su.shift[k, m] != 0.0:
                        a.liquidity += su.shift[k, m]
        self.datacollector.collect(self)
        self.step_index += 1
        if self.step_index > su.n_steps:
            self.running = False

    def run(self) -> "LPMarketModel":
        """Step to the end of the window; returns ``self``."""
        while self.running:
            self.step()
        return self
