"""What the wall reads from Redis, and the one thing it writes (an operator's acknowledge/clear).

The wall never imports the flow: it speaks the documented key layout (docs/redis-keys.md) like any
other system would, so it keeps working against a flow of another version or another machine.
``tests/dashboards/test_store.py`` writes with the flow's functions and reads with these, which
keeps the two sides of the contract in step.
"""

from __future__ import annotations

import io
import json
import time

import pyarrow as pa
import redis

CLEARED_TTL_S = 7 * 86_400
ALERTS_MAXLEN = 100_000


def key(network: str, what: str) -> str:
    return f"pipetwin:{network}:{what}"


def connect(url: str) -> redis.Redis:
    """``redis://``, ``rediss://`` and ``unix://`` URLs, or a bare socket path."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    return redis.Redis(unix_socket_path=url, socket_connect_timeout=2.0, socket_timeout=5.0)


def read_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(blob)).read_all()


class WallStore:
    """Read access to one network's keys. The network's geometry is read once and kept; it only
    changes when the flow restarts with another model (``meta.written_ns`` tells)."""

    def __init__(self, url: str, network: str):
        self.url, self.network = url, network
        self.r = connect(url)
        self._network: dict | None = None

    # -- the network and its points ---------------------------------------------------------------
    def network_tables(self, refresh: bool = False) -> dict | None:
        """``{"nodes", "links", "points"}`` as Arrow tables and ``"meta"``; None before the flow
        has published them."""
        if self._network is not None and not refresh:
            meta = self.r.get(key(self.network, "network:meta"))
            if meta is not None and json.loads(meta).get("written_ns") == self._network["meta"].get("written_ns"):
                return self._network
        names = ("nodes", "links", "points")
        *blobs, meta = self.r.mget([key(self.network, f"network:{t}") for t in (*names, "meta")])
        if meta is None or any(b is None for b in blobs):
            return None
        self._network = {**{t: read_ipc(b) for t, b in zip(names, blobs)}, "meta": json.loads(meta)}
        return self._network

    # -- the latest state --------------------------------------------------------------------------
    def summary(self) -> dict | None:
        raw = self.r.get(key(self.network, "state:summary"))
        return json.loads(raw) if raw else None

    def latest_ts(self) -> int | None:
        s = self.summary()
        return int(s["ts_ns"]) if s else None

    def state(self) -> dict | None:
        """Nodes, links and sensors tables and the summary of one tick (one MGET)."""
        names = ("nodes", "links", "sensors")
        *blobs, summary = self.r.mget([key(self.network, f"state:{t}") for t in (*names, "summary")])
        if summary is None or any(b is None for b in blobs):
            return None
        return {**{t: read_ipc(b) for t, b in zip(names, blobs)}, "summary": json.loads(summary)}

    def recent(self, count: int = 3600) -> tuple[str, list[dict]]:
        """The last ``count`` tick summaries, oldest first (the wall's live strip), and the stream
        id of the newest, from which ``after`` continues."""
        entries = self.r.xrevrange(key(self.network, "states"), count=count)
        last = entries[0][0].decode() if entries else "0-0"
        return last, [json.loads(fields[b"summary"]) for _, fields in reversed(entries)]

    def after(self, last_id: str, count: int = 600) -> tuple[str, list[dict]]:
        """Summaries appended since stream id ``last_id`` (what the strip adds on an update)."""
        entries = self.r.xrange(key(self.network, "states"), min=last_id, count=count + 1)
        entries = [e for e in entries if e[0].decode() != last_id]
        if not entries:
            return last_id, []
        return entries[-1][0].decode(), [json.loads(fields[b"summary"]) for _, fields in entries]

    # -- alerts ---------------------------------------------------------------------------------
    def alert(self, alert_id: str) -> dict | None:
        raw = self.r.get(key(self.network, f"alert:{alert_id}"))
        return json.loads(raw) if raw else None

    def open_alerts(self) -> list[dict]:
        """Open and acknowledged alerts, oldest opened first."""
        ids = [i.decode() for i in self.r.zrange(key(self.network, "alerts:open"), 0, -1)]
        if not ids:
            return []
        raws = self.r.mget([key(self.network, f"alert:{i}") for i in ids])
        return [json.loads(raw) for raw in raws if raw]

    def alert_history(self, count: int = 1000) -> list[dict]:
        """The newest ``count`` alert revisions, newest first."""
        entries = self.r.xrevrange(key(self.network, "alerts"), count=count)
        return [json.loads(fields[b"json"]) for _, fields in entries]

    def alerts_version(self) -> str:
        """Changes whenever an alert revision is written (the id of the stream's last entry)."""
        last = self.r.xrevrange(key(self.network, "alerts"), count=1)
        return last[0][0].decode() if last else ""

    def operator_action(self, alert_id: str, status: str, by: str, note: str = "") -> dict:
        """Acknowledge or clear from the console: a new revision, exactly as ``pipetwin alerts
        ack|clear`` writes it (docs/redis-keys.md, "Operator actions"), in one transaction
        guarded by WATCH so a concurrent flow update is never lost."""
        if status not in ("acknowledged", "cleared"):
            raise ValueError(f"an operator can acknowledge or clear, not {status!r}")
        k = key(self.network, f"alert:{alert_id}")
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(k)
                    raw = pipe.get(k)
                    if raw is None:
                        raise KeyError(f"no alert {alert_id!r} in network {self.network!r}")
                    current = json.loads(raw)
                    if current["status"] == "cleared":
                        pipe.unwatch()
                        if status == "cleared":
                            return current
                        raise ValueError(f"alert {alert_id!r} is already cleared")
                    now = time.time_ns()
                    evidence = {**current.get("evidence", {}), f"{status}_by": by, f"{status}_ns": now}
                    if note:
                        evidence[f"{status}_note"] = note
                    new = {**current, "status": status, "updated_ns": now, "evidence": evidence,
                           "revision": int(current["revision"]) + 1,
                           "cleared_ns": now if status == "cleared" else current.get("cleared_ns")}
                    text = json.dumps(new, separators=(",", ":"))
                    pipe.multi()
                    pipe.xadd(key(self.network, "alerts"),
                              {"id": new["id"], "revision": str(new["revision"]), "kind": new["kind"],
                               "severity": new["severity"], "status": status, "json": text},
                              maxlen=ALERTS_MAXLEN, approximate=True)
                    pipe.set(k, text)
                    if status == "cleared":
                        pipe.zrem(key(self.network, "alerts:open"), alert_id)
                        pipe.expire(k, CLEARED_TTL_S)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue
