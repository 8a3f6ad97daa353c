"""The flow's own figures, measured (``pipetwin bench flow``; ``benchmarks/flow.py``). Three
``case=...`` lines of ``key=value`` figures, each against its issue target:

1. ``case=throughput`` [>= 200,000 readings/s]: readings through the quality gate, tick alignment
   and the Parquet historian in ONE process, the field simulator's data replayed as fast as it
   goes. The data is built first, outside the timing: the field simulator's SCADA points
   (Schutterwald, 52 points) fanned out to many points with a synthetic point table
   (``points_from_columns``), each a copy of a simulator sensor with its own offset and instrument
   noise, 1 Hz with each point at its own phase within the second. Timed twice: as a bytewax flow
   (``TestingSource`` of batches -> gate -> aligner -> historian sinks, ``run_main``) and as the same
   step objects called in a plain loop; ``bytewax_over_direct`` is the ratio of the two times.
2. ``case=tick_*`` [<= 10 ms]: twin state estimation per tick, warm-started tick after tick, on
   L-TOWN (33 pressure + 3 flow sensors, demand varying slowly: a diurnal shape plus a 15-minute
   AR(1) per zone, instrument noise) and on the bundled Schutterwald gas grid (its 52 SCADA
   points, straight from the field simulator). Once with numba's default thread count, once
   with one thread (a parallel kernel waits for every thread to be scheduled, so on a busy
   2-core machine one thread can be the faster).
3. ``case=latency`` [p99 < 1 s at 10,000 points at 1 Hz]: value change on field servers -> twin
   state in Redis. Field servers run in child processes (OPC-UA servers in one, Modbus TCP
   servers in another), the flow (``build_flow``: OpcUaSource + ModbusSources -> gate -> align ->
   twin -> Redis + historian) in a third, and this process only listens on
   ``pipetwin:N:updates`` and reads each state back (``read_state``). Each point changes once a
   second at its own phase (ten phase groups per server); the change time is recorded at the
   server when the value is written (it is the OPC-UA source timestamp), and the value itself
   carries the change number modulo 16 in its last digits, so every sensor value found in a state
   names the change it came from. ``latency_*``: per state, Redis wall time minus the newest
   change it contains (the figure the target is about); ``change_to_state_*``: per value change,
   the time until the first state holding it (or a newer value) is in Redis: this one also holds
   the wait for the tick to end and, for Modbus, for the next poll. ``after_tick_end_*``: Redis
   wall time minus the tick's end (the lateness allowance plus transport, twin and Redis).
   Full mode runs 10,000 points (2 OPC-UA servers x 1,000 points + 4 Modbus servers x 2 units x
   1,000 float32 points, polled at 1 Hz, 125-register reads), one ``variant=`` line each, one after
   the other in this process: ``before`` (the flow as first built: historian flushes on bytewax's
   worker thread, a Modbus poll's 16 reads in series with the worker waiting for them),
   ``after_wait`` (historian writer threads, 4 connections per device, polls in flight while the
   worker goes on, every tick waiting out the whole lateness: the product as session 2 left it),
   ``after`` (the product defaults: the same, with a tick closing as soon as every source has
   delivered past its end, ``align.py``'s early close) and ``after_numba1`` (the same with the flow process on one
   numba thread), all at 0.3 s lateness; then the lateness sweep (``LATENESS_SWEEP_S``, one numba
   thread), whose ``late_readings`` is what a smaller allowance loses. States of the warm-up and
   of the last two seconds before the sources stop (shutdown) are left out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing as mp
import re
import resource
import shutil
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NET = "bench"
LAST: dict = {}     # the last latency run's per-state figures (for a closer look)
S_NS = 1_000_000_000


def default_shared() -> Path:
    return Path(__file__).resolve().parents[2] / ".." / "shared"


def _line(case: str, **figures) -> None:
    def fmt(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"
        return str(v)

    print(f"case={case} " + " ".join(f"{k}={fmt(v)}" for k, v in figures.items()), flush=True)


def _pct(x, q) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else math.nan


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def schutterwald():
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


# ------------------------------------------------------------------------------------------------
# 1. throughput: gate + align + historian in one process


def fanned_out_points(base, rows: np.ndarray, n: int):
    """``n`` points, point j a copy of the simulator's SCADA point ``rows[j % len(rows)]``
    (same quantity and valid range, SI, no deadband)."""
    from pipetwin.connectors.points import points_from_columns

    src = rows[np.arange(n) % len(rows)]
    ids = [f"{base.ids[r]}#{j:05d}" for j, r in enumerate(src)]
    table = points_from_columns(ids, [base.quantity[r] for r in src])
    return dataclasses.replace(table, site="bench", min_si=base.min_si[src].copy(), max_si=base.max_si[src].copy()), src


def replay_batches(n_points: int, seconds: int, batch_rows: int, seed: int = 0):
    """(point table, Reading batches, newest ts): ``seconds`` of 1 Hz readings of ``n_points``
    fanned-out simulator points, each point at its own phase in the second, cut into batches of
    ``batch_rows`` in arrival (timestamp) order."""
    from pipetwin.connectors.reading import READING_SCHEMA
    from pipetwin.connectors.simulator import FieldSimulator

    model, base = schutterwald()
    sim = FieldSimulator(model, base, seed=seed)
    rows = sim.scada_rows
    steps = min(seconds, 60)                       # the simulator's own minute, then cycled
    start_ns = sim.scenario.start_ns
    sim_values = np.array([sim.step(1.0).scada[rows] for _ in range(steps)])
    table, src = fanned_out_points(base, rows, n_points)
    col = np.arange(n_points) % len(rows)
    rng = np.random.default_rng(seed)
    q = np.array(table.quantity)
    sigma = np.where(q == "pressure", 20.0, np.where(q == "temperature", 0.05, 0.0))
    flow = q == "flow"
    offset = np.where(q == "pressure", rng.normal(0.0, 30.0, n_points), 0.0)
    phase = np.sort(rng.integers(0, S_NS, n_points))
    order = np.argsort(phase, kind="stable")
    ids = pa.array(table.ids, pa.string()).take(pa.array(order))
    phase = phase[order]
    source = pa.array(["simulator"] * n_points, pa.string())
    quality = pa.array(np.zeros(n_points, np.int8), pa.int8())
    batches = []
    for k in range(seconds):
        base_v = sim_values[k % steps, col]
        v = base_v + offset + sigma * rng.standard_normal(n_points)
        v = np.where(flow, base_v * (1 + 0.005 * rng.standard_normal(n_points)), v)[order]
        ts = pa.array(start_ns + k * S_NS + phase, pa.timestamp("ns", tz="UTC"))
        values = pa.array(v, pa.float64())
        for a in range(0, n_points, batch_rows):
            b = min(a + batch_rows, n_points)
            batches.append(pa.RecordBatch.from_arrays([ids[a:b], ts[a:b], values[a:b], quality[a:b],
                                                       source[a:b]], schema=READING_SCHEMA))
    return table, batches, start_ns + (seconds - 1) * S_NS + int(phase[-1])


def run_bytewax(table, batches, clock, root: Path, lateness_s: float = 2.0) -> dict:
    """gate -> aligner -> historian (readings, quarantine) as a bytewax flow, as ``build_flow``
    wires them."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from pipetwin.flows.sinks.historian import HistorianSink, historian_output
    from pipetwin.flows.steps.align import AlignLogic, TickAligner
    from pipetwin.flows.steps.gate import ACCEPTED, GateLogic

    ticks, quarantined = [], []
    flow = Dataflow("bench_throughput")
    inp = op.input("readings", flow, TestingSource(batches))
    keyed = op.key_on("by_network", inp, lambda _b: NET)
    gated = op.stateful("gate", keyed, lambda resume: GateLogic(table, clock, resume))
    split = op.branch("accepted_or_not", gated, lambda kv: kv[1][0] == ACCEPTED)
    accepted = op.map_value("accepted_batch", split.trues, lambda tagged: tagged[1])
    rejected = op.map_value("quarantined_batch", split.falses, lambda tagged: tagged[1])
    aligned = op.stateful("align", accepted, lambda resume: AlignLogic(
        TickAligner(table, NET, 1.0, lateness_s, 60.0), resume))
    historian_output("historian_readings_out", accepted, HistorianSink(root, "readings"))
    historian_output("historian_quarantine_out", rejected, HistorianSink(root, "quarantine"))
    op.output("ticks", aligned, TestingSink(ticks))
    op.output("quarantine_count", op.map_value("count", rejected, lambda b: b.num_rows), TestingSink(quarantined))
    t = time.perf_counter()
    run_main(flow)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "ticks": len(ticks), "quarantined": sum(n for _, n in quarantined)}


