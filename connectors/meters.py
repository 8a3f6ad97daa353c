"""Smart-meter and IoT interval reads arriving in bulk: head-end export files in a watched folder,
MQTT payloads and a Redis Stream, all turned into Reading batches (DESIGN.md, "Contracts").

Why one module: the three feeds share the meter-id lookup, the timestamp/value parsing and the
error policy, and the file list of the project gives meters one module (split it when a feed grows).

Policies (also in ``docs/meter-feeds.md``):

* A reading's ``ts`` is the END of its interval, in UTC ns (the volume is known only then).
* A row whose meter is known and whose time parses but whose value does not becomes a ``bad``
  reading (value NaN): the gate sees the meter failing. A row with an unknown meter or a time that
  does not parse cannot become a reading; it goes to the error list as a :class:`RowError` naming
  file (or topic / stream entry), row and reason. Every case is counted in :class:`FeedStats`.
* Timestamps without a zone are UTC. Numbers are epoch seconds, milliseconds, microseconds or
  nanoseconds, told apart by magnitude (see :func:`epoch_to_ns`).

>>> epoch_to_ns(np.array([1.7e9, 1.7e12, 1.7e15])).tolist()
[1700000000000000000, 1700000000000000000, 1700000000000000000]
>>> quality_from_status(pa.array(["ok", "estimated", "error", None, "odd"])).tolist()
[0, 1, 2, 0, 1]
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.points import PointTable, _ureg, normalize_unit
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN, empty_batch

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_ERRORS_KEPT = 10_000          # the in-memory error list is bounded; counts are not
_NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_WIDE_HOUR = re.compile(r"^h(\d{1,2})$")
STATUS_QUALITY = {
    "": GOOD, "0": GOOD, "ok": GOOD, "good": GOOD, "valid": GOOD, "a": GOOD, "actual": GOOD, "measured": GOOD,
    "1": UNCERTAIN, "e": UNCERTAIN, "estimated": UNCERTAIN, "estimate": UNCERTAIN, "substituted": UNCERTAIN,
    "s": UNCERTAIN, "uncertain": UNCERTAIN, "edited": UNCERTAIN, "interpolated": UNCERTAIN,
    "2": BAD, "bad": BAD, "error": BAD, "err": BAD, "invalid": BAD, "failed": BAD, "x": BAD,
}


# ----------------------------------------------------------------------------- errors and counts


@dataclass(frozen=True)
class RowError:
    """One input row that could not become a reading. ``where`` is a file, ``topic`` or
    ``stream``; ``row`` the 1-based data row (CSV: line = row + 1), or a stream entry id."""

    where: str
    row: int | str | None
    column: str
    meter_id: str | None
    problem: str


@dataclass
class FeedStats:
    """Counters every feed keeps, so that nothing is dropped without a number showing it."""

    files: int = 0
    unreadable_files: int = 0
    rows: int = 0
    readings: int = 0
    bad_values: int = 0            # emitted as bad readings
    unknown_meters: int = 0        # to the error list
    bad_timestamps: int = 0        # to the error list
    bad_payloads: int = 0          # MQTT / stream entries that are not what the mapping expects
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ErrorList(list):
    """A list of :class:`RowError` that keeps the most recent ``MAX_ERRORS_KEPT``."""

    def extend_bounded(self, errors: Iterable[RowError]) -> None:
        self.extend(errors)
        if len(self) > MAX_ERRORS_KEPT:
            del self[: len(self) - MAX_ERRORS_KEPT]


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
        return _filled(pos, -1).astype(np.int64)


def _filled(arr, fill) -> np.ndarray:
    """An Arrow array as numpy with nulls replaced by ``fill``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


# ----------------------------------------------------------------------------- value, time, status parsing


