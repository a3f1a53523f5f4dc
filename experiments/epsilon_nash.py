"""Epsilon-Nash bounds of the MFG policy in the N-LP market (docs/model.md 2.9b).

One tagged LP in the N-LP market (docs/model.md 2.8) in which every LP, the tagged one
included, plays the MFG policy.  On each replication ``r`` the market's realised public path
(price ``P_r``, mean field ``M_r``, buyer capital ``K_r``, volume ``V_r``) is taken as given
(the tagged LP's share of it is in the simulation), and the tagged LP's values at entry,
integrated over its population's initial law and NAV-weighted over the populations, are
computed by the solver's backward sweep (:func:`mfg.lp_exit.kernels.sl_backward`) for:

* ``pi``: the MFG policy itself: in the clearing market a limit order at the reservation
  price ``C_MFG(L) + phi - eps xi`` against the realised price, i.e. the exit probability
  ``q_max logistic((P_r A dfac(L) - phi - C_MFG(L)) / eps)`` (the impact market: the MFG's
  exit probabilities);
* ``br``: the hard best response to the realised path (clairvoyant: it knows the whole
  public path of ``r`` in advance, not its own future liquidity shocks nor its sale clock).
  ``br - pi`` averaged over replications is the *upper bound*: no deviation that uses less
  information (every adapted one) can gain more on a given path;
* ``ol``: the open-loop best response, the hard rule ``G_r(L) > C_BR(L)`` with the
  continuation values ``C_BR`` of the best response to the MFG's own paths (it reads only its
  own liquidity and the current price of its limit order);
* ``ls``: a Longstaff-Schwartz style deviation: ``G_r(L) > C_BR(L) + beta_k . (1, x_r^n)``,
  where ``x_r^n`` is the public state before the step's auction (last price, buyer capital,
  last volume, as deviations from the MFG's) and ``beta_k`` regresses, per population, the
  continuation value of the open-loop deviation on the realised paths,
  ``C^ol_r(t_n, L) - C_BR(t_n, L)``, on ``x_r^n`` over the nodes where the decision can flip
  (``|G - C_BR| <= band`` on the MFG path, weighted by the MFG's density).  It is fitted on
  the first half of the replications and evaluated on the second half; ``ls - pi`` on the
  evaluation half is the *lower bound* (a deviation a real LP could play: it uses only its own
  liquidity and what was public so far).  Both are valued on the same paths as ``pi``
  (common random numbers).

The ``ls`` deviation is built for the clearing market; in the impact market (docs/model.md
2.4b), where an LP decides before its step's price is set, ``ol`` is the best response to the
MFG's paths decided on the MFG's prices and ``lower`` is NaN.

At ``N = infinity`` (the MFG's own paths) ``br - pi`` is the MFG's exploitability
(``res.exploitability``, the entropy gap of the logit temperature) and ``ol = br``.  The
valuation treats the path as exogenous to the tagged LP: the change of the path that its own
deviation would cause (one stake sold at another step) and the rationing of its own offer
are not simulated (docs/model.md 2.9b).  Sums over populations are taken in population
order, so the result does not depend on the number of threads.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

import numpy as np
import pandas as pd
from numba import njit

from .convergence_stats import bootstrap_mean, fit_power, percentile_interval

__all__ = ["EpsilonNash", "market_features", "epsilon_table", "epsilon_rates", "BAND", "FEATURES"]

#: Half-width, in NAV, of the band ``|G - C_BR| <= BAND`` of nodes whose decision the regression sees.
BAND = 0.05

#: The public state the ``ls`` deviation reads before each auction (deviations from the MFG's paths).
FEATURES = ("log P^{n-1}/P_MFG", "log K^n/K_MFG", "(V^{n-1} - V_MFG)/mean V_MFG")

_RIDGE = 1e-10


@njit(cache=True, nogil=True)
def _limit_order_table(q, gain, dfac, phi, C, shift, q_max, eps, n0, n1):
    """Exit probabilities of a limit order at the reservation ``C + shift`` against the realised prices:
    ``q[n, i] = q_max[n] logistic((gain[n] dfac[i] - phi - C[n, i] - shift[n]) / eps)`` (the hard rule
    ``q_max 1{... > 0}`` at ``eps = 0``; the solver's logit cut-off at 40) for ``n0 <= n < n1``."""
    for n in range(n0, n1):
        g = gain[n]
        s = shift[n]
        qm = q_max[n]
        for i in range(dfac.shape[0]):
            z = g * dfac[i] - phi - C[n, i] - s
            if eps > 0.0:
                x = z / eps
                if x < -40.0:
                    q[n, i] = 0.0
                elif x > 40.0:
                    q[n, i] = qm
                elif x >= 0.0:
                    q[n, i] = qm / (1.0 + math.exp(-x))
                else:
                    e = math.exp(x)
                    q[n, i] = qm * e / (1.0 + e)
            else:
                q[n, i] = qm if z > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _band_average(C, C_ref, w, n0, n1, out):
    """``out[n] = sum_i w[n, i] (C[n, i] - C_ref[n, i]) / sum_i w[n, i]`` (0 where the weights vanish)."""
    for n in range(n0, n1):
        s = 0.0
        W = 0.0
        for i in range(C.shape[1]):
            wi = w[n, i]
            if wi > 0.0:
                s += wi * (C[n, i] - C_ref[n, i])
                W += wi
        out[n] = s / W if W > 0.0 else 0.0


def market_features(paths: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(R, n_t, 3)`` public state before each step's auction, as deviations from the MFG's paths
    (:data:`FEATURES`): the last price, the buyer capital, the last volume (0 where not yet defined)."""
    P, K, V = paths["price"], paths["buyer_capital"], paths["sell_flow"]
    R, n_t = P.shape
    x = np.zeros((R, n_t, 3))
    x[:, 1:, 0] = np.log(P[:, :-1] / ref["price"][None, :-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x[:, :, 1] = np.where(ref["buyer_capital"] > 0, np.log(np.maximum(K, 1e-300) / ref["buyer_capital"]), 0.0)
    scale = float(np.mean(ref["sell_flow"])) or 1.0
    x[:, 1:, 2] = (V[:, :-1] - ref["sell_flow"][None, :-1]) / scale
    return x


class EpsilonNash:
    """The tagged LP's deviations of the module docstring for an MFG solution ``res`` (no events,
    solved from the model's start, tables stored).  Call it with the paths of ``R`` replications
    (``{series: (R, n_t)}`` with ``price, mean_liquidity, buyer_capital, sell_flow``) to get one
    row per replication: ``replication``, ``set`` (``fit``: the first ``R // 2``, ``eval``),
    ``upper`` (``br - pi``), ``open_loop`` (``ol - pi``) and ``lower`` (``ls - pi``; NaN on the
    fit set), NAV-weighted sums over the populations of the values at entry integrated over the
    initial laws."""

    def __init__(self, res, band: float = BAND, threads: int | None = None):
        from mfg.lp_exit.discretisation import discretise
        from mfg.lp_exit.kernels import ExitRule, sl_backward

        if abs(res.t[0] - res.model.start) > 1e-9 or res.value is None:
            raise ValueError("EpsilonNash needs a result solved from the model's start with store='all'")
        self.res = res
        self.disc = disc = discretise(res.model, res.grid, inputs=res.inputs)
        self.kind = disc.market_kind
        self.eps = float(res.options.temperature)
        self.exploitability = float(res.exploitability)
        self.threads = threads
        n_pop, n_t, n_L = disc.n_pop, disc.n_t, disc.grid.n_L
        self.ref = {"price": res.price, "mean_liquidity": res.mean_liquidity, "buyer_capital": res.buyer_capital,
                    "sell_flow": res.sell_flow}
        # the best response to the MFG's own paths: its continuation values, and the band of nodes near
        # its decision boundary (weighted by the MFG's density there)
        self.C_br = np.zeros((n_pop, n_t, n_L))
        self.weight = np.zeros((n_pop, n_t, n_L))
        self.q_mfg = np.ascontiguousarray(res.exit_prob)
        self.C_mfg = None if self.kind != "clearing" else np.ascontiguousarray(res.continuation)
        coefs = disc.coefficients(res.price, res.mean_liquidity)
        for k in range(n_pop):
            if not disc.in_window[k]:
                continue
            pop = disc.population(k)
            sl_backward(pop, coefs[k], ExitRule(0.0, False, np.zeros((1, 1))), disc.mesh, np.empty((2, n_L)),
                        np.zeros((n_t, n_L)), np.empty(n_t), self.C_br[k])
            G = coefs[k].gain[:, None] * disc.dfac[k][None, :] - disc.phi[k]
            near = np.abs(G - self.C_br[k]) <= band
            rows = np.zeros(n_t, dtype=bool)
            rows[pop.n_first:pop.n_last] = True
            self.weight[k] = np.where(near & rows[:, None], res.density[k] * disc.grid.dL, 0.0)

    # ------------------------------------------------------------------ one population

    def _coefficients(self, k: int, P: np.ndarray, M: np.ndarray):
        from mfg.lp_exit.kernels import StepCoefficients

        d = self.disc
        drift_c = d.kappa_target[k] + d.lam[k] * M + d.alpha[k] * np.log(P / d.pbar)
        return StepCoefficients(np.ascontiguousarray(drift_c), d.sigma[k], np.ascontiguousarray(P * d.life_factor[k]))

    def _population(self, k: int, paths: Mapping[str, np.ndarray], x: np.ndarray, n_fit: int) -> np.ndarray:
        """``(4, R)`` values at entry of population ``k`` (``pi, br, ol, ls``) on every replication."""
        from mfg.lp_exit.kernels import ExitRule, sl_backward

        d = self.disc
        pop = d.population(k)
        n_t, n_L = d.n_t, d.grid.n_L
        n0, n1 = int(pop.n_first), int(pop.n_last)
        P, M = paths["price"], paths["mean_liquidity"]
        R = P.shape[0]
        out = np.full((4, R), np.nan)
        rows, q, thr, C = np.empty((2, n_L)), np.zeros((n_t, n_L)), np.empty(n_t), np.zeros((n_t, n_L))
        no_C = np.empty((0, 0))
        zero = np.zeros(n_t)
        y = np.zeros((R, n_t))
        m0 = d.m0[k]
        clearing = self.kind == "clearing"

        def value(coef, rule, keep_C=False):
            sl_backward(pop, coef, rule, d.mesh, rows, q, thr, C if keep_C else no_C)
            return float(np.dot(m0, rows[n0 & 1]))

        def table(coef, C_ref, shift, eps):
            _limit_order_table(q_tab, coef.gain, d.dfac[k], float(d.phi[k]), C_ref, shift, pop.q_max, eps, n0, n1)
            return ExitRule(0.0, True, q_tab)

        q_tab = np.zeros((n_t, n_L))
        q_ol_impact = None
        if not clearing:  # an impact-market LP decides before its step's price: the open loop is the MFG path's BR
            q_ol_impact = np.zeros((n_t, n_L))
            _limit_order_table(q_ol_impact, self._coefficients(k, self.ref["price"], self.ref["mean_liquidity"]).gain,
                               d.dfac[k], float(d.phi[k]), self.C_br[k], zero, pop.q_max, 0.0, n0, n1)
        for r in range(R):
            coef = self._coefficients(k, P[r], M[r])
            out[1, r] = value(coef, ExitRule(0.0, False, np.zeros((1, 1))))
            if clearing:
                out[0, r] = value(coef, table(coef, self.C_mfg[k], zero, self.eps))
                out[2, r] = value(coef, table(coef, self.C_br[k], zero, 0.0), keep_C=r < n_fit)
                if r < n_fit:
                    _band_average(C, self.C_br[k], self.weight[k], n0, n1, y[r])
            else:
                out[0, r] = value(coef, ExitRule(0.0, True, self.q_mfg[k]))
                out[2, r] = value(coef, ExitRule(0.0, True, q_ol_impact))
        if not clearing:
            return out
        beta = self._fit(k, x[:n_fit], y[:n_fit], n0, n1)
        for r in range(n_fit, R):
            coef = self._coefficients(k, P[r], M[r])
            shift = np.zeros(n_t)
            shift[n0:n1] = beta[0] + x[r, n0:n1] @ beta[1:]
            out[3, r] = value(coef, table(coef, self.C_br[k], shift, 0.0))
        return out

    def _fit(self, k: int, x: np.ndarray, y: np.ndarray, n0: int, n1: int) -> np.ndarray:
        """``beta_k`` (intercept, one slope per feature): weighted least squares of the band-averaged
        continuation gaps ``y[r, n]`` on ``(1, x[r, n])`` over the fit replications and decision steps,
        weighted by the band's mass at each step (a tiny ridge on the slopes keeps it well posed)."""
        W = self.weight[k].sum(axis=1)[n0:n1]
        p = x.shape[2]
        if x.shape[0] == 0 or not np.any(W > 0):
            return np.zeros(p + 1)
        X = np.concatenate([np.ones(x[:, n0:n1, :1].shape), x[:, n0:n1]], axis=2).reshape(-1, p + 1)
        w = np.tile(W, x.shape[0])
        Y = y[:, n0:n1].reshape(-1)
        A = X.T @ (w[:, None] * X)
        A[1:, 1:] += _RIDGE * max(np.trace(A), 1e-300) * np.eye(p)
        return np.linalg.lstsq(A, X.T @ (w * Y), rcond=None)[0]

    # ------------------------------------------------------------------ all populations

    def __call__(self, paths: Mapping[str, np.ndarray], n_agents: int | None = None) -> pd.DataFrame:
        P = np.asarray(paths["price"], dtype=float)
        R = P.shape[0]
        n_fit = R // 2
        paths = {s: np.ascontiguousarray(paths[s], dtype=float) for s in ("price", "mean_liquidity", "buyer_capital",
                                                                            "sell_flow")}
        x = market_features(paths, self.ref)
        d = self.disc
        ks = [k for k in range(d.n_pop) if d.in_window[k]]
        threads = self.threads or _cpu_count()
        if threads > 1 and len(ks) > 1:
            with ThreadPoolExecutor(max_workers=min(threads, len(ks))) as pool:
                vals = list(pool.map(lambda k: self._population(k, paths, x, n_fit), ks))
        else:
            vals = [self._population(k, paths, x, n_fit) for k in ks]
        total = np.zeros((4, R))
        for k, v in zip(ks, vals):  # in population order, whatever the thread count
            total += d.weights[k] * v
        lower = total[3] - total[0]
        lower[:n_fit] = np.nan
        return pd.DataFrame({"replication": np.arange(R), "set": np.where(np.arange(R) < n_fit, "fit", "eval"),
                             "upper": total[1] - total[0], "open_loop": total[2] - total[0], "lower": lower})


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- statistics of the bounds


def epsilon_table(gains: Mapping[int, pd.DataFrame], model: str, mfg_exploitability: float, *, n_boot: int = 2000,
                  level: float = 0.95, rng: np.random.Generator | None = None) -> tuple[pd.DataFrame, dict]:
    """Per N: the bounds (means over replications) with seeded percentile bootstrap intervals.

    ``gains``: ``{N: frame of EpsilonNash}``.  ``upper`` and ``open_loop`` average every
    replication, ``lower`` the evaluation half.  Returns the table (``model, N, replications,
    replications_eval, lower(_lo, _hi), upper(_lo, _hi), open_loop(_lo, _hi),
    mfg_exploitability``, and the excesses over it) and ``{column: (n_boot, k) draws}`` for
    the rate fits."""
    rng = np.random.default_rng(0) if rng is None else rng
    rows, draws = [], {"lower": [], "upper": [], "open_loop": []}
    for n in sorted(gains):
        g = gains[n]
        row = {"model": model, "N": int(n), "replications": int(len(g)),
               "replications_eval": int((g["set"] == "eval").sum())}
        for col in ("lower", "upper", "open_loop"):
            v = g[col].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                row.update({col: math.nan, f"{col}_lo": math.nan, f"{col}_hi": math.nan})
                draws[col].append(np.full(n_boot, np.nan))
                continue
            m, lo, hi, b = bootstrap_mean(v, n_boot=n_boot, level=level, rng=rng)
            row.update({col: m, f"{col}_lo": lo, f"{col}_hi": hi})
            draws[col].append(b)
        row["mfg_exploitability"] = mfg_exploitability
        for col in ("lower", "upper"):
            row[f"{col}_excess"] = row[col] - mfg_exploitability
        rows.append(row)
    lead = ["model", "N", "lower", "lower_lo", "lower_hi", "upper", "upper_lo", "upper_hi", "mfg_exploitability"]
    table = pd.DataFrame(rows)
    if len(table):
        table = table[lead + [c for c in table.columns if c not in lead]]
    return table, {c: np.array(v).T if v else np.empty((n_boot, 0)) for c, v in draws.items()}


def epsilon_rates(table: pd.DataFrame, draws: Mapping[str, np.ndarray], *, level: float = 0.95,
                  n_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """The rate of each bound's excess over the MFG's exploitability, ``bound - eps_inf = a N^s``, fitted
    by weighted least squares to the signed excesses (weights: inverse bootstrap variances;
    :func:`experiments.convergence_stats.fit_power`), refitted on every bootstrap draw; over every N
    (``range = "all"``) and, given ``n_range``, over the sizes in it (``"thick"``).  One row per bound
    and range: ``model, bound, range, exponent, exponent_lo, exponent_hi, amplitude, n_min, n_max,
    resolved`` (sizes whose interval excludes the MFG's exploitability); the rate is fitted only where
    three or more sizes resolve the excess (NaN otherwise: the excess is not resolved from 0)."""
    rows = []
    if not len(table):
        return pd.DataFrame(rows)
    n = table["N"].to_numpy(dtype=float)
    e_inf = float(table["mfg_exploitability"].iloc[0])
    ranges = {"all": np.ones(n.size, dtype=bool)}
    if n_range is not None:
        ranges["thick"] = (n >= n_range[0] * (1 - 1e-9)) & (n <= n_range[1] * (1 + 1e-9))
    for col in ("upper", "lower"):
        y = table[col].to_numpy(dtype=float) - e_inf
        b = np.asarray(draws[col], dtype=float) - e_inf
        res = ((table[f"{col}_lo"] > e_inf) | (table[f"{col}_hi"] < e_inf)).to_numpy()
        for label, in_range in ranges.items():
            ok = in_range & np.isfinite(y) & np.all(np.isfinite(b), axis=0)
            row = {"model": table["model"].iloc[0], "bound": col, "range": label, "exponent": math.nan,
                   "exponent_lo": math.nan, "exponent_hi": math.nan, "amplitude": math.nan,
                   "n_min": float(n[ok].min()) if ok.any() else math.nan,
                   "n_max": float(n[ok].max()) if ok.any() else math.nan, "resolved": int(res[ok].sum())}
            var = np.var(b[:, ok], axis=0, ddof=1) if ok.any() else np.array([])
            if ok.sum() >= 3 and res[ok].sum() >= 3 and np.all(var > 0):
                a, s = fit_power(n[ok], y[ok], 1.0 / var)
                _, sb = fit_power(n[ok], b[:, ok], 1.0 / var)
                lo, hi = percentile_interval(sb, level)
                row.update(exponent=float(s), exponent_lo=float(lo), exponent_hi=float(hi), amplitude=float(a))
            rows.append(row)
    return pd.DataFrame(rows)
