"""Cluster mode end to end on a real broker (tests/kafka_broker.py): ``pipetwin simulate --kafka``
in a process of its own publishes the field's readings to a topic of 2 partitions keyed by zone,
``pipetwin run --kafka`` (``flows.run.run``, no simulator of its own) reads them through the same
flow, and the twin's state lands in the embedded Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pyarrow.dataset as ds

from pipetwin.connectors.kafka import ZoneMap, partition_for_key
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
                             kafka_from_start=True)
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
    readings = ds.dataset(str(tmp_path / "historian" / "readings"), format="parquet").to_table(
        columns=["point", "source"])
    sources = set(readings.column("source").to_pylist())
    assert sources <= {"kafka-gateway:opcua", "kafka-gateway:modbus", "kafka-gateway:meter"}, sources
    assert set(readings.column("point").to_pylist()) == scada
    # both partitions' zones are there
    got_zones = set(zones.zone_of(readings.column("point").combine_chunks()).tolist())
    assert {partition_for_key(z, 2) for z in got_zones} == {0, 1}