def run_direct(table, batches, clock, root: Path, lateness_s: float = 2.0) -> dict:
    """The same step objects in a plain loop: what bytewax adds is the difference."""
    from pipetwin.connectors.quality import QualityGate
    from pipetwin.flows.sinks.historian import Historian
    from pipetwin.flows.steps.align import TickAligner

    t = time.perf_counter()
    gate = QualityGate(table, clock=clock)
    aligner = TickAligner(table, NET, 1.0, lateness_s, 60.0)
    readings, rejected = Historian(root, writer="direct-r"), Historian(root, writer="direct-q")
    ticks, quarantined = 0, 0
    for batch in batches:
        res = gate.process(batch)
        if res.accepted.num_rows:
            readings.write("readings", NET, res.accepted)
            ticks += len(aligner.add(res.accepted))
        if res.quarantined.num_rows:
            rejected.write("quarantine", NET, res.quarantined)
            quarantined += res.quarantined.num_rows
    ticks += len(aligner.flush())
    readings.close()
    rejected.close()
    return {"seconds": time.perf_counter() - t, "ticks": ticks, "quarantined": quarantined}


def bench_throughput(n_points: int, seconds: int, batch_rows: int, repeats: int, tmp: Path) -> None:
    from pipetwin.flows.sinks.historian import read

    table, batches, newest = replay_batches(n_points, seconds, batch_rows)
    rows = sum(b.num_rows for b in batches)
    clock = lambda: newest          # noqa: E731  (event time: a replay's "now" is its newest reading)
    # warm-up: numba kernels compiled/loaded, imports done, caches filled
    wt, wb, wn = replay_batches(min(n_points, 500), 5, batch_rows, seed=1)
    run_bytewax(wt, wb, lambda: wn, tmp / "warm_b")
    run_direct(wt, wb, lambda: wn, tmp / "warm_d")
    by, di = [], []
    for i in range(repeats):               # alternate: the machine is shared and noisy
        by.append(run_bytewax(table, batches, clock, tmp / f"b{i}"))
        di.append(run_direct(table, batches, clock, tmp / f"d{i}"))
    on_disk = read(tmp / "b0", "readings", network=NET, dedup=False, columns=["ts"]).num_rows
    b_s = statistics.median(r["seconds"] for r in by)
    d_s = statistics.median(r["seconds"] for r in di)
    for i in range(repeats):
        shutil.rmtree(tmp / f"b{i}", ignore_errors=True)
        shutil.rmtree(tmp / f"d{i}", ignore_errors=True)
    _line("throughput", readings_per_s=rows / b_s, direct_readings_per_s=rows / d_s,
          bytewax_over_direct=round(b_s / d_s, 2), readings=rows, points=n_points, batch_rows=batch_rows,
          seconds_of_data=seconds, bytewax_s=round(b_s, 2), direct_s=round(d_s, 2), repeats=repeats,
          quarantined=by[0]["quarantined"], ticks=by[0]["ticks"], historian_rows=on_disk + by[0]["quarantined"],
          target_readings_per_s=200000)


