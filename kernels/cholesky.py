"""Sparse Cholesky of the GGA matrices (CSparse's up-looking cs_chol) in numba, shared by the water
and gas solvers so their whole Newton loops can stay in compiled code.

The fill-reducing order comes from outside (CHOLMOD's AMD, computed once per topology); the
symbolic pass (elimination tree, L's column counts and row patterns) is done once per pattern and
each Newton step only refactors numerically.
"""

import math

import numpy as np
from numba import njit


# -- sparse Cholesky of the GGA matrix (CSparse's up-looking cs_chol) ---------------------------
# The matrix A over the free rows is stored permuted (fill-reducing order ``perm``: new -> old
# row) as its upper triangle by columns (``cp``, ``ci``, ``cx``). Each trial rewrites ``cx``,
# factorizes numerically into L (``lp`` from the symbolic pass, ``li``/``lx`` filled in) and
# solves, all without leaving compiled code.
@njit(cache=True)
def _ereach(cp, ci, k, parent, s, mark):
    """Nonzero pattern of row k of L (the reach of column k's entries in the elimination tree),
    in s[top:n] in topological order. ``mark`` must be all False on entry and is left so."""
    n = parent.shape[0]
    top = n
    mark[k] = True
    for p in range(cp[k], cp[k + 1]):
        i = ci[p]
        if i > k:
            continue
        ln = 0
        while not mark[i]:
            s[ln] = i
            ln += 1
            mark[i] = True
            i = parent[i]
        while ln > 0:
            top -= 1
            ln -= 1
            s[top] = s[ln]
    for p in range(top, n):
        mark[s[p]] = False
    mark[k] = False
    return top


@njit(cache=True)
def etree(n, cp, ci, parent):
    """Elimination tree (``parent``, -1 at roots) of the upper-triangular CSC pattern (Liu's
    algorithm with path compression, CSparse's cs_etree)."""
    ancestor = np.empty(n, np.int64)
    for k in range(n):
        parent[k] = -1
        ancestor[k] = -1
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            while i != -1 and i < k:
                inext = ancestor[i]
                ancestor[i] = k
                if inext == -1:
                    parent[i] = k
                i = inext


@njit(cache=True)
def etree_postorder(parent):
    """A postorder of the elimination forest (CSparse's cs_post): children before parents and each
    subtree contiguous. Reordering by it keeps L's fill and gives the multifrontal stack order."""
    n = parent.shape[0]
    head = np.full(n, -1, np.int64)
    nxt = np.empty(n, np.int64)
    for j in range(n - 1, -1, -1):
        p = parent[j]
        if p >= 0:
            nxt[j] = head[p]
            head[p] = j
    post = np.empty(n, np.int64)
    stack = np.empty(n, np.int64)
    k = 0
    for root in range(n):
        if parent[root] != -1:
            continue
        top = 0
        stack[0] = root
        while top >= 0:
            p = stack[top]
            i = head[p]
            if i == -1:
                top -= 1
                post[k] = p
                k += 1
            else:
                head[p] = nxt[i]
                top += 1
                stack[top] = i
    return post


@njit(cache=True)
def lower_by_columns(n, cp, ci):
    """The lower triangle's pattern by columns (the transpose of the upper ``cp``/``ci``), diagonal
    first: column j's rows, ascending, are ``lci[lcp[j]:lcp[j + 1]]``, and ``lpos`` gives each
    entry's position in ``ci`` (the supernodal assembly map and the column counts share it)."""
    lcp = np.zeros(n + 1, np.int64)
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            lcp[ci[p] + 1] += 1
    for j in range(n):
        lcp[j + 1] += lcp[j]
    lci = np.empty(lcp[n], np.int64)
    lpos = np.empty(lcp[n], np.int64)
    fill = lcp[:n].copy()
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            q = fill[i]
            lci[q] = k
            lpos[q] = p
            fill[i] = q + 1
    return lcp, lci, lpos


