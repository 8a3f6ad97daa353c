"""Modbus: pure word decoding and request planning, then the poller and the bytewax source
against a real pymodbus server on loopback (one per module; mock nothing of the protocol)."""

import asyncio
import time

import numpy as np
import pyarrow as pa
import pytest
import pytest_asyncio
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main, run_main
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from pipetwin.connectors.modbus import (ModbusPoller, decode_block, decode_registers, encode_block, encode_value,
                                        plan_requests)
from pipetwin.connectors.modbus_server import ModbusFieldServer
from pipetwin.connectors.modbus_source import ModbusSource
from pipetwin.connectors.points import MODBUS_TYPES, ModbusAddress, load_points
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA
from pipetwin.data import example
from pipetwin.twin.io import read_network

on_server = pytest.mark.asyncio(loop_scope="module")
ORDERS = ("big", "little")
INT_RANGES = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-2**31, 2**31 - 1),
              "uint32": (0, 2**32 - 1)}
PYMODBUS_TYPE = {t: getattr(ModbusTcpClient.DATATYPE, t.upper()) for t in MODBUS_TYPES}


# ------------------------------------------------------------------ pure: words <-> values

def _values_of(kind):
    if kind in INT_RANGES:
        return st.integers(*INT_RANGES[kind])
    return st.floats(allow_nan=False, width=32 if kind == "float32" else 64)


@pytest.mark.parametrize("kind", sorted(MODBUS_TYPES))
@pytest.mark.parametrize("order", ORDERS)
@given(data=st.data())
def test_encode_decode_round_trip(kind, order, data):
    value = data.draw(_values_of(kind))
    words = encode_value(value, kind, order)
    assert len(words) == MODBUS_TYPES[kind] and all(0 <= w <= 0xFFFF for w in words)
    assert decode_registers(np.array(words, np.uint16), kind, order) == value
    # an independent decoder agrees on the word order
    assert ModbusTcpClient.convert_from_registers(
        words, PYMODBUS_TYPE[kind], word_order=order) == value


@pytest.mark.parametrize("kind", sorted(MODBUS_TYPES))
@pytest.mark.parametrize("order", ORDERS)
def test_block_decoding_matches_scalar(kind, order):
    rng = np.random.default_rng(1)
    n = MODBUS_TYPES[kind]
    words = rng.integers(0, 2**16, size=7 * n + 3, dtype=np.uint16)
    offsets = np.array([0, 3, n + 3, 2 * n + 3, 6 * n + 3])
    got = decode_block(words, offsets, kind, order)
    want = [decode_registers(words[o:o + n], kind, order) for o in offsets]
    np.testing.assert_array_equal(got, want)   # NaN payloads compare equal here


def test_word_order_is_high_word_first_for_big():
    assert encode_value(0x12345678, "uint32", "big") == [0x1234, 0x5678]
    assert encode_value(0x12345678, "uint32", "little") == [0x5678, 0x1234]
    assert encode_value(-2, "int16") == [0xFFFE]


def test_encode_rejects_what_a_device_cannot_hold():
    for bad in (70000, -1, float("nan")):
        with pytest.raises(ValueError):
            encode_value(bad, "uint16")
    with pytest.raises(ValueError):
        encode_value(1.0, "float16")
    with pytest.raises(ValueError):
        decode_registers([1, 2, 3], "float32")
    assert encode_value(2.6, "int16") == [3]
    np.testing.assert_array_equal(decode_block(encode_block([1e39, -1e39], "float32").reshape(-1),
                                               np.array([0, 2]), "float32", "big"), [np.inf, -np.inf])


# ------------------------------------------------------------------ pure: request planning

def _addr(unit, register, kind="float32"):
    return ModbusAddress(unit, register, kind, "big")


def test_contiguous_points_make_one_request(points):
    rows = points.select("modbus")
    plan = plan_requests([points.address[r] for r in rows])
    assert [(r.unit, r.start, r.count) for r in plan] == [(1, 0, 48)]
    assert sorted(plan[0].members) == list(range(len(rows)))


