"""Statistics of the convergence study (experiments/convergence.py): RMSE and bias with seeded
percentile bootstrap intervals, log-log slopes, the floor fit ``error^2 = b^2 + C^2/N`` and the
power fit of signed values ``y = a N^s`` (docs/convergence.md, "Statistics")."""

from __future__ import annotations

import numpy as np

__all__ = ["percentile_interval", "bootstrap_rmse_bias", "bootstrap_mean", "fit_slope", "fit_power", "fit_floor",
           "resample"]


def percentile_interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds of bootstrap ``samples`` at confidence ``level``."""
    a = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(samples, [a, 100 - a], axis=axis)
    return lo, hi


def resample(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, R)`` bootstrap resamples of ``values`` (replications drawn with replacement)."""
    r = values.size
    return values[rng.integers(0, r, size=(n_boot, r))]


def bootstrap_rmse_bias(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed=0) -> dict[str, float]:
    """RMSE ``sqrt(mean(v^2))`` and bias ``mean(v)`` of per-replication values with
    seeded percentile bootstrap intervals (replications resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boot = resample(v, n_boot, rng)
    rmse_b = np.sqrt(np.mean(boot**2, axis=1))
    bias_b = np.mean(boot, axis=1)
    rlo, rhi = percentile_interval(rmse_b, level)
    blo, bhi = percentile_interval(bias_b, level)
    return {"rmse": float(np.sqrt(np.mean(v**2))), "rmse_lo": float(rlo), "rmse_hi": float(rhi),
            "bias": float(np.mean(v)), "bias_lo": float(blo), "bias_hi": float(bhi)}


def fit_slope(n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares slope of ``log y`` on ``log n``.

    ``y`` may be ``(k,)`` or ``(B, k)`` (one fit per row, e.g. bootstrap draws); ``weights``
    ``(k,)`` are inverse variances of ``log y`` (default equal).  Returns the slope(s).
    """
    x = np.log(np.asarray(n, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    xm = np.sum(w * x)
    dx = x - xm
    sxx = np.sum(w * dx * dx)
    ym = np.sum(w * ly, axis=-1, keepdims=True)
    return np.sum(w * dx * (ly - ym), axis=-1) / sxx


def fit_power(n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
              exponents: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit the signed values ``y(N) = a N^s`` by weighted least squares; returns ``(a, s)``.

    Used for the bias, whose sign is kept and whose noise is weighted by ``weights``
    (inverse variances), so sizes where the bias is not resolved count for little and
    no size is selected by its value.  ``s`` is searched on the grid ``exponents``
    (default ``-2..0`` in steps of 0.005; for each ``s`` the best ``a`` is explicit).
    ``y`` may be ``(k,)`` or ``(B, k)``.
    """
    x = np.asarray(n, dtype=float)
    yy = np.atleast_2d(np.asarray(y, dtype=float))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    s_grid = np.linspace(-2.0, 0.0, 401) if exponents is None else np.asarray(exponents, dtype=float)
    basis = x[None, :] ** s_grid[:, None]  # (S, k)
    num = (yy * w) @ basis.T  # (B, S)
    den = (w * basis * basis).sum(axis=1)  # (S,)
    a = num / den
    loss = (w * yy * yy).sum(axis=1)[:, None] - a * num  # sum w (y - a x^s)^2 at the best a
    j = np.argmin(loss, axis=1)
    a_best = a[np.arange(yy.shape[0]), j]
    s_best = s_grid[j]
    if np.ndim(y) == 1:
        return a_best[0], s_best[0]
    return a_best, s_best


def fit_floor(n: np.ndarray, mse: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``mse(N) = b^2 + C^2 / N`` by weighted least squares with ``b^2, C^2 >= 0``.

    ``mse`` ``(k,)`` or ``(B, k)``; ``weights`` ``(k,)`` inverse variances of ``mse``.  Returns
    ``(b, C)`` (arrays of the leading shape).  The constrained minimum of a 2-parameter
    convex quadratic: the unconstrained one if both are >= 0, else the better of the two
    one-parameter fits on the faces.
    """
    inv = 1.0 / np.asarray(n, dtype=float)
    y = np.atleast_2d(np.asarray(mse, dtype=float))
    w = np.ones_like(inv) if weights is None else np.asarray(weights, dtype=float)
    s1, sx, sxx = w.sum(), (w * inv).sum(), (w * inv * inv).sum()
    sy = (w * y).sum(axis=1)
    sxy = (w * inv * y).sum(axis=1)
    det = s1 * sxx - sx * sx
    b2 = (sxx * sy - sx * sxy) / det
    c2 = (s1 * sxy - sx * sy) / det
    # faces: b2 = 0 (C^2 alone) and C2 = 0 (b^2 alone)
    c2_only = np.maximum(sxy / sxx, 0.0)
    b2_only = np.maximum(sy / s1, 0.0)

    def loss(b2_, c2_):
        r = y - b2_[:, None] - c2_[:, None] * inv[None, :]
        return (w * r * r).sum(axis=1)

    inside = (b2 >= 0) & (c2 >= 0)
    zero = np.zeros_like(b2)
    l1 = loss(zero, c2_only)
    l2 = loss(b2_only, zero)
    b2 = np.where(inside, b2, np.where(l1 <= l2, 0.0, b2_only))
    c2 = np.where(inside, c2, np.where(l1 <= l2, c2_only, 0.0))
    b, c = np.sqrt(b2), np.sqrt(c2)
    if np.ndim(mse) == 1:
        return b[0], c[0]
    return b, c


def bootstrap_mean(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                   rng: np.random.Generator | None = None) -> tuple[float, float, float, np.ndarray]:
    """Mean of ``values`` with its seeded percentile bootstrap interval; returns ``(mean, lo, hi, draws)``
    (``draws``: the ``n_boot`` resampled means, for refitting rates on every draw)."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0) if rng is None else rng
    draws = np.mean(resample(v, n_boot, rng), axis=1)
    lo, hi = percentile_interval(draws, level)
    return float(np.mean(v)), float(lo), float(hi), draws
