"""``pipetwin run``: the main job. With no arguments it runs everything on embedded defaults: the
bundled field simulator (Schutterwald, real OPC-UA and Modbus servers on loopback), an embedded
Redis, and the flow reading the simulator's servers into Redis and a Parquet historian, with the
figures live in the terminal. ``--redis-url`` uses a Redis server instead; ``--no-simulator``
reads servers that are already running (addresses from the point table's defaults or options).
``--kafka`` reads the readings from Kafka topics partitioned by zone instead (the bundled simulator,
if it runs, publishes there), the way a utility spreads the field over machines (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipetwin.connectors.points import PointTable
from pipetwin.twin.model import NetworkModel


class StartupError(RuntimeError):
    """A part of the main job (simulator, wall) did not come up; the CLI says so in one line."""


@dataclass
class RunOptions:
    duration_s: float | None = None        # None: until Ctrl-C
    redis_url: str | None = None           # None: embedded
    historian: str = "pipetwin-data/historian"
    meter_inbox: str = "pipetwin-data/meter-inbox"   # where head-end exports arrive (the simulator's too)
    audit_ledger: str | None = "pipetwin-data/audit/ledger.jsonl"   # None: no audit trail
    opcua_port: int = 4840
    modbus_port: int = 5020
    host: str = "127.0.0.1"
    simulator: bool = True
    scenario: str | None = None
    tick_s: float = 1.0
    # a tick closes 0.5 s after its end: above the OPC-UA publishing interval (100 ms) and the
    # Modbus poll's spread, below what would keep the wall a second behind (benchmarks/flow.py sweep)
    lateness_s: float = 0.5
    min_service_pressure_pa: float | None = None   # default: 50 mbar gauge below the source
    seed: int = 0
    progress: bool = True
    dashboard: bool = True
    dashboard_port: int = 8050                     # taken: a free port instead (the URL is printed)
    dashboard_args: tuple[str, ...] = ()           # more `pipetwin dashboard` options (map tiles)
    kafka: str | None = None                       # bootstrap servers: read readings from Kafka, not the field
    kafka_topics: tuple[str, ...] = ("pipetwin.readings",)
    kafka_partitions: int = 8                      # for a topic the simulator has to make
    kafka_zones: int = 4                           # the simulator's message keys (ZoneMap.from_model)
    kafka_from_start: bool = False                 # False: only readings published after the flow starts
    workers: int = 1                               # bytewax workers: input partitions (Kafka's) spread over them
    # a cluster of processes (bytewax -i/-a): every process's host:port, the same list on each
    addresses: tuple[str, ...] = ()
    process_id: int | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        self.addresses = tuple(a.strip() for a in self.addresses if a.strip())
        if self.addresses:
            for a in self.addresses:
                host, _, port = a.rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"cluster address {a!r}: expected host:port")
            if self.process_id is None or not 0 <= self.process_id < len(self.addresses):
                raise ValueError(f"--process-id must be 0..{len(self.addresses) - 1} (one per --addresses entry)")
            if self.kafka is None:
                raise ValueError("a cluster of processes reads its readings from Kafka: give --kafka")
            if self.redis_url is None:
                raise ValueError("a cluster of processes shares one Redis: give --redis-url")
        elif self.process_id not in (None, 0):
            raise ValueError("--process-id needs --addresses")
        if self.kafka is not None:
            from pipetwin.connectors.kafka import bootstrap_servers, check_topic

            self.kafka = ",".join(bootstrap_servers(self.kafka))
            self.kafka_topics = tuple(check_topic(t) for t in self.kafka_topics)
            if not self.kafka_topics:
                raise ValueError("--kafka needs at least one topic")
            if self.kafka_partitions < 1 or self.kafka_zones < 1:
                raise ValueError("Kafka partitions and zones must be at least 1")


class SimulatorThread:
    """The field simulator on its own event loop, so the flow's blocking run has the main thread."""

    def __init__(self, model: NetworkModel, points: PointTable, options: RunOptions):
        from pipetwin.connectors.simulator import FieldSimulator, load_scenario
        from pipetwin.connectors.simulator_run import KafkaTarget, SimulatorRun

        start = datetime.now(timezone.utc).replace(microsecond=0)
        scenario = load_scenario(options.scenario, model, points, start=start)
        scenario.start = start                       # a live run starts now, whatever the file says
        self.sim = FieldSimulator(model, points, scenario, seed=options.seed)
        self.said: list[str] = []
        kafka = None if options.kafka is None else KafkaTarget(options.kafka, options.kafka_topics[0],
                                                                options.kafka_partitions, options.kafka_zones)
        # with Kafka the field's readings go there (the simulator plays the field gateways): no servers
        self.run = SimulatorRun(self.sim, step_s=1.0, speed=1.0,
                                opcua_port=None if kafka else options.opcua_port,
                                modbus_port=None if kafka else options.modbus_port, host=options.host,
                                say=self.said.append, meter_dir=None if kafka else options.meter_inbox,
                                kafka=kafka)
        # the field outlives the flow a little, so the flow's sources end before the servers go away
        self.duration_s = None if options.duration_s is None else options.duration_s + 10.0
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task = None
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def go():
            original = self.run.start

            async def start_and_signal():
                await original()
                self.ready.set()

            self.run.start = start_and_signal
            await self.run.run(self.duration_s)

        try:
            self._task = self._loop.create_task(go())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:   # reported to the main thread
            self.error = exc
            self.ready.set()
        finally:   # the servers' own housekeeping tasks end with the loop, quietly
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def start(self, timeout_s: float = 30.0) -> list[str]:
        self._thread.start()
        if not self.ready.wait(timeout_s) or self.error is not None:
            raise StartupError(f"the field simulator did not start: {self.error!r}")
        return self.said

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)


