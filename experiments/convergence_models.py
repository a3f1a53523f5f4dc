"""Models of the convergence study (experiments/convergence.py): what a finite-N market and its
mean-field limit look like to the study, and the built-in ones.

* :class:`Quantity`: one scalar per replication from a series' deviation ``x^N(t) - x(t)``
  (optionally over a time window);
* :class:`FiniteNModel`: a simulator returning the *path frame*, its reference frames, its
  quantities, and optional hooks (the exploitability against the mean paths, the epsilon-Nash
  bounds of :mod:`experiments.epsilon_nash`, per-N market diagnostics);
* :func:`lp_market` (the LP-exit market of docs/model.md 2.8 with the MFG policy, on a scenario
  with or without shock events) and :func:`price_formation_market` (docs/model.md 1.5);
* :data:`BUILTIN_MODELS` and :func:`build_model` (factories named ``"module:function"``,
  memoised per process, so worker processes build each model once).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import multiprocessing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Quantity", "FiniteNModel", "check_path_frame", "quantity_values", "lp_market", "price_formation_market",
           "lp_exploitability", "BUILTIN_MODELS", "build_model", "LP_SERIES"]

#: The LP model's series: price, NAV-weighted fraction exited, mean liquidity, buyer capital, volume.
LP_SERIES = ("price", "exited", "mean_liquidity", "buyer_capital", "sell_flow")


@dataclass(frozen=True)
class Quantity:
    """One scalar per replication computed from a series' deviation ``d(t) = x^N(t) - x(t)``.

    ``kind``: ``"sup"`` (``max_t |d|``), ``"avg"`` (``mean_t |d|``), ``"mean"`` (``mean_t d``,
    signed), ``"at"`` (``d`` at the time step nearest ``at``, signed) or ``"final"`` (``d``
    at the last time where the reference is defined, signed).  ``window = (t0, t1)``: only the
    times ``t0 <= t < t1`` count for ``sup``, ``avg``, ``mean``, and ``final`` is taken at the
    last time ``<= t1``.  Times where the reference is NaN are left out.  ``reference``: which of
    the model's reference frames ``x`` is taken from (``"mfg"``: the mean-field limit).
    """

    name: str
    series: str
    kind: str
    at: float | None = None
    reference: str = "mfg"
    window: tuple[float, float] | None = None

    def __post_init__(self):
        if self.kind not in ("sup", "avg", "mean", "at", "final"):
            raise ValueError(f"Quantity.kind must be sup, avg, mean, at or final, got {self.kind!r}")
        if (self.kind == "at") != (self.at is not None):
            raise ValueError("Quantity: give `at` exactly for kind='at'")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"Quantity.window must be (t0, t1) with t0 < t1, got {self.window!r}")

    @property
    def signed(self) -> bool:
        """Whether the quantity is a signed deviation (its mean is a bias) or a norm."""
        return self.kind in ("mean", "at", "final")


@dataclass(frozen=True, eq=False)
class FiniteNModel:
    """A finite-N market and its mean-field limit, as the study sees them (module docstring of
    :mod:`experiments.convergence`).

    simulate : ``(n_agents, n_reps, seed: numpy.random.SeedSequence) -> path frame``.
    references : ``{"mfg": frame, ...}``; each frame has ``t`` and the series columns.
    quantities : the :class:`Quantity` list.
    exploitability : optional ``(mean_paths: frame of t and the series) -> float``.
    epsilon : optional ``(paths: {series: (R, n_t)}, n_agents) -> frame`` of per-replication gains
        of deviations of one tagged LP (:mod:`experiments.epsilon_nash`).
    diagnostics : optional ``(paths, n_agents) -> dict`` of per-N market numbers (``markets.csv``).
    cost : seconds one replication of size ``N`` takes, roughly (sizes the blocks).
    info : text lines for the summary (scenario, grid, reference, ...).
    """

    name: str
    simulate: Callable[[int, int, np.random.SeedSequence], pd.DataFrame]
    references: Mapping[str, pd.DataFrame]
    quantities: tuple[Quantity, ...]
    exploitability: Callable[[pd.DataFrame], float] | None = None
    cost: Callable[[int], float] = lambda n: 1e-8 * n
    info: tuple[str, ...] = ()
    mfg_exploitability: float = math.nan
    epsilon: Callable[[Mapping[str, np.ndarray], int], pd.DataFrame] | None = None
    diagnostics: Callable[[Mapping[str, np.ndarray], int], dict] | None = None

    @property
    def reference(self) -> pd.DataFrame:
        return self.references["mfg"]

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(c for c in self.reference.columns if c != "t")


def check_path_frame(frame: pd.DataFrame, reference: pd.DataFrame, n_reps: int) -> pd.DataFrame:
    """Check a simulator's path frame against the contract (module docstring); return it sorted.

    Raises ``ValueError`` naming what is wrong.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"a simulator must return a pandas DataFrame, got {type(frame).__name__}")
    series = [c for c in reference.columns if c != "t"]
    missing = [c for c in ("replication", "t", *series) if c not in frame.columns]
    if missing:
        raise ValueError(f"path frame lacks the columns {missing} (has {list(frame.columns)})")
    t_ref = reference["t"].to_numpy(dtype=float)
    n_t = t_ref.size
    if len(frame) != n_reps * n_t:
        raise ValueError(f"path frame has {len(frame)} rows; {n_reps} replications x {n_t} times expected")
    out = frame[["replication", "t", *series]].sort_values(["replication", "t"], kind="stable").reset_index(drop=True)
    reps = out["replication"].to_numpy()
    if not np.array_equal(np.unique(reps), np.arange(n_reps)):
        raise ValueError(f"path frame replications must be 0..{n_reps - 1}")
    t = out["t"].to_numpy(dtype=float).reshape(n_reps, n_t)
    tol = 1e-9 * max(1.0, float(np.max(np.abs(t_ref))))
    if not np.all(np.abs(t - t_ref[None, :]) <= tol):
        raise ValueError("path frame times differ from the reference's time grid")
    for s in series:
        v = out[s].to_numpy(dtype=float).reshape(n_reps, n_t)
        ok = np.isfinite(reference[s].to_numpy(dtype=float))
        if not np.all(np.isfinite(v[:, ok])):
            raise ValueError(f"path frame column {s!r} is not finite where the reference is")
    return out


