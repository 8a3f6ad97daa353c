"""Meter reads pushed to a Redis Stream, read at least once through a consumer group, and the
bytewax source over one stream (snapshot = last emitted entry id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.meter_common import (ErrorList, FeedStats, RowError, parse_timestamps, parse_values,
                                              quality_from_status)
from pipetwin.connectors.meter_rows import Converted, LongRows, MeterIndex, to_readings
from pipetwin.connectors.points import PointTable


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


# ----------------------------------------------------------------------------- bytewax source


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


__all__ = ["StreamRead", "RedisStreamMeterReader", "RedisStreamMeterSource"]
