"""The Parquet historian: readings, quarantined readings, twin states, per-tick figures and alert
revisions, stored as hive-partitioned Parquet that pyarrow, pandas, polars and duckdb read directly.

Layout (docs/historian.md has the schemas and reading recipes)::

    ROOT/<kind>/network=<name>/date=YYYY-MM-DD/part-<writer>-<seq>.parquet

- **Partitioned by network and by the UTC day of the record's event time**, never the wall clock,
  so a replayed or late day lands in the same folder as the live one, and "point P over the last
  day" opens one or two folders (partition pruning) instead of the whole history.
- **Buffered, then written whole.** Rows wait per (kind, network, day) until the buffer holds
  ``max_rows`` rows or spans ``max_span_s`` seconds of event time (or on ``flush``/``close``);
  each flush writes one new complete file under a dot-prefixed temporary name and renames it into
  place, so a reader never sees half a file (a Parquet file is unreadable until its footer is
  written, and ``pyarrow.dataset`` and ``*.parquet`` globs skip the dot files).
- **File names are unique per writer** (``writer`` id plus a sequence number), so cluster
  workers share one root without locks.
- **Duplicates are removable by key**, so at-least-once delivery is enough: ``read`` drops rows
  whose key repeats (readings: network, point, ts, source; states: network, ts, point; ticks:
  network, ts; alerts: id, revision; quarantine: the whole row).
- **Recovery.** ``checkpoint()`` returns the writer id, the next sequence number and any small
  unflushed buffers (large ones are flushed first, so the state stays small). ``resume()`` from
  that state deletes this writer's files numbered at or after the sequence (written after the
  checkpoint, so the source replays their rows) and restores the buffers, which makes a bytewax
  resume exactly-once on disk; ``read``'s de-duplication covers what is left (a crash before the
  first checkpoint, a replay through the plain API).
- **Off the flow's worker thread.** The bytewax sink (``HistorianSink``) runs each partition's
  writer on a thread of its own behind a bounded queue, so a flush never holds up the twin; its
  resume state also carries the queued items and the file being written (see ``HistorianSink``).

Files hold only the kind's own columns; ``network`` and ``date`` come from the folder names (a
column stored in both places confuses duckdb's and pyarrow's hive readers).

>>> import tempfile
>>> from pipetwin.connectors.reading import readings_batch
>>> with tempfile.TemporaryDirectory() as root:
...     with Historian(root, network="north") as hist:
...         hist.write_readings(readings_batch(["P1", "P1"], [0, 86_400 * 10**9], [2.0e5, 2.1e5], 0, "t"))
...     day_two = read(root, "readings", network="north", start="1970-01-02")
...     sorted(p.name for p in (Path(root) / "readings" / "network=north").iterdir()), day_two["value"].to_pylist()
(['date=1970-01-01', 'date=1970-01-02'], [210000.0])
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from bytewax.dataflow import Stream, operator
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from pipetwin.connectors.quality import QUARANTINE_SCHEMA
from pipetwin.connectors.reading import READING_SCHEMA
from pipetwin.flows.contracts import Alert, Candidate, TwinState

NS = 1_000_000_000
DAY_NS = 86_400 * NS
TS = pa.timestamp("ns", tz="UTC")
STATE_VERSION = 1

# ----------------------------------------------------------------------------------------------
# what each kind stores

STATES_SCHEMA = pa.schema([
    pa.field("ts", TS, nullable=False),
    pa.field("point", pa.string(), nullable=False),
    pa.field("measured", pa.float64()),          # null: no reading this tick
    pa.field("estimated", pa.float64()),
    pa.field("residual", pa.float64()),          # measured - estimated; null when either is
])

TICK_COLUMNS = ("converged", "iterations", "chi2", "solve_ms", "min_pressure_pa", "min_pressure_node",
                "max_pressure_pa", "unsupplied_nodes", "sensors_reporting", "max_abs_residual",
                "zone_multipliers")
TICKS_SCHEMA = pa.schema([
    pa.field("ts", TS, nullable=False),
    pa.field("converged", pa.bool_()),
    pa.field("iterations", pa.int32()),
    pa.field("chi2", pa.float64()),
    pa.field("solve_ms", pa.float64()),
    pa.field("min_pressure_pa", pa.float64()),
    pa.field("min_pressure_node", pa.string()),
    pa.field("max_pressure_pa", pa.float64()),
    pa.field("unsupplied_nodes", pa.int32()),
    pa.field("sensors_reporting", pa.int32()),
    pa.field("max_abs_residual", pa.float64()),
    pa.field("zone_multipliers", pa.list_(pa.float64())),
    pa.field("figures", pa.string()),            # JSON: every other summary figure (inflow, line pack...)
])

ALERTS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("revision", pa.int64(), nullable=False),
    pa.field("kind", pa.string()),
    pa.field("severity", pa.string()),
    pa.field("subject", pa.string()),
    pa.field("status", pa.string()),
    pa.field("opened_ts", TS),
    pa.field("updated_ts", TS, nullable=False),
    pa.field("cleared_ts", TS),
    pa.field("message", pa.string()),
    pa.field("evidence", pa.string()),           # JSON object
    pa.field("candidates", pa.string()),         # JSON list of {element, score, x, y}
])

PARTITION_SCHEMA = pa.schema([pa.field("network", pa.string()), pa.field("date", pa.string())])


@dataclass(frozen=True)
class Kind:
    """One table of the historian: what its files hold, which column is its event time (it picks
    the day folder and serves ``start``/``end``), the key that identifies a record (duplicates by
    key are replays), and the row order inside a file (what queries filter on first, so Parquet
    row-group statistics can skip the rest)."""

    name: str
    schema: pa.Schema
    time_column: str
    keys: tuple[str, ...]
    sort: tuple[str, ...]


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("readings", READING_SCHEMA, "ts", ("network", "point", "ts", "source"), ("point", "ts")),
    Kind("quarantine", QUARANTINE_SCHEMA, "ts", ("network", *QUARANTINE_SCHEMA.names), ("point", "ts")),
    Kind("states", STATES_SCHEMA, "ts", ("network", "ts", "point"), ("point", "ts")),
    Kind("ticks", TICKS_SCHEMA, "ts", ("network", "ts"), ("ts",)),
    Kind("alerts", ALERTS_SCHEMA, "updated_ts", ("id", "revision"), ("updated_ts", "id", "revision")),
)}

_WRITER_RE = re.compile(r"^[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------------------------
# records to rows


def state_rows(state: TwinState) -> pa.Table:
    """One row per sensor for one tick. Non-finite figures become nulls, so SQL aggregates skip
    sensors that did not report instead of turning NaN."""
    n = len(state.sensor_ids)
    measured = np.asarray(state.sensor_measured, np.float64)
    estimated = np.asarray(state.sensor_estimated, np.float64)
    return pa.table([pa.array(np.full(n, state.ts_ns, np.int64), TS), pa.array(state.sensor_ids, pa.string()),
                     _nullable(measured), _nullable(estimated), _nullable(measured - estimated)],
                    schema=STATES_SCHEMA)


def tick_row(state: TwinState) -> pa.Table:
    """The tick's summary figures (``TwinState.summary``) as one row; figures without a column of
    their own go to ``figures`` as JSON so new ones need no schema change."""
    summary = state.summary()
    row = {name: _finite_or_none(summary.get(name)) for name in TICK_COLUMNS}
    extra = {k: v for k, v in summary.items() if k not in TICK_COLUMNS and k not in ("network", "ts_ns")}
    return _one_row({"ts": int(state.ts_ns), **row, "figures": _to_json(extra)}, TICKS_SCHEMA)


def alert_row(alert: Alert) -> pa.Table:
    """One alert revision as one row; evidence and candidates as JSON text (their shape varies
    by alert kind, and duckdb's ``json_extract`` and ``json.loads`` read them back)."""
    return _one_row({"id": alert.id, "revision": int(alert.revision), "kind": alert.kind,
                     "severity": alert.severity, "subject": alert.subject, "status": alert.status,
                     "opened_ts": alert.opened_ns, "updated_ts": alert.updated_ns, "cleared_ts": alert.cleared_ns,
                     "message": alert.message, "evidence": _to_json(alert.evidence),
                     "candidates": _to_json([asdict(c) for c in alert.candidates])}, ALERTS_SCHEMA)


def alerts_from_table(table: pa.Table) -> list[Alert]:
    """The inverse of ``alert_row`` (readers and writers come in pairs): ``Alert`` objects from a
    ``read(root, "alerts")`` table, in its row order."""
    for name in ("opened_ts", "updated_ts", "cleared_ts"):
        table = table.set_column(table.schema.get_field_index(name), name, pc.cast(table[name], pa.int64()))
    return [Alert(id=row["id"], kind=row["kind"], severity=row["severity"], subject=row["subject"],
                  network=row.get("network", ""), opened_ns=row["opened_ts"], updated_ns=row["updated_ts"],
                  status=row["status"], message=row["message"], evidence=json.loads(row["evidence"] or "{}"),
                  candidates=[Candidate(**c) for c in json.loads(row["candidates"] or "[]")],
                  cleared_ns=row["cleared_ts"], revision=row["revision"])
            for row in table.to_pylist()]


def _one_row(row: dict, schema: pa.Schema) -> pa.Table:
    """A one-row table in ``schema`` from plain values, timestamps given as int ns."""
    as_ints = pa.schema([f.with_type(pa.int64()) if f.type == TS else f for f in schema])
    return pa.Table.from_pylist([row], schema=as_ints).cast(schema)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def _to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=True)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in evidence and figures."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"historian: cannot store {type(value).__name__} as JSON")