# ------------------------------------------------------------------------------------------------
# 2. tick cost: the twin update, warm-started tick after tick


def ltown_points(inp: Path, folder: Path):
    from pipetwin.connectors.points import load_points

    text = inp.read_text()
    pressure = re.findall(r"^\s*(\S+)\s.*PRESSURE SENSOR", text, re.M)
    flow = re.findall(r"^\s*(\S+)\s.*FLOW SENSOR", text, re.M)
    table = folder / "ltown_points.csv"
    table.write_text("id,protocol,address,element,quantity,unit,reference\n"
                     + "".join(f"P-{n},opcua,ns=2;s=P-{n},{n},pressure,kPa,gauge\n" for n in pressure)
                     + "".join(f"F-{k},opcua,ns=2;s=F-{k},{k},flow,m3/h,\n" for k in flow))
    return table, len(pressure), len(flow)


def _time_ticks(twin, ticks, warm: int) -> dict:
    times, iters, converged = [], [], []
    for k, tick in enumerate(ticks):
        t = time.perf_counter()
        state = twin.update(tick)
        dt = (time.perf_counter() - t) * 1e3
        if k >= warm:
            times.append(dt)
            iters.append(state.iterations)
            converged.append(state.converged)
    return {"tick_ms": statistics.median(times), "tick_ms_p90": _pct(times, 90), "tick_ms_max": max(times),
            "iterations": statistics.median(iters), "converged": all(converged), "ticks": len(times)}


