"""``pipetwin publish`` (flows/publish.py): the simulator's real OPC-UA and Modbus servers and a meter
export file, read by the edge's field sources and published to a real broker (tests/kafka_broker.py),
every message keyed by the zone of all its rows and in the partition Kafka's rule gives that zone."""

from __future__ import annotations

import time

from pipetwin.connectors.kafka import ZoneMap, decode_batch, partition_for_key
from tests.kafka_broker import delete_topic, kafka_broker, new_topic, read_topic  # noqa: F401  (kafka_broker: a fixture)


def test_edge_publishes_the_field_keyed_by_zone(kafka_broker, tmp_path):
    from pipetwin.connectors.opcua_server import free_port
    from pipetwin.connectors.points import load_points
    from pipetwin.connectors.simulator_run import write_meter_file
    from pipetwin.data import example
    from pipetwin.flows.publish import publish
    from pipetwin.flows.run import RunOptions, SimulatorThread
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    meters = [p for p, proto in zip(points.ids, points.protocol) if proto == "meter"][:5]
    inbox = tmp_path / "inbox"
    end_ns = (time.time_ns() // 3_600_000_000_000) * 3_600_000_000_000
    write_meter_file(inbox, points, {m: 0.5 for m in meters}, end_ns, 3600.0)
    field = RunOptions(duration_s=20.0, opcua_port=free_port(), modbus_port=free_port(), meter_inbox=str(inbox))
    simulator = SimulatorThread(model, points, field)
    simulator.start()
    topic = new_topic(kafka_broker, 2)
    said = []
    try:
        edge = RunOptions(duration_s=5.0, opcua_port=field.opcua_port, modbus_port=field.modbus_port,
                          meter_inbox=str(inbox), simulator=False, kafka=kafka_broker, kafka_topics=(topic,),
                          kafka_zones=4)
        stats = publish(model, points, edge, say=said.append)
        zones = ZoneMap.from_model(model, points, n_zones=4)
        seen: dict[str, set] = {}
        messages, rows = 0, 0
        for msg in read_topic(kafka_broker, topic, 2, "edge"):
            messages += 1
            batch = decode_batch(msg.value())
            rows += batch.num_rows
            zone = msg.key().decode()
            assert set(zones.zone_of(batch.column("point")).tolist()) == {zone}
            assert msg.partition() == partition_for_key(zone, 2)
            for p, s in zip(batch.column("point").to_pylist(), batch.column("source").to_pylist()):
                seen.setdefault(p, set()).add(s.split(":", 1)[0])
    finally:
        simulator.stop()
        delete_topic(kafka_broker, topic)
    assert any(line.startswith(f"kafka {kafka_broker} topic={topic} partitions=2 zones=") for line in said), said
    assert stats.failed == 0 and stats.delivered == stats.messages == messages > 0
    assert stats.rows == rows
    protocol = dict(zip(points.ids, points.protocol))
    scada = {p for p, proto in protocol.items() if proto in ("opcua", "modbus")}
    assert scada <= set(seen), sorted(scada - set(seen))[:5]            # every SCADA point went out
    assert set(meters) <= set(seen)                                      # and the meter file's reads
    for p, sources in seen.items():
        assert sources == {"meters" if protocol[p] == "meter" else protocol[p]}, (p, sources)
