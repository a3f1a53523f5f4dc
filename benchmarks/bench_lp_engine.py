"""Benchmark of the finite-N LP market engine (abm.lp_market.engine.simulate).

    python benchmarks/bench_lp_engine.py              # N = 10^6, calm scenario (about 1 minute on 2 cores)
    python benchmarks/bench_lp_engine.py --agents 200000 --repeats 5

Case: the calm scenario (six populations, 2015-2025) with the MFG policy solved on a
4-weekly grid (401 L nodes, dt = 1/13: 131 steps), one market of N LPs, exact OU step.
Timed: :func:`abm.lp_market.engine.simulate` end to end (set-up, initial draws and result
included) with numba limited to one thread and with all threads; and, as a baseline in
the same run, a plain-numpy implementation of the same step (vectorised over LPs: the
mean field, the P1 policy lookup, Bernoulli exits, :func:`mfg.lp_exit.market.market_step`, the
exact OU step).  Agent-steps are ``N x (number of steps)``; the active agent-steps (LPs
whose fund is live) are about 60% of them in this scenario.  The header prints the
machine's core count, numba's thread count, the threading layer and the load average.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

# idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads
# steal the cores the working ones need (set OMP_WAIT_POLICY=active to compare)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abm.lp_market.engine import prepare, simulate  # noqa: E402
from mfg.lp_exit import solve  # noqa: E402
from mfg.lp_exit.market import DEFAULT_K_FLOOR, market_step  # noqa: E402
from mfg.lp_exit.params import Grid, load_scenario  # noqa: E402

CALM = ROOT / "mfg" / "lp_exit" / "library" / "calm.toml"


def numpy_market(su, seed: int):
    """The engine's step in plain numpy (same model, not the same random stream)."""
    rng = np.random.default_rng(seed)
    n_pop = len(su.names)
    pop = su.pop
    L = su.init_mean[pop] + su.init_std[pop] * rng.standard_normal(pop.size)
    status = su.initial_statuses()
    bp = su.policy
    w_i = su.per_w[pop]
    n_first_i, n_last_i, mat_i = su.n_first[pop], su.n_last[pop], su.matures[pop]
    s_hat, K = su.S0, su.K0
    pi = np.empty(n_pop)
    price = np.empty(su.t.size)
    for n in range(su.t.size):
        act = status == 1
        den = np.sum(w_i[act])
        M = np.sum(w_i[act] * L[act]) / den if den > 0 else math.nan
        dec = np.flatnonzero(act & (n < n_last_i))
        x = L[dec]
        s = np.clip((x - bp.lower) / bp.dx, 0.0, bp.table.shape[2] - 1)
        j = np.minimum(np.floor(s).astype(np.int64), bp.table.shape[2] - 2)
        wgt = s - j
        kd = pop[dec]
        q = (1.0 - wgt) * bp.table[kd, n, j] + wgt * bp.table[kd, n, j + 1]
        sold = dec[rng.random(dec.size) < q]
        status[sold] = 2
        e_mass = np.bincount(pop[sold], minlength=n_pop) / np.maximum(su.n_per_pop, 1)
        _, s_hat, P, K = market_step(s_hat, K, e_mass, su.weights, np.ascontiguousarray(su.life[:, n]), su.dt,
                                     su.pbar[n], su.beta, su.tau_s, su.theta_K, su.Kbar[n], DEFAULT_K_FLOOR, pi)
        price[n] = P
        if n == su.n_steps:
            break
        c = su.kappa_target[:, n] + su.lam * (M if den > 0 else 0.0) + su.alpha * math.log(P / su.pbar[n])
        mv = np.flatnonzero(status == 1)
        pk = pop[mv]
        L[mv] = L[mv] * su.decay[pk] + (c * su.gain)[pk] + su.sd[pk, n] * rng.standard_normal(mv.size)
        m = n + 1
        status[(status == 0) & (m >= n_first_i)] = 1
        status[(status == 1) & mat_i & (m >= n_last_i)] = 3
    return price


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn()
        out.append(time.perf_counter() - t)
    return out, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numpy-repeats", type=int, default=2)
    args = ap.parse_args(argv)

    sc = load_scenario(CALM)
    grid = Grid(L_min=-1.5, L_max=3.5, n_L=401, dt=1 / 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(sc.model, grid, sc.solver)
    N = args.agents
    n_t = res.t.size
    all_threads = numba.get_num_threads()
    simulate(sc.model, res, 1000, 1, 0)  # JIT / cache load
    print(f"# bench_lp_engine  {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# os.cpu_count()={os.cpu_count()}  numba threads={all_threads}  layer={numba.threading_layer()}  "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}  numba {numba.__version__}  numpy {np.__version__}  "
          f"load average {os.getloadavg()}")
    print(f"# calm scenario, MFG policy (n_L=401, dt=1/13), N={N:,}, {n_t} steps, 1 market, exact OU step")
    rows = []
    for th in (1, all_threads):
        ts, sim = timed(lambda th=th: simulate(sc.model, res, N, 1, 1, threads=th), args.repeats)
        rows.append((f"engine, {th} thread{'s' if th > 1 else ''}", ts))
    active_frac = sim.active_count.sum() / (N * n_t)
    su = prepare(sc.model, res, N, 1)
    ts, p_np = timed(lambda: numpy_market(su, 1), args.numpy_repeats)
    rows.append(("plain numpy (same step)", ts))
    base = min(rows[-1][1])
    print()
    print("| implementation | median s | min s | agent-steps/s (min) | speed-up vs numpy |")
    print("|---|---|---|---|---|")
    for name, ts in rows:
        best = min(ts)
        print(f"| {name} | {statistics.median(ts):.3f} | {best:.3f} | {N * n_t / best / 1e6:.0f} M | "
              f"{base / best:.1f} |")
    print(f"\nactive agent-steps: {active_frac:.0%} of the total; time-mean price: engine {sim.price.mean():.5f}, "
          f"numpy {p_np.mean():.5f}, MFG {res.price.mean():.5f}")
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
