"""Reading batches to and from Kafka, partitioned by network zone (DESIGN.md, "Scale it must
reach": beyond one machine, bytewax cluster processes and Kafka topics partitioned by zone).

On the wire one Kafka message is one Arrow IPC stream (schema, one record batch, end) in the
Reading schema, keyed by the zone of its points. Kafka sends equal keys to one partition, so one
zone's readings stay in order in one partition, and a bytewax worker that owns that partition sees
them in order.

- ``encode_batch`` / ``decode_batch``: the message value, with no broker.
- ``ZoneMap``: point id -> zone name (from a mapping, e.g. the utility's GIS districts, or
  ``ZoneMap.from_model``: the twin's own k-means zones). Points it does not know go to ``default``.
- ``zone_messages``: split a batch by zone (row order kept) into ``(key, value)`` pairs.
- ``ReadingProducer``: sends batches to a topic with confluent-kafka's producer.
- ``kafka_reading_sink``: bytewax's ``KafkaSink`` with the producer settings used here; feed it
  ``reading_sink_messages`` through ``op.flat_map``. ``ReadingProducerSink``: a sink that takes
  Reading batches as they are and counts deliveries (an edge's figures).
- ``kafka_reading_source`` / ``DecodedReadingSource``: a bytewax source over bytewax's
  ``KafkaSource`` that yields Reading batches. Undecodable messages and consumer errors never stop
  the flow: they are counted in ``ReadingErrors`` and handed to ``on_error``.
- ``kafka_readings`` / ``decode_stream``: the same as an operator with two streams, ``oks``
  (Reading batches) and ``errs`` (``ReadingDecodeError``), for flows that route errors themselves.
- ``bootstrap_servers`` / ``partition_for_key`` / ``ensure_topic``: what ``--kafka`` options mean,
  which partition a zone's readings land in (Kafka's own murmur2 rule), and the readings topic made
  when it is missing.

confluent-kafka (and with it ``bytewax.connectors.kafka``) is imported only by the functions that
talk to a broker, so encoding, zoning and decoding work without it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pipetwin.connectors.reading import READING_SCHEMA, point_rows

CONTENT_HEADER = "pipetwin-content"
CONTENT_TYPE = b"reading-arrow-ipc/1"
DEFAULT_ZONE = "unzoned"
DEFAULT_TOPIC = "pipetwin.readings"
DEFAULT_PARTITIONS = 8     # docker/docker-compose.yml's KAFKA_PARTITIONS default: zones spread over workers
MAX_ROWS = 10_000          # rows per message: ~0.5 MB uncompressed, under Kafka's 1 MB default limit

# Java clients hash keys with murmur2; librdkafka's default ("consistent_random") uses CRC32.
# murmur2_random puts a zone on the same partition whichever client produced it.
PRODUCER_DEFAULTS = {
    "partitioner": "murmur2_random",
    "compression.type": "lz4",
    "linger.ms": 5,
    "enable.idempotence": True,    # retries keep a partition's order and never duplicate
}


# --- the message value ---------------------------------------------------------------------------

class ReadingDecodeError(ValueError):
    """A message that is not a Reading batch, or a consumer error, with where it came from."""

    def __init__(self, reason: str, *, topic: str | None = None, partition: int | None = None,
                 offset: int | None = None, key: bytes | None = None):
        where = f"{topic}[{partition}]@{offset}" if topic is not None else "message"
        super().__init__(f"{where}: {reason}")
        self.reason, self.topic, self.partition, self.offset, self.key = reason, topic, partition, offset, key

    def __reduce__(self):   # picklable, so bytewax can move it between workers
        return (_rebuild_error, (self.reason, self.topic, self.partition, self.offset, self.key))


def _rebuild_error(reason, topic, partition, offset, key) -> ReadingDecodeError:
    return ReadingDecodeError(reason, topic=topic, partition=partition, offset=offset, key=key)


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One Arrow IPC stream (schema, the batch, end-of-stream) in the Reading schema."""
    if not batch.schema.equals(READING_SCHEMA):
        raise ValueError(f"encode_batch: not the Reading schema: {batch.schema}")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, READING_SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_batch(value: bytes | None) -> pa.RecordBatch:
    """The Reading batch in a message value; ``ValueError`` if it is not one. Several batches in
    one stream are joined; a stream with none is an empty batch."""
    if not value:
        raise ValueError("empty message")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(value))
        schema = reader.schema
        if not schema.equals(READING_SCHEMA):
            raise ValueError(f"not the Reading schema: {schema.to_string(show_schema_metadata=False)!r}")
        batches = list(reader)
    except (pa.ArrowException, OSError) as exc:   # ArrowInvalid, ArrowIOError (OSError): truncated or not Arrow
        raise ValueError(f"not an Arrow IPC stream: {exc}") from None
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=READING_SCHEMA)
    return pa.Table.from_batches(batches, READING_SCHEMA).combine_chunks().to_batches()[0]


