"""Per-point completeness and gaps of a Reading stream: good readings received per clock hour
against the number the point's period promises, and silences longer than a few periods.

Fed the quality gate's *accepted* batches (``connectors/quality.py``), so duplicates and garbage do
not count as data. The forward walk that finds gaps is a numba kernel
(``pipetwin.kernels.quality.find_gaps``); the hour counts are numpy over the whole batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import GOOD, UNCERTAIN, point_rows, timestamps_ns
from pipetwin.kernels.quality import find_gaps

NS = 1_000_000_000
HOUR_NS = 3600 * NS
NO_TS = np.iinfo(np.int64).min


class Completeness:
    """Per point and clock hour (UTC, by reading ``ts``): good readings received against the
    number expected (3600 / period_s), and gaps longer than ``gap_periods`` x period_s between
    consecutive readings of a point. Feed it the gate's *accepted* batches so duplicates and
    garbage do not count as data; with ``count_uncertain=False`` (default) stuck-flagged readings
    do not count either, so a frozen sensor shows as incomplete.

    >>> from pipetwin.connectors.points import points_from_columns
    >>> from pipetwin.connectors.reading import readings_batch
    >>> c = Completeness(points_from_columns(["A"], "pressure", period_s=600.0), gap_periods=1.5)
    >>> c.update(readings_batch(["A"] * 5, [i * 600 * NS for i in (0, 1, 2, 4, 5)], [1.0] * 5, 0, "t"))
    >>> c.report().column("completeness").to_pylist(), c.gap_count
    ([0.8333333333333334], 1)
    """

    def __init__(self, points: PointTable, *, target: float = 0.95, gap_periods: float = 3.0,
                 count_uncertain: bool = False):
        self.points, self.target, self.gap_periods, self.count_uncertain = points, target, gap_periods, count_uncertain
        self._ids = pa.array(points.ids, pa.string())
        self._gap_ns = (np.asarray(points.period_s, float) * gap_periods * NS).astype(np.int64)
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._keys = np.zeros(0, np.int64)      # hour * n_points + row, sorted
        self._counts = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._first_hour = self._last_hour = None
        self._last_ts = np.full(len(self.points), NO_TS, np.int64)
        self._gaps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.gap_count = 0

    def update(self, batch: pa.RecordBatch) -> None:
        """Count one batch of readings (normally ``GateResult.accepted``); unknown points are ignored."""
        rows = point_rows(self._ids, batch.column("point"))
        ts = timestamps_ns(batch.column("ts"))
        q = batch.column("quality").to_numpy(zero_copy_only=False)
        known = rows >= 0
        rows, ts, q = rows[known], ts[known], q[known]
        if len(rows) == 0:
            return
        self._record_gaps(rows, ts)
        hours = ts // HOUR_NS
        self._first_hour = int(hours.min()) if self._first_hour is None else min(self._first_hour, int(hours.min()))
        self._last_hour = int(hours.max()) if self._last_hour is None else max(self._last_hour, int(hours.max()))
        good = (q == GOOD) | ((q == UNCERTAIN) & self.count_uncertain)
        keys, counts = np.unique(hours[good] * len(self.points) + rows[good], return_counts=True)
        self._pending.append((keys, counts.astype(np.int64)))

    def _record_gaps(self, rows, ts) -> None:
        n = len(rows)
        start, end, point = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        k = find_gaps(rows, ts, self._gap_ns, self._last_ts, start, end, point)
        if k:
            self._gaps.append((point[:k].copy(), start[:k].copy(), end[:k].copy()))
            self.gap_count += k

    def _consolidate(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._keys, inverse = np.unique(keys, return_inverse=True)
        self._counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self._pending = []

    def report(self, first_hour: int | None = None, last_hour: int | None = None) -> pa.Table:
        """(point, hour, expected, received, completeness) for every point and every hour from
        ``first_hour`` to ``last_hour`` (hours since the epoch; default: the span seen so far).
        Points that sent nothing appear with 0: a silent sensor is what this is for. Edge hours
        of the span may be partial."""
        self._consolidate()
        first = self._first_hour if first_hour is None else first_hour
        last = self._last_hour if last_hour is None else last_hour
        n = len(self.points)
        if first is None or last is None or last < first:
            return _completeness_table([], np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        hours = np.repeat(np.arange(first, last + 1, dtype=np.int64), n)
        rows = np.tile(np.arange(n, dtype=np.int64), last - first + 1)
        received = lookup_counts(self._keys, self._counts, hours * n + rows)
        expected = 3600.0 / np.asarray(self.points.period_s, float)[rows]
        return _completeness_table(pc.take(self._ids, pa.array(rows)), hours, expected, received)

    def below_target(self, target: float | None = None, **span) -> pa.Table:
        """Per point over the report span: (point, expected, received, completeness) for points
        whose completeness is below ``target`` (default: the constructor's)."""
        table = self.report(**span)
        target = self.target if target is None else target
        per_point = table.group_by("point").aggregate([("expected", "sum"), ("received", "sum")])
        per_point = per_point.select(["point", "expected_sum", "received_sum"]).rename_columns(
            ["point", "expected", "received"])
        fraction = pc.divide(pc.cast(per_point["received"], pa.float64()), per_point["expected"])
        per_point = per_point.append_column("completeness", fraction)
        return per_point.filter(pc.less(fraction, target)).sort_by("point")

    def gaps(self) -> pa.Table:
        """(point, start, end, duration_s) of every gap recorded so far."""
        if not self._gaps:
            p, s, e = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            p, s, e = (np.concatenate(parts) for parts in zip(*self._gaps))
        ts_type = pa.timestamp("ns", tz="UTC")
        return pa.table({"point": pc.take(self._ids, pa.array(p)), "start": pa.array(s, ts_type),
                         "end": pa.array(e, ts_type), "duration_s": (e - s) / NS})

    def snapshot(self) -> dict:
        """Plain picklable state: hour counts, span, last ts per point, gaps."""
        self._consolidate()
        return {"ids": list(self.points.ids), "keys": self._keys.copy(), "counts": self._counts.copy(),
                "first_hour": self._first_hour, "last_hour": self._last_hour, "last_ts": self._last_ts.copy(),
                "gaps": [tuple(a.copy() for a in g) for g in self._gaps], "gap_count": self.gap_count}

    def restore(self, snapshot: dict) -> None:
        """Resume from ``snapshot()`` of a Completeness over the same point table."""
        if list(snapshot["ids"]) != list(self.points.ids):
            raise ValueError("Completeness.restore: the snapshot was taken over another point table")
        self._fresh_state()
        self._keys, self._counts = snapshot["keys"].copy(), snapshot["counts"].copy()
        self._first_hour, self._last_hour = snapshot["first_hour"], snapshot["last_hour"]
        self._last_ts = snapshot["last_ts"].copy()
        self._gaps = [tuple(a.copy() for a in g) for g in snapshot["gaps"]]
        self.gap_count = snapshot["gap_count"]


def lookup_counts(keys: np.ndarray, counts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``counts`` at ``wanted`` keys of the sorted ``keys``, 0 where a key is absent."""
    if len(keys) == 0:
        return np.zeros(len(wanted), np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, counts[at], 0)


def _completeness_table(points, hours, expected, received) -> pa.Table:
    expected = np.asarray(expected, float)
    received = np.asarray(received, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(expected > 0, received / expected, np.nan)
    return pa.table({"point": pa.array(points, pa.string()) if not isinstance(points, pa.Array) else points,
                     "hour": pa.array(np.asarray(hours, np.int64) * HOUR_NS, pa.timestamp("ns", tz="UTC")),
                     "expected": expected, "received": received, "completeness": fraction})


__all__ = ["Completeness", "lookup_counts"]