def test_gaps_within_max_gap_are_bridged_others_split():
    addresses = [_addr(1, 0), _addr(1, 10), _addr(1, 2), _addr(1, 30, "int16")]
    plan = plan_requests(addresses, max_gap=8)
    assert [(r.start, r.count, r.members) for r in plan] == [(0, 12, (0, 2, 1)), (30, 1, (3,))]
    assert [(r.start, r.count) for r in plan_requests(addresses, max_gap=0)] == [(0, 4), (10, 2), (30, 1)]


def test_devices_never_share_a_request():
    plan = plan_requests([_addr(2, 0), _addr(1, 2), _addr(1, 0)])
    assert [(r.unit, r.start, r.count) for r in plan] == [(1, 0, 4), (2, 0, 2)]


def test_max_count_splits_without_cutting_a_value():
    addresses = [_addr(1, 2 * i) for i in range(100)]          # 200 registers
    plan = plan_requests(addresses)
    assert [(r.start, r.count) for r in plan] == [(0, 124), (124, 76)]
    with pytest.raises(ValueError):
        plan_requests(addresses, max_count=126)
    with pytest.raises(ValueError):
        plan_requests([_addr(1, 0, "float64")], max_count=2)


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 400), st.sampled_from(sorted(MODBUS_TYPES))),
                min_size=1, max_size=60, unique_by=lambda t: (t[0], t[1])),
       st.integers(0, 20), st.integers(4, 125))
def test_every_point_is_read_whole_exactly_once(spec, max_gap, max_count):
    addresses = [_addr(u, r, k) for u, r, k in spec]
    plan = plan_requests(addresses, max_gap=max_gap, max_count=max_count)
    assert sorted(i for r in plan for i in r.members) == list(range(len(addresses)))
    for r in plan:
        assert 1 <= r.count <= max_count
        for i in r.members:
            a = addresses[i]
            assert a.unit == r.unit and r.start <= a.register and a.register + a.words <= r.start + r.count


# ------------------------------------------------------------------ against a real server

@pytest.fixture(scope="module")
def points():
    model = read_network(example("schutterwald"))
    return load_points(example("schutterwald") / "points.csv", model)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(points):
    srv = ModbusFieldServer(points)
    line = await srv.start()
    assert line == f"modbus 127.0.0.1:{srv.bound_port}" and srv.bound_port > 0
    yield srv
    await srv.stop()


@pytest.fixture
def field(server, points):
    """The server holding a distinct, plausible pressure per point; faults cleared afterwards."""
    ids = [points.ids[r] for r in points.select("modbus")]
    values = {pid: 101325.0 + 1000.0 * (i + 1) + 0.25 for i, pid in enumerate(ids)}
    server.set_values(values)
    yield values
    server.clear_faults()


def _poller(points, server, **kw):
    kw = {"timeout_s": 0.3, "backoff_s": 0.05, "backoff_max_s": 0.2, **kw}
    return ModbusPoller(points, "127.0.0.1", server.bound_port, **kw)


def _by_point(batch):
    return {p: (v, q) for p, v, q in zip(batch.column("point").to_pylist(), batch.column("value").to_pylist(),
                                         batch.column("quality").to_pylist())}


@on_server
async def test_values_arrive_in_si_with_their_point_ids(points, server, field):
    async with _poller(points, server) as poller:
        before = time.time_ns()
        batch = await poller.poll_once()
        after = time.time_ns()
    assert batch.schema == READING_SCHEMA and batch.num_rows == len(field)
    got = _by_point(batch)
    assert set(got) == set(field)
    for pid, value in field.items():
        assert got[pid][0] == pytest.approx(value, rel=1e-6) and got[pid][1] == GOOD   # float32 in mbar
    ts = batch.column("ts").cast(pa.int64()).to_numpy()
    assert (ts == ts[0]).all() and before <= ts[0] <= after
    assert set(batch.column("source").to_pylist()) == {f"modbus:127.0.0.1:{server.bound_port}"}
    assert poller.stats.polls == 1 and poller.stats.requests == 1 and poller.stats.readings == len(field)
    assert poller.stats.bad == poller.stats.errors == poller.stats.reconnects == 0


