"""The finite-N LP market of docs/model.md 2.8: a numba particle engine.

:func:`simulate` runs ``n_reps`` independent markets of ``n_agents`` LPs each and
returns a :class:`MarketSimulation` (per-step, per-replication series with the MFG
result's names, a leading replication axis, tidy frames by :meth:`~MarketSimulation.to_frame`).

The discrete model, step ``n`` (from ``t_n`` to ``t_{n+1}``, ``t_n = start + n dt``)
----------------------------------------------------------------------------------
``dt`` is the model's grid step (the MFG's).  LP ``i`` of population ``k`` carries NAV
weight ``w_k / n_k`` (``n_k`` LPs of population ``k``, split by NAV weight), so a sale
moves the market exactly as a mass ``1/n_k`` of the MFG's population ``k`` does.  A
population enters at step ``n_first = max(0, round((vintage - start)/dt))`` and matures
at ``n_last = round((vintage + life - start)/dt)`` (when that is ``<= N``), the solver's
steps.  Status codes: :data:`PENDING` (before entry), :data:`ACTIVE`, :data:`SOLD`,
:data:`MATURED`.  At ``t_n`` the statuses already reflect entries and maturities at
``t_n``, and shock events at ``t_n`` have been applied (below).  Then:

1. **mean field** ``M^n = sum_k (w_k/n_k) sum_{i in k active} L_i / sum_k (w_k/n_k) #active_k``
   (NaN when nobody is active; it then acts on nobody); ``active_count[k, n]`` counts
   the active LPs of each population (the MFG's ``active_mass`` times ``n_k``);
2. **decisions** (an active LP of a population with ``n < n_last``):

   * *clearing market* (docs/model.md 2.4, 2.8): the LP's sale-process clock (an
     ``Exp(1)`` budget drawn at set-up) runs down by ``a_max(t_n) dt``; when it is used up
     (probability ``q_max = 1 - exp(-a_max dt)`` per step, memoryless: the MFG's law), the
     LP draws a uniform ``u`` (its logistic taste shock ``xi = log(u / (1 - u))``) and a new
     clock, and offers its stake at the reservation price
     ``r_i = (C_k^n(L_i) + phi_k - eps xi) / (A_k^n dfac_k(L_i))`` in units of ``P``
     (``C``: the MFG's continuation values at ``L_i`` by P1 interpolation, or a
     :class:`~abm.lp_market.policies.ReservationPolicy`'s); a probability policy's LP
     offers at any price (``r = 0``) with probability ``q`` (one uniform);
   * *impact market* (docs/model.md 2.4b): the LP sells with the policy's probability
     ``q = q_k^n(L_i)`` (for an MFG policy: ``exit_prob[k, n]`` at ``L_i`` by P1
     interpolation); a uniform ``U`` is drawn for each LP with ``q > 0``, it sells iff
     ``U < q``;
3. **market**: *clearing*: the offers of each replication, gathered in agent order, go to
   the uniform-price auction (:func:`abm.lp_market.auction.uniform_price_auction`: the
   price where the offers below it meet the demand ``D(P, K^n)``); the marginal offer is
   filled with the probability its share of the remaining demand, by a lottery drawn from
   the replication's auction generator and only within the buyers' budget; the buyers'
   spend refills as ``K^{n+1} = (K^n - spend) + dt theta_K (Kbar - (K^n - spend))``.
   *impact*: with ``E_k = exits_k / n_k`` the realised exit fraction,
   :func:`mfg.lp_exit.market.market_step` (the solver's own function) gives ``S^n``, ``Ŝ^n``,
   ``P^n`` (which includes this step's flow), ``pi_k^n`` and ``K^{n+1}``;
4. **transport** (``n < N``): every LP still active moves by the exact OU transition
   with the drift coefficients frozen over the step, ``a_k = kappa_k + lam_k``,
   ``c_k^n = kappa_k (lbar_k + s_k(t_n)) + lam_k M^n + alpha_k log(P^n / pbar^n)``:
   ``L' = L e^{-a dt} + c (1 - e^{-a dt})/a + sigma_k^n sqrt((1 - e^{-2a dt})/(2a)) Z``
   (``expm1`` forms; ``a = 0`` gives ``L + c dt + sigma sqrt(dt) Z``), or with
   ``transition="two-point"`` the solver's own step ``L' = L + (c - a L) dt ± sigma sqrt(dt)``
   (a fair coin from a uniform);
5. entries and maturities at ``t_{n+1}``, then shock events at ``t_{n+1}``: ``L += delta``
   for the active LPs of the populations hit, ``K^{n+1} -> (1 - psi) K^{n+1}``.

LPs of unequal size and quality (``nav_weights=``, ``quality=``; docs/model.md 2.8).  LP ``i``
may carry its own NAV weight ``(w_k / n_k) nu_i`` (``nu`` rescaled to mean 1 over the population:
the population's NAV stays ``w_k``) and a quality ``theta_i`` (rescaled to NAV-weighted mean 1 over
the population) that multiplies its deal price and its stake's value to its holder alike, so its
reservation price in units of ``P`` is unchanged.  The mean field is NAV-weighted; the auction's
supply and the buyers' spend are in value (an offer supplies ``(w_k / n_k) nu_i theta_i / dt``, a sale
costs ``P A dfac theta_i (w_k / n_k) nu_i``); in the impact market the exit fraction is
``sum_sold nu_i theta_i / n_k``.  Without them (the default) the kernels run the equal market's
arithmetic, and with all weights 1 they give its paths bit for bit.

How this matches the MFG's timing.  In the MFG the decision of step ``n`` uses the
equilibrium price ``P^n``, which includes step ``n``'s flow: ``P^n`` is an equilibrium
object that LPs anticipate.  With a given policy the finite market needs no fixed point:
the MFG policy ``q^n`` already encodes the (mean-field) expectation of ``P^n``, LPs
decide with it, and the realised exits then set ``S^n, Ŝ^n, P^n, K^{n+1}`` by the same
recursion, and ``P^n`` enters the step's drift exactly where the solver's does.  As
``N -> inf`` the realised exit fractions tend to the MFG's ``E_k^n`` and so every
market quantity tends to the solver's at the same ``n`` (the price an LP expected and
the price it got differ by ``O(1/sqrt(N))``).  Callable policies see the state at
``t_n`` before the step's sales (``P^{n-1}``, ``K^n``, ``Ŝ^{n-1}``, ``M^n``).

The one deliberate difference from the solver is the transition: the solver moves mass
to the two feet ``L + b dt ± sigma sqrt(dt)`` (Euler drift, two-point noise) and then
splits it onto grid nodes; the default here is the exact Gaussian OU law.  Both are
consistent, and the means of the two differ by ``O(dt)`` over a fixed horizon (the
Euler drift factor ``1 - a dt`` against ``e^{-a dt}``); ``transition="two-point"``
reproduces the solver's step, so the two effects can be told apart (docs/abm.md).

Randomness and reproducibility
------------------------------
The agents are cut into fixed blocks of ``block_size`` (default :data:`BLOCK_SIZE`)
in population order.  Replication ``r`` gets ``SeedSequence(seed).spawn``-child ``r``,
and block ``b`` of it that child's child ``b``; each (replication, block) owns a
``numpy.random.Generator`` (PCG64), passed into the ``@njit`` kernels.  Within a block
the draws are, in agent order: the initial ``L`` (one normal each, ``L = mean + std Z``,
all agents, at set-up), in the clearing market then the initial clocks (one exponential
each); then per step the decision draws of the deciding LPs (clearing: for an LP whose
clock fires, a uniform and a new exponential; a probability policy's LP, one uniform;
impact: one uniform for an LP with ``q > 0``) and the normals (or uniforms, two-point) of
the LPs that move.  The clearing market's lotteries for marginal offers come from one more
generator per replication, child ``n_blocks`` of its seed (:func:`auction_generator`).
The kernels run the (replication, block) items in parallel (``prange``), each item writing only its own
slots, and every sum over items is a serial loop in a fixed order, so a run is
bit-identical for any number of threads; it depends on ``block_size``.  The Mesa model
(:mod:`abm.lp_market.mesa_model`) draws the same numbers in the same order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba.typed import List

from mfg.lp_exit.discretisation import LPDiscretisation, discretise, window_steps
from mfg.lp_exit.inputs import MarketInputs
from mfg.lp_exit.market import ImpactParams, impact_params
from mfg.lp_exit.params import Grid, LPExitModel, Scenario, SolverOptions
from mfg.resources import check_memory

from .kernels import (
    ACTIVE,
    GIVEN,
    GIVEN_RESERVATION,
    MATURED,
    PENDING,
    SOLD,
    AuctionScratch,
    ClearingTables,
    Constants,
    Layout,
    Offers,
    Paths,
    Snapshots,
    StepTables,
    Work,
    run_steps,
)
from .policies import BoundPolicy, DecisionContext, MarketContext, as_policy
from .result import BLOCK_SIZE, STATUS_NAMES, MarketSimulation

__all__ = [
    "PENDING",
    "ACTIVE",
    "SOLD",
    "MATURED",
    "STATUS_NAMES",
    "BLOCK_SIZE",
    "TRANSITIONS",
    "MarketSimulation",
    "MarketSetup",
    "MarketState",
    "simulate",
    "prepare",
    "allocate_agents",
    "replication_seed",
    "block_generators",
    "auction_generator",
    "initial_price",
    "callable_q",
    "agent_weights",
]

TRANSITIONS = ("exact", "two-point")

#: Placeholder of the clearing tables in an impact-market run (the kernels need one argument type).
_NO_CLEARING = ClearingTables(np.zeros((1, 1)), np.zeros(1), np.zeros(1), np.zeros(1), 0.0, 1.0, 0.0, 1.0, 0.0)


# ----------------------------------------------------------------------------------
# set-up shared with the Mesa model
# ----------------------------------------------------------------------------------


def allocate_agents(weights: np.ndarray, n_agents: int) -> np.ndarray:
    """LPs per population: largest-remainder split of ``n_agents`` by NAV ``weights``.

    Every population with positive weight gets at least one LP (raises if
    ``n_agents`` is smaller than their number); weight 0 gets none.
    """
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    quota = n_agents * w
    n = np.floor(quota).astype(np.int64)
    rest = n_agents - int(n.sum())
    order = sorted(range(w.size), key=lambda k: (-(quota[k] - n[k]), k))
    for k in order[:rest]:
        n[k] += 1
    need = (w > 0) & (n == 0)
    while need.any():
        k0 = int(np.argmax(need))
        donor = int(np.argmax(n))
        if n[donor] <= 1:
            raise ValueError(f"n_agents={n_agents} is smaller than the number of populations with positive weight "
                             f"({int((w > 0).sum())})")
        n[donor] -= 1
        n[k0] += 1
        need = (w > 0) & (n == 0)
    return n


def replication_seed(seed, r: int) -> np.random.SeedSequence:
    """The :class:`~numpy.random.SeedSequence` of replication ``r``: child ``r`` of ``SeedSequence(seed)``."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.SeedSequence(entropy=root.entropy, spawn_key=tuple(root.spawn_key) + (int(r),),
                                  pool_size=root.pool_size)


