"""The finite-N LP market (docs/model.md 2.8) as a Mesa model: the readable reference of the engine.

:class:`LPMarketModel` is one market (one replication of :func:`abm.lp_market.engine.simulate`)
written agent by agent: each :class:`LPAgent` decides or makes its offer, draws its own random
numbers and moves.  For the same model, policy, ``n_agents``, seed, ``replication``,
``block_size`` and ``transition`` it produces the engine's paths bit for bit (the tests check
it, in both markets): every agent draws from its block's ``numpy.random.Generator``, agents act
in the engine's order (agent index order, which is block then population order), the clearing
market's lotteries come from the replication's auction generator
(:func:`abm.lp_market.engine.auction_generator`), and every sum is taken in the engine's nesting.

Quick start::

    LPMarketModel("calm", n_agents=1000, seed=1).run()   # a shipped scenario, its MFG policy solved

The first argument ``scenario`` is a shipped scenario's name (``"calm"``), a TOML path, a
:class:`~mfg.lp_exit.params.Scenario` or an :class:`~mfg.lp_exit.params.LPExitModel`.  With the
policy left out (``policy="mfg"``) the model solves the scenario's mean-field game itself
(:func:`mfg_policy`: :func:`mfg.lp_exit.solve` on the scenario's grid with its solver options, or
:func:`mfg.lp_exit.scenarios.solve_scenario` when the scenario has shock events, whose shocks then
happen in the market too), once per scenario and process.

The step ``n`` (from ``t_n`` to ``t_{n+1}``; :mod:`abm.lp_market.engine` has the full description)
is Mesa's simultaneous activation, ``agents.do("step")``, then the market, then
``agents.do("advance")``:

1. ``M^n`` and the active counts over the active LPs (the model, nesting the sums as the engine);
2. ``self.lps.do("step")``: each LP's part of the step (:meth:`LPAgent.step`).  An active LP of a
   population before its maturity step, in the *impact market*, sells with probability
   ``exit_probability()`` (:meth:`LPAgent.decide`); in the *clearing market* it makes its offer
   (:meth:`LPAgent.offer`): its sale-process clock runs down by ``a_max(t_n) dt``, and when it
   fires the LP draws a logistic taste shock and a new exponential clock and asks its reservation
   price ``r = (C(L) + phi - eps xi) / (A dfac(L))`` (``C`` the policy's continuation value at its
   ``L``); under a probability policy it places a market order (``r = 0``) with the policy's
   probability;
3. the market: in the impact market :func:`mfg.lp_exit.market.market_step` on the realised exit
   fractions; in the clearing market the offers, gathered in agent order, go through
   :func:`abm.lp_market.auction.uniform_price_auction` (the engine's own function), the winners
   sell, the marginal offer is filled by a lottery within the buyers' budget, and the buyers'
   capital is refilled from what is left, ``K' = (K - spend) + dt theta_K (Kbar - (K - spend))``
   (then the capital cut of an event at ``t_{n+1}``); then the next step's drift;
4. ``self.lps.do("advance")`` (``n < N``): each LP still active moves (:meth:`LPAgent.move`, exact
   OU step or the solver's two-point step); entries, maturities and shock events at ``t_{n+1}``.

Mesa's ``shuffle_do`` is not used: an agent's random numbers are the next ones of the generator
it shares with its block, so a random activation order would hand them out differently from the
engine; and no agent may sell before every offer is in (the auction needs them all), hence the
``step``/market/``advance`` split.

LPs of unequal size and quality (``nav_weights=``, ``quality=``, as in the engine): each agent carries
``nav_weight`` and ``quality`` (1 by default); the mean field is NAV-weighted, offers supply and sales
cost value (``nav_weight x quality``), summed in the engine's nesting, so the paths are the engine's bit
for bit with them too.

Customise by subclassing :class:`LPAgent` (override :meth:`~LPAgent.exit_probability`,
:meth:`~LPAgent.reservation_value`, :meth:`~LPAgent.decide`, :meth:`~LPAgent.offer` or
:meth:`~LPAgent.step`) and passing ``agent_class=``.  The engine is for scale; this model is for
reading and for custom agents (about 7·10⁴ agent-steps per second against the engine's 10⁸).

Data.  ``datacollector`` collects as Mesa models do by default: once at construction (Mesa's
``Step`` 0, the state at ``t_0``) and at the end of every step, so ``Step`` ``s`` is the model
after ``s`` steps, the same in the model-variable frame (its row index) and the agent-variable
frame (its ``Step`` index level), and in :func:`mesa.batch_run`'s ``Step`` column.  Row ``s >= 1``
holds the market of step ``n = s - 1``: ``t`` (``t_n``), ``price`` (``P^n``), ``buyer_capital``
(``K^n``, start of the step, after any capital cut at ``t_n``), ``sell_pressure`` (``Ŝ^n``; NaN in
the clearing market), ``sell_flow`` (NAV a year sold: the auction's volume in the clearing market),
``withdrawn`` (clearing market: NAV a year of offers that would have sold at ``P̄`` and did not;
NaN in the impact market), ``mean_liquidity`` (``M^n``), ``active_share`` (NAV share held by
active LPs at ``t_n``) and ``exits``; the agent reporters ``population, liquidity, status`` are
the agents after the step (``L`` at ``t_{n+1}``, status after the sales).  Row 0 holds ``t_0``,
``K^0``, ``M^0``, the active share at ``t_0``, ``exits = 0`` and NaN for the step outcomes
(``price``, ``sell_pressure``, ``sell_flow``, ``withdrawn``), and the agents' initial state.
Rows ``1..N+1`` are the engine's series ``0..N``.

Mesa is imported by this module only (``abm/__init__`` does not import it): Mesa 3.3.1
sets the process's multiprocessing start method to "spawn" when imported; this module
puts back whatever start method was in force before.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import warnings
from collections import namedtuple

import numpy as np

_start_method = multiprocessing.get_start_method(allow_none=True)
import mesa  # noqa: E402
from mesa.agent import AgentSet  # noqa: E402
from mesa.datacollection import DataCollector  # noqa: E402

if multiprocessing.get_start_method(allow_none=True) != _start_method:
    multiprocessing.set_start_method(_start_method, force=True)

from mfg.lp_exit.market import market_step  # noqa: E402
from mfg.lp_exit.params import LPExitModel, Scenario, load_scenario  # noqa: E402
from mfg.lp_exit.scenarios import EQUILIBRIA, EQUILIBRIA_SIZE, scenario_equilibrium  # noqa: E402
from mfg.semi_lagrangian import interp_at  # noqa: E402

from .auction import uniform_price_auction  # noqa: E402
from .engine import (  # noqa: E402
    ACTIVE,
    BLOCK_SIZE,
    MATURED,
    PENDING,
    SOLD,
    STATUS_NAMES,
    auction_generator,
    block_generators,
    callable_q,
    initial_price,
    prepare,
    replication_seed,
)
from .kernels import GIVEN, GIVEN_RESERVATION, RESERVATION  # noqa: E402

__all__ = ["LPAgent", "LPMarketModel", "Transport", "mfg_policy", "MFG"]

#: The default ``policy`` of :class:`LPMarketModel`: the scenario's own MFG policy (:func:`mfg_policy`).
MFG = "mfg"

# the equilibria are cached by mfg.lp_exit.scenarios.scenario_equilibrium (shared with the datasets)
_POLICY_CACHE, _POLICY_CACHE_SIZE = EQUILIBRIA, EQUILIBRIA_SIZE


def mfg_policy(scenario) -> object:
    """The MFG policy of a scenario (a name, a TOML path or a :class:`~mfg.lp_exit.params.Scenario`).

    :func:`mfg.lp_exit.solve` with the scenario's grid and solver options, or, when the scenario
    has shock events, :func:`mfg.lp_exit.scenarios.solve_scenario` (a ``ScenarioResult``, whose
    events the market then applies too).  Solved once per scenario and process: the last
    few results are kept, keyed by the scenario's content, so batch runs do not solve again.
    """
    sc = _resolve_scenario(scenario)
    if not isinstance(sc, Scenario):
        raise TypeError(f"mfg_policy needs a Scenario (a name, a TOML path or a Scenario), got {type(sc).__name__}")
    return scenario_equilibrium(sc)


def _resolve_scenario(scenario):
    """A name or path as a :class:`Scenario`; a Scenario or an LPExitModel as it is."""
    if isinstance(scenario, (Scenario, LPExitModel)):
        return scenario
    if isinstance(scenario, (str, os.PathLike)):
        return load_scenario(scenario)
    if isinstance(scenario, tuple) and len(scenario) == 2 and isinstance(scenario[0], str):
        raise TypeError(f"scenario is the pair {scenario[0]!r}, ...: mesa.batch_run iterates over a parameter value "
                        "and a pydantic Scenario or LPExitModel iterates over its fields; wrap the object in a list "
                        "(parameters={'scenario': [sc]}) or pass the scenario's name or path")
    raise TypeError(f"scenario must be a shipped scenario's name, a TOML path, a Scenario or an LPExitModel, "
                    f"got {type(scenario).__name__}")


class LPAgent(mesa.Agent):
    """One LP: ``population`` (index), ``liquidity`` ``L``, ``status`` (``engine.STATUS_NAMES``).

    ``block_rng`` is the generator of the agent's block (shared with the block's other agents,
    drawn from in agent order), ``block`` its index; ``index`` is the agent's position in the
    engine's arrays.  Clearing market: ``clock`` is the sale-process clock (an ``Exp(1)``
    budget that runs down by ``a_max(t_n) dt`` a step) and ``ask`` the reservation price of
    this step's offer (in units of ``P``; ``inf``: no offer).  ``q_given`` is filled by the model
    for callable policies (an exit probability, or a reservation value for a
    :class:`~abm.lp_market.policies.ReservationPolicy`).
    """

    def __init__(self, model: "LPMarketModel", population: int, liquidity: float, status: int, index: int,
                 rng: np.random.Generator):
        super().__init__(model)
        self.population = int(population)
        self.liquidity = float(liquidity)
        self.status = int(status)
        self.index = int(index)
        self.block_rng = rng
        self.block = 0  # set by the model
        self.clock = math.inf  # clearing market: set by the model
        self.ask = math.inf
        self.q_given = 0.0
        self.nav_weight = 1.0  # NAV weight relative to the population's per-LP weight (set by the model)
        self.quality = 1.0  # deal-price multiplier (set by the model)

    @property
    def value_weight(self) -> float:
        """``nav_weight x quality``: the LP's weight in the auction's supply and the buyers' spend."""
        return self.nav_weight * self.quality

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    # -- the decision (impact market) and the offer (clearing market) ---------------------------------

    def exit_probability(self) -> float:
        """Probability of selling (impact market) or of a market order (clearing market) in the current
        step: the model's probability policy at this LP's ``L`` (0 under a reservation policy)."""
        m = self.model
        bp = m.policy
        if bp.kind == GIVEN:
            return self.q_given
        if bp.kind in (RESERVATION, GIVEN_RESERVATION):
            return 0.0
        return bp.q(self.population, m.step_index, self.liquidity)

    def decide(self) -> bool:
        """Sell in this step (impact market), or place a market order (clearing market)?  Default: with
        probability ``exit_probability()`` (one uniform from the block's generator, drawn only when that
        probability is positive)."""
        q = self.exit_probability()
        return q > 0.0 and self.block_rng.random() < q

    def reservation_value(self) -> float:
        """The continuation value ``C`` (NAV units) at this LP's ``L`` under a reservation policy: the MFG's
        ``continuation[k, n, :]`` by P1 interpolation, or the callable's value."""
        bp = self.model.policy
        if bp.kind == GIVEN_RESERVATION:
            return self.q_given
        return interp_at(bp.table[self.population, self.model.step_index], bp.lower, bp.dx, self.liquidity)

    def deal_factor(self) -> float:
        """``A_k(tau) dfac(L)``: what this LP's stake sells for per unit of ``P`` and of NAV (clearing market)."""
        su, k = self.model.setup, self.population
        return su.life[k, self.model.step_index] * max(1.0 - su.clearing.delta[k]
                                                       * max(su.clearing.ell[k] - self.liquidity, 0.0), 0.0)

    def offer(self) -> float:
        """This step's offer in the clearing market: a reservation price in units of ``P`` (``inf``: none).

        Reservation policies: the sale-process clock runs down by ``a_max(t_n) dt``; when it fires the
        LP draws a uniform ``u`` (the logistic taste shock ``xi = log u - log(1 - u)``) and a new
        exponential clock, both from its block's generator, and asks
        ``(C + phi - eps xi) / (A dfac(L))`` (``0`` or ``inf`` when ``A dfac(L) = 0``).  Probability
        policies: a market order (``0``) when :meth:`decide` says so."""
        m = self.model
        bp = m.policy
        if bp.kind not in (RESERVATION, GIVEN_RESERVATION):
            return 0.0 if self.decide() else math.inf
        su, ct = m.setup, m.setup.clearing
        k, n, x = self.population, m.step_index, self.liquidity
        self.clock -= ct.hazard[k, n]
        if self.clock > 0.0:
            return math.inf
        u = self.block_rng.random()
        self.clock = self.block_rng.standard_exponential()
        xi = math.log(u) - math.log1p(-u) if u > 0.0 else -math.inf
        c = self.reservation_value()
        dfac = max(1.0 - ct.delta[k] * max(ct.ell[k] - x, 0.0), 0.0)
        num = c + ct.phi[k] - ct.eps * xi
        den = su.life[k, n] * dfac
        if den > 0.0:
            return num / den
        return 0.0 if num < 0.0 else math.inf

    def step(self) -> None:
        """This LP's part of the market step ``n``: if it is active and its population is before its
        maturity step, it decides (impact market: :meth:`decide`, and sells at once) or makes its offer
        (clearing market: ``ask = offer()``; the auction runs when every offer is in)."""
        self.ask = math.inf
        m = self.model
        if self.status != ACTIVE or not m.deciding[self.population]:
            return
        if m.clearing:
            self.ask = self.offer()
        elif self.decide():
            self.status = SOLD

    # -- transport ---------------------------------------------------------------------------------

    def move(self) -> None:
        """The step's liquidity transition with the drift frozen over the step (``model.transport``)."""
        tr = self.model.transport[self.population]
        x = self.liquidity
        if tr.exact:  # L' = L e^{-a dt} + c (1 - e^{-a dt})/a + sd Z
            self.liquidity = x * tr.decay + tr.c_gain + tr.sd * self.block_rng.standard_normal()
        else:  # the solver's step L' = L + (c - a L) dt +- sigma sqrt(dt), a fair coin
            step = tr.sq if self.block_rng.random() < 0.5 else -tr.sq
            self.liquidity = x + (tr.c - tr.a * x) * tr.dt + step

    def advance(self) -> None:
        """After the market (``n < N``): move if still active, then entry, maturity and a liquidity shock at
        ``t_{n+1}``."""
        tr = self.model.transport[self.population]
        if tr is None:  # the last step, or a population neither active at t_n nor entering at t_{n+1}
            return
        if self.status == ACTIVE:
            self.move()
        elif self.status == PENDING and tr.enter:
            self.status = ACTIVE
        if self.status == ACTIVE:
            if tr.mature:
                self.status = MATURED
            elif tr.shift != 0.0:
                self.liquidity += tr.shift


