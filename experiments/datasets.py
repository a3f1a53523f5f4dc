"""Empirical-style datasets of the private-equity secondary market from the finite-N LP market.

:func:`generate` runs one finite market of ``n_lps`` LPs (docs/model.md 2.8, :mod:`abm.lp_market.engine`) under
the MFG policy of a scenario (:func:`mfg.lp_exit.solve`, or :func:`mfg.lp_exit.scenarios.solve_scenario`
when the scenario has shock events) and writes what a researcher gets from an intermediary or a
data vendor, with the generating truth kept alongside:

* ``transactions``: one row per sale;
* ``quarterly``: the market per quarter, overall and by vintage and by LP type, with the MFG's
  price for the same quarter;
* ``lp_panel``: every LP at every quarter end (liquidity, status).

The schema (names, types, units, meaning) is :data:`SCHEMAS`; docs/datasets.md prints it and
each Parquet file carries it in its metadata, with the scenario, the seed, the options and
the package version.

How the market is run
---------------------
The engine's own state and kernel (:class:`abm.lp_market.engine.MarketState`, the set-up of
:func:`abm.lp_market.engine.simulate` on :func:`abm.lp_market.engine.prepare`) are advanced one step at a time, so
the market is the one :func:`abm.lp_market.engine.simulate` runs with the same seed, bit for bit
(tested); between two steps the LPs whose status turned to ``sold`` are the step's sellers,
and at each quarter boundary the LPs' state is streamed to the panel (one Parquet row
group per quarter: memory stays ``O(n_lps)``).

The overlay (what the model does not have)
------------------------------------------
The model's price ``pi_k^n = P^n A_k`` is per unit of *true* NAV.  The overlay adds funds,
strategies, NAV paths, reporting and bids, all drawn from its own random streams (children
of the seed that the engine never uses), so switching an option does not move the market:

* funds: ``funds_per_vintage`` funds per vintage (shared by the LP types of that vintage),
  fund sizes from a Dirichlet(2) law, each LP's stake in one fund;
* strategies: each fund has a strategy with its own price level (:data:`STRATEGIES`) and,
  with ``fund_dispersion``, a fund premium ``exp(sd Z)``; the levels are normalised to mean
  1 over the LPs, so the market's average price is the model's;
* true NAV of a fund, per unit of commitment: ``exp(g (t - vintage) + sum of event drops +
  nav_vol W_f(t))`` (``g`` of the vintage's populations; ``W_f`` a Brownian path per fund);
  at a shock event NAV falls by ``nav_drop`` (default ``0.45 x`` the event's capital cut:
  25% for 2008, 7% for COVID: an assumption, see docs/datasets.md);
* reported NAV: the true NAV (``stale_nav = 0``) or the mark of the quarter ``stale_nav``
  quarters back (1 or 2: the last quarter-end report a buyer holds);
* bid: ``clearing price x level x exp(bid_dispersion Z - bid_dispersion^2 / 2)``.

Determinism: the same seed, scenario, options and package versions give the same bytes
(Parquet metadata holds no timestamp or path; the row order is fixed).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import metadata as _metadata
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from .io import atomic_path, locks_folder

__all__ = [
    "FILES",
    "REALISTIC",
    "SCHEMAS",
    "STRATEGIES",
    "Dataset",
    "DatasetExists",
    "DatasetOptions",
    "generate",
    "load_dataset",
    "quarterly_from_transactions",
    "schema_markdown",
]

#: Strategy name -> (share of funds, relative price level before normalisation).  Venture trades
#: deeper than buyout (Nadauld et al. 2019; vendor reports), credit and infrastructure nearer par.
STRATEGIES: dict[str, tuple[float, float]] = {
    "buyout": (0.55, 1.02),
    "growth": (0.15, 0.98),
    "venture": (0.15, 0.88),
    "credit": (0.08, 1.00),
    "infrastructure": (0.07, 1.00),
}

FILES = ("transactions", "quarterly", "lp_panel")
STATUS = ("pending", "active", "sold", "matured")  # abm.lp_market.engine status codes 0..3


@dataclass(frozen=True)
class DatasetOptions:
    """Realism options (all off by default: the data are then the model's truth, in $m).

    stale_nav : quarters by which reported NAV lags the true NAV (0, 1 or 2).
    bid_dispersion : sd of the log bid around the clearing price (0: every sale at the clearing price).
    strategies : funds of several strategies (:data:`STRATEGIES`) with their own price levels.
    funds_per_vintage : funds per vintage (1: one fund per vintage).
    fund_dispersion : sd of a fund's log price premium (0: none).
    nav_vol : volatility of a fund's log true NAV (per sqrt year; 0: NAV grows at g).
    nav_drop : fall of true NAV at each shock time (fraction); None: 0.45 x the largest capital cut
        of the events at that time.
    market_nav : NAV of the market in $m (the stakes of population k share w_k of it as commitment).
    fmt : "parquet" or "csv".
    transition : the engine's transition ("exact" or "two-point").
    block_size : the engine's block size (results depend on it).
    """

    stale_nav: int = 0
    bid_dispersion: float = 0.0
    strategies: bool = False
    funds_per_vintage: int = 1
    fund_dispersion: float = 0.0
    nav_vol: float = 0.0
    nav_drop: float | None = None
    market_nav: float = 1.0e6
    fmt: str = "parquet"
    transition: str = "exact"
    block_size: int = 1 << 15

    def __post_init__(self):
        if self.stale_nav not in (0, 1, 2):
            raise ValueError(f"stale_nav must be 0, 1 or 2 quarters, got {self.stale_nav!r}")
        for name in ("bid_dispersion", "fund_dispersion", "nav_vol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        if isinstance(self.funds_per_vintage, bool) or not isinstance(self.funds_per_vintage, int) \
                or not 1 <= self.funds_per_vintage <= 10_000:
            raise ValueError(f"funds_per_vintage must be an integer in [1, 10000], got {self.funds_per_vintage!r}")
        if self.nav_drop is not None and not (math.isfinite(self.nav_drop) and 0.0 <= self.nav_drop < 1.0):
            raise ValueError(f"nav_drop must lie in [0, 1), got {self.nav_drop!r}")
        if not (math.isfinite(self.market_nav) and self.market_nav > 0):
            raise ValueError(f"market_nav must be positive, got {self.market_nav!r}")
        if self.fmt not in ("parquet", "csv"):
            raise ValueError(f"fmt must be 'parquet' or 'csv', got {self.fmt!r}")


#: The ``--realistic`` preset: every realism option on.
REALISTIC = dict(stale_nav=2, bid_dispersion=0.05, strategies=True, funds_per_vintage=20, fund_dispersion=0.05,
                 nav_vol=0.10)


# ----------------------------------------------------------------------------------
# schema: (name, arrow type, unit, meaning)
# ----------------------------------------------------------------------------------

_D8 = pa.dictionary(pa.int8(), pa.string())
_INT8 = pa.int8()
_D16 = pa.dictionary(pa.int16(), pa.string())

SCHEMAS: dict[str, list[tuple[str, pa.DataType, str, str]]] = {
    "transactions": [
        ("date", pa.date32(), "date", "date of the sale (the start t_n of the market step it clears in)"),
        ("quarter", _D16, "", "calendar quarter of the sale, e.g. 2009Q1"),
        ("t", pa.float64(), "year", "time of the sale in decimal years (t_n)"),
        ("step", pa.int32(), "", "market step n"),
        ("lp_id", pa.int64(), "", "seller's id (a fixed random permutation of the LPs)"),
        ("lp_type", _D8, "", "seller's type (pension, endowment, sovereign, ...)"),
        ("fund_id", pa.int32(), "", "fund whose stake is sold"),
        ("strategy", _D8, "", "fund strategy"),
        ("vintage", pa.int16(), "year", "fund vintage"),
        ("fund_age", pa.float64(), "year", "t - vintage"),
        ("commitment", pa.float64(), "$m", "seller's commitment to the fund"),
        ("nav_sold", pa.float64(), "$m", "reported NAV of the stake sold (what the buyer prices against)"),
        ("nav_date", pa.date32(), "date", "date of the NAV report (the sale date when NAV is not stale, "
                                          "else the end of the quarter it dates from)"),
        ("price_pct_nav", pa.float64(), "% of reported NAV", "price paid per unit of reported NAV"),
        ("discount_pct", pa.float64(), "% of reported NAV", "100 - price_pct_nav"),
        ("consideration", pa.float64(), "$m", "amount paid: price_pct_nav / 100 * nav_sold"),
        ("buyer_capital", pa.float64(), "$m", "secondary buyers' dry powder K^n at the time of the sale"),
        ("true_nav", pa.float64(), "$m", "truth: true NAV of the stake"),
        ("true_price_pct", pa.float64(), "% of true NAV", "truth: price paid per unit of true NAV"),
        ("clearing_price_pct", pa.float64(), "% of true NAV",
         "truth: the model's clearing price pi_k^n = P^n A_k for the vintage (before level and bid)"),
        ("liquidity", pa.float64(), "", "truth: the seller's liquidity L at the decision"),
        ("population", _D8, "", "truth: the model population (LP type x vintage)"),
    ],
    "quarterly": [
        ("quarter", _D16, "", "calendar quarter"),
        ("quarter_start", pa.date32(), "date", "first day of the quarter"),
        ("group_by", _D8, "", "all, vintage or lp_type"),
        ("group", _D8, "", "the group: all, a vintage year or an LP type"),
        ("steps", pa.int32(), "", "market steps in the quarter"),
        ("n_sales", pa.int64(), "", "number of sales"),
        ("volume_nav", pa.float64(), "$m", "reported NAV sold (sum of nav_sold)"),
        ("volume_true_nav", pa.float64(), "$m", "truth: true NAV sold"),
        ("consideration", pa.float64(), "$m", "amount paid"),
        ("price_mean", pa.float64(), "% of reported NAV", "mean of price_pct_nav (NaN without sales)"),
        ("price_std", pa.float64(), "% of reported NAV",
         "sample standard deviation of price_pct_nav (ddof 1; NaN with fewer than 2 sales)"),
        ("price_wavg", pa.float64(), "% of reported NAV", "NAV-weighted price: 100 * consideration / volume_nav"),
        ("active_nav", pa.float64(), "$m", "reported NAV held by active LPs (mean over the quarter's steps)"),
        ("active_nav_true", pa.float64(), "$m", "truth: true NAV held by active LPs (mean over the steps)"),
        ("dry_powder", pa.float64(), "$m", "buyer capital K (mean over the quarter's steps)"),
        ("market_price_pct", pa.float64(), "% of true NAV", "truth: the finite market's P (mean over the steps)"),
        ("mfg_price_pct", pa.float64(), "% of true NAV", "the MFG equilibrium's P (mean over the same steps)"),
    ],
    "lp_panel": [
        ("quarter", _D16, "", "quarter whose end the row describes"),
        ("date", pa.date32(), "date", "last day of the quarter"),
        ("lp_id", pa.int64(), "", "LP id (as in transactions)"),
        ("lp_type", _D8, "", "LP type"),
        ("vintage", pa.int16(), "year", "vintage of the LP's fund"),
        ("fund_id", pa.int32(), "", "the LP's fund"),
        ("liquidity", pa.float64(), "", "liquidity L at the quarter end (the state at the first step on or after "
                                        "it, before that step's sales; the last value for sold or matured LPs)"),
        ("status", _D8, "", "pending (fund not started), active, sold or matured"),
    ],
}


def _arrow_schema(name: str, meta: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [pa.field(n, t, metadata={b"unit": u.encode(), b"description": d.encode()})
              for n, t, u, d in SCHEMAS[name]]
    return pa.schema(fields, metadata=meta)


def schema_markdown() -> str:
    """The schema as markdown tables (docs/datasets.md)."""
    out = []
    for name, cols in SCHEMAS.items():
        out.append(f"### `{name}`\n\n| column | type | unit | meaning |\n|---|---|---|---|")
        for n, t, u, d in cols:
            ts = "string (dictionary)" if pa.types.is_dictionary(t) else str(t)
            out.append(f"| `{n}` | {ts} | {u} | {d} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------
# calendar helpers
# ----------------------------------------------------------------------------------

_EPOCH = _dt.date(1970, 1, 1)
_EPS = 1e-6


def _quarter_index(t) -> np.ndarray:
    return np.floor(4.0 * np.asarray(t, dtype=float) + _EPS).astype(np.int64)


def _qlabel(qi: int) -> str:
    return f"{qi // 4}Q{qi % 4 + 1}"


def _days(t: float) -> int:
    """Days since 1970-01-01 of the decimal year ``t``."""
    y = math.floor(t + 1e-9)
    d0 = _dt.date(y, 1, 1)
    n = (_dt.date(y + 1, 1, 1) - d0).days
    return (d0 - _EPOCH).days + int(math.floor((t - y) * n + 1e-6))


def _quarter_start_days(qi: int) -> int:
    return (_dt.date(qi // 4, 3 * (qi % 4) + 1, 1) - _EPOCH).days


def _quarter_end_days(qi: int) -> int:
    return _quarter_start_days(qi + 1) - 1


# ----------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------


def _package_version() -> str:
    try:
        return _metadata.version("gelav")
    except _metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _solve_policy(sc):
    """The MFG policy of a scenario: a plain solve, or the stitched scenario when it has events."""
    if sc.events:
        from mfg.lp_exit.scenarios import solve_scenario

        return solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
    from mfg.lp_exit import solve

    return solve(sc.model, sc.grid, sc.solver)


def _overlay_rng(root: np.random.SeedSequence, stream: int) -> np.random.Generator:
    """Overlay streams: children ``(2**31 + stream,)`` of the root seed (the engine uses ``(r,)``, r small)."""
    ss = np.random.SeedSequence(entropy=root.entropy, spawn_key=tuple(root.spawn_key) + (2**31 + stream,),
                                pool_size=root.pool_size)
    return np.random.Generator(np.random.PCG64(ss))


@dataclass
class _Overlay:
    vint: np.ndarray  # (n_pop,) vintage year
    types: tuple  # LP type names
    type_of: np.ndarray  # (n_pop,) index into types
    lp_id: np.ndarray  # (n,) ids
    fund: np.ndarray  # (n,) fund index 0..F-1
    fund_ids: np.ndarray  # (F,) fund id
    strat_names: tuple
    fund_strat: np.ndarray  # (F,) strategy index
    level: np.ndarray  # (F,) price level (normalised)
    commit: np.ndarray  # (n_pop,) commitment per LP, $m
    idx_true: np.ndarray  # (F, n_t) true NAV per unit commitment
    idx_rep: np.ndarray  # (F, n_t) reported NAV per unit commitment
    rep_day: np.ndarray  # (n_t,) days of the NAV report date at step n (-1: the sale date)
    n_kf: np.ndarray  # (n_pop, F) LPs of population k in fund f


def _build_overlay(su, res, opts: DatasetOptions, events) -> _Overlay:
    pops = su.model.populations
    n_pop = len(pops)
    n = su.n_agents
    t = su.t
    n_t = t.size
    rng_id = _overlay_rng(su.seed, 0)
    rng_fund = _overlay_rng(su.seed, 1)
    rng_nav = _overlay_rng(su.seed, 2)
    vint = np.array([int(math.floor(p.vintage + 1e-9)) for p in pops], dtype=np.int64)
    types = tuple(dict.fromkeys(p.lp_type for p in pops))
    type_of = np.array([types.index(p.lp_type) for p in pops], dtype=np.int64)
    lp_id = rng_id.permutation(n).astype(np.int64) + 1
    vintages = sorted(set(vint.tolist()))
    F_v = opts.funds_per_vintage
    F = F_v * len(vintages)
    fund_ids = np.arange(1, F + 1, dtype=np.int32)
    if opts.strategies:
        strat_names = tuple(STRATEGIES)
        share = np.array([STRATEGIES[s][0] for s in strat_names])
        lev = np.array([STRATEGIES[s][1] for s in strat_names])
        fund_strat = rng_fund.choice(len(strat_names), size=F, p=share / share.sum())
    else:
        strat_names = ("buyout",)
        lev = np.array([1.0])
        fund_strat = np.zeros(F, dtype=np.int64)
    prem = np.exp(opts.fund_dispersion * rng_fund.standard_normal(F)) if opts.fund_dispersion > 0 else np.ones(F)
    fund = np.empty(n, dtype=np.int64)
    n_kf = np.zeros((n_pop, F), dtype=np.int64)
    shares = {}
    for v in vintages:
        shares[v] = rng_fund.dirichlet(np.full(F_v, 2.0)) if F_v > 1 else np.ones(1)
    for k in range(n_pop):
        lo, hi = su.pop_starts[k], su.pop_starts[k + 1]
        base = vintages.index(int(vint[k])) * F_v
        f = base + (rng_fund.choice(F_v, size=hi - lo, p=shares[int(vint[k])]) if F_v > 1
                    else np.zeros(hi - lo, dtype=np.int64))
        fund[lo:hi] = f
        n_kf[k] = np.bincount(f, minlength=F)
    raw = lev[fund_strat] * prem
    per_fund = n_kf.sum(axis=0)
    mean = float((raw * per_fund).sum() / per_fund.sum())
    level = raw / mean
    commit = opts.market_nav * np.where(su.n_per_pop > 0, su.weights / np.maximum(su.n_per_pop, 1), 0.0)
    # true NAV index per fund: growth at the vintage's (weight-averaged) g, drops at shock times, noise
    g_v = {}
    for v in vintages:
        sel = [k for k in range(n_pop) if vint[k] == v]
        w = np.array([su.weights[k] for k in sel])
        gs = np.array([pops[k].g for k in sel])
        g_v[v] = float((w * gs).sum() / w.sum()) if w.sum() > 0 else float(gs.mean())
    fund_v = np.repeat(np.array(vintages, dtype=float), F_v)
    fund_g = np.repeat(np.array([g_v[v] for v in vintages]), F_v)
    drop_log = np.zeros(n_t)
    times = sorted({float(e.time) for e in events})
    for te in times:
        d = opts.nav_drop if opts.nav_drop is not None else \
            0.45 * max(float(e.capital_cut) for e in events if float(e.time) == te)
        n_e = int(round((te - t[0]) / su.dt))
        drop_log[n_e:] += math.log1p(-d)
    if opts.nav_vol > 0:
        z = rng_nav.standard_normal((F, n_t - 1))
        W = np.concatenate([np.zeros((F, 1)), np.cumsum(z * math.sqrt(su.dt), axis=1)], axis=1)
    else:
        W = np.zeros((F, n_t))
    log_true = fund_g[:, None] * (t[None, :] - fund_v[:, None]) + drop_log[None, :] + opts.nav_vol * W
    idx_true = np.exp(log_true)
    rep_day = np.full(n_t, -1, dtype=np.int64)
    if opts.stale_nav == 0:
        idx_rep = idx_true.copy()
    else:
        qi = _quarter_index(t)
        idx_rep = np.empty_like(idx_true)
        for m in range(n_t):
            q_mark = int(qi[m]) - opts.stale_nav  # the report of quarter q_mark, made at its end
            T_end = (q_mark + 1) / 4.0
            last = np.flatnonzero(t < T_end - _EPS * su.dt)
            if last.size == 0:  # the mark lies before the window: growth only
                idx_rep[:, m] = np.exp(fund_g * (T_end - fund_v))
            else:
                idx_rep[:, m] = idx_true[:, last[-1]]
            rep_day[m] = _quarter_end_days(q_mark)
    return _Overlay(vint=vint, types=types, type_of=type_of, lp_id=lp_id, fund=fund, fund_ids=fund_ids,
                    strat_names=strat_names, fund_strat=fund_strat, level=level, commit=commit, idx_true=idx_true,
                    idx_rep=idx_rep, rep_day=rep_day, n_kf=n_kf)


# ----------------------------------------------------------------------------------
# the market, step by step (the engine's kernel)
# ----------------------------------------------------------------------------------


def _market(su):
    """One replication of :func:`abm.lp_market.engine.simulate` (:class:`abm.lp_market.engine.MarketState`), advanced
    one step at a time by ``run(n, n + 1)``."""
    from abm.lp_market.engine import MarketState
    from abm.lp_market.policies import GIVEN

    if su.policy.kind == GIVEN:
        raise ValueError("datasets need an array policy (the MFG's), not a callable")
    return MarketState(su, 1)


# ----------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------


class DatasetExists(FileExistsError):
    """The output folder already holds a dataset file (pass ``force=True``)."""


@dataclass
class Dataset:
    """What :func:`generate` wrote."""

    folder: Path
    files: dict[str, Path]
    rows: dict[str, int]
    metadata: dict
    wall_time: float = 0.0
    timings: dict = field(default_factory=dict)


def _meta_bytes(meta: dict) -> dict[bytes, bytes]:
    return {b"gelav.dataset": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()}


def _dict_array(codes: np.ndarray, names, index_type=_INT8) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=index_type), pa.array(list(names), pa.string()))


class _TableWriter:
    """Parquet (row groups) or CSV, streamed to a temporary path."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.fmt = fmt
        self.schema = schema
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.w = pq.ParquetWriter(str(path), schema, compression="zstd", use_dictionary=True,
                                      write_statistics=True)
        else:
            import pyarrow.csv as pacsv

            self.w = pacsv.CSVWriter(str(path), _plain_schema(schema))

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            self.w.write_table(table, row_group_size=1 << 20)
        else:
            self.w.write_table(_plain(table))

    def close(self) -> None:
        self.w.close()


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                      for f in schema])


