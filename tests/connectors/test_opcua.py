"""OPC-UA: pure decoding first, then the subscriber and the bytewax source against real asyncua
servers on loopback (one per module; a dedicated one for the outage test), and an interop check
against a node-opcua server started as a subprocess. Nothing of the protocol is mocked."""

import asyncio
import math
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import pytest_asyncio
from asyncua import ua
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main, run_main

from pipetwin.connectors.opcua import (CLIENT_APP_URI, CertificateSecurity, OpcUaAuthError, OpcUaSubscriber,
                                       UserPassword, decode, monitored_item_requests, quality_of)
from pipetwin.connectors.opcua_source import OpcUaSource
from pipetwin.connectors.opcua_server import OpcUaFieldServer, free_port, self_signed_certificate
from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN
from pipetwin.data import example
from pipetwin.twin.io import read_network

on_server = pytest.mark.asyncio(loop_scope="module")
INTEROP = Path(__file__).parent / "opcua_interop"
FAST = dict(sampling_interval_ms=50, batch_interval_s=0.05, watchdog_interval_s=0.5, reconnect_initial_s=0.2)
USERS = {"operator": "s3cret"}


# ------------------------------------------------------------------ pure: DataValue -> reading

@pytest.mark.parametrize("status,quality", [
    (ua.StatusCodes.Good, GOOD), (ua.StatusCodes.GoodClamped, GOOD),
    (ua.StatusCodes.Uncertain, UNCERTAIN), (ua.StatusCodes.UncertainLastUsableValue, UNCERTAIN),
    (ua.StatusCodes.Bad, BAD), (ua.StatusCodes.BadCommunicationError, BAD), (0xC0000000, BAD),
])
def test_status_severity_bits(status, quality):
    assert quality_of(status) == quality


def test_decode_keeps_source_timestamp_and_flags_non_numbers():
    src = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    srv = src + timedelta(seconds=5)
    dv = ua.DataValue(ua.Variant(3.5, ua.VariantType.Double), SourceTimestamp=src, ServerTimestamp=srv)
    assert decode(dv, 0) == (int(src.timestamp()) * 10**9 + 123456000, 3.5, GOOD)
    only_server = ua.DataValue(ua.Variant(1, ua.VariantType.Int32), ServerTimestamp=srv)
    assert decode(only_server, 0)[0] == int(srv.timestamp() * 1e6) * 1000
    assert decode(ua.DataValue(ua.Variant(True)), 42) == (42, 1.0, GOOD)       # valve state
    ts, v, q = decode(ua.DataValue(ua.Variant(None), StatusCode=ua.StatusCode(ua.StatusCodes.BadNoData)), 9)
    assert (ts, q) == (9, BAD) and math.isnan(v)
    assert decode(ua.DataValue(ua.Variant(float("inf"))), 1)[2] == BAD


def test_monitored_items_carry_handles_and_deadbands():
    nodes = [ua.NodeId.from_string(f"ns=2;s=P{i}") for i in range(3)]
    reqs = monitored_item_requests(nodes, 250.0, np.array([0.0, 0.5, 2.0]), 4)
    assert [r.RequestedParameters.ClientHandle for r in reqs] == [0, 1, 2]
    assert not isinstance(reqs[0].RequestedParameters.Filter, ua.DataChangeFilter)
    f = reqs[2].RequestedParameters.Filter
    assert f.DeadbandType == ua.DeadbandType.Absolute and f.DeadbandValue == 2.0
    assert all(r.RequestedParameters.SamplingInterval == 250.0 for r in reqs)


# ------------------------------------------------------------------ fixtures: real servers

@pytest.fixture(scope="module")
def points():
    model = read_network(example("schutterwald"))
    return load_points(example("schutterwald") / "points.csv", model)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(points):
    async with OpcUaFieldServer(points) as srv:
        yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure_server(points):
    srv = OpcUaFieldServer(points, users=USERS, security=("None", "Basic256Sha256_SignAndEncrypt"))
    async with srv:
        yield srv


async def collect_until(sub: OpcUaSubscriber, done, timeout: float = 10.0) -> pa.Table:
    """Read the subscriber's batches until ``done(table)`` holds (or fail after ``timeout``)."""
    got: list[pa.RecordBatch] = []

    async def read():
        async for batch in sub.batches():
            assert batch.schema == READING_SCHEMA
            got.append(batch)
            if done(pa.Table.from_batches(got, READING_SCHEMA)):
                return

    await asyncio.wait_for(read(), timeout)
    return pa.Table.from_batches(got, READING_SCHEMA)


def rows_of(table: pa.Table, point: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["point"] == point]


def has_value(point: str, value: float, quality: int = GOOD, rel: float = 1e-9):
    def check(table: pa.Table) -> bool:
        return any(r["quality"] == quality and math.isclose(r["value"], value, rel_tol=rel)
                   for r in rows_of(table, point))
    return check