def conform(kind: Kind, data: pa.Table | pa.RecordBatch) -> pa.Table:
    """``data`` as a table with exactly the kind's columns and types (extra columns dropped, so a
    batch carrying a ``network`` column does not clash with the folder name)."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    missing = [name for name in kind.schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"historian: {kind.name} rows lack columns {missing}")
    return table.select(kind.schema.names).cast(kind.schema)


# ----------------------------------------------------------------------------------------------
# paths


def network_dir(root: str | Path, kind: str, network: str) -> Path:
    """Folder of one network's rows of one kind; unusual characters are percent-encoded, which
    pyarrow's hive partitioning decodes."""
    if not network:
        raise ValueError("historian: the network name must not be empty")
    return Path(root) / kind / f"network={quote(network, safe='')}"


def day_text(day: int) -> str:
    """Days since the epoch as YYYY-MM-DD."""
    return str(np.datetime64(day, "D"))


def file_name(writer: str, seq: int) -> str:
    return f"part-{writer}-{seq:08d}.parquet"


def file_seq(name: str, writer: str) -> int | None:
    """The sequence number of ``name`` if ``writer`` wrote it (prefix match alone would also
    take writer ``w-1``'s files for writer ``w``)."""
    prefix = f"part-{writer}-"
    if not (name.startswith(prefix) and name.endswith(".parquet")):
        return None
    digits = name[len(prefix):-len(".parquet")]
    return int(digits) if digits.isdigit() else None


