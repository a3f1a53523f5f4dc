"""The result convention shared by the solvers (docs/model.md 3.3).

Every solver returns a frozen result with, modelled on SciPy's ``OptimizeResult`` and
``solve_ivp``:

* ``converged`` — whether the fixed point reached its tolerance;
* ``status`` — an :class:`Status` code (``0`` converged, ``1`` stopped at ``max_iter``);
* ``message`` — one line saying which, with the last residual and the tolerance;
* ``iterations`` — evaluations of the fixed-point map;
* ``residuals`` — the residual of each iteration;
* ``timings`` — seconds per phase, ``timings["total"]`` the whole call.

A solver that stops at ``max_iter`` emits :class:`ConvergenceWarning`; mass piling up on
an end node of a bounded grid emits :class:`BoundaryMassWarning`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status", "ConvergenceWarning", "BoundaryMassWarning", "status_of", "message_of"]


class Status(IntEnum):
    """Why a fixed point stopped."""

    CONVERGED = 0
    MAX_ITER = 1


class ConvergenceWarning(RuntimeWarning):
    """A fixed point stopped at ``max_iter`` before reaching its tolerance."""


class BoundaryMassWarning(RuntimeWarning):
    """Non-negligible mass sits on an end node of a bounded grid."""


def status_of(converged: bool) -> Status:
    """:attr:`Status.CONVERGED` or :attr:`Status.MAX_ITER`."""
    return Status.CONVERGED if converged else Status.MAX_ITER


def message_of(converged: bool, iterations: int, residual: float, tol: float) -> str:
    """The one-line ``message`` of a result."""
    if converged:
        return f"converged in {iterations} iterations: residual {residual:.3g} <= tol {tol:g}"
    return f"stopped at max_iter after {iterations} iterations: residual {residual:.3g} > tol {tol:g}"
