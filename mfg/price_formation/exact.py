"""Exact solutions of the price-formation MFG on the whole line (docs/model.md 1.3).

* :class:`LQSolution` — ``l = c v^2/2``, ``V = eta (x - kappa)^2/2``,
  ``u_T = gamma (x - zeta)^2/2``: price, value function, density and mean.
* :class:`LinearPotentialSolution` — ``V = eta x``, ``u_T = abar x``, any convex
  ``l``: every agent trades ``v* = Q(t)``.

Derivation of the LQ value function (documented in docs/price_formation.md): with
``u = a x^2/2 + b x + e``, the Riccati equation ``a' = a^2/c - eta``, ``a(T) = gamma``
has ``a(T - tau)/c = d/dtau log G(tau)`` with
``G(tau) = cosh(mu tau) + gamma sinh(mu tau)/(c mu)``, ``mu = sqrt(eta/c)``.  Along the
mean, ``u_x(xbar(t), t) = -c Q - price``, so ``b = -c Q - price - a xbar`` exactly; ``e``
needs one quadrature.  The optimal flow is affine, ``x(t) = Phi(t) x0 + psi(t)`` with
``Phi(t) = G(T - t)/G(T)``, so ``m(., t)`` is ``m_0`` stretched and shifted.

Integrals of the supply are computed by adaptive quadrature (``scipy.integrate.quad``
at ``epsabs = epsrel = 1e-13``); "exact" means to that accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
from scipy import integrate

from .impact import PowerImpact

__all__ = ["lq_price", "linear_potential_price", "LQSolution", "LinearPotentialSolution", "normalised_density"]

_QUAD = dict(epsabs=1e-13, epsrel=1e-13, limit=200)


def _quad(f: Callable[[float], float], a: float, b: float) -> float:
    if a == b:
        return 0.0
    return integrate.quad(f, a, b, **_QUAD)[0]


def _scalar(f: Callable) -> Callable[[float], float]:
    """A scalar function from a vectorised callable (which may also return a scalar)."""
    return lambda s: float(np.asarray(f(np.array([s], dtype=float)), dtype=float).ravel()[0])


def _supply_integrals(supply: Callable, t: np.ndarray, T: float):
    """``S(t) = int_0^t Q`` and ``W(t) = int_t^T int_0^s Q(r) dr ds`` at each ``t``."""
    q = _scalar(supply)
    S = np.array([_quad(q, 0.0, float(tk)) for tk in t])
    # W(t) = (T - t) S(t) + int_t^T (T - r) Q(r) dr  (integration by parts)
    W = np.array([(T - tk) * Sk + _quad(lambda r: (T - r) * q(r), float(tk), T) for tk, Sk in zip(t, S)])
    return S, W


def lq_price(t, *, c: float, eta: float, kappa: float, gamma: float, zeta: float, supply: Callable,
             initial_mean: float, horizon: float) -> np.ndarray:
    """Equilibrium price of the LQ model (docs/model.md 1.3)::

        price(t) = -c Q(t) + gamma (zeta - xbar_0) + eta (T - t)(kappa - xbar_0)
                   - gamma int_0^T Q - eta int_t^T int_0^s Q(r) dr ds
    """
    t = np.atleast_1d(np.asarray(t, dtype=float))
    T = float(horizon)
    S, W = _supply_integrals(supply, t, T)
    S_T = _supply_integrals(supply, np.array([T]), T)[0][0]
    Q = np.asarray(supply(t), dtype=float) * np.ones_like(t)
    return -c * Q + gamma * (zeta - initial_mean) + eta * (T - t) * (kappa - initial_mean) - gamma * S_T - eta * W


def linear_potential_price(t, *, impact: PowerImpact, eta: float, abar: float, supply: Callable,
                           horizon: float) -> np.ndarray:
    """``price(t) = -l'(Q(t)) - abar - eta (T - t)`` for ``V = eta x``, ``u_T = abar x``."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    Q = np.asarray(supply(t), dtype=float) * np.ones_like(t)
    return -impact.marginal(Q) - abar - eta * (float(horizon) - t)


def normalised_density(density: Callable, support: tuple[float, float]) -> Callable:
    """``density`` divided by its integral over ``support`` (adaptive quadrature)."""
    f = _scalar(density)
    z = _quad(f, *support)
    if not z > 0:
        raise ValueError("initial density has no mass")
    return lambda x: np.asarray(density(np.asarray(x, dtype=float)), dtype=float) / z


def _mean(density: Callable, support: tuple[float, float]) -> float:
    f = _scalar(density)
    return _quad(lambda x: x * f(x), *support) / _quad(f, *support)


