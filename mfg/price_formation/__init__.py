"""The price-formation MFG of Ashrafyan & Gomes (docs/model.md 1).

Data flow: :class:`PriceFormationProblem` (continuous data) → :func:`discretise` →
:func:`solve` → :class:`PriceFormationResult`.  Modules: :mod:`.solver` (problem,
discretisation, fixed point, result), :mod:`.impact` (market-impact costs ``l(v)``),
:mod:`.exact` (closed-form solutions, docs/model.md 1.3), :mod:`.callables` (checked
evaluation of user callables).
"""

from .impact import Impact, PowerImpact, QuadraticImpact
from .solver import (
    ConvergenceWarning,
    DiscreteProblem,
    PriceFormationProblem,
    PriceFormationResult,
    balance_price,
    discretise,
    hj_backward,
    solve,
    transport_forward,
)

__all__ = [
    "PriceFormationProblem",
    "PriceFormationResult",
    "DiscreteProblem",
    "ConvergenceWarning",
    "Impact",
    "QuadraticImpact",
    "PowerImpact",
    "discretise",
    "solve",
    "hj_backward",
    "transport_forward",
    "balance_price",
]
