"""Validated parameters of the LP-exit mean-field game (docs/model.md 2).

Units (docs/model.md 2): time in years, money in units of fund NAV (a stake worth 1 at
NAV), rates per year.  Liquidity ``L`` is a dimensionless state; ``lbar``, ``ell``,
``initial_mean``, ``L_min``/``L_max`` and a seasonal ``amplitude`` are in its units.

Field names are the symbols of docs/model.md 2:

* :class:`Population` (2.1–2.3) — ``kappa, lbar, sigma, lam, alpha`` (liquidity
  dynamics), ``eta, ell`` (holding cost ``c(L) = eta (ell - L)^+``), ``y, r, g``
  (yield, discount rate, NAV growth), ``phi`` (transaction cost), ``a_max`` (sale
  success rate; ``a_max = 0`` switches exits off), ``initial_mean, initial_std``
  (Gaussian initial law of ``L``), ``vintage, life`` (active on
  ``[vintage, vintage + life]``), ``weight`` (share of market NAV), ``delta`` (distress
  discount of the deal price, clearing market) and an optional :class:`Seasonal` box
  (liquidity-target shift ``s(t)``, multipliers of ``a_max`` and ``eta``).
* :data:`Market` (2.4) — the clearing market :class:`ClearingMarket` (``kind = "clearing"``,
  the default: ``pbar, tau_d, gamma, P_cap, K0, Kbar, theta_K``) or the reduced-form
  :class:`ImpactMarket` (``kind = "impact"``: ``pbar, beta, tau_s, K0, Kbar, theta_K, S0``,
  docs/model.md 2.4b); both with the remaining-life price curve
  ``A(tau) = 1 - a_tail * exp(-tau / tau_tail)``.
* :class:`LPExitModel` — populations, market and the simulated window ``[start, end]``.
* :class:`Grid` (2.6) — ``L_min, L_max, n_L, dt``.
* :class:`SolverOptions` (2.3, 2.5) — ``temperature`` (logit ε in NAV units; 0 = hard
  exit), ``damping, tol, max_iter, anderson, precondition, workers``.
* :class:`Scenario` — the three together, read from and written to TOML
  (:func:`load_scenario`, :meth:`Scenario.to_toml`), with optional shock events, a report
  window and a stale-NAV markdown schedule (:class:`MarkdownKnot`, docs/model.md 2.7).

All models are frozen and refuse unknown fields, NaN/inf and out-of-range values
with a ``pydantic.ValidationError`` whose location names the offending field.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .events import ShockEvent, check_events, sort_events
from .ranges import AnnualRate, Capital, Level, Rate, Span, Volatility, Year, bounded

__all__ = [
    "Seasonal",
    "Population",
    "Market",
    "ClearingMarket",
    "ImpactMarket",
    "LPExitModel",
    "Grid",
    "SolverOptions",
    "Scenario",
    "ReportWindow",
    "MarkdownKnot",
    "markdown_factor",
    "load_scenario",
    "resolve_scenario",
    "shipped_scenarios",
    "scenario_description",
    "ScenarioNotFound",
    "SCENARIO_DIR",
    "window_steps",
    "COVER_SDS",
]

#: The grid must contain ``initial_mean ± COVER_SDS * initial_std`` of every population.
COVER_SDS = 5.0

_CONFIG = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)



def _nonblank(s: str) -> str:
    if not s.strip():
        raise ValueError("must not be blank")
    return s


Name = Annotated[str, AfterValidator(_nonblank)]


class Seasonal(BaseModel):
    """A seasonal box of one population (docs/model.md 2.2, 2.3).

    While the fraction of the calendar year ``t - floor(t)`` lies in ``[start, end)`` (default
    ``[0.75, 1.0)``: Q4, the fiscal year-end of pensions, banks and insurers):

    * the liquidity target moves by ``amplitude`` (liquidity units): ``s(t) = amplitude``
      (a negative amplitude lowers it: year-end rebalancing);
    * the sale-process rate is ``a_max * a_max_factor`` (deals that must close by the year-end
      are pushed through);
    * the holding-cost rate is ``eta * eta_factor``.

    Outside the box ``s = 0`` and both factors are 1.  A box (rather than a smooth bump)
    keeps the schedule exactly what the user wrote; the schemes sample it at ``t_n``.
    """

    model_config = _CONFIG

    amplitude: Level = 0.0
    start: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.75
    end: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    a_max_factor: bounded(0.0, 1e3) = 1.0
    eta_factor: bounded(0.0, 1e3) = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if not self.end > self.start:
            raise ValueError(f"end ({self.end}) must exceed start ({self.start})")
        return self

    def inside(self, t) -> np.ndarray:
        """Whether ``t`` (years, scalar or array) lies in the box."""
        frac = np.asarray(t, dtype=float) % 1.0
        return (frac >= self.start) & (frac < self.end)

    def __call__(self, t):
        """``s(t)`` for scalar or array ``t`` (years)."""
        return np.where(self.inside(t), self.amplitude, 0.0)

    def factor(self, name: str, t) -> np.ndarray:
        """``a_max_factor`` or ``eta_factor`` inside the box, 1 outside."""
        return np.where(self.inside(t), getattr(self, name), 1.0)


class Population(BaseModel):
    """One LP population (docs/model.md 2.1–2.3)."""

    model_config = _CONFIG

    name: Name
    lp_type: Name = "other"  # pension, endowment, sovereign, ... (a label)
    vintage: Year  # fund start, calendar years
    life: Span  # fund life T_k, years
    weight: bounded(0.0, 1e12)  # share of market NAV (normalised over populations)
    kappa: Rate  # mean reversion of L, 1/yr
    lbar: Level  # long-run liquidity level
    sigma: Volatility  # liquidity volatility, units/sqrt(yr)
    lam: Rate = 0.0  # herding towards the mean field M, 1/yr
    alpha: Rate = 0.0  # mark-to-market feedback, units/yr per unit log-price
    eta: Rate  # holding-cost rate below ell, NAV/yr per liquidity unit
    ell: Level  # liquidity level below which holding costs accrue
    y: AnnualRate  # distribution yield, 1/yr
    r: AnnualRate  # discount rate, 1/yr
    g: AnnualRate  # NAV growth, 1/yr
    phi: bounded(0.0, 1.0) = 0.0  # transaction cost of a sale, fraction of NAV
    a_max: bounded(0.0, 1e9)  # rate of sale processes, 1/yr (0: no exits; large: hard stopping)
    initial_mean: Level  # mean of the Gaussian initial law of L
    initial_std: Volatility  # its standard deviation (0: a point mass)
    delta: bounded(0.0, 1e3) = 0.0  # distress discount of the deal price per unit of liquidity below ell
    seasonal: Seasonal | None = None

    @property
    def maturity(self) -> float:
        """``vintage + life``: the fund liquidates and pays NAV."""
        return self.vintage + self.life

    def schedule(self, t) -> np.ndarray:
        """``s_k(t)`` (zero without a seasonal schedule)."""
        t = np.asarray(t, dtype=float)
        return np.zeros_like(t) if self.seasonal is None else self.seasonal(t)

    def seasonal_factor(self, name: str, t) -> np.ndarray:
        """The seasonal multiplier ``a_max_factor`` or ``eta_factor`` at ``t`` (1 without a schedule)."""
        t = np.asarray(t, dtype=float)
        return np.ones_like(t) if self.seasonal is None else self.seasonal.factor(name, t)


class _MarketBase(BaseModel):
    """What both markets share: the calm price factor ``pbar`` (P̄, fraction of NAV), buyer capital
    ``K0`` (initial) and ``Kbar`` (target; NAV units, the market's NAV is 1), its refill rate
    ``theta_K`` (1/yr) and the remaining-life curve ``A(tau) = 1 - a_tail exp(-tau / tau_tail)``
    (tail-end funds trade lower; ``a_tail = 0`` gives ``A = 1``)."""

    model_config = _CONFIG

    pbar: bounded(0.0, 10.0, lo_open=True)
    K0: Capital
    Kbar: Capital
    theta_K: Rate
    a_tail: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.0
    tau_tail: Span = 1.0

    def remaining_life_factor(self, tau) -> np.ndarray:
        """``A(tau)`` for remaining life ``tau >= 0`` (years)."""
        tau = np.maximum(np.asarray(tau, dtype=float), 0.0)
        return 1.0 - self.a_tail * np.exp(-tau / self.tau_tail)


class ClearingMarket(_MarketBase):
    """The clearing market of docs/model.md 2.4 (``kind = "clearing"``, the default).

    Each step the price factor ``P`` solves supply = demand: LPs in a sale process accept a
    bid when their deal price beats their reservation (the logit exit rule read as
    reservation prices), against buyers who hold dry powder ``K`` and buy
    ``D(P, K) = min((K / tau_d) (pbar / P)**gamma / P, K / (P dt))`` NAV a year.
    ``tau_d``: calm deployment horizon of dry powder (years); ``gamma``: how much faster
    buyers deploy at deeper discounts; ``P_cap``: the highest price (buyers stand idle when
    demand exceeds supply there).  Capital refills from what is left after spending:
    ``K' = (K - spend) + dt theta_K (Kbar - (K - spend))``.
    """

    kind: Literal["clearing"] = "clearing"
    tau_d: Span
    gamma: bounded(0.0, 50.0) = 0.0
    P_cap: bounded(0.0, 10.0, lo_open=True) = 1.0

    @model_validator(mode="after")
    def _cap(self):
        if self.P_cap < self.pbar:
            raise ValueError(f"P_cap ({self.P_cap}) must be at least pbar ({self.pbar})")
        return self


class ImpactMarket(_MarketBase):
    """The reduced-form impact market of docs/model.md 2.4b (``kind = "impact"``), kept for comparison.

    ``beta``: price impact of sell pressure relative to buyer capital; ``tau_s``: memory of
    sell pressure, years; ``S0``: initial sell pressure Ŝ^{-1}, NAV/yr.  Buyers buy
    everything offered at any price and ``K`` can go negative: not a market to draw crisis
    conclusions from.
    """

    kind: Literal["impact"] = "impact"
    beta: bounded(0.0, 1e3)
    tau_s: Span
    S0: bounded(0.0, 1e3) = 0.0


def _market_kind(v) -> str:
    if isinstance(v, dict):
        return v.get("kind", "clearing")
    return getattr(v, "kind", "clearing")


#: A market of either kind, chosen by its ``kind`` field (default ``"clearing"``).
Market = Annotated[Union[Annotated[ClearingMarket, Tag("clearing")], Annotated[ImpactMarket, Tag("impact")]],
                   Discriminator(_market_kind)]

_IMPACT_ONLY = ("beta", "tau_s", "S0")


class LPExitModel(BaseModel):
    """Populations, market and the simulated window ``[start, end]`` (years)."""

    model_config = _CONFIG

    populations: tuple[Population, ...]
    market: Market
    start: Year
    end: Year

    @model_validator(mode="before")
    @classmethod
    def _kind_named(cls, data):
        """A market without ``kind`` is the clearing market; refuse impact-market fields there with a hint."""
        mk = data.get("market") if isinstance(data, dict) else None
        if isinstance(mk, dict) and "kind" not in mk:
            stale = [f for f in _IMPACT_ONLY if f in mk]
            if stale:
                raise ValueError(
                    f"market.kind: not given, so the market is the clearing market (docs/model.md 2.4), but "
                    f"{', '.join(stale)} belong to the reduced-form impact market: add kind = \"impact\" to keep it "
                    "(docs/model.md 2.4b), or give the clearing market's tau_d, gamma, P_cap instead")
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if not self.end > self.start:
            raise ValueError(f"end ({self.end}) must exceed start ({self.start})")
        if not self.populations:
            raise ValueError("populations: at least one population is needed")
        names = [p.name for p in self.populations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"populations: duplicate name(s) {sorted(dup)}")
        total = math.fsum(p.weight for p in self.populations)
        if not total > 0:
            raise ValueError("populations.weight: weights must sum to a positive number")
        for p in self.populations:
            if not (p.vintage < self.end and p.maturity > self.start):
                raise ValueError(
                    f"populations[{p.name}].vintage: fund life [{p.vintage}, {p.maturity}] does not "
                    f"overlap the window [{self.start}, {self.end}]"
                )
            if p.delta > 0.0 and self.market.kind != "clearing":
                raise ValueError(f"populations[{p.name}].delta: the distress discount needs the clearing market "
                                 f"(market.kind = \"clearing\"), not {self.market.kind!r}")
        return self

    @property
    def weights(self) -> np.ndarray:
        """Weights normalised to sum to 1."""
        w = np.array([p.weight for p in self.populations], dtype=float)
        return w / w.sum()


def window_steps(model: LPExitModel, dt: float) -> int:
    """Number of steps ``N`` of the window ``[start, end]`` at step ``dt`` (refused unless whole)."""
    span = (model.end - model.start) / dt
    n = round(span)
    if n < 1 or abs(span - n) > 1e-9 * max(1.0, span):
        raise ValueError(f"dt={dt!r} does not divide the window [{model.start}, {model.end}] into whole steps "
                         f"({span:.6g})")
    mk = model.market
    if mk.kind == "impact" and dt > mk.tau_s:
        raise ValueError(f"dt={dt!r} exceeds market.tau_s={mk.tau_s!r}: the sell-pressure update "
                         "Ŝ += (dt/tau_s)(S - Ŝ) would overshoot")
    if mk.theta_K * dt > 1.0:
        raise ValueError(f"market.theta_K={mk.theta_K!r} with dt={dt!r}: theta_K * dt = {mk.theta_K * dt:.3g} > 1, "
                         "the refill of buyer capital would overshoot its target (docs/model.md 2.4)")
    return n


class Grid(BaseModel):
    """Uniform liquidity grid ``[L_min, L_max]`` with ``n_L`` nodes and time step ``dt`` (years)."""

    model_config = _CONFIG

    L_min: bounded(-1e4, 1e4)
    L_max: bounded(-1e4, 1e4)
    n_L: Annotated[int, Field(ge=3, le=10**7)]
    dt: bounded(1e-6, 10.0)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.L_max > self.L_min:
            raise ValueError(f"L_max ({self.L_max}) must exceed L_min ({self.L_min})")
        return self

    @property
    def dL(self) -> float:
        return (self.L_max - self.L_min) / (self.n_L - 1)

    def check_covers(self, model: LPExitModel) -> None:
        """Refuse a grid that does not hold ``initial_mean ± COVER_SDS * initial_std`` of every population,
        or the drift's target ``lbar + s(t)`` of one (its mass would pile on an end node)."""
        for p in model.populations:
            amp = 0.0 if p.seasonal is None else p.seasonal.amplitude
            for target in (p.lbar, p.lbar + amp):
                if not self.L_min <= target <= self.L_max:
                    seasonal = f" with seasonal amplitude {amp:g}" if target != p.lbar else ""
                    raise ValueError(
                        f"populations[{p.name}].lbar={p.lbar:g}{seasonal} puts the drift's target at {target:.6g}, "
                        f"outside the grid [L_min, L_max] = [{self.L_min:g}, {self.L_max:g}]: the population's mass "
                        "would pile on an end node; widen the grid or move lbar"
                    )
            lo = p.initial_mean - COVER_SDS * p.initial_std
            hi = p.initial_mean + COVER_SDS * p.initial_std
            if lo < self.L_min:
                raise ValueError(
                    f"L_min={self.L_min} does not cover the initial law of population {p.name!r} "
                    f"(initial_mean - {COVER_SDS:g} initial_std = {lo:.6g}); widen the grid or narrow the initial law"
                )
            if hi > self.L_max:
                raise ValueError(
                    f"L_max={self.L_max} does not cover the initial law of population {p.name!r} "
                    f"(initial_mean + {COVER_SDS:g} initial_std = {hi:.6g}); widen the grid or narrow the initial law"
                )


class SolverOptions(BaseModel):
    """Options of the fixed point (docs/model.md 2.5).

    ``temperature`` ε is the logit temperature of the exit decision in value units
    (NAV): ``q = q_max · logistic((G − C)/ε)``, so the exit probability moves from
    ``q_max/2`` at the threshold to ``q_max/(1 + e)`` one ε below it in value.  0 gives the
    hard rule ``q = q_max 1{G > C}`` (docs/model.md 2.3).  The per-step form of the
    argument, ``q_max (G − C)/ε'``, would have width ``ε/q_max ≈ ε/(a_max dt)`` in ``G − C``: with it the same
    ε smooths more as ``dt`` shrinks, and as ``dt → 0`` every LP, however far from its
    threshold, sells at rate ``a_max/2`` (a degenerate continuous-time limit).  Here the
    smoothing does not depend on ``dt``, so grid refinement converges; a per-step ε' at
    step ``dt`` is ``ε · q_max`` in these units.  Both share the hard limit ε → 0.
    ``damping`` θ ∈ (0, 1]: the mixing of the step, ``x + θ D (g(x) - x)`` (with
    ``anderson = 0`` and no preconditioner the path is updated to ``(1 - θ) old + θ new``).
    ``anderson``: depth ``m`` of type-II Anderson acceleration on the path that feeds
    back (``P``, and ``M`` when some population herds); 0 switches it off.  A proposal
    with ``P <= 0``, a non-finite entry or a larger residual than the current one is
    replaced by the damped step.  ``precondition``: scale the price residual by a
    quasi-Newton step ``D = (I - J)^{-1}``, ``J`` the causal response of the market
    recursion to the price when each step's exits react (logit derivative) to that
    step's price (:func:`mfg.lp_exit.market.market_newton`); it removes the oscillating mode of the
    price feedback, so ``damping = 1`` works.  No effect at ``temperature = 0``, nor in the
    clearing market, whose forward sweep already solves each step's price (only the impact
    market has the preconditioner).
    ``workers``: threads sweeping the populations concurrently (the kernels release
    the GIL; results are bit-identical for any value; 1 runs them in turn).
    Defaults (``damping=1, anderson=5, precondition=True``) were chosen by the
    measurements in docs/lp_exit_fixed_point.md.  The iteration stops when
    ``max(max|P_new - P|, max|M_new - M|) <= tol`` or after ``max_iter`` evaluations
    of the fixed-point map.
    """

    model_config = _CONFIG

    temperature: bounded(0.0, 10.0) = 1e-3
    damping: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    tol: bounded(1e-15, 1.0) = 1e-8
    max_iter: Annotated[int, Field(ge=1, le=100_000)] = 200
    anderson: Annotated[int, Field(ge=0, le=50)] = 5
    precondition: bool = True
    workers: Annotated[int, Field(ge=1, le=256)] = 1


class ReportWindow(BaseModel):
    """The period an experiment reports (years): the solved window may extend beyond it on both sides
    (a burn-in from the initial law, and a burn-out before the window's end, where funds that
    outlive it are valued at par), so that facts are measured away from both truncations."""

    model_config = _CONFIG

    start: Year
    end: Year

    @model_validator(mode="after")
    def _ordered(self):
        if not self.end > self.start:
            raise ValueError(f"end ({self.end}) must exceed start ({self.start})")
        return self


class MarkdownKnot(BaseModel):
    """One knot of the stale-NAV markdown schedule (docs/model.md 2.7): at ``time`` (years) true value is
    ``factor`` times reported NAV (``0 < factor <= 1``); between knots the factor is linear, before the
    first and after the last it stays at their values."""

    model_config = _CONFIG

    time: Year
    factor: bounded(0.0, 1.0, lo_open=True)


def _knots_ordered(knots: tuple[MarkdownKnot, ...]) -> tuple[MarkdownKnot, ...]:
    for i in range(1, len(knots)):
        if not knots[i].time > knots[i - 1].time:
            raise ValueError(f"knot times must increase: markdown[{i}].time={knots[i].time!r} is not after "
                             f"markdown[{i - 1}].time={knots[i - 1].time!r}")
    return knots


def markdown_factor(knots, t) -> np.ndarray:
    """The stale-NAV markdown ``f(t) <= 1`` of docs/model.md 2.7 at the times ``t``: piecewise linear through
    the knots (``(time, factor)`` pairs or :class:`MarkdownKnot`), constant beyond the end knots, 1 without
    knots.  A price ``P`` per unit of true NAV is ``P f(t)`` in units of reported NAV."""
    t = np.asarray(t, dtype=float)
    if not knots:
        return np.ones_like(t)
    ts = np.array([k.time if isinstance(k, MarkdownKnot) else k[0] for k in knots], dtype=float)
    fs = np.array([k.factor if isinstance(k, MarkdownKnot) else k[1] for k in knots], dtype=float)
    return np.interp(t, ts, fs)


class Scenario(BaseModel):
    """A model with its grid and solver options: the content of a scenario TOML file.

    Layout::

        [model]          start, end
        [model.market]   kind, pbar, tau_d, gamma, P_cap, ...
        [[model.populations]]   name, lp_type, vintage, ...
        [model.populations.seasonal]   amplitude, start, end   (optional)
        [grid]           L_min, L_max, n_L, dt
        [solver]         temperature, damping, tol, max_iter, anderson, precondition, workers  (optional)
        [[events]]       time, name, description, populations, liquidity_shift, capital_cut,
                         Kbar_factor, pbar_factor, sigma_factor, duration  (optional; mfg.lp_exit.events.ShockEvent)
        [report]         start, end   (optional: the period experiments report, inside [model] start..end)
        [[markdown]]     time, factor   (optional: stale-NAV markdown knots, docs/model.md 2.7; times increasing,
                         0 < factor <= 1)

    Prices inside the game are per unit of true NAV; :meth:`reported` quotes them per unit of
    reported NAV (``P f(t)``).
    """

    model_config = _CONFIG

    model: LPExitModel
    grid: Grid
    solver: SolverOptions = SolverOptions()
    events: Annotated[tuple[ShockEvent, ...], AfterValidator(sort_events)] = ()
    report: ReportWindow | None = None
    markdown: Annotated[tuple[MarkdownKnot, ...], AfterValidator(_knots_ordered)] = ()

    def markdown_at(self, t) -> np.ndarray:
        """The markdown factor ``f(t)`` of this scenario (1 without ``[[markdown]]``; docs/model.md 2.7)."""
        return markdown_factor(self.markdown, t)

    def reported(self, t, price) -> np.ndarray:
        """``price`` (per unit of true NAV, on the times ``t``) in units of reported NAV: ``price f(t)``."""
        return np.asarray(price, dtype=float) * self.markdown_at(t)

    @property
    def report_window(self) -> tuple[float, float]:
        """``(start, end)`` of the reported period (the model's window unless ``[report]`` says otherwise)."""
        if self.report is None:
            return float(self.model.start), float(self.model.end)
        return float(self.report.start), float(self.report.end)

    @model_validator(mode="after")
    def _covers(self):
        if self.report is not None and not (self.model.start <= self.report.start
                                            and self.report.end <= self.model.end):
            raise ValueError(f"report: [{self.report.start}, {self.report.end}] must lie inside the model's window "
                             f"[{self.model.start}, {self.model.end}]")
        self.grid.check_covers(self.model)
        window_steps(self.model, float(self.grid.dt))
        check_events(self.events, [p.name for p in self.model.populations], self.model.start, self.model.end,
                     float(self.grid.dt))
        return self

    @classmethod
    def from_toml(cls, text: str) -> "Scenario":
        return cls.model_validate(tomllib.loads(text))

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml` reads back to an equal scenario."""
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


#: Folder of the shipped scenario files (package data of ``mfg.lp_exit``).
SCENARIO_DIR = Path(__file__).resolve().parent / "library"


class ScenarioNotFound(FileNotFoundError):
    """Neither a file nor the name of a shipped scenario."""


def scenario_description(path: str | Path) -> str:
    """The first comment line of a scenario TOML file, without the ``#`` (empty if none)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                return s.lstrip("#").strip()
            return ""
    return ""


def shipped_scenarios() -> dict[str, tuple[Path, str]]:
    """``{name: (path, description)}`` of the shipped scenario files, sorted by name."""
    if not SCENARIO_DIR.is_dir():
        return {}
    return {p.stem: (p, scenario_description(p)) for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def resolve_scenario(name_or_path: str | Path) -> Path:
    """Path of a scenario: an existing file, or the name of a shipped one (``"calm"``, ``"calm.toml"``).

    Raises :class:`ScenarioNotFound` naming the shipped scenarios otherwise.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_scenarios()
    key = p.stem if p.suffix == ".toml" and len(p.parts) == 1 else str(name_or_path)
    if key in shipped:
        return shipped[key][0]
    names = ", ".join(shipped) or "none"
    raise ScenarioNotFound(f"no scenario file or shipped scenario named {str(name_or_path)!r} "
                           f"(shipped: {names}; `gelav scenarios` lists them)")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario: a TOML file, or the name of a shipped one (``load_scenario("calm")``;
    see :class:`Scenario` for the layout)."""
    with open(resolve_scenario(name_or_path), "rb") as fh:
        return Scenario.model_validate(tomllib.load(fh))