@njit(cache=True)
def column_counts(n, lcp, lci, parent, post, lp):
    """L's column pointers ``lp`` (n + 1) from the lower pattern by columns (``lower_by_columns``), the elimination tree and a postorder of it, in O(nnz(A)) near enough:
    Gilbert, Ng and Peyton's skeleton-matrix count with least common ancestors by path-compressed
    disjoint sets (CSparse's cs_counts and cs_leaf), instead of walking every row of L. Returns nnz(L)."""
    ancestor = np.empty(n, np.int64)
    maxfirst = np.full(n, -1, np.int64)
    prevleaf = np.full(n, -1, np.int64)
    first = np.full(n, -1, np.int64)
    delta = np.empty(n, np.int64)
    for k in range(n):
        j = post[k]
        delta[j] = 1 if first[j] == -1 else 0      # 1 if j is a leaf
        while j != -1 and first[j] == -1:
            first[j] = k
            j = parent[j]
    for i in range(n):
        ancestor[i] = i
    for k in range(n):
        j = post[k]
        if parent[j] != -1:
            delta[parent[j]] -= 1                   # j is not a root
        for p in range(lcp[j], lcp[j + 1]):
            i = lci[p]
            if i <= j or first[j] <= maxfirst[i]:
                continue                             # the diagonal, or j not a leaf of row i's subtree
            maxfirst[i] = first[j]
            jprev = prevleaf[i]
            prevleaf[i] = j
            delta[j] += 1                            # A(i, j) is in the skeleton
            if jprev != -1:                          # a later leaf: less the overlap at lca(jprev, j)
                q = jprev
                while q != ancestor[q]:
                    q = ancestor[q]
                s = jprev
                while s != q:
                    sp = ancestor[s]
                    ancestor[s] = q
                    s = sp
                delta[q] -= 1
        if parent[j] != -1:
            ancestor[j] = parent[j]
    for j in range(n):                               # sum the deltas up the tree (parent[j] > j)
        if parent[j] != -1:
            delta[parent[j]] += delta[j]
    return _column_pointers(delta, lp)


@njit(cache=True, inline="always")
def _column_pointers(count, lp):
    """L's column pointers from its column counts; returns nnz(L)."""
    lp[0] = 0
    for k in range(count.shape[0]):
        lp[k + 1] = lp[k] + count[k]
    return lp[count.shape[0]]


@njit(cache=True)
def chol_symbolic(n, cp, ci, parent, lp):
    """Elimination tree (``parent``) of the upper-triangular CSC pattern and L's column
    pointers ``lp`` (n + 1). Returns nnz(L)."""
    etree(n, cp, ci, parent)
    lcp, lci, _ = lower_by_columns(n, cp, ci)
    return column_counts(n, lcp, lci, parent, etree_postorder(parent), lp)


@njit(cache=True)
def chol_analysis(n, cp, ci):
    """The symbolic pass in one call: elimination tree, a postorder of it, the lower pattern by
    columns (``lower_by_columns``) and L's column pointers. Returns (parent, post, lp, lcp, lci, lpos)."""
    parent = np.empty(n, np.int64)
    etree(n, cp, ci, parent)
    post = etree_postorder(parent)
    lcp, lci, lpos = lower_by_columns(n, cp, ci)
    lp = np.empty(n + 1, np.int64)
    column_counts(n, lcp, lci, parent, post, lp)
    return parent, post, lp, lcp, lci, lpos


@njit(cache=True)
def lower_pattern(n, link_i, link_j):
    """The lower triangle (diagonal included) of the symmetric pattern of links (i, j) between rows
    (-1: a fixed end, no entry), by columns, rows ascending and without duplicates: what CHOLMOD's
    AMD reads (it ignores the upper triangle of a symmetric matrix). Returns (indptr, indices),
    int32 (fewer than 2^31 entries assumed: a network of a billion links would not get here)."""
    m = link_i.shape[0]
    # bucket the links by their larger end (the row), then deal them out to the columns in row order
    rcnt = np.zeros(n + 1, np.int64)
    for k in range(m):
        a = link_i[k]
        b = link_j[k]
        if a >= 0 and b >= 0 and a != b:
            rcnt[max(a, b) + 1] += 1
    for r in range(n):
        rcnt[r + 1] += rcnt[r]
    rcol = np.empty(rcnt[n], np.int64)
    rfill = rcnt[:n].copy()
    ccnt = np.ones(n + 1, np.int64)             # the diagonal
    ccnt[0] = 0
    for k in range(m):
        a = link_i[k]
        b = link_j[k]
        if a >= 0 and b >= 0 and a != b:
            hi = max(a, b)
            lo = min(a, b)
            rcol[rfill[hi]] = lo
            rfill[hi] += 1
            ccnt[lo + 1] += 1
    for c in range(n):
        ccnt[c + 1] += ccnt[c]
    indices = np.empty(ccnt[n], np.int64)
    fill = ccnt[:n].copy()
    for c in range(n):
        indices[fill[c]] = c
        fill[c] += 1
    for r in range(n):
        for q in range(rcnt[r], rcnt[r + 1]):
            c = rcol[q]
            if indices[fill[c] - 1] != r:      # a parallel link: the entry is there already
                indices[fill[c]] = r
                fill[c] += 1
    # compact the slots parallel links left unused; int32, CHOLMOD's and SciPy's index type (SciPy
    # checks and downcasts int64 indices on every matrix built: 0.2-0.4 ms at 10k rows)
    indptr = np.zeros(n + 1, np.int32)
    for c in range(n):
        indptr[c + 1] = indptr[c] + (fill[c] - ccnt[c])
    out = np.empty(indptr[n], np.int32)
    for c in range(n):
        out[indptr[c]:indptr[c + 1]] = indices[ccnt[c]:fill[c]]
    return indptr, out


