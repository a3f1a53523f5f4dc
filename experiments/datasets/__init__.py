"""Empirical-style datasets of the private-equity secondary market from the finite-N LP market (docs/datasets.md).

One module per job:

* :mod:`.options` — :class:`DatasetOptions` and the hand-set constants (strategies, buyer types);
* :mod:`.schema` — the tables, their columns, units and meaning; observed apart from truth;
* :mod:`.attributes` — commitments, funds, strategies and fund quality (seen by the market), NAV paths;
* :mod:`.market` — the engine's market, one step at a time, as quarter marks and years of sale processes;
* :mod:`.bids` — the buyers' side of the auction (bids, buyer types);
* :mod:`.tables` — the partition tasks (deals, withdrawn processes, holdings, LPs and their truth);
* :mod:`.aggregates` — quarterly and half-year aggregates;
* :mod:`.writer` — part files, the staging folder and the final swap;
* :mod:`.executor` — partition tasks here or on a Dask cluster;
* :mod:`.generate` — :func:`generate`;  :mod:`.load` — :func:`load_dataset`.
"""

from .generate import Dataset, generate, solve_policy
from .load import load_dataset, read_table
from .options import BUYER_TYPES, EQUAL, REALISTIC, STRATEGIES, STRATEGY_MIX, DatasetOptions
from .schema import OBSERVED, PARTITIONING, SCHEMAS, TRUTH, TRUTH_ONLY, schema_markdown
from .writer import DatasetExists

__all__ = ["BUYER_TYPES", "EQUAL", "REALISTIC", "STRATEGIES", "STRATEGY_MIX", "OBSERVED", "PARTITIONING", "SCHEMAS",
           "TRUTH", "TRUTH_ONLY", "Dataset", "DatasetExists", "DatasetOptions", "generate", "load_dataset",
           "read_table", "schema_markdown", "solve_policy"]
