"""``pipetwin simulate``: the field simulator served the way a gas utility's field is.

SCADA points go out through a real asyncua OPC-UA server and a real pymodbus Modbus TCP server
(the point table says which point lives where); smart-meter interval reads are written as
head-end export files (Parquet, long shape) into a folder and/or pushed to a Redis Stream. The
scenario's server outages really stop and restart the servers. Endpoints are printed on lines of
their own so a flow (or a person) can attach.

With ``kafka`` the simulator also plays the utility's field gateways: every step's SCADA values and
every meter interval are published as Reading batches (SI) to a Kafka topic, keyed by zone
(connectors/kafka.py), which is how readings reach flows on several machines. A gateway whose
protocol is in an outage publishes nothing while it lasts, as its server says nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import GOOD, readings_batch
from pipetwin.connectors.simulator import FieldSimulator, Scenario, Step

KAFKA_SOURCE = "kafka-gateway"     # the Reading ``source`` prefix of what the simulator publishes to Kafka


@dataclass
class RunStats:
    steps: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    meter_files: int = 0
    meter_reads: int = 0
    outages: int = 0
    max_iterations: int = 0
    not_converged: int = 0
    kafka_batches: int = 0
    kafka_rows: int = 0
    endpoints: dict = field(default_factory=dict)


@dataclass
class KafkaTarget:
    """Where ``SimulatorRun`` publishes readings: bootstrap servers, topic (made with
    ``partitions`` when missing), and the number of zones its points are keyed by (``ZoneMap.from_model``)."""

    bootstrap: str
    topic: str = "pipetwin.readings"
    partitions: int = 8
    zones: int = 4
    add_config: dict = field(default_factory=dict)


def scada_readings(points: PointTable, rows: np.ndarray, values: np.ndarray, ts_ns: int,
                   source: str = KAFKA_SOURCE) -> pa.RecordBatch:
    """The SCADA points at ``rows`` as one Reading batch at ``ts_ns`` (SI values; a dead instrument's
    NaN becomes a bad reading, as its OPC-UA server's Bad status does). ``source`` is suffixed with each
    point's protocol (``kafka-gateway:opcua``)."""
    rows = np.asarray(rows, np.int64)
    return readings_batch([points.ids[r] for r in rows], np.full(len(rows), ts_ns, np.int64),
                          np.asarray(values, float)[rows], GOOD, [f"{source}:{points.protocol[r]}" for r in rows])


def meter_readings(reads: dict[str, float], end_ns: int, source: str = KAFKA_SOURCE) -> pa.RecordBatch:
    """Meter interval volumes (SI, kg) as readings stamped at the interval's end, as the meter
    connectors read a head-end file."""
    return readings_batch(list(reads), np.full(len(reads), end_ns, np.int64), np.array(list(reads.values()), float),
                          GOOD, f"{source}:meter")


def write_meter_file(folder: Path, points: PointTable, reads: dict[str, float], end_ns: int,
                     period_s: float) -> Path:
    """One head-end export: ``meter_id, interval_start, interval_end, value, unit`` (long shape),
    values in each meter's own unit. Written to a temporary name and renamed, so a watcher never
    sees half a file."""
    index = points.index()
    rows = np.array([index[p] for p in reads], np.int64)
    raw = points.from_si(rows, np.array(list(reads.values())))
    end = pa.array(np.full(len(rows), end_ns, np.int64), pa.timestamp("ns", tz="UTC"))
    start = pa.array(np.full(len(rows), end_ns - int(period_s * 1e9), np.int64), pa.timestamp("ns", tz="UTC"))
    table = pa.table({"meter_id": [str(points.address[r]) for r in rows], "interval_start": start,
                      "interval_end": end, "value": raw, "unit": [points.unit[r] for r in rows]})
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(end_ns / 1e9, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    final = folder / f"meters-{stamp}.parquet"
    tmp = folder / f".{final.name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


class SimulatorRun:
    """Owns the servers and the pacing; ``FieldSimulator`` owns the physics."""

    def __init__(self, sim: FieldSimulator, *, step_s: float = 1.0, speed: float = 1.0,
                 opcua_port: int | None = 4840, modbus_port: int | None = 5020, host: str = "127.0.0.1",
                 meter_dir: str | Path | None = None, redis_url: str | None = None,
                 redis_stream: str = "pipetwin:meters", kafka: KafkaTarget | None = None, say=print):
        self.sim, self.points = sim, sim.points
        self.step_s, self.speed = float(step_s), float(speed)
        self.host, self.opcua_port, self.modbus_port = host, opcua_port, modbus_port
        self.meter_dir = Path(meter_dir) if meter_dir else None
        self.redis_url, self.redis_stream = redis_url, redis_stream
        self.kafka = kafka
        self.producer = None
        self.say = say
        self.stats = RunStats()
        self.opcua = self.modbus = self.redis = None
        rows = np.arange(len(self.points))
        self.scada_rows = rows[[p in ("opcua", "modbus") for p in self.points.protocol]]
        self.opcua_rows = rows[[p == "opcua" for p in self.points.protocol]]
        self.modbus_rows = rows[[p == "modbus" for p in self.points.protocol]]
        self._down: set[str] = set()

    async def start(self) -> None:
        if len(self.opcua_rows) and self.opcua_port is not None:
            from pipetwin.connectors.opcua_server import OpcUaFieldServer

            self.opcua = OpcUaFieldServer(self.points, self.opcua_port)
            endpoint = await self.opcua.start()
            self.stats.endpoints["opcua"] = endpoint
            self.say(endpoint)
        if len(self.modbus_rows) and self.modbus_port is not None:
            from pipetwin.connectors.modbus_server import ModbusFieldServer

            self.modbus = ModbusFieldServer(self.points, self.host, self.modbus_port)
            address = await self.modbus.start()
            self.stats.endpoints["modbus"] = address
            self.say(address if address.startswith("modbus ") else f"modbus {address}")
        if self.meter_dir is not None:
            self.stats.endpoints["meters"] = str(self.meter_dir.resolve())
            self.say(f"meters {self.meter_dir.resolve()}")
        if self.redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(self.redis_url)
            await self.redis.ping()
            self.stats.endpoints["redis"] = self.redis_url
            self.say(f"{self.redis_url} stream={self.redis_stream}")
        if self.kafka is not None:
            self.say(await asyncio.to_thread(self._start_kafka))

    def _start_kafka(self) -> str:
        """The topic (made if missing) and the producer; the line that says where readings go."""
        from pipetwin.connectors.kafka import ReadingProducer, ZoneMap, ensure_topic, zone_partitions

        k = self.kafka
        partitions = ensure_topic(k.bootstrap, k.topic, k.partitions, add_config=k.add_config)
        zones = ZoneMap.from_model(self.sim.base_model, self.points, n_zones=k.zones)
        self.producer = ReadingProducer(k.bootstrap, k.topic, zones, add_config=k.add_config)
        used = zone_partitions(set(zones.zones.tolist()), partitions)
        spread = " ".join(f"{p}:{','.join(z)}" for p, z in used.items() if z)
        self.stats.endpoints["kafka"] = f"{k.bootstrap}/{k.topic}"
        return f"kafka {k.bootstrap} topic={k.topic} partitions={partitions} zones={spread}"

    async def stop(self) -> None:
        for server in (self.opcua, self.modbus):
            if server is not None:
                await server.stop()
        if self.opcua is not None and hasattr(self.opcua, "close"):
            await self.opcua.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.producer is not None:
            left = await asyncio.to_thread(self.producer.flush, 10.0)
            if left or self.producer.stats.failed:
                self.say(f"kafka: {self.producer.stats.failed} messages failed, {left} undelivered "
                         f"({self.producer.stats.last_error})")

    async def _outages(self, step: Step) -> None:
        """Stop a server when its outage starts, start it again (same port) when it ends."""
        now = set(step.outages)
        for name, server in (("opcua", self.opcua), ("modbus", self.modbus)):
            if server is None:
                continue
            if name in now and name not in self._down:
                await server.stop()
                self._down.add(name)
                self.stats.outages += 1
            elif name not in now and name in self._down:
                await server.start()
                self._down.discard(name)

    async def publish(self, step: Step) -> None:
        await self._outages(step)
        values = step.scada
        if self.opcua is not None and "opcua" not in self._down:
            from asyncua import ua

            live = {self.points.ids[r]: float(values[r]) for r in self.opcua_rows if np.isfinite(values[r])}
            for r in self.opcua_rows:
                if not np.isfinite(values[r]):     # a dead instrument: the server says Bad, keeps the value
                    self.opcua.set_status(self.points.ids[r], ua.StatusCodes.BadSensorFailure)
            await self.opcua.set_values(live, step.ts_ns)
        if self.modbus is not None and "modbus" not in self._down:
            # a dead instrument on an RTU leaves its register stale
            self.modbus.set_values({self.points.ids[r]: float(values[r]) for r in self.modbus_rows
                                    if np.isfinite(values[r])})
        if self.producer is not None:
            live = [r for r in self.scada_rows if self.points.protocol[r] not in step.outages]
            if live:
                self._send(scada_readings(self.points, np.array(live, np.int64), values, step.ts_ns))
        if step.meter_reads and "meters" not in step.outages:
            await self._meters(step)

    def _send(self, batch: pa.RecordBatch) -> None:
        self.producer.send(batch)
        self.stats.kafka_batches += 1
        self.stats.kafka_rows += batch.num_rows

    async def _meters(self, step: Step) -> None:
        reads = step.meter_reads
        end_ns = step.ts_ns + int(self.step_s * 1e9)
        if self.meter_dir is not None:
            write_meter_file(self.meter_dir, self.points, reads, end_ns, self.sim.meter_period_s)
            self.stats.meter_files += 1
        if self.redis is not None:
            index = self.points.index()
            pipe = self.redis.pipeline()
            rows = np.array([index[p] for p in reads], np.int64)
            raw = self.points.from_si(rows, np.array(list(reads.values())))
            for r, v in zip(rows, raw):
                pipe.xadd(self.redis_stream, {"meter_id": str(self.points.address[r]), "ts": str(end_ns),
                                              "value": repr(float(v))})
            await pipe.execute()
        if self.producer is not None:
            self._send(meter_readings(reads, end_ns))
        self.stats.meter_reads += len(reads)

    async def run(self, duration_s: float | None = None, on_step=None) -> RunStats:
        """Step until ``duration_s`` of simulated time (None: until cancelled), paced at ``speed``
        times real time (inf: as fast as the solver goes)."""
        await self.start()
        wall0 = time.monotonic()
        steps = math.inf if duration_s is None else int(round(duration_s / self.step_s))
        try:
            k = 0
            while k < steps:
                step = self.sim.step(self.step_s)
                await self.publish(step)
                self.stats.steps += 1
                self.stats.sim_seconds = step.time_s + self.step_s
                self.stats.max_iterations = max(self.stats.max_iterations, step.result.iterations)
                self.stats.not_converged += int(not step.result.converged)
                if on_step is not None:
                    on_step(step, self.stats)
                k += 1
                if math.isfinite(self.speed):
                    delay = wall0 + k * self.step_s / self.speed - time.monotonic()
                    await asyncio.sleep(max(delay, 0.0))
                else:
                    await asyncio.sleep(0)
        finally:
            self.stats.wall_seconds = time.monotonic() - wall0
            await self.stop()
        return self.stats


def simulate(model, points: PointTable, scenario: Scenario, *, duration_s: float | None, step_s: float,
             speed: float, seed: int, opcua_port, modbus_port, meter_dir, redis_url, progress: bool = True,
             kafka: KafkaTarget | None = None, say=print) -> RunStats:
    """Run the simulator until ``duration_s`` (or Ctrl-C), with a live line of figures."""
    sim = FieldSimulator(model, points, scenario, seed=seed)
    run = SimulatorRun(sim, step_s=step_s, speed=speed, opcua_port=opcua_port, modbus_port=modbus_port,
                       meter_dir=meter_dir, redis_url=redis_url, kafka=kafka, say=say)
    if not progress:
        try:
            return asyncio.run(run.run(duration_s))
        except KeyboardInterrupt:
            return run.stats
    from rich.live import Live
    from rich.text import Text

    with Live(Text("starting..."), refresh_per_second=4, transient=True) as live:
        def show(step: Step, stats: RunStats):
            supplied = ~step.result.unsupplied
            pmin = step.result.node_pressure_pa[supplied].min() if supplied.any() else float("nan")
            stamp = datetime.fromtimestamp(step.ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            live.update(Text(f"{stamp} UTC  step {stats.steps}  min pressure {pmin:,.0f} Pa  "
                             f"leak {step.leak_kg_s:.4f} kg/s  meter files {stats.meter_files}  "
                             f"outages {','.join(step.outages) or '-'}"))

        try:
            return asyncio.run(run.run(duration_s, on_step=show))
        except KeyboardInterrupt:
            return run.stats
