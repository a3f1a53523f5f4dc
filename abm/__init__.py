"""Finite-N markets: N agents following the same discrete models as the MFG solvers.

Mesa is imported only by :mod:`abm.mesa_model` (importing it changes the process's
multiprocessing start method); nothing here imports it.
"""

from .engine import MarketSimulation, simulate
from .policies import CallablePolicy, MFGPolicy, ThresholdPolicy

__all__ = ["simulate", "MarketSimulation", "MFGPolicy", "ThresholdPolicy", "CallablePolicy"]
