"""Twin states and alerts into Redis, and the plain functions that read them back.

The keys and their shapes are listed in docs/redis-keys.md (contract: ``flows/contracts.py``).
Writers and readers come in pairs (STYLE §1.5): ``write_state``/``read_state`` and
``write_alert``/``get_alert``/``open_alerts``. The dashboard and the alert subscribers read only
through these functions, so a key layout change happens here and nowhere else.

``RedisSink`` is a bytewax ``DynamicSink``: every worker writes its own items. Items are
``TwinState`` or ``Alert`` objects (both carry their ``network``), or ``(key, item)`` pairs as they
come out of keyed steps; the key is ignored. A Redis outage never raises into the flow: items wait
in a bounded buffer (oldest dropped first, counted and logged) and are written when a retry after
exponential backoff succeeds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pipetwin.flows.contracts import Alert, TwinState, ipc_bytes, read_ipc, redis_key
from pipetwin.flows.redis_embedded import connect, no_retry
from pipetwin.twin.model import LinkKind, NodeKind

log = logging.getLogger(__name__)

STATES_MAXLEN = 86_400        # one day of 1 s ticks
ALERTS_MAXLEN = 100_000       # alert revisions kept in the stream (approximate trimming)
CLEARED_TTL_S = 7 * 86_400    # a cleared alert's latest-revision key expires after a week
TABLES = ("nodes", "links", "sensors")
SinkItem = TwinState | Alert | tuple[str, TwinState | Alert]


# ----------------------------------------------------------------------------- keys


def state_key(network: str, table: str) -> str:
    """``pipetwin:N:state:nodes|links|sensors|summary``."""
    return redis_key(network, f"state:{table}")


def alert_key(network: str, alert_id: str) -> str:
    """``pipetwin:N:alert:<id>``: the latest revision's JSON."""
    return redis_key(network, f"alert:{alert_id}")


def open_key(network: str) -> str:
    """``pipetwin:N:alerts:open``: ids of alerts not cleared, scored by ``opened_ns``."""
    return redis_key(network, "alerts:open")


def alerts_stream(network: str) -> str:
    return redis_key(network, "alerts")


def dead_stream(network: str) -> str:
    """Where the webhook relay puts alerts it could not deliver."""
    return redis_key(network, "alerts:dead")


# ----------------------------------------------------------------------------- twin state


# figures only the latest summary needs: the next 24 h forecast changes once an hour, and
# repeating it in every stream entry would triple the states stream (a day of 1 s ticks)
LATEST_ONLY = ("forecast_kg_s",)


def summary_json(state: TwinState, drop: tuple[str, ...] = ()) -> str:
    """The summary as strict JSON: NaN and infinities become null (browsers reject ``NaN``)."""
    summary = state.summary()
    for key in drop:
        summary.pop(key, None)
    return json.dumps(_finite(summary), separators=(",", ":"), default=_plain)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value):
    """numpy values left in ``figures`` by a step."""
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_state(r: redis.Redis, state: TwinState, *, maxlen: int = STATES_MAXLEN) -> None:
    """One MULTI/EXEC: the three IPC blobs and the summary, the summary appended to the states
    stream, and the tick's ``ts_ns`` published on the updates channel. Readers using ``read_state``
    (one MGET) therefore never see tables of two different ticks."""
    blobs = state.to_ipc()
    summary = summary_json(state)
    entry = summary_json(state, LATEST_ONLY) if any(k in state.figures for k in LATEST_ONLY) else summary
    net = state.network
    pipe = r.pipeline(transaction=True)
    pipe.mset({**{state_key(net, t): blobs[t] for t in TABLES}, state_key(net, "summary"): summary})
    pipe.xadd(redis_key(net, "states"), {"ts_ns": str(int(state.ts_ns)), "summary": entry},
              maxlen=maxlen, approximate=True)
    pipe.publish(redis_key(net, "updates"), str(int(state.ts_ns)))
    pipe.execute()


def read_state(r: redis.Redis, network: str) -> dict | None:
    """The latest state: ``{"nodes", "links", "sensors"}`` as Arrow tables and ``"summary"`` as a
    dict, all from one tick; None if the network has no state yet."""
    keys = [state_key(network, t) for t in (*TABLES, "summary")]
    *blobs, summary = r.mget(keys)
    if summary is None or any(b is None for b in blobs):
        return None
    tables: dict[str, pa.Table | dict] = {t: read_ipc(b) for t, b in zip(TABLES, blobs)}
    tables["summary"] = json.loads(summary)
    return tables


