"""The crisis scenario files, built from calm.toml (``python -m experiments.crisis.library`` rewrites them).

Every crisis file of ``mfg/lp_exit/library/`` (crisis_2008, covid_2020, rates_2022, lp_types,
vintages, shock_demo) is calm.toml's clearing market (docs/model.md 2.4) with its stationary
vintage ladder of three LP types, moved in time by a whole number of years (every vintage
and the window; the seasonal boxes are in fractions of a year, so nothing else changes), its
window cut so that it covers the crisis with a two-year burn-in before the report window and
nine years after it (calm.toml's choice: funds outliving the window are valued at par at its
end), and its liquidity grid extended downwards with calm's spacing so that the shocked LPs'
mass stays on it.  What is added is the events and the stale-NAV markdown (docs/model.md 2.7):

* **2008** (:func:`events_2008`): a credit crunch at 2008.0 (secondary buyers' reference price
  ``P̄ × crunch`` until Lehman), Lehman at 2008.75 (buyers' dry powder cut by ``capital_cut``,
  their reference ``P̄ × repricing`` for ``drought`` years, then ``P̄ × recovery`` until the
  S&P 500 is back above its Q1 2008 close, 2011.25), and the LPs' liquidity shifts
  (denominator effect) in two steps whose sizes follow the S&P 500's quarterly falls (Q3 2008
  at 2008.75: 20%; Q4 2008 and Q1 2009 at 2009.0: 80%), endowments ``shift``, pensions
  ``0.35 shift``, sovereigns ``0.12 shift`` (the type ratios of the first version's file).
  The six named numbers are fitted by ``gelav crisis calibration`` (:data:`FIT_2008`).
* **COVID 2020 and the 2022 rate shock** (:func:`predicted_events`): never fitted; the 2008
  fit moved by public inputs only: every shift times the ratio of the S&P 500's quarter-end
  falls (:data:`PUBLIC`), the buyers' repricing ``repricing ** ratio`` and ``recovery ** ratio``,
  both periods times the ratio of the numbers of quarter-ends the S&P 500 spent below its
  pre-crisis level, and no
  capital cut (docs/model.md 2.10: dry powder stayed at 1.8 to 2.6 years of volume in
  2017-2023); one event at the shock date; no credit crunch.
* **Stale NAVs** (:func:`markdown`): true value / reported NAV falls linearly from 1 at the
  last quarter-end before the public fall to ``(1 - s) / (1 - 0.476 s)`` at its trough
  quarter-end (``s`` the S&P 500 fall; 0.476 = 18.9 / 39.7, the share of the 2008 fall that
  reported NAVs took, docs/model.md 2.10), and returns to 1 two quarters later (NAVs lag
  public markets by up to 180 days).

The files are written with a header that states all of this; a test checks that the shipped
files equal what this module builds (tests/test_crisis_scenarios.py).
"""

from __future__ import annotations

import math
from pathlib import Path

from mfg.lp_exit.events import ShockEvent
from mfg.lp_exit.params import SCENARIO_DIR, Grid, MarkdownKnot, ReportWindow, Scenario, load_scenario

__all__ = ["FIT_2008", "PUBLIC", "NAV_PASS_THROUGH", "ladder", "events_2008", "predicted_events", "markdown",
           "build", "build_all", "write_all", "NAMES", "type_populations", "L_MIN"]

#: Parameters of the 2008 shock fitted by ``gelav crisis calibration`` (docs/crisis_calibration.md).
FIT_2008 = {"shift": -0.264, "capital_cut": 0.602, "crunch": 0.903, "repricing": 0.637, "drought": 0.75,
            "recovery": 0.873}
#: When the buyers' reference price is back to calm: the S&P 500 closed above its Q1 2008 level again at
#: the end of Q1 2011 (after 11 quarter-ends below it).
BUYERS_BACK = {"2008": 2011.25}

#: Public figures the events and markdowns are set from: S&P 500 quarter-end closes (the fall from the last
#: quarter-end before it to the trough quarter-end) and the number of quarter-ends the index closed below
#: its pre-crisis quarter-end (2008: Q2 2008 to Q4 2010, back above at Q1 2011, 1325.83).
PUBLIC = {
    "2008": {"before": (2008.25, 1322.70), "trough": (2009.25, 797.87), "quarters_below": 11,
             "quarterly": {2008.75: (1280.00, 1166.36), 2009.0: (1166.36, 797.87)}},
    "2020": {"before": (2020.0, 3230.78), "trough": (2020.25, 2584.59), "quarters_below": 2},
    "2022": {"before": (2022.0, 4766.18), "trough": (2022.75, 3585.62), "quarters_below": 7},
}
#: Share of a public-market fall that reported NAVs take in its year (docs/model.md 2.10: 18.9% against 39.7%).
NAV_PASS_THROUGH = 18.9 / 39.7
#: Liquidity shift of pensions and sovereigns per unit of the endowments' (the first version's -0.30/-0.85,
#: -0.10/-0.85).
TYPE_RATIOS = {"endowment": 1.0, "pension": 0.35, "sovereign": 0.12}
#: Lower end of the liquidity grid of the crisis files (calm.toml: -0.5; same spacing 0.025).
L_MIN = -1.5