class DashboardProcess:
    """The wall in a process of its own (``pipetwin dashboard``): its callbacks must not take the
    flow's interpreter lock, and the flow never imports the dashboards (it only starts them)."""

    def __init__(self, redis_url: str, network: str, historian: str, port: int, host: str = "127.0.0.1",
                 extra: tuple[str, ...] = ()):
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                port = 0
        self.proc = subprocess.Popen([sys.executable, "-m", "pipetwin.cli", "dashboard", "--redis-url", redis_url,
                                      "--network", network, "--historian", historian, "--host", host,
                                      "--port", str(port), *extra], stdout=subprocess.PIPE, text=True)
        self.url = ""

    def start(self, timeout_s: float = 60.0) -> str:
        """Wait for the wall to say its URL (its first line)."""
        ready = threading.Event()

        def read() -> None:
            self.url = (self.proc.stdout.readline() or "").strip()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout_s) or not self.url.startswith("http"):
            self.stop()
            raise StartupError("the dashboard did not start (its own message is above; `pipetwin dashboard --help`)")
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:     # it would not stop: make it
                self.proc.kill()


def default_detectors(model: NetworkModel, min_pa: float | None, points: PointTable | None = None):
    """The live flow's detectors: limits, residuals, silent sensors, the zone balance, per-sensor
    anomalies (sensor faults seen in the residual; the measured stream's daily cycle after two
    days). With ``points`` (gas) also the leak detector, its residuals taken
    against the demand-model twin (``PriorTwin``: base demand x the standard daily load profile the
    bundled network's consumers follow), not the fitted one, which absorbs a leak (docs/leaks.md),
    and the meter-end checks over every smart meter's hours (docs/meter-analytics.md)."""
    import numpy as np

    from pipetwin.flows.detectors.anomaly import SensorAnomaly
    from pipetwin.flows.detectors.balance import UnaccountedGas
    from pipetwin.flows.detectors.data_quality import SensorSilent
    from pipetwin.flows.detectors.pressure_limit import PressureLimit
    from pipetwin.flows.detectors.residual import SensorResidual

    if min_pa is None:
        source_p = model.nodes.fixed_pressure_pa[np.isfinite(model.nodes.fixed_pressure_pa)]
        min_pa = float(source_p.min()) - 5000.0 if len(source_p) else 101325.0
    if points is None or not model.is_gas:
        return lambda: [PressureLimit(min_pa=min_pa), SensorResidual(), SensorSilent(ticks=10), UnaccountedGas(),
                        SensorAnomaly(points)]
    from pipetwin.connectors.simulator import WINTER_PROFILE
    from pipetwin.flows.detectors.leak import LeakDetector
    from pipetwin.flows.detectors.meter_end import MeterEnd
    from pipetwin.flows.steps.twin import PriorTwin

    return lambda: [PressureLimit(min_pa=min_pa), SensorResidual(), SensorSilent(ticks=10), UnaccountedGas(),
                    SensorAnomaly(points),
                    LeakDetector.for_points(model, points, prior=PriorTwin(model, points, WINTER_PROFILE)),
                    MeterEnd.for_points(model, points)]