def recent_summaries(r: redis.Redis, network: str, count: int = 100) -> list[dict]:
    """The last ``count`` summaries from the states stream, oldest first (trend plots)."""
    entries = r.xrevrange(redis_key(network, "states"), count=count)
    return [json.loads(fields[b"summary"]) for _, fields in reversed(entries)]


# ----------------------------------------------------------------------------- the network itself


def network_key(network: str, table: str) -> str:
    """``pipetwin:N:network:nodes|links|points|meta``: what the state's ids refer to."""
    return redis_key(network, f"network:{table}")


def network_tables(model, points) -> dict[str, pa.Table]:
    """The model's geometry and the point table as plain tables, so a reader that never imports
    the twin (the wall, another system) can draw the network and place each sensor on it."""
    nodes, links = model.nodes, model.links
    node_kind = [NodeKind(k).name.lower() for k in nodes.kind]
    link_kind = [LinkKind(k).name.lower() for k in links.kind]
    ids = np.asarray(nodes.ids, dtype=object)
    on_node = np.array([q != "flow" for q in points.quantity], dtype=bool)
    return {
        "nodes": pa.table({"id": pa.array(list(ids), pa.string()), "kind": pa.array(node_kind, pa.string()),
                           "x": np.asarray(nodes.x, float), "y": np.asarray(nodes.y, float),
                           "elevation_m": np.asarray(nodes.elevation_m, float)}),
        "links": pa.table({"id": pa.array(list(links.ids), pa.string()), "kind": pa.array(link_kind, pa.string()),
                           "from": pa.array(list(ids[links.from_node]), pa.string()),
                           "to": pa.array(list(ids[links.to_node]), pa.string()),
                           "length_m": np.asarray(links.length_m, float),
                           "diameter_m": np.asarray(links.diameter_m, float)}),
        "points": pa.table({"point": pa.array(list(points.ids), pa.string()),
                            "element": pa.array(list(points.element), pa.string()),
                            "on": pa.array(np.where(on_node, "node", "link").tolist(), pa.string()),
                            "quantity": pa.array(list(points.quantity), pa.string()),
                            "unit": pa.array(list(points.unit), pa.string()),
                            "protocol": pa.array(list(points.protocol), pa.string()),
                            "period_s": np.asarray(points.period_s, float),
                            "min_si": np.asarray(points.min_si, float),
                            "max_si": np.asarray(points.max_si, float)}),
    }


def write_network(r: redis.Redis, model, points) -> None:
    """Publish the network and its point table once at start (and again after a model change)."""
    tables = network_tables(model, points)
    meta = {"network": model.name, "medium": "natural_gas" if model.is_gas else "water",
            "crs": getattr(model, "crs", None) or None, "nodes": model.n_nodes, "links": model.n_links,
            "points": len(points.ids), "written_ns": time.time_ns()}
    pipe = r.pipeline(transaction=True)
    pipe.mset({**{network_key(model.name, t): ipc_bytes(tab) for t, tab in tables.items()},
               network_key(model.name, "meta"): json.dumps(meta)})
    pipe.execute()


def read_network(r: redis.Redis, network: str) -> dict | None:
    keys = [network_key(network, t) for t in ("nodes", "links", "points", "meta")]
    *blobs, meta = r.mget(keys)
    if meta is None or any(b is None for b in blobs):
        return None
    return {**{t: read_ipc(b) for t, b in zip(("nodes", "links", "points"), blobs)}, "meta": json.loads(meta)}


# ----------------------------------------------------------------------------- alerts


def alert_fields(alert: Alert) -> dict[str, str]:
    """The fields of an alerts-stream entry: a few for filtering without parsing, plus the JSON."""
    return {"id": alert.id, "revision": str(alert.revision), "kind": alert.kind, "severity": alert.severity,
            "status": alert.status, "json": alert.to_json()}


def merge_revision(previous: Alert | None, incoming: Alert, keep_ack: bool = True) -> Alert | None:
    """What to store when ``incoming`` arrives and ``previous`` is stored; None: nothing to do.

    The flow numbers its revisions itself and operators add revisions of their own (acknowledge,
    clear), so a revision at or below the stored one becomes stored + 1, which keeps (id, revision)
    unique. An exact repeat of the stored revision (an at-least-once redelivery) is ignored. With
    ``keep_ack`` an update still saying ``open`` does not undo an operator's acknowledgement.
    """
    if previous is None:
        return incoming
    if incoming.revision == previous.revision and incoming.to_json() == previous.to_json():
        return None
    changes: dict = {"revision": max(incoming.revision, previous.revision + 1)}
    if keep_ack and previous.status == "acknowledged" and incoming.status == "open":
        changes["status"] = "acknowledged"
        carried = {k: v for k, v in previous.evidence.items() if k.startswith("acknowledged_")}
        changes["evidence"] = {**carried, **incoming.evidence}
    return dataclasses.replace(incoming, **changes)


