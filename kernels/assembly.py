"""Scatter per-link conductances into a fixed sparse pattern (the GGA's A D A^T).

The pattern is built once per topology; each Newton step only rewrites the values array, so the
sparse factorization can reuse its symbolic analysis.
"""

import numpy as np
from numba import njit


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


def empty_positions(n: int) -> np.ndarray:
    return np.full(n, -1, dtype=np.int64)
