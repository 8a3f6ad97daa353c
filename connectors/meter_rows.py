"""Meter reads in the long shape (one interval per row, from a file or a stream) to Readings: the
meter id -> point lookup, the unit conversion to SI, and the split of the rows that cannot be
readings (unknown meter, time that does not parse) into :class:`RowError` records.

Shared by the export files (``meter_files``) and the Redis Stream (``meter_redis``); the policies
are in ``meter_common`` and ``docs/meter-feeds.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipetwin.connectors.meter_common import MAX_ERRORS_KEPT, RowError, filled, reading_batch, unit_factor
from pipetwin.connectors.points import PointTable

# ----------------------------------------------------------------------------- meter id lookup


class MeterIndex:
    """Meter id -> point row, vectorised with Arrow so a million ids map in well under a second."""

    def __init__(self, points: PointTable, protocol: str = "meter"):
        self.points = points
        self.rows = points.select(protocol)
        self.meter_ids = pa.array([str(points.address[i]) for i in self.rows], pa.string())
        self.point_ids = pa.array([points.ids[i] for i in self.rows], pa.string())
        units = [points.unit[i] for i in self.rows]
        self.unit_names = sorted(set(units))
        code = {u: k for k, u in enumerate(self.unit_names)}
        self.unit_code = np.array([code[u] for u in units], np.int64)

    def lookup(self, meter_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Position in ``self.rows`` of each meter id, -1 where the meter is not in the table."""
        pos = pc.index_in(pc.cast(meter_ids, pa.string()), value_set=self.meter_ids)
        return filled(pos, -1).astype(np.int64)


# ----------------------------------------------------------------------------- rows -> readings


@dataclass
class LongRows:
    """A file normalised to the long shape: one interval per row, before the point lookup."""

    meter_id: pa.Array
    end_ns: np.ndarray
    time_ok: np.ndarray
    values: np.ndarray
    value_ok: np.ndarray
    quality: np.ndarray
    unit: pa.Array | None
    row: np.ndarray          # 1-based data row in the file
    column: list[str]        # per-row source column name is only needed for wide files; "" if long
    wide_cols: np.ndarray | None = None


@dataclass
class Converted:
    """Readings from one file or message batch, the rows that could not be readings, and counts."""

    batch: pa.RecordBatch
    errors: list[RowError]
    rows: int = 0
    bad_values: int = 0
    unknown_meters: int = 0
    bad_timestamps: int = 0


def to_readings(rows: LongRows, index: MeterIndex, where: str, source: str) -> Converted:
    """Map meters to points, convert to SI, and split off the rows that cannot be readings."""
    pos = index.lookup(rows.meter_id)
    known = pos >= 0
    keep = known & rows.time_ok
    errors = _row_errors(rows, known, where)
    p = pos[keep]
    point_rows = index.rows[p]
    raw = rows.values[keep] * _unit_factors(rows, index, pos, keep)
    si = index.points.to_si(point_rows, raw)
    value_ok = rows.value_ok[keep] & np.isfinite(si)
    si = np.where(value_ok, si, np.nan)
    batch = reading_batch(index.point_ids.take(pa.array(p)), rows.end_ns[keep], si, rows.quality[keep], source)
    return Converted(batch, errors, rows=len(pos), bad_values=int((~value_ok).sum()),
                     unknown_meters=int((~known).sum()), bad_timestamps=int((known & ~rows.time_ok).sum()))


def _unit_factors(rows: LongRows, index: MeterIndex, pos: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per kept row, the factor from the file's ``unit`` column to the point's unit; pint is asked
    once per distinct (file unit, point unit) pair."""
    if rows.unit is None:
        return np.ones(int(keep.sum()))
    enc = pc.dictionary_encode(pc.cast(rows.unit, pa.string()))
    names = ["" if u is None else u for u in enc.dictionary.to_pylist()] + [""]
    fcode = filled(enc.indices, len(names) - 1).astype(np.int64)[keep]
    pcode = index.unit_code[pos[keep]]
    pair = fcode * len(index.unit_names) + pcode
    uniq, inv = np.unique(pair, return_inverse=True)
    lut = np.array([unit_factor(names[u // len(index.unit_names)], index.unit_names[u % len(index.unit_names)])
                    for u in uniq])
    return lut[inv] if len(uniq) else np.ones(0)


def _row_errors(rows: LongRows, known: np.ndarray, where: str, limit: int = MAX_ERRORS_KEPT) -> list[RowError]:
    """RowErrors for unknown meters and unparsable times (the first ``limit``; all are counted)."""
    bad = np.flatnonzero(~known | ~rows.time_ok)[:limit]
    if not len(bad):
        return []
    ids = rows.meter_id.take(pa.array(bad)).to_pylist()
    out = []
    for i, meter in zip(bad.tolist(), ids):
        col = rows.column[rows.wide_cols[i]] if rows.wide_cols is not None else ""
        if not known[i]:
            out.append(RowError(where, int(rows.row[i]), "meter_id", meter, "meter id not in the point table"))
        else:
            out.append(RowError(where, int(rows.row[i]), col or "interval", meter, "time does not parse"))
    return out


__all__ = ["MeterIndex", "LongRows", "Converted", "to_readings"]
