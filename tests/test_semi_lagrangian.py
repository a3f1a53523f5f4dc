"""Tests of the semi-Lagrangian building blocks (mfg/semi_lagrangian.py, docs/model.md 1.2).

The minimiser is checked against an independent brute-force minimiser written here
from the definition of the SL objective (``numpy.interp`` for the P1 interpolant, a
dense scan of ``v`` and ``scipy.optimize.minimize_scalar`` on every piece between the
kinks of ``I[u](x + h v)``).  Property-based checks use hypothesis with a fixed seed
(``derandomize=True``) and bounded example counts so the file stays fast and
deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from mfg.price_formation.impact import PowerImpact, QuadraticImpact
from mfg.semi_lagrangian import (
    UniformGrid,
    deposit_p1,
    interp_p1,
    minimise_p1,
    power_cost,
    power_marginal,
    power_marginal_inverse,
    power_marginal_inverse_derivative,
    slope_range,
)

pytestmark = pytest.mark.kernels  # run again with numba's bounds checking in CI (.ci/run)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

finite = dict(allow_nan=False, allow_infinity=False)


# ----------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------


@st.composite
def grids(draw, max_n: int = 12) -> UniformGrid:
    n = draw(st.integers(2, max_n))
    lower = draw(st.floats(-2.0, 1.0, **finite))
    width = draw(st.floats(0.1, 3.0, **finite))
    return UniformGrid(lower, lower + width, n)


@st.composite
def grid_and_values(draw, max_n: int = 12, convex: bool | None = None):
    """A grid and P1 nodal values: arbitrary (non-convex) or convex (increasing slopes)."""
    g = draw(grids(max_n))
    if convex is None:
        convex = draw(st.booleans())
    if convex:
        slopes = sorted(draw(st.lists(st.floats(-4.0, 4.0, **finite), min_size=g.n - 1, max_size=g.n - 1)))
        start = draw(st.floats(-2.0, 2.0, **finite))
        values = np.concatenate([[start], start + np.cumsum(np.array(slopes) * g.spacing)])
    else:
        values = np.array(draw(st.lists(st.floats(-3.0, 3.0, **finite), min_size=g.n, max_size=g.n)))
    return g, values


#: (p, scale) pairs: quadratic impacts c v^2/2 and power laws on both sides of p = 2.
impacts = st.one_of(
    st.floats(0.3, 3.0, **finite).map(lambda c: QuadraticImpact(c).kernel_params),
    st.tuples(st.sampled_from([4 / 3, 1.5, 1.7, 2.5, 3.0]), st.floats(0.3, 2.0, **finite)),
)


# ----------------------------------------------------------------------------------
# independent reference minimiser
# ----------------------------------------------------------------------------------


def _objective(g: UniformGrid, values, x, h, price, p, scale, v):
    """``I[u](x + h v) + h (scale |v|^p + price v)``; numpy.interp extends by constants."""
    v = np.asarray(v, dtype=float)
    return np.interp(x + h * v, g.nodes, values) + h * (scale * np.abs(v) ** p + price * v)


def _brute_minimum(g: UniformGrid, values, x, h, price, p, scale, constrain):
    """Minimum over ``v`` by scanning every piece between kinks (bounded Brent on each)."""
    if constrain:
        lo, hi = (g.lower - x) / h, (g.upper - x) / h
    else:
        # any minimiser has |l'(v)| <= |price| + max|slope| (the constant extension has slope 0)
        w = abs(price) + np.max(np.abs(np.diff(values))) / g.spacing
        r = (w / (scale * p)) ** (1.0 / (p - 1.0)) + 1.0
        lo, hi = -r, r
    kinks = (g.nodes - x) / h
    cuts = np.unique(np.concatenate([[lo, hi], kinks[(kinks > lo) & (kinks < hi)]]))
    f = lambda v: float(_objective(g, values, x, h, price, p, scale, v))  # noqa: E731
    best = min(f(c) for c in cuts)
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b - a > 0:
            res = minimize_scalar(f, bounds=(a, b), method="bounded", options={"xatol": 1e-13 * max(1.0, abs(b - a))})
            best = min(best, float(res.fun))
    dense = np.linspace(lo, hi, 4001)
    return best, float(np.min(_objective(g, values, x, h, price, p, scale, dense))), (lo, hi)


# ----------------------------------------------------------------------------------
# UniformGrid
# ----------------------------------------------------------------------------------


def test_grid_nodes_and_spacing():
    g = UniformGrid(-1.0, 1.0, 5)
    np.testing.assert_allclose(g.nodes, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert g.spacing == pytest.approx(0.5)


def test_grid_from_spacing():
    g = UniformGrid.from_spacing(-1.0, 1.0, 0.01)
    assert g.n == 201
    assert g.spacing == pytest.approx(0.01)
    assert g.nodes[-1] == 1.0


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.0, math.inf, 3), "finite"),
        ((math.nan, 1.0, 3), "finite"),
        ((1.0, 1.0, 3), "empty"),
        ((1.0, 0.0, 3), "empty"),
        ((0.0, 1.0, 1), "at least 2 nodes"),
        ((0.0, 1.0, 2.5), "must be an integer"),
    ],
)
def test_grid_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        UniformGrid(*args)


@pytest.mark.parametrize(
    "spacing, match",
    [(0.0, "positive"), (-0.1, "positive"), (math.nan, "positive"), (math.inf, "positive"), (0.3, "does not divide")],
)
def test_grid_from_spacing_rejects(spacing, match):
    with pytest.raises(ValueError, match=match):
        UniformGrid.from_spacing(-1.0, 1.0, spacing, name="rho")


def test_grid_from_spacing_names_the_parameter():
    with pytest.raises(ValueError, match="rho=0.3"):
        UniformGrid.from_spacing(-1.0, 1.0, 0.3, name="rho")


# ----------------------------------------------------------------------------------
# interpolation and its adjoint
# ----------------------------------------------------------------------------------


@PROPERTY
@given(g=grids(), a=st.floats(-5, 5, **finite), b=st.floats(-5, 5, **finite),
       s=st.lists(st.floats(0.0, 1.0, **finite), min_size=1, max_size=20))
def test_interp_exact_on_linear_data(g, a, b, s):
    pts = g.lower + np.array(s) * (g.upper - g.lower)
    got = interp_p1(g, a + b * g.nodes, pts)
    np.testing.assert_allclose(got, a + b * pts, rtol=0, atol=1e-12 * (1 + abs(a) + abs(b) * 5))


def test_interp_reproduces_nodal_values_and_clamps():
    g = UniformGrid(-1.0, 2.0, 7)
    rng = np.random.default_rng(0)
    values = rng.normal(size=g.n)
    np.testing.assert_allclose(interp_p1(g, values, g.nodes), values, atol=1e-14)
    outside = np.array([-50.0, -1.0 - 1e-9, 2.0 + 1e-9, 1e6])
    np.testing.assert_array_equal(interp_p1(g, values, outside), [values[0], values[0], values[-1], values[-1]])
    # midpoints: the average of the two nodes
    mid = 0.5 * (g.nodes[1:] + g.nodes[:-1])
    np.testing.assert_allclose(interp_p1(g, values, mid), 0.5 * (values[1:] + values[:-1]), atol=1e-14)


def test_interp_keeps_the_shape_of_points():
    g = UniformGrid(0.0, 1.0, 4)
    pts = np.linspace(0, 1, 6).reshape(2, 3)
    out = interp_p1(g, 3 * g.nodes, pts)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, 3 * pts, atol=1e-14)


def test_interp_and_deposit_validate_shapes():
    g = UniformGrid(0.0, 1.0, 4)
    with pytest.raises(ValueError, match="3 entries, the grid has 4"):
        interp_p1(g, np.zeros(3), [0.5])
    with pytest.raises(ValueError, match="one-dimensional"):
        interp_p1(g, np.zeros((2, 2)), [0.5])
    with pytest.raises(ValueError, match="one-dimensional"):
        deposit_p1(g, np.zeros((2, 2)), 1.0)


points_and_masses = st.integers(1, 25).flatmap(
    lambda k: st.tuples(
        st.lists(st.floats(-4.0, 4.0, **finite), min_size=k, max_size=k),
        st.lists(st.floats(0.0, 10.0, **finite), min_size=k, max_size=k),
    )
)


@PROPERTY
@given(gv=grid_and_values(convex=False), pm=points_and_masses)
def test_deposit_is_the_adjoint_of_interp(gv, pm):
    """<deposit(points, masses), u> == sum masses * I[u](points), points inside and outside."""
    g, u = gv
    pts, ms = np.array(pm[0]), np.array(pm[1])
    lhs = float(deposit_p1(g, pts, ms) @ u)
    rhs = float(ms @ interp_p1(g, u, pts))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12 * (1 + np.sum(ms) * np.max(np.abs(u))))


@PROPERTY
@given(g=grids(), pm=points_and_masses)
def test_deposit_conserves_mass_first_moment_and_sign(g, pm):
    pts, ms = np.array(pm[0]), np.array(pm[1])
    out = deposit_p1(g, pts, ms)
    assert out.shape == (g.n,)
    assert np.all(out >= 0)
    assert out.sum() == pytest.approx(ms.sum(), rel=1e-13, abs=1e-13)
    # P1 weights reproduce linear functions, so the first moment of the (clamped) points is kept
    clamped = np.clip(pts, g.lower, g.upper)
    assert out @ g.nodes == pytest.approx(ms @ clamped, rel=1e-11, abs=1e-11 * (1 + ms.sum()))


def test_deposit_splits_with_p1_weights():
    g = UniformGrid(0.0, 1.0, 3)  # nodes 0, 0.5, 1
    np.testing.assert_allclose(deposit_p1(g, [0.125], [2.0]), [1.5, 0.5, 0.0])
    np.testing.assert_allclose(deposit_p1(g, [-3.0, 7.0], [1.0, 4.0]), [1.0, 0.0, 4.0])
    np.testing.assert_allclose(deposit_p1(g, [0.5, 0.5], 1.0), [0.0, 2.0, 0.0])  # scalar mass broadcast


# ----------------------------------------------------------------------------------
# the exact SL minimisation
# ----------------------------------------------------------------------------------


@st.composite
def minimisation_cases(draw, convex: bool | None = None):
    g, values = draw(grid_and_values(convex=convex))
    constrain = draw(st.booleans())
    p, scale = draw(impacts)
    h = draw(st.floats(0.01, 1.0, **finite))
    price = draw(st.floats(-3.0, 3.0, **finite))
    if constrain:
        s = draw(st.lists(st.floats(0.0, 1.0, **finite), min_size=1, max_size=4))
        xs = g.lower + np.array(s) * (g.upper - g.lower)
        xs = np.concatenate([xs, g.nodes[[0, -1]]])  # the end nodes, where the constraint binds
    else:
        xs = np.array(draw(st.lists(st.floats(g.lower - 1.0, g.upper + 1.0, **finite), min_size=1, max_size=4)))
    return g, values, xs, h, price, p, scale, constrain


def _check_against_brute_force(case):
    g, values, xs, h, price, p, scale, constrain = case
    v, val = minimise_p1(g, values, xs, h, price, p, scale, constrain=constrain)
    for x, vi, vali in zip(xs, v, val):
        brute, dense, (lo, hi) = _brute_minimum(g, values, x, h, price, p, scale, constrain)
        tol = 1e-9 * (1.0 + abs(brute))
        # the reported minimum is attained at the reported minimiser ...
        assert float(_objective(g, values, x, h, price, p, scale, vi)) == pytest.approx(vali, rel=1e-11, abs=1e-11)
        # ... which is admissible ...
        if constrain:
            assert lo - 1e-12 <= vi <= hi + 1e-12
        # ... and no admissible v does better (dense scan and per-piece Brent)
        assert vali <= dense + 1e-12 * (1 + abs(dense))
        assert vali == pytest.approx(brute, rel=0, abs=tol), (x, vi, vali, brute)


@PROPERTY
@given(case=minimisation_cases(convex=False))
def test_minimise_matches_brute_force_nonconvex(case):
    _check_against_brute_force(case)


@PROPERTY
@given(case=minimisation_cases(convex=True))
def test_minimise_matches_brute_force_convex(case):
    _check_against_brute_force(case)


def test_minimise_quadratic_closed_form():
    """Linear data, quadratic cost, minimiser inside the domain: v* = -(slope + price)/c."""
    g = UniformGrid(-1.0, 1.0, 41)
    c, slope, price, h = 1.5, 0.4, -0.1, 0.1
    p, scale = QuadraticImpact(c).kernel_params
    xs = np.linspace(-0.5, 0.5, 11)
    v, val = minimise_p1(g, slope * g.nodes, xs, h, price, p, scale)
    v_star = -(slope + price) / c
    np.testing.assert_allclose(v, v_star, atol=1e-14)
    np.testing.assert_allclose(val, slope * xs + h * (c / 2 * v_star**2 + price * v_star + slope * v_star), atol=1e-14)


def test_minimise_state_constraint_binds_at_the_boundary():
    """A pull to the left (u increasing, positive price): constrained feet stop at the end,
    unconstrained ones leave the grid to the cost's own optimum ``v = -price/c``."""
    g = UniformGrid(0.0, 1.0, 11)
    values = 5.0 * g.nodes  # cheaper to the left
    p, scale = QuadraticImpact(1.0).kernel_params
    v_c, val_c = minimise_p1(g, values, [0.05], 0.5, 1.0, p, scale, constrain=True)
    v_u, val_u = minimise_p1(g, values, [0.05], 0.5, 1.0, p, scale, constrain=False)
    assert v_c[0] == pytest.approx(-0.1)  # foot exactly on the left end
    assert val_c[0] == pytest.approx(0.5 * (0.5 * 0.01 - 0.1))
    assert v_u[0] == pytest.approx(-1.0)  # the constant extension lets the foot leave
    assert val_u[0] == pytest.approx(0.5 * (0.5 - 1.0))


