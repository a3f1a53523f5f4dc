"""Quarterly and half-year aggregates of one calendar year (a period never crosses a year).

Four tables per frequency, each a partition of the period's deals (no deal is counted twice in one
table): ``market`` (one row per period), ``pricing`` (strategy x fund-age bucket), ``sellers`` (LP type)
and ``buyers`` (buyer type).  Computed from the year's deals and withdrawn processes by
:func:`year_aggregates` inside the year's task; :func:`frame_columns` turns a frame into a table's arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa

from .calendar import half_start_days, hlabel, qlabel, quarter_start_days
from .options import AGE_BUCKETS, BUYER_TYPES
from .schema import SCHEMAS, dict_array

__all__ = ["year_aggregates", "frame_columns"]


def _stats(nav, cons, price) -> dict:
    v = float(np.sum(nav))
    return dict(n_deals=int(price.size), volume_nav=v,
                price_wavg=100.0 * float(np.sum(cons)) / v if v > 0 else math.nan,
                price_mean=float(np.mean(price)) if price.size else math.nan,
                price_sd=float(np.std(price, ddof=1)) if price.size > 1 else math.nan)


def _periods(ctx, year: int, steps: np.ndarray):
    """``(kind, label, start day, steps mask over the year's steps, quarters)`` of the year's periods with steps."""
    qi = np.floor(4.0 * ctx.t[steps] + 1e-6).astype(np.int64)
    out = []
    for q in range(4 * year, 4 * year + 4):
        if np.any(qi == q):
            out.append(("quarterly", qlabel(q), quarter_start_days(q), qi == q, [q]))
    for h in (2 * year, 2 * year + 1):
        sel = (qi // 2) == h
        if np.any(sel):
            out.append(("halfyear", hlabel(h), half_start_days(h), sel, [q for q in (2 * h, 2 * h + 1) if
                                                                          np.any(qi == q)]))
    return out


def _market_row(ctx, d, w, dm, wm, psel, K, marks, qs) -> dict:
    row = _stats(d["nav"][dm], d["cons"][dm], d["price"][dm])
    nb, lo, hi = d["n_bids"][dm], d["low"][dm], d["price"][dm]
    two = nb >= 2
    row.update(steps=int(psel.sum()), consideration=float(np.sum(d["cons"][dm])),
               bids_mean=float(np.mean(nb)) if nb.size else math.nan,
               bid_high_mean=float(np.mean(hi)) if hi.size else math.nan,
               bid_low_mean=float(np.mean(lo)) if lo.size else math.nan,
               bid_spread_mean=float(np.mean(hi[two] - lo[two])) if two.any() else math.nan,
               n_withdrawn=int(wm.sum()), withdrawn_nav=float(np.sum(w["nav"][wm])),
               active_nav=float(np.mean([marks[q] for q in qs if q in marks])) if any(q in marks for q in qs)
               else math.nan,
               dry_powder=float(np.mean(K[psel])) * ctx.market_nav)
    return row


def year_aggregates(ctx, year: int, d: dict, w: dict, series: dict) -> dict[str, pd.DataFrame]:
    steps = np.asarray(series["steps"])
    K = np.array([series["K"][int(s)] for s in steps])
    rows: dict[str, list] = {f"{f}_{t}": [] for f in ("quarterly", "halfyear") for t in ("market", "pricing", "sellers",
                                                                                         "buyers")}
    d_q = np.floor(4.0 * d["t"] + 1e-6).astype(np.int64)
    w_q = np.floor(4.0 * w["t"] + 1e-6).astype(np.int64)
    share = {b: v[0] / sum(x[0] for x in BUYER_TYPES.values()) for b, v in BUYER_TYPES.items()}
    for kind, label, day, psel, qs in _periods(ctx, year, steps):
        dm, wm = np.isin(d_q, qs), np.isin(w_q, qs)
        base = dict(period=label, period_start=day)
        rows[f"{kind}_market"].append({**base, **_market_row(ctx, d, w, dm, wm, psel, K, series["marks"], qs)})
        tot = float(np.sum(d["nav"][dm]))
        for si, s in enumerate(ctx.strat_names):
            for b, lo, hi in AGE_BUCKETS:
                m = dm & (d["strat"] == si) & (d["age"] >= lo) & (d["age"] < hi)
                rows[f"{kind}_pricing"].append({**base, "strategy": s, "age_bucket": b,
                                                **_stats(d["nav"][m], d["cons"][m], d["price"][m])})
        for ti, ty in enumerate(ctx.types):
            m, mw = dm & (d["type"] == ti), wm & (w["type"] == ti)
            st = _stats(d["nav"][m], d["cons"][m], d["price"][m])
            del st["price_mean"], st["price_sd"]
            rows[f"{kind}_sellers"].append({**base, "lp_type": ty, **st,
                                            "volume_share_pct": 100.0 * st["volume_nav"] / tot if tot > 0 else math.nan,
                                            "n_withdrawn": int(mw.sum()), "withdrawn_nav": float(np.sum(w["nav"][mw]))})
        for bi, b in enumerate(BUYER_TYPES):
            m = dm & (d["buyer"] == bi)
            st = _stats(d["nav"][m], d["cons"][m], d["price"][m])
            del st["price_mean"], st["price_sd"]
            rows[f"{kind}_buyers"].append({**base, "buyer_type": b, **st,
                                           "volume_share_pct": 100.0 * st["volume_nav"] / tot if tot > 0 else math.nan,
                                           "consideration": float(np.sum(d["cons"][m])),
                                           "capital": share[b] * float(np.mean(K[psel])) * ctx.market_nav})
    return {k: pd.DataFrame(v) for k, v in rows.items()}


def frame_columns(name: str, df: pd.DataFrame) -> list:
    """The arrays of table ``name`` (schema order) from a frame of its rows (dictionary columns from strings)."""
    cols = []
    for c, typ, _, _ in SCHEMAS[name]:
        v = df[c] if c in df else pd.Series([], dtype=object)
        if pa.types.is_dictionary(typ):
            names = list(dict.fromkeys(v.astype(str)))
            codes = np.array([names.index(x) for x in v.astype(str)], dtype=np.int64)
            cols.append(dict_array(codes.astype(typ.index_type.to_pandas_dtype()), names, typ.index_type))
        elif typ == pa.date32():
            cols.append(pa.array(v.to_numpy(np.int32), pa.int32()).cast(pa.date32()))
        else:
            cols.append(pa.array(v.to_numpy(), typ))
    return cols