def epoch_to_ns(x: np.ndarray) -> np.ndarray:
    """Epoch numbers to ns, unit told by magnitude: < 1e11 seconds (until year 5138), < 1e14
    milliseconds, < 1e17 microseconds, else nanoseconds. Head-ends use all four."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    scale = np.where(a < 1e11, 1e9, np.where(a < 1e14, 1e6, np.where(a < 1e17, 1e3, 1.0)))
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), np.round(x * scale), 0).astype(np.int64)


def parse_time_text(text: str) -> int | None:
    """One timestamp as ISO 8601 (zone optional, UTC if absent) or an epoch number, in UTC ns."""
    text = text.strip()
    if not text:
        return None
    if re.match(_NUMBER, text):
        return int(epoch_to_ns(np.array([float(text)]))[0])
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def parse_timestamps(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC ns, parsed mask) for a column of timestamps, epoch numbers or text. Text is parsed once
    per distinct value: an hourly file has a handful of distinct times for a million rows."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(col, "UTC")
        ns = pc.cast(col, pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        ok = pc.is_valid(ns).to_numpy(zero_copy_only=False)
        return _filled(ns, 0), ok
    if pa.types.is_date(t):
        ns = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        return _filled(ns, 0) * NS, pc.is_valid(col).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = _filled(pc.cast(col, pa.float64()), np.nan)
        return epoch_to_ns(x), np.isfinite(x)
    enc = pc.dictionary_encode(pc.cast(col, pa.string()))
    parsed = [parse_time_text(s) for s in enc.dictionary.to_pylist()]
    lut = np.array([0 if p is None else p for p in parsed] + [0], np.int64)
    lut_ok = np.array([p is not None for p in parsed] + [False])
    idx = _filled(enc.indices, len(parsed)).astype(np.int64)
    return lut[idx], lut_ok[idx]


def parse_values(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64, parsed mask). Text that is not a plain decimal number (``1,5``, ``n/a``, empty)
    is not parsed: NaN with the mask False, so the row becomes a bad reading, not a guess."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        v = _filled(pc.cast(col, pa.float64()), np.nan).astype(np.float64)
        return v, np.isfinite(v)
    text = pc.cast(col, pa.string())
    ok = _filled(pc.match_substring_regex(text, _NUMBER), False).astype(bool)
    v = _filled(pc.cast(pc.utf8_trim_whitespace(pc.if_else(pa.array(ok), text, None)), pa.float64()), np.nan)
    return v.astype(np.float64), ok


def quality_from_status(col: pa.Array | pa.ChunkedArray | None, n: int = 0) -> np.ndarray:
    """Head-end status words to quality (``STATUS_QUALITY``); missing status is good, a word we do
    not know is uncertain (the meter said something we cannot judge)."""
    if col is None:
        return np.full(n, GOOD, np.int8)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    enc = pc.dictionary_encode(pc.cast(col, pa.string()))
    words = [("" if w is None else w.strip().lower()) for w in enc.dictionary.to_pylist()]
    lut = np.array([STATUS_QUALITY.get(w, UNCERTAIN) for w in words] + [GOOD], np.int8)
    return lut[_filled(enc.indices, len(words)).astype(np.int64)]


def unit_factor(unit: str, point_unit: str) -> float:
    """Factor from a value in ``unit`` (as written in the feed) to the point's unit; NaN when
    they do not convert (kWh against m3): those rows become bad readings."""
    if unit.strip() == point_unit.strip() or not unit.strip():
        return 1.0
    try:
        u, basis = normalize_unit(unit)
        p, pbasis = normalize_unit(point_unit)
        return float(_ureg().Quantity(1.0, u).to(p).magnitude) * basis / pbasis
    except Exception:       # pint raises several kinds for unknown or mismatched units
        return float("nan")


# ----------------------------------------------------------------------------- batch building


def reading_batch(point_ids: pa.Array, ts_ns: np.ndarray, values: np.ndarray, quality: np.ndarray,
                  source: str) -> pa.RecordBatch:
    """A Reading batch from columns already aligned (fast path for a million rows; non-finite
    values are marked bad, as ``readings_batch`` does)."""
    q = np.where(np.isfinite(values), quality, BAD).astype(np.int8)
    n = len(values)
    return pa.RecordBatch.from_arrays(
        [point_ids, pa.array(np.asarray(ts_ns, np.int64), pa.timestamp("ns", tz="UTC")),
         pa.array(np.asarray(values, np.float64)), pa.array(q, pa.int8()),
         pa.repeat(pa.scalar(source, pa.string()), n)], schema=READING_SCHEMA)


def split_batch(batch: pa.RecordBatch, rows: int) -> list[pa.RecordBatch]:
    """Slices of at most ``rows`` rows (zero-copy)."""
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)] if batch.num_rows else []


# ----------------------------------------------------------------------------- export files: shapes


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


# ----------------------------------------------------------------------------- rows -> readings


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
    fcode = _filled(enc.indices, len(names) - 1).astype(np.int64)[keep]
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


# ----------------------------------------------------------------------------- folder watcher


FileKey = tuple[str, int, int]       # (name, size, mtime_ns)


class MeterFolderWatcher:
    """Poll a drop folder for head-end exports and turn each new, finished file into Readings.

    A file is read once its (size, mtime) has not changed for ``settle_s`` over two polls, so a file
    still being copied in is left alone; names starting with ``.`` or ending ``.part``/``.tmp`` are
    ignored (write-then-rename is the safe way to drop a file). After reading, the file is moved to
    ``processed/`` (``after="move"``) or left in place (``after="keep"``); either way its key
    (name, size, mtime) is remembered, and that list is the snapshot, so a restart does not re-read.
    A file that cannot be parsed at all goes to ``failed/``. Row errors of a file are written
    beside it as ``<name>.errors.csv`` in ``errors/`` and kept in ``self.errors``.
    """

    PATTERNS = (".csv", ".csv.gz", ".parquet", ".pq")

    def __init__(self, points: PointTable, folder: str | Path, *, settle_s: float = 2.0, after: str = "move",
                 batch_rows: int = 262_144, clock: Callable[[], float] = time.monotonic,
                 resume_state: list[FileKey] | None = None, source: str | None = None):
        if after not in ("move", "keep"):
            raise ValueError("after is 'move' or 'keep'")
        self.points, self.folder, self.settle_s, self.after = points, Path(folder), settle_s, after
        self.batch_rows, self.clock = batch_rows, clock
        self.source = source or f"meters:folder:{self.folder.name}"
        self.index = MeterIndex(points)
        self.processed: set[FileKey] = set(map(tuple, resume_state or []))
        self.pending: dict[str, tuple[int, int, float]] = {}
        self.stats = FeedStats()
        self.errors = ErrorList()
        self._requeue = self._uncommitted_moves() if resume_state is not None else []

    # -- snapshot
    def snapshot(self) -> list[FileKey]:
        """Keys of the processed files still in the folder or in ``processed/`` (bounded by what
        the operator keeps on disk)."""
        return sorted(self.processed)

    def _uncommitted_moves(self) -> list[Path]:
        """Files moved to processed/ whose key is not in the resumed snapshot: moved after the
        last committed snapshot, so their readings may be lost downstream: read them again."""
        done = self.folder / "processed"
        return [p for p in sorted(done.iterdir()) if self._wanted(p) and _key(p) not in self.processed] \
            if done.is_dir() else []

    # -- polling
    def poll(self) -> list[pa.RecordBatch]:
        """Read every file that is new and has settled; the Reading batches of all of them."""
        out: list[pa.RecordBatch] = []
        for path in self._requeue:
            out.extend(self._process(path, move=False))
        self._requeue = []
        for path in self._ready():
            out.extend(self._process(path, move=self.after == "move"))
        self._prune()
        return out

    def _wanted(self, p: Path) -> bool:
        name = p.name.lower()
        return p.is_file() and not name.startswith(".") and name.endswith(self.PATTERNS)

    def _ready(self) -> list[Path]:
        now = self.clock()
        ready = []
        for p in sorted(self.folder.iterdir()):
            if not self._wanted(p):
                continue
            key = _key(p)
            if key in self.processed:
                continue
            seen = self.pending.get(p.name)
            if seen is not None and seen[:2] == key[1:] and now - seen[2] >= self.settle_s:
                ready.append(p)
                del self.pending[p.name]
            elif seen is None or seen[:2] != key[1:]:
                self.pending[p.name] = (key[1], key[2], now)
        return ready

    def _process(self, path: Path, move: bool) -> list[pa.RecordBatch]:
        key = _key(path)
        try:
            conv = read_meter_file(path, self.index, self.source)
        except Exception as exc:    # any parse failure of a whole file: keep it, do not loop on it
            self._fail(path, key, exc)
            return []
        self._count(conv)
        if conv.errors:
            self.errors.extend_bounded(conv.errors)
            self._write_errors(path.name, conv.errors)
        if move:
            _move(path, self.folder / "processed")
        self.processed.add(key)
        return split_batch(conv.batch, self.batch_rows)

    def _fail(self, path: Path, key: FileKey, exc: Exception) -> None:
        log.error("meter file %s cannot be read: %s", path, exc)
        self.stats.unreadable_files += 1
        err = RowError(str(path), None, "", None, f"file cannot be read: {exc}")
        self.errors.extend_bounded([err])
        self._write_errors(path.name, [err])
        _move(path, self.folder / "failed")

    def _count(self, conv: Converted) -> None:
        s = self.stats
        s.files += 1
        s.rows += conv.rows
        s.readings += conv.batch.num_rows
        s.bad_values += conv.bad_values
        s.unknown_meters += conv.unknown_meters
        s.bad_timestamps += conv.bad_timestamps
        if conv.unknown_meters or conv.bad_timestamps or conv.bad_values:
            log.warning("%s: %d unknown meters and %d bad times (to errors/), %d bad values (bad readings)",
                        self.folder, conv.unknown_meters, conv.bad_timestamps, conv.bad_values)

    def _write_errors(self, name: str, errors: list[RowError]) -> None:
        folder = self.folder / "errors"
        folder.mkdir(exist_ok=True)
        table = pa.table({k: [str(getattr(e, k)) if getattr(e, k) is not None else None for e in errors]
                          for k in ("where", "row", "column", "meter_id", "problem")})
        pacsv.write_csv(table, folder / f"{name}.errors.csv")

    def _prune(self) -> None:
        """Forget processed keys whose file is gone from both the folder and processed/."""
        present = {k for d in (self.folder, self.folder / "processed") if d.is_dir()
                   for k in (_key(p) for p in d.iterdir() if self._wanted(p))}
        self.processed &= present


def _key(p: Path) -> FileKey:
    st = p.stat()
    return (p.name, st.st_size, st.st_mtime_ns)


def _move(path: Path, folder: Path) -> Path:
    """Move keeping the name (and mtime, so the key stays the same); never overwrite."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists():
        raise FileExistsError(f"{target} exists: a file of that name was already processed")
    return Path(shutil.move(str(path), str(target)))