def block_generators(rep_seed: np.random.SeedSequence, n_blocks: int) -> list[np.random.Generator]:
    """One PCG64 :class:`~numpy.random.Generator` per block: the children of the replication's seed."""
    return [np.random.Generator(np.random.PCG64(s)) for s in rep_seed.spawn(n_blocks)]


def auction_generator(rep_seed: np.random.SeedSequence, n_blocks: int) -> np.random.Generator:
    """The generator of a replication's auction lotteries (clearing market): child ``n_blocks`` of its seed,
    the one after the blocks' (built from the seed's spawn key, whatever it has spawned already)."""
    child = np.random.SeedSequence(entropy=rep_seed.entropy, spawn_key=tuple(rep_seed.spawn_key) + (int(n_blocks),),
                                   pool_size=rep_seed.pool_size)
    return np.random.Generator(np.random.PCG64(child))


@dataclass(frozen=True, eq=False)
class MarketSetup:
    """Everything :func:`simulate` and the Mesa model derive from the inputs (shared by both).

    ``disc`` is the game's :class:`~mfg.lp_exit.discretisation.LPDiscretisation` on the
    market's step (entry and maturity steps, drift target and slope, remaining-life
    factor, ``K̄``, ``P̄``, ``σ`` after the events' factors); the rest is the market's
    own: agents per population and their layout, the exact OU coefficients, the events'
    shifts and cuts, the bound policy and the random streams.  Per-population arrays are
    ``(n_pop,)`` or ``(n_pop, n_t)``; ``n_t = N + 1``.
    """

    disc: LPDiscretisation
    n_per_pop: np.ndarray
    per_w: np.ndarray
    pop: np.ndarray  # (n_agents,) population of each agent (agents are stored by population)
    pop_starts: np.ndarray  # (n_pop + 1,) population k is agents pop_starts[k]..pop_starts[k+1]-1
    starts: np.ndarray  # block boundaries
    init_mean: np.ndarray
    init_std: np.ndarray
    decay: np.ndarray
    gain: np.ndarray
    sd: np.ndarray
    sq: np.ndarray
    shift: np.ndarray  # (n_pop, n_t) liquidity shift applied at t_n to active LPs
    cut: np.ndarray  # (n_t + 1,) capital cut at t_n (last entry 0)
    impact: ImpactParams | None  # the impact market's constants, or None
    clearing: ClearingTables | None  # the clearing market's tables, or None
    policy: BoundPolicy
    exact: bool
    transition: str
    block_size: int
    seed_entropy: object
    seed: np.random.SeedSequence
    nav_weight: np.ndarray | None = None  # (n_agents,) NAV weight relative to per_w (mean 1 per population), or None
    quality: np.ndarray | None = None  # (n_agents,) deal-price multiplier (NAV-weighted mean 1 per population), or None

    # the discretisation's arrays under the names the market uses
    model = property(lambda self: self.disc.model)
    t = property(lambda self: self.disc.t)
    dt = property(lambda self: self.disc.dt)
    n_steps = property(lambda self: self.disc.N)
    names = property(lambda self: self.disc.names)
    weights = property(lambda self: self.disc.weights)
    n_first = property(lambda self: self.disc.n_first)
    n_last = property(lambda self: self.disc.n_last)
    matures = property(lambda self: self.disc.matures)
    kappa_target = property(lambda self: self.disc.kappa_target)
    lam = property(lambda self: self.disc.lam)
    alpha = property(lambda self: self.disc.alpha)
    drift_a = property(lambda self: self.disc.drift_a)
    life = property(lambda self: self.disc.life_factor)
    pbar = property(lambda self: self.disc.pbar)
    Kbar = property(lambda self: self.disc.Kbar)
    sigma = property(lambda self: self.disc.sigma)
    S0 = property(lambda self: self.disc.S0)
    K0 = property(lambda self: self.disc.K0)

    @property
    def n_agents(self) -> int:
        return int(self.pop.size)

    @property
    def n_blocks(self) -> int:
        return int(self.starts.size - 1)

    def initial_statuses(self) -> np.ndarray:
        return np.where(self.n_first[self.pop] > 0, PENDING, ACTIVE).astype(np.int8)

    def initial_liquidity(self, gens: list[np.random.Generator]) -> np.ndarray:
        """``L_i(0) = mean_k + std_k Z`` with the block generators' first normals."""
        L = np.empty(self.n_agents)
        for b, g in enumerate(gens):
            lo, hi = self.starts[b], self.starts[b + 1]
            p = self.pop[lo:hi]
            L[lo:hi] = self.init_mean[p] + self.init_std[p] * g.standard_normal(hi - lo)
        return L

    def tables(self) -> StepTables:
        """The kernels' :class:`~abm.lp_market.kernels.StepTables`."""
        d = self.disc
        return StepTables(d.n_first, d.n_last, d.matures, d.weights, self.per_w, self.n_per_pop.astype(np.float64),
                          d.kappa_target, d.lam, d.alpha, d.drift_a, self.decay, self.gain, self.sd, self.sq,
                          d.life_factor, d.pbar, d.Kbar, self.shift, self.cut)

    def constants(self) -> Constants:
        return Constants(self.dt, self.exact, self.clearing is not None, self.weighted)

    @property
    def weighted(self) -> bool:
        """Whether the LPs carry their own NAV weights or qualities (:func:`agent_weights`)."""
        return self.nav_weight is not None

    def agent_nav(self) -> np.ndarray:
        """(n_agents,) each LP's NAV weight: ``per_w[k] * nav_weight[i]`` (``per_w[k]`` without weights)."""
        w = self.per_w[self.pop]
        return w * self.nav_weight if self.weighted else w

    def layout(self) -> Layout:
        """The kernels' :class:`~abm.lp_market.kernels.Layout` (1-element dummies without weights)."""
        if not self.weighted:
            return Layout(self.pop_starts, self.starts, np.ones(1), np.ones(1))
        return Layout(self.pop_starts, self.starts, self.nav_weight, self.nav_weight * self.quality)

    def initial_clocks(self, gens: list[np.random.Generator]) -> np.ndarray:
        """The sale-process clocks ``Exp(1)`` of the clearing market (drawn after the initial ``L``)."""
        clock = np.empty(self.n_agents)
        for b, g in enumerate(gens):
            lo, hi = self.starts[b], self.starts[b + 1]
            clock[lo:hi] = g.standard_exponential(hi - lo)
        return clock


