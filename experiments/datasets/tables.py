"""The partition tasks: each builds and writes its part files from its inputs alone (no shared state).

:func:`year_task` writes one year of ``deals``, ``withdrawn`` and their truth and returns the year's
quarterly and half-year aggregates; :func:`holdings_task` one chunk of LPs of one quarter's holdings
and their truth; :func:`lps_task` one chunk of the per-LP tables.  The same function with the same
inputs writes the same bytes wherever it runs (this process, a thread, a Dask worker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .aggregates import year_aggregates
from .attributes import stream_rng
from .bids import draw_bids
from .calendar import quarter_end_days
from .options import BUYER_TYPES
from .schema import dict_array
from .writer import write_part

__all__ = ["Context", "year_task", "holdings_task", "lps_task"]

STATUS = ("pending", "active", "sold", "matured")  # abm.lp_market.engine status codes 0..3


@dataclass(frozen=True)
class Context:
    """What every task needs and the run fixes before the market starts (shipped once to Dask workers)."""

    root: str  # staging folder
    fmt: str
    meta: dict
    entropy: object
    spawn_key: tuple
    pool_size: int
    t: np.ndarray
    step_day: np.ndarray  # (n_t,) days since 1970-01-01
    q_first: int  # quarter index of the first label
    q_labels: tuple  # quarter labels of the window (dictionary of the quarter columns)
    types: tuple
    strat_names: tuple
    pop_names: tuple
    idx_true: np.ndarray  # (F, n_t) true NAV per unit of commitment
    idx_rep: np.ndarray  # (F, n_t) reported NAV per unit of commitment
    rep_day: np.ndarray  # (n_t,) NAV report day (-1: the sale date)
    bidders: float
    Kbar: float  # the buyers' calm target capital (bids scale with K / Kbar)
    market_nav: float  # $m per unit of model NAV

    def rng(self, stream: str, *sub: int) -> np.random.Generator:
        root = np.random.SeedSequence(entropy=self.entropy, spawn_key=self.spawn_key, pool_size=self.pool_size)
        return stream_rng(root, stream, *sub)

    def quarter_codes(self, qi) -> pa.DictionaryArray:
        return dict_array((np.asarray(qi) - self.q_first).astype(np.int16), self.q_labels, pa.int16())


def _dates(days) -> pa.Array:
    return pa.array(np.asarray(days, dtype=np.int32), pa.int32()).cast(pa.date32())


def _bids(ctx: Context, steps: np.ndarray, sold: np.ndarray, K: dict) -> tuple:
    """Bid ratios of the sale processes (deals first, then withdrawn, per step): one generator per step."""
    m = steps.size
    n_bids, med, low, win = np.ones(m, np.int16), np.ones(m), np.ones(m), np.zeros(m, np.int8)
    for s in np.unique(steps):
        idx = np.flatnonzero(steps == s)
        idx = np.concatenate([idx[sold[idx]], idx[~sold[idx]]])
        lam = ctx.bidders * K[int(s)] / ctx.Kbar if ctx.Kbar > 0 else ctx.bidders
        n_bids[idx], med[idx], low[idx], win[idx] = draw_bids(ctx.rng("bids", int(s)), idx.size, lam)
    return n_bids, med, low, win


def _sale_columns(ctx: Context, p: dict, who: dict, series: dict) -> dict:
    """Per sale process: the observed and truth quantities (arrays)."""
    s = p["step"].astype(np.int64)
    f = who["fund"]
    P = np.array([series["price"][int(x)] for x in s]) if s.size else np.zeros(0)
    value = P * p["a"] * who["quality"]  # the stake's clearing value per unit of true NAV (the best bid)
    tn = who["commitment"] * ctx.idx_true[f, s]
    rn = who["commitment"] * ctx.idx_rep[f, s]
    to_rep = ctx.idx_true[f, s] / ctx.idx_rep[f, s]
    n_bids, med, low, win = _bids(ctx, s, p["sold"], series["K"])
    qi = np.floor(4.0 * ctx.t[s] + 1e-6).astype(np.int64)
    nav_day = np.where(ctx.rep_day[s] >= 0, ctx.rep_day[s], ctx.step_day[s])
    return dict(s=s, P=P, value=value, true_nav=tn, rep_nav=rn, to_rep=to_rep, n_bids=n_bids, med=med, low=low,
                win=win, qi=qi, nav_day=nav_day, high_pct=100.0 * value * to_rep,
                res_pct=100.0 * p["r"] * p["a"] * who["quality"],
                mfg=np.array([series["mfg"][int(x)] for x in s]) if s.size else np.zeros(0))


def _common(ctx: Context, c: dict, who: dict, sel: np.ndarray) -> list:
    t = ctx.t[c["s"][sel]]
    return [_dates(ctx.step_day[c["s"][sel]]), ctx.quarter_codes(c["qi"][sel]), pa.array(t),
            pa.array(c["s"][sel].astype(np.int32)), pa.array(who["lp_id"][sel]),
            dict_array(who["type"][sel], ctx.types), pa.array((who["fund"][sel] + 1).astype(np.int32)),
            dict_array(who["strat"][sel], ctx.strat_names), pa.array(who["vintage"][sel]),
            pa.array(t - who["vintage"][sel].astype(float)), pa.array(who["commitment"][sel])]


def _write_deals(ctx: Context, year: int, c: dict, who: dict, p: dict, deal0: int) -> dict:
    sel = np.flatnonzero(p["sold"])
    ids = deal0 + np.arange(sel.size, dtype=np.int64)
    hi = c["high_pct"][sel]
    cons = c["value"][sel] * c["true_nav"][sel]
    key = ("year", str(year))
    write_part(ctx.root, "deals", 0, [pa.array(ids)] + _common(ctx, c, who, sel) + [
        pa.array(c["rep_nav"][sel]), _dates(c["nav_day"][sel]), pa.array(hi), pa.array(100.0 - hi), pa.array(cons),
        pa.array(c["n_bids"][sel]), pa.array(hi), pa.array(hi * c["med"][sel]), pa.array(hi * c["low"][sel]),
        dict_array(c["win"][sel], tuple(BUYER_TYPES))], ctx.fmt, ctx.meta, key)
    dfac = np.where(p["a"][sel] > 0, p["a"][sel] / np.maximum(who["life"][sel], 1e-300), 1.0)
    write_part(ctx.root, "truth/deals", 0, [
        pa.array(ids), dict_array(who["pop"][sel].astype(np.int8), ctx.pop_names), pa.array(p["x"][sel]),
        pa.array(c["true_nav"][sel]), pa.array(100.0 * c["value"][sel]), pa.array(100.0 * c["P"][sel]),
        pa.array(100.0 * c["mfg"][sel]), pa.array(who["life"][sel]), pa.array(dfac), pa.array(who["quality"][sel]),
        pa.array(c["res_pct"][sel])], ctx.fmt, ctx.meta, key)
    return dict(t=ctx.t[c["s"][sel]], qi=c["qi"][sel], type=who["type"][sel], strat=who["strat"][sel],
                age=ctx.t[c["s"][sel]] - who["vintage"][sel], nav=c["rep_nav"][sel], cons=cons, price=hi,
                n_bids=c["n_bids"][sel], low=hi * c["low"][sel], buyer=c["win"][sel])


def _write_withdrawn(ctx: Context, year: int, c: dict, who: dict, p: dict, proc0: int) -> dict:
    sel = np.flatnonzero(~p["sold"])
    ids = proc0 + np.arange(sel.size, dtype=np.int64)
    hi = c["high_pct"][sel]
    key = ("year", str(year))
    write_part(ctx.root, "withdrawn", 0, [pa.array(ids)] + _common(ctx, c, who, sel) + [
        pa.array(c["rep_nav"][sel]), pa.array(c["res_pct"][sel] * c["to_rep"][sel]), pa.array(c["n_bids"][sel]),
        pa.array(hi), pa.array(hi * c["med"][sel]), pa.array(hi * c["low"][sel])], ctx.fmt, ctx.meta, key)
    write_part(ctx.root, "truth/withdrawn", 0, [
        pa.array(ids), dict_array(who["pop"][sel].astype(np.int8), ctx.pop_names), pa.array(p["x"][sel]),
        pa.array(c["true_nav"][sel]), pa.array(100.0 * c["P"][sel]), pa.array(100.0 * c["mfg"][sel]),
        pa.array(who["quality"][sel]), pa.array(c["res_pct"][sel]), pa.array(p["rationed"][sel])],
        ctx.fmt, ctx.meta, key)
    return dict(qi=c["qi"][sel], type=who["type"][sel], nav=c["rep_nav"][sel], t=ctx.t[c["s"][sel]])


def year_task(ctx: Context, year: int, p: dict, who: dict, series: dict, deal0: int, proc0: int) -> dict:
    """Write one year of deals and withdrawn processes (and their truth); return its aggregates
    (``{table: pandas.DataFrame}``).  ``p``: the year's sale processes (:func:`.market.run_market`);
    ``who``: the sellers' attributes; ``series``: the market per step of the year (``price``, ``mfg``,
    ``K`` in model units, and ``marks``, the active NAV at each quarter-start mark, $m)."""
    c = _sale_columns(ctx, p, who, series)
    deals = _write_deals(ctx, year, c, who, p, deal0)
    wd = _write_withdrawn(ctx, year, c, who, p, proc0)
    return year_aggregates(ctx, year, deals, wd, series)


def holdings_task(ctx: Context, q: int, n: int, part: int, status: np.ndarray, L: np.ndarray, chunk: dict) -> int:
    """Write the holdings of LPs ``chunk`` at the end of quarter ``q`` (the mark at step ``n``) and their truth."""
    m = status.size
    act = status == 1
    f = chunk["fund"]
    key = ("quarter", ctx.q_labels[q - ctx.q_first])
    qcol = ctx.quarter_codes(np.full(m, q))
    rep = np.where(act, chunk["commitment"] * ctx.idx_rep[f, n], 0.0).astype(np.float32)
    write_part(ctx.root, "holdings", part, [
        qcol, _dates(np.full(m, quarter_end_days(q))), pa.array(chunk["lp_id"]), dict_array(status, STATUS),
        pa.array(rep)], ctx.fmt, ctx.meta, key)
    tru = np.where(act, chunk["commitment"] * ctx.idx_true[f, n], 0.0).astype(np.float32)
    write_part(ctx.root, "truth/holdings", part, [qcol, pa.array(chunk["lp_id"]), pa.array(L), pa.array(tru)],
               ctx.fmt, ctx.meta, key)
    return m


def lps_task(ctx: Context, part: int, chunk: dict) -> int:
    """Write one chunk of LPs of ``lps`` and ``truth/lps``."""
    write_part(ctx.root, "lps", part, [
        pa.array(chunk["lp_id"]), dict_array(chunk["type"], ctx.types), pa.array((chunk["fund"] + 1).astype(np.int32)),
        dict_array(chunk["strat"], ctx.strat_names), pa.array(chunk["vintage"]), pa.array(chunk["commitment"])],
        ctx.fmt, ctx.meta)
    write_part(ctx.root, "truth/lps", part, [
        pa.array(chunk["lp_id"]), dict_array(chunk["pop"].astype(np.int8), ctx.pop_names),
        pa.array(chunk["nav_weight"]), pa.array(chunk["quality"])], ctx.fmt, ctx.meta)
    return int(chunk["lp_id"].size)