# --- zones ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoneMap:
    """Point id -> zone name; ids it does not know get ``default``."""

    ids: pa.Array                    # string
    zones: np.ndarray                # object (str), aligned to ids
    default: str = DEFAULT_ZONE

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], default: str = DEFAULT_ZONE) -> ZoneMap:
        ids = list(mapping)
        return cls(pa.array(ids, pa.string()), np.array([str(mapping[p]) for p in ids], dtype=object), default)

    @classmethod
    def from_model(cls, model, points, n_zones: int = 4, *, seed: int = 0, prefix: str = "zone-",
                   default: str = DEFAULT_ZONE) -> ZoneMap:
        """The twin's fallback zones (``make_zones``: k-means over consumer coordinates) for the
        points of ``points``: each point joins the zone whose centre is nearest its element (a
        node, or the middle of a link). Use the utility's own districts when it has them."""
        from pipetwin.connectors.points import QUANTITIES
        from pipetwin.twin.estimate.demand import make_zones

        node_zone = make_zones(model, n_zones, seed=seed)
        labels = sorted(set(node_zone[node_zone >= 0].tolist()))
        x, y = np.asarray(model.nodes.x, float), np.asarray(model.nodes.y, float)
        if not labels:
            return cls(pa.array(list(points.ids), pa.string()),
                       np.array([default] * len(points), dtype=object), default)
        centres = np.array([[x[node_zone == z].mean(), y[node_zone == z].mean()] for z in labels])
        zones = []
        for row, pid in enumerate(points.ids):
            idx = int(points.element_index[row])
            on_node = QUANTITIES[points.quantity[row]][1]
            if idx < 0:
                zones.append(default)
                continue
            if on_node:
                if node_zone[idx] >= 0:
                    zones.append(f"{prefix}{node_zone[idx]}")
                    continue
                px, py = x[idx], y[idx]
            else:
                a, b = model.links.from_node[idx], model.links.to_node[idx]
                px, py = (x[a] + x[b]) / 2.0, (y[a] + y[b]) / 2.0
            nearest = int(np.argmin((centres[:, 0] - px) ** 2 + (centres[:, 1] - py) ** 2))
            zones.append(f"{prefix}{labels[nearest]}")
        return cls(pa.array(list(points.ids), pa.string()), np.array(zones, dtype=object), default)

    def zone_of(self, point_column: pa.Array) -> np.ndarray:
        """The zone of every reading (object array of str)."""
        rows = point_rows(self.ids, point_column)
        out = np.full(len(rows), self.default, dtype=object)
        known = rows >= 0
        out[known] = self.zones[rows[known]]
        return out

    def names(self) -> list[str]:
        return sorted(set(self.zones.tolist()) | {self.default})


ZoneFn = Callable[[pa.Array], np.ndarray]


def _zone_fn(zones: ZoneMap | ZoneFn | str) -> ZoneFn:
    if isinstance(zones, ZoneMap):
        return zones.zone_of
    if isinstance(zones, str):      # everything in one zone
        return lambda column: np.full(len(column), zones, dtype=object)
    return zones


def split_by_zone(batch: pa.RecordBatch, zones: ZoneMap | ZoneFn | str) -> list[tuple[str, pa.RecordBatch]]:
    """``(zone, rows of that zone)`` in order of first appearance; rows keep their order."""
    if batch.num_rows == 0:
        return []
    label = np.asarray(_zone_fn(zones)(batch.column("point")), dtype=object)
    names, first = np.unique(label.astype(str), return_index=True)
    out = []
    for name in names[np.argsort(first)]:
        idx = np.flatnonzero(label == name)
        part = batch if len(idx) == batch.num_rows else batch.take(pa.array(idx, pa.int64()))
        out.append((str(name), part))
    return out


