"""Supernodal (multifrontal) sparse Cholesky in numba, for the larger Newton matrices.

Why: on meshed networks of ~10k rows the up-looking simplicial factorization (``cholesky.py``,
CHOLMOD's simplicial LDL') spends its time on one-column updates with indirect addressing. Here
columns with (nearly) the same row structure are grouped into supernodes, as CHOLMOD and
Ng-Peyton do (with relaxed amalgamation: a small supernode joins its parent while the explicit
zeros this adds stay a small share), and each supernode is factorized as a dense frontal matrix
whose inner loops run over contiguous memory, so LLVM vectorizes them. Single-threaded, no BLAS.

The matrix comes in as in ``cholesky.py``: permuted by a fill-reducing order, upper triangle by
columns (``cp``, ``ci``, ``cx``). The order must be a postorder of the elimination tree (see
``etree_postorder``): the multifrontal method keeps the children's update matrices on a stack.

Layout of L: supernode s owns columns ``sup[s]:sup[s + 1]`` (k of them) and rows
``ri[rsp[s]:rsp[s + 1]]`` (m of them, its own columns first, sorted); its block is m x k, column
major, at ``lx[lxp[s]:]`` (the upper triangle of the k x k diagonal block is unused).
"""

import math

import numpy as np
from numba import njit

from pipetwin.kernels.cholesky import chol_analysis, etree_postorder, lower_by_columns  # noqa: F401

# CHOLMOD's default relaxed amalgamation (cholmod_common: nrelax, zrelax): a child joins its
# parent when the merged supernode has at most 4 columns, or at most 16 and < 80 % explicit zeros,
# or at most 48 and < 10 %, or any size and < 5 %
RELAX_COLUMNS = (4, 16, 48)
RELAX_ZEROS = (0.8, 0.1, 0.05)

# the dense kernels may reassociate and contract to FMAs, but not assume away NaN/inf: the
# positive-definiteness test must still see them
_FAST = {"contract", "reassoc", "nsz", "arcp"}


@njit(cache=True)
def _relaxed_partition(n, parent, lp, nrelax0, nrelax1, nrelax2, zrelax0, zrelax1, zrelax2):
    """First column of each supernode (``sup``, ns + 1 entries): chains j -> j + 1 of the
    elimination tree where column j's structure is column j + 1's plus j, then CHOLMOD's relaxed
    amalgamation of a last child into its parent."""
    count = np.empty(n, np.int64)
    for j in range(n):
        count[j] = lp[j + 1] - lp[j]
    first = np.empty(n + 1, np.int64)
    nf = 0
    for j in range(n):
        if j == 0 or not (parent[j - 1] == j and count[j] == count[j - 1] - 1):
            first[nf] = j
            nf += 1
    first[nf] = n
    fsnode = np.empty(n, np.int64)
    for s in range(nf):
        for j in range(first[s], first[s + 1]):
            fsnode[j] = s
    fparent = np.empty(nf, np.int64)
    ncols = np.empty(nf, np.int64)
    nrows = np.empty(nf, np.int64)
    zeros = np.zeros(nf, np.float64)
    for s in range(nf):
        last = first[s + 1] - 1
        fparent[s] = fsnode[parent[last]] if parent[last] >= 0 else -1
        ncols[s] = first[s + 1] - first[s]
        nrows[s] = count[first[s]]
    merged = np.zeros(nf, np.bool_)
    # from the top down: a group starting at j + 1 has already taken in its own parents
    for j in range(nf - 2, -1, -1):
        p = fparent[j]
        if p != j + 1:
            continue
        k0 = ncols[j]
        m0 = nrows[j]
        k1 = ncols[p]
        m1 = nrows[p]
        newz = k0 * (k0 + m1 - m0)
        ns = k0 + k1
        tot = zeros[j] + zeros[p] + newz
        if newz == 0:
            merge = True
        else:
            size = ns * (ns + 1) / 2.0 + ns * (m1 - k1)
            z = tot / size
            merge = (ns <= nrelax0 or (ns <= nrelax1 and z < zrelax0) or (ns <= nrelax2 and z < zrelax1)
                     or z < zrelax2)
        if merge:
            ncols[j] = ns
            nrows[j] = k0 + m1
            zeros[j] = tot
            merged[p] = True
    ns = 0
    for s in range(nf):
        if not merged[s]:
            ns += 1
    sup = np.empty(ns + 1, np.int64)
    t = 0
    for s in range(nf):
        if not merged[s]:
            sup[t] = first[s]
            t += 1
    sup[ns] = n
    return sup


