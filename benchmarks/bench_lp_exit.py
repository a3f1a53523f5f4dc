"""Benchmark of the LP-exit equilibrium solver (mfg.lp_exit.solve) and its fixed point.

    python benchmarks/bench_lp_exit.py                 # speed table (about 2 minutes on 2 cores)
    python benchmarks/bench_lp_exit.py --repeats 3     # fewer timed runs
    python benchmarks/bench_lp_exit.py --fixed-point   # eps -> 0 table: iterations, residual, exploitability
    python benchmarks/bench_lp_exit.py --depth         # Anderson depth x damping at eps = 1e-3

Speed cases: one population, 1,000 L nodes, weekly steps over 10 years; nine populations
(3 LP types x 3 vintages) on the same grid.  Each is solved on the clearing market (the
default: each step's price solved inside the forward sweep) and, as the baseline in the same
run, on the impact market of the first version.  Each is timed with the default options
(quasi-Newton preconditioner, Anderson depth 5, damping 1) and, as a baseline in the same
run, with the plain damped iteration (damping 0.5, no Anderson, no preconditioner).  The
default options are also timed with the finite-difference sweeps (method="fd") on the same
problems: the last column is the ratio of the FD median to the SL median of the same options.
The header prints the machine's core count, numba's thread count and the load average.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mfg.lp_exit import ConvergenceWarning, solve  # noqa: E402
from mfg.lp_exit.params import Grid, LPExitModel, SolverOptions, load_scenario  # noqa: E402

CALM = ROOT / "mfg" / "lp_exit" / "library" / "calm.toml"

TYPES = {  # LP types of the calm scenario
    "pension": dict(kappa=1.0, lbar=1.0, sigma=0.3, lam=0.2, alpha=0.3, eta=0.9, ell=0.75, y=0.05, r=0.08, g=0.03,
                    phi=0.01, a_max=4.0, initial_mean=1.0, initial_std=0.2, seasonal={"amplitude": -0.15}),
    "endowment": dict(kappa=0.8, lbar=1.0, sigma=0.35, lam=0.3, alpha=0.5, eta=0.8, ell=0.65, y=0.05, r=0.08,
                      g=0.03, phi=0.01, a_max=4.0, initial_mean=1.0, initial_std=0.2),
    "sovereign": dict(kappa=0.5, lbar=1.2, sigma=0.2, lam=0.1, alpha=0.1, eta=0.3, ell=0.5, y=0.04, r=0.06, g=0.02,
                      phi=0.01, a_max=2.0, initial_mean=1.2, initial_std=0.2),
}
WEIGHTS = {"pension": 0.45, "endowment": 0.35, "sovereign": 0.2}
IMPACT = dict(kind="impact", pbar=0.93, beta=0.1, tau_s=0.25, K0=0.06, Kbar=0.06, theta_K=1.0, S0=0.015, a_tail=0.15,
              tau_tail=2.0)
CLEARING = dict(kind="clearing", pbar=0.93, tau_d=2.5, gamma=1.0, P_cap=1.0, K0=0.04, Kbar=0.04, theta_K=0.5,
                a_tail=0.15, tau_tail=2.0)
MARKETS = {"clearing": CLEARING, "impact": IMPACT}
GRID = Grid(L_min=-1.5, L_max=3.5, n_L=1000, dt=1 / 52)
DEFAULT = SolverOptions(temperature=1e-3)
PLAIN = SolverOptions(temperature=1e-3, damping=0.5, anderson=0, precondition=False, max_iter=200)


def model(n_types: int, vintages: tuple[float, ...], market: str = "clearing") -> LPExitModel:
    pops = []
    for lp_type in list(TYPES)[:n_types]:
        for v in vintages:
            pops.append(dict(name=f"{lp_type}-{v:g}", lp_type=lp_type, vintage=v, life=12.0,
                             weight=WEIGHTS[lp_type] / len(vintages), **TYPES[lp_type]))
    return LPExitModel(populations=pops, market=MARKETS[market], start=0.0, end=10.0)


def header() -> str:
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "(not initialised)"
    return (f"date {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, os.cpu_count() = {os.cpu_count()}, "
            f"numba.get_num_threads() = {numba.get_num_threads()}, threading layer {layer}, "
            f"numba {numba.__version__}, numpy {np.__version__}, load average {os.getloadavg()[0]:.2f}")


def timed(m, grid, opts, repeats, method="sl"):
    runs = []
    for _ in range(repeats):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            r = solve(m, grid, opts, method=method)
            runs.append((time.perf_counter() - t0, r))
    times = [t for t, _ in runs]
    r = runs[int(np.argsort(times)[len(times) // 2])][1]
    return statistics.median(times), min(times), r


def speed(repeats: int) -> None:
    cases = [(f"1 population, {mk} market", model(1, (0.0,), mk)) for mk in MARKETS]
    cases += [(f"9 populations (3 types x 3 vintages), {mk} market", model(3, (-4.0, -2.0, 0.0), mk)) for mk in MARKETS]
    t0 = time.perf_counter()
    for _, m in cases:  # JIT (or numba's cache) outside the timings
        for method in ("sl", "fd"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                solve(m, Grid(L_min=-1.5, L_max=3.5, n_L=50, dt=1 / 52), SolverOptions(temperature=1e-3, max_iter=3),
                      method=method)
    print(f"# {header()}\n# warm-up (JIT compile or cache load): {time.perf_counter() - t0:.2f} s\n")
    print("Times in seconds; per-iteration columns are means over the evaluations of the map; 'final' is the "
          "pair of sweeps that fills the result's value, policy and density; 'FD / SL' is the ratio of the medians "
          "of the two methods with the same options.\n")
    print("The clearing market (the default) solves each step's price inside the forward sweep; the impact "
          "market (the first version) is the baseline timed in the same run.\n")
    print("| case | options | method | iterations | final residual | median s | min s | s / iteration | backward "
          "| forward | market | final | exploitability | FD / SL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in cases:
        variants = [("default (precondition, Anderson 5, damping 1)", DEFAULT, ("sl", "fd"))]
        if len(m.populations) > 1:
            variants.append(("default, workers=2 (threads over populations)",
                             DEFAULT.model_copy(update={"workers": 2}), ("sl", "fd")))
        variants.append(("baseline: damping 0.5, no Anderson, no preconditioner", PLAIN, ("sl",)))
        if "clearing" in name:
            variants = [v for v in variants if v[1] is not PLAIN]
        for label, opts, methods in variants:
            sl_median = None
            for method in methods:
                med, best, r = timed(m, GRID, opts, repeats, method)
                tm = r.timings
                it = r.iterations
                if method == "sl":
                    sl_median = med
                ratio = f"{med / sl_median:.2f}" if method != "sl" and sl_median else ""
                print(f"| {name}, {GRID.n_L} nodes x {r.t.size} steps | {label} | {method.upper()} | {it} | "
                      f"{r.residuals[-1]:.1e} | {med:.3f} | {best:.3f} | "
                      f"{(tm['total'] - tm['exploitability'] - tm['final']) / it:.4f} | "
                      f"{tm['backward'] / it:.4f} | {tm['forward'] / it:.4f} | {tm.get('market', 0.0) / it:.4f} | "
                      f"{tm['final']:.4f} | {tm['exploitability']:.4f} | {ratio} |", flush=True)
    kernels(repeats)
    print(f"\n# after: load average {os.getloadavg()[0]:.2f}")


# ----------------------------------------------------------------------------------
# kernel baseline: the sweeps as first written (a division and a floor per foot, exp for
# every node), to time the affine-feet kernels of mfg.lp_exit against
# ----------------------------------------------------------------------------------

from numba import njit  # noqa: E402

from mfg.semi_lagrangian import deposit_at, interp_at  # noqa: E402


@njit(cache=True)
def _logistic_ref(x):
    if x >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def backward_ref(n_first, n_last, terminal, drift_c, drift_a, sigma, dt, discount, running, G, q_max, temperature,
                 lower, dx):
    n_t = drift_c.shape[0]
    n = running.shape[0]
    V = np.full((n_t, n), np.nan)
    q = np.zeros((n_t, n))
    for i in range(n):
        V[n_last, i] = terminal[i]
    for t in range(n_last - 1, n_first - 1, -1):
        sq = sigma[t] * np.sqrt(dt)
        nxt = V[t + 1]
        for i in range(n):
            x = lower + i * dx
            yc = x + (drift_c[t] - drift_a * x) * dt
            c = running[i] + discount * 0.5 * (interp_at(nxt, lower, dx, yc + sq) + interp_at(nxt, lower, dx, yc - sq))
            d = G[t] - c
            qi = q_max * _logistic_ref(d / temperature)
            q[t, i] = qi
            V[t, i] = c + qi * d
    return V, q


@njit(cache=True)
def forward_ref(m0, n_first, n_last, drift_c, drift_a, sigma, dt, q, lower, dx):
    n_t = drift_c.shape[0]
    n = m0.shape[0]
    m = np.zeros((n_t, n))
    for i in range(n):
        m[n_first, i] = m0[i]
    for t in range(n_first, n_last):
        sq = sigma[t] * np.sqrt(dt)
        for i in range(n):
            mass = m[t, i]
            if mass == 0.0:
                continue
            half = 0.5 * (mass - mass * q[t, i])
            x = lower + i * dx
            yc = x + (drift_c[t] - drift_a * x) * dt
            deposit_at(m[t + 1], lower, dx, yc + sq, half)
            deposit_at(m[t + 1], lower, dx, yc - sq, half)
    return m


def kernels(repeats: int) -> None:
    """One backward and one forward sweep on the 1-population case's equilibrium path."""
    from mfg.lp_exit.discretisation import discretise
    from mfg.lp_exit.kernels import ExitRule, backward_sweep, forward_sweep

    m = model(1, (0.0,), "impact")
    r = solve(m, GRID, DEFAULT)
    disc = discretise(m, GRID, inputs=r.inputs)
    pop, coef, mesh = disc.population(0), disc.coefficients(r.price, r.mean_liquidity)[0], disc.mesh
    n_t, dt, lower, dx = r.t.size, GRID.dt, GRID.L_min, GRID.dL
    m0 = r.density[0, 0] * r.dL
    rule = ExitRule(1e-3, False, np.zeros((1, 1)))
    new_b = lambda: backward_sweep(pop, coef, rule, mesh)  # noqa: E731
    ref_b = lambda: backward_ref(pop.n_first, pop.n_last, pop.terminal, coef.drift_c, pop.drift_a,  # noqa: E731
                                 coef.sigma, dt, pop.discount, pop.running, coef.gain - pop.phi, pop.q_max[0],
                                 1e-3, lower, dx)
    V, q, _ = new_b()
    V0, q0 = ref_b()
    new_f = lambda: forward_sweep(m0, pop, coef, q, mesh)  # noqa: E731
    ref_f = lambda: forward_ref(m0, pop.n_first, pop.n_last, coef.drift_c, pop.drift_a, coef.sigma, dt, q,  # noqa: E731
                                lower, dx)
    dv, dm = np.nanmax(np.abs(V - V0)), np.max(np.abs(new_f()[0] - ref_f()))
    assert dv < 1e-12 and dm < 1e-12, (dv, dm)

    def t(f):
        ts = []
        for _ in range(max(repeats, 5) * 4):
            s = time.perf_counter()
            f()
            ts.append(time.perf_counter() - s)
        return statistics.median(ts), min(ts)

    print(f"\n| kernel ({GRID.n_L} nodes x {n_t} steps) | median s | min s | ns / node-step (median) |")
    print("|---|---|---|---|")
    for name, f in (("backward, mfg.lp_exit (affine feet, exp skipped where abs(z) > 40)", new_b),
                    ("backward, baseline (division + floor per foot, exp everywhere)", ref_b),
                    ("forward, mfg.lp_exit", new_f), ("forward, baseline", ref_f)):
        med, best = t(f)
        print(f"| {name} | {med:.4f} | {best:.4f} | {1e9 * med / (GRID.n_L * (n_t - 1)):.1f} |")
    print(f"\n(the two versions agree: max |dV| = {dv:.1e}, max |dm| = {dm:.1e})")


