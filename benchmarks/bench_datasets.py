"""Benchmark of `gelav dataset` (experiments/datasets/): rows per second and peak memory, 10^5 to 10^7 LPs.

Case: the calm scenario (clearing market) cut to ten years (2013-2023, 240 steps of 1/24; the
populations whose funds start after 2023 dropped, K0 and Kbar scaled so that buyers' capital stays the
same share of the NAV kept), default options (heavy-tailed commitments, funds, strategies, fund
quality, bids), quarterly holdings panel, Parquet.  Each size runs in its own process, which reports its wall time per
phase, the rows it wrote (every table, truth included), the bytes on disk and its peak resident
memory (``ru_maxrss``, the whole process: imports, MFG solve, market, writing).

    python benchmarks/bench_datasets.py                      # 1e5, 1e6, 1e7
    python benchmarks/bench_datasets.py --sizes 100000 --executor dask --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(n_lps: int, years: float, out: Path, executor: str, threads: int | None) -> dict:
    sys.path.insert(0, str(ROOT))
    from experiments.datasets import generate
    from mfg.lp_exit.params import load_scenario

    sc = load_scenario("calm")
    end = sc.model.start + years
    pops = sc.model.populations
    keep = tuple(p for p in pops if p.vintage < end)  # funds that start inside the cut window
    scale = sum(p.weight for p in pops) / sum(p.weight for p in keep)  # K stays the same share of the NAV kept
    mk = sc.model.market.model_copy(update={"K0": sc.model.market.K0 * scale, "Kbar": sc.model.market.Kbar * scale})
    sc = sc.model_copy(update={"model": sc.model.model_copy(update={"end": end, "populations": keep, "market": mk}),
                               "report": None})
    t0 = time.perf_counter()
    ds = generate(sc, n_lps, 2026, out, force=True, executor=executor, threads=threads)
    wall = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return dict(n_lps=n_lps, wall=wall, timings=ds.timings, rows=sum(ds.rows.values()), rows_by_table=ds.rows,
                bytes=size, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                agent_steps=n_lps * round(years * 24))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--executor", choices=["local", "dask"], default="local")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="keep the datasets under this folder (default: deleted)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.years, Path(a.out), a.executor, a.threads)))
        return
    base = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    print(f"# bench_datasets: calm cut to {a.years:g} years, executor {a.executor}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    print("| LPs | wall s | MFG s | market s | tables s | rows written | rows/s | agent-steps/s (market) | "
          "on disk | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in a.sizes:
        out = base / f"n{n}"
        cmd = [sys.executable, __file__, "--child", str(n), "--years", str(a.years), "--out", str(out),
               "--executor", a.executor] + (["--threads", str(a.threads)] if a.threads else [])
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        t = r["timings"]
        print(f"| {n:,} | {r['wall']:.1f} | {t['mfg']:.1f} | {t['market']:.1f} | {t['tables']:.1f} | "
              f"{r['rows']:,} | {r['rows'] / r['wall']:.3g} | {r['agent_steps'] / t['market']:.3g} | "
              f"{r['bytes'] / 1e9:.2f} GB | {r['peak_rss_mib']:.0f} MiB |", flush=True)
        if not a.out:
            shutil.rmtree(out, ignore_errors=True)
    if not a.out:
        shutil.rmtree(base, ignore_errors=True)
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
