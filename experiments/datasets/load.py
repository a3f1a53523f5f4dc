"""Reading a dataset back: :func:`load_dataset` (pandas frames) and :func:`read_table` (one table)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .schema import SCHEMAS

__all__ = ["load_dataset", "read_table", "table_files"]


def table_files(folder, name: str) -> list[Path]:
    """The part files of table ``name`` in path order (partition, then part)."""
    root = Path(folder) / name
    files = sorted(p for p in root.rglob("part-*") if p.suffix in (".parquet", ".csv"))
    if not files:
        raise FileNotFoundError(f"{folder} has no table {name!r} ({root} holds no part files)")
    return files


def read_table(folder, name: str, columns=None) -> pd.DataFrame:
    """Table ``name`` of the dataset in ``folder`` as one frame (parts concatenated in path order; Parquet or
    CSV; dictionary columns as categoricals from Parquet, strings from CSV)."""
    files = table_files(folder, name)
    if files[0].suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tabs = [pq.read_table(f, columns=columns) for f in files]
        tab = pa.concat_tables(tabs, promote_options="permissive").unify_dictionaries()
        return tab.to_pandas()
    frames = [pd.read_csv(f, usecols=columns) for f in files]
    return pd.concat(frames, ignore_index=True)


def load_dataset(folder, tables=("deals", "withdrawn", "quarterly_market")) -> tuple[dict[str, pd.DataFrame], dict]:
    """``({name: DataFrame}, metadata)`` of the dataset in ``folder``."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no dataset (no dataset.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    unknown = [t for t in tables if t not in SCHEMAS]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; a dataset has {list(SCHEMAS)}")
    return {name: read_table(folder, name) for name in tables}, meta
