"""The O(1/sqrt(N)) convergence study: finite-N markets against their mean-field limits.

For each model (the LP-exit market of docs/model.md 2.8 run with the MFG policy, on the calm
scenario or on the 2008 crisis scenario with its shocks, the price-formation market of
docs/model.md 1.5, or a user's own finite-N market), each size ``N`` on a log grid and ``R_N``
replications, the finite market's paths are compared with the mean-field solution: per
replication a set of *quantities* (``sup_t |P^N - P|``, the time average of ``|P^N - P|``,
``F^N(T) - F(T)``, ``M^N(t) - M(t)`` at set times, ..., over the scenario's report window),
then per ``N`` their root mean square (RMSE) and mean (bias) with seeded percentile bootstrap
intervals, and per quantity

* the log-log slope of the RMSE against ``N`` over a range of ``N`` (``-1/2`` for a pure
  statistical error), with a bootstrap interval, and the same over the thick-market range
  (``tail_range``);
* the fit ``error^2(N) = b^2 + C^2/N`` (weighted least squares on the mean squares, ``b,
  C >= 0``) that separates a discretisation *floor* ``b`` from the statistical constant ``C``;
  ``n_cross = (C/b)^2`` is the size from which the floor dominates;
* for signed quantities, the exponent ``s`` of ``bias(N) = a N^s`` fitted to the biases of
  all sizes (weighted by their inverse variances): ``-1`` for the ``O(1/N)`` bias of
  docs/model.md 2.8;

and, for the LP market, per ``N``: the epsilon-Nash bounds of the MFG policy (docs/model.md
2.9b, :mod:`experiments.epsilon_nash`: one tagged LP's best clairvoyant and best adapted
deviations, with intervals, their rates fitted), the exploitability against the N-market's
mean paths (an open-loop proxy), and the market's thickness (stakes sold per step).

The study runs on :func:`experiments.runner.run_sweep`: one task per ``(model, n, block,
reps)`` (a block of replications), seeded by its key; the output folder is the sweep folder
(``manifest.json``, ``tasks/*.parquet``), so an interrupted study resumes, and a re-run
recomputes nothing.  Tasks store the raw paths (the *path frame*, below) and, for block 0 of a
model with epsilon-Nash bounds, the tagged LP's gains on each of its replications; every number
is computed from them by :func:`analyse`.

The path frame (what a finite-N simulator returns)
--------------------------------------------------
One row per (replication, time): ``replication`` (int, ``0..n_reps-1``), ``t`` (float,
the reference's time grid, in its order, the same for every replication) and one float
column per *series* of the reference (LP: ``price``, ``exited``, ``mean_liquidity``,
``buyer_capital``, ``sell_flow``; price formation: ``price``, ``mean_holding``).  Values must
be finite wherever the reference is finite.  A model is a
:class:`~experiments.convergence_models.FiniteNModel`; a user's model is named by an
importable factory ``"package.module:function"`` that returns one (docs/convergence.md).

Seeds: the runner gives each task ``SeedSequence(seed, spawn_key=key_words(key))``; the
simulators spawn replications from it.  Results depend on the study's seed and the task
keys only: not on the executor, the number of workers or threads, or the order of the tasks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .convergence_models import (
    BUILTIN_MODELS,
    EXACT_FINE_DT,
    FiniteNModel,
    Quantity,
    _lp_solution,
    build_model,
    check_path_frame,
    lp_exploitability,
    lp_market,
    price_formation_market,
    quantity_values,
)
from .convergence_report import convergence_figure, epsilon_figure, summary_markdown, write_outputs
from .convergence_stats import (
    bootstrap_rmse_bias,
    fit_floor,
    fit_power,
    fit_slope,
    percentile_interval,
    resample,
)
from .epsilon_nash import epsilon_rates, epsilon_table
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
    "refinement_config",
    "plan_tasks",
    "convergence_task",
    "run_study",
    "analyse",
    "write_outputs",
    "summary_markdown",
    "convergence_figure",
    "epsilon_figure",
    "lp_market",
    "price_formation_market",
    "lp_exploitability",
    "check_path_frame",
    "quantity_values",
    "build_model",
    "bootstrap_rmse_bias",
    "fit_slope",
    "fit_floor",
    "fit_power",
    "percentile_interval",
    "EPS_COLUMNS",
]

_ = _lp_solution  # re-exported for the tests and notebooks (the memoised MFG solve of the LP model)

#: The tagged LP's per-replication gains in a task's frame (block 0 of a model with bounds).
EPS_COLUMNS = ("eps_fit", "eps_upper", "eps_open_loop", "eps_lower")

#: Seconds of backward sweeps per replication for the epsilon-Nash bounds (the calm market on 1601
#: nodes, one core): orders the tasks only.
EPS_SECONDS_PER_REP = 0.5


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StudyConfig:
    """What the study runs.

    models : ``{name: (factory "module:function", options dict)}``.
    ns : sizes ``N`` per model (``{name: (N, ...)}``); reps : ``{name: {N: R}}``.
    epsilon_reps : ``{name: R_eps}``: replications (the first block of each N, capped at
        ``R_N``) on which the epsilon-Nash bounds are computed, for models that have them
        (``lp_market(..., epsilon=True)``); half fit the adapted deviation, half evaluate it.
    task_seconds : target work per task (a block of replications), from the model's cost.
    slope_range : ``(N_min, N_max)`` of the RMSE slope fit.
    tail_range : the same for the ``tail_slope`` (the largest sizes: the asymptotic rate); the
        epsilon-Nash rates are fitted over it too.
    floor_range : ``(N_min, N_max)`` of the floor and bias-exponent fits (``None``: every N).
    thick_stakes : for models that report the stakes sold per step (the LP markets), the tail,
        floor and bias fits and the epsilon-Nash rates start no lower than the first N whose steps
        clear at least this many stakes on average (the thick market; ``None``: the ranges as given).
    n_boot, level : bootstrap draws and confidence level.   seed : the sweep's seed.
    """

    models: Mapping[str, tuple[str, Mapping[str, Any]]]
    ns: Mapping[str, tuple[int, ...]]
    reps: Mapping[str, Mapping[int, int]]
    seed: int = 20261122
    task_seconds: float = 2.0
    slope_range: tuple[float, float] = (1e2, 1e5)
    tail_range: tuple[float, float] = (1e3, 1e6)
    floor_range: tuple[float, float] | None = None
    thick_stakes: float | None = 1.0
    n_boot: int = 2000
    level: float = 0.95
    label: str = "default"
    epsilon_reps: Mapping[str, int] = field(default_factory=dict)

    def with_models(self, names: Sequence[str]) -> "StudyConfig":
        """The same study restricted (or extended, for built-in names) to ``names``."""
        models, ns, reps, eps = {}, {}, {}, {}
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
            r_eps = self.epsilon_reps.get(name, self.epsilon_reps.get("lp", 0))
            if r_eps and dict(models[name][1]).get("epsilon"):
                eps[name] = r_eps
        return replace(self, models=models, ns=ns, reps=reps, epsilon_reps=eps)


def _log_grid(lo: int, hi: int, per_decade: int = 2) -> tuple[int, ...]:
    k = round(per_decade * math.log10(hi / lo))
    return tuple(int(round(lo * 10 ** (i / per_decade))) for i in range(k + 1))


def _reps(ns, budget: float, r_min: int, r_max: int) -> dict[int, int]:
    """``R(N) = clip(budget / N, r_min, r_max)``: many replications where they are cheap."""
    return {n: int(min(r_max, max(r_min, round(budget / n)))) for n in ns}


#: The thick-market range of the calm LP market: from N ~ 3e3 a step clears more than one stake
#: (docs/convergence.md, "Thin markets"); tail slopes, floors and the epsilon-Nash rates are fitted over it.
THICK = (3e3, 1e5)


def default_config() -> StudyConfig:
    """The default study: the calm LP market (with the epsilon-Nash bounds), the 2008 crisis scenario
    and the price-formation market, N = 1e2..1e5 on half-decade grids (under 5 minutes on 2 cores)."""
    ns = _log_grid(100, 10**5)
    return StudyConfig(
        models={"lp": BUILTIN_MODELS["lp"], "lp-2008": BUILTIN_MODELS["lp-2008"], "pf": BUILTIN_MODELS["pf"]},
        ns={"lp": ns, "lp-2008": ns, "pf": ns},
        reps={"lp": _reps(ns, 5e5, 12, 1024), "lp-2008": _reps(ns, 1.5e5, 6, 1024), "pf": _reps(ns, 2e5, 4, 512)},
        epsilon_reps={"lp": 12}, tail_range=THICK, floor_range=THICK,
        label="default",
    )


def quick_config() -> StudyConfig:
    """A reduced study (the calm LP market with its bounds and the price-formation market, the same sizes,
    fewer replications; the 2008 scenario is left out: its MFG solve alone takes about 10 s per process):
    under a minute on 2 cores."""
    ns = _log_grid(100, 10**5)
    return StudyConfig(
        models={"lp": BUILTIN_MODELS["lp"], "pf": BUILTIN_MODELS["pf"]},
        ns={"lp": ns, "pf": ns},
        reps={"lp": _reps(ns, 5e4, 3, 128), "pf": _reps(ns, 2e4, 2, 64)},
        epsilon_reps={"lp": 4}, tail_range=THICK, floor_range=THICK,
        n_boot=1000,
        label="quick",
    )


def refinement_config(dt: float = EXACT_FINE_DT, budget: float = 4e5) -> StudyConfig:
    """The calm LP market with the exact OU step at the step ``dt`` (docs/convergence.md, "The exact step
    without a floor"): N = 1e2..1e5, floors and tail slopes over the thick range.  One model, ``lp-exact``
    (at the shipped dt = 1/13) or ``lp-exact-dt<1/dt>``; run one step per study (the MFG's tables at
    dt = 1/52 take 2.2 GB per process)."""
    ns = _log_grid(100, 10**5)
    opts = {"scenario": "convergence", "transition": "exact"}
    name = "lp-exact"
    if abs(dt - 1.0 / 13.0) > 1e-12:
        opts["dt"] = float(dt)
        name = f"lp-exact-dt{round(1.0 / dt)}"
    return StudyConfig(models={name: (BUILTIN_MODELS["lp"][0], opts)}, ns={name: ns},
                       reps={name: _reps(ns, budget, 16, 512)}, tail_range=THICK, floor_range=THICK,
                       label=f"exact step, dt = 1/{round(1.0 / dt)}")


def demo_config() -> StudyConfig:
    """The small study of ``gelav demo``: the calm LP market over one decade of the thick-market regime,
    N = 10^3.5..10^4.5 (below N ~ 2e3 a step clears less than one stake: docs/convergence.md), a few
    seconds, without the epsilon-Nash bounds."""
    ns = tuple(n for n in _log_grid(100, 10**5) if 3000 <= n <= 40_000)
    spec = (BUILTIN_MODELS["lp"][0], {"scenario": "convergence", "transition": "two-point"})
    return StudyConfig(models={"lp": spec}, ns={"lp": ns}, reps={"lp": _reps(ns, 5e4, 4, 16)},
                       slope_range=(3e3, 4e4), tail_range=(3e3, 4e4), n_boot=500, label="demo")


def plan_tasks(config: StudyConfig, models: Mapping[str, FiniteNModel] | None = None) -> list[dict]:
    """Task keys ``{model, n, block, reps}``: each N's replications cut into blocks of about
    ``config.task_seconds`` of work (by the model's cost estimate), the most expensive first.  For a
    model with epsilon-Nash bounds, block 0 of each N holds the ``min(R_N, epsilon_reps)``
    replications on which they are computed.  ``models``: the built models (default: built here,
    memoised per process)."""
    if models is None:
        models = {name: build_model(spec) for name, spec in config.models.items()}
    keys = []
    for name in config.models:
        cost = models[name].cost
        r_eps = _epsilon_reps(config, name, models[name])
        for n in config.ns[name]:
            total = int(config.reps[name][n])
            first = min(total, r_eps) if r_eps else 0
            if first:
                keys.append({"model": name, "n": int(n), "block": 0, "reps": first})
            rest = total - first
            if rest <= 0:
                continue
            per = max(1, min(rest, int(config.task_seconds / max(cost(n), 1e-12))))
            n_blocks = math.ceil(rest / per)
            base, extra = divmod(rest, n_blocks)
            for b in range(n_blocks):
                keys.append({"model": name, "n": int(n), "block": b + (1 if first else 0),
                             "reps": base + (1 if b < extra else 0)})

    def work(k):
        r_eps = _epsilon_reps(config, k["model"], models[k["model"]])
        extra = EPS_SECONDS_PER_REP * k["reps"] if (r_eps and k["block"] == 0) else 0.0  # the bounds' sweeps
        return models[k["model"]].cost(k["n"]) * k["reps"] + extra

    keys.sort(key=lambda k: -work(k))
    return keys


def _epsilon_reps(config: StudyConfig, name: str, model: FiniteNModel) -> int:
    return int(config.epsilon_reps.get(name, 0)) if model.epsilon is not None else 0


def convergence_task(key: Mapping[str, Any], seed: np.random.SeedSequence, *,
                     models: Mapping[str, Sequence], epsilon: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Runner task: ``key["reps"]`` markets of ``key["n"]`` agents of model ``key["model"]``.

    Returns the checked path frame (module docstring); the runner adds the key columns.  For
    block 0 of a model named in ``epsilon`` (with bounds), the tagged LP's gains on each
    replication are added as the columns :data:`EPS_COLUMNS` (constant over a replication's rows).
    """
    model = build_model(models[key["model"]])
    n, reps = int(key["n"]), int(key["reps"])
    frame = check_path_frame(model.simulate(n, reps, seed), model.reference, reps)
    if epsilon and epsilon.get(key["model"]) and key["block"] == 0 and model.epsilon is not None:
        n_t = len(model.reference)
        paths = {s: frame[s].to_numpy(dtype=float).reshape(reps, n_t) for s in model.series}
        gains = model.epsilon(paths, n)
        frame = frame.assign(**{
            "eps_fit": np.repeat((gains["set"] == "fit").to_numpy(dtype=float), n_t),
            "eps_upper": np.repeat(gains["upper"].to_numpy(dtype=float), n_t),
            "eps_open_loop": np.repeat(gains["open_loop"].to_numpy(dtype=float), n_t),
            "eps_lower": np.repeat(gains["lower"].to_numpy(dtype=float), n_t)})
    return frame


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
    epsilon: pd.DataFrame = field(default_factory=pd.DataFrame)
    epsilon_rates: pd.DataFrame = field(default_factory=pd.DataFrame)
    markets: pd.DataFrame = field(default_factory=pd.DataFrame)


def _paths(sub: pd.DataFrame, model: FiniteNModel) -> dict[str, np.ndarray]:
    """``{series: (R, n_t)}`` from one N's rows (blocks and replications in order)."""
    n_t = len(model.reference)
    sub = sub.sort_values(["block", "replication", "t"], kind="stable")
    r = len(sub) // n_t
    return {s: sub[s].to_numpy(dtype=float).reshape(r, n_t) for s in model.series}


def _gains(sub: pd.DataFrame) -> pd.DataFrame | None:
    """The tagged LP's gains of one N (block 0), one row per replication, or ``None``."""
    if "eps_upper" not in sub.columns:
        return None
    b0 = sub[(sub["block"] == 0) & sub["eps_upper"].notna()]
    if not len(b0):
        return None
    first = b0.sort_values(["replication", "t"], kind="stable").groupby("replication", sort=True).head(1)
    return pd.DataFrame({"replication": first["replication"].to_numpy(),
                         "set": np.where(first["eps_fit"].to_numpy() > 0.5, "fit", "eval"),
                         "upper": first["eps_upper"].to_numpy(), "open_loop": first["eps_open_loop"].to_numpy(),
                         "lower": first["eps_lower"].to_numpy()})


def _mean_path_row(name: str, n: int, r: int, paths, model: FiniteNModel) -> dict:
    """The exploitability against the N-market's mean paths, and the largest mean price gap (with its SE)."""
    mean_paths = pd.DataFrame({"t": model.reference["t"].to_numpy(), **{s: p.mean(axis=0) for s, p in paths.items()}})
    gap = se = math.nan
    if "price" in model.series:
        p_ref = model.reference["price"].to_numpy()
        ok = np.isfinite(p_ref)
        d = paths["price"][:, ok] - p_ref[ok]
        j = int(np.argmax(np.abs(d.mean(axis=0))))
        gap = float(np.abs(d.mean(axis=0))[j])
        se = float(d[:, j].std(ddof=1) / math.sqrt(r)) if r > 1 else math.nan
    gain = float(model.exploitability(mean_paths))
    return {"model": name, "n": n, "replications": r, "exploitability": gain,
            "mfg_exploitability": model.mfg_exploitability, "excess": gain - model.mfg_exploitability,
            "mean_price_gap": gap, "mean_price_gap_se": se}


def _slope_fits(row: dict, n_arr, mse, mse_b, sel, prefix: str, level: float) -> None:
    """RMSE slope over the sizes ``sel`` (ordinary least squares in log-log, each N once), with the
    percentile interval of the slopes refitted on every bootstrap draw, into ``row``."""
    cols = (f"{prefix}slope", f"{prefix}slope_lo", f"{prefix}slope_hi")
    if sel.sum() >= 2 and np.all(mse[sel] > 0):
        s_hat = float(fit_slope(n_arr[sel], np.sqrt(mse[sel])))
        with np.errstate(divide="ignore", invalid="ignore"):
            s_b = fit_slope(n_arr[sel], np.sqrt(mse_b[:, sel]))
        lo, hi = percentile_interval(s_b[np.isfinite(s_b)], level)
        row.update(zip(cols, (s_hat, float(lo), float(hi))))
    else:
        row.update(zip(cols, (math.nan,) * 3))


def _in_range(n_arr, rng) -> np.ndarray:
    return (n_arr >= rng[0] * (1 - 1e-9)) & (n_arr <= rng[1] * (1 + 1e-9))


def _quantity_analysis(name: str, q: Quantity, ns, vals: Mapping[int, np.ndarray], config: StudyConfig,
                       rng: np.random.Generator, tail_range, floor_range) -> tuple[list[dict], dict]:
    """``convergence.csv`` rows of one quantity (one per N) and its ``slopes.csv`` row."""
    level, n_boot = config.level, config.n_boot
    n_arr = np.array(ns, dtype=float)
    k = len(ns)
    mse_b, bias_b = np.empty((n_boot, k)), np.empty((n_boot, k))
    mse, mse_var, bias = np.empty(k), np.empty(k), np.empty(k)
    rows = []
    for j, n in enumerate(ns):
        v = vals[n]
        boot = resample(v, n_boot, rng)
        mse_b[:, j] = np.mean(boot**2, axis=1)
        bias_b[:, j] = np.mean(boot, axis=1)
        mse[j], bias[j] = np.mean(v**2), np.mean(v)
        mse_var[j] = np.var(v**2, ddof=1) / v.size if v.size > 1 else np.nan
        rlo, rhi = percentile_interval(np.sqrt(mse_b[:, j]), level)
        blo, bhi = percentile_interval(bias_b[:, j], level)
        if not q.signed:  # the mean of a norm is not a bias
            blo = bhi = math.nan
        rows.append({"model": name, "quantity": q.name, "n": n, "replications": v.size, "rmse": math.sqrt(mse[j]),
                     "rmse_lo": float(rlo), "rmse_hi": float(rhi), "bias": bias[j] if q.signed else math.nan,
                     "bias_lo": float(blo), "bias_hi": float(bhi), "bias_resolved": bool(blo > 0 or bhi < 0)})
    row = {"model": name, "quantity": q.name}
    # each N counts once: weighting by the replications would let the cheap small-N points decide the slope
    _slope_fits(row, n_arr, mse, mse_b, _in_range(n_arr, config.slope_range), "", level)
    _slope_fits(row, n_arr, mse, mse_b, _in_range(n_arr, tail_range), "tail_", level)
    fl = _in_range(n_arr, floor_range) if floor_range is not None else np.ones(k, dtype=bool)
    w_mse = np.where(np.isfinite(mse_var) & (mse_var > 0) & fl, 1.0 / mse_var, 0.0)
    if k >= 2 and np.count_nonzero(w_mse) >= 2:
        b, c = fit_floor(n_arr, mse, w_mse)
        b_b, c_b = fit_floor(n_arr, mse_b, w_mse)
        blo, bhi = percentile_interval(b_b, level)
        clo, chi = percentile_interval(c_b, level)
        row.update(floor=float(b), floor_lo=float(blo), floor_hi=float(bhi), constant=float(c),
                   constant_lo=float(clo), constant_hi=float(chi), n_cross=float((c / b) ** 2) if b > 0 else math.inf)
    else:
        row.update(floor=math.nan, floor_lo=math.nan, floor_hi=math.nan, constant=math.nan, constant_lo=math.nan,
                   constant_hi=math.nan, n_cross=math.nan)
    # bias rate: bias(N) = a N^s fitted to the signed biases of the sizes of the floor range (inverse
    # bootstrap variances); reported where at least three of them resolve it (with fewer, one size decides)
    blo_all, bhi_all = percentile_interval(bias_b, level)
    resolved = (blo_all > 0) | (bhi_all < 0)
    row["bias_points"] = int(resolved.sum()) if q.signed else 0
    bvar = np.var(bias_b, axis=0, ddof=1)
    w_bias = np.where(fl & (bvar > 0), 1.0 / np.where(bvar > 0, bvar, 1.0), 0.0)
    if q.signed and (resolved & fl).sum() >= 3 and np.count_nonzero(w_bias) >= 3:
        _, s_hat = fit_power(n_arr, bias, w_bias)
        _, sb = fit_power(n_arr, bias_b, w_bias)
        lo, hi = percentile_interval(sb, level)
        row.update(bias_slope=float(s_hat), bias_slope_lo=float(lo), bias_slope_hi=float(hi))
    else:
        row.update(bias_slope=math.nan, bias_slope_lo=math.nan, bias_slope_hi=math.nan)
    sel = _in_range(n_arr, config.slope_range)
    tl = _in_range(n_arr, tail_range)
    row.update(signed=q.signed, n_min=float(n_arr[sel].min()) if sel.any() else math.nan,
               n_max=float(n_arr[sel].max()) if sel.any() else math.nan,
               tail_n_min=float(n_arr[tl].min()) if tl.any() else math.nan,
               fit_n_min=float(n_arr[fl].min()) if fl.any() else math.nan)
    return rows, row


def _thick_ranges(config: StudyConfig, markets: list[dict]):
    """The tail and floor ranges of one model, their lower ends raised to the first N whose steps clear at least
    ``config.thick_stakes`` stakes (``markets``: the model's per-N diagnostics)."""
    tail, floor = config.tail_range, config.floor_range
    if config.thick_stakes is None or not markets or "stakes_per_step" not in markets[0]:
        return tail, floor
    thick = [m["n"] for m in markets if m["stakes_per_step"] >= config.thick_stakes]
    if not thick:
        return tail, floor
    lo = float(min(thick))
    return ((max(tail[0], lo), tail[1]), None if floor is None else (max(floor[0], lo), floor[1]))


def _model_analysis(mi: int, name: str, model: FiniteNModel, sub_m: pd.DataFrame, config: StudyConfig) -> dict:
    """Every table's rows of one model."""
    out = {"conv": [], "slopes": [], "expl": [], "markets": [], "values": [], "gains": {}}
    ns = [n for n in config.ns[name] if (sub_m["n"] == n).any()]
    vals: dict[str, dict[int, np.ndarray]] = {q.name: {} for q in model.quantities}
    for n in ns:
        sub = sub_m[sub_m["n"] == n]
        paths = _paths(sub, model)
        r = next(iter(paths.values())).shape[0]
        for q in model.quantities:
            v = quantity_values(q, paths, model)
            vals[q.name][n] = v
            out["values"].append(pd.DataFrame({"model": name, "quantity": q.name, "n": n,
                                               "replication": np.arange(r), "value": v}))
        if model.exploitability is not None:
            out["expl"].append(_mean_path_row(name, n, r, paths, model))
        if model.diagnostics is not None:
            out["markets"].append({"model": name, "n": n, "replications": r, **model.diagnostics(paths, n)})
        g = _gains(sub)
        if g is not None:
            out["gains"][n] = g
    tail_range, floor_range = _thick_ranges(config, out["markets"])
    out["tail_range"] = tail_range
    for qi, q in enumerate(model.quantities):
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(mi, qi)))
        rows, row = _quantity_analysis(name, q, ns, vals[q.name], config, rng, tail_range, floor_range)
        out["conv"] += rows
        out["slopes"].append(row)
    return out


