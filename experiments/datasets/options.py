"""Options of a dataset and the hand-set constants of its market attributes (docs/datasets.md).

Every number here is *set* (chosen from public figures or by hand), not fitted; docs/datasets.md
names each one beside the fact it bears on, and ``gelav dataset describe`` reports the facts
they touch as set, not as results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BUYER_TYPES", "DatasetOptions", "REALISTIC", "STRATEGIES", "STRATEGY_MIX", "AGE_BUCKETS"]

#: Strategy -> relative price level (a fund's deal price per unit of NAV, before the fund's own quality term;
#: normalised to NAV-weighted mean 1 in each population).  SET from vendor pricing by strategy (buyout trades
#: nearest NAV, venture and real estate deepest; docs/datasets.md).
STRATEGIES: dict[str, float] = {
    "buyout": 1.00,
    "growth": 0.97,
    "venture": 0.88,
    "real_estate": 0.90,
    "credit": 0.98,
    "infrastructure": 0.99,
}

#: LP type -> share of its stakes by strategy (same order as STRATEGIES); "other" for unknown types.  SET.
STRATEGY_MIX: dict[str, tuple[float, ...]] = {
    "pension": (0.45, 0.10, 0.05, 0.17, 0.13, 0.10),
    "endowment": (0.35, 0.15, 0.30, 0.10, 0.05, 0.05),
    "sovereign": (0.40, 0.10, 0.05, 0.20, 0.10, 0.15),
    "other": (0.45, 0.12, 0.12, 0.12, 0.11, 0.08),
}

#: Buyer type -> (share of the buyers' capital K, sd of a losing bid's log distance below the high bid).  SET:
#: dedicated secondary funds hold most of the dry powder and bid tightest.
#: The spreads are scaled together so that a calm deal's high - low bid is about the public 11 points
#: (docs/model.md 2.10 has no bid figure; the issue's public figure); measured, not a result.
BUYER_TYPES: dict[str, tuple[float, float]] = {
    "secondary_fund": (0.65, 0.056),
    "fund_of_funds": (0.20, 0.081),
    "other": (0.15, 0.112),
}

#: Fund-age buckets of the pricing tables: (label, lowest age, highest age), years, half-open [lo, hi).
AGE_BUCKETS = (("0-3", 0.0, 4.0), ("4-6", 4.0, 7.0), ("7-9", 7.0, 10.0), ("10+", 10.0, math.inf))


@dataclass(frozen=True)
class DatasetOptions:
    """Options of :func:`experiments.datasets.generate` (defaults: the market's attributes on, reporting overlays off).

    Market attributes (the finite-N market sees them, docs/model.md 2.8):

    commitment_sd : sd of log commitment size (lognormal; 0: equal stakes).  1.2 gives a 5-95% range of 52x.
    funds_per_strategy : funds per (vintage, strategy).
    quality_sd : sd of a fund's log quality term (0: none); the fund's deal-price multiplier is its
        strategy's level x ``exp(quality_sd Z)``.
    strategies : whether funds have strategies (False: every fund is buyout, level 1).
    mean_commitment : mean commitment of a stake, $m (the market's NAV is ``n_lps x mean_commitment``).

    Bids (the buyers' side of the auction):

    bidders : mean number of losing bidders per sale process when buyers hold their calm target capital
        (``1 + Poisson(bidders x K / Kbar)`` bids in all).

    Reporting (not seen by the market):

    stale_nav : quarters by which reported NAV lags the true NAV (0, 1 or 2).
    nav_vol : volatility of a fund's log true NAV, per sqrt year.
    nav_drop : fall of true NAV at each shock time (None: 0.45 x the largest capital cut at that time).

    Output: ``fmt`` ("parquet" or "csv"), ``panel`` ("quarterly" or "none": the holdings panel and its
    truth), ``chunk_lps`` (LPs per part file of the per-LP tables), ``transition`` and ``block_size`` (the
    engine's; results depend on the block size).
    """

    commitment_sd: float = 1.2
    funds_per_strategy: int = 8
    quality_sd: float = 0.07
    strategies: bool = True
    mean_commitment: float = 25.0
    bidders: float = 4.0
    stale_nav: int = 0
    nav_vol: float = 0.0
    nav_drop: float | None = None
    fmt: str = "parquet"
    panel: str = "quarterly"
    chunk_lps: int = 1 << 20
    transition: str = "exact"
    block_size: int = 1 << 15

    def __post_init__(self):
        if self.stale_nav not in (0, 1, 2):
            raise ValueError(f"stale_nav must be 0, 1 or 2 quarters, got {self.stale_nav!r}")
        for name, hi in (("commitment_sd", 3.0), ("quality_sd", 1.0), ("nav_vol", 1.0), ("bidders", 100.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= hi):
                raise ValueError(f"{name} must lie in [0, {hi:g}], got {v!r}")
        for name, lo, hi in (("funds_per_strategy", 1, 10_000), ("chunk_lps", 1, 1 << 30)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.nav_drop is not None and not (math.isfinite(self.nav_drop) and 0.0 <= self.nav_drop < 1.0):
            raise ValueError(f"nav_drop must lie in [0, 1), got {self.nav_drop!r}")
        if not (math.isfinite(self.mean_commitment) and self.mean_commitment > 0):
            raise ValueError(f"mean_commitment must be positive, got {self.mean_commitment!r}")
        if self.fmt not in ("parquet", "csv"):
            raise ValueError(f"fmt must be 'parquet' or 'csv', got {self.fmt!r}")
        if self.panel not in ("quarterly", "none"):
            raise ValueError(f"panel must be 'quarterly' or 'none', got {self.panel!r}")

    @property
    def weighted(self) -> bool:
        """Whether the LPs carry their own NAV weights or qualities in the market."""
        return self.commitment_sd > 0 or self.quality_sd > 0 or self.strategies


#: ``--realistic``: the reporting overlays on as well (stale NAV two quarters, NAV volatility 0.10).
REALISTIC = dict(stale_nav=2, nav_vol=0.10)

#: The market of equal LPs (the engine's paths as before: no weights, one buyout fund per vintage).
EQUAL = dict(commitment_sd=0.0, quality_sd=0.0, strategies=False, funds_per_strategy=1)
