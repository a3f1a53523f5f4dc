"""What the dashboard computes, without any UI (docs/dashboard.md).

* Scenarios: :func:`shipped_scenario` (a file of ``mfg/lp_exit/library``) and
  :func:`scenario_from_upload` (a TOML file's bytes); bad input raises
  :class:`DashboardInputError` with the one line the command line prints for the same file
  (:func:`experiments.cli.load_scenario_or_exit`).
* The user's shock, :class:`Shock`: at ``time`` (a step of the grid), a liquidity shift of the
  LPs hit (its *size*), a cut of buyer capital, and its *breadth*: the populations hit and
  the share of their LPs hit.  :func:`shocked_scenario` turns it into a
  :class:`~mfg.lp_exit.ShockEvent` of the scenario (docs/model.md 2.7).  A share below 1
  splits each population hit into two identical populations, ``name`` (NAV weight
  ``(1 - share) w``) and ``name (hit)`` (``share * w``), and the event hits the second: two
  identical populations of weights summing to ``w`` give the equilibrium of the one (they
  face the same price, capital and mean field), so the split changes nothing but who is hit.
* :func:`run`: the equilibrium (:func:`mfg.lp_exit.scenarios.solve_scenario`) and the
  finite-N market (:func:`abm.simulate` with the equilibrium's policy, the same events), each
  from an LRU cache (:class:`LRUCache`) keyed by the scenario's content (SHA-256 of its JSON)
  and the shock, resp. by the equilibrium's key and ``N``, replications, seed.  It is a
  generator: it yields :class:`Progress` (what is running) and then an :class:`Outcome` or a
  :class:`Failure` (one line, never a traceback).  One computation runs at a time in the
  process (:data:`COMPUTE_LOCK`: numba's thread pool and two shared cores are not for sharing).
* :func:`summary_rows`, :func:`exits_by_type`, :func:`paths_frame`, :func:`paths_csv`,
  :func:`paths_parquet`: what the page shows and lets the user download.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
import time
import tomllib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable, Hashable, Iterator

import numpy as np
import pandas as pd

__all__ = [
    "DashboardInputError",
    "Shock",
    "Request",
    "Progress",
    "Outcome",
    "Failure",
    "LRUCache",
    "COMPUTE_LOCK",
    "EQUILIBRIA",
    "SIMULATIONS",
    "HIT_SUFFIX",
    "MAX_UPLOAD_BYTES",
    "shipped_names",
    "shipped_scenario",
    "scenario_from_upload",
    "scenario_key",
    "default_shock_time",
    "snap_time",
    "shocked_scenario",
    "nav_share_hit",
    "run",
    "one_line",
    "exits_by_type",
    "aggregate_density",
    "summary_rows",
    "paths_frame",
    "paths_csv",
    "paths_parquet",
]

#: Suffix of the population that a shock of breadth below 1 hits (the split-off share).
HIT_SUFFIX = " (hit)"

#: Largest scenario file accepted by :func:`scenario_from_upload`.
MAX_UPLOAD_BYTES = 1 << 20

#: Equilibria kept (a shipped scenario's is 3-40 MB with its densities).
EQUILIBRIUM_CACHE_SIZE = 8

#: Finite-N markets kept.
SIMULATION_CACHE_SIZE = 16


class DashboardInputError(ValueError):
    """Bad user input: a scenario file that is not TOML or not a valid scenario, a shock the scenario refuses.
    ``str(exc)`` is the one line the page shows."""


# ----------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------


def shipped_names() -> list[str]:
    """Names of the shipped scenarios (``gelav scenarios``), sorted."""
    from mfg.lp_exit.params import shipped_scenarios

    return list(shipped_scenarios())


@lru_cache(maxsize=32)
def shipped_scenario(name: str):
    """``(Scenario, description)`` of a shipped scenario; :class:`DashboardInputError` for an unknown or bad one."""
    from mfg.lp_exit.params import shipped_scenarios

    shipped = shipped_scenarios()
    if name not in shipped:
        raise DashboardInputError(f"no shipped scenario named {name!r} (shipped: {', '.join(shipped) or 'none'})")
    path, description = shipped[name]
    return _parse(path.read_bytes(), str(path)), description


def _parse(data: bytes, label: str):
    """A validated :class:`~mfg.lp_exit.params.Scenario` from TOML bytes; errors worded as the CLI's."""
    import pydantic

    from mfg.lp_exit.params import Scenario

    from ..cli import _pydantic_message

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DashboardInputError(f"{label}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DashboardInputError(f"{label}: not valid TOML: {' '.join(str(exc).split())}") from None
    try:
        return Scenario.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise DashboardInputError(f"{label}: {_pydantic_message(exc, raw)}") from None


def scenario_from_upload(filename: str, data: bytes):
    """A validated scenario from an uploaded file's bytes (``filename`` names it in errors)."""
    label = filename or "upload"
    if len(data) > MAX_UPLOAD_BYTES:
        raise DashboardInputError(f"{label}: {len(data)} bytes; a scenario file has at most "
                                  f"{MAX_UPLOAD_BYTES} bytes")
    return _parse(bytes(data), label)


def scenario_key(scenario) -> str:
    """SHA-256 of the scenario's content (its canonical JSON): equal files give equal keys."""
    return hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()


# ----------------------------------------------------------------------------------
# the shock
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shock:
    """The dashboard's shock (docs/dashboard.md): at ``time`` (years; :func:`snap_time` puts it on a step)
    ``liquidity_shift`` δ (its size: ``L -> L + δ`` for the LPs hit), ``capital_cut`` ψ (``K -> (1 - ψ) K``)
    and the breadth: the ``populations`` hit (population names or LP types; empty: all) and ``share`` ∈ (0, 1] of
    their LPs.
    ``keep_events``: keep the scenario's own ``[[events]]`` beside it.  Size and cut 0: no shock of its own."""

    time: float
    liquidity_shift: float = 0.0
    capital_cut: float = 0.0
    populations: tuple[str, ...] = ()
    share: float = 1.0
    keep_events: bool = True

    @property
    def is_null(self) -> bool:
        return self.liquidity_shift == 0.0 and self.capital_cut == 0.0

    @property
    def splits(self) -> bool:
        """Whether the populations hit are split (a liquidity shift hitting a share below 1)."""
        return self.liquidity_shift != 0.0 and self.share < 1.0

    def label(self) -> str:
        if self.is_null:
            return "no shock of its own"
        who = ", ".join(self.populations) if self.populations else "all populations"
        share = f"{100 * self.share:.0f}% of " if self.share < 1.0 and self.liquidity_shift != 0.0 else ""
        return (f"shock at {self.time:.3f}: liquidity {self.liquidity_shift:+.2f} for {share}{who}, "
                f"buyer capital -{100 * self.capital_cut:.0f}%")


def _steps(scenario) -> int:
    m = scenario.model
    return int(round((m.end - m.start) / float(scenario.grid.dt)))


def snap_time(scenario, t: float) -> float:
    """``t`` moved to the nearest step ``start + n dt`` with ``1 <= n <= N - 1`` (a shock needs a step to act on)."""
    m, dt = scenario.model, float(scenario.grid.dt)
    n_steps = _steps(scenario)
    n = int(round((float(t) - m.start) / dt))
    n = min(max(n, 1), max(n_steps - 1, 1))
    return float(m.start + n * dt)


def default_shock_time(scenario) -> float:
    """The scenario's first event time, else a third into its window (on a step)."""
    if scenario.events:
        return snap_time(scenario, scenario.events[0].time)
    m = scenario.model
    return snap_time(scenario, m.start + (m.end - m.start) / 3.0)


def hit_populations(scenario, selection) -> list[str]:
    """The population names a shock's ``populations`` selects: each entry is a population's name or an LP
    type (``lp_type``, all populations of that type: a vintage ladder has one population per vintage);
    an empty selection is every population.  Raises :class:`DashboardInputError` for an unknown entry."""
    pops = scenario.model.populations
    names = [p.name for p in pops]
    if not selection:
        return names
    types = list(dict.fromkeys(p.lp_type for p in pops))
    unknown = [n for n in selection if n not in names and n not in types]
    if unknown:
        raise DashboardInputError(f"shock: unknown population(s) {unknown}; known LP types: {types}; "
                                  f"populations: {names}")
    return [p.name for p in pops if p.name in selection or p.lp_type in selection]


def nav_share_hit(scenario, shock: Shock) -> float:
    """Share of the market's NAV (at the weights) whose LPs the liquidity shift hits."""
    if shock.liquidity_shift == 0.0:
        return 0.0
    w = scenario.model.weights
    hit = set(hit_populations(scenario, shock.populations))
    idx = [k for k, p in enumerate(scenario.model.populations) if p.name in hit]
    return float(w[idx].sum() * shock.share)


def shocked_scenario(scenario, shock: Shock):
    """The scenario with the shock as one more event (docs/model.md 2.7); see the module docstring.

    Raises :class:`DashboardInputError` (one line) for a shock the scenario refuses.
    """
    import pydantic

    from mfg.lp_exit.params import Scenario

    from ..cli import _pydantic_message

    hit = hit_populations(scenario, shock.populations)
    if not 0.0 < shock.share <= 1.0:
        raise DashboardInputError(f"shock: the share of LPs hit must lie in (0, 1], got {shock.share!r}")
    data = scenario.model_dump(mode="json", exclude_none=True)
    events = list(data.get("events", [])) if shock.keep_events else []
    if shock.splits:
        pops = []
        for p in data["model"]["populations"]:
            if p["name"] in hit:
                pops.append({**p, "weight": p["weight"] * (1.0 - shock.share)})
                pops.append({**p, "name": p["name"] + HIT_SUFFIX, "weight": p["weight"] * shock.share})
            else:
                pops.append(p)
        data["model"]["populations"] = pops
        # the scenario's own events keep hitting the whole of a population that was split
        events = [{**e, "populations": [x for n in e.get("populations", []) for x in
                                        ((n, n + HIT_SUFFIX) if n in hit else (n,))]} for e in events]
        hit = [n + HIT_SUFFIX for n in hit]
    if not shock.is_null:
        events.append({
            "time": snap_time(scenario, shock.time), "name": "dashboard", "description": shock.label(),
            "populations": [] if not shock.populations and not shock.splits else hit,
            "liquidity_shift": float(shock.liquidity_shift), "capital_cut": float(shock.capital_cut),
        })
    data["events"] = events
    try:
        return Scenario.model_validate(data)
    except pydantic.ValidationError as exc:
        raise DashboardInputError(f"shock: {_pydantic_message(exc, data)}") from None


# ----------------------------------------------------------------------------------
# caches
# ----------------------------------------------------------------------------------


class LRUCache:
    """A thread-safe least-recently-used cache of at most ``maxsize`` values; ``hits``/``misses`` count lookups."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key: Hashable):
        """The value of ``key`` (now the most recent) or ``None``."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]) -> tuple[object, bool]:
        """``(value, was_cached)``; ``compute()`` runs outside the cache's lock."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = compute()
        self.put(key, value)
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


#: One computation (solve or simulation) at a time in this process.
COMPUTE_LOCK = threading.Lock()

#: ``(scenario_key(base), shock) -> (shocked scenario, ScenarioResult, seconds, warnings)``.
EQUILIBRIA = LRUCache(EQUILIBRIUM_CACHE_SIZE)

#: ``(equilibrium key, n_agents, n_reps, seed) -> (MarketSimulation, seconds)``.
SIMULATIONS = LRUCache(SIMULATION_CACHE_SIZE)


# ----------------------------------------------------------------------------------
# the computation
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What to compute: a scenario (``name`` labels it), the shock, and the finite-N market's size."""

    scenario: object = field(compare=False, hash=False)
    key: str
    name: str
    shock: Shock
    n_agents: int = 1000
    n_reps: int = 4
    seed: int = 1

    @classmethod
    def make(cls, scenario, name: str, shock: Shock, n_agents: int = 1000, n_reps: int = 4,
             seed: int = 1) -> "Request":
        return cls(scenario=scenario, key=scenario_key(scenario), name=name,
                   shock=replace(shock, time=snap_time(scenario, shock.time)),
                   n_agents=int(n_agents), n_reps=int(n_reps), seed=int(seed))


@dataclass(frozen=True)
class Progress:
    """What is running now (``fraction`` of the whole job done, 0..1)."""

    message: str
    fraction: float


@dataclass(frozen=True, eq=False)
class Outcome:
    """A finished computation: the shocked scenario, the equilibrium, the finite-N market."""

    request: Request
    scenario: object
    equilibrium: object
    simulation: object
    equilibrium_seconds: float
    simulation_seconds: float
    equilibrium_cached: bool
    simulation_cached: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """A computation that could not be done: ``message`` is one line."""

    request: Request
    message: str


def one_line(exc: BaseException, label: str = "") -> str:
    """One line for an exception (the CLI's wording where it has one); never a traceback."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, DashboardInputError):
        return msg
    if isinstance(exc, MemoryError):
        msg = msg or "not enough memory"
    elif not isinstance(exc, (ValueError, FloatingPointError)):
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return f"{label}: {msg}" if label else msg


def _solve(scenario) -> tuple[object, float, tuple[str, ...]]:
    from mfg.lp_exit.scenarios import solve_scenario

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = solve_scenario(scenario.model, scenario.grid, scenario.solver, scenario.events)
    notes = tuple(dict.fromkeys(" ".join(str(w.message).split()) for w in caught
                                if w.category.__module__.startswith("mfg")))
    if not res.converged and not any("fixed point" in n for n in notes):
        notes += (f"the fixed point did not reach its tolerance ({res.message}); the paths are the last iterate",)
    return res, time.perf_counter() - t0, notes


def _simulate(scenario, eq, n_agents: int, n_reps: int, seed: int) -> tuple[object, float]:
    from abm import simulate

    t0 = time.perf_counter()
    sim = simulate(scenario, policy=eq, n_agents=n_agents, n_reps=n_reps, seed=seed, events=scenario.events)
    return sim, time.perf_counter() - t0


def run(request: Request, cancel: threading.Event | None = None) -> Iterator[Progress | Outcome | Failure]:
    """Yield :class:`Progress` while computing, then one :class:`Outcome` or :class:`Failure`.

    Stops early (yielding nothing more) when ``cancel`` is set between its stages.
    """
    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    label = request.name
    try:
        sc = shocked_scenario(request.scenario, request.shock)
    except DashboardInputError as exc:
        yield Failure(request, str(exc))
        return
    eq_key = (request.key, request.shock)
    n_t = _steps(sc) + 1
    what = (f"{label}: {len(sc.model.populations)} populations, {sc.grid.n_L} x {n_t} grid (L x t), "
            f"{len(sc.events)} event(s)")
    cached = EQUILIBRIA.get(eq_key)
    if cached is None:
        yield Progress(("waiting for another computation, then " if COMPUTE_LOCK.locked() else "")
                       + f"solving the MFG equilibrium ({what})", 0.05)
        with COMPUTE_LOCK:
            if cancelled():
                return
            cached = EQUILIBRIA.get(eq_key)
            eq_hit = cached is not None
            if cached is None:
                try:
                    eq, secs, notes = _solve(sc)
                except Exception as exc:  # the solver's refusals: one line, as the CLI prints them
                    yield Failure(request, one_line(exc, label))
                    return
                cached = (sc, eq, secs, notes)
                EQUILIBRIA.put(eq_key, cached)
    else:
        eq_hit = True
    sc, eq, eq_secs, notes = cached
    if cancelled():
        return
    sim_key = (eq_key, request.n_agents, request.n_reps, request.seed)
    sim_cached = SIMULATIONS.get(sim_key)
    if sim_cached is None:
        yield Progress(f"simulating the finite-N market: {request.n_reps} market(s) of N = {request.n_agents:,} LPs "
                       f"following the equilibrium's policy", 0.6)
        with COMPUTE_LOCK:
            if cancelled():
                return
            sim_cached = SIMULATIONS.get(sim_key)
            sim_hit = sim_cached is not None
            if sim_cached is None:
                try:
                    sim_cached = _simulate(sc, eq, request.n_agents, request.n_reps, request.seed)
                except Exception as exc:
                    yield Failure(request, one_line(exc, f"{label}, finite-N market"))
                    return
                SIMULATIONS.put(sim_key, sim_cached)
    else:
        sim_hit = True
    sim, sim_secs = sim_cached
    pushed = [p for p in getattr(eq, "pushed", ()) if p > 1e-6]
    if pushed and not any("onto the end node" in n for n in notes):
        notes += (f"a liquidity shift pushes {max(pushed):.3g} of a population's mass past the grid's ends",)
    yield Outcome(request, sc, eq, sim, eq_secs, sim_secs, eq_hit, sim_hit, notes)


# ----------------------------------------------------------------------------------
# what the page shows and downloads
# ----------------------------------------------------------------------------------


def exits_by_type(populations, flow: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """Cumulative NAV sold (fraction of the market's NAV) by LP type: ``{lp_type: (..., n_t)}``.

    ``flow``: (..., n_pop, n_t) each population's sell flow (NAV/yr); the value at ``t_n``
    is what was sold in the steps before ``n``.
    """
    flow = np.asarray(flow, dtype=float)
    out: dict[str, np.ndarray] = {}
    for k, p in enumerate(populations):
        f = flow[..., k, :]
        out[p.lp_type] = out.get(p.lp_type, 0.0) + f
    res = {}
    for typ, f in out.items():
        c = np.zeros_like(f)
        c[..., 1:] = np.cumsum(f[..., :-1], axis=-1) * dt
        res[typ] = c
    return res


def aggregate_density(eq, lp_type: str | None = None) -> np.ndarray:
    """(n_t, n_L) NAV-weighted density of the active LPs (of one LP type, or all): ``sum_k w_k m_k``."""
    w = eq.model.weights
    pops = eq.model.populations
    sel = [k for k, p in enumerate(pops) if lp_type is None or p.lp_type == lp_type]
    return np.tensordot(w[sel], eq.density[sel], axes=(0, 0))


def _fmt(x: float, spec: str = ".4f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _argmin(t, y) -> tuple[float, float]:
    y = np.asarray(y, dtype=float)
    if not np.isfinite(y).any():
        return math.nan, math.nan
    i = int(np.nanargmin(y))
    return float(y[i]), float(t[i])


def summary_rows(outcome: Outcome) -> list[tuple[str, str, str]]:
    """``(quantity, MFG, finite-N)`` rows of the summary table."""
    eq, sim = outcome.equilibrium, outcome.simulation
    t, dt = np.asarray(eq.t), float(eq.dt)
    R = sim.n_reps
    p_min, t_min = _argmin(t, eq.price)
    sim_mins = np.nanmin(sim.price, axis=1)
    sp_min, st_min = _argmin(t, np.nanmean(sim.price, axis=0))
    spread = f" (markets: {sim_mins.min():.4f} to {sim_mins.max():.4f})" if R > 1 else ""
    sold_mfg = 100.0 * float(np.sum(eq.sell_flow[:-1]) * dt)
    sold_sim = 100.0 * np.sum(sim.sell_flow[:, :-1], axis=1) * dt
    k_mfg, _ = _argmin(t, eq.buyer_capital)
    k_sim = np.nanmin(sim.buyer_capital, axis=1)
    w_mfg = np.asarray(eq.withdrawn, dtype=float)
    w_sim = np.asarray(sim.withdrawn, dtype=float)
    gap = float(np.sqrt(np.nanmean((sim.price - eq.price[None, :]) ** 2)))
    return [
        ("lowest price (fraction of NAV)", f"{_fmt(p_min)} at {t_min:.3f}",
         f"{_fmt(sp_min)} at {st_min:.3f} (mean path){spread}"),
        ("NAV sold over the window (% of market NAV)", _fmt(sold_mfg, ".2f"),
         f"{_fmt(float(sold_sim.mean()), '.2f')}" + (f" ± {sold_sim.std(ddof=1) / math.sqrt(R):.2f}" if R > 1 else "")),
        ("peak withdrawn supply (NAV/yr)", _fmt(float(np.nanmax(w_mfg)) if np.isfinite(w_mfg).any() else math.nan),
         _fmt(float(np.nanmax(np.nanmean(w_sim, axis=0))) if np.isfinite(w_sim).any() else math.nan)),
        ("lowest buyer capital (NAV)", _fmt(k_mfg), f"{_fmt(float(k_sim.mean()))} (mean of the markets' lows)"),
        ("RMS price gap to the MFG", "", _fmt(gap, ".2e")),
    ]


def paths_frame(outcome: Outcome) -> pd.DataFrame:
    """The market paths of the MFG (``source = "mfg"``, ``replication`` empty) and of each finite-N market
    (``source = "finite_n"``), one row per (source, replication, time); columns of
    ``ScenarioResult.to_frame("market")`` and ``MarketSimulation.to_frame("market")``."""
    mfg = outcome.equilibrium.to_frame("market")
    mfg.insert(0, "source", "mfg")
    mfg.insert(1, "replication", pd.array([pd.NA] * len(mfg), dtype="Int64"))
    mfg.insert(2, "step", np.arange(len(mfg)))
    sim = outcome.simulation.to_frame("market")
    sim["replication"] = sim["replication"].astype("Int64")
    sim.insert(0, "source", "finite_n")
    out = pd.concat([mfg, sim], ignore_index=True, sort=False)
    r = outcome.request
    out.attrs = {"scenario": r.name, "shock": r.shock.label(), "n_agents": r.n_agents, "seed": r.seed}
    return out


def paths_csv(outcome: Outcome) -> bytes:
    return paths_frame(outcome).to_csv(index=False).encode()


def paths_parquet(outcome: Outcome) -> bytes:
    buf = io.BytesIO()
    frame = paths_frame(outcome)
    frame.attrs = {}
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