def problems():
    calm = load_scenario(CALM)
    pops = [dict(name="pension", vintage=-2.0, life=10.0, weight=0.6, kappa=1.0, lbar=1.0, sigma=0.3, lam=0.3,
                 alpha=0.3, eta=0.9, ell=0.75, y=0.05, r=0.08, g=0.03, phi=0.01, a_max=4.0, initial_mean=1.0,
                 initial_std=0.2, seasonal={"amplitude": -0.15}),
            dict(name="endowment", vintage=0.0, life=10.0, weight=0.4, kappa=0.8, lbar=1.0, sigma=0.35, lam=0.3,
                 alpha=0.5, eta=0.8, ell=0.65, y=0.05, r=0.08, g=0.03, phi=0.01, a_max=4.0, initial_mean=1.0,
                 initial_std=0.2)]
    grid = Grid(L_min=-1.0, L_max=3.0, n_L=161, dt=1 / 26)
    n_t = round((calm.model.end - calm.model.start) / calm.grid.dt) + 1
    return [(f"calm, clearing ({len(calm.model.populations)} populations, {calm.grid.n_L} x {n_t})",
             calm.model, calm.grid),
            ("two populations, clearing (161 x 131)",
             LPExitModel(populations=pops, market=CLEARING, start=0.0, end=5.0), grid),
            ("two populations, impact (161 x 131)",
             LPExitModel(populations=pops, market=IMPACT, start=0.0, end=5.0), grid)]


