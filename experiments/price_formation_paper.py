"""The published experiments of Ashrafyan & Gomes (docs/model.md 1.4) as problem objects.

Both tests: T = 1, domain [-1, 1], u_T = 0, supply ``Q' = 5 sin(3 pi t) - 4 Q``,
``Q(0) = -1/2`` and a bump initial density ``exp(-1/(1 - (lam x)^2))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from mfg.price_formation import PowerImpact, PriceFormationProblem, QuadraticImpact
from mfg.price_formation.exact import LinearPotentialSolution, LQSolution

__all__ = ["PaperTest", "paper_test", "supply", "bump_density", "MESHES", "PUBLISHED"]

OMEGA = 3 * np.pi
_A = 20 / (16 + OMEGA**2)
_B = -5 * OMEGA / (16 + OMEGA**2)
_C = -0.5 - _B

#: (rho, h) of the paper's four meshes.
MESHES = ((0.02, 0.04), (0.01, 0.02), (0.005, 0.01), (0.0025, 0.005))

#: Published relative l-infinity errors (docs/model.md 1.4): test -> rho -> (price, u(.,0), m(.,T)).
PUBLISHED = {
    1: {0.02: (1.2e-2, 2.5e-2, 8.8e-2), 0.01: (6.0e-3, 1.1e-2, 4.2e-2),
        0.005: (3.3e-3, 4.7e-3, 1.8e-2), 0.0025: (2.1e-3, 1.2e-3, 6.7e-3)},
    2: {0.02: (2.6e-2, 8.5e-3, 5.3e-2), 0.01: (1.3e-2, 7.4e-3, 2.6e-2),
        0.005: (6.7e-3, 6.8e-3, 1.3e-2), 0.0025: (3.9e-3, 6.5e-3, 6.6e-3)},
}
#: Published iteration counts.
PUBLISHED_ITERATIONS = {1: 4, 2: 3}


def supply(t):
    """``Q(t) = A sin(3 pi t) + B cos(3 pi t) + C e^{-4t}``, the solution of the paper's supply ODE."""
    t = np.asarray(t, dtype=float)
    return _A * np.sin(OMEGA * t) + _B * np.cos(OMEGA * t) + _C * np.exp(-4 * t)


def bump_density(x, lam: float):
    """Unnormalised ``exp(-1/(1 - (lam x)^2))`` on ``|x| < 1/lam``, zero elsewhere."""
    x = np.asarray(x, dtype=float)
    z = 1.0 - (lam * x) ** 2
    out = np.zeros_like(x)
    inside = z > 0
    out[inside] = np.exp(-1.0 / z[inside])
    return out


def _zero(x):
    return np.zeros_like(np.asarray(x, dtype=float))


def _quadratic_potential(x):
    return 0.5 * (np.asarray(x, dtype=float) - 0.25) ** 2


def _linear_potential(x):
    return np.asarray(x, dtype=float)


@dataclass(frozen=True)
class PaperTest:
    """One of the paper's tests: the problem, its exact solution and its tolerance."""

    number: int
    problem: PriceFormationProblem
    exact: LQSolution | LinearPotentialSolution
    tol: float

    def errors(self, result) -> dict[str, float]:
        """Relative l-infinity errors: price on t_0..t_{N-1}, u(., 0), m(., T) (docs/model.md 1.4)."""
        T = self.problem.horizon
        p_ex = self.exact.price(result.price_times)
        u_ex = self.exact.value(result.x, 0.0)
        m_ex = self.exact.density(result.x, T)
        rel = lambda num, ex: float(np.max(np.abs(num - ex)) / np.max(np.abs(ex)))  # noqa: E731
        return {"price": rel(result.price, p_ex), "u0": rel(result.u[0], u_ex), "mT": rel(result.m[-1], m_ex)}


def paper_test(number: int) -> PaperTest:
    """Test 1 (LQ) or test 2 (power impact, linear potential) of the paper."""
    if number == 1:
        lam = 1.1
        density = partial(bump_density, lam=lam)
        problem = PriceFormationProblem(
            impact=QuadraticImpact(1.0), potential=_quadratic_potential, terminal=_zero, supply=supply,
            initial_density=density, domain=(-1.0, 1.0), horizon=1.0,
        )
        exact = LQSolution(c=1.0, eta=1.0, kappa=0.25, gamma=0.0, zeta=0.0, supply=supply,
                           initial_density=density, support=(-1 / lam, 1 / lam), horizon=1.0)
        return PaperTest(1, problem, exact, tol=0.004)
    if number == 2:
        lam = 1.2
        density = partial(bump_density, lam=lam)
        impact = PowerImpact(4 / 3, 0.75)
        problem = PriceFormationProblem(
            impact=impact, potential=_linear_potential, terminal=_zero, supply=supply,
            initial_density=density, domain=(-1.0, 1.0), horizon=1.0,
        )
        exact = LinearPotentialSolution(impact=impact, eta=1.0, abar=0.0, supply=supply, initial_density=density,
                                        support=(-1 / lam, 1 / lam), horizon=1.0)
        return PaperTest(2, problem, exact, tol=0.0002)
    raise ValueError(f"the paper has tests 1 and 2, not {number!r}")