@njit(cache=True)
def supernodal_symbolic(cp, ci, parent, lp, nrelax0=4, nrelax1=16, nrelax2=48, zrelax0=0.8, zrelax1=0.1,
                        zrelax2=0.05):
    """Supernodes, their row structures and the assembly maps, once per pattern.

    ``cp``/``ci``: the permuted upper-triangular pattern (diagonal included, any order within a
    column), in a postorder of its
    elimination tree ``parent``; ``lp``: L's column pointers (``cholesky.chol_symbolic``).
    Returns (sup, rsp, ri, rel, lxp, aptr, aidx, aoff, cptr, child, upd_off, front_size,
    stack_size): see ``supernodal_numeric``. Raises if the order is not a postorder."""
    lcp, lci, lpos = lower_by_columns(parent.shape[0], cp, ci)
    return supernodal_symbolic_lower(cp, ci, lcp, lci, lpos, parent, lp, nrelax0, nrelax1, nrelax2, zrelax0, zrelax1,
                                     zrelax2)


@njit(cache=True)
def supernodal_symbolic_lower(cp, ci, lcp, lci, lpos, parent, lp, nrelax0=4, nrelax1=16, nrelax2=48,
                              zrelax0=0.8, zrelax1=0.1, zrelax2=0.05):
    """``supernodal_symbolic`` from the lower pattern by columns with each entry's position in the
    upper one (``cholesky.lower_by_columns``, which ``cholesky.chol_analysis`` has built already).

    Row structures without sorting (CHOLMOD's super_symbolic): rows i in ascending order, each
    A(i, k) walks up the supernodal tree from k's supernode, adding i to every supernode it meets
    until one has i already (or holds column i), so every list comes out sorted."""
    n = parent.shape[0]
    sup = _relaxed_partition(n, parent, lp, nrelax0, nrelax1, nrelax2, zrelax0, zrelax1, zrelax2)
    ns = sup.shape[0] - 1
    snode = np.empty(n, np.int64)
    for s in range(ns):
        for j in range(sup[s], sup[s + 1]):
            snode[j] = s
    sparent = np.full(ns, -1, np.int64)
    rsp = np.zeros(ns + 1, np.int64)
    for s in range(ns):
        last = sup[s + 1] - 1
        if parent[last] >= 0:
            sparent[s] = snode[parent[last]]
        # rows: its columns, then column ``last``'s structure below the diagonal
        rsp[s + 1] = rsp[s] + (sup[s + 1] - sup[s]) + (lp[last + 1] - lp[last] - 1)
    # children of each supernode, ascending
    cptr = np.zeros(ns + 1, np.int64)
    for s in range(ns):
        if sparent[s] >= 0:
            cptr[sparent[s] + 1] += 1
    for s in range(ns):
        cptr[s + 1] += cptr[s]
    child = np.empty(cptr[ns], np.int64)
    cfill = cptr[:ns].copy()
    for s in range(ns):
        p = sparent[s]
        if p >= 0:
            child[cfill[p]] = s
            cfill[p] += 1
    # row structures: own columns, then the rows below by row subtrees (row i's entries A(i, k),
    # k < i, are the upper pattern's column i)
    ri = np.empty(rsp[ns], np.int64)
    q = np.empty(ns, np.int64)
    for s in range(ns):
        t = rsp[s]
        for j in range(sup[s], sup[s + 1]):
            ri[t] = j
            t += 1
        q[s] = t
    mark = np.full(ns, -1, np.int64)
    for i in range(n):
        mark[snode[i]] = i
        for p in range(cp[i], cp[i + 1]):
            t = snode[ci[p]]
            while t >= 0 and mark[t] != i:
                mark[t] = i
                if q[t] < rsp[t + 1]:
                    ri[q[t]] = i
                q[t] += 1
                t = sparent[t]
    for s in range(ns):
        if q[s] != rsp[s + 1]:
            raise ValueError("supernodal_symbolic: row structure does not match L's column counts")
    # relative maps (each update row's position in the parent's rows) and A's entries: the lower
    # entry (k, i) of column i in supernode s = snode[i] goes to the front's column i - f, row of k
    rel = np.full(rsp[ns], -1, np.int64)
    loc = np.empty(n, np.int64)
    aptr = np.zeros(ns + 1, np.int64)
    for s in range(ns):
        aptr[s + 1] = aptr[s] + (lcp[sup[s + 1]] - lcp[sup[s]])
    aidx = np.empty(aptr[ns], np.int64)
    aoff = np.empty(aptr[ns], np.int64)
    for s in range(ns):
        r0 = rsp[s]
        m = rsp[s + 1] - r0
        f = sup[s]
        a = aptr[s]
        if sup[s + 1] - f == 1 and cptr[s] == cptr[s + 1]:
            # a one-column leaf (most supernodes of a mesh): its rows are A's column f's, in order
            for p in range(lcp[f], lcp[f + 1]):
                aidx[a] = lpos[p]
                aoff[a] = p - lcp[f]
                a += 1
            continue
        for p in range(r0, rsp[s + 1]):
            loc[ri[p]] = p - r0
        for t in range(cptr[s], cptr[s + 1]):
            c = child[t]
            for p in range(rsp[c] + (sup[c + 1] - sup[c]), rsp[c + 1]):
                rel[p] = loc[ri[p]]
        for i in range(f, sup[s + 1]):
            for p in range(lcp[i], lcp[i + 1]):
                aidx[a] = lpos[p]
                aoff[a] = (i - f) * m + loc[lci[p]]
                a += 1
    # L's blocks
    lxp = np.zeros(ns + 1, np.int64)
    front_size = 0
    for s in range(ns):
        m = rsp[s + 1] - rsp[s]
        lxp[s + 1] = lxp[s] + m * (sup[s + 1] - sup[s])
        front_size = max(front_size, m * m)
    # the update-matrix stack: in a postorder a supernode's children are the last ones pushed
    upd_off = np.zeros(ns, np.int64)
    top = 0
    stack_size = 0
    for s in range(ns):
        if cptr[s + 1] > cptr[s]:
            low = top
            total = 0
            for t in range(cptr[s], cptr[s + 1]):
                c = child[t]
                u = rsp[c + 1] - rsp[c] - (sup[c + 1] - sup[c])
                total += u * u
                low = min(low, upd_off[c])
            if low + total != top:
                raise ValueError("supernodal_symbolic: the order is not a postorder of the elimination tree")
            top = low
        u = rsp[s + 1] - rsp[s] - (sup[s + 1] - sup[s])
        upd_off[s] = top
        top += u * u
        stack_size = max(stack_size, top)
    return sup, rsp, ri, rel, lxp, aptr, aidx, aoff, cptr, child, upd_off, front_size, stack_size


