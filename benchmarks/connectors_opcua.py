"""OPC-UA subscription throughput: notifications per second from one local server.

    python benchmarks/connectors_opcua.py [--points 1000,5000] [--cycle-ms 100] [--seconds 10]

A child process runs ``OpcUaFieldServer`` with N synthetic points and changes every one of them
each cycle (so the server, not the client, sets the pace, as a SCADA gateway would); this
process runs one ``OpcUaSubscriber`` (one subscription, N monitored items) and counts what
arrives as Reading batches. The two sides get their own interpreter because both are asyncio
Python and would otherwise share one GIL. Prints ``key=value`` lines, one block per N.

Why these figures: the design target is 10,000 points at 1 s through one flow, so the client
must sustain >= 10k notifications/s with a latency well under a tick.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

from pipetwin.connectors.opcua import OpcUaSubscriber
from pipetwin.connectors.opcua_server import OpcUaFieldServer, free_port
from pipetwin.connectors.points import PointTable, load_points


def synthetic_points(n: int, folder: Path) -> PointTable:
    """N OPC-UA pressure points in bar gauge, no network model needed."""
    path = folder / f"bench_{n}.csv"
    rows = "".join(f"B{i:05d},opcua,ns=2;s=B{i:05d},N{i},pressure,bar,gauge\n" for i in range(n))
    path.write_text("id,protocol,address,element,quantity,unit,reference\n" + rows)
    return load_points(path)


def _serve(table_path: str, port: int, cycle_s: float, seconds: float, ready, result) -> None:
    """Child process: start the server, then write every point once per cycle for ``seconds``."""

    async def main() -> None:
        points = load_points(table_path)
        server = OpcUaFieldServer(points, port)
        await server.start()
        ready.set()
        ids = points.ids
        cycles, t0 = 0, time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            values = 101325.0 + 1e5 + 10.0 * cycles + np.arange(len(ids), dtype=float) * 1e-3
            await server.set_values(dict(zip(ids, values.tolist())))
            cycles += 1
            await asyncio.sleep(max(0.0, cycle_s - (time.perf_counter() - start)))
        elapsed = time.perf_counter() - t0
        result.put({"server_cycles": cycles, "server_writes_per_s": cycles * len(ids) / elapsed,
                    "server_cycle_ms_achieved": 1000 * elapsed / max(cycles, 1)})
        await asyncio.sleep(1.0)                     # let the last notifications go out
        await server.close()

    asyncio.run(main())


async def _measure(points: PointTable, url: str, cycle_ms: float, seconds: float, warmup_s: float) -> dict:
    """Subscribe, skip the warm-up, then count notifications and batch latency for ``seconds``."""
    lags_ms: list[np.ndarray] = []
    sub = OpcUaSubscriber(points, url, sampling_interval_ms=cycle_ms, deadband=0, batch_interval_s=0.05)
    counting = False
    start_counters = None
    t_start = 0.0

    async def consume() -> None:
        async for batch in sub.batches():
            if counting:
                now = time.time_ns()
                ts = batch.column("ts").cast("int64").to_numpy()
                lags_ms.append((now - ts) / 1e6)

    sub.start()
    consumer = asyncio.create_task(consume())
    connected_by = time.monotonic() + 30
    while not sub.connected and time.monotonic() < connected_by:
        await asyncio.sleep(0.01)
    await asyncio.sleep(warmup_s)
    counting, start_counters, t_start = True, sub.counters.snapshot(), time.perf_counter()
    await asyncio.sleep(seconds)
    end_counters, elapsed = sub.counters.snapshot(), time.perf_counter() - t_start
    counting = False
    await sub.stop()
    await consumer
    lag = np.concatenate(lags_ms) if lags_ms else np.array([np.nan])
    notes = end_counters["notifications"] - start_counters["notifications"]
    return {"client_seconds": round(elapsed, 2), "notifications": notes,
            "notifications_per_s": round(notes / elapsed),
            "batches_per_s": round((end_counters["batches"] - start_counters["batches"]) / elapsed, 1),
            "latency_ms_p50": round(float(np.percentile(lag, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(lag, 99)), 1),
            "bad": end_counters["bad"] - start_counters["bad"]}


def bench(n: int, cycle_ms: float, seconds: float, warmup_s: float = 2.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        points = synthetic_points(n, Path(tmp))
        port = free_port()
        ctx = mp.get_context("spawn")
        ready, result = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_serve, args=(points.source_file, port, cycle_ms / 1000,
                                                 seconds + warmup_s + 3.0, ready, result))
        child.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("OPC-UA benchmark server did not start")
            t0 = time.perf_counter()
            figures = asyncio.run(_measure(points, f"opc.tcp://127.0.0.1:{port}/pipetwin/", cycle_ms,
                                           seconds, warmup_s))
            figures["subscribe_and_warmup_s"] = round(time.perf_counter() - t0 - figures["client_seconds"], 2)
            figures.update(result.get(timeout=60))
        finally:
            child.join(30)
            if child.is_alive():
                child.terminate()
    offered = n * 1000.0 / cycle_ms
    return {"points": n, "cycle_ms": cycle_ms, "offered_changes_per_s": round(offered),
            **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1000,5000", help="comma-separated point counts")
    parser.add_argument("--cycle-ms", type=float, default=100.0, help="server change and sampling period")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per point count")
    args = parser.parse_args(argv)
    for n in (int(x) for x in args.points.split(",")):
        for key, value in bench(n, args.cycle_ms, args.seconds).items():
            if isinstance(value, float):
                value = round(value, 1)
            print(f"{key}={value}", flush=True)
        print(flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