def quantity_values(q: Quantity, paths: Mapping[str, np.ndarray], model: FiniteNModel) -> np.ndarray:
    """Per-replication values of ``q`` from ``paths[series]`` of shape ``(R, n_t)``."""
    ref = model.references[q.reference]
    x = ref[q.series].to_numpy(dtype=float)
    t = ref["t"].to_numpy(dtype=float)
    ok = np.isfinite(x)
    if q.window is not None and q.kind != "at":
        tol = 1e-9 * max(1.0, float(np.max(np.abs(t))))
        t0, t1 = q.window
        ok &= (t >= t0 - tol) & ((t <= t1 + tol) if q.kind == "final" else (t < t1 - tol))
        if not ok.any():
            raise ValueError(f"quantity {q.name!r}: no time of the reference lies in its window {q.window}")
    d = paths[q.series][:, ok] - x[ok][None, :]
    if q.kind == "sup":
        return np.max(np.abs(d), axis=1)
    if q.kind == "avg":
        return np.mean(np.abs(d), axis=1)
    if q.kind == "mean":
        return np.mean(d, axis=1)
    if q.kind == "final":
        return d[:, -1]
    j = int(np.argmin(np.abs(t[ok] - q.at)))
    return d[:, j]


# --------------------------------------------------------------------------- the LP market


@functools.lru_cache(maxsize=6)
def _lp_solution_cached(scenario: str, n_L, dt):
    from mfg.lp_exit import solve
    from mfg.lp_exit.params import load_scenario
    from mfg.lp_exit.scenarios import solve_scenario

    from .lp_exit_report import resolve_scenario

    sc = load_scenario(resolve_scenario(scenario))
    upd = {}
    if n_L is not None:
        upd["n_L"] = int(n_L)
    if dt is not None:
        upd["dt"] = float(dt)
    grid = sc.grid.model_copy(update=upd) if upd else sc.grid
    if sc.events:
        res = solve_scenario(sc.model, grid, sc.solver, sc.events)
    else:
        res = solve(sc.model, grid, sc.solver)
    if not res.converged:
        raise RuntimeError(f"the MFG fixed point of {scenario!r} did not converge ({res.message})")
    meta = {"iterations": res.iterations, "exploitability": res.exploitability}
    if sc.events:  # the market needs the stitched policy only: drop the segments' and unused tables (memory)
        res = replace(res, segments=(), value=None, density=None)
    return sc, res, meta


