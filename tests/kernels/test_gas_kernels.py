"""Gas kernels: friction factors solve their equations, stay positive and continuous where the
laminar switch joins the laws, compressibility and the pipe law behave, compiled = py_func."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipetwin.kernels import gas as gk

LAWS = list(gk.FRICTION_CODES.values())


@settings(max_examples=200, deadline=None)
@given(re=st.floats(10.0, 1e8), rel=st.floats(1e-6, 1e-2))
def test_colebrook_solves_its_equation(re, rel):
    lam, _ = gk.colebrook(re, rel, 0.0)
    lhs = 1.0 / math.sqrt(lam)
    rhs = -2.0 * math.log10(2.51 / (re * math.sqrt(lam)) + rel / 3.71)
    assert lhs == pytest.approx(rhs, rel=1e-12)
    # a start from any earlier lambda reaches the same answer
    assert gk.colebrook(re, rel, 0.02)[0] == pytest.approx(lam, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(re=st.floats(2e-3, 1e7), rel=st.floats(1e-6, 1e-2))   # above the RE_FLOOR joint
def test_colebrook_derivative_matches_finite_difference(re, rel):
    lam, dlam = gk.colebrook(re, rel, 0.0)
    h = re * 1e-6
    fd = (gk.colebrook(re + h, rel, 0.0)[0] - gk.colebrook(re - h, rel, 0.0)[0]) / (2 * h)
    assert dlam == pytest.approx(fd, rel=1e-4, abs=1e-12 * lam / re)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("edge", [gk.RE_LAMINAR, gk.RE_TURBULENT])
def test_laminar_switch_is_continuous(law, edge):
    lo = gk.friction_factor(law, edge * (1 - 1e-9), 0.1, 1e-4, True, 0.0)[0]
    hi = gk.friction_factor(law, edge * (1 + 1e-9), 0.1, 1e-4, True, 0.0)[0]
    assert lo > 0 and hi > 0
    assert lo == pytest.approx(hi, rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(law=st.sampled_from(LAWS), re=st.floats(1.0, 1e7), switch=st.booleans())
def test_friction_positive_and_compiled_equals_python(law, re, switch):
    got = gk.friction_factor(law, re, 0.1, 1e-4, switch, 0.0)
    ref = gk.friction_factor.py_func(law, re, 0.1, 1e-4, switch, 0.0)
    assert got[0] > 0
    assert got[0] == pytest.approx(ref[0], rel=1e-12)


def test_compressibility_models():
    assert gk.compressibility(gk.Z_LINEAR, 2e5, 1.0, 1.0, -2.2e-8, 4.6e6, 193.0, 283.15) == pytest.approx(
        (1 - 2.2e-8 * 2e5, -2.2e-8))
    assert gk.compressibility(gk.Z_CONSTANT, 7e6, 0.9, 1.0, 0.0, 4.6e6, 193.0, 283.15) == (0.9, 0.0)
    z, dz = gk.compressibility(gk.Z_PAPAY, 7e6, 1.0, 1.0, 0.0, 4.6e6, 193.08, 289.15)
    assert 0.8 < z < 0.95 and dz < 0        # natural gas at 70 bar, 16 C
    h = 1.0
    zp = gk.compressibility(gk.Z_PAPAY, 7e6 + h, 1.0, 1.0, 0.0, 4.6e6, 193.08, 289.15)[0]
    assert dz == pytest.approx((zp - z) / h, rel=1e-5)


def test_mean_pressure():
    assert gk.mean_pressure(3e5, 3e5) == 3e5
    p = gk.mean_pressure(5e5, 3e5)
    assert p == pytest.approx(2 / 3 * (5e5 ** 3 - 3e5 ** 3) / (5e5 ** 2 - 3e5 ** 2))
    assert 4e5 < p < 5e5


def _pipe(m, switch=False, law=gk.COLEBROOK):
    n = len(m)
    phi, dphi = np.empty(n), np.empty(n)
    one = np.ones(n)
    gk.pipe_terms(np.asarray(m, float), 2e5 * one, 1.99e5 * one, 0.0 * one, 0.1 * one, 100.0 * one, 1e-4 * one,
                  0.0 * one, law, switch, 1.0, 1.1e-5, 0.73, 101325.0, 273.15, 283.15, 9.81, gk.Z_LINEAR, 1.0, 1.0,
                  -2.2e-8, 4.6e6, 193.0, 1e-30 * one, np.zeros(n), gk.X_TOL_SOLVER, phi, dphi)
    return phi, dphi


@settings(max_examples=100, deadline=None)
@given(m=st.floats(1e-12, 10.0), law=st.sampled_from(LAWS), switch=st.booleans())
def test_pipe_law_is_odd_with_finite_slope(m, law, switch):
    phi, dphi = _pipe([m, -m], switch, law)
    assert phi[0] == pytest.approx(-phi[1], rel=1e-12)
    assert np.isfinite(dphi).all() and (dphi > 0).all()


def test_pipe_law_zero_flow_has_finite_slope():
    phi, dphi = _pipe([0.0, 1e-300, -1e-300])
    assert phi[0] == 0.0 and np.isfinite(dphi).all() and (dphi > 0).all()


def test_pipe_law_gathers_and_measures_the_residual():
    """``pipe_law`` (what the solver calls each step) equals ``pipe_terms`` on gathered ends and
    reports the largest |p1^2 - p2^2 - phi| / (p1 + p2) and the largest drop."""
    m = np.array([0.5, -0.2, 0.0, 1.0])
    p = np.array([2e5, 1.99e5, 1.98e5])
    fr = np.array([0, 1, 2, 0], np.int64)
    to = np.array([1, 2, 0, 2], np.int64)
    pipes = np.array([0, 1, 3], np.int64)
    one = np.ones(3)
    args = (0.0 * one, 0.1 * one, 100.0 * one, 1e-4 * one, 0.0 * one, gk.COLEBROOK, False, 1.0, 1.1e-5, 0.73,
            101325.0, 273.15, 283.15, 9.81, gk.Z_LINEAR, 1.0, 1.0, -2.2e-8, 4.6e6, 193.0, 1e-30 * one)
    phi, dphi = np.empty(3), np.empty(3)
    law_res, dp_scale = gk.pipe_law(m, p, fr, to, pipes, *args, np.zeros(3), gk.X_TOL_SOLVER, phi, dphi)
    ref_phi, ref_dphi = np.empty(3), np.empty(3)
    gk.pipe_terms(m[pipes], p[fr[pipes]], p[to[pipes]], *args, np.zeros(3), gk.X_TOL_SOLVER, ref_phi, ref_dphi)
    assert np.array_equal(phi, ref_phi) and np.array_equal(dphi, ref_dphi)
    p1, p2 = p[fr[pipes]], p[to[pipes]]
    assert law_res == pytest.approx(np.max(np.abs(p1 ** 2 - p2 ** 2 - phi) / (p1 + p2)), rel=1e-12)
    assert dp_scale == pytest.approx(np.max(np.abs(p1 - p2)))


def test_mean_pressure_matches_the_cubic_form():
    for p1, p2 in [(5e5, 3e5), (1e5, 7e6), (2e5, 1.9e5)]:
        ref = 2.0 / 3.0 * (p1 ** 3 - p2 ** 3) / (p1 ** 2 - p2 ** 2)
        assert gk.mean_pressure(p1, p2) == pytest.approx(ref, rel=1e-9)