@PROPERTY
@given(case=minimisation_cases(), data=st.data())
def test_sl_operator_is_monotone(case, data):
    """u <= w pointwise  =>  min-value(u) <= min-value(w), at every point."""
    g, u, xs, h, price, p, scale, constrain = case
    bump = np.array(data.draw(st.lists(st.floats(0.0, 2.0, **finite), min_size=g.n, max_size=g.n)))
    w = u + bump
    _, val_u = minimise_p1(g, u, xs, h, price, p, scale, constrain=constrain)
    _, val_w = minimise_p1(g, w, xs, h, price, p, scale, constrain=constrain)
    assert np.all(val_u <= val_w + 1e-12 * (1 + np.abs(val_w)))
    # adding a constant shifts the value by exactly that constant
    _, val_shift = minimise_p1(g, u + 0.75, xs, h, price, p, scale, constrain=constrain)
    np.testing.assert_allclose(val_shift, val_u + 0.75, atol=1e-11)


@PROPERTY
@given(case=minimisation_cases())
def test_constraint_only_removes_candidates(case):
    """With feet kept inside, the minimum can only go up (same objective on fewer v)."""
    g, u, xs, h, price, p, scale, _ = case
    xs = np.clip(xs, g.lower, g.upper)
    _, val_c = minimise_p1(g, u, xs, h, price, p, scale, constrain=True)
    _, val_u = minimise_p1(g, u, xs, h, price, p, scale, constrain=False)
    assert np.all(val_u <= val_c + 1e-12 * (1 + np.abs(val_c)))