@njit(cache=True)
def chol_row_patterns(n, cp, ci, parent, lp, s, mark):
    """The pattern of every row of L (its ereach), stored once: row k's off-diagonal columns are
    rj[rp[k]:rp[k + 1]] in the order the numeric factorization visits them."""
    rp = np.zeros(n + 1, np.int64)
    rj = np.empty(max(lp[n] - n, 0), np.int64)
    for k in range(n):
        top = _ereach(cp, ci, k, parent, s, mark)
        q = rp[k]
        for t in range(top, n):
            rj[q] = s[t]
            q += 1
        rp[k + 1] = q
    return rp, rj


@njit(cache=True)
def chol_numeric(n, cp, ci, cx, rp, rj, lp, li, lx, dinv, x, c):
    """L L^T = C numerically (CSparse's up-looking cs_chol, with the row patterns of L known).
    ``dinv`` gets 1 / diag(L). Returns False when C is not positive definite."""
    for k in range(n):
        c[k] = lp[k]
        x[k] = 0.0
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            x[ci[p]] += cx[p]
        d = x[k]
        x[k] = 0.0
        for t in range(rp[k], rp[k + 1]):
            i = rj[t]
            lki = x[i] * dinv[i]
            x[i] = 0.0
            for p in range(lp[i] + 1, c[i]):
                x[li[p]] -= lx[p] * lki
            d -= lki * lki
            p = c[i]
            c[i] += 1
            li[p] = k
            lx[p] = lki
        if not d > 0.0:
            return False
        p = c[k]
        c[k] += 1
        li[p] = k
        lx[p] = math.sqrt(d)
        dinv[k] = 1.0 / lx[p]
    return True


@njit(cache=True)
def chol_solve(n, lp, li, lx, dinv, x):
    """x <- L^-T L^-1 x in place (permuted space)."""
    for j in range(n):
        xj = x[j] * dinv[j]
        x[j] = xj
        for p in range(lp[j] + 1, lp[j + 1]):
            x[li[p]] -= lx[p] * xj
    for j in range(n - 1, -1, -1):
        v = x[j]
        for p in range(lp[j] + 1, lp[j + 1]):
            v -= lx[p] * x[li[p]]
        x[j] = v * dinv[j]


@njit(cache=True)
def _sym_upper_residual(n, cp, ci, cx, b, x, res):
    """res = b - C x for symmetric C stored as its upper triangle (``res`` may be ``b`` itself)."""
    for i in range(n):
        res[i] = b[i]
    for k in range(n):
        for p in range(cp[k], cp[k + 1]):
            i = ci[p]
            v = cx[p]
            res[i] -= v * x[k]
            if i != k:
                res[k] -= v * x[i]