def zone_messages(batch: pa.RecordBatch, zones: ZoneMap | ZoneFn | str,
                  max_rows: int = MAX_ROWS) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka messages for a batch: one or more per zone (at most ``max_rows``
    rows each, in order), keyed by the zone name in UTF-8."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    out = []
    for zone, part in split_by_zone(batch, zones):
        key = zone.encode()
        for start in range(0, part.num_rows, max_rows):
            out.append((key, encode_batch(part.slice(start, max_rows))))
    return out


# --- options, partitions, topics ------------------------------------------------------------------

_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def bootstrap_servers(text: str | Iterable[str]) -> list[str]:
    """``host:port`` entries of a ``--kafka`` value (comma-separated, or a list), checked here so a
    typo fails at once with its reason instead of as a client that retries forever.

    >>> bootstrap_servers("kafka:19092, 127.0.0.1:9092")
    ['kafka:19092', '127.0.0.1:9092']
    >>> bootstrap_servers("[::1]:9092")
    ['[::1]:9092']
    """
    items = [b.strip() for b in (text.split(",") if isinstance(text, str) else text)]
    items = [b for b in items if b]
    if not items:
        raise ValueError("no Kafka bootstrap server given (expected host:port[,host:port...])")
    for item in items:
        host, sep, port = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "/ @"):
            raise ValueError(f"Kafka bootstrap server {item!r}: expected host:port (e.g. localhost:9092)")
    return items