def test_minimise_validates_parameters():
    g = UniformGrid(0.0, 1.0, 4)
    with pytest.raises(ValueError, match="p > 1"):
        minimise_p1(g, np.zeros(4), [0.5], 0.1, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="h > 0"):
        minimise_p1(g, np.zeros(4), [0.5], 0.0, 0.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="scale > 0"):
        minimise_p1(g, np.zeros(4), [0.5], 0.1, 0.0, 2.0, -1.0)
    with pytest.raises(ValueError, match="3 entries"):
        minimise_p1(g, np.zeros(3), [0.5], 0.1, 0.0, 2.0, 1.0)


# ----------------------------------------------------------------------------------
# power-law impact kernels
# ----------------------------------------------------------------------------------


@PROPERTY
@given(p=st.floats(1.05, 4.0, **finite), scale=st.floats(0.1, 5.0, **finite),
       v=st.one_of(st.just(0.0), st.floats(1e-4, 5.0, **finite), st.floats(-5.0, -1e-4, **finite)))
def test_power_kernels_are_consistent(p, scale, v):
    w = power_marginal(v, p, scale)
    imp = PowerImpact(p, scale)
    assert power_cost(v, p, scale) == pytest.approx(float(imp.cost(v)), rel=1e-14, abs=1e-300)
    assert w == pytest.approx(float(imp.marginal(v)), rel=1e-13, abs=1e-300)
    assert np.sign(w) == np.sign(v)
    assert power_marginal_inverse(w, p, scale) == pytest.approx(v, rel=1e-10, abs=1e-12)
    assert power_marginal_inverse(w, p, scale) == pytest.approx(float(imp.marginal_inverse(w)), rel=1e-13, abs=1e-300)
    # l'(v) is the derivative of l (central difference away from the kink at 0)
    if abs(v) > 1e-2:
        d = 1e-6 * max(1.0, abs(v))
        fd = (power_cost(v + d, p, scale) - power_cost(v - d, p, scale)) / (2 * d)
        assert w == pytest.approx(fd, rel=1e-6)


