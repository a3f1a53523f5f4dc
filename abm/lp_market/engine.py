"""The finite-N LP market of MODEL.md 2.8: a numba particle engine.

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
2. **decisions**: each active LP of a population with ``n < n_last`` sells with the
   policy's probability ``q = q_k^n(L_i)`` (for an MFG policy: ``exit_prob[k, n]`` at
   ``L_i`` by P1 interpolation, the MFG's own step ``n``); a uniform ``U`` is drawn for
   each LP with ``q > 0`` and it sells iff ``U < q``;
3. **market**: with ``E_k = exits_k / n_k`` the realised exit fraction,
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
all agents, at set-up), then per step the uniforms of the deciding LPs with ``q > 0``
and the normals (or uniforms, two-point) of the LPs that move.  The kernels run the
(replication, block) items in parallel (``prange``), each item writing only its own
slots, and every sum over items is a serial loop in a fixed order, so a run is
bit-identical for any number of threads; it depends on ``block_size``.  The Mesa model
(:mod:`abm.lp_market.mesa_model`) draws the same numbers in the same order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd
from numba import njit, prange
from numba.typed import List

from mfg.lp_exit import MarketInputs
from mfg.lp_exit.params import Grid, LPExitModel, Scenario
from mfg.lp_exit.market import DEFAULT_K_FLOOR, market_constants, market_step
from mfg.semi_lagrangian import interp_at

from .policies import GIVEN, NONE, TABLE, THRESHOLD, BoundPolicy, DecisionContext, MarketContext, as_policy

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
    "simulate",
    "prepare",
    "allocate_agents",
    "replication_seed",
    "block_generators",
    "initial_price",
    "callable_q",
]

PENDING, ACTIVE, SOLD, MATURED = 0, 1, 2, 3
STATUS_NAMES = ("pending", "active", "sold", "matured")

#: Agents per block (a fixed unit of work with its own random stream).
BLOCK_SIZE = 1 << 15

TRANSITIONS = ("exact", "two-point")


# ----------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------


@njit(cache=True)
def _decide_block(n, r, lo, hi, it, gen, L, status, ps, kind, table, lower, dx, thr, prob, q_given, n_first, n_last,
                  matures, sumL, cnt, ex, snap_j, snap_L, snap_status):
    """Steps 1-2 for the agents ``lo..hi-1`` of replication ``r`` (work item ``it``).

    Agents are stored by population (``ps[k]..ps[k+1]-1`` is population ``k``); each
    population's part of the block is visited in agent order.
    """
    Lr = L[r]
    st = status[r]
    if snap_j >= 0:
        for i in range(lo, hi):
            snap_L[r, snap_j, i] = Lr[i]
            snap_status[r, snap_j, i] = st[i]
    for k in range(sumL.shape[1]):
        sumL[it, k] = 0.0
        cnt[it, k] = 0
        ex[it, k] = 0
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z or n < n_first[k] or (matures[k] and n >= n_last[k]):
            continue  # no agent of k here, or k not active at t_n
        decide = n < n_last[k] and kind != NONE
        s = 0.0
        c = 0
        e = 0
        if kind == TABLE:
            row = table[k, n]
        else:
            row = table[0, 0]
        th = thr[k, n] if kind == THRESHOLD or kind == TABLE else 0.0
        pr = prob[k, n] if kind == THRESHOLD else 0.0
        for i in range(a, z):
            if st[i] != ACTIVE:
                continue
            x = Lr[i]
            s += x
            c += 1
            if decide:
                if kind == TABLE:
                    q = interp_at(row, lower, dx, x) if x < th else 0.0
                elif kind == THRESHOLD:
                    q = pr if x < th else 0.0
                else:
                    q = q_given[r, i]
                if q > 0.0:
                    if gen.random() < q:
                        st[i] = SOLD
                        e += 1
        sumL[it, k] = s
        cnt[it, k] = c
        ex[it, k] = e


@njit(cache=True)
def _move_block(n, r, lo, hi, gen, L, status, ps, cst, decay, gain, sd, drift_a, sq, dt, exact, n_first, n_last,
                matures, shift):
    """Steps 4-5 for the agents ``lo..hi-1`` of replication ``r``."""
    Lr = L[r]
    st = status[r]
    m = n + 1
    for k in range(ps.shape[0] - 1):
        a = max(lo, ps[k])
        z = min(hi, ps[k + 1])
        if a >= z:
            continue
        now = n >= n_first[k] and not (matures[k] and n >= n_last[k])
        enter = m == n_first[k]
        mature = matures[k] and m == n_last[k]
        if not (now or enter):
            continue
        dec = decay[k]
        cg = cst[r, k] * gain[k]
        sdk = sd[k, n]
        ca = cst[r, k]
        ak = drift_a[k]
        sqk = sq[k, n]
        sh = shift[k, m]
        for i in range(a, z):
            s_i = st[i]
            if s_i == ACTIVE:
                x = Lr[i]
                if exact:
                    Lr[i] = x * dec + cg + sdk * gen.standard_normal()
                else:
                    step = sqk if gen.random() < 0.5 else -sqk
                    Lr[i] = x + (ca - ak * x) * dt + step
            elif s_i == PENDING and enter:
                s_i = ACTIVE
            if s_i == ACTIVE:
                if mature:
                    s_i = MATURED
                elif sh != 0.0:
                    Lr[i] += sh
            st[i] = s_i


@njit(cache=True, parallel=True)
def _run_steps(n0, n1, n_steps, L, status, ps, starts, gens, kind, table, lower, dx, thr, prob, q_given,
               n_first, n_last, matures, per_w, n_per_pop, weights, kappa_target, lam, alpha, decay, gain, sd,
               drift_a, sq, life, dt, pbar, Kbar, beta, tau_s, theta_K, K_floor, exact, shift, cut,
               s_hat, K, cst, sumL, cnt, ex, price, vprice, cap, press, flow, exits, active, mean_l,
               snap_index, snap_L, snap_status):
    """Steps ``n0..n1-1`` of every replication (see the module docstring)."""
    n_reps = L.shape[0]
    n_pop = weights.shape[0]
    n_blocks = starts.shape[0] - 1
    n_items = n_reps * n_blocks
    e_mass = np.empty(n_pop)
    a_n = np.empty(n_pop)
    pi = np.empty(n_pop)
    for n in range(n0, n1):
        snap_j = snap_index[n]
        for it in prange(n_items):
            j = np.intp(it)
            r = j // n_blocks
            b = j - r * n_blocks
            _decide_block(n, r, starts[b], starts[b + 1], j, gens[j], L, status, ps, kind, table, lower, dx, thr,
                          prob, q_given, n_first, n_last, matures, sumL, cnt, ex, snap_j, snap_L, snap_status)
        for r in range(n_reps):
            num = 0.0
            den = 0.0
            for k in range(n_pop):
                s = 0.0
                c = 0
                e = 0
                for b in range(n_blocks):
                    j = r * n_blocks + b
                    s += sumL[j, k]
                    c += cnt[j, k]
                    e += ex[j, k]
                active[r, k, n] = c
                exits[r, k, n] = e
                num += per_w[k] * s
                den += per_w[k] * c
                e_mass[k] = e / n_per_pop[k] if n_per_pop[k] > 0 else 0.0
                a_n[k] = life[k, n]
            M = num / den if den > 0.0 else np.nan
            S, sh, P, Kn = market_step(s_hat[r], K[r], e_mass, weights, a_n, dt, pbar[n], beta, tau_s, theta_K,
                                       Kbar[n], K_floor, pi)
            price[r, n] = P
            cap[r, n] = K[r]
            press[r, n] = sh
            flow[r, n] = S
            mean_l[r, n] = M
            for k in range(n_pop):
                vprice[r, k, n] = pi[k]
            s_hat[r] = sh
            K[r] = Kn * (1.0 - cut[n + 1]) if n < n_steps else Kn
            lp = math.log(P / pbar[n])
            mf = M if den > 0.0 else 0.0
            for k in range(n_pop):
                cst[r, k] = kappa_target[k, n] + lam[k] * mf + alpha[k] * lp
        if n < n_steps:
            for it in prange(n_items):
                j = np.intp(it)
                r = j // n_blocks
                b = j - r * n_blocks
                _move_block(n, r, starts[b], starts[b + 1], gens[j], L, status, ps, cst, decay, gain, sd, drift_a,
                            sq, dt, exact, n_first, n_last, matures, shift)


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


@dataclass(frozen=True, eq=False)
class MarketSetup:
    """Everything :func:`simulate` and the Mesa model derive from the inputs (internal but shared).

    Per-population arrays are ``(n_pop,)`` or ``(n_pop, n_t)``; ``n_t = N + 1``.
    """

    model: LPExitModel
    t: np.ndarray
    dt: float
    n_steps: int
    names: tuple[str, ...]
    weights: np.ndarray
    n_per_pop: np.ndarray
    per_w: np.ndarray
    pop: np.ndarray  # (n_agents,) population of each agent (agents are stored by population)
    pop_starts: np.ndarray  # (n_pop + 1,) population k is agents pop_starts[k]..pop_starts[k+1]-1
    starts: np.ndarray  # block boundaries
    n_first: np.ndarray
    n_last: np.ndarray
    matures: np.ndarray
    init_mean: np.ndarray
    init_std: np.ndarray
    kappa_target: np.ndarray
    lam: np.ndarray
    alpha: np.ndarray
    drift_a: np.ndarray
    decay: np.ndarray
    gain: np.ndarray
    sd: np.ndarray
    sq: np.ndarray
    life: np.ndarray
    pbar: np.ndarray
    Kbar: np.ndarray
    sigma: np.ndarray
    beta: float
    tau_s: float
    theta_K: float
    S0: float
    K0: float
    shift: np.ndarray  # (n_pop, n_t) liquidity shift applied at t_n to active LPs
    cut: np.ndarray  # (n_t + 1,) capital cut at t_n (last entry 0)
    policy: BoundPolicy
    exact: bool
    transition: str
    block_size: int
    seed_entropy: object
    seed: np.random.SeedSequence

    @property
    def n_agents(self) -> int:
        return int(self.pop.size)

    @property
    def n_blocks(self) -> int:
        return int(self.starts.size - 1)

    def initial_statuses(self) -> np.ndarray:
        st = np.where(self.n_first[self.pop] > 0, PENDING, ACTIVE).astype(np.int8)
        return st

    def initial_liquidity(self, gens: list[np.random.Generator]) -> np.ndarray:
        """``L_i(0) = mean_k + std_k Z`` with the block generators' first normals."""
        L = np.empty(self.n_agents)
        for b, g in enumerate(gens):
            lo, hi = self.starts[b], self.starts[b + 1]
            p = self.pop[lo:hi]
            L[lo:hi] = self.init_mean[p] + self.init_std[p] * g.standard_normal(hi - lo)
        return L


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