CONFIGS = {
    "plain θ=0.5": dict(damping=0.5, anderson=0, precondition=False),
    "Anderson 5, θ=0.5": dict(damping=0.5, anderson=5, precondition=False),
    "precond., θ=1": dict(damping=1.0, anderson=0, precondition=True),
    "precond. + Anderson 5, θ=1 (default)": dict(damping=1.0, anderson=5, precondition=True),
}


def run(m, grid, max_iter, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(m, grid, SolverOptions(tol=1e-8, max_iter=max_iter, **kw))


def eps_table(eps_list, max_iter) -> None:
    print(f"# {header()}\n")
    print(f"Residual max(|P_new - P|, |M_new - M|) after the last evaluation; tol 1e-8, max_iter {max_iter}; "
          "'its' counts evaluations of the fixed-point map (rejected Anderson steps included).\n")
    for pname, m, grid in problems():
        print(f"### {pname}\n")
        print("| ε (NAV) | " + " | ".join(f"{c}: its / residual" for c in CONFIGS)
              + " | exploitability (default) | min price | mean turnover |")
        print("|---" * (len(CONFIGS) + 4) + "|")
        for eps in eps_list:
            cells, last = [], None
            for kw in CONFIGS.values():
                r = run(m, grid, max_iter, temperature=eps, **kw)
                rej = f" ({r.anderson_rejections} rej.)" if r.anderson_rejections else ""
                cells.append(f"{r.iterations}{'' if r.converged else '*'} / {r.residuals[-1]:.1e}{rej}")
                last = r
            print(f"| {eps:g} | " + " | ".join(cells) + f" | {last.exploitability:.2e} | {last.price.min():.4f} | "
                  f"{np.nanmean(last.turnover[:-1]):.4f} |", flush=True)
        print("\n(* = not converged within max_iter)\n")


def depth_table(max_iter) -> None:
    print(f"# {header()}\n")
    for pname, m, grid in problems():
        print(f"### {pname}, ε = 1e-3: evaluations to 1e-8 (* = not within {max_iter})\n")
        print("| Anderson depth | " + " | ".join(f"θ={th}, precond." for th in (0.5, 0.8, 1.0))
              + " | " + " | ".join(f"θ={th}, no precond." for th in (0.5, 0.8, 1.0)) + " |")
        print("|---" * 7 + "|")
        for depth in (0, 2, 3, 5, 8):
            cells = []
            for pre in (True, False):
                for th in (0.5, 0.8, 1.0):
                    r = run(m, grid, max_iter, temperature=1e-3, damping=th, anderson=depth, precondition=pre)
                    cells.append(f"{r.iterations}{'' if r.converged else '*'}")
            print(f"| {depth} | " + " | ".join(cells) + " |", flush=True)
        print()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fixed-point", action="store_true", help="ε -> 0 table instead of the speed table")
    ap.add_argument("--depth", action="store_true", help="Anderson depth x damping table at ε = 1e-3")
    ap.add_argument("--max-iter", type=int, default=100)
    a = ap.parse_args(argv)
    if a.fixed_point:
        eps_table([1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 0.0], a.max_iter)
    elif a.depth:
        depth_table(a.max_iter)
    else:
        speed(a.repeats)


if __name__ == "__main__":
    main()
