"""Scatter per-link conductances into a fixed sparse pattern (the GGA's A D A^T).

The pattern is built once per topology; each Newton step only rewrites the values array, so the
sparse factorization can reuse its symbolic analysis.

The fused steps here compile in the factorization and solve kernels of ``cholesky.py`` and
``supernodal.py``; numba's cache would keep their old copies after those files change, so
``kernels/__init__.py`` drops the folder's cache whenever any kernel source changes.
"""

import numpy as np
from numba import njit

from pipetwin.kernels.cholesky import _sym_upper_residual, chol_numeric, chol_solve, scatter_links
from pipetwin.kernels.supernodal import supernodal_numeric, supernodal_solve


@njit(cache=True)
def scatter_laplacian(w, pos_ii, pos_jj, pos_ij, pos_ji, diag_extra, diag_pos, out):
    """out[:] = sum over links of w_k (e_i - e_j)(e_i - e_j)^T restricted to free nodes, plus
    ``diag_extra`` on the diagonal. A position of -1 means the node is fixed (not in the matrix)."""
    out[:] = 0.0
    for k in range(w.shape[0]):
        wk = w[k]
        if pos_ii[k] >= 0:
            out[pos_ii[k]] += wk
        if pos_jj[k] >= 0:
            out[pos_jj[k]] += wk
        if pos_ij[k] >= 0:
            out[pos_ij[k]] -= wk
            out[pos_ji[k]] -= wk
    for i in range(diag_extra.shape[0]):
        out[diag_pos[i]] += diag_extra[i]


@njit(cache=True)
def csc_positions(indptr, indices, rows, cols, out):
    """Position in a CSC matrix's data array of each (row, col) entry; -1 where row or col < 0."""
    for k in range(rows.shape[0]):
        r = rows[k]
        c = cols[k]
        out[k] = -1
        if r < 0 or c < 0:
            continue
        lo = indptr[c]
        hi = indptr[c + 1]
        while lo < hi:                      # binary search: indices are sorted within a column
            mid = (lo + hi) // 2
            if indices[mid] < r:
                lo = mid + 1
            else:
                hi = mid
        out[k] = lo


@njit(cache=True)
def laplacian_step(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, rp, rj, lp, li, lx,
                   dinv, work, cw, rhs, x0, refactor, out):
    """One linear step of the Newton solvers without leaving compiled code: scatter conductances
    ``w`` (and ``diag_extra``) into the permuted upper triangle ``cx``, form the residual
    rhs - C x0, refactor L (unless ``refactor`` is False: a chord step with the last L), solve for
    the correction and write x0 + correction to ``out`` (original row order). The correction form
    keeps rounding proportional to the step, not to |x| (conductances span many decades).
    Returns False when C is not positive definite."""
    n = perm.shape[0]
    _fill(w, diag_extra, pinv, pos_a, pos_b, pos_ab, cdiag, cx)
    if refactor:
        if not chol_numeric(n, cp, ci, cx, rp, rj, lp, li, lx, dinv, work, cw):
            return False
    xp, res = _permuted_residual(perm, cp, ci, cx, rhs, x0)
    chol_solve(n, lp, li, lx, dinv, res)
    for j in range(n):
        out[perm[j]] = xp[j] + res[j]
    return True


@njit(cache=True)
def laplacian_step_supernodal(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, sup, rsp, ri, rel,
                              lxp, aptr, aidx, aoff, cptr, child, upd_off, lx, front, stack, rhs, x0, refactor, out):
    """``laplacian_step`` with the supernodal factorization of ``supernodal.py`` (its symbolic
    arrays, ``lx`` and the work arrays ``front`` and ``stack``). Returns False when C is not
    positive definite."""
    n = perm.shape[0]
    _fill(w, diag_extra, pinv, pos_a, pos_b, pos_ab, cdiag, cx)
    if refactor:
        if not supernodal_numeric(cx, sup, rsp, rel, lxp, aptr, aidx, aoff, cptr, child, upd_off, lx, front, stack):
            return False
    xp, res = _permuted_residual(perm, cp, ci, cx, rhs, x0)
    supernodal_solve(sup, rsp, ri, lxp, lx, res)
    for j in range(n):
        out[perm[j]] = xp[j] + res[j]
    return True


@njit(cache=True)
def _fill(w, diag_extra, pinv, pos_a, pos_b, pos_ab, cdiag, cx):
    """The permuted matrix's values from the link conductances ``w`` plus the pinned diagonal."""
    scatter_links(w, pos_a, pos_b, pos_ab, cx)
    for i in range(diag_extra.shape[0]):
        cx[cdiag[pinv[i]]] += diag_extra[i]


