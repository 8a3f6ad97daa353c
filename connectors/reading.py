"""The Reading: what every connector emits, in Arrow record batches (DESIGN.md, "Contracts").

``point`` (str), ``ts`` (UTC, ns), ``value`` (float64, SI), ``quality`` (int8: 0 good,
1 uncertain, 2 bad), ``source`` (str: which connector / server). Quality is a small integer so the
gate and the twin can mask with numpy; ``QUALITY_NAMES`` turns it back into words.

>>> batch = readings_batch(["P1", "P2"], [0, 1_000_000_000], [2.0e5, 1.5], [GOOD, BAD], "modbus:127.0.0.1:5020")
>>> batch.num_rows, batch.schema == READING_SCHEMA
(2, True)
>>> quality_names(batch.column("quality"))
['good', 'bad']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GOOD = 0
UNCERTAIN = 1
BAD = 2
QUALITY_NAMES = ("good", "uncertain", "bad")

READING_SCHEMA = pa.schema([
    pa.field("point", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("quality", pa.int8(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
])


def readings_batch(points: Sequence[str] | pa.Array, ts_ns: Sequence[int] | np.ndarray,
                   values: Sequence[float] | np.ndarray, quality: Sequence[int] | np.ndarray | int,
                   source: str | Sequence[str]) -> pa.RecordBatch:
    """A record batch in the Reading schema. ``quality`` and ``source`` may be one value for all.
    Values that are not finite are kept but marked bad, so nothing is lost on the way in."""
    n = len(points)
    ts = np.asarray(ts_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    q = np.full(n, quality, np.int8) if np.isscalar(quality) else np.asarray(quality, np.int8)
    if not (len(ts) == len(v) == len(q) == n):
        raise ValueError(f"readings_batch: columns differ in length ({n}, {len(ts)}, {len(v)}, {len(q)})")
    if ((q < GOOD) | (q > BAD)).any():
        raise ValueError("readings_batch: quality must be 0 (good), 1 (uncertain) or 2 (bad)")
    q = np.where(np.isfinite(v), q, BAD).astype(np.int8)
    src = pa.array([source] * n, pa.string()) if isinstance(source, str) else pa.array(list(source), pa.string())
    return pa.RecordBatch.from_arrays(
        [pa.array(points, pa.string()) if not isinstance(points, pa.Array) else points.cast(pa.string()),
         pa.array(ts, pa.timestamp("ns", tz="UTC")), pa.array(v, pa.float64()), pa.array(q, pa.int8()), src],
        schema=READING_SCHEMA)


def empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=READING_SCHEMA)


def quality_names(column: pa.Array) -> list[str]:
    return [QUALITY_NAMES[int(q)] for q in column.to_numpy(zero_copy_only=False)]


def point_rows(table_ids: pa.Array, column: pa.Array) -> np.ndarray:
    """Row of each reading's point in the table, -1 for ids the table does not know."""
    idx = pc.index_in(column, value_set=table_ids)
    return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def timestamps_ns(column: pa.Array) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy(zero_copy_only=False)
