"""The compiled Cholesky shared by the water and gas solvers, and the gas solver's fused linear step,
against SciPy's dense solve."""

import numpy as np
import pytest
import scipy.sparse as sp

from pipetwin.twin.solve.linalg import LaplacianSystem


def _random_laplacian(n, n_links, seed):
    rng = np.random.default_rng(seed)
    # a spanning path keeps every row connected to a fixed node (row -1 at one end)
    i = np.concatenate([np.arange(n), rng.integers(0, n, n_links)])
    j = np.concatenate([np.arange(1, n + 1), rng.integers(-1, n, n_links)])
    j[n - 1] = -1
    w = rng.uniform(1e-3, 1e3, len(i))
    return i.astype(np.int64), np.where(j >= n, -1, j).astype(np.int64), w


def _dense(n, i, j, w, diag):
    a = np.diag(diag.astype(float))
    for a_, b_, wk in zip(i, j, w):
        if a_ >= 0 and b_ >= 0 and a_ == b_:
            continue
        if a_ >= 0:
            a[a_, a_] += wk
        if b_ >= 0:
            a[b_, b_] += wk
        if a_ >= 0 and b_ >= 0:
            a[a_, b_] -= wk
            a[b_, a_] -= wk
    return a


@pytest.mark.parametrize("seed", range(5))
def test_numba_backend_matches_dense_solve(seed):
    n = 40
    i, j, w = _random_laplacian(n, 60, seed)
    rng = np.random.default_rng(100 + seed)
    diag = rng.uniform(0.0, 1.0, n)
    rhs = rng.normal(size=n)
    system = LaplacianSystem(n, i, j, backend="numba")
    x = system.solve(w, diag, rhs)
    ref = np.linalg.solve(_dense(n, i, j, w, diag), rhs)
    assert np.allclose(x, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    # correction form from a start, and a chord step with the old factor, reach the same solution
    x0 = ref + rng.normal(size=n) * 1e-3
    assert np.allclose(system.solve(w, diag, rhs, x0=x0), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    w2 = w * (1.0 + 1e-3 * rng.normal(size=len(w)))
    ref2 = np.linalg.solve(_dense(n, i, j, w2, diag), rhs)
    x = ref
    for _ in range(30):
        x = system.solve(w2, diag, rhs, x0=x, refactor=False)
    assert np.allclose(x, ref2, rtol=1e-8, atol=1e-10 * np.abs(ref2).max())


def test_backends_agree():
    n = 200
    i, j, w = _random_laplacian(n, 300, 7)
    rhs = np.random.default_rng(1).normal(size=n)
    zero = np.zeros(n)
    a = LaplacianSystem(n, i, j, backend="numba").solve(w, zero, rhs)
    b = LaplacianSystem(n, i, j, backend="splu").solve(w, zero, rhs)
    assert np.allclose(a, b, rtol=1e-8, atol=1e-10 * np.abs(b).max())


def test_numba_backend_reports_indefinite_matrix():
    system = LaplacianSystem(2, np.array([0, 1]), np.array([1, -1]), backend="numba")
    with pytest.raises(np.linalg.LinAlgError):
        system.solve(np.array([1.0, -5.0]), np.zeros(2), np.ones(2))
    assert sp.issparse(system.matrix())