Transport = namedtuple("Transport", ["exact", "decay", "c_gain", "sd", "c", "a", "dt", "sq", "enter", "mature",
                                     "shift"])
Transport.__doc__ = """A population's transport in step ``n`` (``LPMarketModel.transport[k]``): the exact OU step
``L' = L decay + c_gain + sd Z`` (``c_gain = c (1 - e^{-a dt})/a``), or the two-point step
``L' = L + (c - a L) dt +- sq``, with the drift constant ``c = kappa (lbar + s(t_n)) + lam M^n + alpha
log(P^n / pbar^n)`` frozen over the step; ``enter``/``mature``: the population enters/matures at ``t_{n+1}``;
``shift``: the liquidity shock at ``t_{n+1}``."""


class LPMarketModel(mesa.Model):
    """One finite-N LP market (replication ``replication`` of :func:`abm.lp_market.engine.simulate`).

    ``scenario``: a shipped scenario's name (default ``"calm"``), a TOML path, a
    :class:`~mfg.lp_exit.params.Scenario` or an :class:`~mfg.lp_exit.params.LPExitModel` (the
    argument was called ``model``; passing it by position, or as ``model=``, still works).
    ``policy``: ``"mfg"`` (default: the scenario's MFG policy, :func:`mfg_policy`; needs a
    scenario with a grid), ``None`` (nobody sells), an MFG result, a
    :class:`abm.lp_market.policies.Policy` or a callable, as in
    :func:`~abm.lp_market.engine.simulate`, whose other arguments it takes too, plus
    ``agent_class`` (an :class:`LPAgent` subclass).  One :meth:`step` is one market step ``n``
    (``step_index``); :meth:`run` runs to the end of the window.

    With :func:`mesa.batch_run` pass the scenario by name or path (a pydantic object is iterable
    and batch_run would iterate over its fields: wrap it in a list, ``{"scenario": [sc]}``).

    State: ``t`` (time of the current step), ``price``, ``buyer_capital``, ``sell_pressure``,
    ``sell_flow``, ``withdrawn``, ``mean_liquidity``, ``active_share``, ``exits`` and
    ``active_count`` (per population), ``vintage_price`` of the last step; ``K`` and ``s_hat``
    carried into the next; ``lps`` (an AgentSet of the LPs in the engine's order), ``clearing``
    (market kind), ``lp_model`` (the :class:`~mfg.lp_exit.params.LPExitModel`), ``mfg_result``
    (the MFG result used as policy, or ``None``).
    """

    def __init__(self, scenario="calm", policy=MFG, n_agents: int = 200, seed=None, *, replication: int = 0,
                 dt=None, inputs=None, events=(), block_size: int = BLOCK_SIZE, transition: str = "exact",
                 temperature: float | None = None, agent_class: type[LPAgent] = LPAgent, model=None,
                 nav_weights=None, quality=None):
        if model is not None:  # the argument's first name
            if not (isinstance(scenario, str) and scenario == "calm"):
                raise TypeError("pass the scenario once: scenario= (model= is its former name)")
            warnings.warn("LPMarketModel(model=...) is now LPMarketModel(scenario=...)", DeprecationWarning,
                          stacklevel=2)
            scenario = model
        sc = _resolve_scenario(scenario)
        if isinstance(policy, str) and policy == MFG:
            if not isinstance(sc, Scenario):
                raise ValueError("policy='mfg' (the default) solves the scenario's MFG policy on its grid, and an "
                                 "LPExitModel has none: pass a Scenario (or its name or path), an MFG result as "
                                 "policy=, or policy=None for a market where nobody sells")
            policy = mfg_policy(sc)
        if not (isinstance(agent_class, type) and issubclass(agent_class, LPAgent)):
            raise TypeError("agent_class must be a subclass of LPAgent")
        su = prepare(sc, policy, n_agents, seed, dt=dt, inputs=inputs, events=events, block_size=block_size,
                     transition=transition, temperature=temperature, nav_weights=nav_weights, quality=quality)
        rep_seed = replication_seed(su.seed, replication)
        super().__init__(seed=int(rep_seed.generate_state(1)[0]))  # Mesa's own rng (not used by the market)
        self.setup = su
        self.scenario = sc if isinstance(sc, Scenario) else None
        self.lp_model = su.model
        self.mfg_result = _result_of(policy)
        self.replication = int(replication)
        self.policy = su.policy
        self.clearing = su.clearing is not None
        self.generators = block_generators(rep_seed, su.n_blocks)
        L0 = su.initial_liquidity(self.generators)
        clock0 = su.initial_clocks(self.generators) if self.clearing else None
        self.auction_rng = auction_generator(rep_seed, su.n_blocks) if self.clearing else None
        st0 = su.initial_statuses()
        lps = []
        for b, g in enumerate(self.generators):
            for i in range(su.starts[b], su.starts[b + 1]):
                a = agent_class(self, su.pop[i], L0[i], st0[i], i, g)
                a.block = b
                if su.weighted:
                    a.nav_weight = float(su.nav_weight[i])
                    a.quality = float(su.quality[i])
                if self.clearing:
                    a.clock = float(clock0[i])
                lps.append(a)
        self.lps = AgentSet(lps, random=self.random)
        for a in lps:  # a shock at t_0
            if a.active and su.shift[a.population, 0] != 0.0:
                a.liquidity += su.shift[a.population, 0]
        n_pop = len(su.names)
        self.step_index = 0
        self.n_steps = su.n_steps
        self.K = su.K0 * (1.0 - su.cut[0])
        self.s_hat = su.S0
        self.price = math.nan
        self.buyer_capital = self.K
        self.sell_pressure = math.nan
        self.sell_flow = math.nan
        self.withdrawn = math.nan
        self.exits = np.zeros(n_pop, dtype=np.int64)
        self.active_count = np.zeros(n_pop, dtype=np.int64)
        self.vintage_price = np.full(n_pop, math.nan)
        self.drift_c = np.zeros(n_pop)
        self.deciding = self._deciding(0)
        self.transport: list[Transport | None] = [None] * n_pop
        self.t = float(su.t[0])
        self.mean_liquidity, self.active_share, _ = self._mean_field(0)
        self.datacollector = DataCollector(
            model_reporters={
                "t": "t", "price": "price", "buyer_capital": "buyer_capital", "sell_pressure": "sell_pressure",
                "sell_flow": "sell_flow", "withdrawn": "withdrawn", "mean_liquidity": "mean_liquidity",
                "active_share": "active_share", "exits": lambda m: int(m.exits.sum()),
            },
            agent_reporters={"population": "population", "liquidity": "liquidity", "status": "status_name"},
        )
        self.datacollector.collect(self)  # Step 0: the initial state

    # -- the step ------------------------------------------------------------------------------------

    def _deciding(self, n: int) -> list[bool]:
        """Per population: active at ``t_n`` and before its maturity step (its active LPs decide or offer)."""
        su = self.setup
        return [bool(su.n_first[k] <= n < su.n_last[k]) for k in range(len(su.names))]

    def _mean_field(self, n: int):
        """``(M^n, active NAV share, active LPs)`` at ``t_n``; fills ``active_count``.  Sums nested as the
        engine's: per block and population in agent order, then over blocks, then over populations."""
        su = self.setup
        n_pop, nb = len(su.names), su.n_blocks
        on = [n >= su.n_first[k] and not (su.matures[k] and n >= su.n_last[k]) for k in range(n_pop)]
        sums = np.zeros((nb, n_pop))
        wsums = np.zeros((nb, n_pop))
        counts = np.zeros((nb, n_pop), dtype=np.int64)
        active = []
        for a in self.lps:
            k = a.population
            if a.status != ACTIVE or not on[k]:
                continue
            if su.weighted:  # NAV-weighted, summed as the engine does
                sums[a.block, k] += a.nav_weight * a.liquidity
                wsums[a.block, k] += a.nav_weight
            else:
                sums[a.block, k] += a.liquidity
            counts[a.block, k] += 1
            active.append(a)
        num = den = 0.0
        for k in range(n_pop):
            s = 0.0
            wc = 0.0
            for b in range(nb):
                s += sums[b, k]
                wc += wsums[b, k]
            c = int(counts[:, k].sum())
            self.active_count[k] = c
            num += su.per_w[k] * s
            den += su.per_w[k] * (wc if su.weighted else c)
        return (num / den if den > 0.0 else math.nan), float(den), active

    def step(self) -> None:
        """Market step ``n = step_index`` (docs/model.md 2.8; the module docstring has the order)."""
        su = self.setup
        n = self.step_index
        if n > su.n_steps:
            self.running = False
            return
        n_pop = len(su.names)
        self.t = float(su.t[n])
        if self.policy.kind in (GIVEN, GIVEN_RESERVATION):
            L_row = np.array([a.liquidity for a in self.lps])
            st_row = np.array([a.status for a in self.lps], dtype=np.int8)
            p_prev = self.price if n > 0 else initial_price(su)
            q = callable_q(su, self.policy, n, self.replication, L_row, st_row, p_prev, self.K, self.s_hat)
            for a, qi in zip(self.lps, q):
                a.q_given = float(qi)
        # 1: the mean field at t_n, before the step's sales
        M, den, active = self._mean_field(n)
        self.deciding = self._deciding(n)
        # 2: each LP's part (a decision, or an offer)
        self.lps.do("step")
        # 3: the market
        if self.clearing:
            P = self._clear(n, active)
        else:
            self.exits[:] = 0
            value = np.zeros((su.n_blocks, n_pop))  # exits in value (weighted markets), summed as the engine does
            for a in active:
                if a.status == SOLD:
                    self.exits[a.population] += 1
                    value[a.block, a.population] += a.value_weight
            sold = []
            for k in range(n_pop):
                ev = 0.0
                for b in range(su.n_blocks):
                    ev += value[b, k]
                sold.append(ev if su.weighted else self.exits[k])
            e_mass = np.array([sold[k] / su.n_per_pop[k] if su.n_per_pop[k] > 0 else 0.0 for k in range(n_pop)])
            pi = np.empty(n_pop)
            S, sh, P, K_next = market_step(self.s_hat, self.K, e_mass, su.weights,
                                           np.ascontiguousarray(su.life[:, n]), su.pbar[n], su.Kbar[n], su.dt,
                                           su.impact, pi)
            self.buyer_capital, self.sell_pressure, self.sell_flow, self.withdrawn = self.K, sh, S, math.nan
            self.vintage_price = pi
            self.s_hat = sh
            self.K = K_next * (1.0 - su.cut[n + 1]) if n < su.n_steps else K_next
        self.price = P
        self.mean_liquidity = M
        self.active_share = den
        lp = math.log(P / su.pbar[n])
        mf = M if M == M else 0.0  # NaN (nobody active) acts on nobody
        self.drift_c = np.array([su.kappa_target[k, n] + su.lam[k] * mf + su.alpha[k] * lp for k in range(n_pop)])
        # 4-5: transport, entries, maturities, shocks at t_{n+1}
        self.transport = [self._transport(n, k) for k in range(n_pop)]
        self.lps.do("advance")
        self.step_index += 1
        if self.step_index > su.n_steps:
            self.running = False
        else:
            self.deciding = self._deciding(self.step_index)
        self.datacollector.collect(self)

    def _transport(self, n: int, k: int) -> Transport | None:
        """Population ``k``'s :class:`Transport` in step ``n`` (``None``: nobody of ``k`` moves or enters)."""
        su = self.setup
        nxt = n + 1
        now = su.n_first[k] <= n and not (su.matures[k] and n >= su.n_last[k])
        enter = nxt == su.n_first[k]
        if n >= su.n_steps or not (now or enter):
            return None
        c = float(self.drift_c[k])
        return Transport(su.exact, float(su.decay[k]), float(self.drift_c[k] * su.gain[k]), float(su.sd[k, n]), c,
                         float(su.drift_a[k]), float(su.dt), float(su.sq[k, n]), bool(enter),
                         bool(su.matures[k] and nxt == su.n_last[k]), float(su.shift[k, nxt]))

    def _clear(self, n: int, active) -> float:
        """The clearing market of step ``n``: the uniform-price auction of the offers (agent order), the
        sales, the marginal lottery, the buyers' spend and refill.  Returns ``P^n``."""
        su, ct = self.setup, self.setup.clearing
        offering = [a for a in active if a.ask <= ct.P_cap]
        m = len(offering)
        r = np.array([a.ask for a in offering], dtype=float)
        if su.weighted:
            w = np.array([su.per_w[a.population] * a.value_weight / su.dt for a in offering], dtype=float)
        else:
            w = np.array([su.per_w[a.population] / su.dt for a in offering], dtype=float)
        v = [a.value_weight if su.weighted else 1.0 for a in offering]
        mult = [a.deal_factor() for a in offering]
        order = np.empty(m, dtype=np.int64)
        K = self.K
        pbar = su.pbar[n]
        P, n_sold, vol, _, fill = uniform_price_auction(r, w, m, K, pbar, su.dt, ct, order)
        self.exits[:] = 0
        spend = 0.0
        for j in range(n_sold):
            o = order[j]
            a = offering[o]
            a.status = SOLD
            self.exits[a.population] += 1
            spend += (P * mult[o] * su.per_w[a.population] * v[o] if su.weighted
                      else P * mult[o] * su.per_w[a.population])
        if fill > 0.0:  # the marginal offer: a lottery with the replication's auction generator, within the budget
            o = order[n_sold]
            a = offering[o]
            cost = P * mult[o] * su.per_w[a.population] * v[o] if su.weighted else P * mult[o] * su.per_w[a.population]
            if self.auction_rng.random() < fill and spend + cost <= K:
                a.status = SOLD
                self.exits[a.population] += 1
                spend += cost
                vol += w[o]
                n_sold += 1
        withdrawn = 0.0
        if P < pbar:
            for j in range(n_sold, m):
                if r[order[j]] <= pbar:
                    withdrawn += w[order[j]]
        self.buyer_capital, self.sell_pressure, self.sell_flow, self.withdrawn = K, math.nan, vol, withdrawn
        self.vintage_price = np.array([P * su.life[k, n] for k in range(len(su.names))])
        left = K - spend
        K_next = left + su.dt * ct.theta_K * (su.Kbar[n] - left)
        self.K = K_next * (1.0 - su.cut[n + 1]) if n < su.n_steps else K_next
        return P

    def run(self) -> "LPMarketModel":
        """Step to the end of the window; returns ``self``."""
        while self.running:
            self.step()
        return self


def _result_of(policy):
    """The MFG result behind a policy argument (an LPExitResult, a ScenarioResult or an MFGPolicy), or None."""
    if hasattr(policy, "exit_prob") and hasattr(policy, "grid"):
        return policy
    return getattr(policy, "result", None)
