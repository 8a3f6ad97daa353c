"""Head-end export files (CSV, CSV.gz or Parquet; long or wide shape) to Reading batches.

The shapes, the interval-end rule and the error policy are described in ``docs/meter-feeds.md``;
the parsing rules shared with the other feeds are in ``meter_common``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipetwin.connectors.meter_common import NS, parse_timestamps, parse_values, quality_from_status
from pipetwin.connectors.meter_rows import Converted, LongRows, MeterIndex, to_readings
from pipetwin.connectors.points import PointTable

_WIDE_HOUR = re.compile(r"^h(\d{1,2})$")


def read_export(path: Path) -> pa.Table:
    """A head-end export as an Arrow table with lower-case column names (CSV, CSV.gz or Parquet)."""
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        table = pq.read_table(path)
    else:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"meter_id": pa.string(), "status": pa.string(), "unit": pa.string()},
            strings_can_be_null=True))
    return table.rename_columns([c.strip().lower() for c in table.column_names])


def is_wide(table: pa.Table) -> bool:
    """Wide files have hour columns ``h00``..``h23`` or ``h01``..``h24`` and a ``date``."""
    return "date" in table.column_names and any(_WIDE_HOUR.match(c) for c in table.column_names)


def long_rows(table: pa.Table, period_s: Callable[[np.ndarray], np.ndarray], index: MeterIndex) -> LongRows:
    """Normalise the long shape. The interval end is ``interval_end``, else ``interval_start`` +
    ``duration`` / ``duration_s`` (seconds), else ``interval_start`` + the point's ``period_s``."""
    cols = table.column_names
    _require(cols, ["meter_id", "value"])
    n = table.num_rows
    if "interval_end" in cols:
        end, ok = parse_timestamps(table["interval_end"])
    elif "interval_start" in cols:
        start, ok = parse_timestamps(table["interval_start"])
        dur_col = next((c for c in ("duration_s", "duration") if c in cols), None)
        if dur_col is not None:
            dur, dur_ok = parse_values(table[dur_col])
            ok = ok & dur_ok
            dur_ns = np.where(dur_ok, dur, 0) * NS
        else:
            dur_ns = period_s(index.lookup(table["meter_id"])) * NS
        end = start + np.nan_to_num(dur_ns).astype(np.int64)
    else:
        raise ValueError("a long file needs interval_end, or interval_start (+ duration)")
    values, value_ok = parse_values(table["value"])
    return LongRows(meter_id=_flat(table["meter_id"]), end_ns=end, time_ok=ok, values=values, value_ok=value_ok,
                    quality=quality_from_status(table["status"] if "status" in cols else None, n),
                    unit=_flat(table["unit"]) if "unit" in cols else None, row=np.arange(1, n + 1), column=[])


def wide_rows(table: pa.Table) -> LongRows:
    """Stack the wide shape (``meter_id, date, [unit], [status], h00..h23`` or ``h01..h24``) into
    the long one. ``h00`` names the hour starting 00:00 UTC; if there is no ``h00`` but an
    ``h24``, the names are hours ENDING at that hour. Either way the reading's ts is the end."""
    cols = table.column_names
    _require(cols, ["meter_id", "date"])
    hours = sorted((int(_WIDE_HOUR.match(c).group(1)), c) for c in cols if _WIDE_HOUR.match(c))
    starting = any(h == 0 for h, _ in hours) or not any(h == 24 for h, _ in hours)
    end_hour = np.array([h + 1 if starting else h for h, _ in hours], np.int64)
    n, k = table.num_rows, len(hours)
    day_ns, day_ok = parse_timestamps(table["date"])
    day_ns = day_ns - day_ns % (86400 * NS)         # a date or a midnight timestamp: the UTC day
    parsed = [parse_values(table[c]) for _, c in hours]
    values = np.stack([p[0] for p in parsed], axis=1).reshape(-1)
    value_ok = np.stack([p[1] for p in parsed], axis=1).reshape(-1)
    q = quality_from_status(table["status"] if "status" in cols else None, n)
    take = pa.array(np.repeat(np.arange(n), k))
    return LongRows(
        meter_id=_flat(table["meter_id"]).take(take),
        end_ns=(day_ns[:, None] + end_hour[None, :] * 3600 * NS).reshape(-1),
        time_ok=np.repeat(day_ok, k), values=values, value_ok=value_ok, quality=np.repeat(q, k),
        unit=_flat(table["unit"]).take(take) if "unit" in cols else None, row=np.repeat(np.arange(1, n + 1), k),
        column=[c for _, c in hours], wide_cols=np.tile(np.arange(k), n))


def _require(cols: list[str], names: list[str]) -> None:
    missing = [c for c in names if c not in cols]
    if missing:
        raise ValueError(f"missing column(s) {missing}; has {cols}")


def _flat(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def convert_table(table: pa.Table, index: MeterIndex, where: str, source: str) -> Converted:
    """A whole export table (either shape) to readings."""
    if is_wide(table):
        rows = wide_rows(table)
    else:
        rows = long_rows(table, lambda pos: np.where(pos >= 0, index.points.period_s[index.rows[pos]], np.nan), index)
    return to_readings(rows, index, where, source)


def read_meter_file(path: str | Path, points: PointTable | MeterIndex, source: str | None = None) -> Converted:
    """Read one head-end export file (CSV or Parquet, long or wide) into Readings."""
    path = Path(path)
    index = points if isinstance(points, MeterIndex) else MeterIndex(points)
    return convert_table(read_export(path), index, str(path), source or f"meters:file:{path.name}")


__all__ = ["read_export", "is_wide", "long_rows", "wide_rows", "convert_table", "read_meter_file"]