def check_topic(name: str) -> str:
    """A topic name Kafka accepts (ASCII letters, digits, '.', '_', '-'; at most 249), else ``ValueError``."""
    if not name or len(name) > 249 or name in (".", "..") or not set(name) <= _TOPIC_CHARS:
        raise ValueError(f"Kafka topic {name!r}: use 1-249 of the characters a-z A-Z 0-9 . _ -")
    return name


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[length - length % 4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes | str, partitions: int) -> int:
    """The partition a keyed message goes to with ``PRODUCER_DEFAULTS`` (librdkafka's
    ``murmur2_random``, the Java client's default rule): ``(murmur2(key) & 0x7fffffff) % partitions``.
    Which zones share a partition, and so a worker, follows from this alone.

    >>> [partition_for_key(z, 2) for z in ("zone-0", "zone-1", "zone-2", "zone-3")]
    [1, 0, 1, 1]
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    raw = key.encode() if isinstance(key, str) else bytes(key)
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def zone_partitions(zones: Iterable[str], partitions: int) -> dict[int, list[str]]:
    """Partition -> the zones whose readings land in it (every partition listed, maybe empty)."""
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for zone in sorted(set(zones)):
        out[partition_for_key(zone, partitions)].append(zone)
    return out


def ensure_topic(brokers: Iterable[str] | str, topic: str, partitions: int = DEFAULT_PARTITIONS, *,
                 timeout_s: float = 30.0, add_config: Mapping[str, Any] | None = None) -> int:
    """Create ``topic`` with ``partitions`` (replication 1) unless it exists; returns the partitions
    it has (an existing topic keeps its own count). Raises ``RuntimeError`` if the broker cannot be
    reached within ``timeout_s``. Needs confluent-kafka."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    check_topic(topic)
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    admin = AdminClient({"bootstrap.servers": ",".join(bootstrap_servers(brokers)), **(add_config or {})})

    def existing() -> int | None:
        try:
            meta = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise RuntimeError(f"Kafka at {brokers}: {exc}") from None
        found = meta.topics.get(topic)
        return len(found.partitions) if found is not None and found.error is None and found.partitions else None

    have = existing()
    if have is not None:
        return have
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                 request_timeout=timeout_s)[topic]
    try:
        future.result(timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:   # made by another process meanwhile: fine
            raise RuntimeError(f"Kafka at {brokers}: creating {topic}: {exc}") from None
    have = existing()
    return have if have is not None else partitions


# --- producing -----------------------------------------------------------------------------------

@dataclass
class ProducerStats:
    batches: int = 0
    messages: int = 0       # handed to the producer
    rows: int = 0
    delivered: int = 0      # acknowledged by the broker
    failed: int = 0         # given up after the producer's own retries
    last_error: str | None = None


class ReadingProducer:
    """Sends Reading batches to ``topic``, one message per zone (split at ``max_rows``), keyed by
    zone. ``send`` only queues (the producer batches and retries in the background); ``flush``
    waits for the broker's acknowledgements. Delivery failures are counted in ``stats``, never
    raised from ``send``; ``BufferError`` (local queue full) is waited out, then retried once.

    ``producer``: an object with confluent-kafka's ``produce``/``poll``/``flush`` (tests);
    default a ``confluent_kafka.Producer`` on ``brokers`` with ``PRODUCER_DEFAULTS`` and
    ``add_config`` over them."""

    def __init__(self, brokers: Iterable[str] | str, topic: str, zones: ZoneMap | ZoneFn | str, *,
                 add_config: Mapping[str, Any] | None = None, max_rows: int = MAX_ROWS, producer=None):
        if producer is None:
            from confluent_kafka import Producer

            servers = brokers if isinstance(brokers, str) else ",".join(brokers)
            producer = Producer({"bootstrap.servers": servers, **PRODUCER_DEFAULTS, **(add_config or {})})
        self._producer, self.topic, self._zones, self.max_rows = producer, topic, zones, max_rows
        self.stats = ProducerStats()

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            self.stats.last_error = str(err)

    def send(self, batch: pa.RecordBatch) -> int:
        """Queue a batch; returns the number of messages queued."""
        messages = zone_messages(batch, self._zones, self.max_rows)
        for key, value in messages:
            kwargs = dict(key=key, value=value, headers=[(CONTENT_HEADER, CONTENT_TYPE)],
                          on_delivery=self._delivered)
            try:
                self._producer.produce(self.topic, **kwargs)
            except BufferError:
                self._producer.flush(10.0)
                self._producer.produce(self.topic, **kwargs)
            self._producer.poll(0)
        self.stats.batches += 1
        self.stats.messages += len(messages)
        self.stats.rows += batch.num_rows
        return len(messages)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for acknowledgements; returns how many messages are still in flight."""
        return int(self._producer.flush(timeout_s))

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ReadingProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reading_sink_messages(batch: pa.RecordBatch, zones: ZoneMap | ZoneFn | str, *, topic: str | None = None,
                          max_rows: int = MAX_ROWS) -> list:
    """``KafkaSinkMessage``s for bytewax's ``KafkaSink`` (use with ``op.flat_map``)."""
    from bytewax.connectors.kafka import KafkaSinkMessage

    return [KafkaSinkMessage(key, value, topic=topic, headers=[(CONTENT_HEADER, CONTENT_TYPE)])
            for key, value in zone_messages(batch, zones, max_rows)]


def kafka_reading_sink(brokers: Iterable[str], topic: str | None, add_config: Mapping[str, Any] | None = None):
    """bytewax's ``KafkaSink`` with the producer settings of ``ReadingProducer`` (murmur2 keys)."""
    from bytewax.connectors.kafka import KafkaSink

    return KafkaSink(list(brokers), topic, add_config={**PRODUCER_DEFAULTS, **(add_config or {})})


class _ProducerPartition(StatelessSinkPartition[pa.RecordBatch]):
    def __init__(self, producer: ReadingProducer, flush_s: float):
        self.producer, self.flush_s = producer, flush_s

    def write_batch(self, items: list[pa.RecordBatch]) -> None:
        for batch in items:
            if batch.num_rows:
                self.producer.send(batch)

    def close(self) -> None:
        self.producer.flush(self.flush_s)


class ReadingProducerSink(DynamicSink[pa.RecordBatch]):
    """A bytewax sink of Reading batches: one ``ReadingProducer`` per worker (keyed by zone,
    deliveries counted). ``stats`` holds each worker's ``ProducerStats``, for the figures an edge
    prints; ``close`` waits up to ``flush_s`` for the broker's acknowledgements."""

    def __init__(self, brokers: Iterable[str] | str, topic: str, zones: ZoneMap | ZoneFn | str, *,
                 add_config: Mapping[str, Any] | None = None, max_rows: int = MAX_ROWS, flush_s: float = 30.0):
        self.brokers, self.topic, self.zones = brokers, topic, zones
        self.add_config, self.max_rows, self.flush_s = dict(add_config or {}), max_rows, flush_s
        self.stats: list[ProducerStats] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        producer = ReadingProducer(self.brokers, self.topic, self.zones, add_config=self.add_config,
                                   max_rows=self.max_rows)
        self.stats.append(producer.stats)
        return _ProducerPartition(producer, self.flush_s)

    def totals(self) -> ProducerStats:
        out = ProducerStats()
        for s in self.stats:
            out.batches, out.messages, out.rows = out.batches + s.batches, out.messages + s.messages, out.rows + s.rows
            out.delivered, out.failed = out.delivered + s.delivered, out.failed + s.failed
            out.last_error = s.last_error or out.last_error
        return out


# --- consuming -----------------------------------------------------------------------------------

@dataclass
class ReadingErrors:
    """What the source could not turn into readings, per process (thread-safe): a count per
    reason kind and the latest errors."""

    count: int = 0
    by_kind: Counter = field(default_factory=Counter)
    latest: deque = field(default_factory=lambda: deque(maxlen=100))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, error: ReadingDecodeError) -> None:
        with self._lock:
            self.count += 1
            self.by_kind[error.reason.split(":", 1)[0]] += 1
            self.latest.append(error)