def _lp_solution(scenario: str, n_L: int | None, dt: float | None):
    """(scenario, MFG solution) for the LP model; memoised per process (the solve is deterministic).
    A scenario with shock events is solved by :func:`mfg.lp_exit.scenarios.solve_scenario` (the
    result then keeps the stitched policy and paths only, not its segments)."""
    sc, res, _ = _lp_solution_cached(str(scenario), n_L, dt)
    return sc, res


def _lp_reference(res) -> pd.DataFrame:
    return pd.DataFrame({"t": res.t, "price": res.price, "exited": res.model.weights @ res.exited_mass,
                         "mean_liquidity": res.mean_liquidity, "buyer_capital": res.buyer_capital,
                         "sell_flow": res.sell_flow})


def _worker_threads() -> int | None:
    """One numba thread in a worker process (processes / Dask executors share the cores), else the default."""
    return 1 if multiprocessing.parent_process() is not None else None


def lp_exploitability(res, price: np.ndarray, mean_liquidity: np.ndarray) -> float:
    """Exploitability of the MFG policy ``res.exit_prob`` against the paths ``(price, mean_liquidity)``.

    The NAV-weighted gain, integrated over each population's initial law, of one LP who
    plays the hard best response (``temperature = 0``) to the given price and mean-field
    paths instead of the MFG policy, both valued by the solver's backward sweep
    (:func:`mfg.lp_exit.solver.exploitability`).  With ``res.price, res.mean_liquidity``
    this is ``res.exploitability`` (tested); with the N-market's mean paths it is the
    exploitability of the MFG policy against the N-market's mean paths (an open-loop proxy;
    :mod:`experiments.epsilon_nash` has the epsilon-Nash bounds).  Needs a result solved from
    the model's start (no initial state, no events).
    """
    from mfg.lp_exit.discretisation import discretise
    from mfg.lp_exit.params import SolverOptions
    from mfg.lp_exit.solver import PathSweeps, exploitability

    if abs(res.t[0] - res.model.start) > 1e-9:
        raise ValueError("lp_exploitability needs a result solved from the model's start")
    disc = discretise(res.model, res.grid, inputs=res.inputs)
    with PathSweeps(disc, "sl", SolverOptions()) as sweeps:
        return exploitability(sweeps, np.asarray(price, dtype=float), np.asarray(mean_liquidity, dtype=float),
                              np.ascontiguousarray(res.exit_prob))


def _shock_windows(t0: float, t1: float, shock: float) -> dict[str, tuple[float, float]]:
    """The windows around the main shock at ``shock``: before it, the shock (9 months), the recovery (the
    next 1.5 years) and after it, each cut to the statistics window ``[t0, t1]``."""
    cuts = {"pre": (t0, shock), "shock": (shock, shock + 0.75), "recovery": (shock + 0.75, shock + 2.25),
            "late": (shock + 2.25, t1)}
    return {k: (max(a, t0), min(b, t1)) for k, (a, b) in cuts.items() if min(b, t1) - max(a, t0) > 1e-9}


def _main_shock(events) -> float | None:
    """The time of the events that hit hardest (largest summed ``|liquidity_shift| + capital_cut``; the first
    such time on a tie, the first event when none shifts liquidity or cuts capital)."""
    if not events:
        return None
    size: dict[float, float] = {}
    for e in events:
        size[float(e.time)] = size.get(float(e.time), 0.0) + abs(e.liquidity_shift) + e.capital_cut
    top = max(size.values())
    return min(t for t, v in size.items() if v == top)


def _lp_quantities(t0: float, t1: float, times: Sequence[float], shock: float | None) -> list[Quantity]:
    """The LP quantities over the statistics window ``[t0, t1]``; with a shock at ``shock``, the price
    error also in windows around it (docs/convergence.md)."""
    win = (t0, t1)
    qs = [Quantity("P_sup", "price", "sup", window=win), Quantity("P_avg", "price", "avg", window=win),
          Quantity("P_mean", "price", "mean", window=win), Quantity("F(T)", "exited", "final", window=win)]
    if shock is not None:
        cuts = _shock_windows(t0, t1, shock)
        for label, w in cuts.items():
            qs.append(Quantity(f"P_avg[{label}]", "price", "avg", window=w))
        for label in ("shock", "recovery"):
            if label in cuts:
                qs.append(Quantity(f"P_mean[{label}]", "price", "mean", window=cuts[label]))
        times = tuple(sorted({(b - t0) / (t1 - t0) for _, b in cuts.values()}))
    for f in times:
        if 0.0 <= f <= 1.0:
            tt = t0 + float(f) * (t1 - t0)
            qs.append(Quantity(f"M({tt:g})", "mean_liquidity", "at", at=tt))
    return qs