#: name -> (years moved, window start, window end, report start, report end)
_LAYOUT = {
    "crisis_2008": (-8, 2005.0, 2021.0, 2007.0, 2012.0),
    "lp_types": (-8, 2005.0, 2021.0, 2007.0, 2012.0),
    "covid_2020": (3, 2016.0, 2032.0, 2018.0, 2023.0),
    "rates_2022": (5, 2018.0, 2034.0, 2020.0, 2025.0),
    "vintages": (-5, 2008.0, 2023.0, 2010.0, 2014.0),
    "shock_demo": (3, 2016.0, 2030.0, 2018.0, 2021.0),
}
NAMES = tuple(_LAYOUT)


def fall(year: str) -> float:
    """The S&P 500's quarter-end fall of a crisis (a fraction)."""
    p = PUBLIC[year]
    return 1.0 - p["trough"][1] / p["before"][1]


def markdown(year: str) -> tuple[MarkdownKnot, ...]:
    """The stale-NAV markdown knots of a crisis (module docstring)."""
    p = PUBLIC[year]
    s = fall(year)
    t0, t1 = p["before"][0], p["trough"][0]
    return (MarkdownKnot(time=t0, factor=1.0), MarkdownKnot(time=t1, factor=(1.0 - s) / (1.0 - NAV_PASS_THROUGH * s)),
            MarkdownKnot(time=t1 + 0.5, factor=1.0))


def ladder(years: int, start: float, end: float, report: tuple[float, float]) -> Scenario:
    """calm.toml moved by ``years`` (vintages and window), on ``[start, end]``, with the crisis grid."""
    calm = load_scenario("calm")
    m = calm.model
    pops = []
    for p in m.populations:
        v = p.vintage + years
        if v < end and v + p.life > start:
            pops.append(p.model_copy(update={"vintage": v, "name": f"{p.lp_type}-{int(round(v))}"}))
    model = m.model_copy(update={"populations": tuple(pops), "start": start, "end": end})
    g = calm.grid
    n_L = int(round((g.L_max - L_MIN) / g.dL)) + 1
    grid = Grid(L_min=L_MIN, L_max=g.L_max, n_L=n_L, dt=g.dt)
    return Scenario(model=model, grid=grid, solver=calm.solver, report=ReportWindow(start=report[0], end=report[1]))


def type_populations(model, lp_type: str) -> tuple[str, ...]:
    return tuple(p.name for p in model.populations if p.lp_type == lp_type)


def _shifts(model, time: float, shift: float, label: str) -> list[ShockEvent]:
    return [ShockEvent(time=time, name=f"{label}-{ty}", populations=type_populations(model, ty),
                       liquidity_shift=shift * ratio,
                       description=f"{ty}s' liquidity falls (denominator effect): {ratio:g} x the endowments' shift")
            for ty, ratio in TYPE_RATIOS.items() if ratio != 0.0 and type_populations(model, ty)]


def _buyers(time: float, cut: float, repricing: float, recovery: float, drought: float, back: float,
            label: str) -> list[ShockEvent]:
    """Buyers' dry powder cut at ``time``; their reference price ``P̄ × repricing`` for ``drought`` years, then
    ``P̄ × recovery`` until ``back`` (two overlapping factors: ``repricing / recovery`` and ``recovery``)."""
    span = back - time
    evs = [ShockEvent(time=time, name=f"{label}-buyers", capital_cut=cut, pbar_factor=repricing / recovery,
                      duration=min(drought, span),
                      description="buyers' dry powder destroyed; their reference price falls for the drought")]
    if recovery != 1.0:
        evs.append(ShockEvent(time=time, name=f"{label}-buyers-recovery", pbar_factor=recovery, duration=span,
                              description="buyers' reference price until public markets are back"))
    return evs


