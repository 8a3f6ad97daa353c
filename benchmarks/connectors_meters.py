"""Load rate of head-end export files: one million meters' hourly reads (1e6 rows) as CSV and
Parquet, long shape, through ``read_meter_file`` (parse, meter -> point lookup, SI, Reading batch),
then through ``MeterDeduplicator``. Target: well under 60 s per file on one 2-core machine.

    python benchmarks/connectors_meters.py [--meters 1000000] [--dir /tmp/x]

Prints ``key=value`` lines (rows_per_s, seconds) per format.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipetwin.connectors.meter_dedup import MeterDeduplicator
from pipetwin.connectors.meter_files import read_meter_file
from pipetwin.connectors.meter_rows import MeterIndex
from pipetwin.connectors.points import PointTable

RHO_N = 0.73   # kg per normal m3, a typical natural gas


def meter_table(n: int) -> PointTable:
    """A point table of ``n`` meters built directly (load_points asks pint per row: minutes at 1e6)."""
    ids = [f"M-{i:07d}" for i in range(n)]
    nan = np.full(n, np.nan)
    return PointTable(site="bench", ids=ids, protocol=["meter"] * n, address=list(ids), element=list(ids),
                      element_index=np.full(n, -1, np.int64), quantity=["volume"] * n, unit=["m3"] * n,
                      si_scale=np.full(n, RHO_N), si_offset=np.zeros(n), min_si=nan, max_si=nan,
                      period_s=np.full(n, 3600.0), deadband_si=np.zeros(n))


def export_table(n: int) -> pa.Table:
    """One hour's reads of ``n`` meters in shuffled order, as a head-end writes them."""
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    return pa.table({
        "meter_id": pa.array([f"M-{i:07d}" for i in order]),
        "interval_end": pa.array(["2024-03-01T01:00:00Z"] * n),
        "value": np.round(rng.gamma(2.0, 0.1, n), 3),
        "status": pa.array(["ok"] * n),
    })


def time_load(path: Path, index: MeterIndex) -> tuple[float, int]:
    t = time.perf_counter()
    conv = read_meter_file(path, index)
    seconds = time.perf_counter() - t
    assert not conv.errors and conv.bad_values == 0
    return seconds, conv.batch.num_rows


def main(meters: int = 1_000_000, folder: str | None = None) -> int:
    work = Path(folder or tempfile.mkdtemp(prefix="pipetwin-meters-"))
    t = time.perf_counter()
    index = MeterIndex(meter_table(meters))
    print(f"meters={meters}\nindex_seconds={time.perf_counter() - t:.2f}")
    table = export_table(meters)
    pacsv.write_csv(table, work / "hour.csv")
    pq.write_table(table, work / "hour.parquet")
    for name in ("hour.csv", "hour.parquet"):
        seconds, rows = time_load(work / name, index)
        fmt = name.split(".")[1]
        mb = (work / name).stat().st_size / 1e6
        print(f"{fmt}_file_mb={mb:.1f}\n{fmt}_rows={rows}\n{fmt}_seconds={seconds:.2f}\n"
              f"{fmt}_rows_per_s={rows / seconds:.0f}")
    batch = read_meter_file(work / "hour.parquet", index).batch
    dedup = MeterDeduplicator()
    t = time.perf_counter()
    dedup.process(batch)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = dedup.process(batch)
    print(f"dedup_first_seconds={first:.2f}\ndedup_repeat_seconds={time.perf_counter() - t:.2f}\n"
          f"dedup_repeats={again.repeats}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    raise SystemExit(main(args.meters, args.dir))