def _plain(table: pa.Table) -> pa.Table:
    cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(cols, schema=_plain_schema(table.schema))


def _ext(fmt: str) -> str:
    return ".parquet" if fmt == "parquet" else ".csv"


@locks_folder("out", what="gelav dataset")  # one run per folder; clears a killed run's temporaries
def generate(scenario, n_lps: int, seed: int, out, *, options: DatasetOptions | None = None, force: bool = False,
             threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Run the finite market of ``scenario`` with ``n_lps`` LPs and write the dataset to ``out``.

    scenario : a shipped scenario name, a TOML path or a :class:`~mfg.lp_exit.params.Scenario`.
    seed : a non-negative integer (the engine's and the overlay's root seed).
    options : :class:`DatasetOptions` (default: all realism off, Parquet).
    force : overwrite existing dataset files in ``out`` (else :class:`DatasetExists`).
    threads : numba threads for the market (the data do not depend on it).  Default: 1 below
        4 blocks of LPs (the market is driven one step at a time, and waking numba's thread
        pool every step costs more than a second thread gains on a small market), else
        numba's default.
    progress : ``progress(step, n_steps)`` after each step (may raise to abort: nothing is left behind).
    """
    from abm.lp_market.engine import SOLD, prepare
    from mfg.lp_exit.params import Scenario, load_scenario

    from .lp_exit_report import resolve_scenario

    t_start = time.perf_counter()
    opts = options or DatasetOptions()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if isinstance(scenario, Scenario):
        sc, sc_name = scenario, "<Scenario object>"
    else:
        path = resolve_scenario(scenario)
        sc, sc_name = load_scenario(path), Path(path).stem
    out = Path(out)
    ext = _ext(opts.fmt)
    targets = {name: out / f"{name}{ext}" for name in FILES}
    targets["metadata"] = out / "dataset.json"
    existing = [p for p in targets.values() if p.exists()]
    if existing and not force:
        raise DatasetExists(f"{existing[0]} exists (use --force / force=True to overwrite)")

    timings = {}
    t0 = time.perf_counter()
    res = _solve_policy(sc)
    timings["mfg"] = time.perf_counter() - t0
    su = prepare(sc.model, res, n_lps, np.random.SeedSequence(seed), block_size=opts.block_size,
                 transition=opts.transition)
    events = tuple(getattr(res, "events", ()) or ())
    ov = _build_overlay(su, res, opts, events)
    t = su.t
    n_t = t.size
    N = su.n_steps
    n_pop = len(su.names)
    qi = _quarter_index(t)
    step_day = np.array([_days(float(x)) for x in t], dtype=np.int32)
    q_first, q_last = int(qi[0]), int(qi[max(N - 1, 0)])
    q_all = list(range(q_first, max(q_last, int(qi[-1] - 1)) + 1))
    q_labels = [_qlabel(q) for q in q_all]
    meta = {
        "gelav_version": _package_version(), "scenario": sc_name, "scenario_toml": sc.to_toml(), "seed": seed,
        "n_lps": int(n_lps), "options": asdict(opts), "dt": su.dt, "window": [float(t[0]), float(t[-1])],
        "populations": list(su.names), "n_per_population": su.n_per_pop.tolist(),
        "strategy_levels": {s: float(STRATEGIES[s][1]) for s in ov.strat_names} if opts.strategies else
        {"buyout": 1.0},
        "events": [e.model_dump(mode="json") for e in events], "pyarrow_version": pa.__version__,
        "numpy_version": np.__version__,
    }
    mb = _meta_bytes(meta)

    # per-agent constants
    pop = su.pop
    lp_type_code = ov.type_of[pop].astype(np.int8)
    vint_agent = ov.vint[pop].astype(np.int16)
    fund_id_agent = ov.fund_ids[ov.fund]
    status_names = list(STATUS)

    # per step market records
    sold_kf = np.zeros((n_pop, ov.level.size), dtype=np.int64)
    active_true = np.zeros((n_pop, n_t))
    active_rep = np.zeros((n_pop, n_t))
    tx = {k: [] for k in ("step", "agent")}
    bid_rng = _overlay_rng(su.seed, 3)
    bid_z: list[np.ndarray] = []
    mk = _market(su)
    boundary = {n: int(qi[n]) - 1 for n in range(1, n_t) if qi[n] != qi[n - 1]}

    old_threads = numba.get_num_threads()
    if threads is None:
        threads = 1 if su.n_blocks < 4 else old_threads
    numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    t0 = time.perf_counter()
    panel_rows = 0
    try:
        with ExitStack() as stack:
            tmp = {name: stack.enter_context(atomic_path(p)) for name, p in targets.items()}
            pw = _TableWriter(tmp["lp_panel"], _arrow_schema("lp_panel", mb), opts.fmt)
            try:
                for n in range(n_t):
                    if n in boundary:
                        panel_rows += _write_panel(pw, boundary[n], q_all, q_labels, ov, lp_type_code, vint_agent,
                                                   fund_id_agent, mk, status_names)
                    # active NAV at t_n (before the step's sales), per population
                    for k in range(n_pop):
                        if n >= su.n_first[k] and not (su.matures[k] and n >= su.n_last[k]):
                            act = ov.n_kf[k] - sold_kf[k]
                            active_true[k, n] = ov.commit[k] * float(act @ ov.idx_true[:, n])
                            active_rep[k, n] = ov.commit[k] * float(act @ ov.idx_rep[:, n])
                    before = mk.status[0].copy()
                    mk.run(n, n + 1)
                    changed = np.flatnonzero(mk.status[0] != before)
                    sold = changed[mk.status[0, changed] == SOLD]
                    if sold.size:
                        tx["step"].append(np.full(sold.size, n, dtype=np.int64))
                        tx["agent"].append(sold)
                        np.add.at(sold_kf, (pop[sold], ov.fund[sold]), 1)
                        bid_z.append(bid_rng.standard_normal(sold.size) if opts.bid_dispersion > 0
                                     else np.zeros(sold.size))
                    if progress is not None:
                        progress(n, N)
            finally:
                pw.close()
            timings["market"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            trans = _transactions(tx, bid_z, mk, ov, su, opts, t, qi, q_first, q_labels, step_day, lp_type_code,
                                  vint_agent, fund_id_agent)
            quarterly = _quarterly(trans, mk, ov, su, res, t, qi, q_all, q_labels, active_true, active_rep,
                                   opts.market_nav)
            for name, table in (("transactions", trans), ("quarterly", quarterly)):
                w = _TableWriter(tmp[name], _arrow_schema(name, mb), opts.fmt)
                try:
                    w.write(table)
                finally:
                    w.close()
            rows = {"transactions": trans.num_rows, "quarterly": quarterly.num_rows, "lp_panel": panel_rows}
            side = dict(meta, rows=rows, schema={name: [{"name": c, "type": str(ty), "unit": u, "description": d}
                                                        for c, ty, u, d in cols]
                                                 for name, cols in SCHEMAS.items()})
            tmp["metadata"].write_text(json.dumps(side, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            timings["tables"] = time.perf_counter() - t1
    finally:
        numba.set_num_threads(old_threads)
    return Dataset(folder=out, files={k: v for k, v in targets.items()}, rows=rows, metadata=meta,
                   wall_time=time.perf_counter() - t_start, timings=timings)


def _write_panel(pw, q, q_all, q_labels, ov, lp_type_code, vint_agent, fund_id_agent, mk, status_names) -> int:
    n = lp_type_code.size
    qpos = q_all.index(q)
    cols = [
        _dict_array(np.full(n, qpos, dtype=np.int16), q_labels, pa.int16()),
        pa.array(np.full(n, _quarter_end_days(q), dtype=np.int32), pa.int32()).cast(pa.date32()),
        pa.array(ov.lp_id),
        _dict_array(lp_type_code, ov.types),
        pa.array(vint_agent),
        pa.array(fund_id_agent),
        pa.array(mk.L[0].copy()),
        _dict_array(mk.status[0].astype(np.int8), status_names),
    ]
    pw.write(pa.Table.from_arrays(cols, schema=pw.schema))
    return n


def _transactions(tx, bid_z, mk, ov, su, opts, t, qi, q_first, q_labels, step_day, lp_type_code, vint_agent,
                  fund_id_agent) -> pa.Table:
    step = np.concatenate(tx["step"]) if tx["step"] else np.zeros(0, np.int64)
    ag = np.concatenate(tx["agent"]) if tx["agent"] else np.zeros(0, np.int64)
    z = np.concatenate(bid_z) if bid_z else np.zeros(0)
    k = su.pop[ag]
    f = ov.fund[ag]
    o = mk.out
    clearing = o["vintage_price"][0, k, step]
    bid = np.exp(opts.bid_dispersion * z - 0.5 * opts.bid_dispersion ** 2) if opts.bid_dispersion > 0 else 1.0
    true_price = clearing * ov.level[f] * bid
    commit = ov.commit[k]
    true_nav = commit * ov.idx_true[f, step]
    rep_nav = commit * ov.idx_rep[f, step]
    price_pct = 100.0 * true_price * (ov.idx_true[f, step] / ov.idx_rep[f, step])  # exact without stale NAV
    consideration = true_price * true_nav  # = price_pct / 100 * rep_nav
    nav_day = np.where(ov.rep_day[step] >= 0, ov.rep_day[step], step_day[step]).astype(np.int32)
    cols = [
        pa.array(step_day[step], pa.int32()).cast(pa.date32()),
        _dict_array((qi[step] - q_first).astype(np.int16), q_labels, pa.int16()),
        pa.array(t[step]),
        pa.array(step.astype(np.int32)),
        pa.array(ov.lp_id[ag]),
        _dict_array(lp_type_code[ag], ov.types),
        pa.array(fund_id_agent[ag]),
        _dict_array(ov.fund_strat[f].astype(np.int8), ov.strat_names),
        pa.array(vint_agent[ag]),
        pa.array(t[step] - vint_agent[ag].astype(float)),
        pa.array(commit),
        pa.array(rep_nav),
        pa.array(nav_day, pa.int32()).cast(pa.date32()),
        pa.array(price_pct),
        pa.array(100.0 - price_pct),
        pa.array(consideration),
        pa.array(o["buyer_capital"][0, step] * opts.market_nav),
        pa.array(true_nav),
        pa.array(100.0 * true_price),
        pa.array(100.0 * clearing),
        pa.array(mk.L[0, ag].copy()),
        _dict_array(k.astype(np.int8), su.names),
    ]
    return pa.Table.from_arrays(cols, schema=_arrow_schema("transactions"))


def quarterly_from_transactions(trans: pd.DataFrame, quarters, groups: dict[str, list[str]]) -> pd.DataFrame:
    """Aggregate a transactions frame to the quarterly sales columns.

    ``quarters``: the quarter labels in order; ``groups``: ``{"vintage": [...], "lp_type": [...]}``.
    Returns ``quarter, group_by, group, n_sales, volume_nav, volume_true_nav, consideration,
    price_mean, price_std, price_wavg`` with one row per (quarter, group), the rows in the order
    quarter, then ``all``, the vintages, the LP types.  Used by :func:`generate` and by the tests.
    """
    tr = trans.assign(quarter=trans["quarter"].astype(str), vintage=trans["vintage"].astype(str),
                      lp_type=trans["lp_type"].astype(str), all="all")
    rows = []
    by = [("all", ["all"])] + [(g, list(v)) for g, v in groups.items()]
    parts = {}
    for gb, _ in by:
        gr = tr.groupby(["quarter", gb], sort=False, observed=True)
        agg = gr.agg(n_sales=("price_pct_nav", "size"), volume_nav=("nav_sold", "sum"),
                     volume_true_nav=("true_nav", "sum"), consideration=("consideration", "sum"),
                     price_mean=("price_pct_nav", "mean"), price_std=("price_pct_nav", "std"))
        parts[gb] = agg
    for q in quarters:
        for gb, members in by:
            agg = parts[gb]
            for g in members:
                key = (q, g)
                if key in agg.index:
                    r = agg.loc[key]
                    rows.append((q, gb, g, int(r["n_sales"]), float(r["volume_nav"]), float(r["volume_true_nav"]),
                                 float(r["consideration"]), float(r["price_mean"]), float(r["price_std"])))
                else:
                    rows.append((q, gb, g, 0, 0.0, 0.0, 0.0, math.nan, math.nan))
    df = pd.DataFrame(rows, columns=["quarter", "group_by", "group", "n_sales", "volume_nav", "volume_true_nav",
                                     "consideration", "price_mean", "price_std"])
    with np.errstate(invalid="ignore", divide="ignore"):
        df["price_wavg"] = np.where(df["volume_nav"] > 0, 100.0 * df["consideration"] / df["volume_nav"], np.nan)
    return df


def _quarterly(trans, mk, ov, su, res, t, qi, q_all, q_labels, active_true, active_rep, market_nav) -> pa.Table:
    N = su.n_steps
    steps_q = qi[:N] if N > 0 else qi[:1]  # steps 0..N-1 (no sale happens at t_N)
    vint_names = [str(v) for v in sorted(set(ov.vint.tolist()))]
    groups = {"vintage": vint_names, "lp_type": list(ov.types)}
    df = quarterly_from_transactions(trans.to_pandas(), q_labels, groups)
    # market columns: means over each quarter's steps
    o = mk.out
    price = o["price"][0, :N]
    cap = o["buyer_capital"][0, :N]
    mfg = np.asarray(res.price, dtype=float)[:N]
    pop_groups = {("all", "all"): np.arange(len(su.names))}
    for v in vint_names:
        pop_groups[("vintage", v)] = np.flatnonzero(ov.vint == int(v))
    for ty in ov.types:
        pop_groups[("lp_type", ty)] = np.flatnonzero(np.array(ov.types)[ov.type_of] == ty)
    extra = {c: [] for c in ("steps", "active_nav", "active_nav_true", "dry_powder", "market_price_pct",
                             "mfg_price_pct", "quarter_start")}
    for q, gb, g in zip(df["quarter"], df["group_by"], df["group"]):
        qv = q_all[q_labels.index(q)]
        sel = np.flatnonzero(steps_q == qv)
        ks = pop_groups[(gb, g)]
        extra["steps"].append(sel.size)
        extra["quarter_start"].append(_quarter_start_days(qv))
        if sel.size:
            extra["active_nav"].append(float(active_rep[ks][:, sel].sum(axis=0).mean()))
            extra["active_nav_true"].append(float(active_true[ks][:, sel].sum(axis=0).mean()))
            extra["dry_powder"].append(float(cap[sel].mean()) * market_nav)
            extra["market_price_pct"].append(100.0 * float(price[sel].mean()))
            extra["mfg_price_pct"].append(100.0 * float(mfg[sel].mean()))
        else:
            for c in ("active_nav", "active_nav_true", "dry_powder", "market_price_pct", "mfg_price_pct"):
                extra[c].append(math.nan)
    qpos = np.array([q_labels.index(q) for q in df["quarter"]], dtype=np.int16)
    gb_names = ["all", "vintage", "lp_type"]
    g_names = list(dict.fromkeys(["all"] + vint_names + list(ov.types)))
    cols = [
        _dict_array(qpos, q_labels, pa.int16()),
        pa.array(np.array(extra["quarter_start"], dtype=np.int32), pa.int32()).cast(pa.date32()),
        _dict_array(np.array([gb_names.index(x) for x in df["group_by"]], dtype=np.int8), gb_names),
        _dict_array(np.array([g_names.index(x) for x in df["group"]], dtype=np.int8), g_names),
        pa.array(np.array(extra["steps"], dtype=np.int32)),
        pa.array(df["n_sales"].to_numpy(np.int64)),
    ] + [pa.array(df[c].to_numpy(float)) for c in ("volume_nav", "volume_true_nav", "consideration", "price_mean",
                                                    "price_std", "price_wavg")] \
      + [pa.array(np.array(extra[c], dtype=float)) for c in ("active_nav", "active_nav_true", "dry_powder",
                                                              "market_price_pct", "mfg_price_pct")]
    return pa.Table.from_arrays(cols, schema=_arrow_schema("quarterly"))


# ----------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------


def load_dataset(folder, tables=("transactions", "quarterly")) -> tuple[dict[str, pd.DataFrame], dict]:
    """``({name: DataFrame}, metadata)`` of a dataset folder (Parquet or CSV)."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    out = {}
    for name in tables:
        pq_path, csv_path = folder / f"{name}.parquet", folder / f"{name}.csv"
        if pq_path.exists():
            import pyarrow.parquet as pq

            tab = pq.read_table(pq_path)
            if not meta:
                raw = (tab.schema.metadata or {}).get(b"gelav.dataset")
                meta = json.loads(raw) if raw else {}
            out[name] = tab.to_pandas()
        elif csv_path.exists():
            out[name] = pd.read_csv(csv_path)
        else:
            raise FileNotFoundError(f"{folder} has no {name}.parquet or {name}.csv")
    return out, meta