def ltown_ticks(model, points, n_ticks: int, n_zones: int, seed: int = 0):
    from pipetwin.flows.contracts import Tick
    from pipetwin.twin.estimate.demand import make_zones, zone_demand
    from pipetwin.twin.solve.water import WaterSolver

    rng = np.random.default_rng(seed)
    zones = make_zones(model, n_zones)
    prior = model.base_demand()
    field = WaterSolver(model)
    ar = np.zeros(n_zones)
    a = math.exp(-1.0 / 900.0)                      # 15 minute correlation time
    q = np.array(points.quantity)
    el = points.element_index
    ticks, last = [], None
    t0 = 6 * 3600.0                                 # 06:00, demand rising
    for k in range(n_ticks):
        hour = (t0 + k) / 3600.0
        shape = 1.0 + 0.25 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        ar = a * ar + math.sqrt(1 - a * a) * rng.standard_normal(n_zones)
        theta = shape * (1.0 + 0.08 * ar)
        res = field.solve(zone_demand(prior, zones, theta, None), warm_start=last)
        last = res
        v = np.where(q == "pressure", res.node_pressure_pa[np.where(q == "pressure", el, 0)],
                     res.link_flow[np.where(q == "flow", el, 0)])
        v = v + np.where(q == "pressure", 0.01 * 9806.65, 0.005 * np.abs(v)) * rng.standard_normal(len(v))
        ts = 10**18 + k * S_NS
        ticks.append(Tick("L-TOWN", ts, v, np.zeros(len(v), np.int8), np.full(len(v), ts - S_NS // 2)))
    return ticks


def schutterwald_ticks(model, points, n_ticks: int, seed: int = 0):
    from pipetwin.connectors.simulator import FieldSimulator
    from pipetwin.flows.contracts import Tick

    sim = FieldSimulator(model, points, seed=seed)
    ticks = []
    for _ in range(n_ticks):
        st = sim.step(1.0)
        v = st.scada.copy()
        ok = np.isfinite(v)
        ticks.append(Tick("schutterwald", st.ts_ns, v, np.where(ok, 0, 2).astype(np.int8),
                          np.where(ok, st.ts_ns, 0)))
    return ticks, len(sim.scada_rows)


def bench_ticks(shared: Path, n_ticks: int, tmp: Path, one_thread_too: bool = True) -> None:
    import numba

    from pipetwin.connectors.points import load_points
    from pipetwin.flows.steps.twin import TwinUpdater
    from pipetwin.twin.io import read_network

    warm = 3
    cases = []
    inp = shared / "benchmarks" / "networks" / "L-TOWN.inp"
    if inp.exists():
        model = read_network(inp)
        table, n_p, n_f = ltown_points(inp, tmp)
        points = load_points(table, model)
        ticks = ltown_ticks(model, points, n_ticks + warm, 4)
        cases.append(("tick_ltown", model, points, ticks, {"pressure_sensors": n_p, "flow_sensors": n_f}))
    else:
        _line("tick_ltown", error=f"missing_{inp}")
    model, points = schutterwald()
    ticks, n_scada = schutterwald_ticks(model, points, n_ticks + warm)
    cases.append(("tick_schutterwald", model, points, ticks, {"scada_points": n_scada}))
    default_threads = numba.get_num_threads()
    for threads in dict.fromkeys((default_threads, 1) if one_thread_too else (default_threads,)):
        numba.set_num_threads(threads)
        for case, model, points, ticks, extra in cases:
            twin = TwinUpdater(model, points, n_zones=4)
            t = time.perf_counter()
            twin.update(ticks[0])
            cold = (time.perf_counter() - t) * 1e3
            fig = _time_ticks(twin, ticks[1:], warm - 1)
            _line(case, tick_ms=round(fig.pop("tick_ms"), 1), tick_ms_p90=round(fig.pop("tick_ms_p90"), 1),
                  **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in fig.items()},
                  first_tick_ms=round(cold, 1), nodes=model.n_nodes, zones=twin.n_zones, numba_threads=threads,
                  **extra, target_ms=10)
    numba.set_num_threads(default_threads)


# ------------------------------------------------------------------------------------------------
# 3. end-to-end latency: field servers -> flow -> Redis


GROUPS = 10          # phase groups per server: group g changes at t0 + k + g / GROUPS
MAX_CHANGES = 3600   # seconds of change log kept per server
MOD = 16             # the change number modulo MOD rides in each value's last digits
STEP_PA = 16.0       # values are quantized to STEP_PA, then + (k % MOD) Pa


@dataclasses.dataclass(frozen=True)
class Variant:
    """How the flow under test is set up: ``before`` is the flow as session 1 measured it
    (historian flushes on bytewax's worker thread; a Modbus poll's reads in series on one
    connection, the worker waiting for them), ``after`` the product defaults (historian writer
    thread; 4 connections per device, polls in flight while the worker goes on; a tick closes as
    soon as every source has delivered past its end, ``early_margin_s``, None: it waits the whole
    lateness, as ``after_wait`` and ``before`` do).
    ``numba_threads``: the flow process's numba thread count (None: numba's default)."""

    name: str
    historian_thread: bool
    modbus_connections: int
    modbus_wait: bool
    numba_threads: int | None = None
    early_margin_s: float | None = 0.1


BEFORE = Variant("before", historian_thread=False, modbus_connections=1, modbus_wait=True, early_margin_s=None)
AFTER = Variant("after", historian_thread=True, modbus_connections=4, modbus_wait=False)
AFTER_WAIT = dataclasses.replace(AFTER, name="after_wait", early_margin_s=None)
LATENESS_SWEEP_S = (0.1, 0.2, 0.5, 1.0)     # the full run's 0.3 s is the before/after pair


@dataclasses.dataclass(frozen=True)
class Layout:
    """Who serves which point: ``opcua`` servers of ``per_opcua`` points, ``modbus`` servers of
    ``units`` devices of ``per_unit`` float32 registers pairs. Point j of a server is in phase group
    ``j * GROUPS // n`` (contiguous blocks)."""

    opcua: int
    per_opcua: int
    modbus: int
    units: int
    per_unit: int

    @property
    def n(self) -> int:
        return self.opcua * self.per_opcua + self.modbus * self.units * self.per_unit

    def describe(self) -> str:
        return (f"{self.opcua}x{self.per_opcua}_opcua+{self.modbus}x{self.units}x{self.per_unit}_modbus")


def latency_points(layout: Layout, model):
    """The full point table (OPC-UA points first, then Modbus), per point its (process, server,
    group), and the node each point measures (pressure, Pa absolute, raw = SI)."""
    from pipetwin.connectors.points import ModbusAddress, points_from_columns
    from pipetwin.twin.model import NodeKind

    ids, protocol, address, where = [], [], [], []
    for s in range(layout.opcua):
        for j in range(layout.per_opcua):
            pid = f"U{s}-{j:05d}"
            ids.append(pid)
            protocol.append("opcua")
            address.append(f"ns=2;s={pid}")
            where.append((0, s, j * GROUPS // layout.per_opcua))
    per_server = layout.units * layout.per_unit
    for s in range(layout.modbus):
        for u in range(layout.units):
            for j in range(layout.per_unit):
                ids.append(f"M{s}-{u}-{j:05d}")
                protocol.append("modbus")
                address.append(ModbusAddress(u + 1, 2 * j, "float32", "big"))
                where.append((1, s, (u * layout.per_unit + j) * GROUPS // per_server))
    n = len(ids)
    cand = np.flatnonzero(model.nodes.kind != NodeKind.SOURCE)
    nodes = cand[np.random.default_rng(3).permutation(n) % len(cand)].astype(np.int64)
    table = points_from_columns(ids, "pressure", min_si=5.0e4, max_si=2.0e6)
    table = dataclasses.replace(table, site="bench", protocol=protocol, address=address,
                                element=[model.nodes.ids[e] for e in nodes], element_index=nodes)
    return table, np.array(where, np.int64)


def subset(table, rows):
    rows = np.asarray(rows, np.int64)
    return dataclasses.replace(table, ids=[table.ids[r] for r in rows], protocol=[table.protocol[r] for r in rows],
                               address=[table.address[r] for r in rows], element=[table.element[r] for r in rows],
                               element_index=table.element_index[rows], quantity=[table.quantity[r] for r in rows],
                               unit=[table.unit[r] for r in rows], si_scale=table.si_scale[rows],
                               si_offset=table.si_offset[rows], min_si=table.min_si[rows], max_si=table.max_si[rows],
                               period_s=table.period_s[rows], deadband_si=table.deadband_si[rows])


def field_pressures(model, steps: int) -> np.ndarray:
    """(steps, nodes) node pressures of the field simulator's network, 1 s apart (then cycled)."""
    from pipetwin.connectors.points import load_points
    from pipetwin.connectors.simulator import FieldSimulator
    from pipetwin.data import example

    sim = FieldSimulator(model, load_points(example("schutterwald") / "points.csv", model), seed=5)
    return np.array([sim.step(1.0).result.node_pressure_pa for _ in range(steps)])


def encoded_values(pressure: np.ndarray, noise: np.ndarray, k: int) -> np.ndarray:
    """Field value of change ``k``: quantized measurement + (k mod MOD) Pa (exact in float32)."""
    return STEP_PA * np.round((pressure + noise) / STEP_PA) + (k % MOD)


def _field_main(kind: str, layout: Layout, ports: list[int], start, pressures: np.ndarray,
                ready, stop, out) -> None:
    """Child process: the ``kind`` servers of the layout; every point changes once a second in
    its phase group. Reports per server, change number and group the wall time of the write."""
    import logging

    logging.disable(logging.WARNING)
    model, _ = schutterwald()
    table, where = latency_points(layout, model)
    proto = 0 if kind == "opcua" else 1
    servers_rows = [np.flatnonzero((where[:, 0] == proto) & (where[:, 1] == s)) for s in range(len(ports))]
    rng = np.random.default_rng(11 + proto)

    async def main() -> None:
        servers = []
        for s, port in enumerate(ports):
            sub = subset(table, servers_rows[s])
            if kind == "opcua":
                from pipetwin.connectors.opcua_server import OpcUaFieldServer

                server = OpcUaFieldServer(sub, port)
            else:
                from pipetwin.connectors.modbus_server import ModbusFieldServer

                server = ModbusFieldServer(sub, "127.0.0.1", port)
            await server.start()
            servers.append(server)
        ready.set()
        while start.value == 0.0 and not stop.is_set():
            await asyncio.sleep(0.01)
        t0 = start.value
        log = np.zeros((len(ports), MAX_CHANGES, GROUPS), np.int64)
        cpu0, wall0 = _cpu_s(), time.monotonic()
        k = 0
        while not stop.is_set():
            for g in range(GROUPS):
                due = t0 + k + g / GROUPS
                await asyncio.sleep(max(0.0, due - time.time()))
                for s, server in enumerate(servers):
                    rows = servers_rows[s]
                    mine = rows[where[rows, 2] == g]
                    local = np.searchsorted(rows, mine)
                    v = encoded_values(pressures[k % len(pressures), table.element_index[mine]],
                                       20.0 * rng.standard_normal(len(mine)), k)
                    now = time.time_ns()
                    if kind == "opcua":
                        await server.set_values(dict(zip([table.ids[r] for r in mine], v.tolist())), now)
                    else:
                        _write_modbus(server, table, mine, v)
                    if k < log.shape[1]:
                        log[s, k, g] = now
            k += 1
        cpu, wall = _cpu_s() - cpu0, time.monotonic() - wall0
        for server in servers:
            await server.stop()
        out.put({"kind": kind, "log": log[:, :k], "cpu_s": cpu, "wall_s": wall})

    asyncio.run(main())


def _write_modbus(server, table, rows: np.ndarray, values: np.ndarray) -> None:
    """Write a group's float32 values straight into the device images (contiguous per unit)."""
    from pipetwin.connectors.modbus import encode_block

    words = encode_block(values, "float32", "big")
    units = np.array([table.address[r].unit for r in rows])
    regs = np.array([table.address[r].register for r in rows])
    for u in np.unique(units):
        sel = np.flatnonzero(units == u)
        server.set_registers(int(u), int(regs[sel[0]]), words[sel].reshape(-1))


def _flow_main(layout: Layout, opcua_ports: list[int], modbus_ports: list[int], redis_url: str,
               start, run_s: float, lateness_s: float, historian: str | None, variant: Variant, ready,
               out) -> None:
    """Child process: the product flow on live sources, states to Redis (and the historian). Sets
    ``ready`` once imports are done and the twin's compiled kernels are loaded (two updates of a
    throw-away twin): start-up is not what the latency target is about, and a flow that starts
    seconds behind spends the warm-up catching up."""
    import logging

    logging.disable(logging.WARNING)
    from bytewax.testing import run_main

    if variant.numba_threads:
        import numba

        numba.set_num_threads(variant.numba_threads)

    from pipetwin.connectors.modbus_source import ModbusSource
    from pipetwin.connectors.opcua_source import OpcUaSource
    from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow
    from pipetwin.flows.sinks.redis_sink import RedisSink

    from pipetwin.flows.contracts import Tick
    from pipetwin.flows.steps.twin import TwinUpdater

    model, _ = schutterwald()
    table, where = latency_points(layout, model)
    warm = TwinUpdater(model, table, n_zones=4)
    values = field_pressures(model, 1)[0, table.element_index]
    for k in range(2):
        ts = time.time_ns()
        warm.update(Tick(NET, ts, values, np.zeros(len(table), np.int8), np.full(len(table), ts)))
    ready.set()
    while start.value == 0.0:                  # the field servers are up once the start is set
        time.sleep(0.01)
    run_s = start.value - time.time() + run_s
    sources = []
    if opcua_ports:
        servers = {f"opc.tcp://127.0.0.1:{p}/pipetwin/": subset(table, np.flatnonzero((where[:, 0] == 0)
                                                                                       & (where[:, 1] == s)))
                   for s, p in enumerate(opcua_ports)}
        sources.append(OpcUaSource(servers, run_for=timedelta(seconds=run_s), sampling_interval_ms=100.0,
                                   publishing_interval_ms=100.0, deadband=0.0, batch_interval_s=0.05))
    for s, port in enumerate(modbus_ports):
        sub = subset(table, np.flatnonzero((where[:, 0] == 1) & (where[:, 1] == s)))
        sources.append(ModbusSource(sub, "127.0.0.1", port, period_s=1.0, max_polls=int(run_s),
                                    connections=variant.modbus_connections, wait_for_poll=variant.modbus_wait))
    sink = RedisSink(redis_url)
    sinks = FlowSinks(states=[sink], historian=historian)
    flow = build_flow(sources, model, table, sinks, time.time_ns, lambda: [],
                      FlowConfig(NET, tick_s=1.0, lateness_s=lateness_s, max_age_s=60.0, n_zones=4,
                                 early_margin_s=variant.early_margin_s,
                                 historian_options={"background": variant.historian_thread}))
    cpu0, wall0 = _cpu_s(), time.monotonic()
    run_main(flow)
    out.put({"kind": "flow", "cpu_s": _cpu_s() - cpu0, "wall_s": time.monotonic() - wall0})


class _Observer(threading.Thread):
    """Listens on ``pipetwin:N:updates``; on each message notes the wall time and reads the
    state back (``read_state``): (tick end, wall ns, sensor ids, measured, summary)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        from pipetwin.flows.redis_embedded import connect

        self.r = connect(url)
        self.pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        from pipetwin.flows.contracts import redis_key

        self.pubsub.subscribe(redis_key(NET, "updates"))
        self.states: list[tuple] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        from pipetwin.flows.sinks.redis_sink import read_state

        while not self.stopped.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is None:
                continue
            wall = time.time_ns()
            state = read_state(self.r, NET)
            if state is None:
                continue
            sensors = state["sensors"]
            self.states.append((int(msg["data"]), wall, sensors.column("point"),
                                sensors.column("measured").to_numpy(zero_copy_only=False), state["summary"],
                                int(state["summary"].get("ts_ns", 0))))


def analyse(layout: Layout, table, where, states, logs: dict, warm_s: float, t0: float, run_s: float) -> dict:
    """Per state: wall time minus the newest change it holds; per change: time to the first
    state holding it (or newer)."""
    ids = pa.array(table.ids, pa.string())
    # states of the measured window: ticks ending after the warm-up, and two seconds or more before
    # the sources stop at t0 + run_s (the last ticks are closed by the end of input, not by
    # later readings, and hold a part of a second's changes: shutdown, not streaming)
    states = [s for s in states if (t0 + warm_s) * S_NS <= s[0] <= (t0 + run_s - 2.0) * S_NS]
    if not states:
        return {}
    n = len(table)
    ks = np.full((len(states), n), -1, np.int64)
    newest = np.full(len(states), np.nan)
    walls = np.array([s[1] for s in states], np.int64)
    change_ns = np.zeros((len(states), n), np.int64)
    for i, (tick_end, wall, point, measured, _summary, _ts) in enumerate(states):
        rows = pc.index_in(point, value_set=ids).to_numpy(zero_copy_only=False)
        m = np.full(n, np.nan)
        m[rows] = measured
        ok = np.isfinite(m)
        # the newest change of each point's (server, group) written before the tick's end
        for proto, kind in ((0, "opcua"), (1, "modbus")):
            if kind not in logs:
                continue
            log = logs[kind]
            sel = np.flatnonzero(ok)
            sel = sel[where[sel, 0] == proto]
            if not len(sel):
                continue
            s_idx, g_idx = where[sel, 1], where[sel, 2]
            times = log[s_idx, :, g_idx]                       # (points, changes)
            written = (times > 0) & (times < tick_end)
            latest = written.shape[1] - 1 - np.argmax(written[:, ::-1], axis=1)
            latest = np.where(written.any(axis=1), latest, -1)
            km = np.mod(np.rint(m[sel]).astype(np.int64), MOD)
            k = latest - np.mod(latest - km, MOD)
            good = (latest >= 0) & (k >= 0)
            ks[i, sel[good]] = k[good]
            change_ns[i, sel[good]] = times[np.flatnonzero(good), k[good]]
        if (ks[i] >= 0).any():
            newest[i] = (wall - change_ns[i][ks[i] >= 0].max()) / 1e6
    # per change: first state holding it or a newer one
    per_change = []
    t_lo = (t0 + warm_s) * S_NS
    t_hi = walls[-1] - 3 * S_NS
    for proto, kind in ((0, "opcua"), (1, "modbus")):
        if kind not in logs:
            continue
        log = logs[kind]
        for j in np.flatnonzero(where[:, 0] == proto):
            col = ks[:, j]
            times = log[where[j, 1], :, where[j, 2]]
            changes = np.flatnonzero((times >= t_lo) & (times <= t_hi))
            if not len(changes):
                continue
            mono = np.maximum.accumulate(col)
            first = np.searchsorted(mono, changes, side="left")
            found = first < len(states)
            per_change.append((walls[first[found]] - times[changes[found]]) / 1e6)
            if (~found).any():
                per_change.append(np.full(int((~found).sum()), np.inf))
    lag = np.concatenate(per_change) if per_change else np.array([np.nan])
    summaries = [s[4] for s in states]
    LAST["per_state_ms"] = newest
    LAST["tick_end"] = np.array([s[0] for s in states])
    LAST["walls"] = walls
    reporting = [x.get("sensors_reporting", 0) for x in summaries]
    late = [int(x.get("late_readings", 0) or 0) for x in summaries]
    closed = (walls - np.array([s[0] for s in states], np.int64)) / 1e6    # Redis wall time - tick end
    return {"latency_p50_ms": _pct(newest, 50), "latency_p99_ms": _pct(newest, 99), "latency_max_ms": _pct(newest, 100),
            "after_tick_end_p50_ms": _pct(closed, 50), "after_tick_end_p99_ms": _pct(closed, 99),
            "change_to_state_p50_ms": _pct(lag, 50), "change_to_state_p99_ms": _pct(lag, 99),
            "changes_never_seen": int(np.isinf(lag).sum()), "states": len(states),
            "ticks_missing": int(round((states[-1][0] - states[0][0]) / S_NS)) + 1 - len(states),
            "sensors_reporting_min": int(min(reporting)), "solve_ms_p50": _pct([x.get("solve_ms", np.nan) for x in summaries], 50),
            # late readings within the measured window, and since the flow started (start-up included:
            # connecting, first subscriptions, the twin's first tick loading its compiled kernels)
            "late_readings": late[-1] - late[0], "late_readings_total": late[-1]}


def bench_latency(layout: Layout, seconds: float, warm_s: float, lateness_s: float, tmp: Path,
                  historian: bool = True, variant: Variant | None = None) -> dict:
    from pipetwin.connectors.opcua_server import free_port
    from pipetwin.flows.redis_embedded import start_embedded_redis

    model, _ = schutterwald()
    table, where = latency_points(layout, model)
    pressures = field_pressures(model, 120)
    ctx = mp.get_context("spawn")
    opcua_ports = [free_port() for _ in range(layout.opcua)]
    modbus_ports = [free_port() for _ in range(layout.modbus)]
    redis = start_embedded_redis(tmp / "redis", socket_path=tmp / "r.sock")
    out, stop = ctx.Queue(), ctx.Event()
    start = ctx.Value("d", 0.0)             # epoch seconds of change 0, set once every server is up
    children, readies = [], []
    for kind, ports in (("opcua", opcua_ports), ("modbus", modbus_ports)):
        if ports:
            ready = ctx.Event()
            p = ctx.Process(target=_field_main, args=(kind, layout, ports, start, pressures, ready, stop, out),
                            daemon=True)
            p.start()
            children.append(p)
            readies.append(ready)
    hist = str(tmp / "historian") if historian else None
    run_s = warm_s + seconds
    flow_ready = ctx.Event()
    flow = ctx.Process(target=_flow_main, args=(layout, opcua_ports, modbus_ports, redis.unix_url, start, run_s,
                                                lateness_s, hist, variant or AFTER, flow_ready, out), daemon=True)
    flow.start()                            # imports and builds while the servers start
    observer = _Observer(redis.unix_url)
    observer.start()
    results: dict = {}
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("field servers did not start")
        if not flow_ready.wait(180):
            raise RuntimeError("the flow process did not get ready")
        t0 = time.time() + 0.3
        start.value = t0
        flow.join(run_s + 180)
        if flow.is_alive():
            flow.terminate()
        stop.set()
        for _ in range(len(children) + (flow.exitcode == 0)):
            item = out.get(timeout=60)
            results[item["kind"]] = item
    finally:
        stop.set()
        if flow.is_alive():
            flow.terminate()
        observer.stopped.set()
        observer.join(5)
        for p in children:
            p.join(20)
            if p.is_alive():
                p.terminate()
        redis.close()
    logs = {k: v["log"] for k, v in results.items() if k in ("opcua", "modbus")}
    fig = analyse(layout, table, where, observer.states, logs, warm_s, t0, run_s)
    cpu = {f"{k}_cpu": round(v["cpu_s"] / v["wall_s"], 2) for k, v in results.items()}
    return {**fig, **cpu}


def latency_case(layout: Layout, seconds: float, warm_s: float, lateness_s: float, tmp: Path, historian: bool,
                 variant: Variant | None = None) -> dict:
    variant = variant or AFTER
    fig = bench_latency(layout, seconds, warm_s, lateness_s, tmp, historian, variant)
    how = {"variant": variant.name, "historian_writer": "thread" if variant.historian_thread else "worker",
           "modbus_connections": variant.modbus_connections,
           "modbus_poll": "wait" if variant.modbus_wait else "overlap",
           "numba_threads": variant.numba_threads or "default"}
    if not fig or "latency_p99_ms" not in fig:
        _line("latency", points=layout.n, servers=layout.opcua + layout.modbus, mix=layout.describe(),
              error="no_states_in_redis", **how, **fig)
        return fig
    _line("latency", latency_p50_ms=round(fig.pop("latency_p50_ms")), latency_p99_ms=round(fig.pop("latency_p99_ms")),
          points=layout.n, servers=layout.opcua + layout.modbus, mix=layout.describe(), **how,
          **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in fig.items()},
          lateness_ms=round(lateness_s * 1000), measured_s=seconds, historian=historian, target_p99_ms=1000)
    fig["latency_p99_ms"] = fig.get("latency_p99_ms", math.nan)
    return fig


# ------------------------------------------------------------------------------------------------


def main(quick: bool = False, shared: str | None = None, only: str | None = None) -> int:
    """``only``: one of ``throughput``, ``ticks``, ``latency`` (default: all three)."""
    import logging

    if only not in (None, "throughput", "ticks", "latency"):
        raise ValueError(f"bench flow: --only {only!r} is not throughput, ticks or latency")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    root = Path(shared) if shared else default_shared()
    run = lambda part: only in (None, part)     # noqa: E731
    with tempfile.TemporaryDirectory(prefix="pipetwin-bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        if quick:
            if run("throughput"):
                bench_throughput(500, 10, 500, 1, tmp)
            if run("ticks"):
                bench_ticks(root, 5, tmp, one_thread_too=False)
            if run("latency"):
                latency_case(Layout(1, 100, 1, 1, 200), 4.0, 2.5, 0.3, tmp / "lat", True, AFTER)
            return 0
        if run("throughput"):
            bench_throughput(10_000, 300, 10_000, 3, tmp)
            bench_throughput(10_000, 120, 1_000, 1, tmp)
        if run("ticks"):
            bench_ticks(root, 100, tmp)
        if run("latency"):
            field = Layout(2, 1000, 4, 2, 1000)                  # 10,000 points
            # before / after side by side: same field, same lateness, one after the other
            one_thread = dataclasses.replace(AFTER, name="after_numba1", numba_threads=1)
            for variant in (BEFORE, AFTER_WAIT, AFTER, one_thread):
                latency_case(field, 40.0, 8.0, 0.3, tmp / f"lat_{variant.name}", True, variant)
            # the tick lateness: what each allowance costs (latency) and buys (fewer late readings);
            # on one numba thread, so the twin's kernels do not swamp the differences
            for lateness_s in LATENESS_SWEEP_S:
                latency_case(field, 30.0, 8.0, lateness_s, tmp / f"lat_late{lateness_s}", True, one_thread)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
