"""Alert revisions and operator actions reach the hash-chained ledger through the audit recorder,
against a real embedded Redis."""

from __future__ import annotations

import time

from pipetwin.flows.audit.ledger import Ledger, verify
from pipetwin.flows.contracts import Alert
from pipetwin.flows.redis_embedded import connect, start_embedded_redis
from pipetwin.flows.sinks.redis_sink import write_alert
from pipetwin.flows.subscribers.audit import record
from pipetwin.flows.subscribers.tail import acknowledge, clear


def test_every_revision_and_operator_action_is_recorded(tmp_path):
    server = start_embedded_redis()
    try:
        r = connect(server.url)
        now = time.time_ns()
        a = Alert(id="n:leak:J1:1", kind="leak", severity="major", subject="J1", network="n", opened_ns=now,
                  updated_ns=now, message="leak")
        write_alert(r, a)                                    # written before the recorder exists: not missed
        acknowledge(r, "n", a.id, by="alice", note="crew sent")
        clear(r, "n", a.id, by="bob")
        ledger = tmp_path / "ledger.jsonl"
        (tmp_path / "historian" / "ticks").mkdir(parents=True)
        (tmp_path / "historian" / "ticks" / "part-0.parquet").write_bytes(b"PAR1 stand-in bytes")
        n = record(r, "n", ledger, historian=tmp_path / "historian", idle_timeout_s=0.5)
        assert n == 3
        entries = list(Ledger(ledger).entries())
        kinds = [e["kind"] for e in entries]
        assert kinds[:3] == ["alert", "operator_action", "operator_action"] and kinds[-1] == "anchor"
        assert entries[1]["payload"]["evidence"]["acknowledged_by"] == "alice"
        assert verify(ledger, historian=tmp_path / "historian").ok
        # a second run resumes where the group stopped: nothing is recorded twice
        assert record(r, "n", ledger, idle_timeout_s=0.3) == 0
    finally:
        server.close()