@dataclass(frozen=True)
class LQSolution:
    """Exact LQ solution; ``initial_density`` is integrated over ``support`` (its support)."""

    c: float
    eta: float
    kappa: float
    gamma: float
    zeta: float
    supply: Callable
    initial_density: Callable
    support: tuple[float, float]
    horizon: float

    def __post_init__(self) -> None:
        if not self.c > 0:
            raise ValueError(f"LQSolution needs an impact coefficient c > 0, got c={self.c}")
        if not (self.eta >= 0 and self.gamma >= 0):
            raise ValueError(
                f"LQSolution needs a convex potential and terminal cost (eta >= 0, gamma >= 0), "
                f"got eta={self.eta}, gamma={self.gamma}"
            )

    @cached_property
    def initial_mean(self) -> float:
        return _mean(self.initial_density, self.support)

    def _G(self, tau):
        """``G(tau) = cosh(mu tau) + gamma sinh(mu tau)/(c mu)``, with its ``eta -> 0`` limit."""
        tau = np.asarray(tau, dtype=float)
        mu = math.sqrt(self.eta / self.c)
        z = mu * tau
        sinhc = np.where(z == 0, 1.0, np.sinh(z) / np.where(z == 0, 1.0, z))
        return np.cosh(z) + self.gamma * tau * sinhc / self.c

    def riccati(self, t):
        """``a(t)``: curvature of ``u(., t)``."""
        tau = self.horizon - np.asarray(t, dtype=float)
        mu = math.sqrt(self.eta / self.c)
        z = mu * tau
        # a/c = d/dtau log G = (mu sinh z + (gamma/c) cosh z) / G
        return self.c * (mu * np.sinh(z) + self.gamma / self.c * np.cosh(z)) / self._G(tau)

    def price(self, t) -> np.ndarray:
        return lq_price(t, c=self.c, eta=self.eta, kappa=self.kappa, gamma=self.gamma, zeta=self.zeta,
                        supply=self.supply, initial_mean=self.initial_mean, horizon=self.horizon)

    def mean(self, t) -> np.ndarray:
        """``xbar(t) = xbar_0 + int_0^t Q``."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        S, _ = _supply_integrals(self.supply, t, self.horizon)
        return self.initial_mean + S

    def _linear_coefficient(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        Q = np.asarray(self.supply(t), dtype=float) * np.ones_like(t)
        return -self.c * Q - self.price(t) - self.riccati(t) * self.mean(t)

    def value(self, x, t: float) -> np.ndarray:
        """``u(x, t) = a(t) x^2/2 + b(t) x + e(t)``."""
        x = np.asarray(x, dtype=float)
        T = self.horizon
        a = float(self.riccati(t))
        b = float(self._linear_coefficient(t)[0])

        q = _scalar(self.supply)

        def e_rate(s: float) -> float:
            # e' = (price + b)^2/(2c) - eta kappa^2/2, and price + b = -c Q - a xbar
            w = self.c * q(s) + float(self.riccati(s)) * float(self.mean(s)[0])
            return w * w / (2 * self.c) - self.eta * self.kappa**2 / 2

        e = self.gamma * self.zeta**2 / 2 - _quad(e_rate, float(t), T)
        return 0.5 * a * x**2 + b * x + e

    def density(self, x, t: float) -> np.ndarray:
        """``m(x, t) = m_0((x - psi)/Phi)/Phi`` with ``m_0`` normalised."""
        m0 = normalised_density(self.initial_density, self.support)
        phi = float(self._G(self.horizon - t) / self._G(self.horizon))
        psi = float(self.mean(t)[0]) - phi * self.initial_mean
        return m0((np.asarray(x, dtype=float) - psi) / phi) / phi


@dataclass(frozen=True)
class LinearPotentialSolution:
    """Exact solution for ``V = eta x``, ``u_T = abar x`` and any convex impact."""

    impact: PowerImpact
    eta: float
    abar: float
    supply: Callable
    initial_density: Callable
    support: tuple[float, float]
    horizon: float

    def price(self, t) -> np.ndarray:
        return linear_potential_price(t, impact=self.impact, eta=self.eta, abar=self.abar,
                                      supply=self.supply, horizon=self.horizon)

    def value(self, x, t: float) -> np.ndarray:
        """``u = (abar + eta (T - t)) x + e(t)``, ``e(t) = -int_t^T (Q l'(Q) - l(Q)) ds``."""
        q = _scalar(self.supply)
        imp = self.impact

        def rate(s: float) -> float:
            Q = q(s)
            return float(Q * imp.marginal(Q) - imp.cost(Q))

        e = -_quad(rate, float(t), self.horizon)
        return (self.abar + self.eta * (self.horizon - t)) * np.asarray(x, dtype=float) + e

    def density(self, x, t: float) -> np.ndarray:
        """``m(x, t) = m_0(x - int_0^t Q)``."""
        m0 = normalised_density(self.initial_density, self.support)
        shift = _supply_integrals(self.supply, np.array([float(t)]), self.horizon)[0][0]
        return m0(np.asarray(x, dtype=float) - shift)
