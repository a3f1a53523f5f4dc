"""Convex market-impact costs ``l(v)`` of the price-formation MFG (docs/model.md 1.1).

Both costs are power laws ``l(v) = scale * |v|**p`` with ``p > 1``; the numba
kernels of :mod:`mfg.semi_lagrangian` work on the pair ``(p, scale)``.  The
Hamiltonian is ``H(x, q) = l*(-q) - V(x)`` and the optimal trading rate is
``v* = -H_q = (l')^{-1}(-q)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Impact", "PowerImpact", "QuadraticImpact"]


@dataclass(frozen=True)
class PowerImpact:
    """``l(v) = scale * |v|**p``; convex (strictly) for ``p > 1`` and ``scale > 0``.

    The paper's test 2 cost ``(3/4)|v|^{4/3}`` is ``PowerImpact(4/3, 0.75)``, whose
    ``H_q(q) = q**3``.
    """

    p: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.p, numbers.Real) and math.isfinite(self.p)):
            raise ValueError(f"impact exponent p must be a finite number, got {self.p!r}")
        if not self.p > 1:
            raise ValueError(
                f"impact is not strictly convex: exponent p={self.p} must exceed 1 "
                "(p <= 1 gives a linear or concave cost with no unique trading rate)"
            )
        if not (isinstance(self.scale, numbers.Real) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"impact is not convex: scale must be positive and finite, got {self.scale!r}")

    @property
    def kernel_params(self) -> tuple[float, float]:
        """``(p, scale)`` as used by the numba kernels."""
        return float(self.p), float(self.scale)

    def cost(self, v):
        """``l(v)``."""
        return self.scale * np.abs(v) ** self.p

    def marginal(self, v):
        """``l'(v)``."""
        v = np.asarray(v, dtype=float)
        return np.sign(v) * self.scale * self.p * np.abs(v) ** (self.p - 1)

    def marginal_inverse(self, w):
        """``(l')^{-1}(w)``: the trading rate whose marginal cost is ``w``."""
        w = np.asarray(w, dtype=float)
        return np.sign(w) * (np.abs(w) / (self.scale * self.p)) ** (1.0 / (self.p - 1))

    def conjugate(self, w):
        """Legendre transform ``l*(w) = sup_v [w v - l(v)]``."""
        v = self.marginal_inverse(w)
        return np.asarray(w) * v - self.cost(v)


class QuadraticImpact(PowerImpact):
    """``l(v) = c v^2 / 2`` (the paper's test 1 with ``c = 1``)."""

    def __init__(self, c: float = 1.0) -> None:
        if not (isinstance(c, numbers.Real) and math.isfinite(c) and c > 0):
            raise ValueError(f"impact is not convex: QuadraticImpact needs c > 0, got {c!r}")
        super().__init__(2.0, 0.5 * float(c))

    @property
    def c(self) -> float:
        return 2.0 * self.scale

    def __repr__(self) -> str:
        return f"QuadraticImpact(c={self.c!r})"


Impact = PowerImpact
"""Every impact cost the solvers accept is a :class:`PowerImpact`."""
