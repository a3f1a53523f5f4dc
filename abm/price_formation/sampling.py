"""Seeded exact sampling from an initial density m_0 (docs/model.md 1.5).

The finite-N markets draw their traders' initial states from the same ``m_0`` the
mean-field solvers start from.  ``m_0`` is a user callable, possibly unnormalised
and known only pointwise, so "drawing from m_0" needs a definite, testable meaning.
Here it is: **exact** sampling of the P1 (piecewise-linear) interpolant of the
density on a fine uniform grid over the domain (``2**14`` cells by default).

* The interpolant's mass in cell ``j`` is the trapezoid ``(f_j + f_{j+1}) dx / 2``;
  a cell is chosen with probability proportional to it (inverse CDF of the cumulative
  cell masses, one uniform).
* Inside the chosen cell the density is linear, ``f(s) = a + (b - a) s`` in the
  local coordinate ``s in [0, 1]`` with ``a = f_j``, ``b = f_{j+1}``, so its CDF is
  the quadratic ``(a s + (b - a) s^2 / 2) / ((a + b) / 2)``.  Setting it to a second
  uniform ``w`` and solving in the cancellation-free form

      s = w (a + b) / (a + sqrt(a^2 + w (b^2 - a^2)))

  inverts it exactly (both terms of the denominator are non-negative, so nothing
  cancels; the formula also covers ``a = b`` and ``a = 0``).

The only approximation is interpolating ``m_0`` on the fine grid, whose error is
``O(dx^2)`` in every moment (``dx = (b - a) / 2**14``), far below the ``1/sqrt(N)``
sampling noise for any ``N`` this toolkit simulates.  The interpolant is also what
the SL solvers see on their (coarser) grids, so both sides sample the same object.

:meth:`P1Density.quantile` is the exact inverse CDF of the same interpolant; at the
probabilities ``(j + 1/2)/n`` it gives a deterministic population whose empirical
measure is ``O(1/n)`` from ``m_0`` (the mean-field reference of
:mod:`experiments.finite_n_price`).

Randomness comes from a :class:`numpy.random.Generator` built from a seed or a
:class:`numpy.random.SeedSequence`, so a run is reproducible bit for bit and
independent streams come from ``SeedSequence.spawn`` or ``spawn_key``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mfg.price_formation.callables import evaluate_callable

__all__ = ["P1Density", "as_generator", "p1_density", "sample_density"]

#: Default number of fine-grid cells used to represent the density.
DEFAULT_CELLS = 2**14


def as_generator(seed) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from an int, a SeedSequence or a Generator.

    ``None`` is refused: a simulation whose draws cannot be replayed is a bug here.
    A Generator is used as given (its state advances).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (bool, np.bool_)) or seed is None:
        raise TypeError(
            f"seed must be a non-negative int, a numpy SeedSequence or a Generator, got {seed!r} "
            "(runs must be reproducible, so there is no unseeded default)"
        )
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        return np.random.default_rng(np.random.SeedSequence(int(seed)))
    raise TypeError(f"seed must be a non-negative int, a numpy SeedSequence or a Generator, got {type(seed).__name__}")


@dataclass(frozen=True)
class P1Density:
    """The P1 interpolant of a density on a uniform grid, ready to be sampled.

    ``nodes`` and ``values`` (unnormalised, >= 0) define it; ``cdf_cells`` holds the
    cumulative trapezoid masses normalised to end at 1.
    """

    nodes: np.ndarray
    values: np.ndarray
    cdf_cells: np.ndarray  # (n_cells,) cumulative normalised cell masses, last == 1
    mass: float  # integral of the unnormalised interpolant

    @property
    def spacing(self) -> float:
        return float(self.nodes[1] - self.nodes[0])

    @property
    def mean(self) -> float:
        """Exact mean of the normalised interpolant (cellwise closed form)."""
        a, b = self.values[:-1], self.values[1:]
        x0, dx = self.nodes[:-1], self.spacing
        # int over a cell of x f(x) dx for linear f: dx * (x0 (a+b)/2 + dx (a + 2b)/6)
        first = dx * (x0 * (a + b) / 2 + dx * (a + 2 * b) / 6)
        return float(first.sum() / self.mass)

    @property
    def variance(self) -> float:
        """Exact variance of the normalised interpolant (cellwise closed form)."""
        a, b = self.values[:-1], self.values[1:]
        x0, dx = self.nodes[:-1], self.spacing
        m = self.mean
        c0 = x0 - m  # moments about the mean, cell-local coordinate x = x0 + dx s
        # int_0^1 (c0 + dx s)^2 (a + (b - a) s) ds
        second = dx * (
            c0**2 * (a + b) / 2 + 2 * c0 * dx * (a + 2 * b) / 6 + dx**2 * (a + 3 * b) / 12
        )
        return float(second.sum() / self.mass)

    def cdf(self, x) -> np.ndarray:
        """Exact CDF of the normalised interpolant at ``x`` (for tests, e.g. KS)."""
        x = np.asarray(x, dtype=float)
        lo, dx, n_cells = self.nodes[0], self.spacing, self.values.size - 1
        s = np.clip((x - lo) / dx, 0.0, n_cells)
        j = np.minimum(np.floor(s).astype(np.int64), n_cells - 1)
        r = s - j
        a, b = self.values[j], self.values[j + 1]
        before = np.where(j > 0, self.cdf_cells[np.maximum(j - 1, 0)], 0.0)
        inside = dx * (a * r + (b - a) * r * r / 2) / self.mass
        return np.clip(before + inside, 0.0, 1.0)

    def _invert_in_cell(self, j: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The point of cell ``j`` below which a fraction ``w`` of the cell's mass lies."""
        a, b = self.values[j], self.values[j + 1]
        num = w * (a + b)
        den = a + np.sqrt(a * a + w * (b * b - a * a))
        # den = 0 only when a = 0 and w = 0: the point is the cell's left end.
        s = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        np.clip(s, 0.0, 1.0, out=s)  # round-off only
        return self.nodes[j] + self.spacing * s

    def _cell_of(self, q: np.ndarray) -> np.ndarray:
        # smallest j with cdf_cells[j] > q (q in [0, 1)); cells of zero mass have
        # cdf_cells[j] == cdf_cells[j-1] and are never chosen.
        return np.minimum(np.searchsorted(self.cdf_cells, q, side="right"), self.values.size - 2)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact draws from the normalised interpolant, using ``rng``.

        Two independent uniforms per draw: one picks the cell by its mass, the other
        inverts the linear density inside it (module docstring).
        """
        j = self._cell_of(rng.random(n))
        return self._invert_in_cell(j, rng.random(n))

    def quantile(self, q) -> np.ndarray:
        """Exact inverse CDF of the normalised interpolant at probabilities ``q`` in [0, 1].

        ``quantile((np.arange(n) + 0.5) / n)`` is a deterministic "stratified" set of n
        holdings whose empirical measure is within ``O(1/n)`` of ``m_0``: the reference
        population used for the mean-field limit of the particle market.
        """
        q = np.asarray(q, dtype=float)
        if not (np.isfinite(q).all() and (q >= 0).all() and (q <= 1).all()):
            raise ValueError("quantile probabilities must lie in [0, 1]")
        flat = np.minimum(q.ravel(), np.nextafter(1.0, 0.0))
        j = self._cell_of(flat)
        lo = np.where(j > 0, self.cdf_cells[np.maximum(j - 1, 0)], 0.0)
        width = self.cdf_cells[j] - lo
        w = np.clip(np.divide(flat - lo, width, out=np.zeros_like(flat), where=width > 0), 0.0, 1.0)
        return self._invert_in_cell(j, w).reshape(q.shape)


def p1_density(density: Callable, domain: tuple[float, float], *, n_cells: int = DEFAULT_CELLS,
               name: str = "initial_density") -> P1Density:
    """Evaluate ``density`` on ``n_cells`` uniform cells over ``domain`` and check it.

    Raises ``ValueError`` (naming ``name`` and the offending point) if the callable
    fails, is not vectorised, is non-finite or negative anywhere on the grid, or has
    no mass on the domain.
    """
    try:
        lo, hi = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain must be a pair (a, b), got {domain!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"domain must be a finite interval (a, b) with a < b, got ({lo}, {hi})")
    if isinstance(n_cells, bool) or int(n_cells) != n_cells or n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    if not callable(density):
        raise TypeError(f"{name} must be a vectorised callable, got {type(density).__name__}")
    nodes = np.linspace(lo, hi, int(n_cells) + 1)
    values = evaluate_callable(name, density, nodes, "x")
    if (values < 0).any():
        i = int(np.argmax(values < 0))
        raise ValueError(f"{name} is negative at x={nodes[i]:.6g} (value {values[i]:.3g}): not a density")
    dx = (hi - lo) / n_cells
    cell_mass = 0.5 * dx * (values[:-1] + values[1:])
    cum = np.cumsum(cell_mass)
    mass = float(cum[-1])
    if not (mass > 0 and math.isfinite(mass)):
        raise ValueError(f"{name} has no mass on the domain ({lo}, {hi}) (sampled on {n_cells} cells)")
    cdf_cells = cum / mass
    cdf_cells[-1] = 1.0
    return P1Density(nodes=nodes, values=values, cdf_cells=cdf_cells, mass=mass)


def sample_density(density: Callable, domain: tuple[float, float], n: int, *, seed,
                   n_cells: int = DEFAULT_CELLS) -> np.ndarray:
    """``n`` exact draws from the P1 interpolant of ``density`` on ``n_cells`` cells over ``domain``.

    ``density`` is a vectorised callable, possibly unnormalised; ``seed`` is an int, a
    :class:`numpy.random.SeedSequence` or a :class:`numpy.random.Generator`.  The
    draws lie in ``domain`` and are reproducible from ``seed``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = as_generator(seed)
    return p1_density(density, domain, n_cells=n_cells).sample(int(n), rng)
