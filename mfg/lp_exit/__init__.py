"""The LP-exit MFG: limited partners sell fund stakes on a secondary market (docs/model.md 2).

Data flow: :mod:`.params` (validated scenario: model, grid, solver options, events) →
:func:`solve` (:mod:`.solver`, the fixed point on the price and mean-field paths) →
:class:`LPExitResult`; :mod:`.scenarios` stitches unanticipated shocks and builds the
baselines.  The kernels: :mod:`.solver` (second-order semi-Lagrangian sweeps),
:mod:`.fd` (the finite-difference cross-check), :mod:`.market` (the market recursion),
:mod:`.exit_rule` (the logit shared by both methods); :mod:`.closed_form` holds the
single-LP stopping problem's closed form (docs/model.md 2.9).
"""

from .events import ShockEvent, ShockSchedule
from .params import (
    Grid,
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
    "LPExitModel",
    "Grid",
    "SolverOptions",
    "Scenario",
    "load_scenario",
    "ShockEvent",
    "ShockSchedule",
]
