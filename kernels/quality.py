"""The sequential parts of the data-quality gate and of the completeness count, over numpy arrays.

Why kernels: each reading is judged against its point's state as left by the readings before it
(last accepted time and value, a pending step, a stuck run, a short history), so the walk cannot
be vectorised, and a Python loop per reading is far too slow for a million readings an hour. The
callers (``connectors/quality.py``, ``connectors/completeness.py``) do the stateless checks in
numpy and own the meaning of the codes and flags written here.

Imports numpy and numba only. No function here has default arguments: they are compiled with
``cache=True`` and call each other, and a cached caller of a function with defaults can fail to
load from the cache.
"""

import numpy as np

from numba import njit

# reason codes ``stateful_checks`` writes: their positions in ``connectors.quality.REASONS``
DUPLICATE = 7
CONFLICT = 8
LATE = 9
RATE = 10

# flag bits ``stateful_checks`` sets on accepted rows
FLAG_STUCK = 1
FLAG_LATE = 2
FLAG_REBASED = 4


@njit(cache=True)
def history_find(hist_ts, p, t):
    """Column of ``t`` in point ``p``'s ring of recent accepted timestamps, -1 if absent. Why: a
    late reading is a duplicate or a conflict only against what was accepted at that time."""
    for j in range(hist_ts.shape[1]):
        if hist_ts[p, j] == t:
            return j
    return -1


@njit(cache=True)
def remember(hist_ts, hist_v, hist_pos, p, t, x):
    """Write (``t``, ``x``) into point ``p``'s history ring, overwriting the oldest entry. Why a
    ring: memory stays fixed per point however long the stream runs."""
    j = hist_pos[p]
    hist_ts[p, j] = t
    hist_v[p, j] = x
    hist_pos[p] = (j + 1) % hist_ts.shape[1]


@njit(cache=True)
def stateful_checks(rows, ts, v, code, flag, ref,                   # per row (code: in and out)
                    rate, deadband, stuck_on,                       # per point configuration
                    stuck_n, stuck_ns, late_ns, confirm_n,          # scalars
                    last_ts, last_v, run_n, run_start,              # per point state (updated)
                    pend_n, pend_ts, pend_v, hist_ts, hist_v, hist_pos):
    """Walk rows in arrival order; rows with ``code != 0`` are already quarantined and skipped.
    Writes ``code`` (duplicate/conflict/late/rate), ``flag`` (stuck/late/rebased) and ``ref`` (the
    figure the detail text quotes).

    Why in arrival order, against the last *accepted* reading: the outcome then does not depend on
    where the stream is cut into batches, so a snapshot of the state arrays resumes exactly."""
    no_ts = np.iinfo(np.int64).min
    for i in range(rows.size):
        if code[i] != 0:
            continue
        p = rows[i]
        t = ts[i]
        x = v[i]
        lt = last_ts[p]
        if lt != no_ts and t <= lt:
            if t == lt:
                code[i] = DUPLICATE if x == last_v[p] else CONFLICT
                ref[i] = last_v[p]
                continue
            j = history_find(hist_ts, p, t)
            if j >= 0:
                code[i] = DUPLICATE if x == hist_v[p, j] else CONFLICT
                ref[i] = hist_v[p, j]
            elif lt - t > late_ns:
                code[i] = LATE
                ref[i] = (lt - t) / 1e9
            else:
                flag[i] |= FLAG_LATE
                remember(hist_ts, hist_v, hist_pos, p, t, x)
            continue
        if lt != no_ts:
            r = rate[p]
            dt = (t - lt) / 1e9
            if abs(x - last_v[p]) > r * dt + deadband[p]:
                if pend_n[p] > 0 and abs(x - pend_v[p]) <= r * ((t - pend_ts[p]) / 1e9) + deadband[p]:
                    pend_n[p] += 1
                else:
                    pend_n[p] = 1
                pend_ts[p] = t
                pend_v[p] = x
                if pend_n[p] < confirm_n:
                    code[i] = RATE
                    ref[i] = abs(x - last_v[p]) / dt
                    continue
                flag[i] |= FLAG_REBASED
            pend_n[p] = 0
        if lt != no_ts and x == last_v[p]:
            run_n[p] += 1
        else:
            run_n[p] = 0
            run_start[p] = t
        if stuck_on[p] and run_n[p] > 0 and (run_n[p] + 1 >= stuck_n or
                                             (stuck_ns > 0 and t - run_start[p] >= stuck_ns)):
            flag[i] |= FLAG_STUCK
        last_ts[p] = t
        last_v[p] = x
        remember(hist_ts, hist_v, hist_pos, p, t, x)


@njit(cache=True)
def find_gaps(rows, ts, gap_ns, last_ts, start, end, point):
    """Forward gaps longer than ``gap_ns[p]`` in arrival order; readings older than the point's
    newest are ignored (they fill a gap already recorded). Writes (``start``, ``end``, ``point``)
    of each gap into the caller's arrays and returns how many were written; ``last_ts`` (per point)
    is updated. Why a kernel: whether a reading closes a gap depends on the one before it."""
    no_ts = np.iinfo(np.int64).min
    n = 0
    for i in range(rows.size):
        p = rows[i]
        t = ts[i]
        lt = last_ts[p]
        if lt != no_ts and t <= lt:
            continue
        if lt != no_ts and t - lt > gap_ns[p]:
            start[n] = lt
            end[n] = t
            point[n] = p
            n += 1
        last_ts[p] = t
    return n