def decode_message(msg) -> pa.RecordBatch | ReadingDecodeError:
    """A bytewax Kafka item (``KafkaSourceMessage``, or ``KafkaError`` from a source that does not
    raise) as a Reading batch, or the error saying why not. Never raises."""
    inner = getattr(msg, "msg", None)
    err = getattr(msg, "err", None)
    if inner is not None and err is not None:        # KafkaError(err, msg)
        text = err.str() if hasattr(err, "str") else str(err)
        return ReadingDecodeError(f"kafka: {text}", topic=inner.topic, partition=inner.partition,
                                  offset=inner.offset, key=inner.key)
    try:
        return decode_batch(msg.value)
    except ValueError as exc:
        return ReadingDecodeError(f"undecodable: {exc}", topic=getattr(msg, "topic", None),
                                  partition=getattr(msg, "partition", None),
                                  offset=getattr(msg, "offset", None), key=getattr(msg, "key", None))
    except Exception as exc:   # anything else a malformed buffer provokes: still not a crash
        return ReadingDecodeError(f"undecodable: {type(exc).__name__}: {exc}", topic=getattr(msg, "topic", None),
                                  partition=getattr(msg, "partition", None),
                                  offset=getattr(msg, "offset", None), key=getattr(msg, "key", None))


class _DecodedPartition(StatefulSourcePartition[pa.RecordBatch, Any]):
    def __init__(self, inner: StatefulSourcePartition, errors: ReadingErrors,
                 on_error: Callable[[ReadingDecodeError], None] | None, *,
                 end_at: float | None = None, idle_s: float = 0.0):
        self._inner, self._errors, self._on_error = inner, errors, on_error
        self._end_at, self._idle_s = end_at, idle_s      # end_at: time.monotonic() at which to stop
        self._awake = None

    def next_batch(self) -> list[pa.RecordBatch]:
        if self._end_at is not None and time.monotonic() >= self._end_at:
            raise StopIteration()
        out = []
        items = self._inner.next_batch()    # StopIteration passes through: the partition ends
        for item in items:
            decoded = decode_message(item)
            if isinstance(decoded, ReadingDecodeError):
                self._errors.add(decoded)
                if self._on_error is not None:
                    try:
                        self._on_error(decoded)
                    except Exception:   # a failing error handler must not stop the readings
                        pass
            elif decoded.num_rows:
                out.append(decoded)
        # bytewax's Kafka partition polls for 1 ms and asks to be called again at once: on an idle
        # topic that is a busy loop per partition. An empty poll waits idle_s before the next one.
        self._awake = (datetime.now(timezone.utc) + timedelta(seconds=self._idle_s)
                       if not items and self._idle_s > 0 else None)
        return out

    def next_awake(self):
        inner = self._inner.next_awake()
        if inner is None or self._awake is None:
            return inner if inner is not None else self._awake
        return min(inner, self._awake)

    def snapshot(self):
        return self._inner.snapshot()       # the Kafka offset: resuming re-reads nothing twice

    def close(self) -> None:
        self._inner.close()


class DecodedReadingSource(FixedPartitionedSource[pa.RecordBatch, Any]):
    """Wraps a source of Kafka messages (bytewax's ``KafkaSource``, ``raise_on_errors=False``)
    and yields Reading batches. Partitions are the inner source's (one per topic partition), so
    bytewax spreads them over workers and processes. Messages that are not Reading batches, and
    consumer errors, go to ``errors`` and ``on_error``; the offset moves past them.
    ``run_for_s``: every partition ends that long after it is built (a live run's ``--duration``);
    ``idle_s``: how long a partition rests after a poll that found nothing."""

    def __init__(self, inner: FixedPartitionedSource, *, on_error: Callable[[ReadingDecodeError], None] | None = None,
                 errors: ReadingErrors | None = None, run_for_s: float | None = None, idle_s: float = 0.0):
        self.inner, self.on_error = inner, on_error
        self.errors = errors if errors is not None else ReadingErrors()
        self.run_for_s, self.idle_s = run_for_s, idle_s

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state) -> _DecodedPartition:
        end_at = None if self.run_for_s is None else time.monotonic() + self.run_for_s
        return _DecodedPartition(self.inner.build_part(step_id, for_part, resume_state), self.errors, self.on_error,
                                 end_at=end_at, idle_s=self.idle_s)