@njit(cache=True)
def _permuted_residual(perm, cp, ci, cx, rhs, x0):
    """x0 in the factorization's row order, and rhs - C x0 there (in place over the permuted rhs)."""
    n = perm.shape[0]
    xp = np.empty(n)
    r = np.empty(n)
    for j in range(n):
        xp[j] = x0[perm[j]]
        r[j] = rhs[perm[j]]
    _sym_upper_residual(n, cp, ci, cx, r, xp, r)
    return xp, r


@njit(cache=True)
def _sym_upper_matvec(n, cp, ci, cx, x, out):
    """out = C x for symmetric C stored as its upper triangle."""
    for i in range(n):
        out[i] = 0.0
    for k in range(n):
        xk = x[k]
        acc = 0.0
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            v = cx[p]
            out[i] += v * xk
            if i != k:
                acc += v * x[i]
        out[k] += acc


@njit(cache=True)
def _precondition(z, lp, li, lx, dinv, sup, rsp, ri, lxp):
    """z <- L^-T L^-1 z with the simplicial L (``lp``, ``li``, ``lx``, ``dinv``) or, when ``sup``
    is given (not empty), the supernodal one (``sup``, ``rsp``, ``ri``, ``lxp``, ``lx``)."""
    if sup.shape[0] > 0:
        supernodal_solve(sup, rsp, ri, lxp, lx, z)
    else:
        chol_solve(z.shape[0], lp, li, lx, dinv, z)


@njit(cache=True)
def laplacian_pcg(w, diag_extra, pinv, perm, pos_a, pos_b, pos_ab, cdiag, cp, ci, cx, lp, li, lx, dinv, sup, rsp, ri,
                  lxp, rhs, x0, rtol, max_iter, out):
    """The linear step of ``laplacian_step`` without a new factorization: conjugate gradients on
    the matrix of conductances ``w``, preconditioned by the last factorization (L, from nearby
    conductances: simplicial, or supernodal when ``sup`` is not empty, see ``_precondition``),
    from ``x0``. Stops when the residual's 2-norm has fallen to ``rtol`` of its
    start. Returns the iterations used, or -1 if ``max_iter`` did not reach it (``out`` is then
    undefined): each iteration costs two triangular solves, so a caller caps it below what a
    factorization costs."""
    n = perm.shape[0]
    _fill(w, diag_extra, pinv, pos_a, pos_b, pos_ab, cdiag, cx)
    xp, r = _permuted_residual(perm, cp, ci, cx, rhs, x0)
    r0 = 0.0
    for j in range(n):
        r0 += r[j] * r[j]
    r0 = np.sqrt(r0)
    used = 0
    if r0 > 0.0:
        z = r.copy()
        _precondition(z, lp, li, lx, dinv, sup, rsp, ri, lxp)
        d = z.copy()
        q = np.empty(n)
        rz = 0.0
        for j in range(n):
            rz += r[j] * z[j]
        used = -1
        for it in range(1, max_iter + 1):
            _sym_upper_matvec(n, cp, ci, cx, d, q)
            dq = 0.0
            for j in range(n):
                dq += d[j] * q[j]
            if not dq > 0.0:
                break
            alpha = rz / dq
            rr = 0.0
            for j in range(n):
                xp[j] += alpha * d[j]
                r[j] -= alpha * q[j]
                rr += r[j] * r[j]
            if np.sqrt(rr) <= rtol * r0:
                used = it
                break
            for j in range(n):
                z[j] = r[j]
            _precondition(z, lp, li, lx, dinv, sup, rsp, ri, lxp)
            rz_new = 0.0
            for j in range(n):
                rz_new += r[j] * z[j]
            beta = rz_new / rz
            rz = rz_new
            for j in range(n):
                d[j] = z[j] + beta * d[j]
        if used < 0:
            return -1
    for j in range(n):
        out[perm[j]] = xp[j]
    return used


@njit(cache=True)
def cg_step(x, r, d, q, rz):
    """One conjugate-gradient update given q = C d: x += alpha d, r -= alpha q with
    alpha = rz / (d . q). Returns (|r|_2, False if d . q is not positive: C not positive definite
    along d)."""
    dq = 0.0
    for j in range(d.shape[0]):
        dq += d[j] * q[j]
    if not dq > 0.0:
        return 0.0, False
    alpha = rz / dq
    rr = 0.0
    for j in range(d.shape[0]):
        x[j] += alpha * d[j]
        r[j] -= alpha * q[j]
        rr += r[j] * r[j]
    return np.sqrt(rr), True


@njit(cache=True)
def cg_direction(r, z, d, rz):
    """d <- z + (r . z / rz) d, the next conjugate direction from the preconditioned residual z.
    Returns r . z (the next rz)."""
    rz_new = 0.0
    for j in range(r.shape[0]):
        rz_new += r[j] * z[j]
    beta = rz_new / rz
    for j in range(r.shape[0]):
        d[j] = z[j] + beta * d[j]
    return rz_new