# ----------------------------------------------------------------------------- dedup


@dataclass
class Deduplicated:
    """Readings that survive dedup, with each one's arrival lag and whether it counts as late."""

    batch: pa.RecordBatch
    lag_s: np.ndarray
    late: np.ndarray
    repeats: int
    revisions: int


class MeterDeduplicator:
    """Drop exact repeats of a meter interval, pass revisions (latest wins downstream), flag late.

    Key: point + interval end (to the second). A row equal in value and quality to what was last
    passed for its key is a repeat (dropped, counted); a different one is a revision (passed,
    counted, remembered as the latest). Within one batch the last row of a key wins. A read is late
    when it arrives more than ``late_after_s`` after its interval ended; it is still passed, with
    its lag. Keys older than ``horizon_s`` behind the newest interval seen are forgotten (memory
    stays bounded: a million meters for two days is about 0.8 GB); a read older than that is
    passed as new and counted in ``beyond_horizon``.

    State is three sorted numpy arrays, so a million-row hourly batch dedups in about a second.
    """

    def __init__(self, *, late_after_s: float = 7200.0, horizon_s: float = 2 * 86400.0,
                 now_ns: Callable[[], int] = time.time_ns):
        self.late_after_s, self.horizon_s, self.now_ns = late_after_s, horizon_s, now_ns
        self.codes: dict[str, int] = {}
        self.keys = np.zeros(0, np.int64)
        self.values = np.zeros(0, np.float64)
        self.quality = np.zeros(0, np.int8)
        self.newest_s = None
        self.counts = {"passed": 0, "repeats": 0, "revisions": 0, "late": 0, "beyond_horizon": 0}

    def snapshot(self) -> dict:
        return {"codes": dict(self.codes), "keys": self.keys.copy(), "values": self.values.copy(),
                "quality": self.quality.copy(), "newest_s": self.newest_s, "counts": dict(self.counts)}

    def restore(self, state: dict) -> MeterDeduplicator:
        self.codes, self.keys, self.values = dict(state["codes"]), state["keys"], state["values"]
        self.quality, self.newest_s, self.counts = state["quality"], state["newest_s"], dict(state["counts"])
        return self

    def _point_codes(self, points: pa.Array) -> np.ndarray:
        enc = pc.dictionary_encode(points)
        lut = np.array([self.codes.setdefault(p, len(self.codes)) for p in enc.dictionary.to_pylist()], np.int64)
        return lut[enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)]

    def process(self, batch: pa.RecordBatch, arrival_ns: int | None = None) -> Deduplicated:
        """The batch without repeats (and without rows superseded inside the batch)."""
        arrival = self.now_ns() if arrival_ns is None else arrival_ns
        ts_s = batch.column("ts").cast(pa.int64()).to_numpy() // NS
        keys = (self._point_codes(batch.column("point")) << 40) | (ts_s & ((1 << 40) - 1))
        vals = batch.column("value").to_numpy()
        qual = batch.column("quality").to_numpy()
        last = _last_of_each(keys)
        pos = np.searchsorted(self.keys, keys[last])
        inside = pos < len(self.keys)
        found = np.zeros(len(last), bool)
        found[inside] = self.keys[pos[inside]] == keys[last][inside]
        same = np.zeros(len(last), bool)
        fp = pos[found]
        same[found] = (_same(self.values[fp], vals[last][found])) & (self.quality[fp] == qual[last][found])
        superseded = len(keys) - len(last)
        within_repeats = _within_batch_repeats(keys, vals, qual, last)
        keep = last[~same]
        self._remember(keys[keep], vals[keep], qual[keep], ts_s)
        out = batch.take(pa.array(np.sort(keep)))
        lag_s = (arrival - out.column("ts").cast(pa.int64()).to_numpy()) / NS
        late = lag_s > self.late_after_s
        repeats = int(same.sum()) + within_repeats
        revisions = int((found & ~same).sum()) + superseded - within_repeats
        self._add_counts(out.num_rows, repeats, revisions, int(late.sum()), out, ts_s)
        return Deduplicated(out, lag_s, late, repeats, revisions)

    def _add_counts(self, passed, repeats, revisions, late, out, ts_s) -> None:
        c = self.counts
        c["passed"] += passed
        c["repeats"] += repeats
        c["revisions"] += revisions
        c["late"] += late
        if self.newest_s is not None and out.num_rows:
            old = out.column("ts").cast(pa.int64()).to_numpy() // NS < self.newest_s - self.horizon_s
            c["beyond_horizon"] += int(old.sum())

    def _remember(self, keys, vals, qual, ts_s) -> None:
        """Merge into the sorted state (new keys replace old values), then evict past the horizon."""
        allk = np.concatenate([keys, self.keys])
        allv = np.concatenate([vals, self.values])
        allq = np.concatenate([qual, self.quality])
        uk, first = np.unique(allk, return_index=True)     # first occurrence = the new row
        self.keys, self.values, self.quality = uk, allv[first], allq[first]
        if len(ts_s):
            self.newest_s = int(ts_s.max()) if self.newest_s is None else max(self.newest_s, int(ts_s.max()))
        if self.newest_s is not None:
            cutoff = (self.newest_s - int(self.horizon_s)) & ((1 << 40) - 1)
            live = (self.keys & ((1 << 40) - 1)) >= cutoff
            self.keys, self.values, self.quality = self.keys[live], self.values[live], self.quality[live]


