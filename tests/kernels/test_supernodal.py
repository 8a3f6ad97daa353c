"""The supernodal (multifrontal) Cholesky against SciPy and CHOLMOD: random, ill-scaled, grid and
tree matrices, the not-positive-definite answer, the degenerate sizes, the "supernodal" backend of
LaplacianSystem and the gas solver on grid10k."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

from pipetwin.kernels.cholesky import chol_symbolic
from pipetwin.kernels.supernodal import (etree_postorder, supernodal_numeric, supernodal_solve,
                                         supernodal_symbolic)
from pipetwin.twin.solve.linalg import HAVE_CHOLMOD, LaplacianSystem


def _upper(a, perm):
    """Upper triangle by columns of a[perm][:, perm] (diagonal included)."""
    u = sp.triu(sp.csc_matrix(a)[perm][:, perm]).tocsc()
    u.sort_indices()
    return u.indptr.astype(np.int64), u.indices.astype(np.int64), u.data.astype(np.float64)


def _symbolic(cp, ci, n):
    parent = np.empty(n, np.int64)
    lp = np.empty(n + 1, np.int64)
    chol_symbolic(n, cp, ci, parent, lp)
    return parent, lp


class Factor:
    """The whole supernodal pipeline on a SciPy matrix: fill-reducing order (new -> old), then a
    postorder of its elimination tree, symbolic analysis, numeric factorization, solves."""

    def __init__(self, a, order=None, **relax):
        n = a.shape[0]
        order = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, np.int64)
        cp, ci, _ = _upper(a, order)
        parent, _ = _symbolic(cp, ci, n)
        self.perm = order[etree_postorder(parent)]
        self.cp, self.ci, self.cx = _upper(a, self.perm)
        parent, lp = _symbolic(self.cp, self.ci, n)
        (self.sup, self.rsp, self.ri, self.rel, self.lxp, self.aptr, self.aidx, self.aoff, self.cptr, self.child,
         self.upd_off, front_size, stack_size) = supernodal_symbolic(self.cp, self.ci, parent, lp, **relax)
        self.lp = lp
        self.lx = np.empty(self.lxp[-1])
        self.front = np.empty(max(front_size, 1))
        self.stack = np.empty(max(stack_size, 1))

    def numeric(self, cx=None) -> bool:
        cx = self.cx if cx is None else cx
        return supernodal_numeric(cx, self.sup, self.rsp, self.rel, self.lxp, self.aptr, self.aidx, self.aoff,
                                  self.cptr, self.child, self.upd_off, self.lx, self.front, self.stack)

    def solve(self, b):
        x = np.ascontiguousarray(b[self.perm], dtype=np.float64)
        supernodal_solve(self.sup, self.rsp, self.ri, self.lxp, self.lx, x)
        out = np.empty_like(x)
        out[self.perm] = x
        return out


def _amd(a):
    if not HAVE_CHOLMOD:
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        return reverse_cuthill_mckee(sp.csr_matrix(a), symmetric_mode=True).astype(np.int64)
    from sksparse.cholmod import analyze

    return np.asarray(analyze(sp.csc_matrix(a), mode="simplicial", ordering_method="amd").P(), np.int64)


def _laplacian(n, i, j, w, grounded):
    """sum_k w_k (e_i - e_j)(e_i - e_j)^T plus ``grounded`` on the diagonal (SPD if each connected
    part has a grounded node)."""
    a = sp.coo_matrix((np.concatenate([w, w, -w, -w]), (np.concatenate([i, j, i, j]), np.concatenate([i, j, j, i]))),
                      shape=(n, n)).tocsc()
    return (a + sp.diags(grounded)).tocsc()


def _grid(shape, seed, decades):
    rng = np.random.default_rng(seed)
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    i, j = [], []
    for axis in range(len(shape)):
        lo = [slice(None)] * len(shape)
        hi = [slice(None)] * len(shape)
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        i.append(idx[tuple(lo)].ravel())
        j.append(idx[tuple(hi)].ravel())
    i = np.concatenate(i)
    j = np.concatenate(j)
    w = 10.0 ** rng.uniform(0, decades, len(i))
    grounded = np.zeros(idx.size)
    grounded[rng.integers(0, idx.size, 3)] = 10.0 ** rng.uniform(0, decades, 3)
    return _laplacian(idx.size, i, j, w, grounded)


def _check_solution(a, fac, seed=0):
    """Our solve against SciPy's (or CHOLMOD's) on the same matrix: a normwise backward error at
    rounding level, and a residual no worse than the reference's (up to a small factor, or up to
    rounding of |A| |x|: at condition numbers ~1e10 residuals are noise, LAPACK's dense solve
    then lands 6x above CHOLMOD's on one drawn matrix)."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(a.shape[0])
    x = fac.solve(b)
    if HAVE_CHOLMOD:
        from sksparse.cholmod import cholesky

        x_ref = cholesky(sp.csc_matrix(a))(b)
    else:
        x_ref = spla.spsolve(sp.csc_matrix(a), b)
    norm_a = spla.norm(a, np.inf)
    res = np.linalg.norm(b - a @ x, np.inf)
    res_ref = np.linalg.norm(b - a @ x_ref, np.inf)
    backward = res / (norm_a * np.linalg.norm(x, np.inf) + np.linalg.norm(b, np.inf))
    assert backward <= 1e-14 * max(1.0, np.sqrt(a.shape[0]) / 10), backward
    rounding = 1e-15 * (norm_a * np.linalg.norm(x, np.inf) + np.linalg.norm(b, np.inf))
    assert res <= 10.0 * res_ref + rounding, (res, res_ref)