def _lp_diagnostics(t: np.ndarray, price: np.ndarray, window: tuple[float, float], P_cap: float,
                    shock: float | None):
    """Per-N market numbers over the statistics window: stakes sold per step (``N`` times the NAV sold per
    step, a stake being about ``1/N`` of the NAV) and the share of steps priced at the cap; with a shock,
    the worst replication's mean price gap to the MFG over the shock and over the recovery window (a
    replication on another equilibrium branch, a freeze, would show there as a large negative gap)."""
    tol = 1e-9 * max(1.0, float(np.max(np.abs(t))))
    sel = (t >= window[0] - tol) & (t < window[1] - tol)
    cuts = _shock_windows(window[0], window[1], shock) if shock is not None else {}
    masks = {k: (t >= a - tol) & (t < b - tol) for k, (a, b) in cuts.items()}

    def diagnostics(paths: Mapping[str, np.ndarray], n_agents: int) -> dict:
        sold = np.diff(paths["exited"], axis=1)[:, sel[:-1]]
        out = {"stakes_per_step": float(n_agents * np.mean(sold)),
               "price_at_cap": float(np.mean(paths["price"][:, sel] >= P_cap * (1 - 1e-12)))}
        for label in ("shock", "recovery"):
            if label in masks:
                m = masks[label]
                out[f"worst_{label}_gap"] = float(np.min(np.mean(paths["price"][:, m] - price[m], axis=1)))
        return out

    return diagnostics


def lp_market(scenario: str = "convergence", transition: str = "two-point", n_L: int | None = None,
              dt: float | None = None, times: Sequence[float] = (0.25, 0.5, 0.75, 1.0), window: str = "report",
              epsilon: bool = False) -> FiniteNModel:
    """The finite-N LP market (:func:`abm.lp_market.engine.simulate`) with the MFG policy of ``scenario``.

    ``scenario``: a shipped name or a TOML path (default: ``convergence``, the calm clearing
    market on 1601 nodes, dt = 1/13); a scenario with shock events is solved by
    :func:`mfg.lp_exit.scenarios.solve_scenario` and its events happen in the market too.
    ``n_L``, ``dt`` override its grid; ``transition``: ``"two-point"`` (the solver's own step:
    the default here) or ``"exact"`` (the exact OU step, an O(dt) gap).  ``window``:
    ``"report"`` (the statistics over the scenario's ``[report]`` window, if it has one) or
    ``"all"``.  Series: ``price`` (``P^n``), ``exited`` (NAV-weighted fraction of LPs that have
    sold before ``t_n``: ``F``), ``mean_liquidity`` (``M^n``), ``buyer_capital`` (``K^n``),
    ``sell_flow`` (volume).  Quantities: ``P_sup``, ``P_avg``, ``P_mean``, ``F(T)`` (``T``: the
    window's end) and ``M(t)`` at the fractions ``times`` of the window; with shock events the
    price error also before, during (9 months), after (1.5 years) and long after the
    main shock (the events that shift liquidity and cut capital most).  ``epsilon``: attach the
    epsilon-Nash bounds (:mod:`experiments.epsilon_nash`; scenarios without events).
    """
    from abm.lp_market.engine import TRANSITIONS, simulate

    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    if window not in ("report", "all"):
        raise ValueError(f"window must be 'report' or 'all', got {window!r}")
    sc, res, meta = _lp_solution_cached(str(scenario), n_L, dt)
    ref = _lp_reference(res)
    n_t = res.t.size
    t0, t1 = sc.report_window if window == "report" else (float(res.t[0]), float(res.t[-1]))
    events = tuple(getattr(res, "events", ()) or ())
    shock = _main_shock(events)

    def run(n_agents: int, n_reps: int, seed) -> pd.DataFrame:
        sim = simulate(sc.model, res, n_agents=int(n_agents), n_reps=int(n_reps), seed=seed, transition=transition,
                       threads=_worker_threads())
        exited = np.einsum("k,rkn->rn", sim.weights, sim.exited_mass)
        return pd.DataFrame({"replication": np.repeat(np.arange(n_reps), n_t), "t": np.tile(res.t, n_reps),
                             "price": sim.price.ravel(), "exited": exited.ravel(),
                             "mean_liquidity": sim.mean_liquidity.ravel(), "buyer_capital": sim.buyer_capital.ravel(),
                             "sell_flow": sim.sell_flow.ravel()})

    qs = _lp_quantities(t0, t1, times, shock)
    expl = bounds = None
    if not events:
        def expl(mean_paths: pd.DataFrame) -> float:
            return lp_exploitability(res, mean_paths["price"].to_numpy(), mean_paths["mean_liquidity"].to_numpy())
    if epsilon:
        if events:
            raise ValueError("the epsilon-Nash bounds take a scenario without shock events")
        from .epsilon_nash import EpsilonNash

        bounds = EpsilonNash(res)
    P_cap = float(getattr(sc.model.market, "P_cap", math.inf))
    name = Path(str(scenario)).stem
    mfg_expl = meta["exploitability"] if not events else math.nan
    its = meta["iterations"]
    info = (f"LP-exit market (docs/model.md 2.8), scenario {name} ({sc.model.market.kind} market): "
            f"{len(sc.model.populations)} populations, {res.t[0]:g} to {res.t[-1]:g}"
            + (f", events at {sorted({e.time for e in events})} (main shock {shock:g})" if events else "")
            + f", statistics over {t0:g}-{t1:g}; grid {res.L.size} x {n_t} (dt = {res.dt:.4g}), temperature "
            f"{sc.solver.temperature:g}; MFG policy by P1 interpolation at each LP's L; transition {transition!r}; "
            f"MFG: {its} iterations" + (f", exploitability {mfg_expl:.2e}" if not events else ""),)
    return FiniteNModel(name="lp", simulate=run, references={"mfg": ref}, quantities=tuple(qs), exploitability=expl,
                        cost=lambda n: 7e-8 * n * n_t + 2e-3, info=info, mfg_exploitability=float(mfg_expl),
                        epsilon=bounds, diagnostics=_lp_diagnostics(res.t, res.price, (t0, t1), P_cap, shock))


