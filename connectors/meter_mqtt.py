"""Meter and IoT reads over MQTT: JSON payloads on the topics of the ``mqtt`` points, decoded to
Reading batches (``decode_mqtt``, pure) by a subscriber that reconnects with backoff.

Addresses are ``topic#json.path``; the payload rules are in ``docs/meter-feeds.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pyarrow as pa

from pipetwin.connectors.meter_common import ErrorList, FeedStats, RowError, epoch_to_ns, parse_time_text, reading_batch
from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN, empty_batch

log = logging.getLogger(__name__)


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


__all__ = ["TS_FIELDS", "mqtt_mapping", "decode_mqtt", "MqttMeterSubscriber"]
