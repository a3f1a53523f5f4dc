"""The buyers' side of the auction: bids on each sale process (docs/datasets.md, "Bids").

Buyers of each type hold a fixed share of the market's capital ``K`` (:data:`~.options.BUYER_TYPES`;
the demand ``D(P, K)`` of docs/model.md 2.4 is linear in ``K``, so the types' demands add up to the
market's).  A sale process in step ``n`` receives ``1 + Poisson(bidders x K^n / Kbar)`` bids; every
bidder's type is drawn in proportion to capital.  The best bid is the stake's clearing value
``P^n A dfac(L) quality`` (the uniform price the auction set, per unit of NAV: the price a deal closes
at); the others fall below it, ``best x exp(-s_type E)`` with ``E ~ Exp(1)`` and ``s_type`` the type's
spread.  A deal's buyer is the best bidder.  A withdrawn process's best bid is its clearing value too,
which lies below the seller's reservation (or at it, for the marginal offer rationed out).

Draws: one generator per market step (stream ``bids``, sub-stream ``n``), processes in the order
given (the step's deals, then its withdrawn processes, each in storage order): the bids do not
depend on how steps are grouped into partitions or workers.
"""

from __future__ import annotations

import numpy as np

from .options import BUYER_TYPES

__all__ = ["draw_bids"]

_SHARE = np.array([v[0] for v in BUYER_TYPES.values()])
_SPREAD = np.array([v[1] for v in BUYER_TYPES.values()])
_CUM = np.cumsum(_SHARE) / _SHARE.sum()


def draw_bids(rng: np.random.Generator, m: int, lam: float):
    """Bids on ``m`` sale processes as ratios to the best bid: ``(n_bids, median, low, winner_type)``."""
    n_lose = rng.poisson(lam, m) if lam > 0 else np.zeros(m, dtype=np.int64)
    win = np.searchsorted(_CUM, rng.random(m), side="right").clip(0, _SHARE.size - 1)
    tot = int(n_lose.sum())
    lose_type = np.searchsorted(_CUM, rng.random(tot), side="right").clip(0, _SHARE.size - 1)
    ratio = np.exp(-_SPREAD[lose_type] * rng.standard_exponential(tot))
    n_bids = n_lose + 1
    grp = np.repeat(np.arange(m), n_lose)
    low = np.ones(m)
    if tot:
        np.minimum.at(low, grp, ratio)
    # the median of {1, losing ratios} per process: sort each process's bids, take the middle
    allr = np.concatenate([np.ones(m), ratio])
    allg = np.concatenate([np.arange(m), grp])
    order = np.lexsort((-allr, allg))
    first = np.concatenate([[0], np.cumsum(n_bids)[:-1]]) if m else np.zeros(0, dtype=np.int64)
    srt = allr[order]
    lo_mid = srt[first + (n_bids - 1) // 2] if m else np.zeros(0)
    hi_mid = srt[first + n_bids // 2] if m else np.zeros(0)
    median = 0.5 * (lo_mid + hi_mid)
    return n_bids.astype(np.int16), median, low, win.astype(np.int8)
