"""Alert subscribers: programs following ``pipetwin:N:alerts`` through a consumer group.

``tail`` prints alerts for people and records their acknowledgements; ``webhook`` relays alerts to
another system by HTTP. Both read the stream the same way, which lives here: XREADGROUP, this
consumer's pending entries first (so a restarted consumer handles what it had received but not
acknowledged), then new entries, each acknowledged only after it was handled (at-least-once).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from pipetwin.flows.contracts import Alert
from pipetwin.flows.redis_embedded import connect
from pipetwin.flows.sinks.redis_sink import alerts_stream

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One alerts-stream entry. ``alert`` is None when the JSON could not be read."""

    entry_id: str
    fields: dict[str, str]
    alert: Alert | None


def default_consumer() -> str:
    """The host name: stable across restarts, so a restarted tail gets its pending entries back."""
    return socket.gethostname()


def client_for(target: str | redis.Redis, block_ms: int = 1000) -> redis.Redis:
    """A URL or an existing client; a URL's client waits longer than a blocking read lasts."""
    if isinstance(target, redis.Redis):
        return target
    return connect(target, socket_timeout=block_ms / 1000 + 10)


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def to_entry(entry_id, fields: dict | None) -> Entry:
    decoded = {_s(k): _s(v) for k, v in (fields or {}).items()}
    try:
        alert = Alert.from_json(decoded["json"])
    except (KeyError, ValueError, TypeError):
        alert = None
    return Entry(_s(entry_id), decoded, alert)


class AlertGroupReader:
    """One consumer of one group on ``pipetwin:N:alerts``."""

    def __init__(self, r: redis.Redis, network: str, group: str, consumer: str, *,
                 from_start: bool = False, count: int = 100, stream: str | None = None):
        self.redis, self.group, self.consumer, self.count = r, group, consumer, count
        self.stream = stream or alerts_stream(network)
        self.from_start = from_start
        self._pending_after: str | None = "0"   # None once this consumer's pending entries are read
        self.ensure_group()

    def ensure_group(self) -> None:
        """Create the group (and the stream): at the start with ``from_start``, else at the end.
        ``from_start`` on an existing group moves the whole group back to the start."""
        start = "0" if self.from_start else "$"
        try:
            self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            if self.from_start:
                self.redis.xgroup_setid(self.stream, self.group, id="0")
        self.from_start = False   # rewind once, not after every reconnect

    def reread_pending(self) -> None:
        """After a lost connection: this consumer's pending entries come first again."""
        self._pending_after = "0"

    def read(self, block_ms: int | None = 1000) -> list[Entry]:
        """Own pending entries first (in order, once each), then new ones waiting up to ``block_ms``."""
        if self._pending_after is not None:
            got = self._xread(self._pending_after, None)
            if got:
                self._pending_after = got[-1].entry_id
                return got
            self._pending_after = None
        return self._xread(">", block_ms)

    def _xread(self, start: str, block_ms: int | None) -> list[Entry]:
        resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.count,
                                     block=block_ms)
        return [to_entry(i, f) for i, f in resp[0][1]] if resp else []

    def ack(self, entry_ids: list[str]) -> int:
        return int(self.redis.xack(self.stream, self.group, *entry_ids)) if entry_ids else 0


def consume(reader: AlertGroupReader, handle: Callable[[Entry], bool], *, ack: bool = True,
            max_items: int | None = None, idle_timeout_s: float | None = None,
            stop: Callable[[], bool] | None = None, block_ms: int = 1000,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Hand each entry to ``handle`` and acknowledge it afterwards. ``handle`` returns whether the
    entry counts towards ``max_items``. Returns after ``max_items`` counted entries, after
    ``idle_timeout_s`` without an entry, or when ``stop()`` is true.

    Survives Redis outages: on a connection error it waits (1 s doubling to 30 s), then reads this
    consumer's pending entries again before new ones, so an entry whose handling or XACK was cut
    off is handled again (at-least-once); a group that a restarted Redis lost is re-created.
    """
    counted, idle_since, delay = 0, time.monotonic(), 0.0
    wait_ms = block_ms if idle_timeout_s is None else max(1, min(block_ms, int(idle_timeout_s * 1000)))
    while not (stop and stop()) and (max_items is None or counted < max_items):
        try:
            entries = reader.read(wait_ms)
            delay = 0.0
            if entries:
                idle_since = time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                break
            counted += _handle_all(reader, entries, handle, ack, None if max_items is None else max_items - counted)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            delay = min(30.0, max(1.0, 2 * delay))
            log.warning("alerts %s: %s; retrying in %.0f s", reader.stream, exc, delay)
            sleep(delay)
            reader.reread_pending()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            reader.ensure_group()
    return counted


def _handle_all(reader: AlertGroupReader, entries: list[Entry], handle: Callable[[Entry], bool], ack: bool,
                room: int | None) -> int:
    """Handle entries in order until ``room`` of them counted; the rest stay pending and come back
    first after a restart."""
    counted = 0
    for entry in entries:
        if room is not None and counted >= room:
            break
        counted += bool(handle(entry))
        if ack:
            reader.ack([entry.entry_id])
    return counted


__all__ = ["AlertGroupReader", "Entry", "consume", "default_consumer", "client_for", "to_entry"]