def analyse(frame: pd.DataFrame, config: StudyConfig, models: Mapping[str, FiniteNModel]) -> StudyResult:
    """All tables from the sweep's path frames.

    ``convergence``: one row per (model, quantity, N): ``replications, rmse, rmse_lo,
    rmse_hi, bias, bias_lo, bias_hi, bias_resolved`` (the bias interval excludes 0).
    ``slopes``: one row per (model, quantity): ``slope, slope_lo, slope_hi`` (RMSE, over
    ``config.slope_range``), ``floor, constant`` (``b, C``) with their intervals,
    ``tail_slope`` with its interval (over ``config.tail_range``), ``n_cross = (C/b)^2``,
    ``bias_slope`` with its interval (the exponent of ``bias = a N^s`` fitted to the signed
    biases of the sizes in ``config.floor_range``; NaN for norms and where fewer than three of
    them resolve the bias), ``bias_points`` (sizes whose bias interval excludes 0), ``signed``,
    ``n_min, n_max`` (the slope range's sizes), ``tail_n_min``, ``fit_n_min`` (the smallest size
    of the tail and of the floor fits: for the LP markets no lower than the first thick size,
    ``config.thick_stakes``).
    ``exploitability``: one row per (model, N) for models that define it: the gain against the
    N-market's mean paths, the MFG's own, their difference ``excess``, and ``max_t |mean P^N - P|``
    with its standard error.  ``epsilon``: one row per (model, N) with bounds
    (:func:`experiments.epsilon_nash.epsilon_table`); ``epsilon_rates``: their rates
    (:func:`experiments.epsilon_nash.epsilon_rates`).  ``markets``: per (model, N) the model's
    diagnostics (LP: stakes sold per step, share of steps at the price cap).  ``values``: the
    per-replication quantity values (long form).  Bootstrap draws are seeded from
    ``config.seed``; slopes and fits are refitted on every draw (replications resampled within
    each N, independently across N).
    """
    parts = {"conv": [], "slopes": [], "expl": [], "markets": [], "values": []}
    eps_tables, eps_rates = [], []
    for mi, name in enumerate(config.models):
        model = models[name]
        out = _model_analysis(mi, name, model, frame[frame["model"] == name], config)
        for key in parts:
            parts[key] += out[key]
        if out["gains"]:
            rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(mi, 10_000)))
            table, draws = epsilon_table(out["gains"], name, model.mfg_exploitability, n_boot=config.n_boot,
                                         level=config.level, rng=rng)
            eps_tables.append(table)
            eps_rates.append(epsilon_rates(table, draws, level=config.level, n_range=out["tail_range"]))
    slopes = pd.DataFrame(parts["slopes"])
    lead = ["model", "quantity", "slope", "slope_lo", "slope_hi", "floor", "constant"]
    if len(slopes):
        slopes = slopes[lead + [c for c in slopes.columns if c not in lead]]
    expl = pd.DataFrame(parts["expl"], columns=["model", "n", "replications", "exploitability", "mfg_exploitability",
                                                "excess", "mean_price_gap", "mean_price_gap_se"])
    values = pd.concat(parts["values"], ignore_index=True) if parts["values"] else pd.DataFrame()
    info = {name: models[name].info for name in config.models}
    concat = (lambda fs: pd.concat(fs, ignore_index=True) if fs else pd.DataFrame())  # noqa: E731
    return StudyResult(convergence=pd.DataFrame(parts["conv"]), slopes=slopes, exploitability=expl, values=values,
                       config=config, info=info, epsilon=concat(eps_tables), epsilon_rates=concat(eps_rates),
                       markets=pd.DataFrame(parts["markets"]))