def agent_weights(n_per_pop: np.ndarray, nav_weights=None, quality=None):
    """Per-agent NAV weights and qualities, normalised: ``(nav_weight, quality)`` or ``(None, None)``.

    ``nav_weights`` (relative NAV weights, e.g. commitment sizes) are rescaled to mean 1 over each
    population, so LP ``i`` of population ``k`` carries NAV ``w_k nav_weight_i / n_k`` and the
    population's NAV is ``w_k`` exactly as in the MFG.  ``quality`` (a multiplier of the LP's deal price
    and of its value to its holder, docs/model.md 2.8) is rescaled to NAV-weighted mean 1 over each
    population, so the value a population offers is, in expectation, its NAV.  Both positive and finite;
    either may be ``None`` (ones).  Both ``None``: the market of equal LPs (``(None, None)``).
    """
    if nav_weights is None and quality is None:
        return None, None
    n = int(np.sum(n_per_pop))
    out = []
    for name, a in (("nav_weights", nav_weights), ("quality", quality)):
        a = np.ones(n) if a is None else np.array(a, dtype=np.float64)
        if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a <= 0.0):
            raise ValueError(f"{name} must be {n} positive finite numbers (one per LP), got shape {a.shape}")
        out.append(a)
    nu, q = out
    starts = np.concatenate([[0], np.cumsum(n_per_pop)]).astype(np.int64)
    for k in range(len(n_per_pop)):
        lo, hi = starts[k], starts[k + 1]
        if hi > lo:
            nu[lo:hi] *= (hi - lo) / float(np.sum(nu[lo:hi]))
            q[lo:hi] *= float(np.sum(nu[lo:hi])) / float(np.sum(nu[lo:hi] * q[lo:hi]))
    return nu, q