@njit(cache=True, fastmath=_FAST)
def _panel(front, m, k):
    """Cholesky of the first k columns of the m x m front (column major, lower): left-looking,
    each column updated by the ones before it, four at a time. False if not positive definite.
    (The inner loops run over zero-based views: with offsets in the index LLVM does not vectorize.)"""
    for j in range(k):
        cj = j * m
        n = m - j
        dst = front[cj + j:cj + m]
        p = 0
        while p + 4 <= j:
            b0 = p * m
            b1 = b0 + m
            b2 = b1 + m
            b3 = b2 + m
            c0 = front[b0 + j:b0 + m]
            c1 = front[b1 + j:b1 + m]
            c2 = front[b2 + j:b2 + m]
            c3 = front[b3 + j:b3 + m]
            l0 = c0[0]
            l1 = c1[0]
            l2 = c2[0]
            l3 = c3[0]
            for r in range(n):
                dst[r] -= c0[r] * l0 + c1[r] * l1 + c2[r] * l2 + c3[r] * l3
            p += 4
        while p < j:
            b0 = p * m
            c0 = front[b0 + j:b0 + m]
            l0 = c0[0]
            for r in range(n):
                dst[r] -= c0[r] * l0
            p += 1
        if not _pivot(dst):
            return False
    return True


