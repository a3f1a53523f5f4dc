"""Writing a dataset: part files of partitioned tables into a staging folder, swapped into place at the end.

Layout (pyarrow's hive-partitioned dataset layout; docs/datasets.md)::

    OUT/dataset.json
    OUT/deals/year=2009/part-00000.parquet          partitioned by year (deals, withdrawn and their truth)
    OUT/holdings/quarter=2009Q1/part-00003.parquet  by quarter, one part per chunk of LPs
    OUT/lps/part-00003.parquet                      per-LP tables: one part per chunk of LPs
    OUT/quarterly_market/part-00000.parquet         one part
    OUT/truth/...                                   the same for the truth tables

Atomicity: every part is written into ``OUT/.gelav-staging-PID`` (one run per folder holds the folder
lock); :meth:`Staging.commit` moves the previous dataset's entries aside, moves the new ones in and
deletes the old, ``dataset.json`` last, so a folder holds the old dataset, or the new one, and an
exception or an interrupt leaves the old one untouched (:meth:`Staging.abort`).  Bytes are
deterministic: no timestamp, host or path is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa

from .schema import SCHEMAS, arrow_schema

__all__ = ["DatasetExists", "Staging", "write_part", "part_path", "meta_bytes", "ENTRIES"]

#: The top-level entries of a dataset folder.
ENTRIES = tuple(dict.fromkeys(n.split("/")[0] for n in SCHEMAS)) + ("stylised_facts.png", "dataset.json")


class DatasetExists(FileExistsError):
    """The output folder already holds a dataset (pass ``force=True``)."""


def meta_bytes(meta: dict) -> dict[bytes, bytes]:
    return {b"gelav.dataset": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()}


def part_path(root: Path, table: str, part: int, fmt: str, key: tuple[str, str] | None = None) -> Path:
    sub = Path(table) / (f"{key[0]}={key[1]}" if key else "")
    return Path(root) / sub / f"part-{part:05d}.{'parquet' if fmt == 'parquet' else 'csv'}"


def _plain(table: pa.Table) -> pa.Table:
    cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(cols, names=table.column_names)


def write_part(root: Path, table: str, part: int, columns: list, fmt: str, meta: dict[bytes, bytes],
               key: tuple[str, str] | None = None) -> int:
    """Write one part of ``table`` (arrays in schema order); returns its rows."""
    schema = arrow_schema(table, meta)
    tab = pa.Table.from_arrays(columns, schema=schema)
    path = part_path(root, table, part, fmt, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        dict_cols = [f.name for f in schema if pa.types.is_dictionary(f.type)]  # (dictionary pages elsewhere cost
        pq.write_table(tab, str(path), compression="zstd", use_dictionary=dict_cols,  # 2x the time for nothing)
                       write_statistics=True, row_group_size=1 << 20)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(_plain(tab), str(path))
    return tab.num_rows


class Staging:
    """The staging folder of one run in ``out`` (see the module docstring)."""

    def __init__(self, out, force: bool):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        existing = [self.out / e for e in ENTRIES if (self.out / e).exists()]
        if existing and not force:
            raise DatasetExists(f"{existing[0]} exists (use --force / force=True to overwrite)")
        for p in self.out.glob(".gelav-staging-*"):  # a killed run's (the folder lock is ours)
            shutil.rmtree(p, ignore_errors=True)
        for p in self.out.glob(".gelav-old-*"):
            shutil.rmtree(p, ignore_errors=True)
        self.root = self.out / f".gelav-staging-{os.getpid()}"
        self.root.mkdir()

    def commit(self) -> None:
        old = self.out / f".gelav-old-{os.getpid()}"
        old.mkdir()
        meta = self.out / "dataset.json"
        if meta.exists():  # first: the old dataset is no longer complete
            os.replace(meta, old / "dataset.json")
        for e in ENTRIES:
            if (self.out / e).exists():
                os.replace(self.out / e, old / e)
        for e in ENTRIES:
            if e != "dataset.json" and (self.root / e).exists():
                os.replace(self.root / e, self.out / e)
        os.replace(self.root / "dataset.json", meta)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
