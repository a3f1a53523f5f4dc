"""Wall time of the convergence study (experiments/convergence.py) from an empty folder.

    python benchmarks/bench_convergence.py                 # the default study (target: < 5 minutes on 2 cores)
    python benchmarks/bench_convergence.py --quick         # the quick study (target: < 1 minute)
    python benchmarks/bench_convergence.py --demo          # the small study of `gelav demo` (in-process)
    python benchmarks/bench_convergence.py --executor inprocess --keep /tmp/study

Prints the machine (CPUs, numba threads, load average before and after), the number of
tasks, the wall time of the study (sweep, epsilon-Nash bounds, analysis, tables and figures)
and its summary.  With ``--warm`` the numba kernels are warmed up and the models built first
in this process (the time of a user's second run); without it the time includes building the
models in this process, as ``gelav convergence`` does.  The worker processes load their
kernels from numba's cache and solve the MFGs once each (always included).  The machine's
load average is printed because other jobs on a shared machine slow the study down.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time the quick study instead of the default one")
    ap.add_argument("--demo", action="store_true", help="time the demo's small study (in-process)")
    ap.add_argument("--warm", action="store_true", help="build the models and warm the kernels before timing")
    ap.add_argument("--executor", default="auto", choices=["auto", "inprocess", "processes", "dask"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--models", default=None, help="comma-separated models (default: the study's)")
    ap.add_argument("--keep", default=None, help="study folder to keep (default: a temporary folder)")
    args = ap.parse_args()

    import numba
    import numpy as np

    from experiments import convergence as cv

    config = cv.quick_config() if args.quick else cv.demo_config() if args.demo else cv.default_config()
    executor = "inprocess" if args.demo and args.executor == "auto" else args.executor
    if args.models:
        config = config.with_models(args.models.split(","))
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, os.cpu_count()={os.cpu_count()}, "
          f"numba threads={numba.get_num_threads()}, load average before: {os.getloadavg()}")
    if args.warm:
        t = time.perf_counter()
        models = {name: cv.build_model(spec) for name, spec in config.models.items()}
        for m in models.values():  # warm the kernels in this process
            m.simulate(100, 1, np.random.SeedSequence(0))
        print(f"warm-up (MFG solves, reference markets, kernels): {time.perf_counter() - t:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "study"
        t = time.perf_counter()
        res = cv.run_study(config, out, executor=executor, n_workers=args.workers, overwrite=True,
                           progress=False)
        wall = time.perf_counter() - t
    print(res.summary)
    print(f"{config.label} study: {res.done} tasks, executor {executor}, wall time {wall:.1f} s "
          f"(models, sweep, bounds, analysis, tables and figures); load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
