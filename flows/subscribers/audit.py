"""The audit recorder: every alert revision, whoever wrote it (the flow, ``pipetwin alerts ack``,
the wall's console, another system), goes from the alerts stream into the hash-chained ledger.

Reading the stream as its own consumer group (``audit``) rather than hooking each writer means an
operator action taken anywhere is recorded, and the ledger is as complete as the stream:
at-least-once, like every subscriber. A recorder restarted after a crash between its append and
its XACK appends that revision again; the repeat carries the same (id, revision), so an auditor
sees it for what it is, and the chain still verifies. Every ``anchor_every_s`` it also anchors the
historian's files (their hashes), so a later edit of a Parquet file is detected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from pipetwin.flows.audit.ledger import Ledger
from pipetwin.flows.contracts import Alert
from pipetwin.flows.sinks.redis_sink import alerts_stream
from pipetwin.flows.subscribers import AlertGroupReader, Entry, client_for, consume, default_consumer


def ledger_kind(alert: Alert) -> str:
    """``operator_action`` for a revision an operator wrote (acknowledge / clear), else ``alert``."""
    by = alert.evidence.get(f"{alert.status}_by")
    at = alert.evidence.get(f"{alert.status}_ns")
    return "operator_action" if by is not None and at == alert.updated_ns else "alert"


def record(url: str | redis.Redis, network: str, ledger: str | Path, *, historian: str | Path | None = None,
           anchor_every_s: float = 3600.0, group: str = "audit", consumer: str | None = None,
           max_items: int | None = None, idle_timeout_s: float | None = None,
           stop: Callable[[], bool] | None = None, block_ms: int = 1000) -> int:
    """Follow ``network``'s alerts into ``ledger`` until ``stop()`` (or ``max_items`` /
    ``idle_timeout_s``); returns the entries appended. A new group starts at the stream's first
    entry, so nothing written before the recorder started is missed."""
    r = client_for(url, block_ms)
    book = Ledger(ledger)
    try:                          # a new group starts at the first entry; an existing one resumes
        r.xgroup_create(alerts_stream(network), group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    reader = AlertGroupReader(r, network, group, consumer or default_consumer())
    last_anchor = [time.monotonic()]

    def keep(entry: Entry) -> bool:
        if entry.alert is None:
            book.append("alert", {"unreadable_entry": entry.entry_id, "fields": entry.fields})
        else:
            book.append(ledger_kind(entry.alert), entry.alert)
        if historian is not None and time.monotonic() - last_anchor[0] >= anchor_every_s:
            book.anchor(historian)
            last_anchor[0] = time.monotonic()
        return True

    def stopping() -> bool:
        if historian is not None and time.monotonic() - last_anchor[0] >= anchor_every_s:
            book.anchor(historian)
            last_anchor[0] = time.monotonic()
        return bool(stop and stop())

    n = consume(reader, keep, max_items=max_items, idle_timeout_s=idle_timeout_s, stop=stopping, block_ms=block_ms)
    if historian is not None and Path(historian).exists():
        book.anchor(historian)          # the files as they were when the recorder stopped
    return n
