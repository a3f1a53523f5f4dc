"""Exit policies for the finite-N LP market (docs/model.md 2.8).

A policy says, at step ``n`` (from ``t_n`` to ``t_{n+1}``), how an active LP of population
``k`` holding liquidity ``L`` sells during the step, in one of two forms:

* **reservation values** (the clearing market): the LP's continuation value ``C`` (NAV
  units).  When its sale-process clock fires, the LP draws a logistic taste shock and
  offers its stake at the reservation price ``(C + phi - eps xi) / (A dfac(L))``; the
  step's uniform-price auction decides whether it sells (:mod:`abm.lp_market.auction`);
* **exit probabilities** ``q``: in the impact market the LP sells with probability ``q``;
  in the clearing market it then offers at any price (a market order).

The engine (:mod:`abm.lp_market.engine`) and the Mesa model (:mod:`abm.lp_market.mesa_model`) accept:

* ``None`` — nobody exits (:class:`NoExit`);
* an :class:`~mfg.lp_exit.LPExitResult` or :class:`MFGPolicy` — the mean-field game's
  policy at each LP's own ``L`` by the P1 interpolation the solver uses
  (:func:`mfg.semi_lagrangian.interp_at`, constant outside the grid), at the same step
  ``n``: its continuation values ``continuation[k, n, :]`` in the clearing market, its exit
  probabilities ``exit_prob[k, n, :]`` in the impact market; "evaluate an MFG policy in the
  N-player game";
* :class:`ReservationPolicy` — a callable ``fn(L, ctx) -> C`` giving reservation values
  (clearing market);
* :class:`ThresholdPolicy` — exit with probability ``prob[k, n]`` while
  ``L < threshold[k, n]`` (by default ``prob`` is the population's
  ``q_max = 1 - exp(-a_max dt)``, the MFG's bound on a step's exit probability);
* :class:`CallablePolicy` or any callable ``fn(L, ctx) -> q`` working on arrays:
  ``L`` holds the liquidity of the active, deciding LPs of one population in one
  replication, ``ctx`` is a :class:`DecisionContext` (population, step, time and the
  market state known at ``t_n`` before the step's sales).  It returns an array of
  probabilities of ``L``'s shape (or a scalar); values outside ``[0, 1]`` or NaN are
  refused.  Callables run in Python once per step, replication and population (the
  slow path of the engine).

Every policy is turned by :meth:`Policy.bind` into a :class:`BoundPolicy`, the flat
arrays the numba kernels read (``kind`` selects the branch), after checking that it
fits the market (number of populations, time axis, step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mfg.lp_exit.discretisation import discretise
from mfg.semi_lagrangian import interp_at

from .kernels import GIVEN, GIVEN_RESERVATION, NONE, RESERVATION, TABLE, THRESHOLD, PolicyArrays

__all__ = [
    "NONE",
    "TABLE",
    "THRESHOLD",
    "GIVEN",
    "MarketContext",
    "DecisionContext",
    "BoundPolicy",
    "Policy",
    "NoExit",
    "MFGPolicy",
    "ThresholdPolicy",
    "CallablePolicy",
    "ReservationPolicy",
    "as_policy",
]

@dataclass(frozen=True)
class MarketContext:
    """What a policy is bound to: the model, the time grid ``t`` (``n_t`` entries) and the step ``dt``."""

    model: Any  # mfg.lp_exit.params.LPExitModel
    t: np.ndarray
    dt: float

    @property
    def n_pop(self) -> int:
        return len(self.model.populations)

    @property
    def n_t(self) -> int:
        return int(self.t.size)


@dataclass(frozen=True)
class DecisionContext:
    """What a callable policy sees at step ``n``, before the step's sales.

    ``price_prev``: ``P^{n-1}`` (at ``n = 0`` the price the initial state implies: the
    impact market's ``pbar exp(-beta S0 / K0)``, the clearing market's ``pbar``);
    ``buyer_capital``: ``K^n``; ``sell_pressure_prev``: ``Ŝ^{n-1}`` of the impact market (NaN
    in the clearing market); ``mean_liquidity``: ``M^n`` over the active LPs (NaN if none).
    """

    population: int
    name: str
    step: int
    t: float
    replication: int
    price_prev: float
    buyer_capital: float
    sell_pressure_prev: float
    mean_liquidity: float


@dataclass(frozen=True, eq=False)
class BoundPolicy:
    """A policy in the flat form the kernels read.

    ``kind``: :data:`NONE`, :data:`TABLE` (``table[k, n, :]`` on the grid ``lower + j dx``),
    :data:`THRESHOLD` (``prob[k, n]`` where ``L < threshold[k, n]``) or :data:`GIVEN`
    (for ``TABLE``, ``threshold[k, n]`` is a level above which the row is exactly zero)
    (``fn`` computes ``q`` in Python each step).  Unused arrays are 1-element dummies.
    """

    kind: int
    table: np.ndarray
    lower: float
    dx: float
    threshold: np.ndarray
    prob: np.ndarray
    fn: Callable | None = None

    def arrays(self) -> PolicyArrays:
        """The kernels' :class:`~abm.lp_market.kernels.PolicyArrays`."""
        return PolicyArrays(self.kind, self.table, float(self.lower), float(self.dx), self.threshold, self.prob)

    def q(self, k: int, n: int, L: float) -> float:
        """Exit probability of one LP (scalar, the kernels' arithmetic; not for ``GIVEN``)."""
        if self.kind == NONE:
            return 0.0
        if self.kind == TABLE:
            if L >= self.threshold[k, n]:
                return 0.0
            return float(interp_at(self.table[k, n], self.lower, self.dx, float(L)))
        if self.kind == THRESHOLD:
            return float(self.prob[k, n]) if L < self.threshold[k, n] else 0.0
        raise TypeError("a callable policy is evaluated with call(L, ctx), not q()")

    def call(self, L: np.ndarray, ctx: DecisionContext) -> np.ndarray:
        """Run the callable on ``L`` and validate its answer (``GIVEN``: probabilities in ``[0, 1]``;
        ``GIVEN_RESERVATION``: finite reservation values)."""
        q = np.asarray(self.fn(L, ctx), dtype=float)
        try:
            q = np.broadcast_to(q, L.shape)
        except ValueError:
            raise ValueError(f"policy callable returned shape {q.shape} for {L.shape[0]} LPs "
                             f"(population {ctx.name!r}, step {ctx.step})") from None
        if self.kind == GIVEN_RESERVATION:
            if not np.all(np.isfinite(q)):
                raise ValueError(f"reservation callable returned non-finite values (population {ctx.name!r}, "
                                 f"step {ctx.step})")
        elif not np.all((q >= 0.0) & (q <= 1.0)):  # also catches NaN
            raise ValueError(f"policy callable returned exit probabilities outside [0, 1] or NaN "
                             f"(population {ctx.name!r}, step {ctx.step})")
        return q


