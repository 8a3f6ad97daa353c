"""Parquet replay: event-time order, pacing against a fake clock at 1x / 60x / inf, resume from a
snapshot without gaps or repeats, the bytewax source under run_main, and a shared benchmark file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA
from pipetwin.connectors.replay import FakeClock, ParquetReplay, ParquetReplaySource, ReplayPosition
from tests.paths import SHARED

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


@pytest.fixture
def history(tmp_path) -> Path:
    """Three points every 10 s for 2 minutes, written out of order (benchmark shape: ts, point, value)."""
    ts = np.repeat(T0 + np.arange(12) * 10 * NS, 3)
    pts = np.tile(["A", "B", "C"], 12)
    order = np.random.default_rng(1).permutation(len(ts))
    path = tmp_path / "readings.parquet"
    pq.write_table(pa.table({"ts": pa.array(ts[order], pa.timestamp("ns", tz="UTC")), "point": pts[order],
                             "value": np.arange(len(ts), dtype=float)[order]}), path)
    return path


def _ts(batch) -> list[int]:
    return batch.column("ts").cast(pa.int64()).to_pylist()


@pytest.mark.parametrize("speed", [1.0, 60.0])
def test_pacing_matches_event_time_over_speed(history, speed):
    clock = FakeClock(100.0)
    seen = []
    for batch in ParquetReplay(history, speed=speed, now=clock.now, sleep=clock.sleep):
        assert batch.schema == READING_SCHEMA and len(set(_ts(batch))) == 1
        seen.append((clock.t, _ts(batch)[0]))
    assert len(seen) == 12
    for (w0, e0), (w1, e1) in zip(seen, seen[1:]):
        assert w1 - w0 == pytest.approx((e1 - e0) / NS / speed)


def test_pacing_does_not_sleep_when_the_consumer_is_slow(history):
    clock = FakeClock()
    replay = ParquetReplay(history, speed=1.0, now=clock.now, sleep=clock.sleep)
    for _ in replay:
        clock.t += 15.0          # each batch takes longer to handle than the 10 s between them
    assert clock.sleeps == []


def test_infinite_speed_never_sleeps_and_keeps_order(history):
    clock = FakeClock()
    batches = list(ParquetReplay(history, speed=float("inf"), batch_rows=5, now=clock.now, sleep=clock.sleep))
    ts = [t for b in batches for t in _ts(b)]
    assert clock.sleeps == [] and len(ts) == 36 and ts == sorted(ts) and [b.num_rows for b in batches][0] == 5


def test_start_end_filter(history):
    replay = ParquetReplay(history, speed=float("inf"), start=T0 + 20 * NS, end=T0 + 50 * NS)
    ts = sorted({t for b in replay for t in _ts(b)})
    assert ts == [T0 + k * 10 * NS for k in (2, 3, 4)]


@pytest.mark.parametrize("speed", [float("inf"), 60.0])
def test_resume_from_position_without_gap_or_repeat(history, speed):
    clock = FakeClock()
    full = [(p, t) for b in ParquetReplay(history, speed=float("inf")) for p, t in
            zip(b.column("point").to_pylist(), _ts(b))]
    first = ParquetReplay(history, speed=speed, batch_rows=4, now=clock.now, sleep=clock.sleep)
    it = iter(first)
    got = [next(it) for _ in range(3)]
    pos = first.position
    again = ParquetReplay(history, speed=speed, batch_rows=4, now=clock.now, sleep=clock.sleep, resume=pos)
    got += list(again)
    assert [(p, t) for b in got for p, t in zip(b.column("point").to_pylist(), _ts(b))] == full
    with pytest.raises(ValueError, match="does not match"):
        ParquetReplay(history, resume=ReplayPosition(pos.offset, pos.last_ts_ns + 1))


def test_reading_schema_file_keeps_quality_and_source(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"point": ["A", "B"], "ts": pa.array([T0, T0], pa.timestamp("ns", tz="UTC")),
                             "value": [1.0, 2.0], "quality": pa.array([GOOD, BAD], pa.int8()),
                             "source": ["opcua:x", "modbus:y"]}, schema=READING_SCHEMA), path)
    (batch,) = ParquetReplay(path, speed=float("inf"))
    assert batch.to_pydict()["quality"] == [GOOD, BAD] and batch.to_pydict()["source"] == ["opcua:x", "modbus:y"]


def _run(source) -> list:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    out: list = []
    flow = Dataflow("replay_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(flow)
    return out


def test_bytewax_source_partitions_and_snapshot(history, tmp_path):
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"ts": pa.array([T0], pa.timestamp("ns", tz="UTC")), "point": ["Z"], "value": [9.0]}),
                   other)
    source = ParquetReplaySource([history, other], batch_rows=7)
    out = _run(source)
    assert sum(b.num_rows for b in out) == 37 and all(b.schema == READING_SCHEMA for b in out)
    part = source.build_part("in", str(history), None)
    first = part.next_batch() + part.next_batch()
    resumed = source.build_part("in", str(history), part.snapshot())
    rest = []
    while True:
        try:
            rest += resumed.next_batch()
        except StopIteration:
            break
    ts = [t for b in first + rest for t in _ts(b)]
    assert len(ts) == 36 and ts == sorted(ts)


def test_shared_leak_benchmark_replays_in_order():
    path = (SHARED / "benchmarks" / "leaks" / "public" / "s01" / "readings.parquet").resolve()
    if not path.exists():
        pytest.skip(f"shared benchmark {path} not found (../shared beside the repository)")
    expected = pq.read_metadata(path).num_rows
    clock = FakeClock()
    replay = ParquetReplay(path, speed=3600.0, now=clock.now, sleep=clock.sleep)
    n, last, first_ts = 0, None, None
    for batch in replay:
        ts = _ts(batch)
        first_ts = ts[0] if first_ts is None else first_ts
        assert last is None or ts[0] > last
        last, n = ts[-1], n + batch.num_rows
    assert n == expected
    assert clock.t == pytest.approx((last - first_ts) / NS / 3600.0)
