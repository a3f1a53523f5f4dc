"""Benchmark of the finite-N LP market engine (abm.lp_market.engine.simulate).

    python benchmarks/bench_lp_engine.py              # N = 10^6, calm scenario (about 2 minutes on 2 cores)
    python benchmarks/bench_lp_engine.py --agents 200000 --repeats 5

Case: the calm scenario with the MFG policy solved on a 4-weekly grid (dt = 1/13), one market
of N LPs, exact OU step.  Timed, in one run:

* the engine with the clearing market (sale-process clocks, reservation prices from the
  MFG's continuation values, the uniform-price auction of every step), with numba limited to
  one thread and with all threads;
* the machine's limit for this work, a bare OU step: one normal draw per agent-step from a
  ``numpy.random.Generator`` per block of agents, nothing else (the same blocks and threads);
  the engine's ratio to it is printed (agent-steps per second, engine / bare);
* the same scenario with the reduced-form impact market (the first version's engine), and a
  plain-numpy implementation of that step (the first version's baseline).

Agent-steps are ``N x (number of steps)``.  The header prints the machine's core count,
numba's thread count, the threading layer and the load average.
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

from numba import njit, prange  # noqa: E402
from numba.typed import List  # noqa: E402

from abm.lp_market.engine import BLOCK_SIZE, prepare, simulate  # noqa: E402
from mfg.lp_exit import LPExitModel, solve  # noqa: E402
from mfg.lp_exit.market import market_step  # noqa: E402
from mfg.lp_exit.params import Grid, load_scenario  # noqa: E402

IMPACT = dict(kind="impact", pbar=0.93, beta=0.1, tau_s=0.25, K0=0.06, Kbar=0.06, theta_K=1.0, S0=0.015, a_tail=0.15,
              tau_tail=2.0)


@njit(cache=True)
def _ou_block(L, lo, hi, gen, decay, drift, sd, n_steps):
    for _ in range(n_steps):
        for i in range(lo, hi):
            L[i] = L[i] * decay + drift + sd * gen.standard_normal()


@njit(cache=True, parallel=True)
def bare_ou(L, starts, gens, decay, drift, sd, n_steps):
    """``n_steps`` exact OU steps of every agent, one normal each, blocks in parallel (the machine's limit)."""
    for it in prange(starts.shape[0] - 1):
        b = np.intp(it)  # prange's index is unsigned: a signed index for the arrays
        _ou_block(L, starts[b], starts[b + 1], gens[b], decay, drift, sd, n_steps)


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
        _, s_hat, P, K = market_step(s_hat, K, e_mass, su.weights, np.ascontiguousarray(su.life[:, n]), su.pbar[n],
                                     su.Kbar[n], su.dt, su.impact, pi)
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


def _policy(model, grid, solver):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(model, grid, solver)


def _row(name, ts, n_agent_steps, ref=None):
    best = min(ts)
    rate = n_agent_steps / best
    ratio = f"{rate / ref:.2f}" if ref else ""
    return f"| {name} | {statistics.median(ts):.3f} | {best:.3f} | {rate / 1e6:.0f} M | {ratio} |", rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numpy-repeats", type=int, default=2)
    args = ap.parse_args(argv)

    sc = load_scenario("calm")
    grid = Grid(L_min=sc.grid.L_min, L_max=sc.grid.L_max, n_L=401, dt=1 / 13)
    if abs(round((sc.model.end - sc.model.start) * 13) - (sc.model.end - sc.model.start) * 13) > 1e-9:
        grid = sc.grid
    clearing = _policy(sc.model, grid, sc.solver)
    # the impact market has no distress discount (docs/model.md 2.4b): the same populations with delta = 0
    impact_pops = [p.model_copy(update={"delta": 0.0}) for p in sc.model.populations]
    impact_model = LPExitModel(populations=impact_pops, market=IMPACT, start=sc.model.start, end=sc.model.end)
    impact = _policy(impact_model, grid, sc.solver)
    N = args.agents
    n_t = clearing.t.size
    all_threads = numba.get_num_threads()
    simulate(sc.model, clearing, 1000, 1, 0)  # JIT / cache load
    simulate(impact_model, impact, 1000, 1, 0)
    print(f"# bench_lp_engine  {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# os.cpu_count()={os.cpu_count()}  numba threads={all_threads}  layer={numba.threading_layer()}  "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}  numba {numba.__version__}  numpy {np.__version__}  "
          f"load average {os.getloadavg()}")
    print(f"# calm scenario ({len(sc.model.populations)} populations), MFG policy on {grid.n_L} nodes x dt "
          f"{grid.dt:.4g}, N={N:,}, {n_t} steps, 1 market, exact OU step\n")
    print("| implementation | median s | min s | agent-steps/s (min) | engine / bare OU |")
    print("|---|---|---|---|---|")
    starts = np.append(np.arange(0, N, BLOCK_SIZE, dtype=np.int64), np.int64(N))
    bare = {}
    for th in (1, all_threads):
        numba.set_num_threads(th)
        gens = List([np.random.default_rng(s) for s in np.random.SeedSequence(1).spawn(starts.size - 1)])
        L = np.ones(N)
        bare_ou(L, starts, gens, 0.98, 0.02, 0.05, 2)
        ts, _ = timed(lambda L=L, gens=gens: bare_ou(L, starts, gens, 0.98, 0.02, 0.05, n_t), args.repeats)
        line, bare[th] = _row(f"bare OU step, {th} thread{'s' if th > 1 else ''} (one normal per agent-step)", ts,
                              N * n_t)
        print(line, flush=True)
    numba.set_num_threads(all_threads)
    for th in (1, all_threads):
        ts, sim = timed(lambda th=th: simulate(sc.model, clearing, N, 1, 1, threads=th), args.repeats)
        print(_row(f"engine, clearing market (auction), {th} thread{'s' if th > 1 else ''}", ts, N * n_t,
                   bare[th])[0], flush=True)
    for th in (1, all_threads):
        ts, sim_i = timed(lambda th=th: simulate(impact_model, impact, N, 1, 1, threads=th), args.repeats)
        print(_row(f"engine, impact market, {th} thread{'s' if th > 1 else ''}", ts, N * n_t, bare[th])[0],
              flush=True)
    su = prepare(impact_model, impact, N, 1)
    ts, p_np = timed(lambda: numpy_market(su, 1), args.numpy_repeats)
    print(_row("plain numpy, impact market (the first version's baseline)", ts, N * n_t, bare[1])[0])
    print(f"\ntime-mean price: clearing engine {sim.price[0, :-1].mean():.5f}, "
          f"its MFG {clearing.price[:-1].mean():.5f}; "
          f"impact engine {sim_i.price.mean():.5f}, numpy {p_np.mean():.5f}, its MFG {impact.price.mean():.5f}")
    print(f"# load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