_DUMMY3 = np.zeros((1, 1, 1))
_DUMMY2 = np.zeros((1, 1))


class Policy:
    """Base class: :meth:`bind` returns the :class:`BoundPolicy` for a market."""

    def bind(self, ctx: MarketContext) -> BoundPolicy:  # pragma: no cover - interface
        raise NotImplementedError


class NoExit(Policy):
    """Nobody sells (``q = 0``)."""

    def bind(self, ctx: MarketContext) -> BoundPolicy:
        return BoundPolicy(NONE, _DUMMY3, 0.0, 1.0, _DUMMY2, _DUMMY2)

    def __repr__(self) -> str:
        return "NoExit()"


class MFGPolicy(Policy):
    """The exit probabilities of a mean-field solution (:class:`~mfg.lp_exit.LPExitResult`,
    or a stitched :class:`~mfg.lp_exit.scenarios.ScenarioResult`, which has the same fields).

    ``exit_prob[k, n, :]`` is read at each LP's ``L`` by :func:`mfg.semi_lagrangian.interp_at`
    (P1, constant outside ``[L_min, L_max]``) at the same step ``n``.  The result must
    live on the market's time grid (same start, ``dt`` and number of steps) and have
    the same populations in the same order.
    """

    def __init__(self, result):
        if not all(hasattr(result, a) for a in ("exit_prob", "t", "L", "populations", "grid", "inputs")):
            raise TypeError(f"MFGPolicy needs an LPExitResult (or a ScenarioResult), got {type(result).__name__}")
        self.result = result

    def bind(self, ctx: MarketContext) -> BoundPolicy:
        r = self.result
        names = tuple(p.name for p in ctx.model.populations)
        if tuple(r.populations) != names:
            raise ValueError(f"policy populations {tuple(r.populations)} do not match the model's {names}")
        if not math.isclose(r.dt, ctx.dt, rel_tol=1e-12):
            raise ValueError(f"policy time step dt={r.dt!r} does not match the market's dt={ctx.dt!r}")
        if r.t.shape != ctx.t.shape or not np.allclose(r.t, ctx.t, rtol=0.0, atol=1e-9 * ctx.dt):
            raise ValueError(f"policy time axis [{r.t[0]}, {r.t[-1]}] with {r.t.size} entries does not match the "
                             f"market's [{ctx.t[0]}, {ctx.t[-1]}] with {ctx.t.size} entries")
        kind = ctx.model.market.kind
        if r.model.market.kind != kind:
            raise ValueError(f"the MFG policy was solved for the {r.model.market.kind} market; this market is the "
                             f"{kind} market (market.kind)")
        lower, dx = float(r.L[0]), float(r.L[1] - r.L[0])
        if kind == "clearing":
            C = getattr(r, "continuation", None)
            if C is None:
                raise ValueError("the MFG policy holds no continuation values (solve with store='all')")
            C = np.ascontiguousarray(C, dtype=float)
            if C.shape[:2] != (ctx.n_pop, ctx.n_t) or not np.all(np.isfinite(C)):
                raise ValueError(f"policy continuation has shape {C.shape} or non-finite entries; "
                                 f"expected ({ctx.n_pop}, {ctx.n_t}, n_L)")
            return BoundPolicy(RESERVATION, C, lower, dx, _DUMMY2, _DUMMY2)
        table = np.ascontiguousarray(r.exit_prob, dtype=float)
        if table.shape[:2] != (ctx.n_pop, ctx.n_t) or not np.all(np.isfinite(table)):
            raise ValueError(f"policy exit_prob has shape {table.shape} or non-finite entries; "
                             f"expected ({ctx.n_pop}, {ctx.n_t}, n_L)")
        # q is exactly 0 from two cells above the last nonzero node on (P1 of zeros): the
        # kernels skip the interpolation there, which changes no result
        nz = table != 0.0
        last = np.where(nz.any(axis=2), table.shape[2] - 1 - np.argmax(nz[:, :, ::-1], axis=2), -1)
        cut = np.where(last < 0, -np.inf, lower + (last + 2) * dx)
        cut = np.where(last >= table.shape[2] - 2, np.inf, cut)
        return BoundPolicy(TABLE, table, lower, dx, np.ascontiguousarray(cut), _DUMMY2)

    def __repr__(self) -> str:
        return f"MFGPolicy({self.result!r})"


