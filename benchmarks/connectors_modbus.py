"""Modbus connector speed, one process, printed as ``key=value`` lines.

    python benchmarks/connectors_modbus.py [--quick]

decode:  readings/s decoded and scaled to SI from large register arrays (pure numpy:
         ``decode_block`` + the point table's ``si_scale``/``si_offset``), per type and word order.
batch:   Reading batches/s built from one Schutterwald poll's words (decode, scale, Arrow batch),
         the per-poll CPU cost without a network.
polls:   polls/s of ``ModbusPoller`` against ``ModbusFieldServer`` on loopback, the bundled
         Schutterwald table (24 float32 points: one request per poll) and the same points split into
         12 requests (``max_count=4``). Server and client share one event loop and CPU, so this is
         a floor for a poller talking to a real device.
"""

import argparse
import asyncio
import time

import numpy as np

from pipetwin.connectors.modbus import ModbusPoller, decode_block, encode_block
from pipetwin.connectors.modbus_server import ModbusFieldServer
from pipetwin.connectors.points import load_points
from pipetwin.data import example
from pipetwin.twin.io import read_network


def _best_rate(fn, items: int, repeats: int) -> float:
    """items/s of the fastest of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def bench_decode(n_points: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    scale, offset = rng.uniform(50, 150, n_points), rng.uniform(0, 1e5, n_points)
    out = {}
    for kind, words in (("int16", 1), ("float32", 2), ("float64", 4)):
        for order in ("big", "little"):
            regs = encode_block(rng.uniform(0, 1000, n_points), kind, order).reshape(-1)
            offsets = np.arange(n_points) * words
            out[f"decode_{kind}_{order}_readings_per_s"] = _best_rate(
                lambda: decode_block(regs, offsets, kind, order) * scale + offset, n_points, repeats)
    return out


async def bench_polls(points, seconds: float) -> dict[str, float]:
    out = {}
    async with ModbusFieldServer(points) as server:
        rows = points.select("modbus")
        server.set_values({points.ids[r]: 101325.0 + 100.0 * i for i, r in enumerate(rows)})
        for label, kw in (("1req", {}), ("12req", {"max_count": 4})):
            async with ModbusPoller(points, "127.0.0.1", server.bound_port, **kw) as poller:
                await poller.poll_once()                       # connect outside the timing
                polls, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    await poller.poll_once()
                    polls += 1
                rate = polls / (time.perf_counter() - t0)
                assert poller.stats.bad == 0, poller.stats
                out[f"polls_per_s_{label}"] = rate
                out[f"readings_per_s_{label}"] = rate * len(poller.rows)
                out[f"requests_per_s_{label}"] = rate * len(poller.requests)
    return out


def bench_batch(points, repeats: int) -> dict[str, float]:
    """Decode + scale + Arrow batch of one poll, with the network taken out."""
    poller = ModbusPoller(points, "127.0.0.1", 1)
    words = np.arange(poller.requests[0].count, dtype=np.uint16)
    groups = poller._groups[0]

    def one_poll():
        raw = np.full(len(poller.rows), np.nan)
        for g in groups:
            raw[g.positions] = decode_block(words, g.offsets, g.type, g.order)
        poller._batch(0, raw)

    n = 2000
    return {"batch_per_poll_24pts_per_s": _best_rate(lambda: [one_poll() for _ in range(n)], n, repeats)}


def main(quick: bool = False) -> int:
    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    results = {"decode_points": 200_000 if quick else 2_000_000}
    results.update(bench_decode(results["decode_points"], 3 if quick else 5))
    results.update(bench_batch(points, 3))
    results.update(asyncio.run(bench_polls(points, 1.0 if quick else 3.0)))
    for key, value in results.items():
        print(f"{key}={value:.0f}" if isinstance(value, float) else f"{key}={value}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    raise SystemExit(main(quick=parser.parse_args().quick))