def _check_int(v, name, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _check_finite_model(model: LPExitModel) -> None:
    """NaN/inf anywhere in the model's numbers (pydantic refuses them; ``model_construct`` does not)."""
    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]")
        elif isinstance(obj, float) and not math.isfinite(obj):
            raise ValueError(f"model parameter {path} = {obj!r} is not finite")
    walk(model.model_dump(), "")


def _market_step(model: LPExitModel, dt, grid, res) -> float:
    """The market's step: explicit ``dt``, the scenario's grid, or the MFG policy's grid (all given must agree)."""
    candidates = []
    if dt is not None:
        if isinstance(dt, Grid):
            dt = dt.dt
        if not (isinstance(dt, (int, float, np.floating)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")
        candidates.append(("dt", float(dt)))
    if grid is not None:
        candidates.append(("scenario grid dt", float(grid.dt)))
    if res is not None:
        candidates.append(("policy grid dt", float(res.grid.dt)))
    if not candidates:
        raise ValueError("the time step is unknown: pass dt=, a Scenario, or an MFG policy")
    dt = candidates[0][1]
    for name, v in candidates[1:]:
        if not math.isclose(v, dt, rel_tol=1e-12):
            raise ValueError(f"time steps disagree: {candidates[0][0]}={dt!r} but {name}={v!r}")
    return dt


def _events(events, names, model, dt, t, n_pop):
    """The events' ``(Kbar, pbar, sigma)`` factors, liquidity shifts ``(n_pop, n_t)``, capital cuts ``(n_t + 1,)``."""
    n_t = t.size
    shift = np.zeros((n_pop, n_t))
    cut = np.zeros(n_t + 1)
    if not events:
        return None, shift, cut
    from mfg.lp_exit.events import ShockSchedule, check_events

    evs = check_events(events, names, model.start, model.end, dt)
    factors = ShockSchedule(events=evs).factors(t, names, tol=1e-9 * dt)
    for e in evs:
        n_e = round((e.time - model.start) / dt)
        for k, name in enumerate(names):
            if e.hits(name):
                shift[k, n_e] += e.liquidity_shift
        cut[n_e] = 1.0 - (1.0 - cut[n_e]) * (1.0 - e.capital_cut)
    return factors, shift, cut


def _clearing_tables(disc: LPDiscretisation, temperature: float) -> ClearingTables:
    mk, pops = disc.model.market, disc.model.populations
    return ClearingTables(
        hazard=np.ascontiguousarray(-np.log1p(-disc.q_max)), phi=disc.phi,
        delta=np.array([p.delta for p in pops], dtype=float), ell=np.array([p.ell for p in pops], dtype=float),
        eps=float(temperature), tau_d=float(mk.tau_d), gamma=float(mk.gamma), P_cap=float(mk.P_cap),
        theta_K=float(mk.theta_K))


def _temperature(temperature, solver, res) -> float:
    """The reservation prices' temperature: given, else the MFG policy's, else the scenario's solver's."""
    if temperature is None:
        if res is not None:
            temperature = res.options.temperature
        else:
            temperature = (solver or SolverOptions()).temperature
    t = float(temperature)
    if not (math.isfinite(t) and 0.0 <= t <= 10.0):
        raise ValueError(f"temperature must be a finite number in [0, 10], got {temperature!r}")
    return t


def prepare(model, policy=None, n_agents: int = 1000, seed=None, *, dt: float | None = None,
            inputs: MarketInputs | None = None, events=(), block_size: int = BLOCK_SIZE,
            transition: str = "exact", temperature: float | None = None, nav_weights=None,
            quality=None) -> MarketSetup:
    """Validate the inputs and build the :class:`MarketSetup` (see :func:`simulate`)."""
    grid = solver = None
    scenario_events: tuple = ()
    if isinstance(model, Scenario):
        grid, solver, scenario_events = model.grid, model.solver, tuple(model.events)
        model = model.model
    if not isinstance(model, LPExitModel):
        raise TypeError(f"model must be an LPExitModel or a Scenario, got {type(model).__name__}")
    _check_finite_model(model)
    n_agents = _check_int(n_agents, "n_agents", 1)
    block_size = _check_int(block_size, "block_size", 1)
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    pol = as_policy(policy)
    res = getattr(pol, "result", None)  # an MFG solution (LPExitResult or ScenarioResult)
    dt = _market_step(model, dt, grid, res)
    events = tuple(events or ())
    if not events and res is not None and getattr(res, "events", None):
        events = tuple(res.events)  # a ScenarioResult: its shocks happen in the market too
    if not events and scenario_events:
        events = scenario_events  # a Scenario's own shocks happen in the market
    if inputs is None and res is not None and not events:
        inputs = res.inputs  # the market the policy was solved for
    t = model.start + dt * np.arange(window_steps(model, dt) + 1)
    n_pop, names = len(model.populations), tuple(p.name for p in model.populations)
    bound = pol.bind(MarketContext(model=model, t=t, dt=dt))
    factors, shift, cut = _events(events, names, model, dt, t, n_pop)
    inputs = MarketInputs() if inputs is None else inputs
    if not isinstance(inputs, MarketInputs):
        raise TypeError(f"inputs must be MarketInputs, got {type(inputs).__name__}")
    Kbar, pbar, sigma = (a.copy() for a in inputs.resolved(model, t.size))
    if factors is not None:
        Kbar *= factors[0]
        pbar *= factors[1]
        sigma *= factors[2]
    disc = discretise(model, dt, inputs=MarketInputs(Kbar=Kbar, pbar=pbar, sigma=sigma))
    a = disc.drift_a
    decay = np.exp(-a * dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(a > 0.0, -np.expm1(-a * dt) / np.where(a > 0, a, 1.0), dt)
        var1 = np.where(a > 0.0, -np.expm1(-2.0 * a * dt) / np.where(a > 0, 2.0 * a, 1.0), dt)
    n_per_pop = allocate_agents(disc.weights, n_agents)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_w = np.where(n_per_pop > 0, disc.weights / np.maximum(n_per_pop, 1), 0.0)
    pops = model.populations
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    nav_weight, agent_quality = agent_weights(n_per_pop, nav_weights, quality)
    return MarketSetup(
        disc=disc, n_per_pop=n_per_pop, per_w=per_w, pop=np.repeat(np.arange(n_pop, dtype=np.int64), n_per_pop),
        pop_starts=np.concatenate([[0], np.cumsum(n_per_pop)]).astype(np.int64),
        starts=np.append(np.arange(0, n_agents, block_size, dtype=np.int64), np.int64(n_agents)),
        init_mean=np.array([p.initial_mean for p in pops], dtype=float),
        init_std=np.array([p.initial_std for p in pops], dtype=float),
        decay=decay, gain=gain, sd=np.ascontiguousarray(disc.sigma * np.sqrt(var1)[:, None]),
        sq=np.ascontiguousarray(disc.sigma * math.sqrt(dt)), shift=shift, cut=cut,
        impact=impact_params(model.market) if model.market.kind == "impact" else None,
        clearing=(_clearing_tables(disc, _temperature(temperature, solver, res)) if model.market.kind == "clearing"
                  else None),
        policy=bound, exact=transition == "exact", transition=transition,
        block_size=block_size, seed_entropy=root.entropy, seed=root, nav_weight=nav_weight, quality=agent_quality,
    )


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------


class MarketState:
    """The state of ``n_reps`` replications of a prepared market, and the kernel that advances it.

    The set-up :func:`simulate` runs (initial draws, the shock at ``t_0``, the result and
    work arrays); :meth:`run` calls :func:`~abm.lp_market.kernels.run_steps` on it, so a
    driver that advances the market in pieces (``run(n, n + 1)`` step by step, e.g.
    :mod:`experiments.datasets`) runs :func:`simulate`'s market bit for bit.  ``snapshots``
    is ``None`` or ``(snap_index, snap_L, snap_status)`` (see :func:`simulate`).
    """

    def __init__(self, su: MarketSetup, n_reps: int, snapshots=None):
        self.su = su
        n_t = su.t.size
        n_pop = len(su.names)
        R, n = n_reps, su.n_agents
        nb = su.n_blocks
        L = np.empty((R, n))
        clock = np.empty((R, n) if su.clearing is not None else (1, 1))
        gens, auction_gens = [], []
        for r in range(R):
            rep = replication_seed(su.seed, r)
            g = block_generators(rep, nb)
            L[r] = su.initial_liquidity(g)
            if su.clearing is not None:
                clock[r] = su.initial_clocks(g)
                auction_gens.append(auction_generator(rep, nb))
            gens.extend(g)
        gens.extend(auction_gens)  # the clearing market's lotteries: one generator per replication, after the blocks
        status = np.tile(su.initial_statuses(), (R, 1))
        # shock at t_0: shift the LPs active at the start, cut the initial capital
        for k in range(n_pop):
            if su.shift[k, 0] != 0.0:
                sel = (su.pop == k) & (status[0] == ACTIVE)
                L[:, sel] += su.shift[k, 0]
        self.L, self.status = L, status
        self.s_hat = np.full(R, su.S0)
        self.K = np.full(R, su.K0 * (1.0 - su.cut[0]))
        if snapshots is None:
            snapshots = (np.full(n_t, -1, dtype=np.int64), np.zeros((1, 1, 1)), np.zeros((1, 1, 1), dtype=np.int8))
        self.snap_index, self.snap_L, self.snap_status = snapshots
        self.out = dict(
            price=np.empty((R, n_t)), vintage_price=np.empty((R, n_pop, n_t)), buyer_capital=np.empty((R, n_t)),
            sell_pressure=np.empty((R, n_t)), sell_flow=np.empty((R, n_t)), withdrawn=np.empty((R, n_t)),
            exits=np.zeros((R, n_pop, n_t), np.int64), active_count=np.zeros((R, n_pop, n_t), np.int64),
            mean_liquidity=np.empty((R, n_t)),
        )
        wshape = (R * nb, n_pop) if su.weighted else (1, 1)
        self.work = Work(self.s_hat, self.K, np.zeros((R, n_pop)), np.zeros((R * nb, n_pop)),
                         np.zeros((R * nb, n_pop), np.int64), np.zeros((R * nb, n_pop), np.int64), np.zeros(wshape),
                         np.zeros(wshape), np.zeros(R, np.int64), np.zeros(R, np.int64))
        self.gens = List(gens)
        self.clock = clock
        self.q_given = np.zeros((R, n)) if su.policy.kind in (GIVEN, GIVEN_RESERVATION) else np.zeros((1, 1))
        cap = int(np.max(np.diff(su.starts))) if su.clearing is not None else 1
        items = R * nb if su.clearing is not None else 1
        offers = Offers(np.empty((items, cap)), np.empty((items, cap)), np.empty((items, cap)),
                        np.empty((items, cap), np.int64), np.empty((items, cap), np.int64), np.zeros(items, np.int64),
                        np.empty((items, cap)), np.empty((items, cap)))
        m = n if su.clearing is not None else 1
        scratch = AuctionScratch(np.empty(m), np.empty(m), np.empty(m), np.empty(m, np.int64), np.empty(m, np.int64),
                                 np.empty(m, np.int64), np.empty(m), np.empty(m))
        self.scratch = scratch
        impact = su.impact if su.impact is not None else ImpactParams(0.0, 1.0, 0.0, 1e-9)
        clearing = su.clearing if su.clearing is not None else _NO_CLEARING
        self._args = (su.layout(), su.tables(), su.constants(), impact, clearing,
                      su.policy.arrays(), self.work, offers, Paths(**self.out),
                      Snapshots(self.snap_index, self.snap_L, self.snap_status), scratch)

    def run(self, n0: int, n1: int) -> None:
        """Steps ``n0..n1-1`` of every replication (a callable policy's ``q_given`` filled by the caller).

        Raises ``FloatingPointError`` naming the first step whose price is not positive and
        finite or whose mean liquidity is not finite, and the inputs most likely responsible.
        """
        run_steps(n0, n1, self.su.n_steps, self.L, self.status, self.gens, self.q_given, self.clock, *self._args)
        self._check(n0, n1)

    def step_offers(self) -> dict[str, np.ndarray]:
        """The offers of the last step run (clearing market, one replication), in agent order: ``agent``,
        ``pop``, reservation price ``r`` (units of ``P``), deal-price multiplier ``a = A dfac(L)``, value weight
        ``v`` (``nav_weight x quality``; 1 without weights), liquidity ``x`` at the offer, and ``sold``."""
        if self.su.clearing is None or self.L.shape[0] != 1:
            raise ValueError("step_offers needs the clearing market and one replication")
        sc, w = self.scratch, self.work
        m, k = int(w.n_off[0]), int(w.n_fill[0])
        order = sc.order[:m]
        sold = np.zeros(m, dtype=bool)
        sold[:k] = True
        agent = sc.agent[order]
        srt = np.argsort(agent, kind="stable")
        out = {"agent": agent[srt], "pop": sc.pop[order][srt], "r": sc.r[order][srt], "a": sc.a[order][srt],
               "v": sc.v[order][srt], "x": sc.x[order][srt], "sold": sold[srt]}
        return out

    def _check(self, n0: int, n1: int) -> None:
        o, su = self.out, self.su
        P = o["price"][:, n0:n1]
        active = o["active_count"][:, :, n0:n1].sum(axis=1) > 0
        bad = ~(np.isfinite(P) & (P > 0.0)) | (active & ~np.isfinite(o["mean_liquidity"][:, n0:n1]))
        if not bad.any():
            return
        r, j = np.argwhere(bad)[0]
        n = n0 + int(j)
        mk = su.model.market
        inputs = (f"market.beta={mk.beta:g}, market.S0={mk.S0:g}, market.K0={mk.K0:g}" if mk.kind == "impact" else
                  f"market.K0={mk.K0:g}, market.Kbar={mk.Kbar:g}, market.tau_d={mk.tau_d:g}")
        raise FloatingPointError(
            f"the finite-N market broke down at step {n} (t={su.t[n]:.6g}, replication {r}): price "
            f"{P[r, j]:.3g}, mean liquidity {o['mean_liquidity'][r, n]:.3g}, "
            f"buyer capital {o['buyer_capital'][r, n]:.3g}; inputs most likely responsible: {inputs}, "
            "the populations' alpha (mark-to-market feedback of a collapsing price), lbar and sigma")


def _snapshots(snapshot_times, su: MarketSetup, R: int):
    """``(steps, (snap_index, snap_L, snap_status))`` for the requested times, or ``(None, None)``."""
    if snapshot_times is None:
        return None, None
    n_t, n = su.t.size, su.n_agents
    times = np.atleast_1d(np.asarray(snapshot_times, dtype=float))
    if times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError("snapshot_times must be finite times")
    steps = np.rint((times - su.t[0]) / su.dt).astype(np.int64)
    if np.any(steps < 0) or np.any(steps > su.n_steps):
        raise ValueError(f"snapshot_times must lie in [{su.t[0]}, {su.t[-1]}]")
    steps = np.unique(steps)
    snap_index = np.full(n_t, -1, dtype=np.int64)
    snap_index[steps] = np.arange(steps.size)
    return steps, (snap_index, np.zeros((R, steps.size, n)), np.zeros((R, steps.size, n), dtype=np.int8))


def simulate(model, policy=None, n_agents: int = 1000, n_reps: int = 1, seed=None, *, dt: float | None = None,
             inputs: MarketInputs | None = None, events=(), snapshot_times=None, block_size: int = BLOCK_SIZE,
             transition: str = "exact", threads: int | None = None,
             temperature: float | None = None, nav_weights=None, quality=None) -> MarketSimulation:
    """Run ``n_reps`` independent finite-N LP markets (docs/model.md 2.8; the module docstring has the step).

    Parameters
    ----------
    model : :class:`~mfg.lp_exit.params.LPExitModel` or :class:`~mfg.lp_exit.params.Scenario`.
    policy : ``None`` (nobody sells), an :class:`~mfg.lp_exit.LPExitResult` (its continuation
        values in the clearing market, its ``exit_prob`` in the impact market, at each LP's
        ``L``, same step), a :class:`abm.lp_market.policies.Policy` (e.g.
        :class:`~abm.lp_market.policies.ThresholdPolicy`,
        :class:`~abm.lp_market.policies.ReservationPolicy`) or a callable ``fn(L, ctx) -> q``
        (:mod:`abm.lp_market.policies`).
    n_agents : LPs per market, split over populations by NAV weight.
    n_reps : independent markets.   seed : int, ``SeedSequence`` or ``None``.
    dt : the step (default: the Scenario's grid or the MFG policy's; all given must agree).
    inputs : :class:`~mfg.lp_exit.MarketInputs` (time-varying ``Kbar, pbar, sigma``);
        default: those the MFG policy was solved with, else the model's constants
        (with events: the model's constants times the events' factors).
    events : :class:`mfg.lp_exit.events.ShockEvent` s: liquidity shifts of the active LPs of
        the populations hit and capital cuts at their step, ``Kbar/pbar/sigma`` factors
        over their period (multiplying ``inputs``); default: the events of a
        :class:`~mfg.lp_exit.scenarios.ScenarioResult` policy, else those of a Scenario
        ``model``, else none.
    snapshot_times : times (years; nearest step) at which every LP's ``L`` and status
        are stored (memory ``R * S * n_agents * 9`` bytes).
    block_size : agents per random stream and unit of parallel work (results depend on it).
    transition : ``"exact"`` (Gaussian OU law) or ``"two-point"`` (the solver's step).
    threads : numba threads for this call (default: ``numba.get_num_threads()``); the
        result does not depend on it.
    temperature : the logit temperature of the reservation prices in the clearing market
        (default: the MFG policy's, else the Scenario's solver's).
    nav_weights, quality : per-LP NAV weights (relative, e.g. commitment sizes) and deal-price
        multipliers (fund quality), ``(n_agents,)`` in storage order (population order); normalised by
        :func:`agent_weights`.  ``None`` (default): equal LPs, the market of docs/model.md 2.8 as before.
    """
    t0 = time.perf_counter()
    n_reps = _check_int(n_reps, "n_reps", 1)
    su = prepare(model, policy, n_agents, seed, dt=dt, inputs=inputs, events=events, block_size=block_size,
                 transition=transition, temperature=temperature, nav_weights=nav_weights, quality=quality)
    n_snap = 0 if snapshot_times is None else np.atleast_1d(snapshot_times).size
    per_agent = 8.0 * n_reps * (2.2 + (1 if su.policy.kind == GIVEN else 0) + 1.2 * n_snap) \
        + (120.0 if su.clearing is not None else 0.0) + (16.0 if su.weighted else 0.0)  # offers, auction, weights
    check_memory(per_agent * su.n_agents,
                 f"a finite-N market of {n_reps} x {su.n_agents} LPs"
                 + (f" with {n_snap} snapshots" if n_snap else ""),
                 "fewer agents, replications or snapshots per call (run replications in batches)")
    steps, snaps = _snapshots(snapshot_times, su, n_reps)
    ms = MarketState(su, n_reps, snaps)
    old_threads = numba.get_num_threads()
    threads = old_threads if threads is None else _check_int(threads, "threads", 1)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        if su.policy.kind not in (GIVEN, GIVEN_RESERVATION):
            ms.run(0, su.t.size)
        else:
            for step in range(su.t.size):
                _callable_step(su, su.policy, step, ms.L, ms.status, ms.q_given, ms.out, ms.s_hat, ms.K)
                ms.run(step, step + 1)
    finally:
        numba.set_num_threads(old_threads)
    return MarketSimulation(
        t=su.t, populations=su.names, n_per_population=su.n_per_pop, weights=su.weights,
        agent_population=su.pop, liquidity=ms.L, status=ms.status, snapshot_steps=steps,
        snapshot_liquidity=ms.snap_L if steps is not None else None,
        snapshot_status=ms.snap_status if steps is not None else None, dt=su.dt, transition=su.transition,
        block_size=su.block_size, seed_entropy=su.seed_entropy, threads=threads,
        wall_time=time.perf_counter() - t0, **ms.out,
    )


def initial_price(su: MarketSetup) -> float:
    """``P^{-1}``, shown to callables at step 0: the impact market's ``pbar^0 exp(-beta S0 / K0)``, the
    clearing market's calm price ``pbar^0``."""
    if su.impact is None:
        return float(su.pbar[0])
    return float(su.pbar[0] * math.exp(-su.impact.beta * su.S0 / max(su.K0, su.impact.K_floor)))


def callable_q(su: MarketSetup, bp: BoundPolicy, n: int, r: int, L_row, status_row, price_prev: float, K: float,
               s_hat_prev: float) -> np.ndarray:
    """Exit probabilities of one replication's LPs at step ``n`` from a callable policy (0 for non-deciders)."""
    q = np.zeros(L_row.shape[0])
    act = status_row == ACTIVE
    w = su.agent_nav()
    den = float(np.sum(w[act]))
    M = float(np.sum(w[act] * L_row[act]) / den) if den > 0 else math.nan
    for k, name in enumerate(su.names):
        if n >= su.n_last[k]:
            continue
        sel = np.flatnonzero(act & (su.pop == k))
        if sel.size == 0:
            continue
        ctx = DecisionContext(population=k, name=name, step=n, t=float(su.t[n]), replication=r, price_prev=price_prev,
                              buyer_capital=K, sell_pressure_prev=s_hat_prev if su.impact is not None else math.nan,
                              mean_liquidity=M)
        q[sel] = bp.call(L_row[sel].copy(), ctx)
    return q


def _callable_step(su: MarketSetup, bp: BoundPolicy, n: int, L, status, q_given, out, s_hat, K) -> None:
    """Fill ``q_given`` for step ``n`` by calling the user's policy per replication and population."""
    for r in range(L.shape[0]):
        p_prev = float(out["price"][r, n - 1]) if n > 0 else initial_price(su)
        q_given[r] = callable_q(su, bp, n, r, L[r], status[r], p_prev, float(K[r]), float(s_hat[r]))