def prepare(model, policy=None, n_agents: int = 1000, seed=None, *, dt: float | None = None,
            inputs: MarketInputs | None = None, events=(), block_size: int = BLOCK_SIZE,
            transition: str = "exact") -> MarketSetup:
    """Validate the inputs and build the :class:`MarketSetup` (see :func:`simulate`)."""
    grid = None
    if isinstance(model, Scenario):
        grid = model.grid
        model = model.model
    if not isinstance(model, LPExitModel):
        raise TypeError(f"model must be an LPExitModel or a Scenario, got {type(model).__name__}")
    _check_finite_model(model)
    n_agents = _check_int(n_agents, "n_agents", 1)
    block_size = _check_int(block_size, "block_size", 1)
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    pol = as_policy(policy)
    # the step: explicit dt, the scenario's grid, or the MFG policy's grid (all must agree)
    candidates = []
    if dt is not None:
        if isinstance(dt, Grid):
            dt = dt.dt
        if not (isinstance(dt, (int, float, np.floating)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")
        candidates.append(("dt", float(dt)))
    if grid is not None:
        candidates.append(("scenario grid dt", float(grid.dt)))
    res = getattr(pol, "result", None)  # an MFG solution (LPExitResult or ScenarioResult)
    if res is not None:
        candidates.append(("policy grid dt", float(res.grid.dt)))
    if not candidates:
        raise ValueError("the time step is unknown: pass dt=, a Scenario, or an MFG policy")
    dt = candidates[0][1]
    for name, v in candidates[1:]:
        if not math.isclose(v, dt, rel_tol=1e-12):
            raise ValueError(f"time steps disagree: {candidates[0][0]}={dt!r} but {name}={v!r}")
    span = (model.end - model.start) / dt
    N = round(span)
    if N < 1 or abs(span - N) > 1e-9 * max(1.0, span):
        raise ValueError(f"dt={dt!r} does not divide the window [{model.start}, {model.end}] into whole steps "
                         f"({span:.6g})")
    mk = model.market
    if dt > mk.tau_s:
        raise ValueError(f"dt={dt!r} exceeds market.tau_s={mk.tau_s!r}: the sell-pressure update would overshoot")
    t = model.start + dt * np.arange(N + 1)
    n_t = N + 1
    pops = model.populations
    n_pop = len(pops)
    names = tuple(p.name for p in pops)

    bound = pol.bind(MarketContext(model=model, t=t, dt=dt))
    events = tuple(events or ())
    if not events and res is not None and getattr(res, "events", None):
        events = tuple(res.events)  # a ScenarioResult: its shocks happen in the market too
    if inputs is None and res is not None and not events:
        inputs = res.inputs  # the market the policy was solved for
    inputs = MarketInputs() if inputs is None else inputs
    if not isinstance(inputs, MarketInputs):
        raise TypeError(f"inputs must be MarketInputs, got {type(inputs).__name__}")
    Kbar, pbar, sigma = inputs.resolved(model, n_t)
    Kbar, pbar, sigma = Kbar.copy(), pbar.copy(), sigma.copy()

    # shock events (mfg.lp_exit.events): shifts and cuts at their step, factors over their period
    shift = np.zeros((n_pop, n_t))
    cut = np.zeros(n_t + 1)
    if events:
        from mfg.lp_exit.events import ShockSchedule, check_events

        evs = check_events(events, names, model.start, model.end, dt)
        kb, pb, sg = ShockSchedule(events=evs).factors(t, names, tol=1e-9 * dt)
        Kbar *= kb
        pbar *= pb
        sigma *= sg
        for e in evs:
            n_e = round((e.time - model.start) / dt)
            for k, name in enumerate(names):
                if e.hits(name):
                    shift[k, n_e] += e.liquidity_shift
            cut[n_e] = 1.0 - (1.0 - cut[n_e]) * (1.0 - e.capital_cut)

    n_first = np.empty(n_pop, dtype=np.int64)
    n_last = np.empty(n_pop, dtype=np.int64)
    matures = np.empty(n_pop, dtype=np.bool_)
    for k, p in enumerate(pops):
        nf = max(0, round((p.vintage - model.start) / dt))
        mat = round((p.maturity - model.start) / dt)
        n_first[k], n_last[k], matures[k] = nf, min(N, mat), mat <= N
        if nf >= n_last[k]:
            raise ValueError(f"population {p.name!r} is active for less than one time step of dt={dt}")
    kappa = np.array([p.kappa for p in pops], dtype=float)
    lam = np.array([p.lam for p in pops], dtype=float)
    alpha = np.array([p.alpha for p in pops], dtype=float)
    a = kappa + lam
    decay = np.exp(-a * dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(a > 0.0, -np.expm1(-a * dt) / np.where(a > 0, a, 1.0), dt)
        var1 = np.where(a > 0.0, -np.expm1(-2.0 * a * dt) / np.where(a > 0, 2.0 * a, 1.0), dt)
    sd = np.ascontiguousarray(sigma * np.sqrt(var1)[:, None])
    sq = np.ascontiguousarray(sigma * math.sqrt(dt))
    kappa_target = np.ascontiguousarray(np.array([p.kappa * (p.lbar + p.schedule(t)) for p in pops]))
    life = np.ascontiguousarray(np.array([mk.remaining_life_factor(p.maturity - t) for p in pops]))
    weights = model.weights
    n_per_pop = allocate_agents(weights, n_agents)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_w = np.where(n_per_pop > 0, weights / np.maximum(n_per_pop, 1), 0.0)
    pop = np.repeat(np.arange(n_pop, dtype=np.int64), n_per_pop)
    starts = np.append(np.arange(0, n_agents, block_size, dtype=np.int64), np.int64(n_agents))
    _, beta, tau_s, theta_K, S0, K0 = market_constants(mk)
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return MarketSetup(
        model=model, t=t, dt=dt, n_steps=N, names=names, weights=weights, n_per_pop=n_per_pop, per_w=per_w,
        pop=pop, pop_starts=np.concatenate([[0], np.cumsum(n_per_pop)]).astype(np.int64), starts=starts,
        n_first=n_first, n_last=n_last, matures=matures,
        init_mean=np.array([p.initial_mean for p in pops], dtype=float),
        init_std=np.array([p.initial_std for p in pops], dtype=float),
        kappa_target=kappa_target, lam=lam, alpha=alpha, drift_a=a, decay=decay, gain=gain, sd=sd, sq=sq,
        life=life, pbar=pbar, Kbar=Kbar, sigma=sigma, beta=beta, tau_s=tau_s, theta_K=theta_K, S0=S0, K0=K0,
        shift=shift, cut=cut, policy=bound, exact=transition == "exact", transition=transition,
        block_size=block_size, seed_entropy=root.entropy, seed=root,
    )


# ----------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MarketSimulation:
    """``n_reps`` finite-N markets (MODEL.md 2.8).  Series lead with the replication axis.

    Attributes
    ----------
    t : (n_t,) times (years), the MFG's ``t``.
    populations : names.   n_per_population : (n_pop,) LPs per population.
    weights : (n_pop,) NAV weights (normalised); each LP of ``k`` carries ``weights[k] / n_k``.
    price : (R, n_t) ``P^n``.   vintage_price : (R, n_pop, n_t) ``pi_k^n``.
    buyer_capital : (R, n_t) ``K^n`` at the start of step ``n`` (after a capital cut at ``t_n``).
    sell_pressure : (R, n_t) ``Ŝ^n``.   sell_flow : (R, n_t) ``S^n`` (NAV/yr).
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
        discount, buyer_capital, sell_pressure, sell_flow, mean_liquidity, active_nav``.
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


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------


class MarketState:
    """The state of ``n_reps`` replications of a prepared market, and the kernel that advances it.

    The set-up :func:`simulate` runs (initial draws, the shock at ``t_0``, the result and
    work arrays); :meth:`run` calls :func:`_run_steps` on it, so a driver that advances the
    market in pieces (``run(n, n + 1)`` step by step, e.g. :mod:`experiments.datasets`) runs
    :func:`simulate`'s market bit for bit.  ``snapshots`` is ``None`` or
    ``(snap_index, snap_L, snap_status)`` (see :func:`simulate`).
    """

    def __init__(self, su: MarketSetup, n_reps: int, snapshots=None):
        self.su = su
        n_t = su.t.size
        n_pop = len(su.names)
        R, n = n_reps, su.n_agents
        nb = su.n_blocks
        L = np.empty((R, n))
        gens = []
        for r in range(R):
            g = block_generators(replication_seed(su.seed, r), nb)
            L[r] = su.initial_liquidity(g)
            gens.extend(g)
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
            sell_pressure=np.empty((R, n_t)), sell_flow=np.empty((R, n_t)),
            exits=np.zeros((R, n_pop, n_t), np.int64), active_count=np.zeros((R, n_pop, n_t), np.int64),
            mean_liquidity=np.empty((R, n_t)),
        )
        self.sumL = np.zeros((R * nb, n_pop))
        self.cnt = np.zeros((R * nb, n_pop), np.int64)
        self.ex = np.zeros((R * nb, n_pop), np.int64)
        self.cst = np.zeros((R, n_pop))
        self.gens = List(gens)
        self.q_given = np.zeros((R, n)) if su.policy.kind == GIVEN else np.zeros((1, 1))
        self.n_per_pop_f = su.n_per_pop.astype(np.float64)

    def run(self, n0: int, n1: int) -> None:
        """Steps ``n0..n1-1`` of every replication (a callable policy's ``q_given`` filled by the caller)."""
        su, bp, o = self.su, self.su.policy, self.out
        _run_steps(n0, n1, su.n_steps, self.L, self.status, su.pop_starts, su.starts, self.gens, bp.kind, bp.table,
                   bp.lower, bp.dx, bp.threshold, bp.prob, self.q_given, su.n_first, su.n_last, su.matures, su.per_w,
                   self.n_per_pop_f, su.weights, su.kappa_target, su.lam, su.alpha, su.decay, su.gain, su.sd,
                   su.drift_a, su.sq, su.life, su.dt, su.pbar, su.Kbar, su.beta, su.tau_s, su.theta_K,
                   DEFAULT_K_FLOOR, su.exact, su.shift, su.cut, self.s_hat, self.K, self.cst, self.sumL, self.cnt,
                   self.ex, o["price"], o["vintage_price"], o["buyer_capital"], o["sell_pressure"], o["sell_flow"],
                   o["exits"], o["active_count"], o["mean_liquidity"], self.snap_index, self.snap_L,
                   self.snap_status)


def simulate(model, policy=None, n_agents: int = 1000, n_reps: int = 1, seed=None, *, dt: float | None = None,
             inputs: MarketInputs | None = None, events=(), snapshot_times=None, block_size: int = BLOCK_SIZE,
             transition: str = "exact", threads: int | None = None) -> MarketSimulation:
    """Run ``n_reps`` independent finite-N LP markets (MODEL.md 2.8; the module docstring has the step).

    Parameters
    ----------
    model : :class:`~mfg.lp_exit.params.LPExitModel` or :class:`~mfg.lp_exit.params.Scenario`.
    policy : ``None`` (nobody sells), an :class:`~mfg.lp_exit.LPExitResult` (its
        ``exit_prob`` at each LP's ``L``, same step), a :class:`abm.lp_market.policies.Policy`
        (e.g. :class:`~abm.lp_market.policies.ThresholdPolicy`) or a callable ``fn(L, ctx) -> q``
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
        :class:`~mfg.lp_exit.scenarios.ScenarioResult` policy, else none.
    snapshot_times : times (years; nearest step) at which every LP's ``L`` and status
        are stored (memory ``R * S * n_agents * 9`` bytes).
    block_size : agents per random stream and unit of parallel work (results depend on it).
    transition : ``"exact"`` (Gaussian OU law) or ``"two-point"`` (the solver's step).
    threads : numba threads for this call (default: ``numba.get_num_threads()``); the
        result does not depend on it.
    """
    t0 = time.perf_counter()
    n_reps = _check_int(n_reps, "n_reps", 1)
    su = prepare(model, policy, n_agents, seed, dt=dt, inputs=inputs, events=events, block_size=block_size,
                 transition=transition)
    n_t = su.t.size
    R, n = n_reps, su.n_agents
    if snapshot_times is not None:
        times = np.atleast_1d(np.asarray(snapshot_times, dtype=float))
        if times.size == 0 or not np.all(np.isfinite(times)):
            raise ValueError("snapshot_times must be finite times")
        steps = np.rint((times - su.t[0]) / su.dt).astype(np.int64)
        if np.any(steps < 0) or np.any(steps > su.n_steps):
            raise ValueError(f"snapshot_times must lie in [{su.t[0]}, {su.t[-1]}]")
        steps = np.unique(steps)
        snap_index = np.full(n_t, -1, dtype=np.int64)
        snap_index[steps] = np.arange(steps.size)
        snaps = (snap_index, np.zeros((R, steps.size, n)), np.zeros((R, steps.size, n), dtype=np.int8))
    else:
        steps = None
        snaps = None
    ms = MarketState(su, R, snaps)
    L, status, out, bp = ms.L, ms.status, ms.out, su.policy
    snap_L, snap_st = ms.snap_L, ms.snap_status

    old_threads = numba.get_num_threads()
    threads = old_threads if threads is None else _check_int(threads, "threads", 1)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        if bp.kind != GIVEN:
            ms.run(0, n_t)
        else:
            for step in range(n_t):
                _callable_step(su, bp, step, L, status, ms.q_given, out, ms.s_hat, ms.K)
                ms.run(step, step + 1)
    finally:
        numba.set_num_threads(old_threads)
    return MarketSimulation(
        t=su.t, populations=su.names, n_per_population=su.n_per_pop, weights=su.weights,
        agent_population=su.pop, liquidity=L, status=status, snapshot_steps=steps,
        snapshot_liquidity=snap_L if steps is not None else None,
        snapshot_status=snap_st if steps is not None else None, dt=su.dt, transition=su.transition,
        block_size=su.block_size, seed_entropy=su.seed_entropy, threads=threads,
        wall_time=time.perf_counter() - t0, **out,
    )


def initial_price(su: MarketSetup) -> float:
    """``P^{-1}``: the price the initial state implies, ``pbar^0 exp(-beta S0 / K0)`` (shown to callables at step 0)."""
    return float(su.pbar[0] * math.exp(-su.beta * su.S0 / max(su.K0, DEFAULT_K_FLOOR)))


def callable_q(su: MarketSetup, bp: BoundPolicy, n: int, r: int, L_row, status_row, price_prev: float, K: float,
               s_hat_prev: float) -> np.ndarray:
    """Exit probabilities of one replication's LPs at step ``n`` from a callable policy (0 for non-deciders)."""
    q = np.zeros(L_row.shape[0])
    act = status_row == ACTIVE
    w = su.per_w[su.pop]
    den = float(np.sum(w[act]))
    M = float(np.sum(w[act] * L_row[act]) / den) if den > 0 else math.nan
    for k, name in enumerate(su.names):
        if n >= su.n_last[k]:
            continue
        sel = np.flatnonzero(act & (su.pop == k))
        if sel.size == 0:
            continue
        ctx = DecisionContext(population=k, name=name, step=n, t=float(su.t[n]), replication=r, price_prev=price_prev,
                              buyer_capital=K, sell_pressure_prev=s_hat_prev, mean_liquidity=M)
        q[sel] = bp.call(L_row[sel].copy(), ctx)
    return q


def _callable_step(su: MarketSetup, bp: BoundPolicy, n: int, L, status, q_given, out, s_hat, K) -> None:
    """Fill ``q_given`` for step ``n`` by calling the user's policy per replication and population."""
    for r in range(L.shape[0]):
        p_prev = float(out["price"][r, n - 1]) if n > 0 else initial_price(su)
        q_given[r] = callable_q(su, bp, n, r, L[r], status[r], p_prev, float(K[r]), float(s_hat[r]))