@PROPERTY
@given(p=st.floats(1.1, 4.0, **finite), scale=st.floats(0.1, 5.0, **finite), w=st.floats(-5.0, 5.0, **finite))
def test_inverse_derivative_matches_finite_difference(p, scale, w):
    if abs(w) < 1e-2:
        return
    d = 1e-6 * abs(w)
    fd = (power_marginal_inverse(w + d, p, scale) - power_marginal_inverse(w - d, p, scale)) / (2 * d)
    assert power_marginal_inverse_derivative(w, p, scale) == pytest.approx(fd, rel=1e-5)
    assert power_marginal_inverse_derivative(w, p, scale) > 0


@pytest.mark.parametrize("p, expected", [(1.5, 0.0), (2.0, 1.0 / (2 * 0.7)), (3.0, math.inf)])
def test_inverse_derivative_at_zero(p, expected):
    """``1/l''(0)``: 0 for p < 2 (l'' blows up), 1/c for quadratics, inf for p > 2 (l'' vanishes)."""
    assert power_marginal_inverse_derivative(0.0, p, 0.7) == expected


def test_slope_range_includes_zero():
    assert slope_range(np.array([0.0, 1.0, 3.0]), 0.5) == (0.0, 4.0)
    assert slope_range(np.array([3.0, 1.0, 0.0]), 0.5) == (-4.0, 0.0)
    assert slope_range(np.array([0.0, 1.0, 0.5]), 1.0) == (-0.5, 1.0)
