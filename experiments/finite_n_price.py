"""The finite-N price-formation market against its mean-field limit: the 1/sqrt(N) law.

docs/model.md 1.5: in the LQ case the N-trader equilibrium price is the closed form of
docs/model.md 1.3 with the sample mean ``xbar^N_0`` of the initial holdings in place of
``xbar_0``, so ``price^N(t) - price(t) = -(gamma + eta (T - t)) (xbar^N_0 - xbar_0)`` and

    RMSE over samples of sup_t |price^N - price| = sup_t |gamma + eta (T - t)| * sd(m_0) / sqrt(N)

exactly (``sup_t |c(t) delta| = |delta| sup_t |c(t)|`` and ``E[delta^2] = var(m_0)/N``).
:func:`finite_n_table` measures the left side for ``N = 10^2 .. 10^6`` and prints it next
to the right side.

What "price" the N-market is compared with
-------------------------------------------
All prices are computed on the same ``(rho, h)`` mesh.  The reference ``price^inf`` is
the N-trader market (:func:`abm.price_formation.market.simulate_price_formation_market`)
run on a large deterministic *quantile* population (``M`` holdings at the
``(j + 1/2)/M`` quantiles of ``m_0``): the mean-field limit of the particle scheme,
whose empirical measure is within ``O(1/M)`` of ``m_0`` instead of ``O(1/sqrt(M))``.

The nodal MFG solver (:func:`mfg.price_formation.solve`) is *not* used as the reference
for the law because the particle market and the nodal scheme have different ``O(rho)``
discretisation errors: the nodal transport samples the piecewise-constant P1 slopes of
``u`` at node feet, the particles at continuously distributed feet.  On test 1 with
``rho = 0.01, h = 0.02`` the two mean-field prices differ by ``6e-4`` in sup norm (both
are within the scheme's ``4.5e-3`` of the exact price), which is the size of the whole
finite-N effect at ``N = 10^6``.  The column ``rmse_vs_mfg_solver`` shows that floor.

On the same mesh the discrete law is in fact exact in the time-shifted form
``-(gamma + eta (T - t_{k+1})) delta`` (the potential is charged on steps k+1..K-1)
when ``delta`` is a whole number of cells; the continuous coefficient used for the
prediction column differs from it by ``eta h`` (2 % on test 1 at ``h = 0.02``).

Seeds: replication ``r`` at size ``N`` draws from
``SeedSequence(seed, spawn_key=(N, r))``, so a row does not depend on which other
sizes are in the table or on the order they run in.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from abm.price_formation.market import simulate_price_formation_market
from abm.price_formation.sampling import p1_density
from mfg.price_formation import solve
from mfg.price_formation.exact import LQSolution

from .price_formation_paper import paper_test

__all__ = ["finite_n_table", "format_table", "loglog_slope", "law_coefficient", "DEFAULT_NS", "DEFAULT_REPS",
           "REFERENCE_SIZE", "TOL_FRACTION"]

DEFAULT_NS = (10**2, 10**3, 10**4, 10**5, 10**6)
#: Replications per N: many where they are cheap, few where one run costs seconds.
#: The RMSE of R replications has a relative standard error of about 1/sqrt(2R).
DEFAULT_REPS = {10**2: 100, 10**3: 50, 10**4: 10, 10**5: 3, 10**6: 2}
#: Quantile-population size of the mean-field reference (its empirical measure is
#: O(1/M) from m_0; the reference price moves by < 3e-6 from M = 1e4 to 1e5 on test 1).
REFERENCE_SIZE = 20_000
#: Default stopping tolerance of each run as a fraction of the predicted deviation.
TOL_FRACTION = 2e-2


def law_coefficient(exact, t) -> np.ndarray:
    """``gamma + eta (T - t)``, the sensitivity of the price to ``xbar_0`` (docs/model.md 1.5).

    Zero for the linear-potential test 2: there the price does not depend on the
    holdings (docs/model.md 1.3), so only discretisation noise remains.
    """
    t = np.asarray(t, dtype=float)
    if isinstance(exact, LQSolution):
        return exact.gamma + exact.eta * (exact.horizon - t)
    return np.zeros_like(t)


def _reps_for(n: int, n_reps) -> int:
    if n_reps is None:
        if n in DEFAULT_REPS:
            return DEFAULT_REPS[n]
        # between the defaults: keep the work per row roughly constant
        return max(2, min(100, int(round(2e6 / n))))
    if isinstance(n_reps, Mapping):
        if n not in n_reps:
            raise ValueError(f"n_reps has no entry for N={n}")
        r = n_reps[n]
    else:
        r = n_reps
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"n_reps must be a positive integer (or a mapping N -> one), got {r!r} for N={n}")
    return int(r)


def finite_n_table(
    test: int = 1,
    ns: Sequence[int] = DEFAULT_NS,
    n_reps: int | Mapping[int, int] | None = None,
    rho: float = 0.01,
    h: float = 0.02,
    seed: int = 20261122,
    tol: float | None = None,
    reference_size: int = REFERENCE_SIZE,
    progress: bool | None = None,
) -> pd.DataFrame:
    """One row per N: how far the N-trader price is from its mean-field limit (docs/model.md 1.5).

    Columns
    -------
    n_traders, replications
    rmse_sup_dev : RMSE over replications of ``sup_t |price^N - price^inf|`` (module
        docstring: ``price^inf`` is the particle market on a quantile population).
    predicted : ``sup_t |gamma + eta (T - t)| * sd(m_0) / sqrt(N)``, the exact law's RMSE.
    ratio : ``rmse_sup_dev / predicted`` (about 1, within ``~1/sqrt(2 R)`` sampling noise
        and the ``O(h)`` discrete factor).
    rmse_mean_dev : RMSE of ``xbar^N_0 - xbar_0`` (``sd(m_0)/sqrt(N)`` in expectation).
    rmse_vs_mfg_solver : RMSE of ``sup_t |price^N - price^MFG|`` against the nodal solver;
        it levels off at the ``O(rho)`` gap between the two schemes.
    law_residual : RMSE over replications of ``sup_t |price^N - price^inf +
        (gamma + eta (T - t)) (xbar^N_0 - xbar^inf_0)|``: how far each sample is from the
        law itself (``O(h) delta`` plus a ``O(rho)/sqrt(N)`` P1 staircase noise).
    mean_iterations, seconds : fixed-point iterations per run and the row's wall time.

    ``df.attrs`` holds ``slope`` (least-squares slope of log rmse_sup_dev on log N; the
    law says -1/2), the reference gaps and the settings.

    Every run starts from the reference price (within ``O(1/sqrt(N))`` of the answer).
    The fixed point contracts by about 0.28 per iteration, so stopping at residual
    ``tol`` leaves a price error of about ``0.4 tol``.  With ``tol=None`` each row uses
    ``tol = TOL_FRACTION * predicted`` (0.8 % of the predicted deviation after the
    factor 0.4; ``1e-8`` where nothing is predicted), which keeps the iteration count
    about the same for every N instead of growing like ``log sqrt(N)``.
    """
    if test not in (1, 2):
        raise ValueError(f"test must be 1 or 2 (the paper's tests), got {test!r}")
    ns = [int(n) for n in ns]
    if not ns or any(n < 1 for n in ns) or len(set(ns)) != len(ns):
        raise ValueError(f"ns must be distinct positive integers, got {ns!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    reps = {n: _reps_for(n, n_reps) for n in ns}
    pt = paper_test(test)
    problem = pt.problem
    start = time.perf_counter()

    ref_tol = 1e-9 if tol is None else min(tol, 1e-9)
    mfg = solve(problem, rho=rho, h=h, tol=ref_tol)
    density = p1_density(problem.initial_density, problem.domain)
    m_ref = int(reference_size)
    holdings_ref = density.quantile((np.arange(m_ref) + 0.5) / m_ref)
    ref = simulate_price_formation_market(problem, rho=rho, h=h, holdings=holdings_ref, tol=ref_tol,
                                          initial_price=mfg.price)
    coef_t = law_coefficient(pt.exact, ref.price_times)
    coef = float(np.max(np.abs(coef_t)))
    sd = math.sqrt(density.variance)

    rows = []
    # progress=None: a bar only on a terminal (the runs at N = 10**6 take seconds each)
    bar = tqdm(total=sum(reps.values()), desc="N-trader markets", unit="market",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    for n in ns:
        bar.set_postfix(N=n)
        row_start = time.perf_counter()
        sup_dev, sup_mfg, mean_dev, law_res, iters = [], [], [], [], []
        predicted = coef * sd / math.sqrt(n)
        tol_n = tol if tol is not None else (TOL_FRACTION * predicted if predicted > 0 else 1e-8)
        for r in range(reps[n]):
            ss = np.random.SeedSequence(int(seed), spawn_key=(n, r))
            res = simulate_price_formation_market(problem, rho=rho, h=h, n_traders=n, seed=ss, tol=tol_n,
                                                  initial_price=ref.price)
            sup_dev.append(np.max(np.abs(res.price - ref.price)))
            law_res.append(np.max(np.abs(res.price - ref.price + coef_t * (res.initial_mean - ref.initial_mean))))
            sup_mfg.append(np.max(np.abs(res.price - mfg.price)))
            mean_dev.append(res.initial_mean - ref.initial_mean)
            iters.append(res.iterations)
            bar.update()
        rms = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
        rmse = rms(sup_dev)
        rows.append({
            "n_traders": n,
            "replications": reps[n],
            "rmse_sup_dev": rmse,
            "predicted": predicted,
            "ratio": rmse / predicted if predicted > 0 else math.nan,
            "rmse_mean_dev": rms(mean_dev),
            "rmse_vs_mfg_solver": rms(sup_mfg),
            "law_residual": rms(law_res),
            "tol": tol_n,
            "mean_iterations": float(np.mean(iters)),
            "seconds": time.perf_counter() - row_start,
        })
    bar.close()
    df = pd.DataFrame(rows)
    df.attrs.update({
        "test": test, "rho": rho, "h": h, "seed": int(seed), "tol": tol, "reference_size": m_ref,
        "slope": loglog_slope(df) if len(df) >= 2 else math.nan,
        "sd_m0": sd, "law_coefficient_sup": float(coef),
        "reference_vs_mfg_solver": float(np.max(np.abs(ref.price - mfg.price))),
        "mfg_solver_vs_exact": float(np.max(np.abs(mfg.price - pt.exact.price(mfg.price_times)))),
        "total_seconds": time.perf_counter() - start,
    })
    return df


def loglog_slope(df: pd.DataFrame, column: str = "rmse_sup_dev") -> float:
    """Least-squares slope of ``log(df[column])`` against ``log(df.n_traders)`` (-1/2 for the law)."""
    x = np.log(df["n_traders"].to_numpy(dtype=float))
    y = np.log(df[column].to_numpy(dtype=float))
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def format_table(df: pd.DataFrame) -> str:
    """The table as markdown, with the fitted slope and the settings underneath."""
    header = ("| N | reps | RMSE sup_t abs(price^N - price) | law: sup abs(gamma+eta(T-t)) sd/sqrt(N) | ratio "
              "| RMSE abs(xbar^N_0 - xbar_0) | RMSE sup_t abs(price^N - law) | vs nodal MFG solver "
              "| iterations | seconds |")
    lines = [header, "|" + "---|" * 10]
    for row in df.itertuples(index=False):
        lines.append(
            f"| {row.n_traders:.0e} | {row.replications} | {row.rmse_sup_dev:.3e} | {row.predicted:.3e} "
            f"| {row.ratio:.3f} | {row.rmse_mean_dev:.3e} | {row.law_residual:.2e} | {row.rmse_vs_mfg_solver:.3e} "
            f"| {row.mean_iterations:.1f} | {row.seconds:.1f} |"
        )
    a = df.attrs
    if a:
        lines.append("")
        lines.append(f"log-log slope of the RMSE against N: {a.get('slope', math.nan):.3f} (law: -0.5)")
        lines.append(
            f"test {a.get('test')}, rho={a.get('rho')}, h={a.get('h')}, seed={a.get('seed')}, "
            f"tol={a.get('tol') if a.get('tol') is not None else f'{TOL_FRACTION:g} x law'}; "
            f"reference: particle market on {a.get('reference_size')} quantile holdings of m_0 (same mesh); "
            f"sd(m_0)={a.get('sd_m0', math.nan):.4f}, sup|gamma+eta(T-t)|={a.get('law_coefficient_sup', math.nan):.3g}"
        )
        lines.append(
            f"reference vs nodal MFG solver: {a.get('reference_vs_mfg_solver', math.nan):.2e} (O(rho) scheme gap); "
            f"nodal MFG solver vs exact price: {a.get('mfg_solver_vs_exact', math.nan):.2e}; "
            f"total {a.get('total_seconds', math.nan):.1f} s"
        )
    return "\n".join(lines) + "\n"