@locks_folder("out", what="convergence study")  # one run per folder; clears a killed run's temporaries
def run_study(config: StudyConfig | None = None, out: str | Path = "gelav-output/convergence", *,
              executor: str = "auto", n_workers: int | None = None, scheduler: str | None = None,
              overwrite: bool = False, progress: bool | None = None, write: bool = True,
              dpi: int = 110) -> StudyResult:
    """Run (or resume) the study in ``out`` on the runner and analyse it.

    ``executor``, ``n_workers``, ``scheduler``, ``overwrite``, ``progress``: as in
    :func:`experiments.runner.run_sweep`.  The sweep's parameters are the models' factories
    and options and the epsilon-Nash replications, so a folder holding another study is refused
    (``overwrite`` discards it).  Returns a :class:`StudyResult`; with ``write`` the tables, the
    summary and the figures are written into ``out`` too.  Raises ``RuntimeError`` if tasks failed.
    """
    from .runner import run_sweep

    start = time.perf_counter()
    config = default_config() if config is None else config
    models = {name: build_model(spec) for name, spec in config.models.items()}
    keys = plan_tasks(config, models)
    params = {"models": {name: [spec[0], dict(spec[1])] for name, spec in config.models.items()}}
    eps = {name: int(r) for name, r in config.epsilon_reps.items() if name in models and _epsilon_reps(config, name,
                                                                                                         models[name])}
    if eps:
        params["epsilon"] = eps
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