@on_server
@pytest.mark.parametrize("kind", ["exception", "timeout"])
async def test_failed_request_marks_its_points_bad(points, server, field, kind):
    server.set_fault("PT-003", kind)          # registers 2-3, read together with PT-001 (0-1)
    async with _poller(points, server, max_count=4, timeout_s=0.2) as poller:
        batch = await poller.poll_once()
        got = _by_point(batch)
        assert batch.num_rows == len(field)
        assert {p for p, (_, q) in got.items() if q == BAD} == {"PT-001", "PT-003"}
        assert np.isnan(got["PT-003"][0]) and got["PT-005"][0] == pytest.approx(field["PT-005"], rel=1e-6)
        assert (poller.stats.requests, poller.stats.errors, poller.stats.bad) == (12, 1, 2)
        server.set_fault("PT-003", None)
        batch = await poller.poll_once()
        assert set(batch.column("quality").to_pylist()) == {GOOD}


@on_server
@pytest.mark.parametrize("connections", [1, 4])
async def test_a_polls_reads_run_concurrently_over_its_connections(points, server, field, connections):
    """Three hung requests (no reply until the 0.3 s timeout) cost one timeout when they sit on
    three connections, three timeouts in a row on one."""
    async with _poller(points, server, max_count=4, timeout_s=0.3, connections=connections) as poller:
        assert len(poller.requests) == 12 and len(poller._lanes) == connections
        hung = [points.ids[poller.rows[r.members[0]]] for r in poller.requests[:3]]   # lanes 0, 1, 2 of 4
        await poller.poll_once()                                  # connect outside the timing
        for pid in hung:
            server.set_fault(pid, "timeout")
        t = time.perf_counter()
        batch = await poller.poll_once()
        wall = time.perf_counter() - t
        bad = {p for p, (_, q) in _by_point(batch).items() if q == BAD}
        assert bad == {points.ids[poller.rows[i]] for r in poller.requests[:3] for i in r.members}
        assert poller.stats.requests == 24 and poller.stats.errors == 3
        if connections == 1:
            assert wall >= 0.85
        else:
            assert wall < 0.75
        server.clear_faults()
        assert set((await poller.poll_once()).column("quality").to_pylist()) == {GOOD}


@on_server
async def test_server_restart_reconnects_and_continues(points, server, field):
    async with _poller(points, server) as poller:
        assert set((await poller.poll_once()).column("quality").to_pylist()) == {GOOD}
        await server.stop()
        try:
            down = await poller.poll_once()
            assert down.num_rows == len(field) and set(down.column("quality").to_pylist()) == {BAD}
            assert not poller.connected
        finally:
            await server.start()
        for _ in range(40):                   # backoff: 0.05 s, then doubling up to 0.2 s
            batch = await poller.poll_once()
            if set(batch.column("quality").to_pylist()) == {GOOD}:
                break
            await asyncio.sleep(0.05)
        assert _by_point(batch)["PT-047"][0] == pytest.approx(field["PT-047"], rel=1e-6)
        assert poller.stats.reconnects == 1 and poller.stats.errors >= 1


@on_server
async def test_without_a_server_every_point_is_bad_and_retries_back_off(points, server):
    port = server.bound_port
    await server.stop()
    try:
        async with _poller(points, server, backoff_s=10.0, backoff_max_s=10.0) as poller:
            batches = [await poller.poll_once() for _ in range(3)]
    finally:
        await server.start()
    assert server.bound_port == port
    assert all(set(b.column("quality").to_pylist()) == {BAD} for b in batches)
    assert poller.stats.errors == 1 and poller.stats.bad == 3 * batches[0].num_rows   # one attempt, then wait


@on_server
async def test_run_polls_every_period(points, server, field):
    async with _poller(points, server, period_s=0.05) as poller:
        batches = [b async for b in poller.run(max_polls=4)]
    ts = np.array([b.column("ts").cast(pa.int64())[0].as_py() for b in batches])
    gaps_s = np.diff(ts) / 1e9
    assert len(batches) == 4 and (gaps_s > 0.03).all() and (gaps_s < 0.5).all()


# ------------------------------------------------------------------ bytewax

def _source(points, server, **kw):
    return ModbusSource(points, "127.0.0.1", server.bound_port, period_s=0.05, timeout_s=0.3, **kw)


def _cluster_main_two_workers(flow):
    cluster_main(flow, [], 0, worker_count_per_proc=2)