class ThresholdPolicy(Policy):
    """Exit with probability ``prob`` while ``L < threshold``.

    ``threshold``: a scalar, one value per population ``(n_pop,)``, or ``(n_pop, n_t)``
    (per step).  ``prob``: the same shapes, or ``None`` for each population's
    ``q_max = 1 - exp(-a_max dt)``.  Decisions are taken only while a population is
    active and before its maturity step, as in the MFG.
    """

    def __init__(self, threshold, prob=None):
        self.threshold = threshold
        self.prob = prob

    @staticmethod
    def _expand(v, name, ctx):
        a = np.asarray(v, dtype=float)
        if a.ndim == 0:
            a = np.full((ctx.n_pop, ctx.n_t), float(a))
        elif a.ndim == 1 and a.shape[0] == ctx.n_pop:
            a = np.repeat(a[:, None], ctx.n_t, axis=1)
        elif a.shape != (ctx.n_pop, ctx.n_t):
            raise ValueError(f"ThresholdPolicy.{name} has shape {a.shape}; expected a scalar, ({ctx.n_pop},) "
                             f"or ({ctx.n_pop}, {ctx.n_t})")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"ThresholdPolicy.{name} must be finite")
        return np.ascontiguousarray(a)

    def bind(self, ctx: MarketContext) -> BoundPolicy:
        thr = self._expand(self.threshold, "threshold", ctx)
        if self.prob is None:
            prob = np.ascontiguousarray(discretise(ctx.model, ctx.dt).q_max)
        else:
            prob = self._expand(self.prob, "prob", ctx)
        if np.any((prob < 0.0) | (prob > 1.0)):
            raise ValueError("ThresholdPolicy.prob must lie in [0, 1]")
        return BoundPolicy(THRESHOLD, _DUMMY3, 0.0, 1.0, thr, prob)

    def __repr__(self) -> str:
        return f"ThresholdPolicy(threshold={self.threshold!r}, prob={self.prob!r})"


class ReservationPolicy(Policy):
    """A user function ``fn(L, ctx) -> C`` on arrays giving each deciding LP's reservation (continuation)
    value in NAV units (clearing market): when an LP's sale-process clock fires it offers at
    ``(C + phi - eps xi) / (A dfac(L))`` (module docstring).  ``ctx`` as for :class:`CallablePolicy`."""

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"ReservationPolicy needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def bind(self, ctx: MarketContext) -> BoundPolicy:
        if ctx.model.market.kind != "clearing":
            raise ValueError("a ReservationPolicy needs the clearing market (market.kind = 'clearing')")
        return BoundPolicy(GIVEN_RESERVATION, _DUMMY3, 0.0, 1.0, _DUMMY2, _DUMMY2, fn=self.fn)

    def __repr__(self) -> str:
        return f"ReservationPolicy({self.fn!r})"


class CallablePolicy(Policy):
    """A user function ``fn(L, ctx) -> q`` on arrays (see the module docstring)."""

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"CallablePolicy needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def bind(self, ctx: MarketContext) -> BoundPolicy:
        return BoundPolicy(GIVEN, _DUMMY3, 0.0, 1.0, _DUMMY2, _DUMMY2, fn=self.fn)

    def __repr__(self) -> str:
        return f"CallablePolicy({self.fn!r})"


def as_policy(policy) -> Policy:
    """``None``, an ``LPExitResult``, a :class:`Policy` or a callable, as a :class:`Policy`."""
    if policy is None:
        return NoExit()
    if isinstance(policy, Policy):
        return policy
    if hasattr(policy, "exit_prob") and hasattr(policy, "grid"):  # LPExitResult, ScenarioResult
        return MFGPolicy(policy)
    if callable(policy):
        return CallablePolicy(policy)
    raise TypeError(f"policy must be None, an LPExitResult, a Policy or a callable, got {type(policy).__name__}")
