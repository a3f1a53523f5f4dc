"""The fixed point on the price and mean-field paths (docs/model.md 2.5): safeguarded Anderson mixing.

The iterate is the price path ``P`` and, when some population herds, the mean-field path
``M`` (otherwise ``M`` does not feed back: each evaluation takes the previous one's
``M_new``).  A *path map* evaluates ``g`` on an iterate and returns an evaluation with
``P, M`` (the iterate), ``P_new, M_new`` (its image) and ``residual`` (the scalar that is
held against ``tol``); its :meth:`step` gives the (preconditioned) price residual
``D (P_new - P)``.  :func:`anderson_fixed_point` then repeats: record the iterate, propose
the type-II Anderson step (:class:`Anderson`), fall back to the damped step
(:func:`damped_step`) when the proposal is invalid (``P <= 0`` or non-finite) or when it
raises the residual (that evaluation counts and the history restarts).  The measurements
behind the defaults are in docs/lp_exit_fixed_point.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Anderson", "PathMap", "FixedPointOutcome", "anderson_fixed_point", "damped_step", "valid_path"]


class Anderson:
    """Type-II Anderson mixing (Walker & Ni 2011) of depth ``m`` with mixing ``theta``.

    With ``f_k = g(x_k) - x_k`` and the last ``m`` differences ``ΔX``, ``ΔF`` of
    accepted iterates and residuals, ``γ = argmin |f_k - ΔF γ|_2`` and
    ``x_{k+1} = x_k + θ f_k - (ΔX + θ ΔF) γ``; with no history this is the damped step.
    """

    def __init__(self, depth: int, theta: float):
        self.depth = depth
        self.theta = theta
        self.dX: list[np.ndarray] = []
        self.dF: list[np.ndarray] = []
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.dX.clear()
        self.dF.clear()

    def record(self, x: np.ndarray, f: np.ndarray) -> None:
        """Register the accepted iterate ``x`` with residual ``f``."""
        if self.last is not None:
            self.dX.append(x - self.last[0])
            self.dF.append(f - self.last[1])
            if len(self.dX) > self.depth:
                del self.dX[0], self.dF[0]
        self.last = (x, f)

    def propose(self, x: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, bool]:
        """Next iterate and whether it is an Anderson (not a plain damped) step."""
        damped = x + self.theta * f
        if not self.dX:
            return damped, False
        dF = np.column_stack(self.dF)
        dX = np.column_stack(self.dX)
        scale = np.linalg.norm(dF, axis=0)
        keep = scale > 0.0
        if not keep.any():
            return damped, False
        dF, dX, scale = dF[:, keep], dX[:, keep], scale[keep]
        gamma = np.linalg.lstsq(dF / scale, f, rcond=1e-10)[0] / scale
        return damped - (dX + self.theta * dF) @ gamma, True


class PathMap(Protocol):
    """What :func:`anderson_fixed_point` iterates (the LP solver's :class:`~mfg.lp_exit.solver.PathSweeps`)."""

    herding: bool

    def evaluate(self, P: np.ndarray, M: np.ndarray, keep_rows: bool):
        """``g`` on the path ``(P, M)``; ``keep_rows``: this evaluation is expected to be the last one."""

    def step(self, ev) -> np.ndarray:
        """The price residual ``D (P_new - P)`` of an evaluation (``D``: a preconditioner or the identity)."""


@dataclass(frozen=True)
class FixedPointOutcome:
    """The accepted evaluation, whether it met ``tol``, the evaluations of ``g`` and the rejected Anderson steps."""

    evaluation: object
    converged: bool
    evaluations: int
    rejections: int


def valid_path(P: np.ndarray, M: np.ndarray) -> bool:
    """A path the map can evaluate: ``P`` finite and positive, ``M`` finite."""
    return bool(np.all(np.isfinite(P)) and np.all(P > 0.0) and np.all(np.isfinite(M)))


def _pack(P, M, herding):
    return np.concatenate([P, M]) if herding else P.copy()


def _unpack(z, n_t, M_fallback, herding):
    return (z[:n_t], z[n_t:]) if herding else (z, M_fallback)


def damped_step(ev, f: np.ndarray, theta: float, herding: bool):
    """``x + θ f`` (``f`` the preconditioned residual); if that leaves ``P > 0``, the plain ``(1 - θ) x + θ g(x)``."""
    n_t = ev.P.size
    P_c, M_c = _unpack(_pack(ev.P, ev.M, herding) + theta * f, n_t, ev.M_new, herding)
    if valid_path(P_c, M_c):
        return P_c, M_c
    return ev.P + theta * (ev.P_new - ev.P), (ev.M + theta * (ev.M_new - ev.M) if herding else ev.M_new)


def _residual_vector(path_map: PathMap, ev) -> np.ndarray:
    fP = path_map.step(ev)
    return np.concatenate([fP, ev.M_new - ev.M]) if path_map.herding else fP


def anderson_fixed_point(path_map: PathMap, P0: np.ndarray, M0: np.ndarray, *, tol: float, max_iter: int,
                         depth: int, theta: float) -> FixedPointOutcome:
    """Iterate ``path_map`` from ``(P0, M0)`` until its residual is at most ``tol`` or ``max_iter`` evaluations.

    The evaluation expected to be the last one (``max_iter`` reached next, or the accepted
    residuals extrapolated geometrically reaching ``tol``) is asked to keep every row
    (``keep_rows``), so that a solver need not evaluate the accepted iterate again.
    """
    herding = path_map.herding
    n_t = P0.size
    acc = Anderson(depth, theta)
    rejections = 0
    ev = path_map.evaluate(P0, M0, max_iter == 1)
    n_eval = 1
    res = ev.residual
    accepted = [res]

    def last_one() -> bool:
        if n_eval + 1 >= max_iter:
            return True
        return len(accepted) >= 2 and accepted[-1] * accepted[-1] <= tol * accepted[-2]

    while not res <= tol and n_eval < max_iter:
        xk = _pack(ev.P, ev.M, herding)
        fk = _residual_vector(path_map, ev)
        acc.record(xk, fk)
        cand, is_aa = acc.propose(xk, fk)
        P_c, M_c = _unpack(cand, n_t, ev.M_new, herding)
        if not valid_path(P_c, M_c):
            if is_aa:
                rejections += 1
                acc.reset()
                is_aa = False
            P_c, M_c = damped_step(ev, fk, theta, herding)
        ev_c = path_map.evaluate(P_c, M_c, last_one())
        n_eval += 1
        if is_aa and ev_c.residual > res and n_eval < max_iter:
            # the Anderson step made things worse: take the damped step instead
            rejections += 1
            acc.reset()
            acc.last = (xk, fk)
            ev_c = path_map.evaluate(*damped_step(ev, fk, theta, herding), last_one())
            n_eval += 1
        ev, res = ev_c, ev_c.residual
        accepted.append(res)
    return FixedPointOutcome(evaluation=ev, converged=res <= tol, evaluations=n_eval, rejections=rejections)