def _brokers(brokers: Iterable[str] | str) -> list[str]:
    return [b.strip() for b in brokers.split(",") if b.strip()] if isinstance(brokers, str) else list(brokers)


def kafka_reading_source(brokers: Iterable[str] | str, topics: Iterable[str] | str, *, tail: bool = True,
                         starting_offset: int | None = None, add_config: Mapping[str, Any] | None = None,
                         batch_size: int = 1000, on_error: Callable[[ReadingDecodeError], None] | None = None,
                         errors: ReadingErrors | None = None, run_for_s: float | None = None,
                         idle_s: float = 0.0) -> DecodedReadingSource:
    """A bytewax source of Reading batches from Kafka ``topics`` (bytewax's ``KafkaSource``
    underneath). ``brokers`` may be a comma-separated string (``KAFKA_BOOTSTRAP``).
    ``tail=False`` ends each partition at its current end (replays, tests). ``starting_offset``:
    default the beginning; ``confluent_kafka.OFFSET_END`` reads only what arrives from now on.
    ``run_for_s`` / ``idle_s``: see ``DecodedReadingSource``. Needs confluent-kafka."""
    from bytewax.connectors.kafka import KafkaSource
    from confluent_kafka import OFFSET_BEGINNING

    topics = [topics] if isinstance(topics, str) else list(topics)
    inner = KafkaSource(_brokers(brokers), topics, tail=tail,
                        starting_offset=OFFSET_BEGINNING if starting_offset is None else starting_offset,
                        add_config=dict(add_config or {}), batch_size=batch_size, raise_on_errors=False)
    return DecodedReadingSource(inner, on_error=on_error, errors=errors, run_for_s=run_for_s, idle_s=idle_s)


class ReadingStreams(NamedTuple):
    oks: Any     # Stream[pa.RecordBatch]
    errs: Any    # Stream[ReadingDecodeError]


def decode_stream(step_id: str, messages) -> ReadingStreams:
    """Operator: a stream of Kafka messages -> ``oks`` (Reading batches) and ``errs``."""
    import bytewax.operators as op

    decoded = op.map(f"{step_id}_decode", messages, decode_message)
    split = op.branch(f"{step_id}_ok", decoded, lambda item: not isinstance(item, ReadingDecodeError))
    oks = op.filter(f"{step_id}_nonempty", split.trues, lambda batch: batch.num_rows > 0)
    return ReadingStreams(oks, split.falses)


def kafka_readings(step_id: str, flow, brokers: Iterable[str] | str, topics: Iterable[str] | str, *,
                   tail: bool = True, starting_offset: int | None = None,
                   add_config: Mapping[str, Any] | None = None, batch_size: int = 1000) -> ReadingStreams:
    """Operator: Reading batches from Kafka as two streams, ``oks`` and ``errs`` (an error stream
    to route to a quarantine or a dead-letter topic). Needs confluent-kafka."""
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSource
    from confluent_kafka import OFFSET_BEGINNING

    topics = [topics] if isinstance(topics, str) else list(topics)
    source = KafkaSource(_brokers(brokers), topics, tail=tail,
                         starting_offset=OFFSET_BEGINNING if starting_offset is None else starting_offset,
                         add_config=dict(add_config or {}), batch_size=batch_size, raise_on_errors=False)
    return decode_stream(step_id, op.input(step_id, flow, source))



__all__ = ["CONTENT_HEADER", "CONTENT_TYPE", "DEFAULT_PARTITIONS", "DEFAULT_TOPIC", "DEFAULT_ZONE", "MAX_ROWS",
           "PRODUCER_DEFAULTS", "DecodedReadingSource", "bootstrap_servers", "check_topic", "ensure_topic", "murmur2",
           "partition_for_key", "zone_partitions",
           "ProducerStats", "ReadingDecodeError", "ReadingErrors", "ReadingProducer", "ReadingProducerSink", "ReadingStreams",
           "ZoneMap",
           "decode_batch", "decode_message", "decode_stream", "encode_batch", "kafka_reading_sink",
           "kafka_reading_source", "kafka_readings", "reading_sink_messages", "split_by_zone", "zone_messages"]