def _last_of_each(keys: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each key, in first-appearance order of those last rows."""
    rev = keys[::-1]
    _, idx = np.unique(rev, return_index=True)
    return np.sort(len(keys) - 1 - idx)


def _within_batch_repeats(keys, vals, qual, last) -> int:
    """Rows superseded inside one batch that equal the last row of their key (exact repeats)."""
    if len(keys) == len(last):
        return 0
    order = np.argsort(keys, kind="stable")
    k, v, q = keys[order], vals[order], qual[order]
    run_end = np.flatnonzero(np.r_[k[1:] != k[:-1], True])    # a stable sort puts the last row at the end
    ref = run_end[np.searchsorted(run_end, np.arange(len(k)))]
    dup = np.arange(len(k)) != ref
    return int((dup & _same(v, v[ref]) & (q == q[ref])).sum())


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


# ----------------------------------------------------------------------------- MQTT


def mqtt_mapping(points: PointTable) -> dict[str, list[tuple[int, list[str]]]]:
    """topic -> [(point row, path keys)] from the mqtt points' ``topic#json.path`` addresses."""
    out: dict[str, list[tuple[int, list[str]]]] = {}
    for row in points.select("mqtt").tolist():
        topic, _, path = str(points.address[row]).partition("#")
        out.setdefault(topic, []).append((row, [k for k in path.split(".") if k]))
    return out


TS_FIELDS = ("ts", "timestamp", "time")


def _walk(doc, keys: list[str]):
    """Follow a dotted path through dicts (by key) and lists (by index); KeyError if absent."""
    for k in keys:
        if isinstance(doc, list):
            doc = doc[int(k)]
        elif isinstance(doc, dict):
            doc = doc[k]
        else:
            raise KeyError(k)
    return doc


def _payload_ts(doc, keys: list[str]) -> int | None:
    """The timestamp that goes with the value at ``keys``: a ``ts``/``timestamp``/``time`` field
    beside the value, else at the top level; None if neither (the caller uses the receive time)."""
    for parent in (keys[:-1], []):
        try:
            obj = _walk(doc, parent)
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if isinstance(obj, dict):
            for f in TS_FIELDS:
                if f in obj:
                    v = obj[f]
                    return parse_time_text(str(v)) if not isinstance(v, (int, float)) \
                        else int(epoch_to_ns(np.array([float(v)]))[0])
    return None


def decode_mqtt(mapping: dict, points: PointTable, topic: str, payload: bytes, received_ns: int,
                source: str) -> tuple[pa.RecordBatch, list[RowError]]:
    """One MQTT message to Readings of every point on its topic. A payload that is not JSON, or
    lacks a point's path, or holds a non-number there, gives that point a bad reading (at the
    receive time) and a RowError; a timestamp that does not parse also falls back to receive time
    but marks the reading uncertain."""
    entries = mapping.get(topic, [])
    errors: list[RowError] = []
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        doc, errors = None, [RowError(topic, None, "payload", None, f"not JSON: {exc}")]
    rows, ts, vals, qual = [], [], [], []
    for row, keys in entries:
        t, v, q = received_ns, float("nan"), BAD
        if doc is not None:
            t, v, q, err = _decode_point(doc, keys, received_ns)
            if err:
                errors.append(RowError(topic, None, ".".join(keys), points.ids[row], err))
        rows.append(row)
        ts.append(t)
        vals.append(v)
        qual.append(q)
    r = np.array(rows, np.int64)
    si = points.to_si(r, np.array(vals, float)) if len(r) else np.zeros(0)
    batch = reading_batch(pa.array([points.ids[i] for i in rows], pa.string()), np.array(ts, np.int64), si,
                          np.array(qual, np.int8), source)
    return batch, errors


def _decode_point(doc, keys: list[str], received_ns: int) -> tuple[int, float, int, str | None]:
    try:
        raw = _walk(doc, keys)
    except (KeyError, IndexError, ValueError, TypeError):
        return received_ns, float("nan"), BAD, "path not in payload"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return received_ns, float("nan"), BAD, f"value {raw!r} is not a number"
    try:
        value = float(raw)
    except ValueError:
        return received_ns, float("nan"), BAD, f"value {raw!r} is not a number"
    ts = _payload_ts(doc, keys)
    if ts is None:
        has_field = _has_ts_field(doc, keys)
        return received_ns, value, UNCERTAIN if has_field else GOOD, "timestamp does not parse" if has_field else None
    return ts, value, GOOD, None


def _has_ts_field(doc, keys) -> bool:
    for parent in (keys[:-1], []):
        try:
            obj = _walk(doc, parent)
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if isinstance(obj, dict) and any(f in obj for f in TS_FIELDS):
            return True
    return False


class MqttMeterSubscriber:
    """Subscribe to the mqtt points' topics and yield Reading batches; reconnect with backoff.

    ``topics`` defaults to the distinct topics of the table (wildcards are allowed; messages are
    matched to the table by exact topic, others are counted as ``bad_payloads``). Each batch holds
    the messages already queued when the first one arrived (up to ``batch_max``), so a burst
    becomes one batch and a trickle costs no waiting. ``connected`` is set while subscribed.
    """

    def __init__(self, points: PointTable, host: str = "127.0.0.1", port: int = 1883,
                 topics: list[str] | None = None, *, qos: int = 1, batch_max: int = 10_000,
                 backoff_s: tuple[float, float] = (0.5, 30.0), identifier: str | None = None,
                 sleep: Callable[[float], object] = asyncio.sleep, now_ns: Callable[[], int] = time.time_ns):
        self.points, self.host, self.port = points, host, port
        self.mapping = mqtt_mapping(points)
        self.topics = list(topics) if topics is not None else sorted(self.mapping)
        self.qos, self.batch_max, self.backoff_s, self.identifier = qos, batch_max, backoff_s, identifier
        self.sleep, self.now_ns = sleep, now_ns
        self.source = f"mqtt:{host}:{port}"
        self.stats = FeedStats()
        self.errors = ErrorList()
        self.connected = asyncio.Event()
        self.delays: list[float] = []

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        """Reading batches for ever (cancel the consuming task to stop)."""
        import aiomqtt

        delay = self.backoff_s[0]
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.identifier) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=self.qos)
                    self.connected.set()
                    delay = self.backoff_s[0]
                    async for batch in self._receive(client):
                        yield batch
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.stats.reconnects += 1
                log.warning("MQTT %s:%s: %s; retrying in %.1f s", self.host, self.port, exc, delay)
                self.delays.append(delay)
                await self.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])

    async def _receive(self, client) -> AsyncIterator[pa.RecordBatch]:
        messages = client.messages
        async for first in messages:
            group = [first]
            while len(messages) and len(group) < self.batch_max:
                group.append(await messages.__anext__())
            batch = self.decode_messages([(str(m.topic), bytes(m.payload or b"")) for m in group])
            if batch.num_rows:
                yield batch

    def decode_messages(self, messages: list[tuple[str, bytes]]) -> pa.RecordBatch:
        """Decode (topic, payload) pairs into one batch, counting and keeping the errors."""
        now = self.now_ns()
        out = []
        for topic, payload in messages:
            if topic not in self.mapping:
                self.stats.bad_payloads += 1
                self.errors.extend_bounded([RowError(topic, None, "topic", None, "topic not in the point table")])
                continue
            batch, errors = decode_mqtt(self.mapping, self.points, topic, payload, now, self.source)
            self.stats.rows += 1
            if errors:
                self.stats.bad_payloads += 1
                self.errors.extend_bounded(errors)
            self.stats.bad_values += int((batch.column("quality").to_numpy() == BAD).sum())
            out.append(batch)
        batch = pa.Table.from_batches(out, READING_SCHEMA).combine_chunks().to_batches()
        result = batch[0] if batch else empty_batch()
        self.stats.readings += result.num_rows
        return result


