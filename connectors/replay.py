"""Replay a recorded Parquet history as Reading batches in event-time order, paced by a clock.

One flow serves live runs, replays and what-if studies; only the source and the clock differ
(DESIGN.md). So the replay takes its clock as a ``now``/``sleep`` pair: tests pass a fake one and
never wait, a live replay uses ``time.monotonic``/``time.sleep``, and ``speed=inf`` does not sleep.

Inputs: the shared benchmarks' ``readings.parquet`` (``ts``, ``point``, ``value``; quality good) or
files in the Reading schema (quality and source kept). Values are already SI.

Batches: at a finite speed, one batch per distinct timestamp (split at ``batch_rows``), released
when the virtual clock reaches that time: ``wall = wall0 + (ts - ts0) / speed``. At ``inf`` speed,
``batch_rows`` rows per batch as fast as they can be read. The position is (rows emitted, last ts),
so a replay built with ``resume=`` that position continues with the next row, no gap, no repeat.

>>> import tempfile, pyarrow.parquet as pq
>>> path = tempfile.mkdtemp() + "/r.parquet"
>>> pq.write_table(pa.table({"ts": pa.array([0, 0, 60 * NS], pa.timestamp("ns", tz="UTC")),
...                          "point": ["A", "B", "A"], "value": [1.0, 2.0, 3.0]}), path)
>>> clock = FakeClock()
>>> [(b.num_rows, clock.t) for b in ParquetReplay(path, speed=60.0, now=clock.now, sleep=clock.sleep)]
[(2, 0.0), (1, 1.0)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.reading import GOOD, READING_SCHEMA

NS = 1_000_000_000


class FakeClock:
    """A clock for tests and for what-if studies run as fast as possible: ``sleep`` advances ``now``."""

    def __init__(self, t: float = 0.0):
        self.t = t
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)


@dataclass(frozen=True)
class ReplayPosition:
    """Rows of the (filtered, time-sorted) history already emitted, and the last ts emitted."""

    offset: int = 0
    last_ts_ns: int | None = None


def _to_ns(t: datetime | str | int | None) -> int | None:
    """A bound as UTC ns: datetime (naive = UTC), ISO text, or ns since the epoch."""
    if t is None or isinstance(t, int):
        return t
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(pa.scalar(t, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).as_py())


def load_history(source: str | Path | Sequence[str | Path] | ds.Dataset, start: int | None = None,
                 end: int | None = None) -> pa.Table:
    """The history in the Reading schema, filtered to ``start <= ts < end``, in event-time order
    (a stable sort, so the order, and with it every resume offset, is the same on every read)."""
    dataset = source if isinstance(source, ds.Dataset) else ds.dataset(
        [str(p) for p in source] if isinstance(source, (list, tuple)) else str(source), format="parquet")
    names = dataset.schema.names
    cols = [c for c in ("ts", "point", "value", "quality", "source") if c in names]
    expr = None
    ts_type = dataset.schema.field("ts").type
    for bound, op in ((start, "ge"), (end, "lt")):
        if bound is not None:
            scalar = pa.scalar(bound, pa.int64()).cast(pa.timestamp("ns", tz="UTC")).cast(ts_type)
            e = (ds.field("ts") >= scalar) if op == "ge" else (ds.field("ts") < scalar)
            expr = e if expr is None else expr & e
    table = dataset.to_table(columns=cols, filter=expr)
    return _sorted(_as_readings(table, _source_name(source)))


def _source_name(source) -> str:
    if isinstance(source, (str, Path)):
        return f"replay:{Path(source).name}"
    return "replay"


def _as_readings(table: pa.Table, source: str) -> pa.Table:
    """Columns cast to the Reading schema; quality good and ``source`` filled when absent."""
    n = table.num_rows
    ts = pc.cast(table["ts"], pa.timestamp("ns", tz="UTC")) if table.schema.field("ts").type.tz \
        else pc.assume_timezone(pc.cast(table["ts"], pa.timestamp("ns")), "UTC")
    quality = table["quality"].cast(pa.int8()) if "quality" in table.column_names \
        else pa.array(np.full(n, GOOD, np.int8))
    src = table["source"].cast(pa.string()) if "source" in table.column_names else pa.repeat(pa.scalar(source), n)
    return pa.table([table["point"].cast(pa.string()), ts, table["value"].cast(pa.float64()), quality, src],
                    schema=READING_SCHEMA)


def _sorted(table: pa.Table) -> pa.Table:
    ts = table["ts"].cast(pa.int64()).to_numpy()
    if len(ts) < 2 or (np.diff(ts) >= 0).all():
        return table.combine_chunks()
    return table.take(pa.array(np.argsort(ts, kind="stable"))).combine_chunks()


class ParquetReplay:
    """Iterate a Parquet history as Reading batches, paced at ``speed`` times real time.

    ``now``/``sleep`` are the clock (seconds, monotonic); pass a :class:`FakeClock`'s to test or to
    run a study without waiting. ``position`` after each batch is what to pass back as ``resume``.
    """

    def __init__(self, path_or_dataset, *, speed: float = 1.0, start=None, end=None, batch_rows: int = 65_536,
                 now: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 resume: ReplayPosition | None = None):
        if not speed > 0:
            raise ValueError("speed must be > 0 (inf for as fast as possible)")
        self.source, self.speed, self.batch_rows = path_or_dataset, float(speed), batch_rows
        self.start, self.end, self.now, self.sleep = _to_ns(start), _to_ns(end), now, sleep
        self.table = load_history(path_or_dataset, self.start, self.end)
        self.ts = self.table["ts"].cast(pa.int64()).to_numpy()
        self.position = self._check(resume or ReplayPosition())
        self._origin: tuple[float, int] | None = None       # (wall, event ns) the pacing counts from

    def _check(self, pos: ReplayPosition) -> ReplayPosition:
        """A resume position must agree with the history: the row before it has its last ts."""
        if pos.offset and (pos.offset > len(self.ts) or int(self.ts[pos.offset - 1]) != pos.last_ts_ns):
            raise ValueError(f"resume position {pos} does not match this history (changed file or filter?)")
        return pos

    @property
    def done(self) -> bool:
        return self.position.offset >= len(self.ts)

    def next_span(self) -> tuple[int, int]:
        """Row range of the next batch: one timestamp at a finite speed, ``batch_rows`` at inf."""
        i = self.position.offset
        if math.isinf(self.speed):
            return i, min(i + self.batch_rows, len(self.ts))
        j = int(np.searchsorted(self.ts, self.ts[i], side="right"))
        return i, min(j, i + self.batch_rows)

    def due_in(self) -> float:
        """Seconds of clock time until the next batch is due (<= 0: now)."""
        if self.done or math.isinf(self.speed):
            return 0.0
        t = int(self.ts[self.position.offset])
        if self._origin is None:
            self._origin = (self.now(), t)
        wall0, ts0 = self._origin
        return wall0 + (t - ts0) / NS / self.speed - self.now()

    def take(self) -> pa.RecordBatch:
        """The next batch, without waiting, and move the position past it."""
        i, j = self.next_span()
        batch = self.table.slice(i, j - i).to_batches()[0] if j > i else pa.RecordBatch.from_pylist([], READING_SCHEMA)
        self.position = ReplayPosition(j, int(self.ts[j - 1]))
        return batch

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while not self.done:
            wait = self.due_in()
            if wait > 0:
                self.sleep(wait)
            yield self.take()


class _ReplayPartition(StatefulSourcePartition[pa.RecordBatch, ReplayPosition]):
    """Uses bytewax's ``next_awake`` for pacing instead of sleeping in ``next_batch``."""

    def __init__(self, replay: ParquetReplay):
        self.replay = replay

    def next_batch(self) -> list[pa.RecordBatch]:
        if self.replay.done:
            raise StopIteration
        if self.replay.due_in() > 0:
            return []
        return [self.replay.take()]

    def next_awake(self) -> datetime | None:
        wait = self.replay.due_in()
        return datetime.now(timezone.utc) + timedelta(seconds=wait) if wait > 0 else None

    def snapshot(self) -> ReplayPosition:
        return self.replay.position


class ParquetReplaySource(FixedPartitionedSource[pa.RecordBatch, ReplayPosition]):
    """bytewax source: one partition per Parquet file; snapshot = (row offset, last ts), so a
    restarted replay resumes with the next row. Each file is paced from its own first timestamp."""

    def __init__(self, paths: Sequence[str | Path], *, speed: float = float("inf"), start=None, end=None,
                 batch_rows: int = 65_536):
        self.paths = [str(Path(p)) for p in paths]
        self.options = {"speed": speed, "start": start, "end": end, "batch_rows": batch_rows}

    def list_parts(self) -> list[str]:
        return list(self.paths)

    def build_part(self, step_id: str, for_part: str, resume_state: ReplayPosition | None) -> _ReplayPartition:
        return _ReplayPartition(ParquetReplay(for_part, resume=resume_state, **self.options))


__all__ = ["ParquetReplay", "ParquetReplaySource", "ReplayPosition", "FakeClock", "load_history"]
