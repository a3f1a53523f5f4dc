"""The tables of a dataset: names, types, units, meaning (docs/datasets.md prints :func:`schema_markdown`).

Observed tables hold what a researcher gets from an intermediary or a data vendor; the truth
tables (``truth/...``) hold the latent state, keyed to the observed rows (``deal_id``,
``process_id``, ``lp_id``, ``fund_id``, ``(quarter, lp_id)``, ``step``).  No truth column appears in an
observed table (:data:`TRUTH_ONLY`, tested).
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["SCHEMAS", "OBSERVED", "TRUTH", "TRUTH_ONLY", "PARTITIONING", "arrow_schema", "schema_markdown",
           "dict_array"]

D8 = pa.dictionary(pa.int8(), pa.string())
D16 = pa.dictionary(pa.int16(), pa.string())
F64, F32, I64, I32, I16, DATE = pa.float64(), pa.float32(), pa.int64(), pa.int32(), pa.int16(), pa.date32()

_SALE = [  # the columns a deal and a withdrawn sale process share
    ("date", DATE, "date", "date of the sale process's outcome (the start t_n of the market step)"),
    ("quarter", D16, "", "calendar quarter, e.g. 2009Q1"),
    ("t", F64, "year", "time in decimal years (t_n)"),
    ("step", I32, "", "market step n"),
    ("lp_id", I64, "", "seller's id (a fixed random permutation of the LPs)"),
    ("lp_type", D8, "", "seller's type (pension, endowment, sovereign, ...)"),
    ("fund_id", I32, "", "fund whose stake is offered"),
    ("strategy", D8, "", "fund strategy"),
    ("vintage", I16, "year", "fund vintage"),
    ("fund_age", F64, "year", "t - vintage"),
    ("commitment", F64, "$m", "seller's commitment to the fund"),
]
_PERIOD = [("period", D16, "", "calendar quarter (2009Q1) or half-year (2009H1)"),
           ("period_start", DATE, "date", "first day of the period")]
_VOLUME = [("n_deals", I64, "", "number of deals"),
           ("volume_nav", F64, "$m", "reported NAV sold"),
           ("price_wavg", F64, "% of reported NAV",
            "NAV-weighted price: 100 x consideration / volume_nav (NaN without deals)")]
_DISPERSION = [("price_mean", F64, "% of reported NAV", "mean deal price (NaN without deals)"),
               ("price_sd", F64, "% of reported NAV", "sd of deal prices (ddof 1; NaN with fewer than 2 deals)")]

SCHEMAS: dict[str, list[tuple[str, pa.DataType, str, str]]] = {
    "lps": [
        ("lp_id", I64, "", "LP id"), ("lp_type", D8, "", "LP type"), ("fund_id", I32, "", "the LP's fund"),
        ("strategy", D8, "", "the fund's strategy"), ("vintage", I16, "year", "the fund's vintage"),
        ("commitment", F64, "$m", "the LP's commitment to the fund (heavy-tailed across LPs)"),
    ],
    "funds": [
        ("fund_id", I32, "", "fund id"), ("vintage", I16, "year", "vintage"), ("strategy", D8, "", "strategy"),
        ("fund_size", F64, "$m", "sum of the commitments of the fund's LPs in the dataset"),
        ("n_lps", I32, "", "LPs of the fund in the dataset"),
    ],
    "deals": [("deal_id", I64, "", "deal id (step, then seller's storage order)")] + _SALE + [
        ("nav_sold", F64, "$m", "reported NAV of the stake sold (what the buyer prices against)"),
        ("nav_date", DATE, "date", "date of the NAV report (the sale date when NAV is not stale, else the end of "
                                   "the quarter it dates from)"),
        ("price_pct_nav", F64, "% of reported NAV", "price paid per unit of reported NAV (the high bid)"),
        ("discount_pct", F64, "% of reported NAV", "100 - price_pct_nav"),
        ("consideration", F64, "$m", "amount paid: price_pct_nav / 100 x nav_sold"),
        ("n_bids", I16, "", "number of bids received"),
        ("bid_high_pct", F64, "% of reported NAV", "highest bid (the price paid)"),
        ("bid_median_pct", F64, "% of reported NAV", "median bid"),
        ("bid_low_pct", F64, "% of reported NAV", "lowest bid"),
        ("buyer_type", D8, "", "buyer's type (secondary_fund, fund_of_funds, other)"),
    ],
    "withdrawn": [("process_id", I64, "", "sale-process id (step, then seller's storage order)")] + _SALE + [
        ("nav_offered", F64, "$m", "reported NAV of the stake offered"),
        ("reservation_pct", F64, "% of reported NAV", "the seller's reservation price"),
        ("n_bids", I16, "", "number of bids received"),
        ("bid_high_pct", F64, "% of reported NAV", "best bid (below the reservation, or rationed out at it)"),
        ("bid_median_pct", F64, "% of reported NAV", "median bid"),
        ("bid_low_pct", F64, "% of reported NAV", "lowest bid"),
    ],
    "holdings": [
        ("quarter", D16, "", "quarter whose end the row describes"), ("date", DATE, "date", "last day of the quarter"),
        ("lp_id", I64, "", "LP id"),
        ("status", D8, "", "pending (fund not started), active, sold or matured, at the first market step on or "
                           "after the quarter's end, before that step's sales"),
        ("nav_reported", F32, "$m", "reported NAV of the stake held (0 when not active)"),
    ],
    "quarterly_market": _PERIOD + [("steps", I32, "", "market steps in the period")] + _VOLUME + _DISPERSION + [
        ("consideration", F64, "$m", "amount paid"),
        ("bids_mean", F64, "", "mean number of bids per deal"),
        ("bid_high_mean", F64, "% of reported NAV", "mean high bid"),
        ("bid_low_mean", F64, "% of reported NAV", "mean low bid"),
        ("bid_spread_mean", F64, "% of reported NAV", "mean of high - low bid over deals with 2 or more bids"),
        ("n_withdrawn", I64, "", "sale processes launched and withdrawn"),
        ("withdrawn_nav", F64, "$m", "reported NAV of the withdrawn processes"),
        ("active_nav", F64, "$m", "reported NAV held by active LPs (mean over the period's quarter-end marks)"),
        ("dry_powder", F64, "$m", "secondary buyers' capital K (mean over the period's steps)"),
    ],
    "quarterly_pricing": _PERIOD + [("strategy", D8, "", "fund strategy"),
                                    ("age_bucket", D8, "year", "fund age at the deal: 0-3, 4-6, 7-9, 10+")]
    + _VOLUME + _DISPERSION,
    "quarterly_sellers": _PERIOD + [("lp_type", D8, "", "seller's type")] + _VOLUME + [
        ("volume_share_pct", F64, "%", "share of the period's volume"),
        ("n_withdrawn", I64, "", "withdrawn sale processes of this type"),
        ("withdrawn_nav", F64, "$m", "their reported NAV"),
    ],
    "quarterly_buyers": _PERIOD + [("buyer_type", D8, "", "buyer's type")] + _VOLUME + [
        ("volume_share_pct", F64, "%", "share of the period's volume"),
        ("consideration", F64, "$m", "amount paid"),
        ("capital", F64, "$m", "the type's share of the buyers' capital K (mean over the period's steps)"),
    ],
    "truth/lps": [
        ("lp_id", I64, "", "LP id"), ("population", D8, "", "model population (LP type x vintage)"),
        ("nav_weight", F64, "", "NAV weight in the market relative to the population's per-LP weight"),
        ("quality", F64, "",
         "deal-price multiplier (strategy level x fund quality, NAV-weighted mean 1 per population)"),
    ],
    "truth/deals": [
        ("deal_id", I64, "", "deal id"), ("population", D8, "", "model population"),
        ("liquidity", F64, "", "the seller's liquidity L at the decision"),
        ("true_nav", F64, "$m", "true NAV of the stake"),
        ("true_price_pct", F64, "% of true NAV", "price paid per unit of true NAV"),
        ("market_price_pct", F64, "% of true NAV", "the finite market's clearing price factor P^n"),
        ("mfg_price_pct", F64, "% of true NAV", "the MFG equilibrium's P^n"),
        ("life_factor", F64, "", "remaining-life factor A_k(tau)"),
        ("distress_factor", F64, "", "1 - delta (ell - L)^+ (clearing market; 1 in the impact market)"),
        ("quality", F64, "", "the stake's deal-price multiplier"),
        ("true_reservation_pct", F64, "% of true NAV", "the seller's reservation price (NaN in the impact market)"),
    ],
    "truth/withdrawn": [
        ("process_id", I64, "", "sale-process id"), ("population", D8, "", "model population"),
        ("liquidity", F64, "", "the seller's liquidity L at the offer"),
        ("true_nav", F64, "$m", "true NAV of the stake"),
        ("market_price_pct", F64, "% of true NAV", "the finite market's clearing price factor P^n"),
        ("mfg_price_pct", F64, "% of true NAV", "the MFG equilibrium's P^n"),
        ("quality", F64, "", "the stake's deal-price multiplier"),
        ("true_reservation_pct", F64, "% of true NAV", "the seller's reservation price per unit of true NAV"),
        ("rationed", pa.bool_(), "", "the marginal offer, priced at its reservation and rationed out"),
    ],
    "truth/market": [
        ("step", I32, "", "market step n"), ("t", F64, "year", "t_n"),
        ("market_price_pct", F64, "% of true NAV", "the finite market's P^n"),
        ("mfg_price_pct", F64, "% of true NAV", "the MFG equilibrium's P^n"),
        ("buyer_capital", F64, "$m", "K^n at the start of the step"),
        ("mean_liquidity", F64, "", "M^n (NaN when nobody is active)"),
        ("sell_flow", F64, "$m a year", "value that trades"),
        ("withdrawn_flow", F64, "$m a year", "W^n: offers that would have sold at pbar and did not (clearing market)"),
        ("offers", I64, "", "sale processes of the step in the dataset (its deals and withdrawn processes)"),
    ],
    "truth/holdings": [
        ("quarter", D16, "", "quarter"), ("lp_id", I64, "", "LP id"),
        ("liquidity", F32, "", "liquidity L at the quarter-end mark (the last value for sold or matured LPs)"),
        ("true_nav", F32, "$m", "true NAV of the stake held (0 when not active)"),
    ],
}
for _p in ("market", "pricing", "sellers", "buyers"):
    SCHEMAS[f"halfyear_{_p}"] = SCHEMAS[f"quarterly_{_p}"]

TRUTH = tuple(n for n in SCHEMAS if n.startswith("truth/"))
OBSERVED = tuple(n for n in SCHEMAS if not n.startswith("truth/"))
_KEYS = {"deal_id", "process_id", "lp_id", "quarter", "step", "t", "fund_id"}
#: Columns that exist only in truth tables (no observed table may have one).
TRUTH_ONLY = frozenset(c for n in TRUTH for c, *_ in SCHEMAS[n]) - _KEYS
#: Partitioned tables: table -> hive partition key ("year" or "quarter"); the per-LP tables are cut into parts
#: of ``chunk_lps`` LPs; the rest are one file.
PARTITIONING = {"deals": "year", "withdrawn": "year", "truth/deals": "year", "truth/withdrawn": "year",
                "holdings": "quarter", "truth/holdings": "quarter"}
assert not (TRUTH_ONLY & {c for n in OBSERVED for c, *_ in SCHEMAS[n]})


def arrow_schema(name: str, meta: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [pa.field(n, t, metadata={b"unit": u.encode(), b"description": d.encode()})
              for n, t, u, d in SCHEMAS[name]]
    return pa.schema(fields, metadata=meta)


def dict_array(codes, names, index_type=None) -> pa.DictionaryArray:
    index_type = pa.int8() if index_type is None else index_type
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=index_type), pa.array(list(names), pa.string()))


def schema_markdown() -> str:
    """The schema as markdown tables (docs/datasets.md)."""
    out = []
    for name, cols in SCHEMAS.items():
        if name.startswith("halfyear_"):
            continue
        title = f"`{name}`" + (f" (and `halfyear_{name[10:]}`)" if name.startswith("quarterly_") else "")
        out.append(f"### {title}\n\n| column | type | unit | meaning |\n|---|---|---|---|")
        for n, t, u, d in cols:
            ts = "string (dictionary)" if pa.types.is_dictionary(t) else str(t)
            out.append(f"| `{n}` | {ts} | {u} | {d} |")
        out.append("")
    return "\n".join(out)
