"""Benchmark of `gelav dataset` (experiments/datasets.py): a large market end to end.

Default: the calm scenario stretched to 15 years (2015-2030, weekly steps: 780 steps), 10^6 LPs,
all realism options on (``--realistic``), Parquet.  Reports the wall time per phase, the rows
and bytes written and the peak resident memory of the process (``ru_maxrss``).

    python benchmarks/bench_datasets.py [--n-lps 1000000] [--years 15] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-lps", type=int, default=1_000_000)
    ap.add_argument("--years", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--plain", action="store_true", help="realism options off")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from experiments.datasets import REALISTIC, DatasetOptions, generate
    from experiments.lp_exit_report import resolve_scenario
    from mfg.lp_exit.params import load_scenario

    sc = load_scenario(resolve_scenario("calm"))
    sc = sc.model_copy(update={"model": sc.model.model_copy(update={"end": sc.model.start + a.years})})
    opts = DatasetOptions() if a.plain else DatasetOptions(**REALISTIC)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ds = generate(sc, a.n_lps, 2026, out, options=opts, force=True, threads=a.threads)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_steps = round(a.years * 52)
    size = {k: p.stat().st_size / 1e6 for k, p in ds.files.items()}
    print(f"calm stretched to {a.years:g} years ({n_steps} weekly steps), {a.n_lps:,} LPs, "
          f"{'plain' if a.plain else 'realistic'}, threads={a.threads or 'default'}")
    print(f"wall {wall:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in ds.timings.items()))
    print(f"agent-steps/s (market phase, panel streaming included): {a.n_lps * n_steps / ds.timings['market']:.3g}")
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in ds.rows.items()))
    print("MB: " + ", ".join(f"{k} {v:.1f}" for k, v in size.items()))
    print(f"peak RSS {rss:.0f} MiB (before the run {rss0:.0f} MiB)")
    if not a.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