@pytest.mark.parametrize("seed", range(6))
def test_random_spd_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    r = sp.random(n, n, density=4.0 / n, random_state=seed, format="coo")
    a = (r + r.T).tocsc()
    a = a + sp.diags(np.abs(a).sum(axis=1).A1 + rng.uniform(0.1, 1.0, n))
    fac = Factor(a, _amd(a))
    assert fac.numeric()
    _check_solution(a, fac, seed)


@pytest.mark.parametrize("shape,decades", [((30, 30), 10), ((60, 50), 6), ((8, 9, 10), 10), ((100, 100), 10)])
def test_ill_scaled_grids(shape, decades):
    a = _grid(shape, seed=sum(shape), decades=decades)
    fac = Factor(a, _amd(a))
    assert fac.numeric()
    _check_solution(a, fac)
    # fronts are dense: the big grids must actually have some
    if np.prod(shape) >= 900:
        assert np.diff(fac.sup).max() >= 8


@pytest.mark.parametrize("relax", [{}, {"nrelax0": 1, "nrelax1": 1, "nrelax2": 1, "zrelax0": 0.0, "zrelax1": 0.0,
                                        "zrelax2": 0.0}, {"nrelax0": 64, "nrelax1": 64, "nrelax2": 64}])
def test_relaxation_settings_all_solve(relax):
    a = _grid((20, 25), seed=3, decades=8)
    fac = Factor(a, _amd(a), **relax)
    assert fac.numeric()
    _check_solution(a, fac)


def test_tree_and_path_natural_order():
    rng = np.random.default_rng(7)
    n = 500
    parent = np.array([rng.integers(0, k) for k in range(1, n)])
    grounded = np.zeros(n)
    grounded[0] = 1.0
    tree = _laplacian(n, np.arange(1, n), parent, 10.0 ** rng.uniform(-5, 5, n - 1), grounded)
    # leaves first (deepest first) is fill-free for a tree
    fac = Factor(tree, np.arange(n)[::-1])
    assert fac.numeric()
    assert fac.lxp[-1] <= 2 * tree.nnz        # little fill: a tree's order keeps L a tree
    _check_solution(tree, fac)
    path = _laplacian(n, np.arange(n - 1), np.arange(1, n), rng.uniform(1, 2, n - 1), grounded)
    fac = Factor(path)
    assert fac.numeric()
    _check_solution(path, fac)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 80), st.integers(0, 2**31 - 1), st.booleans())