@njit(cache=True, fastmath=_FAST, inline="always")
def _pivot(col):
    """Column j of L from its updated entries: divide by the square root of the diagonal, False
    when that is not positive (NaN included: the fast-math flags keep NaN checks)."""
    d = col[0]
    if not d > 0.0:
        return False
    d = math.sqrt(d)
    col[0] = d
    inv = 1.0 / d
    for r in range(1, col.shape[0]):
        col[r] *= inv
    return True


@njit(cache=True, fastmath=_FAST)
def _schur(front, m, k, stack, uo):
    """The update matrix F22 - L21 L21^T (u = m - k square, column major, lower) into
    ``stack[uo:]``: two of its columns at a time, each pass over four columns of L21 (loaded once
    for both), so the inner loop does eight FMAs per six loads and two stores."""
    u = m - k
    j = 0
    while j + 2 <= u:
        n = u - j - 1
        d0 = stack[uo + j * u + j:uo + (j + 1) * u]
        d1 = stack[uo + (j + 1) * u + j + 1:uo + (j + 2) * u]
        s0 = front[(k + j) * m + k + j:(k + j + 1) * m]
        s1 = front[(k + j + 1) * m + k + j + 1:(k + j + 2) * m]
        d0[0] = s0[0]
        for i in range(n):
            d0[i + 1] = s0[i + 1]
            d1[i] = s1[i]
        t0 = d0[1:]
        p = 0
        while p + 4 <= k:
            b0 = p * m + k + j
            a0 = front[b0]
            a1 = front[b0 + m]
            a2 = front[b0 + 2 * m]
            a3 = front[b0 + 3 * m]
            e0 = front[b0 + 1]
            e1 = front[b0 + m + 1]
            e2 = front[b0 + 2 * m + 1]
            e3 = front[b0 + 3 * m + 1]
            d0[0] -= a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3
            c0 = front[b0 + 1:b0 + 1 + n]
            c1 = front[b0 + m + 1:b0 + m + 1 + n]
            c2 = front[b0 + 2 * m + 1:b0 + 2 * m + 1 + n]
            c3 = front[b0 + 3 * m + 1:b0 + 3 * m + 1 + n]
            for i in range(n):
                x0 = c0[i]
                x1 = c1[i]
                x2 = c2[i]
                x3 = c3[i]
                t0[i] -= x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3
                d1[i] -= x0 * e0 + x1 * e1 + x2 * e2 + x3 * e3
            p += 4
        while p < k:
            b0 = p * m + k + j
            a0 = front[b0]
            e0 = front[b0 + 1]
            d0[0] -= a0 * a0
            c0 = front[b0 + 1:b0 + 1 + n]
            for i in range(n):
                t0[i] -= c0[i] * a0
                d1[i] -= c0[i] * e0
            p += 1
        j += 2
    if j < u:                                  # the last column: one entry
        v = front[(k + j) * m + k + j]
        for p in range(k):
            x = front[p * m + k + j]
            v -= x * x
        stack[uo + j * u + j] = v


@njit(cache=True)
def _leaf_column(cx, col, aidx, aoff, stack, uo):
    """A supernode of one column and no children: L's column from C's entries (``aoff`` are row
    positions here), its update matrix -l l^T below the diagonal into ``stack[uo:]``."""
    m = col.shape[0]
    for r in range(m):
        col[r] = 0.0
    for q in range(aidx.shape[0]):
        col[aoff[q]] += cx[aidx[q]]
    if not _pivot(col):
        return False
    u = m - 1
    for j in range(u):
        lj = col[1 + j]
        for i in range(j, u):
            stack[uo + j * u + i] = -col[1 + i] * lj
    return True


