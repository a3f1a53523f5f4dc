"""Header comments of the crisis scenario files (:mod:`experiments.crisis.library` writes them)."""

_LADDER = """
DESIGN.  calm.toml's clearing market (docs/model.md 2.4) and its stationary vintage ladder of three LP types
(pension, endowment, sovereign; {n_pop} populations in this window), every vintage and the window moved by a whole
number of years (the seasonal boxes are fractions of a year: nothing else changes; calm.toml's header says what was
set there for the calm rows of docs/model.md 2.11).  Two years of burn-in before the [report] window and nine after
it (funds outliving the window are valued at par at its end), as in calm.toml.  The liquidity grid is calm's
(dL = 0.025, dt = 1/24) extended down to L = -1.5 ({n_L} nodes) so that shocked LPs stay on it.  Built by
experiments/crisis/library.py (python -m experiments.crisis.library rewrites every crisis file); do not edit by hand.
Read with mfg.lp_exit.params.load_scenario; solve with mfg.lp_exit.scenarios.solve_scenario; the baselines of
docs/model.md 2.7 with mfg.lp_exit.baselines.
"""

_MARKDOWN = """
STALE NAVs ([[markdown]], docs/model.md 2.7): true value / reported NAV, from public figures only: from 1 at the
last quarter-end before the S&P 500's fall to (1 - s)/(1 - 0.476 s) at its trough quarter-end (s the fall; 0.476 =
18.9/39.7, the share of the 2008 fall that reported NAVs took, docs/model.md 2.10), back to 1 two quarters later
(NAVs lag public markets by up to 180 days).  Prices inside the game are per unit of true NAV; P f(t) is the price
in % of reported NAV (what the public figures quote).
"""

_FIRST = {
    "crisis_2008": ("The 2008-09 crisis on the clearing market: credit crunch, Lehman (buyers' capital and pricing), "
                    'the denominator effect; fitted to price and volume.'),
    "lp_types": ('Three LP types (pension, endowment, sovereign) in the calm market of 2005-2021: crisis_2008 '
                 'without its events.'),
    "covid_2020": ('COVID 2020 on the clearing market, predicted from the 2008 fit and public S&P 500 figures only '
                   '(held out of every fit).'),
    "rates_2022": ('The 2022 rate shock on the clearing market, predicted from the 2008 fit and public S&P 500 '
                   'figures (no public price to check).'),
    "vintages": ('Cross-vintage spillover on the clearing market: the LPs of the 2006-08 funds lose liquidity in '
                 '2010, nothing else moves.'),
    "shock_demo": ('Shock demonstration on the clearing market: a 2008-style liquidity squeeze and a loss of '
                   "buyers' capital in 2018."),
}

HEADERS = {
    "crisis_2008": _FIRST["crisis_2008"] + """
""" + _LADDER + _MARKDOWN + """2008: f = {f2008:.4f} at Q1 2009 (S&P 500 1322.70 -> 797.87 from Q1 2008 to Q1 2009).

EVENTS (unanticipated, docs/model.md 2.7).  2008.0 credit crunch: buyers' reference price P̄ x crunch until
Lehman.  2008.75 Lehman: buyers' dry powder cut by capital_cut; their reference P̄ x repricing for drought years,
then P̄ x recovery until 2011.25 (the S&P 500 closed above its Q1 2008 level again at the end of Q1 2011).  The LPs'
liquidity shifts (denominator effect: public portfolios fell, PE became overweight), endowments `shift`, pensions
0.35 x, sovereigns 0.12 x (the type ratios of the first version of this file), in two steps sized by the S&P 500's
quarterly falls: 20% at 2008.75 (Q3 2008, 1280.00 -> 1166.36), 80% at 2009.0 (Q4 2008 and Q1 2009, -> 797.87).
FITTED (gelav crisis calibration: price AND volume of 2008-10, docs/crisis_calibration.md): shift {fit[shift]:g},
capital_cut {fit[capital_cut]:g}, crunch {fit[crunch]:g}, repricing {fit[repricing]:g}, drought {fit[drought]:g}
years, recovery {fit[recovery]:g}.  None of the six is identified by the seven data points (68% intervals wider
than half their public bounds); the price RMSE is about 6 points (the check of docs/model.md 2.11 asks <= 4: failed);
gelav crisis facts prints every check.
""",
    "lp_types": _FIRST["lp_types"] + """
""" + _LADDER + """
Used as the no-shock counterfactual of crisis_2008 (the same model, grid and solver): the seller composition by LP
type and the sovereign funds' sales in calm years (gelav crisis lp_types, gelav crisis facts).
""",
    "covid_2020": _FIRST["covid_2020"] + """
""" + _LADDER + _MARKDOWN + """2020: f = {f2020:.4f} at Q1 2020 (S&P 500 3230.78 -> 2584.59 from Q4 2019 to Q1 2020).

EVENTS (2020.25, unanticipated), the 2008 fit (experiments/crisis/library.py FIT_2008) moved by public inputs:
every liquidity shift times the ratio of the S&P 500's quarter-end falls, {r2020:.3f} (20.0% against 39.7%); the
buyers' repricing and recovery factors to that power; both periods times 2/11 (the S&P 500 closed below its
pre-crisis quarter-end level at 2 quarter-ends in 2020, at 11 in 2008-10); no capital cut (docs/model.md 2.10:
secondary dry powder stayed at 1.8-2.6 years of volume in 2017-2023); no credit crunch.  No COVID price was used:
docs/model.md 2.10's 89 -> 80 (H1 2020) -> about 90 a year later are the hold-out check (gelav crisis facts).
""",
    "rates_2022": _FIRST["rates_2022"] + """
""" + _LADDER + _MARKDOWN + """2022: f = {f2022:.4f} at Q3 2022 (S&P 500 4766.18 -> 3585.62 from Q4 2021 to Q3 2022).

EVENTS (2022.25, the first Fed hike, unanticipated), by the rule of covid_2020.toml: shifts times {r2022:.3f}
(24.8% against 39.7%), the buyers' repricing and recovery factors to that power, both periods times 7/11 (7
quarter-ends below the Q4 2021 level, Q1 2022 to Q3 2023), no capital cut (record dry powder), no credit crunch.
The rate level itself does not move the LPs: with y = r - g a parallel rise of r and y leaves holding to maturity
worth NAV, and events cannot change r (docs/model.md 2.7).  docs/model.md 2.10 has no 2022 price: a model scenario.
""",
    "vintages": _FIRST["vintages"] + """
""" + _LADDER + """
EVENT (2010.0, unanticipated): the LPs of the funds of vintages 2006-2008 (one per LP type) lose 0.6 of liquidity;
no capital cut and no factor, so every effect on the other vintages travels through the shared price P, buyer capital
K and mean field M (docs/model.md 2.4).  gelav crisis spillover shocks each group of vintages in turn.
docs/model.md 2.10: cross-vintage spillover has no empirical estimate: a model prediction.
""",
    "shock_demo": _FIRST["shock_demo"] + """
""" + _LADDER + """
EVENTS (2018.0, unanticipated; from then on LPs foresee the announced path of buyers' capital): endowments' liquidity
-0.5, pensions' -0.2; secondary buyers lose 40% of their dry powder and raise 60% of their target for 1.5 years.
gelav lp-exit shock_demo solves it with the baselines of docs/model.md 2.7 (DCF, first round, myopic) and prints the
amplification multiplier.
""",
}
