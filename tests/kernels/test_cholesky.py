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


@pytest.mark.parametrize("backend", ["numba", "cholmod"])
def test_pcg_from_an_old_factorization_reaches_the_new_solution(backend):
    if backend == "cholmod":
        pytest.importorskip("sksparse")
    n = 300
    i, j, w = _random_laplacian(n, 500, 11)
    rng = np.random.default_rng(5)
    rhs = rng.normal(size=n)
    zero = np.zeros(n)
    system = LaplacianSystem(n, i, j, backend=backend)
    x_old = system.solve(w, zero, rhs)
    # a few conductances move a lot, the rest a little: what a Newton step near its answer sees
    w2 = w * (1.0 + 0.01 * rng.uniform(-1.0, 1.0, len(w)))
    w2[rng.choice(len(w), 5, replace=False)] *= 30.0
    ref = np.linalg.solve(_dense(n, i, j, w2, zero), rhs)
    x, used = system.solve_pcg(w2, zero, rhs, x_old, 1e-12, 60)
    assert x is not None and 0 < used <= 30
    assert np.allclose(x, ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())
    # too few iterations: reported, not a wrong answer
    assert system.solve_pcg(w2, zero, rhs, x_old, 1e-12, 2) == (None, 2)
    # the factorization kept is the old one: the old matrix is still solved in one iteration
    x, used = system.solve_pcg(w, zero, rhs, x_old + 1.0, 1e-10, 5)
    assert used == 1 and np.allclose(x, x_old, rtol=1e-8, atol=1e-9 * np.abs(x_old).max())


def test_pcg_budget_is_zero_where_factorizing_costs_a_solve():
    # a path ordered from its end: no fill, so a factorization is as cheap as a solve
    n = 500
    i = np.arange(n, dtype=np.int64)
    j = np.append(np.arange(1, n), -1).astype(np.int64)
    system = LaplacianSystem(n, i, j, backend="numba", order=np.arange(n, dtype=np.int64))
    assert system.pcg_budget() == 0            # nothing factorized yet
    system.solve(np.ones(n), np.zeros(n), np.ones(n))
    assert system.pcg_budget() == 0
    # a dense-ish random graph: fill makes a factorization worth many iterations
    i, j, w = _random_laplacian(n, 3000, 3)
    system = LaplacianSystem(n, i, j, backend="numba")
    system.solve(w, np.zeros(n), np.ones(n))
    assert system.pcg_budget() >= 10
    # CHOLMOD's L counted on its own order: flop counts, the same on every call (no clock)
    pytest.importorskip("sksparse")
    system = LaplacianSystem(n, i, j, backend="cholmod")
    assert system.pcg_budget() == 0
    system.solve(w, np.zeros(n), np.ones(n))
    assert system.pcg_budget() >= 10 and system.pcg_budget() == system.pcg_budget()
    path = LaplacianSystem(n, np.arange(n, dtype=np.int64), np.append(np.arange(1, n), -1).astype(np.int64),
                           backend="cholmod")
    path.solve(np.ones(n), np.zeros(n), np.ones(n))
    assert path.pcg_budget() <= 2


def _random_upper_pattern(rng, n):
    """Upper triangle by columns of a random symmetric pattern, rows shuffled within a column."""
    a = rng.random((n, n)) < rng.uniform(0.0, 0.3)
    a = a | a.T | np.eye(n, dtype=bool)
    cp, ci = [0], []
    for k in range(n):
        rows = [r for r in range(k + 1) if a[r, k]]
        rng.shuffle(rows)
        ci += rows
        cp.append(len(ci))
    return np.array(cp, np.int64), np.array(ci, np.int64)


def _counts_row_by_row(n, cp, ci):
    """The reference: L's column pointers by walking every row of L (its ereach), O(nnz(L))."""
    from pipetwin.kernels.cholesky import _ereach, etree

    parent = np.empty(n, np.int64)
    etree(n, cp, ci, parent)
    count = np.ones(n, np.int64)
    s, mark = np.empty(n, np.int64), np.zeros(n, np.bool_)
    for k in range(n):
        top = _ereach(cp, ci, k, parent, s, mark)
        for j in s[top:n]:
            count[j] += 1
    lp = np.concatenate([[0], np.cumsum(count)])
    return parent, lp, int(lp[n])


def test_column_counts_match_the_row_by_row_count():
    from pipetwin.kernels.cholesky import chol_analysis, chol_symbolic

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        cp, ci = _random_upper_pattern(rng, n)
        parent = np.empty(n, np.int64)
        lp = np.empty(n + 1, np.int64)
        out = [(parent, lp, chol_symbolic(n, cp, ci, parent, lp)), _counts_row_by_row(n, cp, ci)]
        assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
        assert out[0][2] == out[1][2]
        parent, post, lp, lcp, lci, lpos = chol_analysis(n, cp, ci)
        assert np.array_equal(parent, out[1][0]) and np.array_equal(lp, out[1][1])
        assert np.array_equal(np.sort(post), np.arange(n))
        # the lower pattern: rows ascending, diagonal first, each entry's position in the upper one
        for j in range(n):
            rows = lci[lcp[j]:lcp[j + 1]]
            assert rows[0] == j and np.all(np.diff(rows) > 0)
            assert np.array_equal(ci[lpos[lcp[j]:lcp[j + 1]]], np.full(len(rows), j))


def test_lower_pattern_is_scipys_lower_triangle():
    from pipetwin.kernels.cholesky import lower_pattern

    for seed in range(5):
        n = 60
        i, j, _ = _random_laplacian(n, 120, seed)
        i = np.concatenate([i, i[:10], [3, -1]]).astype(np.int64)         # parallel links, a loop, a fixed end
        j = np.concatenate([j, j[:10], [3, -1]]).astype(np.int64)
        indptr, indices = lower_pattern(n, i, j)
        both = (i >= 0) & (j >= 0)
        rows = np.concatenate([np.arange(n), i[both], j[both]])
        cols = np.concatenate([np.arange(n), j[both], i[both]])
        ref = sp.tril(sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))).tocsc()
        ref.sum_duplicates()
        ref.sort_indices()
        assert np.array_equal(indptr, ref.indptr) and np.array_equal(indices, ref.indices)
