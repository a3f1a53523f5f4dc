"""Calibration of the LP-exit MFG against public data, and a COVID hold-out.

**Data** (docs/model.md 2.10).  Cogent average high bid, % of NAV, half-year points: 84.7 (H1 2008),
61 (H2 2008), about 42.5 (H1 2009; "40 to 45"), 72 (H2 2009), 80 (H1 2010), 84 (H2 2010); the
calm-market discount (5 to 15% of NAV: target 10%) and LP sale volume (1 to 2.5% of NAV a
year: target 1.75%).

**Model quantities.**  The scenario ``crisis_2008.toml`` (Lehman shock at 2008.75).  A half-year
data point is compared with the **average of the model's market price factor P over the steps
of that half-year** (the data are half-year averages of bids).  Calm discount: ``1 − mean P``
over 2007 (before the shock; the solve's first whole year); turnover: NAV sold in 2007 per unit
of active NAV, % a year.

**Fit.**  Weighted least squares (``scipy.optimize.least_squares``, trust-region reflective,
2-point finite-difference Jacobian), residual ``(model − data)/σ``: σ = 2.5 points for each
price (the reading uncertainty of a half-year average; the trough is given as 40 to 45),
2.5 points for the calm discount (a quarter of the 5–15% range), 0.375 %/yr for the turnover
(a quarter of the 1–2.5% range).  Parameters, fitted in log (logit for fractions) coordinates:
``shock_scale`` (multiplies every event's liquidity shift of crisis_2008.toml: endowments
−0.85, pensions −0.30, sovereigns −0.10), ``beta`` (price impact), ``Kbar`` (buyers' target
dry powder, with ``K0 = Kbar``), ``theta_K`` (refill rate) and ``capital_cut`` (share of dry
powder lost at the shock).  **Uncertainty**: the Jacobian-based covariance at the optimum,
``s² (JᵀJ)⁻¹`` in the fitted coordinates with ``s² = χ²/(m − p)`` (as ``curve_fit`` with
``absolute_sigma=False``), mapped to the parameters by the delta method; 68% intervals are
``exp(z ± se_z)`` (log) or the logistic of ``z ± se_z`` (logit).

**Hold-out: COVID** (89 → 80 in H1 2020 → about 90 a year later), never fitted.  The model is
``covid_2020.toml``'s populations and window with the fitted market (``beta, Kbar = K0,
theta_K``, and crisis_2008's ``pbar``), and the fitted 2008 shock at 2020.25 scaled by a public
proxy of its size: the peak-to-trough fall of the S&P 500, −33.9% (19 Feb to 23 Mar 2020)
against −56.8% (9 Oct 2007 to 9 Mar 2009), ratio 0.597.  The scale multiplies the liquidity
shifts, the capital cut and ``1 − Kbar_factor``; durations are 2008's.  Prediction errors:
H2 2019 (89), H1 2020 (80), H1 2021 (90).

**Withdrawn supply.**  Public: volume fell 39% at the 2009 trough (sellers kept reservation
prices).  Reported: the model's NAV sold in 2009 against 2008 with the fitted parameters, and
with the shock split into its capital part only (no liquidity shifts) and its liquidity part
only (no capital cut, ``Kbar_factor = 1``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from mfg.lp_exit import ConvergenceWarning
from mfg.lp_exit.params import Scenario, load_scenario
from mfg.lp_exit.scenarios import solve_scenario

from .common import SCENARIO_DIR, ExperimentReport, register, write_report

__all__ = ["Param", "Target", "Fit", "PARAMS", "targets_2008", "targets_covid", "apply_params", "model_values",
           "calibrate", "fit_frame", "covid_holdout", "run", "PROXY_RATIO", "WARM_START"]

#: Public proxy of the COVID shock's size relative to 2008: S&P 500 peak-to-trough falls.
SP500_FALL_2008 = 0.568  # 9 Oct 2007 -> 9 Mar 2009
SP500_FALL_2020 = 0.339  # 19 Feb 2020 -> 23 Mar 2020
PROXY_RATIO = SP500_FALL_2020 / SP500_FALL_2008

#: Start of the quick run: the full run's optimum (2026-11-22), rounded; the full run starts from
#: crisis_2008.toml's values.
WARM_START = {"shock_scale": 2.22, "beta": 0.177, "Kbar": 0.2, "theta_K": 1.22, "capital_cut": 0.166}


@dataclass(frozen=True)
class Param:
    """A fitted parameter: ``name`` (see :func:`apply_params`), ``transform`` "log" or "logit", and
    bounds ``lower < upper`` (natural units) that keep the solver in a sane range."""

    name: str
    transform: str = "log"
    lower: float = 1e-3
    upper: float = 1e3

    def to_z(self, v: float) -> float:
        return math.log(v) if self.transform == "log" else math.log(v / (1.0 - v))

    def from_z(self, z: float) -> float:
        return math.exp(z) if self.transform == "log" else 1.0 / (1.0 + math.exp(-z))

    def dv_dz(self, z: float) -> float:
        v = self.from_z(z)
        return v if self.transform == "log" else v * (1.0 - v)


#: Bounds are plausible ranges, not priors: buyers' target dry powder 2 to 20% of the market's NAV, a
#: refill time 1/theta_K of 3 months to 4 years, a price impact beta from 0.02 to 1.
PARAMS = (Param("shock_scale", "log", 0.3, 3.0), Param("beta", "log", 0.02, 1.0), Param("Kbar", "log", 0.02, 0.2),
          Param("theta_K", "log", 0.25, 4.0), Param("capital_cut", "logit", 0.05, 0.9))

#: Lower end of the liquidity grid of the calibration (crisis_2008.toml has -2).
GRID_L_MIN = -4.0

#: Weighted residual returned for a parameter vector whose solve fails (non-finite price).
FAIL_RESIDUAL = 1e2


@dataclass(frozen=True)
class Target:
    """A data point: ``kind`` "price" (mean P over ``[t0, t1)``, % of NAV), "discount" (``100 (1 − mean P)``
    over ``[t0, t1)``) or "turnover" (NAV sold over ``[t0, t1)`` per unit of active NAV, % a year)."""

    period: str
    kind: str
    t0: float
    t1: float
    data: float
    sigma: float

    def value(self, res) -> float:
        t = np.asarray(res.t, dtype=float)
        dt = float(t[1] - t[0])
        sel = (t >= self.t0 - 1e-9 * dt) & (t < self.t1 - 1e-9 * dt) & (np.arange(t.size) < t.size - 1)
        if not sel.any():
            raise ValueError(f"target {self.period}: no step in [{self.t0}, {self.t1})")
        p = np.asarray(res.price, dtype=float)[sel]
        if self.kind == "price":
            return 100.0 * float(p.mean())
        if self.kind == "discount":
            return 100.0 * (1.0 - float(p.mean()))
        if self.kind == "volume_change":  # NAV sold in [t0, t1) against the year before, % change
            sel0 = (t >= self.t0 - 1.0 - 1e-9 * dt) & (t < self.t1 - 1.0 - 1e-9 * dt) & (np.arange(t.size) < t.size - 1)
            f = np.asarray(res.sell_flow, dtype=float)
            return 100.0 * (float(f[sel].sum()) / float(f[sel0].sum()) - 1.0)
        if self.kind == "turnover":
            vol = np.asarray(res.sell_flow, dtype=float)[sel] * dt
            nav = np.asarray(res.active_nav, dtype=float)[sel]
            return 100.0 * float(np.sum(vol / nav)) / (self.t1 - self.t0)
        raise ValueError(f"unknown target kind {self.kind!r}")


def targets_2008(price_sigma: float = 2.5) -> list[Target]:
    """docs/model.md 2.10: the 2008-10 half-year prices, the calm discount and the calm turnover (2007)."""
    pts = [("H1 2008", 2008.0, 84.7), ("H2 2008", 2008.5, 61.0), ("H1 2009", 2009.0, 42.5),
           ("H2 2009", 2009.5, 72.0), ("H1 2010", 2010.0, 80.0), ("H2 2010", 2010.5, 84.0)]
    out = [Target(p, "price", a, a + 0.5, v, price_sigma) for p, a, v in pts]
    out.append(Target("calm discount (2007)", "discount", 2007.0, 2008.0, 10.0, 2.5))
    out.append(Target("calm turnover (2007)", "turnover", 2007.0, 2008.0, 1.75, 0.375))
    return out


def volume_target() -> Target:
    """docs/model.md 2.10: LP sale volume fell 39% in 2009 against 2008 (σ 10 points)."""
    return Target("volume 2009 vs 2008", "volume_change", 2009.0, 2010.0, -39.0, 10.0)


def targets_covid() -> list[Target]:
    """docs/model.md 2.10: 89 before, 80 in H1 2020, about 90 a year later (hold-out only)."""
    return [Target("H2 2019", "price", 2019.5, 2020.0, 89.0, 2.5),
            Target("H1 2020", "price", 2020.0, 2020.5, 80.0, 2.5),
            Target("H1 2021", "price", 2021.0, 2021.5, 90.0, 2.5)]


def apply_params(sc: Scenario, values: dict, base: Scenario | None = None) -> Scenario:
    """``sc`` with parameters set: ``shock_scale`` (every event's liquidity shift times the value,
    relative to ``base``'s, default ``sc``), ``beta``, ``theta_K``, ``pbar``, ``tau_s`` (market),
    ``Kbar`` (market ``Kbar`` and ``K0``), ``capital_cut`` and ``Kbar_factor`` (of the events
    that carry a capital cut / a ``Kbar`` factor in ``base``)."""
    base = sc if base is None else base
    mk = {}
    for k in ("beta", "theta_K", "pbar", "tau_s"):
        if k in values:
            mk[k] = float(values[k])
    if "Kbar" in values:
        mk["Kbar"] = mk["K0"] = float(values["Kbar"])
    model = sc.model.model_copy(update={"market": sc.model.market.model_copy(update=mk)}) if mk else sc.model
    events = []
    for e, e0 in zip(sc.events, base.events):
        up = {}
        if "shock_scale" in values:
            up["liquidity_shift"] = e0.liquidity_shift * float(values["shock_scale"])
        if "capital_cut" in values and e0.capital_cut > 0:
            up["capital_cut"] = float(values["capital_cut"])
        if "Kbar_factor" in values and e0.Kbar_factor != 1.0:
            up["Kbar_factor"] = float(values["Kbar_factor"])
        events.append(e.model_copy(update=up) if up else e)
    return Scenario(model=model, grid=sc.grid, solver=sc.solver, events=tuple(events))


#: Fractions of the shock through which :func:`solve_continued` follows the equilibrium branch.
CONTINUATION = (0.25, 0.5, 0.75, 1.0)

#: A path whose lowest price is below this is reported as the market-freeze (collapse) branch.
COLLAPSE_PRICE = 0.05


def scale_event(e, f: float):
    """The event ``e`` at strength ``f`` in [0, 1]: shifts and the capital cut times ``f``, factors
    ``1 + (factor − 1) f``."""
    return e.model_copy(update={"liquidity_shift": e.liquidity_shift * f, "capital_cut": e.capital_cut * f,
                                "Kbar_factor": 1.0 + (e.Kbar_factor - 1.0) * f,
                                "pbar_factor": 1.0 + (e.pbar_factor - 1.0) * f,
                                "sigma_factor": 1.0 + (e.sigma_factor - 1.0) * f})


def solve_continued(sc: Scenario, fractions: Sequence[float] = CONTINUATION):
    """The scenario's equilibrium on the branch continued from the no-shock path (equilibrium selection).

    The post-shock equilibrium of this model need not be unique: besides the branch on which the
    price recovers, a market-freeze branch exists on which buyers' capital is exhausted and the
    price falls to about 0 (docs/crisis_calibration.md); :func:`mfg.lp_exit.scenarios.solve_scenario`, which
    starts the post-shock fixed point from the pre-shock path, lands on either, erratically in
    the parameters.  Here the shock is applied at the strengths ``fractions`` in turn, each
    solve starting from the previous one's path, so the branch is followed from the calm path
    (until it ends at a fold).  All events must share one time (else :func:`solve_scenario` is used).
    Returns a namespace with ``t, price, sell_flow, flow, active_nav, segments, collapsed``.
    """
    from types import SimpleNamespace

    from mfg.lp_exit import solve
    from mfg.lp_exit.scenarios import apply_shock, scenario_inputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if not sc.events or len({e.time for e in sc.events}) > 1:
            res = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
            return SimpleNamespace(t=res.t, price=res.price, sell_flow=res.sell_flow, flow=res.flow,
                                   active_nav=res.active_nav, segments=res.segments, model=sc.model,
                                   collapsed=bool(np.min(res.price) < COLLAPSE_PRICE))
        model, grid, opts = sc.model, sc.grid, sc.solver
        dt = float(grid.dt)
        seg0 = solve(model, grid, opts)
        n = int(round((sc.events[0].time - model.start) / dt))
        state0 = seg0.state_at(n)
        P_g, M_g = seg0.price[n:].copy(), seg0.mean_liquidity[n:].copy()
        seg1 = None
        for f in fractions:
            evs = [scale_event(e, f) for e in sc.events]
            state = state0
            for e in evs:
                state, _ = apply_shock(state, e, model, grid)
            inputs = scenario_inputs(model, evs, seg0.t[n:], dt)
            seg1 = solve(model, grid, opts, initial=state, inputs=inputs,
                         guess=(np.maximum(P_g, 1e-6), M_g))
            P_g, M_g = seg1.price.copy(), seg1.mean_liquidity.copy()

    def cat(a, b):
        return np.concatenate([np.asarray(a)[..., :n], np.asarray(b)], axis=-1)

    price = cat(seg0.price, seg1.price)
    flow = cat(seg0.flow, seg1.flow)
    nav = cat(seg0.active_nav, seg1.active_nav)
    return SimpleNamespace(t=seg0.t, price=price, sell_flow=cat(seg0.sell_flow, seg1.sell_flow), flow=flow,
                           active_nav=nav, segments=(seg0, seg1), model=model,
                           collapsed=bool(np.min(price) < COLLAPSE_PRICE))


def _solve(sc: Scenario):
    return solve_continued(sc)


def model_values(sc: Scenario, targets: Sequence[Target]) -> tuple[np.ndarray, object]:
    res = _solve(sc)
    return np.array([tg.value(res) for tg in targets]), res


@dataclass
class Fit:
    """Result of :func:`calibrate`: parameters, their standard errors and 68% intervals, the data table."""

    params: tuple[Param, ...]
    values: dict
    se: dict
    interval: dict
    corr: np.ndarray
    targets: list
    model: np.ndarray
    chi2: float
    dof: int
    nfev: int
    status: int
    message: str
    seconds: float
    scenario: Scenario = field(repr=False)
    result: object = field(repr=False)
    start: dict = field(default_factory=dict)
    at_bound: dict = field(default_factory=dict)

    @property
    def residuals(self) -> np.ndarray:
        return self.model - np.array([t.data for t in self.targets])

    def param_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"parameter": p.name, "start": self.start.get(p.name, math.nan),
                              "value": self.values[p.name], "se": self.se[p.name],
                              "lo68": self.interval[p.name][0], "hi68": self.interval[p.name][1],
                              "lower": p.lower, "upper": p.upper, "at_bound": self.at_bound.get(p.name, False),
                              "fitted_in": p.transform} for p in self.params])


def calibrate(sc: Scenario, params: Sequence[Param], targets: Sequence[Target], start: dict, *,
              max_nfev: int = 60, base: Scenario | None = None, diff_step: float = 1e-3,
              xtol: float = 1e-6, ftol: float = 1e-6) -> Fit:
    """Weighted least-squares fit of ``params`` to ``targets`` from ``start`` (see the module docstring)."""
    t0 = time.perf_counter()
    base = sc if base is None else base
    params = tuple(params)
    data = np.array([t.data for t in targets])
    sig = np.array([t.sigma for t in targets])
    cache: dict = {}

    def values_of(z):
        return {p.name: p.from_z(float(zi)) for p, zi in zip(params, z)}

    def fun(z):
        key = tuple(np.round(z, 14))
        if key not in cache:
            try:
                m, _ = model_values(apply_params(sc, values_of(z), base), targets)
                r = (m - data) / sig
                cache[key] = r if np.all(np.isfinite(r)) else np.full(data.size, FAIL_RESIDUAL)
            except (ValueError, FloatingPointError):
                cache[key] = np.full(data.size, FAIL_RESIDUAL)
        return cache[key]

    z0 = np.array([p.to_z(float(start[p.name])) for p in params])
    lb = np.array([p.to_z(p.lower) for p in params])
    ub = np.array([p.to_z(p.upper) for p in params])
    z0 = np.clip(z0, lb + 1e-9, ub - 1e-9)
    ls = least_squares(fun, z0, method="trf", bounds=(lb, ub), diff_step=diff_step, max_nfev=max_nfev, xtol=xtol,
                       ftol=ftol, x_scale=1.0)
    z = ls.x
    J = ls.jac
    m_obs, p_n = len(targets), len(params)
    chi2 = float(np.sum(ls.fun ** 2))
    # parameters on a bound are not estimated: the covariance is that of the free ones (se NaN at a bound)
    free = (z - lb > 1e-3) & (ub - z > 1e-3)
    dof = max(m_obs - int(free.sum()), 1)
    s2 = chi2 / dof
    cov_z = np.full((p_n, p_n), np.nan)
    if free.any():
        Jf = J[:, free]
        cov_z[np.ix_(free, free)] = np.linalg.pinv(Jf.T @ Jf) * s2
    se_z = np.sqrt(np.maximum(np.diag(cov_z), 0.0))
    d = np.sqrt(np.maximum(np.diag(cov_z), 1e-300))
    corr = cov_z / np.outer(d, d)
    vals = values_of(z)
    se = {p.name: p.dv_dz(float(zi)) * float(s) for p, zi, s in zip(params, z, se_z)}
    interval = {p.name: (p.from_z(float(zi - s)), p.from_z(float(zi + s))) for p, zi, s in zip(params, z, se_z)}
    final = apply_params(sc, vals, base)
    m, res = model_values(final, targets)
    fit = Fit(params, vals, se, interval, corr, list(targets), m, chi2, m_obs - int(free.sum()), int(ls.nfev),
              int(ls.status), str(ls.message), time.perf_counter() - t0, final, res, dict(start))
    fit.at_bound = {p.name: (not bool(f)) for p, f in zip(params, free)}
    return fit


def fit_frame(fit: Fit) -> pd.DataFrame:
    """``fit.csv``: one row per data point: ``period, data, model, residual`` (model − data, data units),
    then ``kind, sigma, weighted_residual``."""
    return pd.DataFrame({"period": [t.period for t in fit.targets], "data": [t.data for t in fit.targets],
                         "model": fit.model, "residual": fit.residuals, "kind": [t.kind for t in fit.targets],
                         "sigma": [t.sigma for t in fit.targets],
                         "weighted_residual": fit.residuals / np.array([t.sigma for t in fit.targets])})


def covid_holdout(fit: Fit, crisis: Scenario, covid: Scenario, ratio: float = PROXY_RATIO, *,
                  grid=None) -> tuple[pd.DataFrame, object, Scenario]:
    """Predict the COVID path: covid's populations and window, the fitted market, the fitted 2008 shock
    (events of ``fit.scenario``) moved to covid's first event time and scaled by ``ratio``."""
    mk = crisis.model.market.model_copy(update={k: getattr(fit.scenario.model.market, k)
                                                for k in ("beta", "Kbar", "K0", "theta_K", "pbar")})
    model = covid.model.model_copy(update={"market": mk})
    t_shock = float(min(e.time for e in covid.events))
    names = {p.lp_type: p.name for p in model.populations}
    events = []
    for e in fit.scenario.events:
        pops = tuple(names.get(next((q.lp_type for q in fit.scenario.model.populations if q.name == n), n), n)
                     for n in e.populations)
        events.append(e.model_copy(update={
            "time": t_shock, "populations": pops, "liquidity_shift": e.liquidity_shift * ratio,
            "capital_cut": e.capital_cut * ratio, "Kbar_factor": 1.0 - (1.0 - e.Kbar_factor) * ratio,
            "name": f"{e.name or 'shock'}-x{ratio:.3f}"}))
    g = covid.grid if grid is None else grid
    sc = Scenario(model=model, grid=g, solver=covid.solver, events=tuple(events))
    tg = targets_covid()
    m, res = model_values(sc, tg)
    frame = pd.DataFrame({"period": [t.period for t in tg], "data": [t.data for t in tg], "model": m,
                          "error": m - np.array([t.data for t in tg])})
    return frame, res, sc


def _volume(res, a, b):
    t = np.asarray(res.t[:-1])
    dt = float(res.t[1] - res.t[0])
    sel = (t >= a - 1e-9 * dt) & (t < b - 1e-9 * dt)
    return float(np.sum(np.asarray(res.sell_flow[:-1])[sel]) * dt)


#: The buyer-side crash of :func:`withdrawn_supply`: (capital cut, Kbar factor) with no liquidity shifts.
BUYER_CRASH = (0.95, 0.1)


def withdrawn_supply(fit: Fit) -> pd.DataFrame:
    """NAV sold in 2009 against 2008 (and H1 2009 against H1 2008) for the fitted shock, its capital
    part only, its liquidity part only, and an extreme buyer-side crash (:data:`BUYER_CRASH`)."""
    sc = fit.scenario
    cases = {"fitted shock": sc,
             "capital part only (no liquidity shifts)": Scenario(
                 model=sc.model, grid=sc.grid, solver=sc.solver,
                 events=tuple(e.model_copy(update={"liquidity_shift": 0.0}) for e in sc.events)),
             "liquidity part only (no capital cut, Kbar_factor 1)": Scenario(
                 model=sc.model, grid=sc.grid, solver=sc.solver,
                 events=tuple(e.model_copy(update={"capital_cut": 0.0, "Kbar_factor": 1.0}) for e in sc.events)),
             f"buyer-side crash only (capital cut {BUYER_CRASH[0]:g}, Kbar_factor {BUYER_CRASH[1]:g}, "
             "no shifts)": Scenario(
                 model=sc.model, grid=sc.grid, solver=sc.solver,
                 events=tuple(e.model_copy(update={"liquidity_shift": 0.0,
                                                   "capital_cut": BUYER_CRASH[0] if e.capital_cut > 0 else 0.0,
                                                   "Kbar_factor": BUYER_CRASH[1] if e.Kbar_factor != 1.0 else 1.0})
                              for e in sc.events))}
    rows = []
    for name, s in cases.items():
        res = fit.result if s is sc else _solve(s)
        v8, v9 = _volume(res, 2008.0, 2009.0), _volume(res, 2009.0, 2010.0)
        h8, h9 = _volume(res, 2008.0, 2008.5), _volume(res, 2009.0, 2009.5)
        rows.append({"case": name, "volume_2008_pct": 100 * v8, "volume_2009_pct": 100 * v9,
                     "change_2009_vs_2008_pct": 100 * (v9 / v8 - 1.0), "change_H1_2009_vs_H1_2008_pct":
                     100 * (h9 / h8 - 1.0), "min_price": float(np.min(res.price)),
                     "H1_2009_price_pct": Target("H1 2009", "price", 2009.0, 2009.5, 0, 1).value(res)})
    return pd.DataFrame(rows)


def recovery_stats(res, shock: float) -> dict:
    """Share of the pre-shock-to-trough gap closed 6 and 12 months after the trough, and the time to half."""
    t = np.asarray(res.t)
    p = np.asarray(res.price)
    n_s = int(np.searchsorted(t, shock - 1e-9))
    pre = float(p[n_s - 1])
    n_tr = n_s + int(np.argmin(p[n_s:]))
    gap = pre - p[n_tr]
    closed = (p - p[n_tr]) / gap if gap > 0 else np.full_like(p, np.nan)

    def at(dtm):
        i = int(np.searchsorted(t, t[n_tr] + dtm - 1e-9))
        return float(closed[min(i, t.size - 1)])

    after = np.flatnonzero((np.arange(t.size) > n_tr) & (closed >= 0.5))
    half = float(t[after[0]] - t[n_tr]) if after.size else math.nan
    return {"pre": pre, "trough": float(p[n_tr]), "t_trough": float(t[n_tr]), "closed_6m": at(0.5),
            "closed_12m": at(1.0), "months_to_half": 12 * half}


def selection_table(base: Scenario, scales: Sequence[float] = (0.8, 1.0, 1.2)) -> pd.DataFrame:
    """Equilibrium selection on ``base`` with its liquidity shifts scaled by ``scales``: lowest price and
    H1 2009 mean on the continued branch (:func:`solve_continued`) and from
    :func:`mfg.lp_exit.scenarios.solve_scenario` (post-shock fixed point started from the pre-shock path)."""
    rows = []
    h1 = Target("H1 2009", "price", 2009.0, 2009.5, 0.0, 1.0)
    for f in scales:
        sc = apply_params(base, {"shock_scale": f}, base)
        cont = solve_continued(sc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            direct = solve_scenario(sc.model, sc.grid, sc.solver, sc.events)
        rows.append({"shock_scale": f, "continued_min_price": float(np.min(cont.price)),
                     "continued_H1_2009": h1.value(cont), "direct_min_price": float(np.min(direct.price)),
                     "direct_H1_2009": h1.value(direct),
                     "direct_converged": bool(all(sg.converged for sg in direct.segments))})
    return pd.DataFrame(rows)


def _figure(fit: Fit, covid_frame, covid_res, supply: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    a = ax[0]
    res = fit.result
    a.plot(res.t, 100 * np.asarray(res.price), color="tab:blue", lw=1, label="model price P (fitted)")
    for t, m in zip(fit.targets, fit.model):
        if t.kind != "price":
            continue
        a.hlines(m, t.t0, t.t1, color="tab:blue", lw=3, alpha=0.6)
        a.errorbar(0.5 * (t.t0 + t.t1), t.data, yerr=t.sigma, fmt="ko", ms=4)
    a.plot([], [], "ko", label="Cogent half-year data (± σ)")
    a.plot([], [], color="tab:blue", lw=3, alpha=0.6, label="model half-year mean")
    a.set_xlim(2006.9, 2011.2)
    a.set_ylabel("% of NAV")
    a.set_title("2008-10: fit", fontsize=10)
    a.legend(fontsize=8, loc="lower right")
    a = ax[1]
    a.plot(covid_res.t, 100 * np.asarray(covid_res.price), color="tab:orange", lw=1,
           label=f"model, 2008 shock x {PROXY_RATIO:.2f}")
    for (_, r), t in zip(covid_frame.iterrows(), targets_covid()):
        a.hlines(r.model, t.t0, t.t1, color="tab:orange", lw=3, alpha=0.6)
        a.errorbar(0.5 * (t.t0 + t.t1), t.data, yerr=t.sigma, fmt="ks", ms=4)
    a.plot([], [], "ks", label="public figures (not fitted)")
    a.set_xlim(2019.0, 2022.5)
    a.set_ylabel("% of NAV")
    a.set_title("COVID 2020: hold-out prediction", fontsize=10)
    a.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


@register("calibration")
def run(out, *, quick: bool = False) -> ExperimentReport:
    """Fit to 2008-10, predict COVID, report withdrawn supply; write the report."""
    t_start = time.perf_counter()
    crisis = load_scenario(SCENARIO_DIR / "crisis_2008.toml")
    covid = load_scenario(SCENARIO_DIR / "covid_2020.toml")
    # the fitted shocks push endowments' liquidity down by up to 2.5: widen the grid below, same dL
    dL = crisis.grid.dL * (2 if quick else 1)
    g = crisis.grid.model_copy(update={"L_min": GRID_L_MIN,
                                       "n_L": int(round((crisis.grid.L_max - GRID_L_MIN) / dL)) + 1})
    sc = crisis.model_copy(update={"grid": g})
    if quick:
        start, nfev = dict(WARM_START), 8
    else:
        base_vals = {"shock_scale": 1.0, "beta": crisis.model.market.beta, "Kbar": crisis.model.market.Kbar,
                     "theta_K": crisis.model.market.theta_K,
                     "capital_cut": max(e.capital_cut for e in crisis.events)}
        start, nfev = base_vals, 80
    fit = calibrate(sc, PARAMS, targets_2008(), start, max_nfev=nfev)
    frame = fit_frame(fit)
    pars = fit.param_frame()
    cov_frame, cov_res, _ = covid_holdout(fit, crisis, covid, grid=covid.grid.model_copy(
        update={"L_min": sc.grid.L_min, "L_max": sc.grid.L_max, "n_L": sc.grid.n_L}))
    supply = withdrawn_supply(fit)
    selection = selection_table(sc, (1.0, 1.2) if quick else (0.9, 1.0, 1.1, 1.2, 1.3, 1.4))
    joint = None
    if not quick:  # can prices and the 2009 fall of volume be matched together?
        joint = calibrate(sc, PARAMS, targets_2008() + [volume_target()], dict(fit.values), max_nfev=40)
    shock = float(min(e.time for e in crisis.events))
    rec = recovery_stats(fit.result, shock)
    rmse_fit = float(np.sqrt(np.mean(frame[frame.kind == "price"].residual ** 2)))
    rmse_cov = float(np.sqrt(np.mean(cov_frame.error ** 2)))
    facts = {"params": fit.values, "se": fit.se, "at_bound": fit.at_bound, "interval68": fit.interval,
             "chi2": fit.chi2, "dof": fit.dof,
             "nfev": fit.nfev, "status": fit.status, "price_rmse_pts": rmse_fit,
             "residuals": dict(zip(frame.period, frame.residual)),
             "covid_errors": dict(zip(cov_frame.period, cov_frame.error)), "covid_rmse_pts": rmse_cov,
             "covid_model": dict(zip(cov_frame.period, cov_frame.model)), "proxy_ratio": PROXY_RATIO,
             "withdrawn_supply": {r.case: r.change_2009_vs_2008_pct for r in supply.itertuples()},
             "selection": selection.to_dict("records"),
             "joint": None if joint is None else {"params": joint.values, "at_bound": joint.at_bound,
                                                  "chi2": joint.chi2, "dof": joint.dof,
                                                  "residuals": dict(zip(fit_frame(joint).period,
                                                                        fit_frame(joint).residual))},
             "collapsed": bool(fit.result.collapsed),
             "recovery": rec, "corr": fit.corr.tolist(), "quick": quick,
             "grid": f"{sc.grid.n_L} x 1/{round(1 / sc.grid.dt)}"}
    fig = _figure(fit, cov_frame, cov_res, supply)
    facts["seconds"] = time.perf_counter() - t_start
    names = [p.name for p in fit.params]
    lines = ["# Calibration against docs/model.md 2.10: 2008-10 fit, COVID hold-out", "",
             f"Scenario crisis_2008.toml on {facts['grid']} (n_L x dt); model half-year means of the price P "
             "against the "
             "half-year data points; weighted least squares (scipy least_squares, TRF, 2-point Jacobian) in log/logit "
             f"coordinates from {'the stored warm start' if quick else 'the scenario file values'}; "
             f"{fit.nfev} evaluations ({fit.message}); chi2 = {fit.chi2:.2f} on {fit.dof} dof.", "",
             "| period | data | model | residual (model - data) | sigma |", "|---|---|---|---|---|"]
    for r in frame.itertuples():
        lines.append(f"| {r.period} | {r.data:g} | {r.model:.2f} | {r.residual:+.2f} | {r.sigma:g} |")
    lines += ["", "Parameters (se: Jacobian-based covariance s²(JᵀJ)⁻¹, delta method; 68% interval from the fitted "
              "coordinate):", "", "| parameter | start | fitted | se | 68% interval | bounds |",
              "|---|---|---|---|---|---|"]
    for r in pars.itertuples():
        iv = "at a bound: not estimated" if r.at_bound else f"{r.lo68:.4g} to {r.hi68:.4g}"
        lines.append(f"| {r.parameter} | {r.start:.4g} | **{r.value:.4g}** | {r.se:.2g} | {iv} | "
                     f"[{r.lower:g}, {r.upper:g}] |")
    lines += ["", "Correlations of the fitted coordinates: " + "; ".join(
        f"{names[i]}-{names[j]} {fit.corr[i, j]:+.2f}" for i in range(len(names)) for j in range(i + 1, len(names))
        if abs(fit.corr[i, j]) > 0.7) + " (|r| > 0.7 listed).", "",
              f"Recovery (fitted path): pre-shock {100 * rec['pre']:.1f}, trough {100 * rec['trough']:.1f} at "
              f"{rec['t_trough']:.3f}; {100 * rec['closed_6m']:.0f}% of the gap closed 6 months after the trough, "
              f"{100 * rec['closed_12m']:.0f}% after 12; half closed after {rec['months_to_half']:.1f} months "
              "(public: about 60% within six months, half-life about 7 months).", "",
              f"## COVID hold-out (not fitted): fitted 2008 shock x {PROXY_RATIO:.3f} "
              "(S&P 500 falls 33.9% / 56.8%)", "",
              "| period | data | model | error |", "|---|---|---|---|"]
    for r in cov_frame.itertuples():
        lines.append(f"| {r.period} | {r.data:g} | {r.model:.2f} | {r.error:+.2f} |")
    lines += ["", f"RMSE {rmse_cov:.2f} points (fit: price RMSE {rmse_fit:.2f} points).", "",
              "## Withdrawn supply (public: 2009 volume -39% against 2008)", "",
              "| shock | NAV sold 2008 (%) | 2009 (%) | 2009 vs 2008 | H1 2009 vs H1 2008 | H1 2009 price |",
              "|---|---|---|---|---|---|"]
    for r in supply.itertuples():
        lines.append(f"| {r.case} | {r.volume_2008_pct:.2f} | {r.volume_2009_pct:.2f} | "
                     f"{r.change_2009_vs_2008_pct:+.0f}% | {r.change_H1_2009_vs_H1_2008_pct:+.0f}% | "
                     f"{r.H1_2009_price_pct:.1f} |")
    if joint is not None:
        jf = fit_frame(joint)
        lines += ["", "## Joint fit: prices and the 2009 fall of volume (-39%, sigma 10 points)", "",
                  f"{joint.nfev} evaluations from the price fit; chi2 = {joint.chi2:.2f} on {joint.dof} dof.", "",
                  "| period | data | model | residual |", "|---|---|---|---|"]
        for r in jf.itertuples():
            lines.append(f"| {r.period} | {r.data:g} | {r.model:.2f} | {r.residual:+.2f} |")
        lines += ["", "| parameter | fitted | bound hit |", "|---|---|---|"]
        for p in joint.params:
            lines.append(f"| {p.name} | {joint.values[p.name]:.4g} | {'yes' if joint.at_bound[p.name] else 'no'} |")
    lines += ["", "## Equilibrium selection (two branches after the shock)", "",
              "crisis_2008.toml as shipped, liquidity shifts scaled: lowest price and H1 2009 mean on the branch "
              "continued from the "
              "calm path (used in the fit) and from solve_scenario's fixed point started at the pre-shock path "
              f"(a lowest price below {COLLAPSE_PRICE:g}: the market-freeze branch).", "",
              "| shock_scale | continued: min price | continued: H1 2009 | direct: min price | direct: H1 2009 |",
              "|---|---|---|---|---|"]
    for r in selection.itertuples():
        lines.append(f"| {r.shock_scale:.3f} | {r.continued_min_price:.3f} | {r.continued_H1_2009:.1f} | "
                     f"{r.direct_min_price:.3f} | {r.direct_H1_2009:.1f} |")
    lines += ["", f"Run time {facts['seconds']:.1f} s{' (quick)' if quick else ''}."]
    covid_table = cov_frame.rename(columns={"error": "residual"})
    report = ExperimentReport("calibration", "\n".join(lines) + "\n", facts,
                              {"fit": frame, "parameters": pars, "covid_holdout": covid_table,
                               "withdrawn_supply": supply, "selection": selection,
                               **({} if joint is None else {"fit_with_volume": fit_frame(joint),
                                                            "parameters_with_volume": joint.param_frame()})},
                              {"calibration": fig})
    return write_report(report, Path(out))
