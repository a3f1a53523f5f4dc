"""Wall-clock benchmark of the price-formation solver on the paper's meshes (docs/model.md 1.4).

Times :func:`mfg.price_formation.solve` on the four meshes of both published tests
(with the published tolerances), after a JIT warm-up, and reports the median and
minimum of several runs.  The solver is serial (a parallel region per time step
cost more than it saved at these sizes), so the thread count does not matter.  A
baseline is measured in the same run so that a ratio, not only absolute times,
carries over between machines: one backward HJ sweep on the finest mesh of each
test is re-implemented in plain numpy (same exact cellwise minimisation,
vectorised over nodes and candidate cells) and compared with the numba kernel
:func:`mfg.price_formation.hj_backward`; the two sweeps are checked to agree
before they are timed.

Run ``python benchmarks/bench_price_formation.py`` (7 runs per mesh) or with
``--quick`` (3 runs per mesh).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.price_formation_paper import MESHES, paper_test  # noqa: E402
from mfg.price_formation import discretise, hj_backward, solve  # noqa: E402


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def numpy_hj_backward(terminal, potential, price, lower, dx, h, p, scale):
    """Plain-numpy backward SL sweep with the state constraint (reference for the baseline).

    On each cell ``j`` the objective ``I[u](x_i + h v) + h (l(v) + w v)`` is convex with
    stationary point ``v = (l')^{-1}(-(s_j + w))``; clipping it to the cell and taking the
    best cell gives the exact minimum.  Only cells within the band where a minimiser can
    lie (``l'(v) + w`` between minus the extreme slopes) are scanned, as in the numba kernel.
    """
    n_steps, n = price.shape[0], terminal.shape[0]
    x = lower + dx * np.arange(n)
    u = np.empty((n_steps + 1, n))
    v = np.empty((n_steps, n))
    u[n_steps] = terminal

    def inv(w):
        return np.sign(w) * (np.abs(w) / (scale * p)) ** (1.0 / (p - 1.0))

    for k in range(n_steps - 1, -1, -1):
        nxt = u[k + 1]
        s = np.diff(nxt) / dx
        smin, smax = min(s.min(), 0.0), max(s.max(), 0.0)
        v_lo, v_hi = inv(-(price[k] + smax)), inv(-(price[k] + smin))
        off = np.arange(int(np.floor(h * v_lo / dx)) - 1, int(np.ceil(h * v_hi / dx)) + 2)
        j = np.arange(n)[:, None] + off[None, :]
        valid = (j >= 0) & (j <= n - 2)
        jc = np.clip(j, 0, n - 2)
        sj = s[jc]
        xi = x[:, None]
        vv = np.clip(inv(-(sj + price[k])), (x[jc] - xi) / h, (x[jc] + dx - xi) / h)
        val = nxt[jc] + sj * (xi + h * vv - x[jc]) + h * (scale * np.abs(vv) ** p + price[k] * vv)
        val = np.where(valid, val, np.inf)
        best = np.argmin(val, axis=1)
        rows = np.arange(n)
        v[k] = vv[rows, best]
        u[k] = val[rows, best] + h * potential
    return u, v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 runs per mesh instead of 7")
    ap.add_argument("--repeats", type=int, default=None, help="runs per mesh (overrides --quick)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    threads = numba.get_num_threads()  # reported only: the solver runs serially

    print(f"# price-formation solve benchmark, {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"# os.cpu_count() = {os.cpu_count()}, numba threads = {threads} "
          f"(layer {numba.config.THREADING_LAYER}), numba {numba.__version__}, numpy {np.__version__}")
    print(f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"NUMBA_THREADING_LAYER={os.environ.get('NUMBA_THREADING_LAYER', '(unset)')}")
    print(f"# {repeats} timed runs per mesh after a JIT warm-up; times in seconds")
    if hasattr(os, "getloadavg"):
        print("# load average before the run (1/5/15 min): " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

    tests = {n: paper_test(n) for n in (1, 2)}
    for t in tests.values():  # warm-up: compile (or load the cache of) every kernel
        solve(t.problem, rho=MESHES[0][0], h=MESHES[0][1], tol=t.tol)
    print(f"# threading layer in use: {numba.threading_layer()}")

    print()
    print("| test | rho | h | grid M x (N+1) | iterations | median (s) | min (s) |")
    print("|---|---|---|---|---|---|---|")
    for n, t in tests.items():
        for rho, h in MESHES:
            res = solve(t.problem, rho=rho, h=h, tol=t.tol)
            times = _time(lambda t=t, rho=rho, h=h: solve(t.problem, rho=rho, h=h, tol=t.tol), repeats)
            print(f"| {n} | {rho} | {h} | {res.m.shape[1]} x {res.m.shape[0]} | {res.iterations} "
                  f"| {statistics.median(times):.4f} | {min(times):.4f} |")

    if hasattr(os, "getloadavg"):
        print("# load average after the solves: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    print("| test | finest mesh | one HJ sweep: numba (median s) | plain numpy (median s) | numpy / numba |")
    print("|---|---|---|---|---|")
    for n, t in tests.items():
        rho, h = MESHES[-1]
        disc = discretise(t.problem, rho=rho, h=h)
        price = solve(t.problem, rho=rho, h=h, tol=t.tol).price
        g = disc.grid
        call = (disc.terminal, disc.potential, price, g.lower, g.spacing, disc.h, disc.p, disc.scale)
        u_nb, v_nb = hj_backward(*call)
        u_np, v_np = numpy_hj_backward(*call)
        gap = float(np.max(np.abs(u_nb - u_np)))
        if not gap <= 1e-10 * (1 + np.max(np.abs(u_nb))):
            print(f"numpy and numba sweeps disagree by {gap:.3g}; baseline is not comparable", file=sys.stderr)
            return 1
        t_nb = statistics.median(_time(lambda call=call: hj_backward(*call), repeats))
        t_np = statistics.median(_time(lambda call=call: numpy_hj_backward(*call), repeats))
        print(f"| {n} | rho={rho}, h={h} ({g.n} x {price.size + 1}) | {t_nb:.4f} | {t_np:.4f} | {t_np / t_nb:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
