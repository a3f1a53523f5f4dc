"""``generate``: solve the scenario's MFG, run the finite-N market with the LPs' attributes, write the dataset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata as _metadata
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from mfg.lp_exit.scenarios import scenario_equilibrium

from ..io import locks_folder
from .aggregates import frame_columns
from .attributes import build_attributes, nav_paths
from .calendar import days, qlabel, quarter_index
from .executor import make_executor
from .market import active_nav, run_market
from .options import BUYER_TYPES, STRATEGIES, DatasetOptions
from .schema import PARTITIONING, SCHEMAS, dict_array
from .tables import Context, holdings_task, lps_task, year_task
from .writer import ENTRIES, Staging, meta_bytes, write_part

__all__ = ["Dataset", "generate", "solve_policy"]


@dataclass
class Dataset:
    """What :func:`generate` wrote."""

    folder: Path
    files: dict[str, Path]
    rows: dict[str, int]
    metadata: dict
    wall_time: float = 0.0
    timings: dict = field(default_factory=dict)


#: The MFG policy of a scenario: a plain solve, or the stitched scenario when it has events (the last few
#: results are kept, so a dataset of another seed or size reuses them).
solve_policy = scenario_equilibrium


def _version() -> str:
    try:
        return _metadata.version("gelav")
    except _metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _load(scenario):
    from mfg.lp_exit.params import Scenario, load_scenario

    from ..lp_exit_report import resolve_scenario

    if isinstance(scenario, Scenario):
        return scenario, "<Scenario object>"
    path = resolve_scenario(scenario)
    return load_scenario(path), Path(path).stem


@dataclass
class _Run:
    """The prepared market and everything the driver gathers from per LP."""

    su: object
    ms: object
    att: object
    ctx: Context
    commit: np.ndarray  # (n,) $m
    quality: np.ndarray  # (n,) the engine's (normalised) quality, ones without
    nav_weight: np.ndarray  # (n,) the engine's relative NAV weight, ones without
    mfg_price: np.ndarray
    meta: dict
    offers: np.ndarray  # (n_t,) sale processes per step (filled by the driver)


def _setup(sc, sc_name, res, n_lps, seed, opts: DatasetOptions, staging_root) -> _Run:
    from abm.lp_market.engine import MarketState, allocate_agents, prepare
    from abm.lp_market.policies import GIVEN

    root = np.random.SeedSequence(seed)
    model = sc.model
    if len(model.populations) > 127:
        raise ValueError("datasets support at most 127 populations")
    n_per_pop = allocate_agents(np.array([p.weight for p in model.populations]), n_lps)
    att = build_attributes(model, n_per_pop, opts, root)
    su = prepare(model, res, n_lps, root, block_size=opts.block_size, transition=opts.transition,
                 nav_weights=att.nu, quality=att.theta)
    if su.policy.kind == GIVEN:
        raise ValueError("datasets need an array policy (the MFG's), not a callable")
    events = tuple(getattr(res, "events", ()) or ())
    has_markdown = bool(getattr(sc, "markdown", ()))  # a scenario's stale-NAV markdown (docs/model.md 2.7)
    markdown = np.asarray(sc.markdown_at(su.t), dtype=float) if has_markdown else None
    idx_true, idx_rep, rep_day = nav_paths(att, model, su.weights, su.t, su.dt, opts, events, root, markdown)
    qi = quarter_index(su.t)
    q_labels = tuple(qlabel(q) for q in range(int(qi[0]) - 1, int(qi[-1]) + 1))
    market_nav = opts.mean_commitment * n_lps
    meta = {
        "gelav_version": _version(), "scenario": sc_name, "scenario_toml": sc.to_toml(), "seed": int(seed),
        "n_lps": int(n_lps), "options": asdict(opts), "dt": su.dt, "window": [float(su.t[0]), float(su.t[-1])],
        "market_kind": model.market.kind, "scenario_markdown": has_markdown, "populations": list(su.names),
        "n_per_population": su.n_per_pop.tolist(),
        "market_nav_musd": market_nav, "strategy_levels": {s: STRATEGIES.get(s, 1.0) for s in att.strat_names},
        "buyer_types": {b: {"capital_share": v[0], "bid_spread": v[1]} for b, v in BUYER_TYPES.items()},
        "events": [e.model_dump(mode="json") for e in events], "pyarrow_version": pa.__version__,
        "numpy_version": np.__version__,
    }
    ctx = Context(root=str(staging_root), fmt=opts.fmt, meta=meta_bytes(meta), entropy=root.entropy,
                  spawn_key=tuple(root.spawn_key), pool_size=root.pool_size, t=su.t,
                  step_day=np.array([days(float(x)) for x in su.t], dtype=np.int32), q_first=int(qi[0]) - 1,
                  q_labels=q_labels, types=att.types, strat_names=att.strat_names, pop_names=tuple(su.names),
                  idx_true=idx_true, idx_rep=idx_rep, rep_day=rep_day, bidders=opts.bidders,
                  Kbar=float(model.market.Kbar), market_nav=market_nav)
    ones = np.ones(n_lps)
    return _Run(su=su, ms=MarketState(su, 1), att=att, ctx=ctx, commit=market_nav * su.agent_nav(),
                quality=su.quality if su.weighted else ones, nav_weight=su.nav_weight if su.weighted else ones,
                mfg_price=np.asarray(res.price, dtype=float), meta=meta, offers=np.zeros(su.t.size, np.int64))


def _who(run: _Run, agent: np.ndarray) -> dict:
    """The attributes of the LPs ``agent`` a year task needs."""
    su, att = run.su, run.att
    pop = su.pop[agent]
    n = np.asarray(agent, dtype=np.int64)
    return dict(lp_id=att.lp_id[n], type=att.type_of[pop].astype(np.int8), fund=att.fund[n].astype(np.int64),
                strat=att.fund_strat[att.fund[n]].astype(np.int8), vintage=att.vint[pop].astype(np.int16),
                commitment=run.commit[n], quality=run.quality[n], pop=pop, life=np.zeros(n.size))


def _chunks(run: _Run, size: int, full: bool) -> list[tuple[int, int, dict]]:
    n = run.su.n_agents
    out = []
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        d = dict(lp_id=run.att.lp_id[lo:hi], fund=run.att.fund[lo:hi].astype(np.int64), commitment=run.commit[lo:hi])
        if full:
            pop = run.su.pop[lo:hi]
            d.update(type=run.att.type_of[pop].astype(np.int8), strat=run.att.fund_strat[run.att.fund[lo:hi]]
                     .astype(np.int8), vintage=run.att.vint[pop].astype(np.int16), pop=pop,
                     nav_weight=run.nav_weight[lo:hi], quality=run.quality[lo:hi])
        out.append((lo, hi, d))
    return out


def _drive(run: _Run, ex, opts: DatasetOptions, progress) -> tuple[list, dict]:
    """Run the market; submit a holdings task per quarter mark and LP chunk, a year task per year."""
    su, ms, ctx = run.su, run.ms, run.ctx
    qi = quarter_index(su.t)
    year_of = np.floor(su.t + 1e-9).astype(np.int64)
    ctx_ref = ex.scatter(ctx)
    chunks = [(lo, hi, ex.scatter(d)) for lo, hi, d in _chunks(run, opts.chunk_lps, False)] \
        if opts.panel == "quarterly" else []
    marks: dict[int, float] = {}
    years, holds = [], []
    counts = {"deals": 0, "withdrawn": 0}
    for item in run_market(ms, progress):
        if item[0] == "mark":
            _, n, status, L = item
            marks[int(qi[n])] = active_nav(status, run.commit, run.att.fund, ctx.idx_rep, n)
            if n > 0:
                for c, (lo, hi, ch) in enumerate(chunks):
                    holds.append(ex.submit(holdings_task, ctx_ref, int(qi[n]) - 1, n, c, status[lo:hi], L[lo:hi], ch))
            continue
        _, y, p = item
        np.add.at(run.offers, p["step"], 1)
        who = _who(run, p["agent"])
        who["life"] = su.life[who["pop"], p["step"]] if p["agent"].size else np.zeros(0)
        steps = np.flatnonzero(year_of[:-1] == y)  # steps 0..N-1: no sale happens at t_N
        o = ms.out
        series = dict(steps=steps, price={int(s): float(o["price"][0, s]) for s in steps},
                      mfg={int(s): float(run.mfg_price[s]) for s in steps},
                      K={int(s): float(o["buyer_capital"][0, s]) for s in steps},
                      marks={q: v for q, v in marks.items() if q // 4 == y})
        years.append(ex.submit(year_task, ctx_ref, y, p, who, series, counts["deals"] + 1, counts["withdrawn"] + 1))
        counts["deals"] += int(p["sold"].sum())
        counts["withdrawn"] += int((~p["sold"]).sum())
    counts["holdings"] = sum(int(f.result()) for f in holds)
    return [f.result() for f in years], counts


def _write_static(run: _Run, ex, opts: DatasetOptions, aggs: list[dict], counts: dict) -> None:
    su, ctx, att = run.su, run.ctx, run.att
    ctx_ref = ex.scatter(ctx)
    futs = [ex.submit(lps_task, ctx_ref, c, d) for c, (_, _, d) in enumerate(_chunks(run, opts.chunk_lps, True))]
    counts["lps"] = sum(int(f.result()) for f in futs)
    size = np.bincount(att.fund, weights=run.commit, minlength=att.n_funds)
    n_f = np.bincount(att.fund, minlength=att.n_funds)
    keep = np.flatnonzero(n_f > 0)
    write_part(ctx.root, "funds", 0, [
        pa.array((keep + 1).astype(np.int32)), pa.array(att.fund_vint[keep].astype(np.int16)),
        dict_array(att.fund_strat[keep].astype(np.int8), att.strat_names), pa.array(size[keep]),
        pa.array(n_f[keep].astype(np.int32))], ctx.fmt, ctx.meta)
    counts["funds"] = int(keep.size)
    o = run.ms.out
    n_t = su.t.size
    nav = ctx.market_nav
    write_part(ctx.root, "truth/market", 0, [
        pa.array(np.arange(n_t, dtype=np.int32)), pa.array(su.t), pa.array(100.0 * o["price"][0]),
        pa.array(100.0 * run.mfg_price[:n_t]), pa.array(o["buyer_capital"][0] * nav),
        pa.array(o["mean_liquidity"][0]), pa.array(o["sell_flow"][0] * nav), pa.array(o["withdrawn"][0] * nav),
        pa.array(run.offers)], ctx.fmt, ctx.meta)
    for name in aggs[0] if aggs else ():
        df = pd.concat([a[name] for a in aggs if len(a[name])], ignore_index=True)
        write_part(ctx.root, name, 0, frame_columns(name, df), ctx.fmt, ctx.meta)
        counts[name] = len(df)


@locks_folder("out", what="gelav dataset")  # one run per folder
def generate(scenario, n_lps: int, seed: int, out, *, options: DatasetOptions | None = None, force: bool = False,
             threads: int | None = None, progress: Callable[[int, int], None] | None = None,
             executor: str = "local", client=None, workers: int = 2) -> Dataset:
    """Run the finite market of ``scenario`` with ``n_lps`` LPs and write the dataset to ``out`` (docs/datasets.md).

    scenario : a shipped scenario name, a TOML path or a :class:`~mfg.lp_exit.params.Scenario`.
    seed : a non-negative integer (the root of every random draw).
    options : :class:`~.options.DatasetOptions`.   force : overwrite a dataset in ``out``.
    threads : numba threads for the market (the data do not depend on it; default: 1 below 4 blocks of LPs).
    progress : ``progress(step, n_steps)`` after each market step (may raise to abort: nothing is left behind).
    executor : ``"local"`` (partition tasks in this process) or ``"dask"`` (on ``client``, a
        ``dask.distributed.Client`` or a scheduler address, or a local cluster of ``workers`` processes);
        the files are the same bytes either way.
    """
    t_start = time.perf_counter()
    opts = options or DatasetOptions()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sc, sc_name = _load(scenario)
    staging = Staging(out, force)
    ex, old_threads = None, numba.get_num_threads()
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        res = solve_policy(sc)
        timings["mfg"] = time.perf_counter() - t0
        run = _setup(sc, sc_name, res, n_lps, int(seed), opts, staging.root)
        ex = make_executor(executor, client, workers)
        if threads is None:
            threads = 1 if run.su.n_blocks < 4 else old_threads
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
        t0 = time.perf_counter()
        aggs, counts = _drive(run, ex, opts, progress)
        timings["market"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _write_static(run, ex, opts, aggs, counts)
        side = dict(run.meta, rows=counts, partitioning=PARTITIONING,
                    schema={n: [{"name": c, "type": str(ty), "unit": u, "description": d} for c, ty, u, d in cols]
                            for n, cols in SCHEMAS.items()})
        (staging.root / "dataset.json").write_text(json.dumps(side, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        timings["tables"] = time.perf_counter() - t0
        staging.commit()
    except BaseException:
        if ex is not None:  # first stop the workers, which write into the staging folder
            ex.close()
            ex = None
        staging.abort()
        raise
    finally:
        numba.set_num_threads(old_threads)
        if ex is not None:
            ex.close()
    out = Path(out)
    files = {e: out / e for e in ENTRIES if (out / e).exists()}
    return Dataset(folder=out, files=files, rows=counts, metadata=run.meta,
                   wall_time=time.perf_counter() - t_start, timings=timings)
