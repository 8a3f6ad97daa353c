"""Meter feeds: export files in a watched folder (CSV long/wide, Parquet, half-written, bad rows),
dedup, MQTT against the real Mosquitto, a Redis Stream consumer group against the real Redis, and
the bytewax sources under run_main. Servers are the ones on 127.0.0.1 (CI has them too)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.inputs import FixedPartitionedSource

from pipetwin.connectors.meter_dedup import MeterDeduplicator
from pipetwin.connectors.meter_files import read_meter_file
from pipetwin.connectors.meter_folder import MeterFolderSource, MeterFolderWatcher
from pipetwin.connectors.meter_mqtt import MqttMeterSubscriber, decode_mqtt, mqtt_mapping
from pipetwin.connectors.meter_redis import RedisStreamMeterReader, RedisStreamMeterSource
from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN
from pipetwin.connectors.replay import FakeClock
from pipetwin.data import example
from pipetwin.twin.io import read_network

NS = 1_000_000_000
T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
T0_NS = int(T0.timestamp()) * NS


@pytest.fixture(scope="module")
def model():
    return read_network(example("schutterwald"))


@pytest.fixture(scope="module")
def points(model):
    return load_points(example("schutterwald") / "points.csv", model)


@pytest.fixture(scope="module")
def meters(points):
    rows = points.select("meter")
    return [points.address[i] for i in rows[:5]]


@pytest.fixture(scope="module")
def rho(model):
    return model.gas.normal_density_kg_m3


def _by_point(batch: pa.RecordBatch) -> dict[tuple[str, int], tuple[float, int]]:
    d = batch.to_pydict()
    ts = batch.column("ts").cast(pa.int64()).to_pylist()
    return {(p, t): (v, q) for p, t, v, q in zip(d["point"], ts, d["value"], d["quality"])}


def _concat(batches) -> pa.RecordBatch:
    t = pa.Table.from_batches(list(batches), READING_SCHEMA).combine_chunks()
    return t.to_batches()[0] if t.num_rows else pa.RecordBatch.from_pylist([], READING_SCHEMA)


# ----------------------------------------------------------------------------- files


def write_long_csv(path: Path, meters: list[str]) -> None:
    lines = ["meter_id,interval_start,duration,value,unit,status"]
    for k, m in enumerate(meters):
        lines.append(f"{m},2024-03-01T00:00:00Z,3600,{0.5 + k},m3,ok")
    path.write_text("\n".join(lines) + "\n")


def test_long_csv_maps_converts_and_stamps_interval_end(tmp_path, points, meters, rho):
    f = tmp_path / "long.csv"
    write_long_csv(f, meters)
    conv = read_meter_file(f, points)
    assert conv.batch.schema == READING_SCHEMA and conv.batch.num_rows == 5 and not conv.errors
    got = _by_point(conv.batch)
    assert got[(meters[2], T0_NS + 3600 * NS)] == (pytest.approx(2.5 * rho), GOOD)


def test_long_units_and_statuses(tmp_path, points, meters, rho):
    f = tmp_path / "u.csv"
    f.write_text("meter_id,interval_end,value,unit,status\n"
                 f"{meters[0]},2024-03-01T01:00:00+01:00,1000,dm3,E\n"     # 1 m3, estimated; 00:00 UTC
                 f"{meters[1]},1709254800,2,Sm3,\n"                          # epoch seconds, standard m3
                 f"{meters[2]},2024-03-01 01:00:00,3,kWh,ok\n")               # no zone = UTC; kWh: bad
    got = _by_point(read_meter_file(f, points).batch)
    assert got[(meters[0], T0_NS)] == (pytest.approx(rho), UNCERTAIN)
    assert got[(meters[1], T0_NS + 3600 * NS)] == (pytest.approx(2 * rho * 273.15 / 288.15), GOOD)
    v, q = got[(meters[2], T0_NS + 3600 * NS)]
    assert np.isnan(v) and q == BAD


def test_wide_csv_stacks_24_hours(tmp_path, points, meters, rho):
    f = tmp_path / "wide.csv"
    hours = ",".join(f"h{h:02d}" for h in range(24))
    rows = [f"{m},2024-03-01,{','.join(str(0.01 * h) for h in range(24))}" for m in meters[:3]]
    f.write_text(f"meter_id,date,{hours}\n" + "\n".join(rows) + "\n")
    batch = read_meter_file(f, points).batch
    assert batch.num_rows == 72
    got = _by_point(batch)
    assert got[(meters[1], T0_NS + 3600 * NS)][0] == pytest.approx(0.0)          # h00 ends 01:00
    assert got[(meters[1], T0_NS + 24 * 3600 * NS)][0] == pytest.approx(0.23 * rho)


def test_wide_hour_ending_names(tmp_path, points, meters, rho):
    f = tmp_path / "wide24.parquet"
    cols = {"meter_id": meters[:2], "date": pa.array([T0.date()] * 2, pa.date32())}
    cols.update({f"h{h:02d}": [float(h), float(h)] for h in range(1, 25)})
    pq.write_table(pa.table(cols), f)
    got = _by_point(read_meter_file(f, points).batch)
    assert got[(meters[0], T0_NS + 24 * 3600 * NS)][0] == pytest.approx(24 * rho)
    assert (meters[0], T0_NS) not in got


def test_folder_watcher_waits_for_stable_files_and_reports_bad_rows(tmp_path, points, meters, rho):
    clock = FakeClock()
    w = MeterFolderWatcher(points, tmp_path, settle_s=2.0, clock=clock.now)
    write_long_csv(tmp_path / "a.csv", meters)
    pq.write_table(pa.table({"meter_id": meters, "interval_end": pa.array([T0] * 5, pa.timestamp("s", tz="UTC")),
                             "value": [1.0] * 5}), tmp_path / "b.parquet")
    half = tmp_path / "c.csv"
    half.write_text(f"meter_id,interval_end,value\n{meters[0]},2024-03-01T00:00:00Z,1\n{meters[1]},2024-")
    (tmp_path / "d.csv.part").write_text("ignored until renamed")
    assert w.poll() == []                                  # first sight: not yet settled
    clock.sleep(1.0)
    assert w.poll() == []                                  # not settled for 2 s yet
    with half.open("a") as fh:                             # the writer goes on: size changes
        fh.write("03-01T00:00:00Z,2\nX-UNKNOWN,2024-03-01T00:00:00Z,3\n"
                 f"{meters[2]},not-a-time,4\n{meters[3]},2024-03-01T00:00:00Z,n/a\n")
    clock.sleep(1.5)
    out = _concat(w.poll())                                # a and b settled, c changed
    assert out.num_rows == 10 and w.stats.files == 2
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["a.csv", "b.parquet"]
    clock.sleep(2.5)
    out = _concat(w.poll())                                # c settled now
    assert out.num_rows == 3                               # two good, one bad value
    assert list(out.column("quality").to_pylist()) == [GOOD, GOOD, BAD]
    assert w.stats.unknown_meters == 1 and w.stats.bad_timestamps == 1 and w.stats.bad_values == 1
    problems = {(e.row, e.problem) for e in w.errors}
    assert problems == {(3, "meter id not in the point table"), (4, "time does not parse")}
    assert (tmp_path / "errors" / "c.csv.errors.csv").read_text().count("\n") == 3
    assert (tmp_path / "d.csv.part").exists()


def test_folder_watcher_keep_mode_snapshot_prevents_rereading(tmp_path, points, meters):
    clock = FakeClock()
    write_long_csv(tmp_path / "a.csv", meters)
    w = MeterFolderWatcher(points, tmp_path, settle_s=0.0, after="keep", clock=clock.now)
    w.poll()
    assert _concat(w.poll()).num_rows == 5
    state = w.snapshot()
    again = MeterFolderWatcher(points, tmp_path, settle_s=0.0, after="keep", clock=clock.now, resume_state=state)
    assert again.poll() == [] and again.poll() == []


def test_unreadable_file_goes_to_failed(tmp_path, points):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    w = MeterFolderWatcher(points, tmp_path, settle_s=0.0)
    w.poll()
    assert w.poll() == [] and w.stats.unreadable_files == 1
    assert (tmp_path / "failed" / "junk.parquet").exists() and "cannot be read" in w.errors[0].problem


# ----------------------------------------------------------------------------- dedup


def _batch(rows) -> pa.RecordBatch:
    """Readings from (point, hour after T0 the interval ends, value, quality)."""
    return pa.Table.from_pydict({
        "point": [r[0] for r in rows],
        "ts": pa.array([T0_NS + r[1] * 3600 * NS for r in rows], pa.timestamp("ns", tz="UTC")),
        "value": [float(r[2]) for r in rows], "quality": pa.array([r[3] for r in rows], pa.int8()),
        "source": ["t"] * len(rows)}, schema=READING_SCHEMA).to_batches()[0]


def test_dedup_repeats_revisions_and_late_reads():
    d = MeterDeduplicator(late_after_s=7200)
    arrival = T0_NS + 1 * 3600 * NS + 60 * NS
    first = d.process(_batch([("A", 1, 1.0, 0), ("B", 1, 2.0, 0), ("B", 1, 2.0, 0)]), arrival_ns=arrival)
    assert first.batch.num_rows == 2 and first.repeats == 1 and first.revisions == 0
    assert not first.late.any() and first.lag_s.tolist() == [60.0, 60.0]
    second = d.process(_batch([("A", 1, 1.0, 0), ("B", 1, 2.5, 1), ("A", 2, 3.0, 0)]), arrival_ns=arrival + 3600 * NS)
    assert second.repeats == 1 and second.revisions == 1
    assert second.batch.to_pydict()["value"] == [2.5, 3.0]
    late = d.process(_batch([("C", -3, 9.0, 0)]), arrival_ns=arrival + 3600 * NS)   # 5 h after its end
    assert late.batch.num_rows == 1 and late.late.tolist() == [True] and late.lag_s[0] == pytest.approx(5 * 3600 + 60)
    assert d.counts == {"passed": 5, "repeats": 2, "revisions": 1, "late": 1, "beyond_horizon": 0}
    restored = MeterDeduplicator().restore(d.snapshot())
    assert restored.process(_batch([("B", 1, 2.5, 1)]), arrival_ns=arrival).batch.num_rows == 0


def test_dedup_within_batch_last_revision_wins():
    d = MeterDeduplicator()
    out = d.process(_batch([("A", 1, 1.0, 0), ("A", 1, 1.5, 0), ("A", 1, 1.5, 0)]), arrival_ns=T0_NS)
    assert out.batch.to_pydict()["value"] == [1.5] and out.repeats == 1 and out.revisions == 1


def test_dedup_forgets_beyond_horizon():
    d = MeterDeduplicator(horizon_s=3600 * 5)
    d.process(_batch([("A", 0, 1.0, 0)]), arrival_ns=T0_NS)
    d.process(_batch([("A", 10, 1.0, 0)]), arrival_ns=T0_NS)
    out = d.process(_batch([("A", 0, 1.0, 0)]), arrival_ns=T0_NS + 10 * 3600 * NS)
    assert out.batch.num_rows == 1 and d.counts["beyond_horizon"] == 1 and len(d.keys) == 1


# ----------------------------------------------------------------------------- MQTT


@pytest.fixture
def mqtt_points(tmp_path):
    base = f"pipetwin-test/{uuid.uuid4().hex}"
    f = tmp_path / "mqtt.csv"
    f.write_text("id,protocol,address,element,quantity,unit,reference,period_s\n"
                 f"P-1,mqtt,{base}/a#reading.pressure,N1,pressure,mbar,gauge,60\n"
                 f"T-1,mqtt,{base}/a#reading.temp,N1,temperature,degC,,60\n"
                 f"P-2,mqtt,{base}/b#p,N2,pressure,bar,absolute,60\n")
    return load_points(f), base


def test_decode_mqtt_payload_shapes(mqtt_points):
    pts, base = mqtt_points
    mapping = mqtt_mapping(pts)
    batch, errors = decode_mqtt(mapping, pts, f"{base}/a", json.dumps(
        {"reading": {"pressure": 25, "temp": "x", "ts": "2024-03-01T00:00:00Z"}}).encode(), 5, "s")
    d = batch.to_pydict()
    assert d["value"][0] == pytest.approx(101325 + 2500) and d["quality"] == [GOOD, BAD]
    assert batch.column("ts").cast(pa.int64()).to_pylist() == [T0_NS, 5]
    assert [e.column for e in errors] == ["reading.temp"]
    batch, errors = decode_mqtt(mapping, pts, f"{base}/b", b"{not json", 7, "s")
    assert batch.to_pydict()["quality"] == [BAD] and "not JSON" in errors[0].problem


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_mqtt_against_mosquitto(mqtt_points):
    if not _listening(1883):
        pytest.skip("no MQTT broker listening on 127.0.0.1:1883")
    import aiomqtt

    pts, base = mqtt_points
    sub = MqttMeterSubscriber(pts, "127.0.0.1", 1883, identifier=f"pt-{uuid.uuid4().hex[:8]}")
    got: list[pa.RecordBatch] = []

    async def consume():
        async for b in sub.batches():
            got.append(b)
            if sum(x.num_rows for x in got) >= 4:
                return

    task = asyncio.create_task(consume())
    await asyncio.wait_for(sub.connected.wait(), 10)
    async with aiomqtt.Client("127.0.0.1", 1883) as pub:
        await pub.publish(f"{base}/a", json.dumps({"reading": {"pressure": 20, "temp": 10}, "ts": 1709251200}), qos=1)
        await pub.publish(f"{base}/b", b"garbage", qos=1)
        await pub.publish(f"{base}/b", json.dumps({"p": 1.5, "timestamp": 1709251200000}), qos=1)
    await asyncio.wait_for(task, 10)
    out = _by_point(_concat(got))
    assert out[("P-1", T0_NS)] == (pytest.approx(103325.0), GOOD)
    assert out[("T-1", T0_NS)] == (pytest.approx(283.15), GOOD)
    assert out[("P-2", T0_NS)] == (pytest.approx(1.5e5), GOOD)
    assert sub.stats.bad_payloads == 1 and sub.stats.bad_values == 1


async def test_mqtt_reconnects_with_backoff(mqtt_points):
    pts, _ = mqtt_points
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]               # closed again: nothing listens there
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        if len(slept) >= 5:
            raise asyncio.CancelledError

    sub = MqttMeterSubscriber(pts, "127.0.0.1", port, backoff_s=(0.5, 3.0), sleep=fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        async for _ in sub.batches():
            pass
    assert slept == [0.5, 1.0, 2.0, 3.0, 3.0] and sub.stats.reconnects == 5


# ----------------------------------------------------------------------------- Redis Stream


@pytest.fixture
def redis_stream():
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis listening on 127.0.0.1:6379")
    name = f"pipetwin-test:{uuid.uuid4().hex}"
    yield client, name
    client.delete(name)
    client.close()


def test_redis_stream_at_least_once(redis_stream, points, meters, rho):
    client, stream = redis_stream
    for k, m in enumerate(meters[:3]):
        client.xadd(stream, {"meter_id": m, "ts": "2024-03-01T01:00:00Z", "value": str(1.0 + k)})
    client.xadd(stream, {"meter_id": "NOPE", "ts": "1709254800", "value": "1"})
    client.xadd(stream, {"meter_id": meters[3], "ts": "1709254800", "value": "oops"})
    url = "redis://127.0.0.1:6379/0"
    r1 = RedisStreamMeterReader(points, url, stream, "twin", "c1", count=3, block_ms=10)
    first = r1.read()
    assert first.batch.num_rows == 3 and len(first.ids) == 3
    r1.ack(first.ids)
    second = r1.read()                     # delivered, then the consumer "crashes" before ack
    assert second.batch.num_rows == 1 and [e.meter_id for e in second.errors] == ["NOPE"]
    r2 = RedisStreamMeterReader(points, url, stream, "twin", "c1", count=3, block_ms=10)
    again = r2.read()                      # restart: the un-acked entries come back
    assert again.ids == second.ids
    v, q = _by_point(again.batch)[(meters[3], T0_NS + 3600 * NS)]
    assert np.isnan(v) and q == BAD
    r2.ack(again.ids)
    assert r2.read().ids == [] and client.xpending(stream, "twin")["pending"] == 0
    assert _by_point(first.batch)[(meters[1], T0_NS + 3600 * NS)][0] == pytest.approx(2 * rho)
    assert r2.stats.unknown_meters == 1 and r2.stats.bad_values == 1


# ----------------------------------------------------------------------------- bytewax sources


def _run(source):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, run_main

    out: list = []
    flow = Dataflow("meters_test")
    s = op.input("in", flow, source)
    op.output("out", s, TestingSink(out))
    run_main(flow)
    return out


def test_folder_source_snapshot_and_restart(tmp_path, points, meters):
    write_long_csv(tmp_path / "a.csv", meters)
    source = MeterFolderSource(points, [tmp_path], poll_interval_s=0.0, settle_s=0.0)
    part = source.build_part("in", str(tmp_path), None)
    batches = part.next_batch() + part.next_batch()
    assert _concat(batches).num_rows == 5
    state = part.snapshot()
    write_long_csv(tmp_path / "b.csv", meters[:2])
    again = source.build_part("in", str(tmp_path), state)
    rows = sum(b.num_rows for b in again.next_batch() + again.next_batch())
    assert rows == 2                                   # only the new file
    # a file moved to processed/ after the snapshot (crash before commit) is read again
    late = source.build_part("in", str(tmp_path), state)
    assert sum(b.num_rows for b in late.next_batch()) == 2


class Finite(FixedPartitionedSource):
    """A live source made finite for run_main: a partition stops at its first empty batch after
    ``done(part)`` says it has nothing in flight (live sources poll for ever)."""

    def __init__(self, inner, done):
        self.inner, self.done = inner, done

    def list_parts(self):
        return self.inner.list_parts()

    def build_part(self, step_id, for_part, resume_state):
        part = self.inner.build_part(step_id, for_part, resume_state)
        nxt = part.next_batch

        def next_batch():
            got = nxt()
            if not got and self.done(part):
                raise StopIteration
            return got

        part.next_batch = next_batch
        return part


def test_folder_source_in_run_main(tmp_path, points, meters):
    write_long_csv(tmp_path / "a.csv", meters)
    source = MeterFolderSource(points, [tmp_path], poll_interval_s=0.0, settle_s=0.0)
    out = _run(Finite(source, lambda part: not part.watcher.pending))
    assert sum(b.num_rows for b in out) == 5 and all(b.schema == READING_SCHEMA for b in out)


def test_redis_source_in_run_main_acks_on_snapshot(redis_stream, points, meters):
    client, stream = redis_stream
    for m in meters:
        client.xadd(stream, {"meter_id": m, "ts": "2024-03-01T01:00:00Z", "value": "0.5"})
    source = RedisStreamMeterSource(points, "redis://127.0.0.1:6379/0", stream, "g", "c", count=2)
    out = _run(Finite(source, lambda part: part.replay_upto is None))
    assert sum(b.num_rows for b in out) == 5 and all(b.schema == READING_SCHEMA for b in out)
    assert client.xpending(stream, "g")["pending"] == 0


def test_redis_source_resume_from_last_id(redis_stream, points, meters):
    client, stream = redis_stream
    ids = [client.xadd(stream, {"meter_id": m, "ts": str(1709254800 + k * 3600), "value": "1"}).decode()
           for k, m in enumerate(meters)]
    source = RedisStreamMeterSource(points, "redis://127.0.0.1:6379/0", stream, "g", "c", count=2)
    part = source.build_part("in", stream, None)
    first = part.next_batch()
    assert part.snapshot() == ids[1] and sum(b.num_rows for b in first) == 2
    part.next_batch()                                  # ids 2-3 delivered, never snapshotted
    resumed = source.build_part("in", stream, ids[1])
    seen = []
    for _ in range(3):
        for b in resumed.next_batch():
            seen.extend(b.column("ts").cast(pa.int64()).to_pylist())
    assert seen == [T0_NS + (1 + k) * 3600 * NS for k in range(2, 5)]   # no gap, no repeat
    resumed.snapshot()
    assert client.xpending(stream, "g")["pending"] == 0
    assert resumed.next_batch() == [] and resumed.next_awake() is not None     # idle: poll later
