"""Semi-closed form of the single-LP, infinite-horizon exit problem (docs/model.md 2.9).

Constant exit value ``G``, hard stopping, no herding or price feedback
(``lam = alpha = 0``), ``rho = r - g > 0``.  Above the exit threshold ``ell_star``
the value solves

    ½ σ² V'' + κ (L̄ - L) V' - ρ V + y - c(L) = 0,   c(L) = η (ℓ - L)^+,

with value matching ``V(ell_star) = G`` and smooth fit ``V'(ell_star) = 0``; below
it ``V = G``.  The homogeneous solutions are the OU fundamental solutions (Leung &
Li 2015), up to the constant ``Γ(ν)``,

    F(L)   = e^{z²/4} D_{-ν}(-z)   (increasing),   G_h(L) = e^{z²/4} D_{-ν}(z)  (decreasing),
    ν = ρ/κ,  z = sqrt(2κ/σ²) (L - L̄),

(``scipy.special.pbdv``).  A particular solution is affine on each piece of ``c``:
``y/ρ`` on ``L >= ℓ`` and ``a + b L`` on ``L < ℓ`` with ``b = η/(κ+ρ)``,
``a = (y - η ℓ + κ L̄ b)/ρ``.  Boundedness as ``L → ∞`` rules ``F`` out above ``ℓ``:

    V = y/ρ + A G_h(L)                  on [ℓ, ∞),
    V = a + b L + B F(L) + C G_h(L)     on [ell_star, ℓ].

C¹ matching at ``ℓ`` and value matching at ``ell_star`` are linear in ``(A, B, C)``;
the smooth-fit residual is then a scalar function of ``ell_star`` whose root is found
by ``scipy.optimize.brentq``.  :func:`solve_bvp_check` solves the same free-boundary
problem independently with ``scipy.integrate.solve_bvp`` (``ell_star`` as an unknown
parameter, no special functions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_bvp
from scipy.optimize import brentq
from scipy.special import pbdv

__all__ = ["StoppingSolution", "fundamental_solutions", "solve_stopping", "solve_bvp_check"]


def fundamental_solutions(L, kappa: float, sigma: float, lbar: float, nu: float):
    """``(F, F', G_h, G_h')`` at ``L`` (the constant ``Γ(ν)`` dropped)."""
    s = math.sqrt(2.0 * kappa) / sigma
    z = s * (np.asarray(L, dtype=float) - lbar)
    d_m, dd_m = pbdv(-nu, -z)  # D_{-ν}(-z) and D'_{-ν}(-z)
    d_p, dd_p = pbdv(-nu, z)
    e = np.exp(0.25 * z * z)
    F = e * d_m
    Gh = e * d_p
    dF = s * (0.5 * z * F - e * dd_m)
    dGh = s * (0.5 * z * Gh + e * dd_p)
    return F, dF, Gh, dGh


@dataclass(frozen=True)
class StoppingSolution:
    """Value and threshold of the infinite-horizon exit problem (docs/model.md 2.9)."""

    threshold: float  # ell_star
    A: float
    B: float
    C: float
    kappa: float
    lbar: float
    sigma: float
    eta: float
    ell: float
    y: float
    rho: float
    exit_value: float

    @property
    def _ab(self):
        b = self.eta / (self.kappa + self.rho)
        a = (self.y - self.eta * self.ell + self.kappa * self.lbar * b) / self.rho
        return a, b

    def _pieces(self, L):
        """``(V, V')`` on the continuation region, each piece evaluated only where it applies.

        ``F`` overflows far above ``ell``, where its coefficient is zero anyway.
        """
        L = np.asarray(L, dtype=float)
        nu = self.rho / self.kappa
        a, b = self._ab
        V = np.empty(L.shape)
        dV = np.empty(L.shape)
        up = L >= self.ell
        _, _, Gh, dGh = fundamental_solutions(L[up], self.kappa, self.sigma, self.lbar, nu)
        V[up] = self.y / self.rho + self.A * Gh
        dV[up] = self.A * dGh
        lo = ~up
        F, dF, Gh, dGh = fundamental_solutions(L[lo], self.kappa, self.sigma, self.lbar, nu)
        V[lo] = a + b * L[lo] + self.B * F + self.C * Gh
        dV[lo] = b + self.B * dF + self.C * dGh
        return L, V, dV

    def value(self, L) -> np.ndarray:
        """``V(L)``: ``G`` below the threshold, the ODE solution above it."""
        L, V, _ = self._pieces(L)
        return np.where(L < self.threshold, self.exit_value, V)

    def derivative(self, L) -> np.ndarray:
        """``V'(L)`` (0 below the threshold)."""
        L, _, dV = self._pieces(L)
        return np.where(L < self.threshold, 0.0, dV)


def _check(kappa, sigma, eta, rho):
    if not (kappa > 0 and sigma > 0 and eta >= 0 and rho > 0):
        raise ValueError(f"need kappa > 0, sigma > 0, eta >= 0 and rho = r - g > 0 "
                         f"(got kappa={kappa}, sigma={sigma}, eta={eta}, rho={rho})")


def solve_stopping(*, kappa: float, lbar: float, sigma: float, eta: float, ell: float, y: float, r: float, g: float,
                   exit_value: float, search_sds: float = 12.0, n_scan: int = 400) -> StoppingSolution:
    """Threshold ``ell_star`` and value of the infinite-horizon exit problem.

    ``(B, D = C - A)`` follow from C¹ matching at ``ℓ`` alone, ``C`` from value
    matching at the candidate threshold, and the smooth-fit residual
    ``V'(ell_star)`` is bracketed by a scan of ``[ℓ - search_sds * sd, ℓ)`` (``sd``:
    the stationary standard deviation ``σ/sqrt(2κ)``) and refined by ``brentq``.  The
    highest root whose value stays ``>= G`` is returned.  Raises ``ValueError`` if no
    exit threshold exists (e.g. ``G >= y/ρ`` makes exit immediate, or ``G`` so low
    that nobody exits in the scanned range).
    """
    rho = r - g
    _check(kappa, sigma, eta, rho)
    nu = rho / kappa
    G = float(exit_value)
    if G >= y / rho:
        raise ValueError(f"exit_value={G} >= y/rho={y / rho}: exiting immediately is optimal everywhere")
    b = eta / (kappa + rho)
    a = (y - eta * ell + kappa * lbar * b) / rho
    F_l, dF_l, Gh_l, dGh_l = fundamental_solutions(ell, kappa, sigma, lbar, nu)
    # C¹ matching at ell: B F + D G_h = y/rho - a - b ell ;  B F' + D G_h' = -b
    B, D = np.linalg.solve(np.array([[F_l, Gh_l], [dF_l, dGh_l]]), np.array([y / rho - a - b * ell, -b]))

    def coeffs(x):
        F, dF, Gh, dGh = fundamental_solutions(x, kappa, sigma, lbar, nu)
        C = (G - a - b * x - B * F) / Gh
        return C, b + B * dF + C * dGh

    def smooth_fit(x):
        return float(coeffs(x)[1])

    sd = sigma / math.sqrt(2.0 * kappa)
    xs = np.linspace(ell - search_sds * sd, ell, n_scan + 1)[:-1]
    fs = np.array([smooth_fit(x) for x in xs])
    for j in range(n_scan - 2, -1, -1):  # highest sign change first
        if np.isfinite(fs[j]) and np.isfinite(fs[j + 1]) and fs[j] * fs[j + 1] <= 0.0:
            x_star = brentq(smooth_fit, xs[j], xs[j + 1], xtol=1e-14, rtol=1e-14, maxiter=200)
            C, _ = coeffs(x_star)
            sol = StoppingSolution(float(x_star), float(C - D), float(B), float(C), kappa, lbar, sigma, eta, ell, y,
                                   rho, G)
            probe = np.linspace(x_star, ell + search_sds * sd, 400)
            if np.all(sol.value(probe) >= G - 1e-10):
                return sol
    raise ValueError("no exit threshold found: the smooth-fit condition has no admissible root "
                     f"in [{xs[0]:.4g}, {ell:.4g})")


def solve_bvp_check(*, kappa: float, lbar: float, sigma: float, eta: float, ell: float, y: float, r: float, g: float,
                    exit_value: float, guess: float, far_sds: float = 8.0, tol: float = 1e-7):
    """Independent solution of the free-boundary problem with ``solve_bvp``.

    Unknowns: ``V`` on ``[ell_star, L_hi]`` (``L_hi = L̄ + far_sds * sd``) and the
    parameter ``ell_star``, on the fixed interval ``s ∈ [0, 1]``,
    ``L = ell_star + s (L_hi - ell_star)``.  Conditions: ``V(ell_star) = G``,
    ``V'(ell_star) = 0`` and ``V'(L_hi) = 0``.  The far condition is only
    asymptotically right, but its error excites the increasing solution ``F`` alone,
    which is smaller at ``ell_star`` by ``F(ell_star)/F(L_hi)`` (about
    ``exp(-far_sds²)`` in the worst case), i.e. negligible.
    Returns ``(ell_star, V)`` with ``V`` a callable on ``[ell_star, L_hi]``.
    """
    rho = r - g
    _check(kappa, sigma, eta, rho)
    sd = sigma / math.sqrt(2.0 * kappa)
    L_hi = lbar + far_sds * sd
    G = float(exit_value)

    def fun(s, Y, p):
        x = p[0]
        h = L_hi - x
        L = x + s * h
        V, dV = Y
        c = eta * np.maximum(ell - L, 0.0)
        d2V = (2.0 / sigma**2) * (rho * V - y + c - kappa * (lbar - L) * dV)
        return np.vstack([h * dV, h * d2V])

    def bc(Ya, Yb, p):
        return np.array([Ya[0] - G, Ya[1], Yb[1]])

    # initial guess: rises from G at the threshold to the no-cost value y/rho
    s = np.linspace(0.0, 1.0, 801)
    Y0 = np.vstack([np.full_like(s, y / rho), np.zeros_like(s)])
    Y0[0] = G + (y / rho - G) * (1.0 - np.exp(-8.0 * s))
    sol = solve_bvp(fun, bc, s, Y0, p=[guess], tol=tol, max_nodes=200000)
    if not sol.success:
        raise RuntimeError(f"solve_bvp failed: {sol.message}")
    x_star = float(sol.p[0])

    def V(L):
        L = np.asarray(L, dtype=float)
        return sol.sol((L - x_star) / (L_hi - x_star))[0]

    return x_star, V
