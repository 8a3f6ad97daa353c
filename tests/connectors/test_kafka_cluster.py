"""Cluster mode's parts: what ``--kafka`` options accept, which partition a zone lands in (Kafka's
murmur2 rule, checked against Kafka's own test vectors and against where a real broker puts the
messages), the readings topic made when missing, a live source that reads only new readings and
ends after its duration, and the simulator publishing its steps keyed by zone. Broker tests use
tests/kafka_broker.py (a real Kafka-protocol broker, or skipped)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

from pipetwin.connectors.kafka import (DecodedReadingSource, ReadingProducer, ZoneMap, bootstrap_servers,
                                       check_topic, ensure_topic, murmur2, partition_for_key,
                                       zone_partitions)
from pipetwin.connectors.reading import BAD, GOOD, readings_batch
from tests.kafka_broker import delete_topic, kafka_broker, new_topic, read_topic  # noqa: F401  (kafka_broker: a fixture)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


# --- partitions --------------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [      # Kafka's UtilsTest.testMurmur2 (clients/.../utils)
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
])
def test_murmur2_matches_kafkas_own_vectors(data, expected):
    assert murmur2(data) == expected


def test_partition_for_key_is_stable_and_every_partition_is_listed():
    zones = [f"zone-{i}" for i in range(20)]
    for n in (1, 2, 3, 8, 24):
        got = [partition_for_key(z, n) for z in zones]
        assert all(0 <= p < n for p in got)
        assert got == [partition_for_key(z.encode(), n) for z in zones]     # str and bytes agree
        spread = zone_partitions(zones + zones[:3], n)
        assert sorted(spread) == list(range(n))
        assert sorted(z for members in spread.values() for z in members) == sorted(zones)
    assert len(set(partition_for_key(z, 8) for z in zones)) > 3             # it does spread
    with pytest.raises(ValueError):
        partition_for_key("zone-0", 0)


# --- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("localhost:9092", ["localhost:9092"]),
    (" kafka:19092 ,10.0.0.5:9093,", ["kafka:19092", "10.0.0.5:9093"]),
    ("[::1]:9092", ["[::1]:9092"]),
    (["a:1", "b:2"], ["a:1", "b:2"]),
])
def test_bootstrap_servers_accepts(text, expected):
    assert bootstrap_servers(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "localhost", "localhost:", ":9092", "host:port", "host:0",
                                  "host:70000", "kafka://host:9092", "a b:1"])
def test_bootstrap_servers_rejects_with_the_reason(text):
    with pytest.raises(ValueError, match="host:port|bootstrap"):
        bootstrap_servers(text)


def test_topic_names():
    assert check_topic("pipetwin.readings") == "pipetwin.readings"
    for bad in ("", ".", "..", "has space", "ümlaut", "x" * 250, "a/b"):
        with pytest.raises(ValueError):
            check_topic(bad)


def test_run_options_check_and_normalise_kafka():
    from pipetwin.flows.run import RunOptions

    opts = RunOptions(kafka=" a:1 , b:2", kafka_topics=("t1", "t2"))
    assert opts.kafka == "a:1,b:2" and opts.kafka_topics == ("t1", "t2")
    assert RunOptions().kafka is None
    for bad in (dict(kafka="nohost"), dict(kafka="a:1", kafka_topics=("bad topic",)),
                dict(kafka="a:1", kafka_topics=()), dict(kafka="a:1", kafka_partitions=0)):
        with pytest.raises(ValueError):
            RunOptions(**bad)


def test_cli_parses_the_kafka_options():
    from pipetwin.cli import build_parser

    args = build_parser().parse_args(["run", "--kafka", "k:9092", "--kafka-topic", "a", "--kafka-topic", "b",
                                      "--kafka-from-start"])
    assert (args.kafka, args.kafka_topic, args.kafka_from_start, args.kafka_zones) == ("k:9092", ["a", "b"], True, 4)
    args = build_parser().parse_args(["simulate", "--kafka", "k:9092", "--kafka-partitions", "2", "--start", "now"])
    assert (args.kafka, args.kafka_topic, args.kafka_partitions, args.start) == ("k:9092", "pipetwin.readings", 2,
                                                                                 "now")


def test_cli_run_refuses_a_bad_bootstrap_before_starting_anything(capsys):
    from pipetwin.cli import main

    assert main(["run", "--kafka", "localhost", "--no-dashboard", "--quiet", "--duration", "1"]) == 1
    assert "expected host:port" in capsys.readouterr().err


# --- the simulator's readings ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def network():
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


def test_scada_and_meter_readings(network):
    from pipetwin.connectors.simulator_run import meter_readings, scada_readings

    _, points = network
    rows = np.array([0, 1, 2])
    values = np.array([2.0e5, np.nan, 3.5] + [0.0] * (len(points) - 3))
    batch = scada_readings(points, rows, values, T0)
    assert batch.column("point").to_pylist() == [points.ids[r] for r in rows]
    assert batch.column("quality").to_pylist() == [GOOD, BAD, GOOD]            # a dead instrument: bad
    assert batch.column("source").to_pylist() == [f"kafka-gateway:{points.protocol[r]}" for r in rows]
    assert set(batch.column("ts").cast(pa.int64()).to_pylist()) == {T0}
    meters = meter_readings({"M1": 1.5, "M2": 0.25}, T0 + 3600 * NS)
    assert meters.column("value").to_pylist() == [1.5, 0.25]
    assert meters.column("source").to_pylist() == ["kafka-gateway:meter"] * 2


# --- a live source: ends after its duration, rests when idle (an endless inner partition) ------------

class _Endless(StatefulSourcePartition):
    def __init__(self):
        self.calls = 0

    def next_batch(self):
        self.calls += 1
        return []

    def snapshot(self):
        return self.calls


class _EndlessSource(FixedPartitionedSource):
    def __init__(self):
        self.parts = {}

    def list_parts(self):
        return ["0-t", "1-t"]

    def build_part(self, step_id, for_part, resume_state):
        return self.parts.setdefault(for_part, _Endless())


def test_a_tailing_source_ends_after_run_for_and_rests_when_idle():
    inner = _EndlessSource()
    flow = Dataflow("endless")
    op.output("out", op.input("in", flow, DecodedReadingSource(inner, run_for_s=1.0, idle_s=0.05)), TestingSink([]))
    started = time.monotonic()
    run_main(flow)
    took = time.monotonic() - started
    assert 1.0 <= took < 5.0
    # a 50 ms rest after each empty poll: ~20 polls a second, not a busy loop
    assert all(5 <= part.calls <= 40 for part in inner.parts.values()), [p.calls for p in inner.parts.values()]


# --- on a real broker --------------------------------------------------------------------------------

def test_broker_puts_each_zone_where_partition_for_key_says(kafka_broker):
    from confluent_kafka import Consumer, TopicPartition

    topic = new_topic(kafka_broker, 8)
    try:
        zones = ZoneMap.from_mapping({f"P{i}": f"zone-{i}" for i in range(24)})
        batch = readings_batch([f"P{i}" for i in range(24)], [T0] * 24, np.arange(24.0), GOOD, "test")
        with ReadingProducer(kafka_broker, topic, zones) as producer:
            producer.send(batch)
        assert producer.stats.delivered == 24
        consumer = Consumer({"bootstrap.servers": kafka_broker, "group.id": "placement", "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(8)])
        placed = {}
        deadline = time.monotonic() + 30
        while len(placed) < 24 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                placed[msg.key().decode()] = msg.partition()
        consumer.close()
    finally:
        delete_topic(kafka_broker, topic)
    assert placed == {f"zone-{i}": partition_for_key(f"zone-{i}", 8) for i in range(24)}
    assert len(set(placed.values())) >= 5


def test_ensure_topic_makes_a_missing_topic_and_keeps_an_existing_one(kafka_broker):
    import uuid

    name = f"pipetwin-ensure-{uuid.uuid4().hex[:8]}"
    try:
        assert ensure_topic(kafka_broker, name, 3) == 3
        assert ensure_topic(kafka_broker, name, 5) == 3      # an existing topic keeps its partitions
    finally:
        delete_topic(kafka_broker, name)
    with pytest.raises(ValueError):
        ensure_topic(kafka_broker, "bad topic", 1)


def test_ensure_topic_says_when_there_is_no_broker():
    pytest.importorskip("confluent_kafka")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="Kafka at 127.0.0.1:1"):
        ensure_topic("127.0.0.1:1", "readings", 1, timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_broker_live_source_reads_only_what_arrives_and_ends(kafka_broker):
    """``pipetwin run --kafka``'s source: from the end of each partition (what was there before
    is history), tailing, until its duration is over."""
    from confluent_kafka import OFFSET_END

    from pipetwin.connectors.kafka import kafka_reading_source

    topic = new_topic(kafka_broker, 2)
    zones = ZoneMap.from_mapping({"P1": "north", "P2": "south"})
    try:
        with ReadingProducer(kafka_broker, topic, zones) as producer:
            producer.send(readings_batch(["P1", "P2"], [T0, T0], [1.0, 2.0], GOOD, "old"))
        source = kafka_reading_source(kafka_broker, topic, tail=True, starting_offset=OFFSET_END, run_for_s=6.0,
                                      idle_s=0.02)
        out = []
        flow = Dataflow("live")
        op.output("out", op.input("in", flow, source), TestingSink(out))

        def later():
            time.sleep(3.0)
            with ReadingProducer(kafka_broker, topic, zones) as producer:
                producer.send(readings_batch(["P1", "P2"], [T0 + NS] * 2, [3.0, 4.0], GOOD, "new"))

        writer = threading.Thread(target=later)
        writer.start()
        started = time.monotonic()
        run_main(flow)
        writer.join()
        took = time.monotonic() - started
    finally:
        delete_topic(kafka_broker, topic)
    assert 6.0 <= took < 15.0
    rows = sorted((p, v, s) for b in out for p, v, s in zip(b.column("point").to_pylist(),
                                                             b.column("value").to_pylist(),
                                                             b.column("source").to_pylist()))
    assert rows == [("P1", 3.0, "new"), ("P2", 4.0, "new")]
    assert source.errors.count == 0


async def test_simulator_publishes_every_step_keyed_by_zone(kafka_broker, network):
    from pipetwin.connectors.kafka import decode_batch
    from pipetwin.connectors.simulator import FieldSimulator
    from pipetwin.connectors.simulator_run import KafkaTarget, SimulatorRun

    model, points = network
    topic = f"pipetwin-sim-{time.time_ns()}"
    said = []
    run = SimulatorRun(FieldSimulator(model, points, seed=3), step_s=1.0, speed=float("inf"), opcua_port=None,
                       modbus_port=None, kafka=KafkaTarget(kafka_broker, topic, partitions=2, zones=4),
                       say=said.append)
    try:
        stats = await run.run(5.0)
        assert any(s.startswith(f"kafka {kafka_broker} topic={topic} partitions=2 zones=") for s in said), said
        n_scada = len(run.scada_rows)
        assert (stats.steps, stats.kafka_batches, stats.kafka_rows) == (5, 5, 5 * n_scada)
        assert run.producer.stats.failed == 0 and run.producer.stats.delivered == run.producer.stats.messages
        zones = ZoneMap.from_model(model, points, n_zones=4)
        rows = []
        for msg in read_topic(kafka_broker, topic, 2, "sim"):
            batch = decode_batch(msg.value())
            zone = msg.key().decode()
            assert set(zones.zone_of(batch.column("point")).tolist()) == {zone}
            assert msg.partition() == partition_for_key(zone, 2)
            rows.extend(zip(batch.column("point").to_pylist(), batch.column("ts").cast(pa.int64()).to_pylist()))
    finally:
        delete_topic(kafka_broker, topic)
    assert len(rows) == 5 * n_scada
    assert {p for p, _ in rows} == {points.ids[r] for r in run.scada_rows}
    assert len({t for _, t in rows}) == 5                      # one timestamp per step


async def test_simulator_publishes_nothing_for_a_protocol_in_outage(kafka_broker, network):
    import dataclasses

    from pipetwin.connectors.kafka import kafka_reading_source
    from pipetwin.connectors.simulator import FieldSimulator
    from pipetwin.connectors.simulator_run import KafkaTarget, SimulatorRun

    model, points = network
    topic = f"pipetwin-outage-{time.time_ns()}"
    run = SimulatorRun(FieldSimulator(model, points, seed=4), opcua_port=None, modbus_port=None,
                       kafka=KafkaTarget(kafka_broker, topic, partitions=2, zones=4), say=lambda _line: None)
    await run.start()
    try:
        first = run.sim.step(1.0)
        await run.publish(dataclasses.replace(first, outages=("opcua",)))     # the OPC-UA gateway is down
        second = run.sim.step(1.0)
        await run.publish(second)
    finally:
        await run.stop()
    try:
        out = []
        flow = Dataflow("outage")
        op.output("out", op.input("in", flow, kafka_reading_source(kafka_broker, topic, tail=False)),
                  TestingSink(out))
        run_main(flow)
    finally:
        delete_topic(kafka_broker, topic)
    table = pa.Table.from_batches(out)
    protocol = dict(zip(points.ids, points.protocol))
    by_step: dict[int, set] = {}
    for p, ts in zip(table.column("point").to_pylist(), table.column("ts").cast(pa.int64()).to_pylist()):
        by_step.setdefault(ts, set()).add(protocol[p])
    assert by_step == {first.ts_ns: {"modbus"}, second.ts_ns: {"opcua", "modbus"}}