def events_2008(model, fit: dict = FIT_2008) -> tuple[ShockEvent, ...]:
    """The 2008 events (module docstring) with the parameters ``fit``."""
    q = PUBLIC["2008"]["quarterly"]
    logs = {t: math.log(a / b) for t, (a, b) in q.items()}
    total = sum(logs.values())
    evs = [ShockEvent(time=2008.0, name="credit-crunch", pbar_factor=fit["crunch"], duration=0.75,
                      description="secondary buyers lose leverage: their reference price falls until Lehman")]
    evs += _buyers(2008.75, fit["capital_cut"], fit["repricing"], fit["recovery"], fit["drought"],
                   BUYERS_BACK["2008"], "lehman")
    for t, lg in logs.items():
        evs += _shifts(model, t, fit["shift"] * lg / total, f"denominator-{t:g}")
    return tuple(evs)


def predicted_events(model, year: str, time: float, fit: dict = FIT_2008) -> tuple[ShockEvent, ...]:
    """A crisis predicted from the 2008 fit and public inputs only (module docstring)."""
    r = fall(year) / fall("2008")
    q = PUBLIC[year]["quarters_below"] / PUBLIC["2008"]["quarters_below"]
    back = time + q * (BUYERS_BACK["2008"] - 2008.75)
    evs = _buyers(time, 0.0, fit["repricing"] ** r, fit["recovery"] ** r, fit["drought"] * q, back, year)
    return tuple(evs + _shifts(model, time, fit["shift"] * r, f"denominator-{year}"))


def _vintage_events(model) -> tuple[ShockEvent, ...]:
    pops = tuple(p.name for p in model.populations if 2006 <= p.vintage <= 2008)
    return (ShockEvent(time=2010.0, name="squeeze-2006-08", populations=pops, liquidity_shift=-0.6,
                       description="the LPs of the 2006-08 funds lose liquidity (capital calls); nothing else"),)


def _demo_events(model) -> tuple[ShockEvent, ...]:
    return (ShockEvent(time=2018.0, name="squeeze-endowments", populations=type_populations(model, "endowment"),
                       liquidity_shift=-0.5, capital_cut=0.4, Kbar_factor=0.6, duration=1.5,
                       description="endowments' liquidity falls; buyers lose 40% of dry powder, raise 60% for 1.5 y"),
            ShockEvent(time=2018.0, name="squeeze-pensions", populations=type_populations(model, "pension"),
                       liquidity_shift=-0.2, description="pensions' liquidity falls less"))


def build(name: str, fit: dict = FIT_2008) -> Scenario:
    """The scenario ``name`` (one of :data:`NAMES`) with the 2008 parameters ``fit``."""
    years, start, end, r0, r1 = _LAYOUT[name]
    sc = ladder(years, start, end, (r0, r1))
    m = sc.model
    extra = {}
    if name == "crisis_2008":
        extra = {"events": events_2008(m, fit), "markdown": markdown("2008")}
    elif name == "covid_2020":
        extra = {"events": predicted_events(m, "2020", 2020.25, fit), "markdown": markdown("2020")}
    elif name == "rates_2022":
        extra = {"events": predicted_events(m, "2022", 2022.25, fit), "markdown": markdown("2022")}
    elif name == "vintages":
        extra = {"events": _vintage_events(m)}
    elif name == "shock_demo":
        extra = {"events": _demo_events(m)}
    return Scenario(**{**dict(sc), **extra})


def build_all(fit: dict = FIT_2008) -> dict[str, Scenario]:
    return {n: build(n, fit) for n in NAMES}


def _header(name: str, sc: Scenario, fit: dict) -> str:
    from .library_headers import HEADERS

    text = HEADERS[name].format(fit=fit, n_pop=len(sc.model.populations), n_L=sc.grid.n_L,
                                r2020=fall("2020") / fall("2008"), r2022=fall("2022") / fall("2008"),
                                f2008=markdown("2008")[1].factor, f2020=markdown("2020")[1].factor,
                                f2022=markdown("2022")[1].factor)
    return "".join(f"# {line}".rstrip() + "\n" for line in text.strip("\n").splitlines()) + "\n"


def file_text(name: str, fit: dict = FIT_2008) -> str:
    sc = build(name, fit)
    return _header(name, sc, fit) + sc.to_toml()


def write_all(folder: Path = SCENARIO_DIR, fit: dict = FIT_2008) -> list[Path]:
    """Write every crisis file to ``folder`` (atomically); returns the paths."""
    from experiments.io import write_text

    return [write_text(Path(folder) / f"{n}.toml", file_text(n, fit)) for n in NAMES]


if __name__ == "__main__":  # pragma: no cover
    for p in write_all():
        print(p)