def write_alert(r: redis.Redis, alert: Alert, *, maxlen: int = ALERTS_MAXLEN, keep_ack: bool = True,
                cleared_ttl_s: int | None = CLEARED_TTL_S) -> Alert:
    """Store a new revision: XADD to ``pipetwin:N:alerts``, the latest-revision key and the set of
    open ids, in one transaction guarded by WATCH (an operator may write the same alert at the same
    time). Returns the alert as stored (its revision may have been raised, see ``merge_revision``)."""
    key = alert_key(alert.network, alert.id)
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                stored = merge_revision(Alert.from_json(raw) if raw else None, alert, keep_ack)
                if stored is None:
                    pipe.unwatch()
                    return Alert.from_json(raw)
                pipe.multi()
                _queue_alert(pipe, stored, maxlen, cleared_ttl_s)
                pipe.execute()
                return stored
            except redis.WatchError:
                continue


def _queue_alert(pipe, alert: Alert, maxlen: int, cleared_ttl_s: int | None) -> None:
    net = alert.network
    pipe.xadd(alerts_stream(net), alert_fields(alert), maxlen=maxlen, approximate=True)
    pipe.set(alert_key(net, alert.id), alert.to_json())
    if alert.status == "cleared":
        pipe.zrem(open_key(net), alert.id)
        if cleared_ttl_s:
            pipe.expire(alert_key(net, alert.id), cleared_ttl_s)
    else:
        pipe.zadd(open_key(net), {alert.id: alert.opened_ns})


def get_alert(r: redis.Redis, network: str, alert_id: str) -> Alert | None:
    """The latest revision of one alert (None: unknown, or cleared and expired)."""
    raw = r.get(alert_key(network, alert_id))
    return Alert.from_json(raw) if raw else None


def open_alerts(r: redis.Redis, network: str) -> list[Alert]:
    """Alerts not cleared (open or acknowledged), oldest opened first."""
    ids = r.zrange(open_key(network), 0, -1)
    if not ids:
        return []
    raws = r.mget([alert_key(network, i.decode()) for i in ids])
    return [Alert.from_json(raw) for raw in raws if raw]


# ----------------------------------------------------------------------------- buffered writer


@dataclass
class SinkStats:
    """What one writer did. ``dropped`` items are lost for good (buffer full during an outage, or
    still unwritten when the writer closed); ``failures`` counts failed write attempts."""

    states: int = 0
    alerts: int = 0
    buffered: int = 0
    dropped: int = 0
    failures: int = 0
    recoveries: int = 0


def _unwrap(item: SinkItem) -> TwinState | Alert:
    if isinstance(item, tuple) and len(item) == 2:
        item = item[1]
    if not isinstance(item, (TwinState, Alert)):
        raise TypeError(f"RedisSink takes TwinState or Alert items (or (key, item) pairs), not {type(item).__name__}")
    return item


