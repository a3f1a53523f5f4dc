"""The O(1/sqrt(N)) convergence study: finite-N markets against their mean-field limits.

For each model (the LP-exit market of docs/model.md 2.8 run with the MFG policy, the
price-formation market of docs/model.md 1.5, or a user's own finite-N market), each size ``N``
on a log grid and ``R_N`` replications, the finite market's paths are compared with the
mean-field solution: per replication a set of *quantities* (``sup_t |P^N - P|``, the
time average of ``|P^N - P|``, ``F^N(T) - F(T)``, ``M^N(t) - M(t)`` at set times, ...),
then per ``N`` their root mean square (RMSE) and mean (bias) with seeded percentile
bootstrap intervals, and per quantity

* the log-log slope of the RMSE against ``N`` over a range of ``N`` (``-1/2`` for a pure
  statistical error), with a bootstrap interval;
* the fit ``error^2(N) = b^2 + C^2/N`` (weighted least squares on the mean squares, ``b,
  C >= 0``) that separates a discretisation *floor* ``b`` (a gap between the finite
  market's dynamics and the solver's that does not vanish with ``N``) from the
  statistical constant ``C``; ``n_cross = (C/b)^2`` is the size from which the floor
  dominates;
* for signed quantities, the exponent ``s`` of ``bias(N) = a N^s`` fitted to the biases of
  all sizes (weighted by their inverse variances): ``-1`` for the ``O(1/N)`` bias of
  docs/model.md 2.8;

and, for the LP market, the exploitability of the MFG policy in the N-player game: the
gain of one LP who deviates to the hard best response against the N-market's mean price
and mean-field paths (:func:`lp_exploitability`).

The study runs on :func:`experiments.runner.run_sweep`: one task per ``(model, n, block,
reps)`` (a block of replications), seeded by its key; the output folder is the sweep
folder (``manifest.json``, ``tasks/*.parquet``), so an interrupted study resumes, and a
re-run recomputes nothing.  Tasks store the raw paths (the *path frame*, below); every
number is computed from them by :func:`analyse`.

The path frame (what a finite-N simulator returns)
--------------------------------------------------
One row per (replication, time): ``replication`` (int, ``0..n_reps-1``), ``t`` (float,
the reference's time grid, in its order, the same for every replication) and one float
column per *series* of the reference (LP: ``price``, ``exited``, ``mean_liquidity``;
price formation: ``price``, ``mean_holding``).  Values must be finite wherever the
reference is finite (a NaN in the reference, e.g. the price-formation price at ``t_K``,
marks a time where the series is not defined).  A model is a :class:`FiniteNModel`:
``simulate(n_agents, n_reps, seed)`` returning that frame, the ``reference`` frame
(``t`` and the series: the mean-field limit), the :class:`Quantity` list, and optionally
an ``exploitability(mean_paths)``.  A user's model is named by an importable factory
``"package.module:function"`` that returns one (see docs/convergence.md).

Seeds: the runner gives each task ``SeedSequence(seed, spawn_key=key_words(key))``; the
simulators spawn replications from it.  Results depend on the study's seed and the task
keys only: not on the executor, the number of workers or the order of the tasks.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import multiprocessing
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .io import locks_folder

__all__ = [
    "Quantity",
    "FiniteNModel",
    "StudyConfig",
    "StudyResult",
    "BUILTIN_MODELS",
    "default_config",
    "quick_config",
    "demo_config",
    "plan_tasks",
    "convergence_task",
    "run_study",
    "analyse",
    "write_outputs",
    "summary_markdown",
    "convergence_figure",
    "lp_market",
    "price_formation_market",
    "lp_exploitability",
    "check_path_frame",
    "bootstrap_rmse_bias",
    "fit_slope",
    "fit_floor",
    "fit_power",
    "percentile_interval",
]

# --------------------------------------------------------------------------- quantities


@dataclass(frozen=True)
class Quantity:
    """One scalar per replication computed from a series' deviation ``d(t) = x^N(t) - x(t)``.

    ``kind``: ``"sup"`` (``max_t |d|``), ``"avg"`` (``mean_t |d|``), ``"mean"`` (``mean_t d``,
    signed), ``"at"`` (``d`` at the time step nearest ``at``, signed) or ``"final"`` (``d``
    at the last time where the reference is defined, signed).  Times where the reference
    is NaN are left out.  ``reference``: which of the model's reference frames ``x`` is
    taken from (``"mfg"``: the mean-field limit).
    """

    name: str
    series: str
    kind: str
    at: float | None = None
    reference: str = "mfg"

    def __post_init__(self):
        if self.kind not in ("sup", "avg", "mean", "at", "final"):
            raise ValueError(f"Quantity.kind must be sup, avg, mean, at or final, got {self.kind!r}")
        if (self.kind == "at") != (self.at is not None):
            raise ValueError("Quantity: give `at` exactly for kind='at'")

    @property
    def signed(self) -> bool:
        """Whether the quantity is a signed deviation (its mean is a bias) or a norm."""
        return self.kind in ("mean", "at", "final")


@dataclass(frozen=True, eq=False)
class FiniteNModel:
    """A finite-N market and its mean-field limit, as the study sees them (module docstring).

    simulate : ``(n_agents, n_reps, seed: numpy.random.SeedSequence) -> path frame``.
    references : ``{"mfg": frame, ...}``; each frame has ``t`` and the series columns.
    quantities : the :class:`Quantity` list.
    exploitability : optional ``(mean_paths: frame of t and the series) -> float``.
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


