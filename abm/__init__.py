"""Finite-N markets: N agents following the same discrete models as the MFG solvers.

* :mod:`abm.lp_market`: the LP secondary market (numba engine, policies, Mesa model);
* :mod:`abm.price_formation`: the N-trader price-formation market.

Mesa is imported only by :mod:`abm.lp_market.mesa_model` (importing it changes the
process's multiprocessing start method); nothing here imports it.
"""

from .lp_market import CallablePolicy, MarketSimulation, MFGPolicy, ThresholdPolicy, simulate

__all__ = ["simulate", "MarketSimulation", "MFGPolicy", "ThresholdPolicy", "CallablePolicy"]
