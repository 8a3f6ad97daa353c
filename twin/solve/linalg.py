"""The linear step of both Newton solvers: a symmetric positive definite system A D A^T over the
free (not fixed-pressure) nodes, with a sparsity pattern fixed by the topology.

Four backends. "numba": the compiled up-looking Cholesky of ``kernels/cholesky.py`` with CHOLMOD's
AMD order (else reverse Cuthill-McKee), assembled, factorized and solved in one call, so a Newton
step builds no SciPy objects. "supernodal": the same path with the compiled multifrontal Cholesky of
``kernels/supernodal.py`` (dense vectorized fronts): on meshes with much fill it factorizes ~3x
faster than CHOLMOD's simplicial mode at 10k rows (and than its supernodal one at 100k); on
nearly-tree networks, with little fill, the up-looking one is faster. "cholmod" (scikit-sparse):
on large nearly-tree networks its analysis is cheaper than the compiled symbolic pass. "splu":
SciPy's SuperLU, which redoes the analysis each time (never chosen by "auto"). "auto" takes the
compiled path up to ``NUMBA_ROWS`` rows and on meshes at any size, choosing between its two
factorizations by L's fill, and CHOLMOD otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipetwin.kernels.assembly import (cg_direction, cg_step, csc_positions, laplacian_pcg, laplacian_step,
                                       laplacian_step_supernodal, scatter_laplacian)
from pipetwin.kernels.cholesky import chol_analysis, chol_row_patterns, link_pattern, lower_pattern
from pipetwin.kernels.supernodal import supernodal_symbolic_lower

try:  # optional accelerated backend
    from sksparse.cholmod import analyze as _cholmod_analyze  # type: ignore

    HAVE_CHOLMOD = True
except Exception:  # pragma: no cover - depends on the machine
    HAVE_CHOLMOD = False


SUPERNODAL_ROWS = 50_000
NUMBA_ROWS = 5_000          # up to this many rows the compiled Cholesky is the default
# a mesh: independent loops per free node (a 2D lattice has ~1, the 100k synthetic city 0.07, a
# tree 0); the compiled path is then the default at any size
MESH_LOOPS_PER_ROW = 0.25
# the supernodal factorization beats the up-looking one once L's fill, sum of squared column counts
# per row, passes this (a 40 x 40 lattice; grid10k 1,160, Schutterwald 4): measured crossover
SUPERNODAL_FILL = 300.0
# conjugate gradients from an old factorization are worth trying while the iterations they need
# cost at most this share of a fresh factorization (the caller predicts how many they need)
PCG_SHARE_OF_FACTOR = 1.0
# the supernodal factorization's cost in passes over one entry of L (the unit of a triangular
# solve's cost): per entry of its blocks (assembly, extend-add, copies) and per flop in the dense
# fronts. Fitted on 100 x 100 and 316 x 316 lattices (2.9 ms and 64 ms; a solve 0.6 and 11 ms):
# 8 and 1/15; the clock's CG iterations per factorization there are 4-5.
SUPERNODAL_ENTRY_PASSES = 8.0
SUPERNODAL_FLOPS_PER_PASS = 15.0
_NO_SUPERNODES = np.zeros(0, np.int64)   # the compiled CG's "no supernodal L" (and no simplicial one)
_NO_VALUES = np.zeros(0)


def _cg_iterations_per_factorization(n: int, lp: np.ndarray, nnz_matrix: int) -> float:
    """A factorization costs about the sum of L's squared column counts; a preconditioned CG
    iteration two passes over L, one over the matrix and a few vectors. (grid10k: 23; CHOLMOD's
    clock says 30-40 there, its solves carry more overhead per flop than its factorization.)"""
    counts = np.diff(lp).astype(np.float64)
    per_iteration = 2.0 * float(lp[n]) + 2.0 * nnz_matrix + 6.0 * n
    return float(counts @ counts) / max(per_iteration, 1.0)


class LaplacianSystem:
    """A D A^T for links (i, j) where i or j is a free-node index (or -1 for a fixed node).

    ``solve(w, diag_extra, rhs)`` assembles with conductances ``w`` (one per link), adds
    ``diag_extra`` (one per free node) to the diagonal, factorizes and solves.
    """

    def __init__(self, n_free: int, link_i: np.ndarray, link_j: np.ndarray, backend: str = "auto",
                 order: np.ndarray | None = None):
        self.n = int(n_free)
        self._link_i = np.asarray(link_i, np.int64)
        self._link_j = np.asarray(link_j, np.int64)
        self._pattern_built = False
        if backend == "auto":
            # small systems: Python and SciPy overheads dominate, the compiled path wins; meshes
            # (many loops per node): the compiled symbolic pass decides between the up-looking and
            # the supernodal factorization by L's fill (``_build_numba``); larger nearly-tree ones:
            # CHOLMOD's analysis is cheaper than the compiled symbolic pass, its numeric
            # factorization as fast
            compiled = self.n <= NUMBA_ROWS or self._loops_per_row() >= MESH_LOOPS_PER_ROW or not HAVE_CHOLMOD
            backend = "compiled" if compiled else "cholmod"
        if backend == "cholmod" and not HAVE_CHOLMOD:
            raise ValueError("backend 'cholmod' needs scikit-sparse (pip install 'pipetwin[fast]')")
        self.backend = backend
        self._factor = None
        self._numeric = None     # solve with the last numeric factorization
        self._given_order = order   # a fill-reducing order the caller knows (e.g. a tree's, leaves first)
        self._cg_per_factor = None  # CG iterations that cost what a factorization does (flop counts)
        if backend in ("numba", "supernodal", "compiled"):
            self._build_numba(self._link_i, self._link_j)
        else:
            self._build_pattern()

    def _loops_per_row(self) -> float:
        """Independent loops per row, from the links alone (links touching a free node less the
        rows: links to fixed nodes close loops through them)."""
        used = int(np.count_nonzero((self._link_i >= 0) | (self._link_j >= 0)))
        return (used - self.n) / max(self.n, 1)

    def _build_pattern(self) -> None:
        """The SciPy CSC pattern and each link's entry positions (CHOLMOD, SuperLU and the AMD order
        use it; the compiled path builds its own permuted one, so it is made only when needed)."""
        if self._pattern_built:
            return
        link_i, link_j = self._link_i, self._link_j
        both = (link_i >= 0) & (link_j >= 0)
        diag = np.arange(self.n)
        rows = np.concatenate([diag, link_i[both], link_j[both]])
        cols = np.concatenate([diag, link_j[both], link_i[both]])
        pattern = sp.csc_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n, self.n))
        pattern.sum_duplicates()
        pattern.sort_indices()
        self.indptr = pattern.indptr.astype(np.int64)
        self.indices = pattern.indices.astype(np.int64)
        self.values = np.zeros(len(self.indices))

        def pos(r, c):
            out = np.empty(len(r), np.int64)
            csc_positions(self.indptr, self.indices, r, c, out)
            return out

        self.pos_ii = pos(link_i, link_i)
        self.pos_jj = pos(link_j, link_j)
        ij_r = np.where(both, link_i, -1)
        ij_c = np.where(both, link_j, -1)
        self.pos_ij = pos(ij_r, ij_c)
        self.pos_ji = pos(ij_c, ij_r)
        self.diag_pos = pos(diag, diag)
        self._pattern_built = True

    def _order(self) -> np.ndarray:
        """Fill-reducing order (new -> old): CHOLMOD's AMD, else SciPy's reverse Cuthill-McKee.
        CHOLMOD reads only the lower triangle of a symmetric matrix: it gets just that, built in
        compiled code from the links (SciPy's COO -> CSC with duplicates summed cost ~1 ms at 10k
        rows, the whole pattern twice the input). Its analysis postorders the elimination tree, so
        the order is a postorder too."""
        if HAVE_CHOLMOD:
            indptr, indices = lower_pattern(self.n, self._link_i, self._link_j)
            pattern = sp.csc_matrix((np.ones(len(indices)), indices, indptr), shape=(self.n, self.n))
            return np.asarray(_cholmod_analyze(pattern, mode="simplicial", ordering_method="amd").P(), np.int64)
        from scipy.sparse.csgraph import reverse_cuthill_mckee

        return np.asarray(reverse_cuthill_mckee(self.matrix().tocsr(), symmetric_mode=True), np.int64)

    def _build_numba(self, link_i: np.ndarray, link_j: np.ndarray) -> None:
        """Permuted upper-triangular pattern, each link's entry positions and the symbolic
        factorization, once per topology."""
        n = self.n
        if not n:
            perm = np.zeros(0, np.int64)
        elif self._given_order is not None and len(self._given_order) == n:
            perm = np.asarray(self._given_order, np.int64)
        else:
            perm = self._order()
        parent, post, lower = self._permuted_pattern(perm, link_i, link_j)
        counts = np.diff(self.lp).astype(np.float64)
        self._flops = float(counts @ counts)       # L's fill: sum of squared column counts
        if self.backend == "compiled":
            self.backend = "supernodal" if self._flops >= SUPERNODAL_FILL * max(n, 1) else "numba"
        if self.backend == "supernodal":
            # the multifrontal stack wants a postorder of the elimination tree (AMD's from CHOLMOD is)
            if (post != np.arange(n)).any():
                parent, post, lower = self._permuted_pattern(perm[post], link_i, link_j)
            self._build_supernodal(parent, lower)
            return
        self._cg_per_factor = _cg_iterations_per_factorization(n, self.lp, len(self.ci))
        sw = np.empty(max(n, 1), np.int64)
        mark = np.zeros(n, np.bool_)
        self.rp, self.rj = chol_row_patterns(n, self.cp, self.ci, parent, self.lp, sw, mark)
        nnz_l = int(self.lp[n])
        self.li = np.empty(nnz_l, np.int64)
        self.lx = np.empty(nnz_l)
        self.dinv = np.empty(n)
        self.work = np.empty(n)
        self.cw = np.empty(n, np.int64)

    def _permuted_pattern(self, perm: np.ndarray, link_i: np.ndarray, link_j: np.ndarray):
        """The pattern permuted by ``perm`` (new -> old), each link's entry positions in it, the
        elimination tree, a postorder of it and L's column pointers (``lp``). Returns (parent, post,
        the lower pattern by columns with positions: ``cholesky.lower_by_columns``)."""
        n = self.n
        self.perm = perm
        (self.pinv, self.cp, self.ci, self.cdiag, self.pos_a, self.pos_b,
         self.pos_ab) = link_pattern(n, link_i, link_j, perm)
        parent, post, self.lp, lcp, lci, lpos = chol_analysis(n, self.cp, self.ci)
        self.cx = np.zeros(len(self.ci))
        self._factored = False
        return parent, post, (lcp, lci, lpos)

    def _build_supernodal(self, parent: np.ndarray, lower: tuple) -> None:
        """Supernodes, their rows and assembly maps (``supernodal_symbolic``) and the arrays the
        factorization fills."""
        (self.sup, self.rsp, self.ri, self.rel, self.lxp, self.aptr, self.aidx, self.aoff, self.cptr, self.child,
         self.upd_off, front_size, stack_size) = supernodal_symbolic_lower(self.cp, self.ci, *lower, parent, self.lp)
        self.lx = np.empty(self.lxp[-1])
        self.front = np.empty(max(front_size, 1))
        self.stack = np.empty(max(stack_size, 1))
        # CG iterations per factorization: the dense fronts run their flops much faster than the
        # solves pass over L (with its explicit zeros), so the flop count alone overrates it
        storage = float(self.lxp[-1])
        factor = SUPERNODAL_ENTRY_PASSES * storage + self._flops / SUPERNODAL_FLOPS_PER_PASS
        per_iteration = 2.0 * storage + 2.0 * len(self.ci) + 6.0 * self.n
        self._cg_per_factor = factor / max(per_iteration, 1.0)

    def matrix(self) -> sp.csc_matrix:
        """The assembled matrix. Built once: it shares ``values``, which ``assemble`` rewrites in
        place (SciPy's checks on building one cost ~0.3 ms at 10k rows, twice per Newton step)."""
        self._build_pattern()
        m = getattr(self, "_matrix", None)
        if m is None or m.data is not self.values:
            m = sp.csc_matrix((self.values, self.indices, self.indptr), shape=(self.n, self.n))
            if m.data is not self.values:      # SciPy copied (an index or value dtype it changed)
                self.values = m.data
            self._matrix = m
        return m

    def assemble(self, w: np.ndarray, diag_extra: np.ndarray) -> None:
        self._build_pattern()
        scatter_laplacian(np.ascontiguousarray(w, dtype=np.float64), self.pos_ii, self.pos_jj, self.pos_ij,
                          self.pos_ji, np.ascontiguousarray(diag_extra, dtype=np.float64), self.diag_pos,
                          self.values)

    def solve(self, w: np.ndarray, diag_extra: np.ndarray, rhs: np.ndarray,
              x0: np.ndarray | None = None, refactor: bool = True) -> np.ndarray:
        """Solve (A D A^T + diag_extra) x = rhs. With ``x0`` (the last iterate) it solves for the
        correction from the residual instead: the same step, but its rounding error shrinks with the
        correction rather than staying proportional to |x| (conductances here span many decades).

        ``refactor=False`` keeps the last numeric factorization (a chord step): with ``x0`` the
        iteration still converges to the exact solution, only no longer quadratically."""
        if self.n == 0:
            return np.zeros(0)
        if self.backend in ("numba", "supernodal"):
            return self._numba_solve(w, diag_extra, rhs, x0, refactor)
        self.assemble(w, diag_extra)
        m = self.matrix()
        if not refactor and self._numeric is not None:
            if x0 is None:
                raise ValueError("a solve with an old factorization needs x0")
            return x0 + self._numeric(rhs - m @ x0)
        if x0 is not None:
            return x0 + self._factor_solve(m, rhs - m @ x0)
        return self._factor_solve(m, rhs)

    def _numba_solve(self, w, diag_extra, rhs, x0, refactor) -> np.ndarray:
        if not refactor and not self._factored:
            refactor = True
        if not refactor and x0 is None:
            raise ValueError("a solve with an old factorization needs x0")
        out = np.empty(self.n)
        x0 = np.zeros(self.n) if x0 is None else np.ascontiguousarray(x0, dtype=np.float64)
        w = np.ascontiguousarray(w, dtype=np.float64)
        diag_extra = np.ascontiguousarray(diag_extra, dtype=np.float64)
        rhs = np.ascontiguousarray(rhs, dtype=np.float64)
        if self.backend == "supernodal":
            ok = laplacian_step_supernodal(w, diag_extra, self.pinv, self.perm, self.pos_a, self.pos_b, self.pos_ab,
                                           self.cdiag, self.cp, self.ci, self.cx, self.sup, self.rsp, self.ri,
                                           self.rel, self.lxp, self.aptr, self.aidx, self.aoff, self.cptr,
                                           self.child, self.upd_off, self.lx, self.front, self.stack, rhs, x0,
                                           refactor, out)
        else:
            ok = laplacian_step(w, diag_extra, self.pinv, self.perm, self.pos_a, self.pos_b, self.pos_ab, self.cdiag,
                                self.cp, self.ci, self.cx, self.rp, self.rj, self.lp, self.li, self.lx, self.dinv,
                                self.work, self.cw, rhs, x0, refactor, out)
        if not ok:
            self._factored = False
            raise np.linalg.LinAlgError("the Newton matrix is not positive definite")
        self._factored = True
        return out

    def pcg_budget(self) -> int:
        """How many iterations of ``solve_pcg`` cost ``PCG_SHARE_OF_FACTOR`` of a fresh factorization
        (0 before the first one), from flop counts, not clocks (a busy machine would make the choice
        a lottery): where factorizing is as cheap as a solve (a tree's fill-free order) it is 0 and
        CG is never tried. CHOLMOD's (simplicial) L is counted once, as it stands; the supernodal
        factorization by its entries and flops at their fitted costs (``SUPERNODAL_ENTRY_PASSES``)."""
        if self.backend in ("numba", "supernodal"):
            return int(PCG_SHARE_OF_FACTOR * self._cg_per_factor) if self._factored else 0
        if self.backend != "cholmod" or self._numeric is None:
            return 0
        if self.n > SUPERNODAL_ROWS:
            # CHOLMOD may go supernodal here, whose factorization runs at BLAS speed but its solves
            # do not: flops say 61 CG iterations per factorization on the 316 x 316 lattice, the
            # clock 8 (200 ms against 25 ms); CG there made cold solves 1.6x and warm ones 8x slower
            return 0
        if self._cg_per_factor is None:
            # simplicial LDL': its L as it stands (a copy, a third of a symbolic pass's time)
            lp = np.asarray(self._factor.LD().indptr, np.int64)
            self._cg_per_factor = _cg_iterations_per_factorization(self.n, lp, len(self.indices) // 2)
        return int(PCG_SHARE_OF_FACTOR * self._cg_per_factor)

    def solve_pcg(self, w: np.ndarray, diag_extra: np.ndarray, rhs: np.ndarray, x0: np.ndarray, rtol: float,
                  max_iter: int) -> tuple[np.ndarray | None, int]:
        """(A D A^T + diag_extra) x = rhs by conjugate gradients from ``x0``, preconditioned by the
        last numeric factorization, which is kept. Near a Newton solution only a few conductances
        still move (pipes near zero flow): the preconditioned matrix is the identity but for a few
        eigenvalues, and CG needs about as many iterations, each two triangular solves instead of a
        factorization. Returns (x, iterations), or (None, max_iter) when the residual did not fall
        to ``rtol`` of its start in ``max_iter`` iterations."""
        if self.n == 0:
            return np.zeros(0), 0
        if self.backend in ("numba", "supernodal"):
            if not self._factored:
                return None, 0
            out = np.empty(self.n)
            if self.backend == "supernodal":
                factor = (self.lp, _NO_SUPERNODES, self.lx, _NO_VALUES, self.sup, self.rsp, self.ri, self.lxp)
            else:
                factor = (self.lp, self.li, self.lx, self.dinv, _NO_SUPERNODES, _NO_SUPERNODES, _NO_SUPERNODES,
                          _NO_SUPERNODES)
            used = laplacian_pcg(np.ascontiguousarray(w, dtype=np.float64),
                                 np.ascontiguousarray(diag_extra, dtype=np.float64), self.pinv, self.perm,
                                 self.pos_a, self.pos_b, self.pos_ab, self.cdiag, self.cp, self.ci, self.cx,
                                 *factor, np.ascontiguousarray(rhs, dtype=np.float64),
                                 np.ascontiguousarray(x0, dtype=np.float64), float(rtol), int(max_iter), out)
            return (out, used) if used >= 0 else (None, max_iter)
        if self.backend != "cholmod" or self._numeric is None:
            return None, 0
        self.assemble(w, diag_extra)
        m = self.matrix()
        x = np.array(x0, dtype=np.float64)
        r = np.ascontiguousarray(rhs - m @ x, dtype=np.float64)
        r0 = float(np.linalg.norm(r))
        if r0 == 0.0:
            return x, 0
        z = self._numeric(r)
        d = np.array(z, dtype=np.float64)
        rz = float(r @ z)
        for it in range(1, max_iter + 1):
            q = m @ d
            norm_r, ok = cg_step(x, r, d, q, rz)
            if not ok:
                break
            if norm_r <= rtol * r0:
                return x, it
            z = self._numeric(r)
            rz = cg_direction(r, np.ascontiguousarray(z, dtype=np.float64), d, rz)
        return None, max_iter

    def _factor_solve(self, m: sp.csc_matrix, rhs: np.ndarray) -> np.ndarray:
        if self.backend == "cholmod":
            if self._factor is None:
                # simplicial wins on pipe graphs up to tens of thousands of rows; beyond, let CHOLMOD
                # pick by flops per nonzero (supernodal pays off on meshes with much fill)
                self._factor = _cholmod_analyze(m, mode="auto" if self.n > SUPERNODAL_ROWS else "simplicial")
            self._factor.cholesky_inplace(m)
            self._numeric = self._factor
            return self._factor(rhs)
        from scipy.sparse.linalg import splu

        lu = splu(m, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        self._numeric = lu.solve
        return lu.solve(rhs)
