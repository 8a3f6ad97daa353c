"""``pipetwin alerts tail|ack|clear``: follow a network's alerts in a terminal and record what the
operator did about them.

Each alert revision prints as one line; the same (id, revision) delivered twice (at-least-once
after a restart) prints once per session. An acknowledgement or a clear is a new revision written
through ``write_alert``, so every subscriber and the dashboard see it on the same stream.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone

import redis

from pipetwin.flows.contracts import Alert
from pipetwin.flows.sinks.redis_sink import get_alert, write_alert
from pipetwin.flows.subscribers import AlertGroupReader, Entry, client_for, consume, default_consumer


def format_time(ts_ns: int | None) -> str:
    """UTC, to the second: ``2024-05-01T12:00:03Z``."""
    if not ts_ns:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_alert(alert: Alert) -> str:
    """One line per revision: time, severity, kind, subject, status, message, then id and revision
    (the id is what ``pipetwin alerts ack`` takes).

    >>> a = Alert("leak-J12", "leak", "critical", "J-12", "city", 0, 1_714_564_803_000_000_000,
    ...           message="mass balance gap 0.8 kg/s", revision=2)
    >>> format_alert(a)
    '2024-05-01T12:00:03Z critical leak           J-12         open         mass balance gap 0.8 kg/s  [leak-J12 r2]'
    """
    message = " ".join(alert.message.split())
    return (f"{format_time(alert.updated_ns)} {alert.severity:<8} {alert.kind:<14} {alert.subject:<12} "
            f"{alert.status:<12} {message}  [{alert.id} r{alert.revision}]")


class Seen:
    """(id, revision) pairs already shown in this session, the oldest forgotten past ``limit``."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._keys: OrderedDict[tuple[str, int], None] = OrderedDict()

    def add(self, key: tuple[str, int]) -> bool:
        """True if ``key`` is new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True


def tail(url: str | redis.Redis, network: str, group: str = "tail", consumer: str | None = None,
         from_start: bool = False, ack: bool = True, out: Callable[[str], object] = print,
         max_items: int | None = None, *, idle_timeout_s: float | None = None,
         stop: Callable[[], bool] | None = None, block_ms: int = 1000) -> int:
    """Print each alert revision of ``network`` as one line, following the stream until
    ``max_items`` lines, ``idle_timeout_s`` without news, ``stop()``, or Ctrl-C.

    Reads as ``consumer`` (default: the host name) in ``group``; entries are acknowledged after
    printing unless ``ack`` is False. ``from_start`` starts a new group at the first entry (and
    rewinds an existing one). Returns the number of lines printed.
    """
    r = client_for(url, block_ms)
    reader = AlertGroupReader(r, network, group, consumer or default_consumer(), from_start=from_start)
    seen = Seen()

    def show(entry: Entry) -> bool:
        if entry.alert is None:
            out(f"{entry.entry_id} unreadable alert entry: {entry.fields.get('json', '')[:200]!r}")
            return True
        if not seen.add((entry.alert.id, entry.alert.revision)):
            return False
        out(format_alert(entry.alert))
        return True

    return consume(reader, show, ack=ack, max_items=max_items, idle_timeout_s=idle_timeout_s, stop=stop,
                   block_ms=block_ms)


def operator_action(url: str | redis.Redis, network: str, alert_id: str, status: str, by: str,
                    note: str = "", now_ns: int | None = None) -> Alert:
    """Write a new revision of ``alert_id`` with ``status`` and who set it (in ``evidence``:
    ``<status>_by``, ``<status>_ns`` and an optional ``<status>_note``)."""
    r = client_for(url)
    current = get_alert(r, network, alert_id)
    if current is None:
        raise KeyError(f"no alert {alert_id!r} in network {network!r}")
    if current.status == "cleared":
        if status == "cleared":
            return current
        raise ValueError(f"alert {alert_id!r} is already cleared")
    now = time.time_ns() if now_ns is None else now_ns
    evidence = {**current.evidence, f"{status}_by": by, f"{status}_ns": now}
    if note:
        evidence[f"{status}_note"] = note
    changed = dataclasses.replace(current, status=status, updated_ns=now, evidence=evidence,
                                  revision=current.revision + 1,
                                  cleared_ns=now if status == "cleared" else current.cleared_ns)
    return write_alert(r, changed, keep_ack=False)


def acknowledge(url: str | redis.Redis, network: str, alert_id: str, by: str, note: str = "",
                now_ns: int | None = None) -> Alert:
    """``pipetwin alerts ack``: someone is on it. Returns the revision written."""
    return operator_action(url, network, alert_id, "acknowledged", by, note, now_ns)


def clear(url: str | redis.Redis, network: str, alert_id: str, by: str, note: str = "",
          now_ns: int | None = None) -> Alert:
    """``pipetwin alerts clear``: resolved; the alert leaves the open set. Clearing twice is a no-op."""
    return operator_action(url, network, alert_id, "cleared", by, note, now_ns)


__all__ = ["tail", "acknowledge", "clear", "operator_action", "format_alert", "format_time", "Seen"]