async def wait_connected(sub: OpcUaSubscriber, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not sub.connected:
        assert time.monotonic() < deadline, f"not connected: {sub.counters}"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ subscriber

@on_server
async def test_values_arrive_in_si_with_source_timestamps(server, points):
    ts = datetime(2024, 6, 1, 8, 30, 0, 250000, tzinfo=timezone.utc)
    want = {"PT-002": 101325.0 + 0.8e5, "GS-PT-IN": 101325.0 + 1.0e5, "GS-TT-01": 283.15}
    async with OpcUaSubscriber(points, server.endpoint, deadband=0, source="scada-1", **FAST) as sub:
        await wait_connected(sub)
        await server.set_values(want, ts=ts)
        table = await collect_until(sub, lambda t: all(has_value(p, v, rel=1e-6)(t) for p, v in want.items()))
    assert set(table.column("source").to_pylist()) == {"scada-1"}
    opcua_ids = {points.ids[r] for r in points.select("opcua")}
    assert set(table.column("point").to_pylist()) <= opcua_ids
    for p, v in want.items():
        last = rows_of(table, p)[-1]
        assert last["value"] == pytest.approx(v, rel=1e-9)
        assert last["ts"] == ts                              # the source timestamp, not arrival
    assert sub.counters.notifications >= 3 and sub.counters.readings == table.num_rows


@on_server
async def test_status_codes_map_to_quality(server, points):
    async with OpcUaSubscriber(points, server.endpoint, deadband=0, **FAST) as sub:
        await wait_connected(sub)
        server.set_status("PT-004", ua.StatusCodes.UncertainLastUsableValue)
        server.set_status("PT-006", ua.StatusCodes.BadSensorFailure)
        await server.set_values({"PT-004": 1.2e5, "PT-006": 1.3e5, "PT-008": 1.4e5})
        table = await collect_until(sub, lambda t: has_value("PT-004", 1.2e5, UNCERTAIN, 1e-6)(t)
                                    and has_value("PT-008", 1.4e5, GOOD, 1e-6)(t)
                                    and any(r["quality"] == BAD and math.isnan(r["value"])
                                            for r in rows_of(t, "PT-006")))
        server.set_status("PT-004", ua.StatusCodes.Good)
        server.set_status("PT-006", ua.StatusCodes.Good)
    assert sub.counters.bad >= 1 and table.num_rows == sub.counters.readings


@on_server
async def test_table_deadband_suppresses_small_changes(server, points):
    """GS-PT-IN has a 1 mbar deadband in the table: a 0.5 mbar step stays on the server."""
    base = 101325.0 + 50_000.0
    async with OpcUaSubscriber(points, server.endpoint, **FAST) as sub:
        assert sub.deadbands_raw()[sub.rows.tolist().index(points.index()["GS-PT-IN"])] == pytest.approx(1.0)
        await wait_connected(sub)
        await server.set_values({"GS-PT-IN": base})
        await collect_until(sub, has_value("GS-PT-IN", base, rel=1e-9))
        await server.set_values({"GS-PT-IN": base + 50.0})          # 0.5 mbar: suppressed
        await server.set_values({"GS-PT-IN": base + 300.0})         # 3 mbar from base: reported
        table = await collect_until(sub, has_value("GS-PT-IN", base + 300.0, rel=1e-9))
    assert not any(math.isclose(r["value"], base + 50.0) for r in rows_of(table, "GS-PT-IN"))


@on_server
async def test_username_password_accepted(secure_server, points):
    async with OpcUaSubscriber(points, secure_server.endpoint, deadband=0,
                               security=UserPassword("operator", "s3cret"), **FAST) as sub:
        await wait_connected(sub)
        await secure_server.set_values({"PT-010": 1.11e5})
        await collect_until(sub, has_value("PT-010", 1.11e5, rel=1e-9))


@on_server
async def test_wrong_password_refused(secure_server, points):
    sub = OpcUaSubscriber(points, secure_server.endpoint, security=UserPassword("operator", "nope"), **FAST)
    with pytest.raises(OpcUaAuthError):
        await collect_until(sub, lambda t: False, timeout=10)
    await sub.stop()
    assert not sub.connected and sub.counters.readings == 0


@on_server
async def test_basic256sha256_sign_and_encrypt(secure_server, points, tmp_path_factory):
    certs = await self_signed_certificate(tmp_path_factory.mktemp("client-pki"), CLIENT_APP_URI, client=True,
                                          name="client")
    security = CertificateSecurity(certs.cert, certs.key,
                                   mode="SignAndEncrypt", server_certificate=secure_server.certificate.cert,
                                   user=UserPassword("operator", "s3cret"))
    async with OpcUaSubscriber(points, secure_server.endpoint, deadband=0, security=security, **FAST) as sub:
        await wait_connected(sub)
        await secure_server.set_values({"PT-012": 1.22e5})
        await collect_until(sub, has_value("PT-012", 1.22e5, rel=1e-9))


@on_server
async def test_restart_reconnects_resubscribes_and_flags_the_gap(points):
    """Stop the server, start it again on the same port: one BAD NaN reading per point at the
    loss, counted; then a new session and subscription, and values flow again."""
    port = free_port()
    srv = OpcUaFieldServer(points, port)
    n = len(points.select("opcua"))
    try:
        await srv.start()
        assert srv.endpoint == f"opc.tcp://127.0.0.1:{port}/pipetwin/"
        async with OpcUaSubscriber(points, srv.endpoint, deadband=0, **FAST) as sub:
            await wait_connected(sub)
            await srv.set_values({"PT-014": 1.05e5})
            await collect_until(sub, has_value("PT-014", 1.05e5, rel=1e-9))
            stopped_ns = time.time_ns()
            await srv.stop()
            gap = await collect_until(sub, lambda t: sum(1 for r in t.to_pylist() if r["quality"] == BAD
                                                         and math.isnan(r["value"])) >= n)
            assert sub.counters.gaps == 1 and sub.counters.gap_readings == n
            await asyncio.sleep(0.5)                                 # a couple of failed attempts
            await srv.start()
            await wait_connected(sub)
            await srv.set_values({"PT-014": 1.06e5})
            await collect_until(sub, has_value("PT-014", 1.06e5, rel=1e-9))
            assert sub.counters.reconnects == 1 and sub.counters.connect_failures >= 1
    finally:
        await srv.close()
    markers = [r for r in gap.to_pylist() if r["quality"] == BAD and math.isnan(r["value"])]
    assert sorted(r["point"] for r in markers) == sorted(points.ids[r] for r in points.select("opcua"))
    lost_at = {r["ts"].value for r in markers}                     # pandas Timestamp -> UTC ns
    assert len(lost_at) == 1
    assert stopped_ns <= lost_at.pop() <= time.time_ns()


# ------------------------------------------------------------------ bytewax source

def _run_main(flow):
    run_main(flow)


def _cluster_main(flow):
    cluster_main(flow, [], 0, worker_count_per_proc=2)


@on_server
@pytest.mark.parametrize("entry_point", [_run_main, _cluster_main], ids=["run_main", "cluster_main-2"])
async def test_bytewax_source(server, points, entry_point):
    out: list[pa.RecordBatch] = []
    flow = Dataflow("opcua_test")
    batches = op.input("opcua", flow, OpcUaSource({server.endpoint: points}, run_for=timedelta(seconds=2.5),
                                                  deadband=0, **FAST))
    op.output("out", batches, TestingSink(out))
    running = asyncio.create_task(asyncio.to_thread(entry_point, flow))
    value = 1.0e5 + 321.0
    for _ in range(20):                               # keep writing until the flow has subscribed
        await server.set_values({"PT-016": value})
        await asyncio.sleep(0.1)
        value += 1.0
    await asyncio.wait_for(running, 20)
    assert out and all(b.schema == READING_SCHEMA for b in out)
    table = pa.Table.from_batches(out)
    got = [r["value"] for r in rows_of(table, "PT-016") if r["quality"] == GOOD]
    assert len(got) >= 5 and got == sorted(got) and got[-1] == pytest.approx(value - 1.0, rel=1e-9)


# ------------------------------------------------------------------ interop: node-opcua

def _node_opcua_installed() -> None:
    """Install node-opcua beside the server script if it is missing, or skip saying why."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not found: the node-opcua interop test needs Node.js")
    if (INTEROP / "node_modules" / "node-opcua").is_dir():
        return
    try:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=INTEROP, check=True,
                       capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm install node-opcua failed (offline?): {exc}")


@on_server
async def test_node_opcua_server_interop(tmp_path):
    _node_opcua_installed()
    port = free_port()
    proc = await asyncio.create_subprocess_exec("node", str(INTEROP / "server.js"), str(port), cwd=INTEROP,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                                                start_new_session=True)
    try:
        endpoint = await asyncio.wait_for(_endpoint_line(proc), 30)
        table_file = tmp_path / "interop.csv"
        table_file.write_text("id,protocol,address,element,quantity,unit,reference\n" + "".join(
            f"{p},opcua,ns=1;s={p},X,pressure,mbar,gauge\n" for p in ("IX-PT-01", "IX-PT-02", "IX-FT-01")))
        pts = load_points(table_file)
        async with OpcUaSubscriber(pts, endpoint, deadband=0, source="node-opcua", **FAST) as sub:
            table = await collect_until(sub, lambda t: len(rows_of(t, "IX-PT-02")) >= 5, timeout=20)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
    rows = rows_of(table, "IX-PT-02")
    assert all(r["quality"] == GOOD for r in rows[1:])
    raw = [(r["value"] - 101325.0) / 100.0 for r in rows[1:]]       # mbar gauge -> raw again
    assert all(200.0 < x < 1e6 for x in raw) and raw == sorted(raw)
    now = datetime.now(timezone.utc)
    assert all(abs((now - r["ts"]).total_seconds()) < 30 for r in rows[1:])


async def _endpoint_line(proc) -> str:
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("node-opcua server exited before printing its endpoint")
        text = line.decode().strip()
        if text.startswith("ENDPOINT "):
            return text.split(" ", 1)[1]