@on_server
@pytest.mark.parametrize("entry_point", [run_main, _cluster_main_two_workers], ids=["run_main", "cluster_main"])
async def test_source_runs_in_a_dataflow(points, server, field, entry_point):
    out = []
    flow = Dataflow("modbus_test")
    batches = op.input("modbus", flow, _source(points, server, max_polls=3))
    op.output("out", batches, TestingSink(out))
    await asyncio.to_thread(entry_point, flow)    # the server keeps serving on this loop meanwhile
    assert len(out) == 3
    for batch in out:
        assert isinstance(batch, pa.RecordBatch) and batch.schema == READING_SCHEMA
        assert batch.num_rows == len(field) and set(batch.column("quality").to_pylist()) == {GOOD}
    assert _by_point(out[-1])["PT-021"][0] == pytest.approx(field["PT-021"], rel=1e-6)


@on_server
async def test_partition_snapshot_resumes_the_poll_count(points, server, field):
    source = _source(points, server, max_polls=3)
    assert source.list_parts() == [f"127.0.0.1:{server.bound_port}/1"]

    def next_poll(part):
        """A poll's batch: ``next_batch`` returns [] while the poll's replies are on their way."""
        for _ in range(2000):
            got = part.next_batch()
            if got:
                return got
            assert part.next_awake() is not None
            time.sleep(0.001)
        raise AssertionError("no poll finished")

    def pull(resume_state, n):
        part = source.build_part("modbus", source.list_parts()[0], resume_state)
        try:
            got = [next_poll(part) for _ in range(n)]
            with pytest.raises(StopIteration):
                part.next_batch()
            return got, part.snapshot(), part.next_awake()
        finally:
            part.close()

    first, state, _ = await asyncio.to_thread(pull, None, 3)
    assert state == 3 and all(len(b) == 1 for b in first)
    again, state, awake = await asyncio.to_thread(pull, 1, 2)    # resumed after one poll: two more
    assert state == 3 and len(again) == 2 and awake is not None


@on_server
async def test_a_poll_in_flight_never_blocks_the_worker(points, server, field):
    """A hung read (no reply until its timeout) leaves ``next_batch`` returning [] at once; the
    poll's batch comes on a later call, its hung points BAD."""
    source = ModbusSource(points, "127.0.0.1", server.bound_port, period_s=0.05, timeout_s=0.5, max_polls=1,
                          max_count=4)
    part = source.build_part("modbus", source.list_parts()[0], None)
    server.set_fault("PT-003", "timeout")

    def drive():
        calls = []
        try:
            while True:
                t = time.perf_counter()
                got = part.next_batch()
                calls.append(time.perf_counter() - t)
                if got:
                    return got, calls
                time.sleep(0.005)
        finally:
            part.close()

    (batch,), calls = await asyncio.to_thread(drive)
    assert sum(calls) > 0 and max(calls) < 0.25 and len(calls) > 10      # the 0.5 s timeout was never waited on
    assert _by_point(batch)["PT-003"][1] == BAD and _by_point(batch)["PT-005"][1] == GOOD


def test_server_rejects_unknown_points_and_fault_kinds(points):
    srv = ModbusFieldServer(points)
    with pytest.raises(KeyError):
        srv.set_values({"GS-PT-IN": 1e5})     # an OPC-UA point
    with pytest.raises(ValueError):
        srv.set_fault("PT-001", "meltdown")
    srv.set_values({"PT-003": 101325.0 + 50e2})                   # 50 mbar gauge
    start, image = srv.registers(1)
    assert start == 0 and len(image) == 48
    assert decode_registers(image[2:4], "float32") == pytest.approx(50.0)


@on_server
async def test_client_writes_land_in_the_server_image(server, field):
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=server.bound_port, timeout=0.5, reconnect_delay=0)
    assert await client.connect()
    try:
        reply = await client.write_registers(46, encode_value(12.5, "float32"), device_id=1)
        assert not reply.isError()
        reply = await client.read_holding_registers(46, count=2, device_id=1)
        assert decode_registers(reply.registers, "float32") == 12.5
    finally:
        client.close()
    assert decode_registers(server.registers(1)[1][46:48], "float32") == 12.5
