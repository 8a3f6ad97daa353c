"""``pipetwin publish``: an edge gateway. It reads the field the way ``pipetwin run`` does (the OPC-UA
subscription, the Modbus poller, the meter drop folder: ``field_sources``) and publishes every
Reading batch, unjudged, to a Kafka topic keyed by zone, so that flows on other machines read the
site from Kafka (docs/deployment.md, "More than one machine"). The quality gate stays in the flow:
an edge that dropped readings would hide them from the quarantine and its counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source

from pipetwin.connectors.kafka import ReadingProducerSink
from pipetwin.connectors.points import PointTable
from pipetwin.flows.run import RunOptions
from pipetwin.twin.model import NetworkModel


@dataclass
class PublishStats:
    topic: str
    partitions: int
    rows: int
    messages: int
    delivered: int
    failed: int
    last_error: str | None


def build_publish_flow(sources: list[Source], sink: ReadingProducerSink) -> Dataflow:
    """Every source's Reading batches, merged, into ``sink``."""
    flow = Dataflow("pipetwin_publish")
    # RecordBatch in the Reading schema
    inputs = [op.input(f"field_{i}", flow, s) for i, s in enumerate(sources)]
    batches = inputs[0] if len(inputs) == 1 else op.merge("field", *inputs)
    op.output("kafka", batches, sink)
    return flow


def publish(model: NetworkModel, points: PointTable, options: RunOptions, say=print) -> PublishStats:
    """Read the field at ``options``' host, ports and meter inbox until ``duration_s`` (or Ctrl-C)
    and publish to ``options.kafka_topics[0]`` (made with ``kafka_partitions`` if missing), keyed by
    ``kafka_zones`` k-means zones of ``model``."""
    import logging

    from bytewax.testing import run_main

    from pipetwin.connectors.kafka import ZoneMap, ensure_topic, zone_partitions
    from pipetwin.flows.run import field_sources

    if options.kafka is None:
        raise ValueError("publish needs --kafka")
    for name in ("asyncua", "pymodbus"):      # reconnects are counted by the sources, not logged
        logging.getLogger(name).setLevel(logging.CRITICAL)
    topic = options.kafka_topics[0]
    partitions = ensure_topic(options.kafka, topic, options.kafka_partitions)
    zones = ZoneMap.from_model(model, points, n_zones=options.kafka_zones)
    used = zone_partitions(set(zones.zones.tolist()), partitions)
    say(f"kafka {options.kafka} topic={topic} partitions={partitions} zones="
        + " ".join(f"{p}:{','.join(z)}" for p, z in used.items() if z))
    sources = field_sources(points, options, say)
    if not sources:
        raise ValueError("the point table has no OPC-UA, Modbus or meter points to publish")
    sink = ReadingProducerSink(options.kafka, topic, zones)
    try:
        run_main(build_publish_flow(sources, sink))
    except KeyboardInterrupt:
        pass
    t = sink.totals()
    return PublishStats(topic, partitions, t.rows, t.messages, t.delivered, t.failed, t.last_error)