def test_small_random_laplacians(n, n_links, seed, amd):
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_links)
    j = rng.integers(0, n, n_links)
    keep = i != j
    grounded = 10.0 ** rng.uniform(-3, 3, n) * (rng.random(n) < 0.3)
    grounded[rng.integers(0, n)] += 1.0
    # a weak ground on every node: SPD for sure
    a = _laplacian(n, i[keep], j[keep], 10.0 ** rng.uniform(-4, 4, keep.sum()), grounded + 1e-6)
    fac = Factor(a, _amd(a) if amd else rng.permutation(n))
    assert fac.numeric()
    # ill-conditioned (weak ground, links over 8 decades): compare residuals, not solutions
    _check_solution(a, fac, seed)


def test_not_positive_definite_returns_false():
    a = _grid((15, 15), seed=1, decades=3)
    fac = Factor(a, _amd(a))
    assert fac.numeric()
    cx = fac.cx.copy()
    diag = fac.ci == np.repeat(np.arange(a.shape[0]), np.diff(fac.cp))
    # a negative pivot in the middle of the order, at the end, and a NaN
    for where in (a.shape[0] // 2, a.shape[0] - 1):
        bad = cx.copy()
        bad[np.flatnonzero(diag)[where]] = -1.0
        assert not fac.numeric(bad)
    bad = cx.copy()
    bad[np.flatnonzero(diag)[3]] = np.nan
    assert not fac.numeric(bad)
    # symmetric indefinite: positive diagonal, too large off-diagonal
    b = sp.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.5, 3.0]]))
    assert not Factor(b).numeric()
    assert fac.numeric(cx)                    # and it recovers with a good matrix


def test_one_by_one_and_empty():
    fac = Factor(sp.csc_matrix(np.array([[4.0]])))
    assert fac.numeric()
    assert np.allclose(fac.solve(np.array([2.0])), [0.5])
    assert not fac.numeric(np.array([0.0]))
    empty = Factor(sp.csc_matrix((0, 0)))
    assert empty.numeric()
    assert empty.solve(np.zeros(0)).shape == (0,)


def test_symbolic_rejects_an_order_that_is_not_a_postorder():
    a = _grid((10, 10), seed=0, decades=1)
    n = a.shape[0]
    perm = np.random.default_rng(0).permutation(n)    # a random order of a grid: no postorder
    cp, ci, _ = _upper(a, perm)
    parent, lp = _symbolic(cp, ci, n)
    assert (etree_postorder(parent) != np.arange(n)).any()
    with pytest.raises(ValueError):
        supernodal_symbolic(cp, ci, parent, lp)


def _random_links(n, n_links, seed):
    rng = np.random.default_rng(seed)
    i = np.concatenate([np.arange(n), rng.integers(0, n, n_links)])
    j = np.concatenate([np.arange(1, n + 1), rng.integers(-1, n, n_links)])
    j = np.where(j >= n, -1, j)
    return i.astype(np.int64), j.astype(np.int64), 10.0 ** rng.uniform(-5, 5, len(i))


@pytest.mark.parametrize("seed", range(3))
def test_backend_matches_numba_backend(seed):
    n = 300
    i, j, w = _random_links(n, 500, seed)
    rng = np.random.default_rng(seed + 10)
    rhs = rng.standard_normal(n)
    diag = rng.uniform(0, 1e-3, n)
    ref = LaplacianSystem(n, i, j, backend="numba")
    sup = LaplacianSystem(n, i, j, backend="supernodal")
    x_ref = ref.solve(w, diag, rhs)
    x = sup.solve(w, diag, rhs)
    scale = np.abs(x_ref).max()
    assert np.abs(x - x_ref).max() <= 1e-9 * scale
    # correction form, chord step (old L) and CG preconditioned by the old L all reach the answer
    w2 = w * rng.uniform(0.9, 1.1, len(w))
    x2_ref = ref.solve(w2, diag, rhs)
    x2 = sup.solve(w2, diag, rhs, x0=x, refactor=False)
    for _ in range(30):
        x2 = sup.solve(w2, diag, rhs, x0=x2, refactor=False)
    assert np.abs(x2 - x2_ref).max() <= 1e-8 * scale
    sup.solve(w, diag, rhs)
    assert sup.pcg_budget() >= 0
    x3, used = sup.solve_pcg(w2, diag, rhs, x, 1e-12, 200)
    assert x3 is not None and used > 0
    assert np.abs(x3 - x2_ref).max() <= 1e-8 * scale


