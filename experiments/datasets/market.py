"""The finite-N market, one step at a time, as a stream of quarter marks and years of sale processes.

The engine's own state and kernel (:class:`abm.lp_market.engine.MarketState`) are advanced by
``run(n, n + 1)``, so the market is the one :func:`abm.lp_market.engine.simulate` runs with the same
seed, bit for bit.  After each step the driver reads the step's sale processes: in the clearing
market the auction's offers (:meth:`~abm.lp_market.engine.MarketState.step_offers`: sold or withdrawn,
with the reservation, the deal-price multiplier and the liquidity at the offer); in the impact market
the LPs whose status turned to sold.  Memory: the engine's per-LP state (``O(n_lps)``), one year of sale
processes and one quarter mark at a time; the market's time steps are the one sequential part.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from abm.lp_market.engine import ACTIVE, SOLD, MarketState

from .calendar import quarter_index

__all__ = ["run_market"]

_FIELDS = ("step", "agent", "sold", "a", "x", "r", "rationed")


def _impact_processes(ms: MarketState, n: int, before: np.ndarray) -> dict:
    st = ms.status[0]
    changed = np.flatnonzero(st != before)
    sold = changed[st[changed] == SOLD]
    pop = ms.su.pop[sold]
    return dict(step=np.full(sold.size, n, np.int32), agent=sold.astype(np.int64), sold=np.ones(sold.size, bool),
                a=ms.su.life[pop, n].astype(float), x=ms.L[0, sold].copy(), r=np.full(sold.size, np.nan),
                rationed=np.zeros(sold.size, bool))


def _clearing_processes(ms: MarketState, n: int) -> dict:
    o = ms.step_offers()
    P = ms.out["price"][0, n]
    rationed = (~o["sold"]) & (o["r"] == P)
    # launched processes: the deals, and the offers that would have sold at the calm price pbar (the market's
    # withdrawn supply W of docs/model.md 2.4) or were rationed out at the clearing price
    keep = o["sold"] | (o["r"] <= ms.su.pbar[n]) | rationed
    o = {k: v[keep] for k, v in o.items()}
    m = o["agent"].size
    return dict(step=np.full(m, n, np.int32), agent=o["agent"], sold=o["sold"], a=o["a"], x=o["x"], r=o["r"],
                rationed=rationed[keep])


def _concat(parts: list[dict]) -> dict:
    if not parts:
        return {f: np.zeros(0, dtype=t) for f, t in zip(_FIELDS, (np.int32, np.int64, bool, float, float, float,
                                                                  bool))}
    return {f: np.concatenate([p[f] for p in parts]) for f in _FIELDS}


def run_market(ms: MarketState, progress=None) -> Iterator[tuple]:
    """Run every step; yield ``("mark", n, status, L)`` at step 0 and at the first step of every quarter (the
    state before that step's sales: ``status`` int8 and ``L`` float32 copies), and ``("year", y, processes)``
    when the steps of calendar year ``y`` are done (``processes``: the year's sale processes, by step, then
    agent: ``step, agent, sold, a, x, r, rationed``)."""
    su = ms.su
    t = su.t
    qi = quarter_index(t)
    year = np.floor(t + 1e-9).astype(np.int64)
    clearing = su.clearing is not None
    parts: list[dict] = []
    for n in range(t.size):
        if n > 0 and year[n] != year[n - 1]:
            yield "year", int(year[n - 1]), _concat(parts)
            parts = []
        if n == 0 or qi[n] != qi[n - 1]:
            yield "mark", n, ms.status[0].copy(), ms.L[0].astype(np.float32)
        before = None if clearing else ms.status[0].copy()
        ms.run(n, n + 1)
        p = _clearing_processes(ms, n) if clearing else _impact_processes(ms, n, before)
        if p["agent"].size:
            parts.append(p)
        if progress is not None:
            progress(n, t.size - 1)
    yield "year", int(year[-1]), _concat(parts)


def active_nav(status: np.ndarray, commit: np.ndarray, fund: np.ndarray, idx: np.ndarray, n: int,
               chunk: int = 1 << 22) -> float:
    """NAV held by the active LPs at step ``n``: ``sum commitment x NAV index of the fund`` (in chunks)."""
    tot = 0.0
    for lo in range(0, status.size, chunk):
        act = status[lo:lo + chunk] == ACTIVE
        tot += float(np.dot(commit[lo:lo + chunk][act], idx[fund[lo:lo + chunk][act], n]))
    return tot