def _quantity_values(q: Quantity, paths: Mapping[str, np.ndarray], model: FiniteNModel) -> np.ndarray:
    """Per-replication values of ``q`` from ``paths[series]`` of shape ``(R, n_t)``."""
    ref = model.references[q.reference]
    x = ref[q.series].to_numpy(dtype=float)
    t = ref["t"].to_numpy(dtype=float)
    ok = np.isfinite(x)
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


# --------------------------------------------------------------------------- statistics


def percentile_interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds of bootstrap ``samples`` at confidence ``level``."""
    a = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(samples, [a, 100 - a], axis=axis)
    return lo, hi


def _resample(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, R)`` bootstrap resamples of ``values`` (replications drawn with replacement)."""
    r = values.size
    return values[rng.integers(0, r, size=(n_boot, r))]


def bootstrap_rmse_bias(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed=0) -> dict[str, float]:
    """RMSE ``sqrt(mean(v^2))`` and bias ``mean(v)`` of per-replication values with
    seeded percentile bootstrap intervals (replications resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boot = _resample(v, n_boot, rng)
    rmse_b = np.sqrt(np.mean(boot**2, axis=1))
    bias_b = np.mean(boot, axis=1)
    rlo, rhi = percentile_interval(rmse_b, level)
    blo, bhi = percentile_interval(bias_b, level)
    return {"rmse": float(np.sqrt(np.mean(v**2))), "rmse_lo": float(rlo), "rmse_hi": float(rhi),
            "bias": float(np.mean(v)), "bias_lo": float(blo), "bias_hi": float(bhi)}


def fit_slope(n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares slope of ``log y`` on ``log n``.

    ``y`` may be ``(k,)`` or ``(B, k)`` (one fit per row, e.g. bootstrap draws); ``weights``
    ``(k,)`` are inverse variances of ``log y`` (default equal).  Returns the slope(s).
    """
    x = np.log(np.asarray(n, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    xm = np.sum(w * x)
    dx = x - xm
    sxx = np.sum(w * dx * dx)
    ym = np.sum(w * ly, axis=-1, keepdims=True)
    return np.sum(w * dx * (ly - ym), axis=-1) / sxx


def fit_power(n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
              exponents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit the signed values ``y(N) = a N^s`` by weighted least squares; returns ``(a, s)``.

    Used for the bias, whose sign is kept and whose noise is weighted by ``weights``
    (inverse variances), so sizes where the bias is not resolved count for little and
    no size is selected by its value.  ``s`` is searched on the grid ``exponents``
    (default ``-2..0`` in steps of 0.005; for each ``s`` the best ``a`` is explicit).
    ``y`` may be ``(k,)`` or ``(B, k)``.
    """
    x = np.asarray(n, dtype=float)
    yy = np.atleast_2d(np.asarray(y, dtype=float))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    s_grid = np.linspace(-2.0, 0.0, 401) if exponents is None else np.asarray(exponents, dtype=float)
    basis = x[None, :] ** s_grid[:, None]  # (S, k)
    num = (yy * w) @ basis.T  # (B, S)
    den = (w * basis * basis).sum(axis=1)  # (S,)
    a = num / den
    loss = (w * yy * yy).sum(axis=1)[:, None] - a * num  # sum w (y - a x^s)^2 at the best a
    j = np.argmin(loss, axis=1)
    a_best = a[np.arange(yy.shape[0]), j]
    s_best = s_grid[j]
    if np.ndim(y) == 1:
        return a_best[0], s_best[0]
    return a_best, s_best


def fit_floor(n: np.ndarray, mse: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``mse(N) = b^2 + C^2 / N`` by weighted least squares with ``b^2, C^2 >= 0``.

    ``mse`` ``(k,)`` or ``(B, k)``; ``weights`` ``(k,)`` inverse variances of ``mse``.  Returns
    ``(b, C)`` (arrays of the leading shape).  The constrained minimum of a 2-parameter
    convex quadratic: the unconstrained one if both are >= 0, else the better of the two
    one-parameter fits on the faces.
    """
    inv = 1.0 / np.asarray(n, dtype=float)
    y = np.atleast_2d(np.asarray(mse, dtype=float))
    w = np.ones_like(inv) if weights is None else np.asarray(weights, dtype=float)
    s1, sx, sxx = w.sum(), (w * inv).sum(), (w * inv * inv).sum()
    sy = (w * y).sum(axis=1)
    sxy = (w * inv * y).sum(axis=1)
    det = s1 * sxx - sx * sx
    b2 = (sxx * sy - sx * sxy) / det
    c2 = (s1 * sxy - sx * sy) / det
    # faces: b2 = 0 (C^2 alone) and C2 = 0 (b^2 alone)
    c2_only = np.maximum(sxy / sxx, 0.0)
    b2_only = np.maximum(sy / s1, 0.0)

    def loss(b2_, c2_):
        r = y - b2_[:, None] - c2_[:, None] * inv[None, :]
        return (w * r * r).sum(axis=1)

    inside = (b2 >= 0) & (c2 >= 0)
    zero = np.zeros_like(b2)
    l1 = loss(zero, c2_only)
    l2 = loss(b2_only, zero)
    b2 = np.where(inside, b2, np.where(l1 <= l2, 0.0, b2_only))
    c2 = np.where(inside, c2, np.where(l1 <= l2, c2_only, 0.0))
    b, c = np.sqrt(b2), np.sqrt(c2)
    if np.ndim(mse) == 1:
        return b[0], c[0]
    return b, c


# --------------------------------------------------------------------------- built-in models


def _lp_solution(scenario: str, n_L: int | None, dt: float | None):
    """(scenario, MFG solution) for the LP model; memoised per process (the solve is deterministic)."""
    return _lp_solution_cached(str(scenario), n_L, dt)


@functools.lru_cache(maxsize=4)
def _lp_solution_cached(scenario: str, n_L, dt):
    from mfg.lp_exit import solve
    from mfg.lp_exit.params import load_scenario

    from .lp_exit_report import resolve_scenario

    sc = load_scenario(resolve_scenario(scenario))
    if sc.events:
        raise ValueError(f"scenario {scenario!r} has shock events; the convergence study takes a scenario without")
    grid = sc.grid
    upd = {}
    if n_L is not None:
        upd["n_L"] = int(n_L)
    if dt is not None:
        upd["dt"] = float(dt)
    if upd:
        grid = grid.model_copy(update=upd)
    res = solve(sc.model, grid, sc.solver)
    if not res.converged:
        raise RuntimeError(f"the MFG fixed point of {scenario!r} did not converge (residual {res.residuals[-1]:.3g})")
    return sc, res


def _lp_reference(res) -> pd.DataFrame:
    return pd.DataFrame({"t": res.t, "price": res.price, "exited": res.model.weights @ res.exited_mass,
                         "mean_liquidity": res.mean_liquidity})


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
    exploitability of the MFG policy in the N-player game.  Needs a result solved from
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


def lp_market(scenario: str = "convergence", transition: str = "two-point", n_L: int | None = None,
              dt: float | None = None, times: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> FiniteNModel:
    """The finite-N LP market (:func:`abm.lp_market.engine.simulate`) with the MFG policy of ``scenario``.

    ``scenario``: a shipped name or a TOML path (default: ``convergence``, the calm
    market on 1601 nodes, dt = 1/13); ``n_L``, ``dt`` override its grid; ``transition``:
    ``"two-point"`` (the solver's own step: the default here) or ``"exact"`` (the exact OU
    step, an O(dt) gap).  Series: ``price`` (``P^n``), ``exited`` (NAV-weighted fraction of
    LPs that have sold before ``t_n``: ``F``), ``mean_liquidity`` (``M^n``).  Quantities:
    ``P_sup``, ``P_avg``, ``P_mean``, ``F(T)``, and ``M(t)`` at the fractions ``times`` of
    the window.
    """
    from abm.lp_market.engine import TRANSITIONS, simulate

    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    sc, res = _lp_solution(scenario, n_L, dt)
    ref = _lp_reference(res)
    t0, t1 = float(res.t[0]), float(res.t[-1])
    n_t = res.t.size

    def run(n_agents: int, n_reps: int, seed) -> pd.DataFrame:
        sim = simulate(sc.model, res, n_agents=int(n_agents), n_reps=int(n_reps), seed=seed, transition=transition,
                       threads=_worker_threads())
        exited = np.einsum("k,rkn->rn", sim.weights, sim.exited_mass)
        return pd.DataFrame({
            "replication": np.repeat(np.arange(n_reps), n_t),
            "t": np.tile(res.t, n_reps),
            "price": sim.price.ravel(),
            "exited": exited.ravel(),
            "mean_liquidity": sim.mean_liquidity.ravel(),
        })

    qs = [Quantity("P_sup", "price", "sup"), Quantity("P_avg", "price", "avg"), Quantity("P_mean", "price", "mean"),
          Quantity("F(T)", "exited", "final")]
    for f in times:
        tt = t0 + float(f) * (t1 - t0)
        qs.append(Quantity(f"M({tt:g})", "mean_liquidity", "at", at=tt))

    def expl(mean_paths: pd.DataFrame) -> float:
        return lp_exploitability(res, mean_paths["price"].to_numpy(), mean_paths["mean_liquidity"].to_numpy())

    name = Path(str(scenario)).stem
    info = (f"LP-exit market (docs/model.md 2.8), scenario {name}: {len(sc.model.populations)} populations, "
            f"{t0:g} to {t1:g}, grid {res.L.size} x {n_t} (dt = {res.dt:.4g}), temperature "
            f"{sc.solver.temperature:g}; MFG policy q(t_n, L) by P1 interpolation; transition {transition!r}; "
            f"MFG: {res.iterations} iterations, residual {res.residuals[-1]:.1e}, exploitability "
            f"{res.exploitability:.2e}",)
    return FiniteNModel(name="lp", simulate=run, references={"mfg": ref}, quantities=tuple(qs), exploitability=expl,
                        cost=lambda n: 8e-9 * n * n_t + 2e-3, info=info, mfg_exploitability=float(res.exploitability))


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


#: Built-in models: name -> (factory, options).  ``lp-exact`` runs the exact OU step (an
#: O(dt) floor against the solver), for measuring that floor.
BUILTIN_MODELS: dict[str, tuple[str, dict]] = {
    "lp": ("experiments.convergence:lp_market", {"scenario": "convergence", "transition": "two-point"}),
    "lp-exact": ("experiments.convergence:lp_market", {"scenario": "convergence", "transition": "exact"}),
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


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs.

    models : ``{name: (factory "module:function", options dict)}``.
    ns : sizes ``N`` per model (``{name: (N, ...)}``); reps : ``{name: {N: R}}``.
    task_seconds : target work per task (a block of replications), from the model's cost.
    slope_range : ``(N_min, N_max)`` of the RMSE slope fit (the floor fit uses every N).
    tail_range : the same for the ``tail_slope`` (the largest sizes: the asymptotic rate).
    n_boot, level : bootstrap draws and confidence level.   seed : the sweep's seed.
    """

    models: Mapping[str, tuple[str, Mapping[str, Any]]]
    ns: Mapping[str, tuple[int, ...]]
    reps: Mapping[str, Mapping[int, int]]
    seed: int = 20261122
    task_seconds: float = 2.0
    slope_range: tuple[float, float] = (1e2, 1e5)
    tail_range: tuple[float, float] = (1e3, 1e6)
    n_boot: int = 2000
    level: float = 0.95
    label: str = "default"

    def with_models(self, names: Sequence[str]) -> "StudyConfig":
        """The same study restricted (or extended, for built-in names) to ``names``."""
        models, ns, reps = {}, {}, {}
        for name in names:
            if name in self.models:
                models[name], ns[name], reps[name] = self.models[name], self.ns[name], self.reps[name]
            elif name in BUILTIN_MODELS:
                base = "lp" if name.startswith("lp") else "pf"
                models[name] = BUILTIN_MODELS[name]
                src = base if base in self.ns else next(iter(self.ns))
                ns[name], reps[name] = self.ns[src], self.reps[src]
            else:
                raise ValueError(f"unknown model {name!r}; built-in: {', '.join(BUILTIN_MODELS)}")
        return replace(self, models=models, ns=ns, reps=reps)


def _log_grid(lo: int, hi: int, per_decade: int = 2) -> tuple[int, ...]:
    k = round(per_decade * math.log10(hi / lo))
    return tuple(int(round(lo * 10 ** (i / per_decade))) for i in range(k + 1))


def _reps(ns, budget: float, r_min: int, r_max: int) -> dict[int, int]:
    """``R(N) = clip(budget / N, r_min, r_max)``: many replications where they are cheap."""
    return {n: int(min(r_max, max(r_min, round(budget / n)))) for n in ns}


def default_config() -> StudyConfig:
    """The default study: LP market N = 1e2..1e6, price formation N = 1e2..1e5, half-decade grids."""
    lp_ns = _log_grid(100, 10**6)
    pf_ns = _log_grid(100, 10**5)
    return StudyConfig(
        models={"lp": BUILTIN_MODELS["lp"], "pf": BUILTIN_MODELS["pf"]},
        ns={"lp": lp_ns, "pf": pf_ns},
        reps={"lp": _reps(lp_ns, 6.4e6, 16, 1024), "pf": _reps(pf_ns, 8e5, 12, 512)},
        label="default",
    )


def quick_config() -> StudyConfig:
    """A reduced study (N up to 1e5, fewer replications): under a minute."""
    lp_ns = _log_grid(100, 10**5)
    pf_ns = _log_grid(100, 10**5)
    return StudyConfig(
        models={"lp": BUILTIN_MODELS["lp"], "pf": BUILTIN_MODELS["pf"]},
        ns={"lp": lp_ns, "pf": pf_ns},
        reps={"lp": _reps(lp_ns, 1.6e6, 16, 128), "pf": _reps(pf_ns, 2e5, 4, 128)},
        n_boot=1000,
        label="quick",
    )


def demo_config() -> StudyConfig:
    """The small study of ``gelav demo``: the LP market, N = 1e2..1e4, a few seconds."""
    ns = _log_grid(100, 10**4)
    return StudyConfig(models={"lp": BUILTIN_MODELS["lp"]}, ns={"lp": ns}, reps={"lp": _reps(ns, 3.2e5, 32, 64)},
                       slope_range=(1e2, 1e4), tail_range=(1e3, 1e4), n_boot=500, label="demo")


def plan_tasks(config: StudyConfig, models: Mapping[str, FiniteNModel] | None = None) -> list[dict]:
    """Task keys ``{model, n, block, reps}``: each N's replications cut into blocks of about
    ``config.task_seconds`` of work (by the model's cost estimate); the most expensive first.
    ``models``: the built models (default: built here, memoised per process)."""
    if models is None:
        models = {name: build_model(spec) for name, spec in config.models.items()}
    keys = []
    for name in config.models:
        cost = models[name].cost
        for n in config.ns[name]:
            total = int(config.reps[name][n])
            per = max(1, min(total, int(config.task_seconds / max(cost(n), 1e-12))))
            n_blocks = math.ceil(total / per)
            base, extra = divmod(total, n_blocks)
            for b in range(n_blocks):
                keys.append({"model": name, "n": int(n), "block": b, "reps": base + (1 if b < extra else 0)})
    keys.sort(key=lambda k: -models[k["model"]].cost(k["n"]) * k["reps"])
    return keys


def convergence_task(key: Mapping[str, Any], seed: np.random.SeedSequence, *,
                     models: Mapping[str, Sequence]) -> pd.DataFrame:
    """Runner task: ``key["reps"]`` markets of ``key["n"]`` agents of model ``key["model"]``.

    Returns the checked path frame (module docstring); the runner adds the key columns.
    """
    model = build_model(models[key["model"]])
    frame = model.simulate(int(key["n"]), int(key["reps"]), seed)
    return check_path_frame(frame, model.reference, int(key["reps"]))


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class StudyResult:
    """Tables of a study (see :func:`analyse`) and where they were written."""

    convergence: pd.DataFrame
    slopes: pd.DataFrame
    exploitability: pd.DataFrame
    values: pd.DataFrame = field(repr=False)
    config: StudyConfig = field(repr=False)
    info: dict = field(default_factory=dict)
    summary: str = ""
    files: tuple[Path, ...] = ()
    done: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _paths(sub: pd.DataFrame, model: FiniteNModel) -> dict[str, np.ndarray]:
    """``{series: (R, n_t)}`` from one N's rows (blocks and replications in order)."""
    n_t = len(model.reference)
    sub = sub.sort_values(["block", "replication", "t"], kind="stable")
    r = len(sub) // n_t
    return {s: sub[s].to_numpy(dtype=float).reshape(r, n_t) for s in model.series}


def analyse(frame: pd.DataFrame, config: StudyConfig, models: Mapping[str, FiniteNModel]) -> StudyResult:
    """All tables from the sweep's path frames.

    ``convergence``: one row per (model, quantity, N): ``replications, rmse, rmse_lo,
    rmse_hi, bias, bias_lo, bias_hi, bias_resolved`` (the bias interval excludes 0).
    ``slopes``: one row per (model, quantity): ``slope, slope_lo, slope_hi`` (RMSE, over
    ``config.slope_range``), ``floor, constant`` (``b, C``) with their intervals,
    ``tail_slope`` with its interval (over ``config.tail_range``),
    ``n_cross = (C/b)^2``, ``bias_slope`` with its interval (the exponent of ``bias = a N^s``
    fitted to the signed biases of all sizes, :func:`fit_power`; NaN for norms and where
    fewer than three sizes resolve the bias), ``bias_points`` (sizes whose bias interval
    excludes 0), ``signed``.
    ``exploitability``: one row per (model, N) for models that define it: the gain against
    the N-market's mean paths, the MFG's own (against its own paths), their difference
    ``excess``, and ``max_t |mean P^N - P|`` with the standard error of that mean.
    ``values``: the per-replication quantity values (long form).
    Bootstrap draws are seeded from ``config.seed``; slopes and fits are refitted on every
    draw (replications resampled within each N, independently across N).
    """
    level, n_boot = config.level, config.n_boot
    conv_rows, slope_rows, expl_rows, value_frames = [], [], [], []
    for mi, name in enumerate(config.models):
        model = models[name]
        sub_m = frame[frame["model"] == name]
        ns = [n for n in config.ns[name] if (sub_m["n"] == n).any()]
        if not ns:
            continue
        vals: dict[str, dict[int, np.ndarray]] = {q.name: {} for q in model.quantities}
        for n in ns:
            paths = _paths(sub_m[sub_m["n"] == n], model)
            r = next(iter(paths.values())).shape[0]
            for q in model.quantities:
                v = _quantity_values(q, paths, model)
                vals[q.name][n] = v
                value_frames.append(pd.DataFrame({"model": name, "quantity": q.name, "n": n,
                                                  "replication": np.arange(r), "value": v}))
            if model.exploitability is not None:
                mean_paths = pd.DataFrame({"t": model.reference["t"].to_numpy(),
                                           **{s: p.mean(axis=0) for s, p in paths.items()}})
                p_ref = model.reference["price"].to_numpy() if "price" in model.series else None
                gap = se = math.nan
                if p_ref is not None:
                    ok = np.isfinite(p_ref)
                    d = paths["price"][:, ok] - p_ref[ok]
                    j = int(np.argmax(np.abs(d.mean(axis=0))))
                    gap = float(np.abs(d.mean(axis=0))[j])
                    se = float(d[:, j].std(ddof=1) / math.sqrt(r)) if r > 1 else math.nan
                gain = float(model.exploitability(mean_paths))
                expl_rows.append({"model": name, "n": n, "replications": r, "exploitability": gain,
                                  "mfg_exploitability": model.mfg_exploitability,
                                  "excess": gain - model.mfg_exploitability,
                                  "mean_price_gap": gap, "mean_price_gap_se": se})
        for qi, q in enumerate(model.quantities):
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(mi, qi)))
            n_arr = np.array(ns, dtype=float)
            k = len(ns)
            mse_b = np.empty((n_boot, k))
            bias_b = np.empty((n_boot, k))
            mse = np.empty(k)
            mse_var = np.empty(k)
            bias = np.empty(k)
            for j, n in enumerate(ns):
                v = vals[q.name][n]
                boot = _resample(v, n_boot, rng)
                mse_b[:, j] = np.mean(boot**2, axis=1)
                bias_b[:, j] = np.mean(boot, axis=1)
                mse[j] = np.mean(v**2)
                bias[j] = np.mean(v)
                mse_var[j] = np.var(v**2, ddof=1) / v.size if v.size > 1 else np.nan
                rlo, rhi = percentile_interval(np.sqrt(mse_b[:, j]), level)
                blo, bhi = percentile_interval(bias_b[:, j], level)
                if not q.signed:  # the mean of a norm is not a bias
                    blo = bhi = math.nan
                conv_rows.append({"model": name, "quantity": q.name, "n": n, "replications": v.size,
                                  "rmse": math.sqrt(mse[j]), "rmse_lo": float(rlo), "rmse_hi": float(rhi),
                                  "bias": bias[j] if q.signed else math.nan, "bias_lo": float(blo),
                                  "bias_hi": float(bhi), "bias_resolved": bool(blo > 0 or bhi < 0)})
            # RMSE slope over the slope range: ordinary least squares in log-log (each N counts
            # once: weighting by the replications would let the cheap small-N points, where
            # pre-asymptotic effects live, decide the slope)
            sel = (n_arr >= config.slope_range[0] * (1 - 1e-9)) & (n_arr <= config.slope_range[1] * (1 + 1e-9))
            row = {"model": name, "quantity": q.name}
            if sel.sum() >= 2 and np.all(mse[sel] > 0):
                s_hat = float(fit_slope(n_arr[sel], np.sqrt(mse[sel])))
                with np.errstate(divide="ignore", invalid="ignore"):
                    s_b = fit_slope(n_arr[sel], np.sqrt(mse_b[:, sel]))
                lo, hi = percentile_interval(s_b[np.isfinite(s_b)], level)
                row.update(slope=s_hat, slope_lo=float(lo), slope_hi=float(hi))
            else:
                row.update(slope=math.nan, slope_lo=math.nan, slope_hi=math.nan)
            # the same over the tail range (the largest sizes): the asymptotic rate
            tail = (n_arr >= config.tail_range[0] * (1 - 1e-9)) & (n_arr <= config.tail_range[1] * (1 + 1e-9))
            if tail.sum() >= 2 and np.all(mse[tail] > 0):
                s_t = float(fit_slope(n_arr[tail], np.sqrt(mse[tail])))
                with np.errstate(divide="ignore", invalid="ignore"):
                    s_tb = fit_slope(n_arr[tail], np.sqrt(mse_b[:, tail]))
                lo, hi = percentile_interval(s_tb[np.isfinite(s_tb)], level)
                row.update(tail_slope=s_t, tail_slope_lo=float(lo), tail_slope_hi=float(hi))
            else:
                row.update(tail_slope=math.nan, tail_slope_lo=math.nan, tail_slope_hi=math.nan)
            # floor fit on every N: weights = inverse variances of the mean squares
            w_mse = np.where(np.isfinite(mse_var) & (mse_var > 0), 1.0 / mse_var, 0.0)
            if k >= 2 and np.count_nonzero(w_mse) >= 2:
                b, c = fit_floor(n_arr, mse, w_mse)
                b_b, c_b = fit_floor(n_arr, mse_b, w_mse)
                blo, bhi = percentile_interval(b_b, level)
                clo, chi = percentile_interval(c_b, level)
                row.update(floor=float(b), floor_lo=float(blo), floor_hi=float(bhi), constant=float(c),
                           constant_lo=float(clo), constant_hi=float(chi),
                           n_cross=float((c / b) ** 2) if b > 0 else math.inf)
            else:
                row.update(floor=math.nan, floor_lo=math.nan, floor_hi=math.nan, constant=math.nan,
                           constant_lo=math.nan, constant_hi=math.nan, n_cross=math.nan)
            # bias rate: bias(N) = a N^s fitted to the signed biases of every size, weighted by
            # their inverse bootstrap variances; reported where at least three sizes resolve it
            # (with fewer, one size decides and the exponent is not identified)
            blo_all, bhi_all = percentile_interval(bias_b, level)
            resolved = (blo_all > 0) | (bhi_all < 0)
            row["bias_points"] = int(resolved.sum()) if q.signed else 0
            bvar = np.var(bias_b, axis=0, ddof=1)
            if q.signed and resolved.sum() >= 3 and np.all(bvar > 0):
                _, s_hat = fit_power(n_arr, bias, 1.0 / bvar)
                _, sb = fit_power(n_arr, bias_b, 1.0 / bvar)
                lo, hi = percentile_interval(sb, level)
                row.update(bias_slope=float(s_hat), bias_slope_lo=float(lo), bias_slope_hi=float(hi))
            else:
                row.update(bias_slope=math.nan, bias_slope_lo=math.nan, bias_slope_hi=math.nan)
            row.update(signed=q.signed, n_min=float(n_arr[sel].min()) if sel.any() else math.nan,
                       n_max=float(n_arr[sel].max()) if sel.any() else math.nan)
            slope_rows.append(row)
    conv = pd.DataFrame(conv_rows)
    slopes = pd.DataFrame(slope_rows)
    lead = ["model", "quantity", "slope", "slope_lo", "slope_hi", "floor", "constant"]
    if len(slopes):
        slopes = slopes[lead + [c for c in slopes.columns if c not in lead]]
    expl = pd.DataFrame(expl_rows, columns=["model", "n", "replications", "exploitability", "mfg_exploitability",
                                            "excess", "mean_price_gap", "mean_price_gap_se"])
    values = pd.concat(value_frames, ignore_index=True) if value_frames else pd.DataFrame()
    info = {name: models[name].info for name in config.models}
    return StudyResult(convergence=conv, slopes=slopes, exploitability=expl, values=values, config=config, info=info)


# --------------------------------------------------------------------------- report


def _fmt_ci(v, lo, hi, fmt=".3f") -> str:
    if not np.isfinite(v):
        return "-"
    return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _rate_sentence(row) -> str:
    s, lo, hi = row["slope"], row["slope_lo"], row["slope_hi"]
    if not np.isfinite(s):
        return "too few sizes"
    parts = []
    ts, tlo, thi = (row.get(c, math.nan) for c in ("tail_slope", "tail_slope_lo", "tail_slope_hi"))
    if lo <= -0.5 <= hi:
        parts.append("RMSE ~ N^-1/2")
    elif np.isfinite(ts) and tlo <= -0.5 <= thi:
        parts.append(f"RMSE ~ N^-1/2 over the tail; {s:.2f} over the slope range (pre-asymptotic small N)")
    else:
        parts.append(f"RMSE slope {s:.2f} (interval excludes -1/2)")
    if np.isfinite(row.get("n_cross", math.nan)) and row["floor_lo"] > 0:
        parts.append(f"floor b resolved (dominates from N ~ {row['n_cross']:.1e})")
    if row["signed"]:
        if np.isfinite(row["bias_slope"]):
            bl, bh = row["bias_slope_lo"], row["bias_slope_hi"]
            if bh - bl > 0.8:
                tag = f"bias exponent not identified ({row['bias_slope']:.2f} [{bl:.2f}, {bh:.2f}])"
            elif bl <= -1 <= bh:
                tag = "bias ~ 1/N"
            elif bl <= 0 <= bh or bh > -0.05:
                tag = "bias constant in N (the floor)"
            else:
                tag = f"bias exponent {row['bias_slope']:.2f}"
            parts.append(f"{tag} (bias resolved at {row['bias_points']} sizes)")
        else:
            parts.append(f"bias resolved at {row['bias_points']} size(s) only")
    return "; ".join(parts)


def summary_markdown(result: StudyResult) -> str:
    """The study's summary as markdown (what the CLI prints and ``summary.md`` holds)."""
    cfg = result.config
    lines = [f"# Convergence study ({cfg.label})", ""]
    for name, info in result.info.items():
        ns = cfg.ns[name]
        reps = cfg.reps[name]
        lines.append(f"* **{name}**: " + " ".join(info))
        lines.append(f"  N = {', '.join(f'{n:.0e}' for n in ns)}; replications "
                     f"{', '.join(str(reps[n]) for n in ns)}")
    lines += ["", f"Intervals: {100 * cfg.level:g}% seeded percentile bootstrap ({cfg.n_boot} draws, replications "
              f"resampled within each N); RMSE slopes fitted over N in [{cfg.slope_range[0]:.0e}, "
              f"{cfg.slope_range[1]:.0e}], tail slopes over [{cfg.tail_range[0]:.0e}, {cfg.tail_range[1]:.0e}]; "
              "error^2 = b^2 + C^2/N fitted over all N; bias = a N^s fitted to the signed biases of all N.", ""]
    lines += ["| model | quantity | RMSE slope [95%] | tail slope [95%] | floor b [95%] | constant C [95%] "
              "| bias exponent [95%] | rates |",
              "|---|---|---|---|---|---|---|---|"]
    for _, r in result.slopes.iterrows():
        bias = (_fmt_ci(r["bias_slope"], r["bias_slope_lo"], r["bias_slope_hi"], ".2f")
                if np.isfinite(r["bias_slope"]) else "-")
        lines.append(f"| {r['model']} | {r['quantity']} | {_fmt_ci(r['slope'], r['slope_lo'], r['slope_hi'])} "
                     f"| {_fmt_ci(r['tail_slope'], r['tail_slope_lo'], r['tail_slope_hi'])} "
                     f"| {_fmt_ci(r['floor'], r['floor_lo'], r['floor_hi'], '.1e')} "
                     f"| {_fmt_ci(r['constant'], r['constant_lo'], r['constant_hi'], '.3g')} | {bias} "
                     f"| {_rate_sentence(r)} |")
    if len(result.exploitability):
        lines += ["", "Exploitability of the MFG policy in the N-player game (gain of one LP who best-responds "
                  "to the N-market's mean price and mean-field paths, NAV-weighted):", "",
                  "| model | N | replications | exploitability | MFG's own | excess | max_t abs(mean P^N - P) (SE) |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in result.exploitability.iterrows():
            lines.append(f"| {r['model']} | {r['n']:.0e} | {r['replications']} | {r['exploitability']:.3e} "
                         f"| {r['mfg_exploitability']:.3e} | {r['excess']:.1e} "
                         f"| {r['mean_price_gap']:.2e} ({r['mean_price_gap_se']:.1e}) |")
    lines += ["", "RMSE per N (bias in brackets where its interval excludes 0):", ""]
    conv = result.convergence
    for name in cfg.models:
        sub = conv[conv["model"] == name]
        if not len(sub):
            continue
        qnames = list(dict.fromkeys(sub["quantity"]))
        lines.append("| " + name + " N | " + " | ".join(qnames) + " |")
        lines.append("|---" * (len(qnames) + 1) + "|")
        for n in sorted(sub["n"].unique()):
            cells = []
            for qn in qnames:
                r = sub[(sub["n"] == n) & (sub["quantity"] == qn)].iloc[0]
                c = f"{r['rmse']:.2e}"
                if r["bias_resolved"]:
                    c += f" ({r['bias']:+.1e})"
                cells.append(c)
            lines.append(f"| {n:.0e} | " + " | ".join(cells) + " |")
        lines.append("")
    if result.seconds:
        lines.append(f"Wall time {result.seconds:.1f} s ({result.done} tasks run, {result.skipped} already done).")
    return "\n".join(lines).rstrip() + "\n"


def convergence_figure(result: StudyResult):
    """Log-log RMSE against N per model (bootstrap intervals, fitted slopes, a -1/2 reference),
    and the exploitability against N."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [n for n in result.config.models if (result.convergence["model"] == n).any()] \
        if len(result.convergence) else []
    has_expl = len(result.exploitability) > 0
    n_ax = len(names) + (1 if has_expl else 0)
    fig, axes = plt.subplots(1, max(n_ax, 1), figsize=(5.2 * max(n_ax, 1), 4.4), squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names):
        sub = result.convergence[result.convergence["model"] == name]
        sl = result.slopes[result.slopes["model"] == name].set_index("quantity")
        qnames = list(dict.fromkeys(sub["quantity"]))
        cmap = plt.get_cmap("tab10")
        lo_n, hi_n = result.config.slope_range
        for i, qn in enumerate(qnames):
            d = sub[sub["quantity"] == qn].sort_values("n")
            col = cmap(i % 10)
            s = sl.loc[qn]
            ax.errorbar(d["n"], d["rmse"], yerr=[d["rmse"] - d["rmse_lo"], d["rmse_hi"] - d["rmse"]], fmt="o",
                        ms=3.5, color=col, capsize=2, lw=1,
                        label=f"{qn}: {s['slope']:.3f} [{s['slope_lo']:.3f}, {s['slope_hi']:.3f}]")
            fit = d[(d["n"] >= lo_n * (1 - 1e-9)) & (d["n"] <= hi_n * (1 + 1e-9))]
            if len(fit) >= 2 and np.isfinite(s["slope"]):
                x = fit["n"].to_numpy(dtype=float)
                w = np.log(x)
                a = np.mean(np.log(fit["rmse"].to_numpy()) - s["slope"] * w)
                ax.plot(x, np.exp(a + s["slope"] * w), "-", color=col, lw=0.9, alpha=0.8)
            if np.isfinite(s["floor"]) and np.isfinite(s["constant"]):
                x = np.geomspace(d["n"].min(), d["n"].max(), 60)
                ax.plot(x, np.sqrt(s["floor"] ** 2 + s["constant"] ** 2 / x), ":", color=col, lw=0.8)
        all_n = np.array(sorted(sub["n"].unique()), dtype=float)
        top = sub.groupby("n")["rmse"].max().max()
        ax.plot(all_n, top * 1.6 * (all_n / all_n[0]) ** -0.5, "k--", lw=1.2, label="reference N^-1/2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (agents)")
        ax.set_ylabel("RMSE")
        ax.set_title(f"{name}: RMSE vs N (fitted slope [95%])", fontsize=10)
        ax.legend(fontsize=6.5, loc="lower left")
        ax.grid(True, which="both", alpha=0.25)
    if has_expl:
        ax = axes[len(names)]
        for i, (name, d) in enumerate(result.exploitability.groupby("model", sort=False)):
            col = plt.get_cmap("tab10")(i)
            ax.plot(d["n"], d["exploitability"], "o-", ms=4, color=col,
                    label=f"{name}: against the N-market's mean paths")
            ex = d[d["excess"] > 0]
            ax.plot(ex["n"], ex["excess"], "s:", ms=3.5, color=col, label=f"{name}: excess over the MFG's own")
            ax.axhline(d["mfg_exploitability"].iloc[0], ls="--", color=col, lw=0.8, alpha=0.6,
                       label=f"{name}: MFG's own ({d['mfg_exploitability'].iloc[0]:.2e})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (agents)")
        ax.set_ylabel("gain of a best-responding LP (NAV)")
        ax.set_title("exploitability of the MFG policy", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def write_outputs(result: StudyResult, out: str | Path, *, dpi: int = 110) -> StudyResult:
    """Write ``convergence.csv``, ``slopes.csv``, ``exploitability.csv``, ``summary.md`` and
    ``convergence.png`` into ``out`` (atomically); returns the result with ``files`` set."""
    import matplotlib.pyplot as plt

    from .io import save_figure, write_csv, write_text

    out = Path(out)
    files = [write_csv(out / "convergence.csv", result.convergence), write_csv(out / "slopes.csv", result.slopes),
             write_csv(out / "exploitability.csv", result.exploitability),
             write_text(out / "summary.md", result.summary or summary_markdown(result))]
    fig = convergence_figure(result)
    files.append(save_figure(out / "convergence.png", fig, dpi=dpi))
    plt.close(fig)
    return replace(result, files=tuple(files))


@locks_folder("out", what="convergence study")  # one run per folder; clears a killed run's temporaries
def run_study(config: StudyConfig | None = None, out: str | Path = "gelav-output/convergence", *,
              executor: str = "auto", n_workers: int | None = None, scheduler: str | None = None,
              overwrite: bool = False, progress: bool | None = None, write: bool = True,
              dpi: int = 110) -> StudyResult:
    """Run (or resume) the study in ``out`` on the runner and analyse it.

    ``executor``, ``n_workers``, ``scheduler``, ``overwrite``, ``progress``: as in
    :func:`experiments.runner.run_sweep`.  The sweep's parameters are the models'
    factories and options, so a folder holding another study is refused (``overwrite``
    discards it).  Returns a :class:`StudyResult`; with ``write`` the tables, the summary
    and the figure are written into ``out`` too.  Raises ``RuntimeError`` if tasks failed.
    """
    from .runner import run_sweep

    start = time.perf_counter()
    config = default_config() if config is None else config
    models = {name: build_model(spec) for name, spec in config.models.items()}
    keys = plan_tasks(config, models)
    params = {"models": {name: [spec[0], dict(spec[1])] for name, spec in config.models.items()}}
    sweep = run_sweep(convergence_task, keys, out, seed=config.seed, params=params, executor=executor,
                      n_workers=n_workers, scheduler=scheduler, overwrite=overwrite, progress=progress,
                      seed_as="seed_sequence")
    if sweep.failed:
        f = sweep.failures[0]
        raise RuntimeError(f"{sweep.failed} convergence task(s) failed, e.g. {f.key}: {f.error}\n{f.traceback}")
    result = analyse(sweep.frame, config, models)
    result = replace(result, done=sweep.done, skipped=sweep.skipped, seconds=time.perf_counter() - start)
    result = replace(result, summary=summary_markdown(result))
    if write:
        result = write_outputs(result, out, dpi=dpi)
        result = replace(result, seconds=time.perf_counter() - start)
        result = replace(result, summary=summary_markdown(result))
        from .io import write_text

        write_text(Path(out) / "summary.md", result.summary)
    return result
