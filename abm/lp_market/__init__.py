"""The finite-N LP market (docs/model.md 2.8): a numba engine for scale
(:mod:`.engine`), exit policies (:mod:`.policies`) and a Mesa model of the same market
(:mod:`.mesa_model`, imported on demand only: importing Mesa changes the process's
multiprocessing start method)."""

from .engine import MarketSimulation, simulate
from .policies import CallablePolicy, MFGPolicy, ThresholdPolicy

__all__ = ["simulate", "MarketSimulation", "MFGPolicy", "ThresholdPolicy", "CallablePolicy"]