# --------------------------------------------------------------------------- the price-formation market


@functools.lru_cache(maxsize=4)
def _pf_setup(test: int, rho: float, h: float, reference_size: int):
    from abm.price_formation.market import simulate_price_formation_market
    from abm.price_formation.sampling import p1_density
    from mfg.price_formation import solve

    from .finite_n_price import law_coefficient
    from .price_formation_paper import paper_test

    pt = paper_test(test)
    problem = pt.problem
    mfg = solve(problem, rho=rho, h=h, tol=1e-9)
    density = p1_density(problem.initial_density, problem.domain)
    m = int(reference_size)
    holdings = density.quantile((np.arange(m) + 0.5) / m)
    ref = simulate_price_formation_market(problem, rho=rho, h=h, holdings=holdings, tol=1e-9, initial_price=mfg.price)
    coef = float(np.max(np.abs(law_coefficient(pt.exact, ref.price_times))))
    return pt, mfg, ref, coef, math.sqrt(density.variance)


def price_formation_market(test: int = 1, rho: float = 0.02, h: float = 0.04,
                           reference_size: int = 20_000) -> FiniteNModel:
    """The N-trader price-formation market of docs/model.md 1.5 (:mod:`abm.price_formation.market`).

    As in :func:`experiments.finite_n_price.finite_n_table`: each market is the N-trader
    equilibrium on the ``(rho, h)`` mesh, started from the reference price, stopped at
    ``TOL_FRACTION`` of the law's predicted deviation; the mean-field reference
    (``"mfg"``) is the particle market on ``reference_size`` quantile holdings of ``m_0``
    (the particle scheme's limit); the nodal solver is a second reference (``"nodal"``),
    ``O(rho)`` away: the quantity ``P_sup_nodal`` against it shows a floor.  Series:
    ``price`` (on ``t_0..t_{K-1}``, NaN at ``t_K``), ``mean_holding``.  Quantities: ``P_sup``,
    ``P_avg``, ``P_mean``, ``X(0)`` (``xbar^N_0 - xbar_0``: the law's driver),
    ``P_sup_nodal``.
    """
    from abm.price_formation.market import simulate_price_formation_market

    from .finite_n_price import TOL_FRACTION

    pt, mfg, ref, coef, sd = _pf_setup(int(test), float(rho), float(h), int(reference_size))
    t = ref.t
    n_t = t.size

    def pad(price):
        return np.append(price, np.nan)

    reference = pd.DataFrame({"t": t, "price": pad(ref.price), "mean_holding": ref.mean_holding})
    nodal = pd.DataFrame({"t": t, "price": pad(mfg.price), "mean_holding": np.full(n_t, np.nan)})

    def run(n_agents: int, n_reps: int, seed) -> pd.DataFrame:
        predicted = coef * sd / math.sqrt(n_agents)
        tol = TOL_FRACTION * predicted if predicted > 0 else 1e-8
        price = np.empty((n_reps, n_t))
        hold = np.empty((n_reps, n_t))
        for r, ss in enumerate(seed.spawn(n_reps)):
            res = simulate_price_formation_market(pt.problem, rho=rho, h=h, n_traders=int(n_agents), seed=ss, tol=tol,
                                                  initial_price=ref.price)
            price[r] = pad(res.price)
            hold[r] = res.mean_holding
        return pd.DataFrame({"replication": np.repeat(np.arange(n_reps), n_t), "t": np.tile(t, n_reps),
                             "price": price.ravel(), "mean_holding": hold.ravel()})

    qs = (Quantity("P_sup", "price", "sup"), Quantity("P_avg", "price", "avg"), Quantity("P_mean", "price", "mean"),
          Quantity("X(0)", "mean_holding", "at", at=float(t[0])),
          Quantity("P_sup_nodal", "price", "sup", reference="nodal"))
    gap = float(np.max(np.abs(ref.price - mfg.price)))
    info = (f"price-formation market (docs/model.md 1.5), paper test {test}, rho = {rho:g}, h = {h:g}; reference: the "
            f"particle market on {reference_size} quantile holdings (nodal solver {gap:.2e} away in sup norm); "
            f"law: RMSE of P_sup = {coef * sd:.4f}/sqrt(N)",)
    steps = n_t - 1
    return FiniteNModel(name="pf", simulate=run, references={"mfg": reference, "nodal": nodal}, quantities=qs,
                        cost=lambda n: 5e-7 * steps * n + 2e-3, info=info)