class RedisWriter:
    """Writes states and alerts in order, surviving Redis outages.

    Each item waits in a buffer of at most ``max_buffer`` items until written. On a Redis error the
    writer stops trying until a backoff delay has passed (``backoff_s`` doubling up to
    ``max_backoff_s``), so an outage costs the flow no blocking; the redis client itself is made
    not to retry (``no_retry``); an attempt against a host that does not answer at all costs at
    most the 2 s connect timeout, once per backoff period. When the buffer is full the oldest item
    is dropped: the newest state matters most to a control room. Drops are counted in ``stats.dropped`` and logged.
    """

    def __init__(self, url: str, *, maxlen: int = STATES_MAXLEN, max_buffer: int = 10_000,
                 backoff_s: float = 0.1, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, client: redis.Redis | None = None):
        self.url, self.maxlen, self.max_buffer = url, maxlen, max_buffer
        self.backoff_s, self.max_backoff_s, self.clock = backoff_s, max_backoff_s, clock
        self.redis = client or connect(url, retry=no_retry(), socket_connect_timeout=2, socket_timeout=5)
        self.buffer: deque[TwinState | Alert] = deque()
        self.stats = SinkStats()
        self._delay = 0.0
        self._next_try = 0.0

    def submit(self, items: Iterable[SinkItem]) -> None:
        """Buffer items and write what can be written now; never raises on a Redis error."""
        self.flush()
        for item in items:
            self._append(_unwrap(item))
        self.flush()

    def _append(self, item: TwinState | Alert) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self._dropped(1, "buffer full")
        self.buffer.append(item)
        self.stats.buffered = len(self.buffer)

    def _dropped(self, n: int, why: str) -> None:
        before = self.stats.dropped
        self.stats.dropped += n
        if before == 0 or before // 1000 != self.stats.dropped // 1000:
            log.warning("redis sink %s: %s, dropped %d item(s) so far", self.url, why, self.stats.dropped)

    def flush(self) -> bool:
        """Write buffered items in order; False if some remain (Redis down or backing off)."""
        if self.buffer and self.clock() < self._next_try:
            return False
        while self.buffer:
            try:
                self._write(self.buffer[0])
            except (redis.RedisError, OSError) as exc:
                self._failed(exc)
                return False
            self.buffer.popleft()
            self.stats.buffered = len(self.buffer)
            self._succeeded()
        return True

    def _write(self, item: TwinState | Alert) -> None:
        if isinstance(item, TwinState):
            write_state(self.redis, item, maxlen=self.maxlen)
            self.stats.states += 1
        else:
            write_alert(self.redis, item)
            self.stats.alerts += 1

    def _failed(self, exc: Exception) -> None:
        self.stats.failures += 1
        if self._delay == 0.0:
            log.warning("redis sink %s: write failed (%s); buffering up to %d items", self.url, exc, self.max_buffer)
        self._delay = min(self.max_backoff_s, max(self.backoff_s, 2 * self._delay))
        self._next_try = self.clock() + self._delay

    def _succeeded(self) -> None:
        if self._delay:
            self.stats.recoveries += 1
            log.warning("redis sink %s: writing again (%d buffered, %d dropped so far)",
                        self.url, len(self.buffer), self.stats.dropped)
        self._delay = 0.0
        self._next_try = 0.0

    def close(self, timeout_s: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> None:
        """Try to write what is buffered for up to ``timeout_s``; count the rest as dropped."""
        deadline = self.clock() + timeout_s
        while not self.flush() and self.clock() < deadline:
            sleep(max(0.0, min(self._next_try, deadline) - self.clock()) or 0.01)
        if self.buffer:
            self._dropped(len(self.buffer), "closing with Redis unreachable")
            self.buffer.clear()
            self.stats.buffered = 0
        self.redis.close()


# ----------------------------------------------------------------------------- bytewax sink


class _RedisPartition(StatelessSinkPartition[SinkItem]):
    def __init__(self, writer: RedisWriter, close_timeout_s: float):
        self.writer, self.close_timeout_s = writer, close_timeout_s

    def write_batch(self, items: list[SinkItem]) -> None:
        self.writer.submit(items)

    def close(self) -> None:
        self.writer.close(self.close_timeout_s)


class RedisSink(DynamicSink[SinkItem]):
    """bytewax sink writing ``TwinState`` and ``Alert`` items (or ``(key, item)`` pairs) to Redis.

    Each worker gets its own ``RedisWriter``; its ``SinkStats`` are kept in ``stats`` by worker
    index so the process can report them. Writes are at-least-once: a transaction whose reply was
    lost to a dropped connection is sent again, which may append a summary to the states stream
    twice; alert revisions that repeat exactly are ignored (``merge_revision``).
    """

    def __init__(self, url: str, *, maxlen: int = STATES_MAXLEN, max_buffer: int = 10_000,
                 backoff_s: float = 0.1, max_backoff_s: float = 30.0, close_timeout_s: float = 5.0):
        self.url, self.maxlen, self.max_buffer = url, maxlen, max_buffer
        self.backoff_s, self.max_backoff_s, self.close_timeout_s = backoff_s, max_backoff_s, close_timeout_s
        self.stats: dict[int, SinkStats] = {}

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        writer = RedisWriter(self.url, maxlen=self.maxlen, max_buffer=self.max_buffer,
                             backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)
        self.stats[worker_index] = writer.stats
        return _RedisPartition(writer, self.close_timeout_s)


__all__ = ["RedisSink", "RedisWriter", "SinkStats", "write_state", "read_state", "recent_summaries",
           "write_alert", "get_alert", "open_alerts", "merge_revision", "alert_fields", "summary_json",
           "state_key", "alert_key", "open_key", "alerts_stream", "dead_stream", "STATES_MAXLEN"]
