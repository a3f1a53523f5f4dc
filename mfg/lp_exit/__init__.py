"""The LP-exit MFG: limited partners sell fund stakes on a secondary market (docs/model.md 2).

Data flow: :mod:`.params` (validated scenario: model, grid, solver options, events; the shipped
scenarios in ``library/``) → :mod:`.discretisation` (every per-population, per-step array) →
:func:`solve` (:mod:`.solver`, the fixed point on the price and mean-field paths,
:mod:`.fixed_point`) → :class:`LPExitResult` (:mod:`.result`).  The market of each step:
:mod:`.clearing` (the clearing market of docs/model.md 2.4, the default) or :mod:`.market` (the
reduced-form impact market of 2.4b).  The sweeps: :mod:`.kernels` (second-order semi-Lagrangian,
with the exit rule shared by both methods) and :mod:`.fd` (the finite-difference cross-check).
Shocks and what they are measured against: :mod:`.scenarios` (unanticipated events, stitched
segments), :mod:`.baselines` (docs/model.md 2.7), :mod:`.equilibria` (several equilibria from
several starts); :mod:`.closed_form` holds the single-LP stopping problem's closed form (2.9).
"""

from .equilibria import Equilibrium, equilibria_after, find_equilibria
from .events import ShockEvent, ShockSchedule
from .params import (
    ClearingMarket,
    Grid,
    ImpactMarket,
    LPExitModel,
    Market,
    Population,
    Scenario,
    Seasonal,
    SolverOptions,
    load_scenario,
)
from .solver import (
    BoundaryMassWarning,
    ConvergenceWarning,
    LPExitResult,
    LPState,
    MarketInputs,
    backward_sweep,
    forward_sweep,
    solve,
)

__all__ = [
    "solve",
    "LPExitResult",
    "LPState",
    "MarketInputs",
    "ConvergenceWarning",
    "BoundaryMassWarning",
    "backward_sweep",
    "forward_sweep",
    "Population",
    "Seasonal",
    "Market",
    "ClearingMarket",
    "ImpactMarket",
    "find_equilibria",
    "equilibria_after",
    "Equilibrium",
    "LPExitModel",
    "Grid",
    "SolverOptions",
    "Scenario",
    "load_scenario",
    "ShockEvent",
    "ShockSchedule",
]