def write_atomic(table: pa.Table, path: Path, *, compression: str, row_group_size: int, fsync: bool) -> None:
    """Write ``path`` under a dot-prefixed temporary name and rename it into place: the rename is
    atomic on one filesystem, so a reader sees no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        pq.write_table(table, handle, compression=compression, row_group_size=row_group_size)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def stage(kind: str, network: str, data: pa.Table | pa.RecordBatch) -> list[tuple[int, pa.Table, int, int]]:
    """``data`` conformed to the kind's schema and cut by UTC day of event time: (day, rows,
    oldest ns, newest ns) per day. Pure, so a writer thread can do it outside any lock."""
    spec = KINDS[kind]
    network_dir(".", kind, network)                  # validates the name early
    table = conform(spec, data)
    if table.num_rows == 0:
        return []
    ts = pc.cast(table[spec.time_column], pa.int64()).to_numpy()
    days = ts // DAY_NS
    out = []
    for day in np.unique(days):
        mask = days == day
        part = table if mask.all() else table.filter(pa.array(mask))
        out.append((int(day), part, int(ts[mask].min()), int(ts[mask].max())))
    return out


# ----------------------------------------------------------------------------------------------
# the writer


@dataclass
class _Buffer:
    parts: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    first_ns: int = np.iinfo(np.int64).max     # earliest event time waiting here


class Historian:
    """Writes the five kinds under ``root`` (see the module docstring); ``read`` reads them back.

    ``network`` is the default for ``write_readings``/``write_quarantine`` (Reading batches do not
    carry it). ``writer`` names this writer's files (default: random); give each process or
    partition its own. A buffer is flushed at ``max_rows`` rows or when this writer's newest event
    time for that kind and network is ``max_span_s`` past the buffer's oldest row, so a quiet
    network's yesterday is written once today is well under way.
    """

    def __init__(self, root: str | Path, *, network: str | None = None, writer: str | None = None,
                 max_rows: int = 250_000, max_span_s: float = 3600.0, compression: str = "zstd",
                 row_group_size: int = 65_536, fsync: bool = True):
        self.root = Path(root)
        self.network = network
        self.writer = writer or uuid.uuid4().hex[:12]
        if not _WRITER_RE.match(self.writer):
            raise ValueError(f"historian: writer id {self.writer!r} must match {_WRITER_RE.pattern}")
        self.max_rows, self.max_span_s = max_rows, max_span_s
        self.compression, self.row_group_size, self.fsync = compression, row_group_size, fsync
        self._seq = 0
        self._buffers: dict[tuple[str, str, int], _Buffer] = {}
        self._watermark: dict[tuple[str, str], int] = {}
        self.rows_written = 0
        self.files_written = 0
        self.closed = False

    # -- writing ------------------------------------------------------------------------------

    def write_readings(self, batch: pa.RecordBatch | pa.Table, network: str | None = None) -> None:
        """Buffer Reading rows (``READING_SCHEMA``) of ``network`` (default: the constructor's)."""
        self.write("readings", self._network(network), batch)

    def write_quarantine(self, batch: pa.RecordBatch | pa.Table, network: str | None = None) -> None:
        """Buffer quarantined rows (``QUARANTINE_SCHEMA``: readings plus reason and detail)."""
        self.write("quarantine", self._network(network), batch)

    def write_state(self, state: TwinState) -> None:
        """Buffer one tick: a ``states`` row per sensor and one ``ticks`` row of summary figures."""
        self.write("states", state.network, state_rows(state))
        self.write("ticks", state.network, tick_row(state))

    def write_alert(self, alert: Alert) -> None:
        """Buffer one alert revision (filed under the day of ``updated_ns``)."""
        self.write("alerts", alert.network, alert_row(alert))

    def write(self, kind: str, network: str, data: pa.Table | pa.RecordBatch) -> None:
        """Buffer rows of any kind, split by the UTC day of their event time, then flush what is due."""
        if self.closed:
            raise ValueError("historian: write after close")
        self.apply(kind, network, stage(kind, network, data))
        for key in self.due(kind, network):
            self._flush_one(key)

    def apply(self, kind: str, network: str, staged: list[tuple[int, pa.Table, int, int]]) -> None:
        """Add ``stage``'s day parts to the buffers (cheap: no copy, no I/O)."""
        for day, part, first_ns, last_ns in staged:
            self._add(kind, network, day, part, first_ns)
            mark = (kind, network)
            self._watermark[mark] = max(self._watermark.get(mark, last_ns), last_ns)

    def _add(self, kind: str, network: str, day: int, part: pa.Table, first_ns: int) -> None:
        buffer = self._buffers.setdefault((kind, network, day), _Buffer())
        buffer.parts.append(part)
        buffer.rows += part.num_rows
        buffer.first_ns = min(buffer.first_ns, first_ns)

    def due(self, kind: str, network: str) -> list[tuple[str, str, int]]:
        """Keys of the buffers of ``kind`` and ``network`` that the flush policy says to write now."""
        mark = self._watermark.get((kind, network))
        if mark is None:
            return []
        span_ns = int(self.max_span_s * NS)
        return [key for key, buffer in sorted(self._buffers.items())
                if key[:2] == (kind, network) and (buffer.rows >= self.max_rows or mark - buffer.first_ns >= span_ns)]

    def flush(self) -> None:
        """Write every buffer as a new file."""
        for key in sorted(self._buffers):
            self._flush_one(key)

    def _flush_one(self, key: tuple[str, str, int]) -> None:
        rows = self.write_file(key, self._buffers[key], self._seq)
        del self._buffers[key]                 # only once on disk: a failed write keeps the rows
        self._seq += 1
        self.files_written += 1
        self.rows_written += rows

    def write_file(self, key: tuple[str, str, int], buffer: _Buffer, seq: int) -> int:
        """Write one buffer as file number ``seq`` (sorted, atomically renamed into place); the
        row count. Touches no state of the writer, so a background thread can run it unlocked."""
        kind, network, day = key
        table = pa.concat_tables(buffer.parts).sort_by([(c, "ascending") for c in KINDS[kind].sort])
        path = network_dir(self.root, kind, network) / f"date={day_text(day)}" / file_name(self.writer, seq)
        write_atomic(table, path, compression=self.compression, row_group_size=self.row_group_size,
                     fsync=self.fsync)
        return table.num_rows

    @property
    def rows_buffered(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def __enter__(self) -> Historian:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, kind: str, network: str | None = None, start: Any = None, end: Any = None,
             dedup: bool = True, **options: Any) -> pa.Table:
        """``read(self.root, ...)``: what is on disk (buffered rows are not)."""
        return read(self.root, kind, network, start, end, dedup, **options)

    def _network(self, network: str | None) -> str:
        network = network or self.network
        if not network:
            raise ValueError("historian: readings need a network (pass network= here or to Historian)")
        return network

    # -- recovery -----------------------------------------------------------------------------

    def checkpoint(self, carry_rows: int = 10_000) -> dict:
        """A picklable resume state: writer id, next sequence number, event-time watermarks and the
        unflushed buffers of at most ``carry_rows`` rows (as Arrow IPC). Larger buffers are flushed
        first, so the state stays small while sparse kinds (ticks, alerts) still make few files."""
        for key, buffer in sorted(self._buffers.items()):
            if buffer.rows > carry_rows:
                self._flush_one(key)
        return {"version": STATE_VERSION, "writer": self.writer, "seq": self._seq,
                "watermarks": dict(self._watermark),
                "buffers": [(kind, network, day, b.first_ns, _ipc(pa.concat_tables(b.parts)))
                            for (kind, network, day), b in sorted(self._buffers.items())]}

    @classmethod
    def resume(cls, root: str | Path, state: dict, **options: Any) -> Historian:
        """A writer that continues from ``checkpoint()``'s state: files this writer numbered at or
        after the saved sequence (written after the checkpoint, their rows are about to be replayed)
        and its leftover temporary files are deleted, and the carried buffers come back."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"historian: resume state version {state.get('version')!r} is not {STATE_VERSION}")
        hist = cls(root, writer=state["writer"], **options)
        hist._seq = int(state["seq"])
        hist.remove_orphans()
        hist._watermark = dict(state["watermarks"])
        for kind, network, day, first_ns, blob in state["buffers"]:
            table = blob if isinstance(blob, pa.Table) else pa.ipc.open_stream(blob).read_all()
            hist._add(kind, network, day, table, first_ns)
        return hist

    def remove_orphans(self) -> list[Path]:
        """Delete this writer's files numbered ``>=`` the next sequence number and its temporary
        files (a crash between write and rename). Only this writer makes such names, so other
        workers sharing the root are untouched."""
        removed = []
        for path in self.root.glob(f"*/network=*/date=*/*part-{self.writer}-*"):
            seq = file_seq(path.name, self.writer)
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp") and \
                file_seq(path.name[1:-4], self.writer) is not None
            if stale_tmp or (seq is not None and seq >= self._seq):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# ----------------------------------------------------------------------------------------------
# reading


def read(root: str | Path, kind: str, network: str | None = None, start: Any = None, end: Any = None,
         dedup: bool = True, *, points: Sequence[str] | None = None, columns: Sequence[str] | None = None,
         where: ds.Expression | None = None) -> pa.Table:
    """Rows of ``kind`` with event time in ``[start, end)`` (datetime, ISO text, numpy datetime64
    or int ns; naive means UTC), of one network or all, optionally only some ``points`` and rows
    matching ``where`` (a ``pyarrow.dataset`` expression); output columns are ``network`` then the kind's own. Only the matching network and date folders are
    listed and opened, and the time/point filter uses Parquet statistics inside them. With
    ``dedup`` rows whose key repeats (a replay after a crash) are kept once. Rows come sorted by
    network, event time, then key."""
    spec = KINDS[kind]
    start_ns, end_ns = _to_ns(start), _to_ns(end)
    files = _files(Path(root) / kind, network, start_ns, end_ns)
    names = list(columns) if columns else ["network", *spec.schema.names]
    wanted = list(dict.fromkeys([*names, *spec.keys, spec.time_column])) if dedup else names
    if not files:
        return _output_schema(spec).empty_table().select(names)
    dataset = ds.dataset(files, schema=_dataset_schema(spec), format="parquet",
                         partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
                         partition_base_dir=str(Path(root) / kind))
    expr = _filter(spec, network, start_ns, end_ns, points, where)
    table = dataset.to_table(columns=wanted, filter=expr)
    if dedup:
        table = drop_duplicates(table, spec.keys)
    order = [c for c in ("network", spec.time_column, *spec.keys) if c in table.column_names]
    return table.sort_by([(c, "ascending") for c in dict.fromkeys(order)]).select(names)


def drop_duplicates(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The first row of each distinct ``keys`` value, in the original order."""
    if table.num_rows == 0:
        return table
    rows = table.select(list(keys)).append_column("__row", pa.array(np.arange(table.num_rows)))
    first = rows.group_by(list(keys), use_threads=False).aggregate([("__row", "min")])
    return table.take(np.sort(first["__row_min"].to_numpy()))


def _files(kind_dir: Path, network: str | None, start_ns: int | None, end_ns: int | None) -> list[str]:
    """Parquet files in the folders that can hold matching rows: pruning by listing, so a year
    of history costs a directory listing per network, not a file open per day."""
    if network is not None:
        networks = [network_dir(kind_dir.parent, kind_dir.name, network)]
    else:
        networks = sorted(kind_dir.glob("network=*"))
    first = None if start_ns is None else f"date={day_text(start_ns // DAY_NS)}"
    last = None if end_ns is None else f"date={day_text((end_ns - 1) // DAY_NS)}"
    files = []
    for folder in networks:
        for day in sorted(folder.glob("date=*")) if folder.is_dir() else []:
            if (first is None or day.name >= first) and (last is None or day.name <= last):
                files.extend(str(p) for p in sorted(day.glob("*.parquet")) if not p.name.startswith("."))
    return files


def _filter(spec: Kind, network: str | None, start_ns: int | None, end_ns: int | None,
            points: Sequence[str] | None, extra: ds.Expression | None) -> ds.Expression | None:
    time = ds.field(spec.time_column)
    parts = [] if network is None else [ds.field("network") == network]
    if start_ns is not None:
        parts.append(time >= pa.scalar(start_ns, pa.int64()).cast(TS))
    if end_ns is not None:
        parts.append(time < pa.scalar(end_ns, pa.int64()).cast(TS))
    if points is not None:
        parts.append(ds.field("point").isin(list(points)))
    if extra is not None:
        parts.append(extra)
    expr = None
    for part in parts:
        expr = part if expr is None else expr & part
    return expr


def _dataset_schema(spec: Kind) -> pa.Schema:
    return pa.schema([*spec.schema, *PARTITION_SCHEMA])


def _output_schema(spec: Kind) -> pa.Schema:
    return pa.schema([PARTITION_SCHEMA.field("network"), *spec.schema])


def _to_ns(value: Any) -> int | None:
    """A time bound as int ns since the epoch, UTC."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return pa.scalar(value, TS).value
    if isinstance(value, date):
        return int(np.datetime64(value, "D").astype("datetime64[ns]").astype(np.int64))
    raise TypeError(f"historian: cannot use {type(value).__name__} as a time bound")


# ----------------------------------------------------------------------------------------------
# bytewax


SINK_KINDS = ("readings", "quarantine", "states", "alerts")


class HistorianSink(FixedPartitionedSink[Any, dict]):
    """One bytewax sink per kind (``readings``, ``quarantine``, ``states`` — which also writes
    ``ticks`` — or ``alerts``), so each stream of the flow goes straight out under its own step id.

    Upstream items are ``(network, item)`` keyed by network: the key routes a network to one
    partition (one buffer, one writer). bytewax hands a partition only the item, so the item must
    still name its network: a ``TwinState`` or ``Alert`` does, Arrow batches come as
    ``(network, batch)``. ``historian_output`` does that re-keying for you.

    Each of the ``parts`` partitions is a ``Historian``. By default (``background=True``) it lives
    on a writer thread of its own behind a queue of at most ``queue_batches`` item batches: a
    Parquet flush (sort, compress, fsync) takes tens to hundreds of milliseconds, and on bytewax's
    worker thread it would hold up every other step, twin updates included. A full queue blocks
    the worker (back-pressure); nothing accepted is ever dropped. ``background=False`` writes on
    the worker thread.

    The resume state makes a stopped and resumed run leave every item on disk once: the writer's
    next file number, its buffers and the accepted items still in the queue, taken under a lock
    without waiting for any I/O (a file being written counts as not written: its number is the
    state's, so resume deletes it and its rows come back from the state). After each snapshot the
    writer flushes buffers over ``carry_rows`` rows, so states stay about an epoch of rows.
    Options go to ``Historian`` (``max_rows``, ``max_span_s``, ``fsync``, ...).
    """

    def __init__(self, root: str | Path, kind: str, *, parts: int = 1, carry_rows: int = 10_000,
                 background: bool = True, queue_batches: int = 64, **options: Any):
        if kind not in SINK_KINDS:
            raise ValueError(f"historian sink kind {kind!r} is not one of {SINK_KINDS}")
        if queue_batches < 1:
            raise ValueError(f"historian sink queue_batches must be >= 1, got {queue_batches}")
        self.root, self.kind, self.parts, self.carry_rows = Path(root), kind, parts, carry_rows
        self.background, self.queue_batches = background, queue_batches
        self.options = options

    def list_parts(self) -> list[str]:
        """Every partition on every worker: they share the filesystem, bytewax picks the owner."""
        return [f"{self.kind}{i}" for i in range(self.parts)]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[dict]) -> StatefulSinkPartition:
        if resume_state is None:
            hist = Historian(self.root, writer=f"{for_part}-{uuid.uuid4().hex[:10]}", **self.options)
        else:
            hist = Historian.resume(self.root, resume_state, **self.options)
        pending = (resume_state or {}).get("pending", [])
        if not self.background:
            part = _HistorianPartition(hist, self.kind, self.carry_rows)
            part.write_batch(pending)
            return part
        return _BackgroundPartition(hist, self.kind, self.carry_rows, self.queue_batches, pending)


class _HistorianPartition(StatefulSinkPartition[Any, dict]):
    """Writes on bytewax's worker thread."""

    def __init__(self, hist: Historian, kind: str, carry_rows: int):
        self.hist, self.kind, self.carry_rows = hist, kind, carry_rows

    def write_batch(self, values: list[Any]) -> None:
        for value in values:
            write_item(self.hist, self.kind, value)

    def snapshot(self) -> dict:
        return self.hist.checkpoint(self.carry_rows)

    def close(self) -> None:
        self.hist.close()


_CHECKPOINTED = object()      # queue marker: a snapshot was taken, flush what it carried over carry_rows
_CLOSE = object()             # queue marker: flush everything and stop


class _BackgroundPartition(StatefulSinkPartition[Any, dict]):
    """The ``Historian`` on a writer thread. The worker only appends to ``_pending`` and the
    queue; the writer stages items (conform, cut by day) unlocked, moves them from ``_pending``
    into the buffers under ``_lock``, and writes files unlocked. So a snapshot, taken under the
    lock, sees every accepted item exactly once: in a file numbered below the state's ``seq``,
    in a buffer (``_inflight`` included) or in ``pending``."""

    def __init__(self, hist: Historian, kind: str, carry_rows: int, queue_batches: int, pending: list[Any]):
        self.hist, self.kind, self.carry_rows = hist, kind, carry_rows
        self._lock = threading.Lock()
        self._pending: deque[Any] = deque()
        self._inflight: tuple[tuple[str, str, int], _Buffer, int] | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_batches)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"historian-{hist.writer}", daemon=True)
        self._thread.start()
        if pending:
            self.write_batch(list(pending))

    # -- worker thread --------------------------------------------------------------------------

    def write_batch(self, values: list[Any]) -> None:
        if not values:
            return
        with self._lock:
            self._pending.extend(values)
        self._put(values)

    def snapshot(self) -> dict:
        self._raise_if_failed()
        with self._lock:
            hist = self.hist
            buffers = [(kind, network, day, b.first_ns, pa.concat_tables(b.parts))
                       for (kind, network, day), b in sorted(hist._buffers.items())]
            seq = hist._seq
            if self._inflight is not None:
                (kind, network, day), b, seq = self._inflight
                buffers.append((kind, network, day, b.first_ns, pa.concat_tables(b.parts)))
            state = {"version": STATE_VERSION, "writer": hist.writer, "seq": seq,
                     "watermarks": dict(hist._watermark), "buffers": buffers, "pending": list(self._pending)}
        self._put(_CHECKPOINTED)
        return state

    def close(self) -> None:
        if self._thread.is_alive():
            self._put(_CLOSE)
            self._thread.join()
        self._raise_if_failed()

    def _put(self, item: Any) -> None:
        """Block while the queue is full (back-pressure), but not on a writer that has died."""
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"historian writer {self.hist.writer} failed: {self._error!r}") from self._error

    # -- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _CLOSE:
                    self._flush(sorted(self.hist._buffers))
                    self.hist.closed = True
                    return
                if item is _CHECKPOINTED:
                    self._flush([k for k, b in sorted(self.hist._buffers.items()) if b.rows > self.carry_rows])
                    continue
                due: set[tuple[str, str, int]] = set()
                for value in item:
                    staged = [(kind, network, stage(kind, network, data)) for kind, network, data
                              in item_rows(self.kind, value)]
                    with self._lock:
                        for kind, network, parts in staged:
                            self.hist.apply(kind, network, parts)
                        self._pending.popleft()
                    due.update(key for kind, network, _ in staged for key in self.hist.due(kind, network))
                self._flush(sorted(due))
        except BaseException as exc:             # surfaced on the worker's next call
            self._error = exc

    def _flush(self, keys: list[tuple[str, str, int]]) -> None:
        hist = self.hist
        for key in keys:
            with self._lock:
                buffer = hist._buffers.pop(key, None)
                if buffer is None:
                    continue
                self._inflight = (key, buffer, hist._seq)
                hist._seq += 1
            rows = hist.write_file(key, buffer, self._inflight[2])
            with self._lock:
                self._inflight = None
                hist.files_written += 1
                hist.rows_written += rows


