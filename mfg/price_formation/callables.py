"""Evaluation of user-supplied vectorised callables at the boundary of the package."""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["evaluate_callable"]


def evaluate_callable(name: str, f: Callable, points: np.ndarray, var: str) -> np.ndarray:
    """``f(points)`` as a float array of the shape of ``points``, checked finite.

    A scalar result is broadcast.  Errors name the callable (``name``) and the first
    offending point, so that bad input fails here rather than as a NaN deep inside a
    solver.
    """
    try:
        out = f(points)
    except Exception as exc:  # user code: say which callable failed
        raise ValueError(f"{name}({var}) failed on an array of {points.size} points: {exc!r}") from exc
    out = np.asarray(out, dtype=float)
    if out.ndim == 0:
        out = np.full(points.shape, float(out))
    if out.shape != points.shape:
        raise ValueError(f"{name} must be vectorised: returned shape {out.shape} for input of shape {points.shape}")
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} is not finite at {var}={points[i]:.6g} (value {out[i]})")
    return out