@njit(cache=True)
def supernodal_numeric(cx, sup, rsp, rel, lxp, aptr, aidx, aoff, cptr, child, upd_off, lx, front, stack):
    """L L^T = C numerically, supernode by supernode in postorder: assemble C's entries and the
    children's update matrices into the dense front, factorize its pivot columns, push its own
    update matrix. ``front`` and ``stack`` are work arrays of the sizes ``supernodal_symbolic``
    gives. Returns False when C is not positive definite (a pivot <= 0 or not finite)."""
    ns = sup.shape[0] - 1
    for s in range(ns):
        f = sup[s]
        k = sup[s + 1] - f
        m = rsp[s + 1] - rsp[s]
        if k == 1 and cptr[s] == cptr[s + 1]:
            # a one-column leaf (most supernodes of a mesh): no front, its column of C straight into
            # L and the update matrix an outer product
            if not _leaf_column(cx, lx[lxp[s]:lxp[s] + m], aidx[aptr[s]:aptr[s + 1]], aoff[aptr[s]:aptr[s + 1]],
                                stack, upd_off[s]):
                return False
            continue
        for j in range(m):
            cj = j * m
            for r in range(j, m):
                front[cj + r] = 0.0
        for q in range(aptr[s], aptr[s + 1]):
            front[aoff[q]] += cx[aidx[q]]
        for t in range(cptr[s], cptr[s + 1]):
            c = child[t]
            kc = sup[c + 1] - sup[c]
            rb = rsp[c] + kc
            u = rsp[c + 1] - rb
            uo = upd_off[c]
            rows = rel[rb:rb + u]
            for j in range(u):
                col = front[rows[j] * m:(rows[j] + 1) * m]
                upd = stack[uo + j * u:uo + (j + 1) * u]
                for i in range(j, u):
                    col[rows[i]] += upd[i]
        if not _panel(front, m, k):
            return False
        lo = lxp[s]
        for q in range(m * k):
            lx[lo + q] = front[q]
        if m > k:
            _schur(front, m, k, stack, upd_off[s])
    return True


@njit(cache=True, inline="always")
def _block(sup, rsp, lxp, s):
    """Supernode s: its first column, width k, first slot in the row lists, rows m, rows below its
    diagonal block (m - k) and first entry in ``lx``."""
    f = sup[s]
    k = sup[s + 1] - f
    r0 = rsp[s]
    m = rsp[s + 1] - r0
    return f, k, r0, m, m - k, lxp[s]


@njit(cache=True, fastmath=_FAST)
def supernodal_solve(sup, rsp, ri, lxp, lx, x):
    """x <- L^-T L^-1 x in place (permuted space). One-column supernodes (most of a mesh's) update
    and read their rows of x straight through the row list; wider ones gather the rows below their
    diagonal block into (and scatter them from) a contiguous buffer once, so the inner loops over
    the block's columns vectorize."""
    ns = sup.shape[0] - 1
    buf = np.empty(x.shape[0])
    for s in range(ns):
        f, k, r0, m, u, b = _block(sup, rsp, lxp, s)
        if k == 1:
            xj = x[f] / lx[b]
            x[f] = xj
            rows = ri[r0 + 1:r0 + m]
            col = lx[b + 1:b + m]
            for r in range(u):
                x[rows[r]] -= col[r] * xj
            continue
        below = buf[:u]
        for r in range(u):
            below[r] = 0.0
        for j in range(k):
            cj = b + j * m
            xj = x[f + j] / lx[cj + j]
            x[f + j] = xj
            for r in range(j + 1, k):
                x[f + r] -= lx[cj + r] * xj
            col = lx[cj + k:cj + m]
            for r in range(u):
                below[r] += col[r] * xj
        rows = ri[r0 + k:r0 + m]
        for r in range(u):
            x[rows[r]] -= below[r]
    for s in range(ns - 1, -1, -1):
        f, k, r0, m, u, b = _block(sup, rsp, lxp, s)
        if k == 1:
            rows = ri[r0 + 1:r0 + m]
            col = lx[b + 1:b + m]
            acc = 0.0
            for r in range(u):
                acc += col[r] * x[rows[r]]
            x[f] = (x[f] - acc) / lx[b]
            continue
        below = buf[:u]
        rows = ri[r0 + k:r0 + m]
        for r in range(u):
            below[r] = x[rows[r]]
        for j in range(k - 1, -1, -1):
            cj = b + j * m
            v = x[f + j]
            for r in range(j + 1, k):
                v -= lx[cj + r] * x[f + r]
            col = lx[cj + k:cj + m]
            acc = 0.0
            for r in range(u):
                acc += col[r] * below[r]
            x[f + j] = (v - acc) / lx[cj + j]
