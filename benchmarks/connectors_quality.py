"""Readings per second through the data-quality gate (and completeness), one process.

    python benchmarks/connectors_quality.py [--quick] [--faults 0.01]

The bundled Schutterwald point table (~1,560 points: SCADA at 1 s, meters hourly) feeds a stream
of batches of 10k and 100k readings: every point reports in turn, values walk within their range,
and a fraction of readings carries a fault (out of range, NaN, rate spike, duplicate, unknown id).
Prints ``key=value`` lines. The first batch of each size is a warm-up (numba kernels load).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from pipetwin.connectors.completeness import Completeness
from pipetwin.connectors.points import PointTable, load_points
from pipetwin.connectors.quality import NS, QualityGate
from pipetwin.connectors.reading import READING_SCHEMA
from pipetwin.data import example
from pipetwin.twin.io import read_network

T0 = 1_700_000_000 * NS


def site_points() -> PointTable:
    return load_points(example("schutterwald") / "points.csv", read_network(example("schutterwald")))


class StreamMaker:
    """Round-robin readings over all points; round r is at T0 + r seconds for every point (the
    gate does not use the period; only completeness would, and it is timed, not judged, here)."""

    def __init__(self, points: PointTable, faults: float, seed: int = 0):
        self.points, self.faults = points, faults
        self.rng = np.random.default_rng(seed)
        lo = np.nan_to_num(points.min_si, nan=0.0)
        hi = np.nan_to_num(points.max_si, nan=1.0)
        self.value = lo + (hi - lo) * self.rng.uniform(0.3, 0.7, len(points))
        self.step = (hi - lo) * 1e-4
        self.ids = np.array(points.ids, object)
        self.offset = 0          # readings emitted so far
        self.now_ns = T0

    def batch(self, size: int) -> pa.RecordBatch:
        n = len(self.points)
        k = self.offset + np.arange(size)
        rows, rounds = k % n, k // n
        self.offset += size
        self.value[rows] += self.step[rows] * self.rng.choice([-1.0, 1.0], size)
        values = self.value[rows].copy()
        ts = T0 + rounds * NS
        self.now_ns = int(ts[-1])
        pts = self.ids[rows]
        hit = self.rng.random(size) < self.faults
        kind = self.rng.integers(0, 5, size)
        values[hit & (kind == 0)] = 1e12                                    # out of range
        values[hit & (kind == 1)] = np.nan                                  # not finite
        values[hit & (kind == 2)] *= 1.5                                    # rate spike (pressures)
        dup = np.flatnonzero(hit & (kind == 3))
        ts[dup[dup > 0]] = ts[dup[dup > 0] - 1]                             # duplicate / conflict ts
        pts = np.where(hit & (kind == 4), "no-such-point", pts)             # unknown id
        return pa.RecordBatch.from_arrays(
            [pa.array(pts, pa.string()), pa.array(ts, pa.timestamp("ns", tz="UTC")), pa.array(values),
             pa.array(np.zeros(size, np.int8)), pa.array(["bench"] * size, pa.string())], schema=READING_SCHEMA)


def measure(points: PointTable, size: int, total: int, faults: float) -> dict[str, float]:
    maker = StreamMaker(points, faults)
    gate = QualityGate(points, clock=lambda: maker.now_ns, stuck_after=600)
    completeness = Completeness(points)
    gate.process(maker.batch(size))                                        # warm-up
    batches = [maker.batch(size) for _ in range(max(1, total // size))]
    t_gate = t_comp = 0.0
    for b in batches:
        t = time.perf_counter()
        res = gate.process(b)
        t_gate += time.perf_counter() - t
        t = time.perf_counter()
        completeness.update(res.accepted)
        t_comp += time.perf_counter() - t
    n = sum(b.num_rows for b in batches)
    totals = gate.totals
    return {"batch": size, "readings": n, "gate_readings_per_s": n / t_gate,
            "gate_ms_per_batch": 1e3 * t_gate / len(batches),
            "completeness_readings_per_s": n / t_comp,
            "quarantined_fraction": totals["quarantined"] / totals["received"]}


def main(quick: bool = False, faults: float = 0.01) -> int:
    points = site_points()
    print(f"points={len(points)}")
    print(f"fault_rate={faults}")
    for size in (10_000, 100_000):
        total = (200_000 if quick else 2_000_000)
        for key, value in measure(points, size, total, faults).items():
            print(f"b{size}_{key}={value:.4g}" if isinstance(value, float) else f"b{size}_{key}={value}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--faults", type=float, default=0.01)
    args = parser.parse_args()
    raise SystemExit(main(quick=args.quick, faults=args.faults))