@njit(cache=True)
def gga_matrix_pattern(n1, n2, row, excluded_link, pinv, n):
    """Upper-triangular CSC pattern of the permuted GGA matrix and, per link, the positions of
    its entries: diagonal of the new row of each free end and the off-diagonal (-1 if none)."""
    m = n1.shape[0]
    cnt = np.ones(n, np.int64)                 # the diagonal
    for k in range(m):
        if excluded_link[k]:
            continue
        ra = row[n1[k]]
        rb = row[n2[k]]
        if ra >= 0 and rb >= 0 and ra != rb:
            a = pinv[ra]
            b = pinv[rb]
            cnt[max(a, b)] += 1
    cp = np.zeros(n + 1, np.int64)
    for j in range(n):
        cp[j + 1] = cp[j] + cnt[j]
    ci = np.full(cp[n], -1, np.int64)
    fill = cp[:n].copy()
    diag_pos = np.empty(n, np.int64)
    for j in range(n):                         # diagonal first in each column
        diag_pos[j] = fill[j]
        ci[fill[j]] = j
        fill[j] += 1
    pos_a = np.full(m, -1, np.int64)
    pos_b = np.full(m, -1, np.int64)
    pos_ab = np.full(m, -1, np.int64)
    parallel = False
    for k in range(m):
        if excluded_link[k]:
            continue
        ra = row[n1[k]]
        rb = row[n2[k]]
        if ra >= 0 and rb >= 0 and ra == rb:
            continue                           # a loop on one node: no net entry
        if ra >= 0:
            pos_a[k] = diag_pos[pinv[ra]]
        if rb >= 0:
            pos_b[k] = diag_pos[pinv[rb]]
        if ra >= 0 and rb >= 0:
            a = pinv[ra]
            b = pinv[rb]
            lo = min(a, b)
            hi = max(a, b)
            found = -1
            for p in range(cp[hi], fill[hi]):  # a parallel link shares the entry
                if ci[p] == lo:
                    found = p
                    break
            if found < 0:
                found = fill[hi]
                ci[found] = lo
                fill[hi] += 1
            else:
                parallel = True
            pos_ab[k] = found
    if not parallel:
        return cp, ci, diag_pos, pos_a, pos_b, pos_ab
    # compact: parallel links left unused slots
    newpos = np.full(ci.shape[0], -1, np.int64)
    cp2 = np.zeros(n + 1, np.int64)
    for j in range(n):
        cp2[j + 1] = cp2[j] + (fill[j] - cp[j])
    ci2 = np.empty(cp2[n], np.int64)
    for j in range(n):
        for t in range(fill[j] - cp[j]):
            newpos[cp[j] + t] = cp2[j] + t
            ci2[cp2[j] + t] = ci[cp[j] + t]
    for j in range(n):
        diag_pos[j] = newpos[diag_pos[j]]
    for k in range(m):
        if pos_a[k] >= 0:
            pos_a[k] = newpos[pos_a[k]]
        if pos_b[k] >= 0:
            pos_b[k] = newpos[pos_b[k]]
        if pos_ab[k] >= 0:
            pos_ab[k] = newpos[pos_ab[k]]
    return cp2, ci2, diag_pos, pos_a, pos_b, pos_ab


@njit(cache=True)
def link_pattern(n, link_i, link_j, perm):
    """``gga_matrix_pattern`` for links between rows (-1: a fixed end) under the order ``perm``
    (new -> old), with its inverse: (pinv, cp, ci, diag_pos, pos_a, pos_b, pos_ab)."""
    m = link_i.shape[0]
    pinv = np.empty(n, np.int64)
    for k in range(n):
        pinv[perm[k]] = k
    row = np.empty(n + 1, np.int64)            # node -> row: rows are the nodes here, n the fixed end
    for k in range(n):
        row[k] = k
    row[n] = -1
    a = np.empty(m, np.int64)
    b = np.empty(m, np.int64)
    for k in range(m):
        a[k] = link_i[k] if link_i[k] >= 0 else n
        b[k] = link_j[k] if link_j[k] >= 0 else n
    cp, ci, diag_pos, pos_a, pos_b, pos_ab = gga_matrix_pattern(a, b, row, np.zeros(m, np.bool_), pinv, n)
    return pinv, cp, ci, diag_pos, pos_a, pos_b, pos_ab


@njit(cache=True)
def scatter_links(w, pos_a, pos_b, pos_ab, cx):
    """cx[:] = sum over links of w_k (e_a - e_b)(e_a - e_b)^T in the pattern's positions (-1: the
    end is fixed or the entry is off the pattern). Both Newton solvers build their matrix this way."""
    for p in range(cx.shape[0]):
        cx[p] = 0.0
    for k in range(w.shape[0]):
        wk = w[k]
        if wk == 0.0:
            continue
        if pos_a[k] >= 0:
            cx[pos_a[k]] += wk
        if pos_b[k] >= 0:
            cx[pos_b[k]] += wk
        if pos_ab[k] >= 0:
            cx[pos_ab[k]] -= wk