# --------------------------------------------------------------------------- built-in models and builders

#: The step of ``lp-exact-fine``: the exact OU step refined until no floor is resolved above the
#: statistical error at N = 1e5 (docs/convergence.md, "The exact step without a floor").
EXACT_FINE_DT = 1.0 / 52.0

#: The liquidity grid of ``lp-2008``: crisis_2008.toml's range on 673 nodes (dL = 1/160; its own 169 nodes
#: leave a projection floor in the finite-N comparison, docs/convergence.md).
CRISIS_N_L = 673

#: Built-in models: name -> (factory, options).  ``lp``: the calm clearing market with the solver's
#: step (and the epsilon-Nash bounds); ``lp-exact``: the exact OU step on the same grid (an O(dt)
#: floor); ``lp-exact-fine``: the exact step at dt = 1/52; ``lp-2008``: the 2008 crisis scenario
#: with its events on a fine liquidity grid; ``pf``: the price-formation market.
BUILTIN_MODELS: dict[str, tuple[str, dict]] = {
    "lp": ("experiments.convergence:lp_market", {"scenario": "convergence", "transition": "two-point",
                                                 "epsilon": True}),
    "lp-exact": ("experiments.convergence:lp_market", {"scenario": "convergence", "transition": "exact"}),
    "lp-exact-fine": ("experiments.convergence:lp_market", {"scenario": "convergence", "transition": "exact",
                                                            "dt": EXACT_FINE_DT}),
    "lp-2008": ("experiments.convergence:lp_market", {"scenario": "crisis_2008", "transition": "two-point",
                                                      "n_L": CRISIS_N_L}),
    "pf": ("experiments.convergence:price_formation_market", {"test": 1, "rho": 0.02, "h": 0.04}),
}


def _import(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"a model factory is named 'package.module:function', got {spec!r}")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@functools.lru_cache(maxsize=16)
def _build(factory: str, options_json: str) -> FiniteNModel:
    model = _import(factory)(**json.loads(options_json))
    if not isinstance(model, FiniteNModel):
        raise TypeError(f"{factory} returned a {type(model).__name__}, not a FiniteNModel")
    return model


def build_model(spec: Sequence) -> FiniteNModel:
    """The :class:`FiniteNModel` of ``(factory, options)`` (memoised per process)."""
    factory, options = spec
    return _build(str(factory), json.dumps(dict(options), sort_keys=True))