def test_backend_postorders_a_given_order():
    """A caller's order (the gas solver passes a tree's deepest-first one) need not be a postorder
    of the elimination tree: the backend postorders it (same fill) before the symbolic pass."""
    n = 200
    i, j, w = _random_links(n, 150, 4)
    rng = np.random.default_rng(5)
    order = rng.permutation(n)
    rhs = rng.standard_normal(n)
    s = LaplacianSystem(n, i, j, backend="supernodal", order=order)
    assert sorted(s.perm.tolist()) == list(range(n))
    x = s.solve(w, np.zeros(n), rhs)
    x_ref = LaplacianSystem(n, i, j, backend="numba", order=order).solve(w, np.zeros(n), rhs)
    assert np.abs(x - x_ref).max() <= 1e-9 * np.abs(x_ref).max()


def test_backend_raises_on_indefinite_and_handles_empty():
    i = np.array([0, 1], np.int64)
    j = np.array([1, -1], np.int64)
    s = LaplacianSystem(2, i, j, backend="supernodal")
    with pytest.raises(np.linalg.LinAlgError):
        s.solve(np.array([1.0, -5.0]), np.zeros(2), np.ones(2))
    assert LaplacianSystem(0, np.zeros(0, np.int64), np.zeros(0, np.int64),
                           backend="supernodal").solve(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0,)


def test_gas_solver_grid10k_matches_default_backend(networks_dir):
    from pipetwin.twin.io.tabular import read_tabular
    from pipetwin.twin.solve.gas import GasOptions, GasSolver

    model = read_tabular(networks_dir / "grid10k")
    ref = GasSolver(model, GasOptions()).solve()
    res = GasSolver(model, GasOptions(backend="supernodal")).solve()
    assert ref.converged and res.converged, res.message
    assert res.extra["linear_backend"] == "supernodal"
    rel = np.abs(res.node_pressure_pa - ref.node_pressure_pa) / np.abs(ref.node_pressure_pa)
    assert rel.max() <= 1e-9, rel.max()


def test_row_structures_are_the_union_of_their_columns_in_l():
    """The row lists come from row subtrees, unsorted work avoided: each must be the sorted union of
    its columns' structures in L (a dense symbolic elimination), and A's entries mapped to their place."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 70))
        i, j, _ = _random_links(n, int(rng.integers(0, 2 * n)), seed)
        system = LaplacianSystem(n, i, j, backend="supernodal")
        cp, ci = system.cp, system.ci
        filled = np.zeros((n, n), bool)
        for k in range(n):
            filled[ci[cp[k]:cp[k + 1]], k] = True
        filled = filled | filled.T
        for k in range(n):                     # symbolic elimination: column k's rows below join up
            below = np.flatnonzero(filled[k + 1:, k]) + k + 1
            filled[np.ix_(below, below)] = True
        sup, rsp, ri = system.sup, system.rsp, system.ri
        for s in range(len(sup) - 1):
            cols = range(sup[s], sup[s + 1])
            union = sorted(set().union(*(np.flatnonzero(filled[c:, c]) + c for c in cols)))
            assert list(ri[rsp[s]:rsp[s + 1]]) == union
            m = rsp[s + 1] - rsp[s]
            for q in range(system.aptr[s], system.aptr[s + 1]):
                p = system.aidx[q]
                col = int(np.searchsorted(cp, p, side="right") - 1)      # the upper entry (ci[p], col)
                c, r = divmod(int(system.aoff[q]), m)
                assert sup[s] + c == ci[p] and ri[rsp[s] + r] == col