def item_rows(kind: str, item: Any) -> list[tuple[str, str, pa.Table | pa.RecordBatch]]:
    """One sink item as (kind, network, rows): ``(network, payload)`` or a bare ``TwinState``/``Alert``."""
    network, payload = item if isinstance(item, tuple) else (getattr(item, "network", None), item)
    if kind == "states":
        return [("states", payload.network, state_rows(payload)), ("ticks", payload.network, tick_row(payload))]
    if kind == "alerts":
        return [("alerts", payload.network, alert_row(payload))]
    if network is None:
        raise TypeError(f"historian {kind} sink: items must be (network, batch); use historian_output")
    return [(kind, network, payload)]


def write_item(hist: Historian, kind: str, item: Any) -> None:
    """One sink item into ``hist`` (see ``item_rows``)."""
    for k, network, rows in item_rows(kind, item):
        hist.write(k, network, rows)


@operator
def historian_output(step_id: str, up: Stream[tuple[str, Any]], sink: HistorianSink) -> None:
    """Write a stream of ``(network, item)`` to a ``HistorianSink`` (the key routes, the item
    keeps its network for the partition)."""
    keyed = op.map("carry_network", up, lambda item: (item[0], item))
    op.output("write", keyed, sink)


def written_files(root: str | Path, kind: str | None = None) -> Iterable[Path]:
    """Every complete Parquet file under ``root`` (one kind or all): what a reader can see."""
    pattern = f"{kind or '*'}/network=*/date=*/*.parquet"
    return (p for p in sorted(Path(root).glob(pattern)) if not p.name.startswith("."))
