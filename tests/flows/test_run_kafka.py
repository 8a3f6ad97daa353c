"""Cluster mode end to end on a real broker (tests/kafka_broker.py): ``pipetwin simulate --kafka``
in a process of its own publishes the field's readings to a topic of 2 partitions keyed by zone,
``pipetwin run --kafka`` (``flows.run.run``, no simulator of its own, 2 workers) reads them through
the same flow, and the twin's state lands in the embedded Redis. The slow test runs the flow as a
bytewax cluster of two processes (``--addresses``/``--process-id``), one partition each."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pyarrow.dataset as ds
import pytest

from pipetwin.connectors.kafka import ZoneMap, partition_for_key
from tests.flows.test_cluster import free_ports
from tests.kafka_broker import delete_topic, kafka_broker, new_topic  # noqa: F401  (kafka_broker: a fixture)


def _start_simulator(broker: str, topic: str, duration_s: float) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "pipetwin.cli", "simulate", "schutterwald", "--kafka", broker,
                             "--kafka-topic", topic, "--kafka-zones", "4", "--no-opcua", "--no-modbus", "--quiet",
                             "--start", "now", "--duration", str(duration_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("kafka "):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or not any(x.startswith("kafka ") for x in lines):
        proc.kill()
        raise AssertionError("the simulator did not start publishing:\n" + "\n".join(lines[-30:]))
    return proc, lines


def test_simulator_to_kafka_to_flow_to_redis(kafka_broker, tmp_path):
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example
    from pipetwin.flows.run import RunOptions, run
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    scada = {p for p, proto in zip(points.ids, points.protocol) if proto in ("opcua", "modbus")}
    twin_sensors = [p for p, q in zip(points.ids, points.quantity) if p in scada and q in ("pressure", "flow")]
    zones = ZoneMap.from_model(model, points, n_zones=4)
    spread = {partition_for_key(z, 2) for z in set(zones.zones.tolist())}
    assert spread == {0, 1}, "the test needs zones in both partitions"

    topic = new_topic(kafka_broker, 2)
    proc, sim_lines = _start_simulator(kafka_broker, topic, duration_s=60)
    said: list[str] = []
    try:
        started = time.monotonic()
        options = RunOptions(duration_s=10.0, historian=str(tmp_path / "historian"),
                             meter_inbox=str(tmp_path / "inbox"), audit_ledger=None, simulator=False,
                             progress=False, dashboard=False, kafka=kafka_broker, kafka_topics=(topic,),
                             kafka_from_start=True, workers=2)
        summary = run(model, points, options, say=said.append)
        flow_s = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
        delete_topic(kafka_broker, topic)
    print(f"flow_seconds={flow_s:.1f}")
    print("\n".join(sim_lines[:3]))
    assert any(line.startswith("kafka ") and f"topic={topic} partitions=2" in line for line in said), said
    assert any("partitions=2" in line for line in sim_lines), sim_lines
    # the twin's state in the embedded Redis: every SCADA point arrived through Kafka
    assert summary, "no twin state in Redis"
    assert summary["sensors_reporting"] == len(twin_sensors)
    assert summary["converged"] in (True, "true", 1)
    assert summary["kafka_errors"] == 0
    readings = ds.dataset(str(tmp_path / "historian" / "readings"), format="parquet").to_table(
        columns=["point", "source"])
    sources = set(readings.column("source").to_pylist())
    assert sources <= {"kafka-gateway:opcua", "kafka-gateway:modbus", "kafka-gateway:meter"}, sources
    assert set(readings.column("point").to_pylist()) == scada
    # both partitions' zones are there
    got_zones = set(zones.zone_of(readings.column("point").combine_chunks()).tolist())
    assert {partition_for_key(z, 2) for z in got_zones} == {0, 1}


@pytest.mark.slow
def test_two_flow_processes_share_the_partitions(kafka_broker, tmp_path):
    """``pipetwin run --addresses A;B --process-id 0|1``: a bytewax cluster of two processes on
    loopback, one Redis. A message that is not a Reading batch in each partition shows which
    process read which partition (each reports what it skips); the twin still sees every sensor."""
    from confluent_kafka import Producer

    from pipetwin.connectors.points import load_points
    from pipetwin.data import example
    from pipetwin.flows.redis_embedded import connect, start_embedded_redis
    from pipetwin.flows.sinks.redis_sink import read_state
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    twin_sensors = [p for p, proto, q in zip(points.ids, points.protocol, points.quantity)
                    if proto in ("opcua", "modbus") and q in ("pressure", "flow")]
    topic = new_topic(kafka_broker, 2)
    keys = {partition_for_key(f"junk-{i}", 2): f"junk-{i}".encode() for i in range(20)}
    raw = Producer({"bootstrap.servers": kafka_broker, "partitioner": "murmur2_random"})
    for p in (0, 1):
        raw.produce(topic, key=keys[p], value=b"not a reading batch")
    assert raw.flush(30) == 0
    del raw                       # its connection would outlive the session's broker (log noise at exit)
    redis = start_embedded_redis(port=0)
    sim, _ = _start_simulator(kafka_broker, topic, duration_s=90)
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    procs = []
    try:
        for i in range(2):
            folder = tmp_path / f"proc{i}"
            folder.mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pipetwin.cli", "run", "--no-simulator", "--no-dashboard", "--quiet",
                 "--kafka", kafka_broker, "--kafka-topic", topic, "--kafka-from-start", "--redis-url", redis.url,
                 "--addresses", addresses, "--process-id", str(i), "--duration", "12"],
                cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
        for i, (proc, out) in enumerate(zip(procs, outputs)):
            assert proc.returncode == 0, f"process {i}:\n{out[-3000:]}"
        state = read_state(connect(redis.url), model.name)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        sim.terminate()
        sim.wait(30)
        redis.close()
        delete_topic(kafka_broker, topic)
    read_by = [{p for p in (0, 1) if f"{topic}[{p}]" in out} for out in outputs]
    assert sorted(map(sorted, read_by)) == [[0], [1]], outputs        # one partition each
    assert all("kafka_errors=1" in out for out in outputs), outputs
    assert state and state["summary"]["sensors_reporting"] == len(twin_sensors)