def run(model: NetworkModel, points: PointTable, options: RunOptions, say=print) -> dict:
    """Run until the duration ends (or Ctrl-C). Returns the last state's summary and counters
    (with ``--kafka`` also ``kafka_errors``: this process's skipped messages)."""
    from bytewax.testing import run_main

    from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow
    from pipetwin.flows.redis_embedded import connect, start_embedded_redis
    from pipetwin.flows.sinks.redis_sink import RedisSink, read_state, write_network

    import logging

    import numba

    # the flow's process also runs the protocol clients and the sinks: a numba kernel that waits for
    # both cores stalls behind them (measured: 400-700 ms ticks instead of ~65 ms), so one thread
    numba.set_num_threads(1)
    # protocol libraries log every reconnect with a traceback; the flow counts and reports them itself
    for name in ("asyncua", "pymodbus"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    embedded = None
    if options.redis_url is None:
        embedded = start_embedded_redis(port=0)
        url = embedded.url
    else:
        url = options.redis_url
    say(url)
    write_network(connect(url), model, points)
    simulator = None
    wall = None
    first = not options.addresses or options.process_id == 0   # the wall, simulator and ledger: process 0's
    try:
        if options.dashboard and first:
            wall = DashboardProcess(url, model.name, str(Path(options.historian).resolve()), options.dashboard_port,
                                    options.host, options.dashboard_args)
            say(wall.start())
        if options.simulator and first:
            simulator = SimulatorThread(model, points, options)
            for line in simulator.start():
                say(line)
        say(f"historian {Path(options.historian).resolve()}")
        sources = [kafka_source(options, say)] if options.kafka is not None else field_sources(points, options, say)
        sinks = FlowSinks(states=[RedisSink(url)], alerts=[RedisSink(url)], historian=options.historian)
        flow = build_flow(sources, model, points, sinks, time.time_ns,
                          default_detectors(model, options.min_service_pressure_pa, points),
                          FlowConfig(model.name, tick_s=options.tick_s, lateness_s=options.lateness_s))
        stop = threading.Event()
        watcher = threading.Thread(target=_progress, args=(url, model.name, stop, options.progress), daemon=True)
        watcher.start()
        recorder = None
        if options.audit_ledger and first:
            from pipetwin.flows.subscribers.audit import record

            Path(options.audit_ledger).parent.mkdir(parents=True, exist_ok=True)
            say(f"ledger {Path(options.audit_ledger).resolve()}")
            recorder = threading.Thread(target=record, args=(url, model.name, options.audit_ledger),
                                        kwargs={"historian": options.historian, "stop": stop.is_set},
                                        name="audit", daemon=True)
            recorder.start()
        try:
            if options.workers == 1 and not options.addresses:
                run_main(flow)
            else:     # the keyed steps run on the worker their network hashes to; inputs on all
                from bytewax.run import cli_main

                cli_main(flow, workers_per_process=options.workers, process_id=options.process_id,
                         addresses=list(options.addresses) or None)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            watcher.join(timeout=5)
            if recorder is not None:
                recorder.join(timeout=10)
        r = connect(url)
        last = read_state(r, model.name)
        out = dict(last["summary"]) if last else {}
        if options.kafka is not None:     # messages on the topics that were not Reading batches (skipped)
            out["kafka_errors"] = sources[0].errors.count
        return out
    finally:
        if wall is not None:
            wall.stop()
        if simulator is not None:
            simulator.stop()
        if embedded is not None:
            embedded.close()


def field_sources(points: PointTable, options: RunOptions, say=print) -> list:
    """The field's readings as bytewax sources, for the points the table has: the OPC-UA server's
    subscription, the Modbus poller and the meter drop folder at ``options``' host, ports and inbox,
    each ending after ``duration_s``."""
    from pipetwin.connectors.meter_folder import MeterFolderSource
    from pipetwin.connectors.modbus_source import ModbusSource
    from pipetwin.connectors.opcua_source import OpcUaSource

    run_for = None if options.duration_s is None else timedelta(seconds=options.duration_s)
    sources = []
    if points.select("opcua").size:
        endpoint = f"opc.tcp://{options.host}:{options.opcua_port}/pipetwin/"
        sources.append(OpcUaSource({endpoint: points}, run_for=run_for, sampling_interval_ms=100.0,
                                   publishing_interval_ms=100.0))
    if points.select("modbus").size:
        max_polls = None if options.duration_s is None else int(options.duration_s)
        sources.append(ModbusSource(points, options.host, options.modbus_port, period_s=1.0, max_polls=max_polls))
    if points.select("meter").size:
        Path(options.meter_inbox).mkdir(parents=True, exist_ok=True)
        if not options.simulator:        # the simulator already said where its meter files go
            say(f"meters {Path(options.meter_inbox).resolve()}")
        sources.append(MeterFolderSource(points, [options.meter_inbox], poll_interval_s=5.0,
                                         run_for_s=options.duration_s, settle_s=1.0))
    return sources


def kafka_source(options: RunOptions, say=print):
    """The Reading source over ``options.kafka_topics``: one bytewax partition per topic partition
    (so workers share the zones), ending after ``duration_s``. Waits up to 60 s for the topics to
    exist (the simulator, or the compose file's one-shot, makes them); undecodable messages are
    counted and the first few reported, never fatal."""
    from confluent_kafka import OFFSET_END
    from confluent_kafka.admin import AdminClient

    from pipetwin.connectors.kafka import kafka_reading_source

    admin = AdminClient({"bootstrap.servers": options.kafka})
    deadline = time.monotonic() + 60.0
    while True:
        try:
            meta = admin.list_topics(timeout=10)
            missing = [t for t in options.kafka_topics if not meta.topics.get(t) or not meta.topics[t].partitions]
        except Exception as exc:     # KafkaException: the broker is not there (yet)
            missing = [f"{options.kafka} ({exc})"]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka: no topic {', '.join(missing)} after 60 s")
        time.sleep(1.0)
    parts = {t: len(meta.topics[t].partitions) for t in options.kafka_topics}
    say(f"kafka {options.kafka} " + " ".join(f"topic={t} partitions={n}" for t, n in parts.items()))
    told = []

    def report(error) -> None:
        if len(told) < 5:
            told.append(error)
            say(f"kafka: {error}")

    return kafka_reading_source(options.kafka, list(options.kafka_topics), tail=True,
                                starting_offset=None if options.kafka_from_start else OFFSET_END,
                                run_for_s=options.duration_s, idle_s=0.02, on_error=report)


def _progress(url: str, network: str, stop: threading.Event, live: bool) -> None:
    """Show the latest twin state's figures once a second (read back from Redis, as the wall does)."""
    from pipetwin.flows.redis_embedded import connect
    from pipetwin.flows.sinks.redis_sink import open_alerts, read_state

    r = connect(url)

    def line() -> str:
        try:
            state = read_state(r, network)
            alerts = open_alerts(r, network)
        except Exception as exc:   # Redis briefly unavailable: say so, keep going
            return f"waiting for Redis: {exc}"
        if not state:
            return "waiting for the first tick ..."
        s = state["summary"]
        stamp = datetime.fromtimestamp(s["ts_ns"] / 1e9, tz=timezone.utc).strftime("%H:%M:%S")
        lag = time.time() - s["ts_ns"] / 1e9
        return (f"{stamp} UTC  lag {lag:4.1f} s  sensors {s.get('sensors_reporting')}  "
                f"min pressure {s.get('min_pressure_pa') or 0:,.0f} Pa  inflow {s.get('inflow_kg_s') or 0:.4f} kg/s  "
                f"chi2 {s.get('chi2') or 0:.1f}  solve {s.get('solve_ms') or 0:.1f} ms  open alerts {len(alerts)}")

    if not live:
        stop.wait()
        return
    from rich.live import Live
    from rich.text import Text

    with Live(Text("starting ..."), refresh_per_second=2, transient=True) as view:
        while not stop.wait(1.0):
            view.update(Text(line()))