# ----------------------------------------------------------------------------- Redis Stream


@dataclass
class StreamRead:
    """Readings from stream entries and the ids to acknowledge once they are safely emitted."""

    batch: pa.RecordBatch
    ids: list[str]
    errors: list[RowError] = field(default_factory=list)


class RedisStreamMeterReader:
    """Meter reads pushed to a Redis Stream (fields ``meter_id``, ``ts`` (ISO or epoch), ``value``,
    optional ``unit`` and ``status``), read with XREADGROUP in a consumer group.

    At-least-once: :meth:`read` returns entries and their ids; the caller acknowledges with
    :meth:`ack` after emitting. A consumer restarting under the same name first gets its own
    pending (delivered, un-acked) entries again, then new ones. Entries that cannot be readings
    (unknown meter, bad time) are reported in ``errors`` and acknowledged with the rest: reading
    them again would not fix them.
    """

    def __init__(self, points: PointTable, redis_url: str, stream: str, group: str, consumer: str, *,
                 count: int = 10_000, block_ms: int = 1000, client=None):
        import redis

        self.points, self.stream, self.group, self.consumer = points, stream, group, consumer
        self.count, self.block_ms = count, block_ms
        self.redis = client or redis.Redis.from_url(redis_url)
        self.index = MeterIndex(points)
        self.source = f"redis:{stream}"
        self.stats = FeedStats()
        self.errors = ErrorList()
        self._pending_done = False
        self.ensure_group()

    def ensure_group(self) -> None:
        """Create the group at the start of the stream (and the stream) unless it exists."""
        import redis

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int | None | str = "default") -> StreamRead:
        """Own pending entries first (redelivery after a restart), then new ones, waiting up to
        ``block_ms`` (None: do not wait) for them."""
        if not self._pending_done:
            entries = self._xread("0", None)
            if entries:
                return self.convert(entries)
            self._pending_done = True
        return self.convert(self._xread(">", self.block_ms if block_ms == "default" else block_ms))

    def _xread(self, start: str, block: int | None) -> list[tuple[str, dict]]:
        resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.count, block=block)
        entries = resp[0][1] if resp else []
        return [(_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in entries if f is not None]

    def ack(self, ids: list[str]) -> int:
        return int(self.redis.xack(self.stream, self.group, *ids)) if ids else 0

    def convert(self, entries: list[tuple[str, dict]]) -> StreamRead:
        """Stream entries to Readings; unknown meters and bad times to the error list."""
        ids = [i for i, _ in entries]
        cols = {k: pa.array([f.get(k) for _, f in entries], pa.string())
                for k in ("meter_id", "ts", "value", "status", "unit")}
        end, time_ok = parse_timestamps(cols["ts"])
        values, value_ok = parse_values(cols["value"])
        has_unit = any(f.get("unit") for _, f in entries)
        rows = LongRows(meter_id=cols["meter_id"], end_ns=end, time_ok=time_ok, values=values, value_ok=value_ok,
                        quality=quality_from_status(cols["status"]), unit=cols["unit"] if has_unit else None,
                        row=np.arange(len(ids)), column=[])
        conv = to_readings(rows, self.index, self.stream, self.source)
        errors = [RowError(e.where, ids[int(e.row)], e.column, e.meter_id, e.problem) for e in conv.errors]
        self._count(conv, errors)
        return StreamRead(conv.batch, ids, errors)

    def _count(self, conv: Converted, errors: list[RowError]) -> None:
        s = self.stats
        s.rows += conv.rows
        s.readings += conv.batch.num_rows
        s.bad_values += conv.bad_values
        s.unknown_meters += conv.unknown_meters
        s.bad_timestamps += conv.bad_timestamps
        self.errors.extend_bounded(errors)

    def batches(self, block_ms: int | None | str = "default") -> Iterator[pa.RecordBatch]:
        """Batches for ever; each is acknowledged when the consumer asks for the next one, i.e.
        after it has been handled (at-least-once)."""
        while True:
            got = self.read(block_ms)
            if got.batch.num_rows:
                yield got.batch
            self.ack(got.ids)


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ----------------------------------------------------------------------------- bytewax sources


class _FolderPartition(StatefulSourcePartition[pa.RecordBatch, list]):
    def __init__(self, watcher: MeterFolderWatcher, interval_s: float):
        self.watcher, self.interval_s = watcher, interval_s
        self._awake = datetime.now(timezone.utc)

    def next_batch(self) -> list[pa.RecordBatch]:
        self._awake = datetime.now(timezone.utc) + timedelta(seconds=self.interval_s)
        return self.watcher.poll()

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> list:
        return self.watcher.snapshot()


class MeterFolderSource(FixedPartitionedSource[pa.RecordBatch, list]):
    """bytewax source: one partition per drop folder; snapshot = the processed-file keys, so a
    restart does not re-read (and re-reads files moved after the last committed snapshot)."""

    def __init__(self, points: PointTable, folders: list[str | Path], *, poll_interval_s: float = 5.0,
                 **watcher_options):
        self.points, self.folders = points, [str(Path(f)) for f in folders]
        self.poll_interval_s, self.watcher_options = poll_interval_s, watcher_options

    def list_parts(self) -> list[str]:
        return list(self.folders)

    def build_part(self, step_id: str, for_part: str, resume_state: list | None) -> _FolderPartition:
        watcher = MeterFolderWatcher(self.points, for_part, resume_state=resume_state, **self.watcher_options)
        return _FolderPartition(watcher, self.poll_interval_s)


class _StreamPartition(StatefulSourcePartition[pa.RecordBatch, str | None]):
    """Emits new entries; acknowledges them when bytewax takes a snapshot after them. On resume,
    entries after the snapshot's last id that the group already delivered are read again with
    XRANGE (acknowledged or not), so nothing between the last snapshot and a crash is lost; this
    consumer's pending entries up to the snapshot id were emitted already and are acknowledged."""

    IDLE_S = 0.1

    def __init__(self, reader: RedisStreamMeterReader, last_id: str | None):
        self.reader, self.last_id = reader, last_id
        self.unacked: list[str] = []
        self.replay_upto: str | None = None
        self._awake: datetime | None = None
        if last_id is not None:
            self._resume(last_id)

    def _resume(self, last_id: str) -> None:
        r = self.reader
        r._pending_done = True
        done = r.redis.xpending_range(r.stream, r.group, min="-", max=last_id, count=1_000_000,
                                      consumername=r.consumer)
        r.ack([_s(p["message_id"]) for p in done])
        groups = {_s(g["name"]): _s(g["last-delivered-id"]) for g in r.redis.xinfo_groups(r.stream)}
        upto = groups.get(r.group, "0-0")
        self.replay_upto = None if _id_le(upto, last_id) else upto

    def _replayed(self) -> StreamRead:
        r = self.reader
        raw = r.redis.xrange(r.stream, min=f"({self.last_id}", max=self.replay_upto, count=r.count)
        if len(raw) < r.count:
            self.replay_upto = None
        return r.convert([(_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in raw])

    def next_batch(self) -> list[pa.RecordBatch]:
        got = self._replayed() if self.replay_upto is not None else self.reader.read(block_ms=None)
        if got.ids:
            self.unacked.extend(got.ids)
            self.last_id = got.ids[-1]
        idle = not got.ids and self.replay_upto is None
        self._awake = datetime.now(timezone.utc) + timedelta(seconds=self.IDLE_S) if idle else None
        return [got.batch] if got.batch.num_rows else []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> str | None:
        self.reader.ack(self.unacked)
        self.unacked = []
        return self.last_id


def _id_le(a: str, b: str) -> bool:
    ta, tb = tuple(map(int, a.split("-"))), tuple(map(int, b.split("-")))
    return ta <= tb


class RedisStreamMeterSource(FixedPartitionedSource[pa.RecordBatch, str | None]):
    """bytewax source over one Redis Stream (one partition); snapshot = last emitted entry id."""

    def __init__(self, points: PointTable, redis_url: str, stream: str, group: str, consumer: str, **options):
        self.points, self.redis_url, self.stream = points, redis_url, stream
        self.group, self.consumer, self.options = group, consumer, options

    def list_parts(self) -> list[str]:
        return [self.stream]

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _StreamPartition:
        reader = RedisStreamMeterReader(self.points, self.redis_url, for_part, self.group, self.consumer,
                                        **self.options)
        return _StreamPartition(reader, resume_state)


__all__ = [
    "RowError", "FeedStats", "MeterIndex", "read_meter_file", "MeterFolderWatcher", "MeterDeduplicator",
    "MqttMeterSubscriber", "RedisStreamMeterReader", "MeterFolderSource", "RedisStreamMeterSource",
    "epoch_to_ns", "parse_timestamps", "parse_values", "quality_from_status", "decode_mqtt",
]
