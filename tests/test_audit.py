"""The audit ledger: a clean chain verifies; tampering in each way is found and the first bad line
named; anchored historian files are checked; pruning past retention stays verifiable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipetwin.cli import main
from pipetwin.connectors.reading import readings_batch
from pipetwin.flows.audit.ledger import (GENESIS, Ledger, LedgerError, entry_hash, entry_line, historian_files,
                                         verify)
from pipetwin.flows.sinks.historian import Historian

NS = 10**9
DAY = 86_400 * NS
T0 = 1_700_000_000 * NS


class Clock:
    def __init__(self, t: int = T0):
        self.t = t

    def __call__(self) -> int:
        self.t += NS
        return self.t


def make_historian(root: Path) -> Path:
    with Historian(root, network="north", fsync=False) as hist:
        for day in range(3):
            ts = [T0 + day * DAY + k * NS for k in range(5)]
            hist.write_readings(readings_batch(["P1"] * 5, ts, [2.0e5 + k for k in range(5)], 0, "test"))
    return root


def make_ledger(tmp_path: Path, n: int = 8) -> Ledger:
    ledger = Ledger(tmp_path / "audit.jsonl", clock=Clock(), fsync=False)
    for i in range(n):
        kind = ["alert", "operator_action", "study", "report"][i % 4]
        ledger.append(kind, {"i": i, "msg": f"entry {i}", "value": 1.5 * i, "nan": float("nan")})
    return ledger


def lines(ledger: Ledger) -> list[str]:
    return ledger.path.read_text(encoding="utf-8").splitlines()


def write(ledger: Ledger, rows: list[str]) -> None:
    ledger.path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def test_clean_ledger_verifies_and_lines_are_canonical(tmp_path):
    ledger = make_ledger(tmp_path)
    result = ledger.verify()
    assert result.ok and result.entries == 8 and result.first_bad_line is None
    entries = list(ledger.entries())
    assert entries[0]["prev_hash"] == GENESIS
    assert [e["seq"] for e in entries] == list(range(8))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert result.head == entries[-1]["hash"] == ledger.head()
    assert entries[0]["payload"]["nan"] is None            # canonical JSON has no NaN
    # a verifier in another language: SHA-256 of the line without its hash field
    line = lines(ledger)[2]
    body = line[:line.rindex(',"hash":')] + "}"
    assert hashlib.sha256(body.encode()).hexdigest() == json.loads(line)["hash"]


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(LedgerError, match="'gossip'"):
        Ledger(tmp_path / "a.jsonl").append("gossip", {})


def edit_payload(rows):
    e = json.loads(rows[2])
    e["payload"]["msg"] = "nothing happened"
    rows[2] = entry_line(e)                  # stored hash kept: the content no longer matches it
    return rows, 3, "edited"


def edit_payload_and_rehash(rows):
    e = json.loads(rows[2])
    e["payload"]["value"] = 0.0
    e["hash"] = entry_hash(e)                # a careful forger: the next line's prev_hash breaks
    rows[2] = entry_line(e)
    return rows, 4, "removed, inserted or reordered"


def edit_hash(rows):
    e = json.loads(rows[4])
    e["hash"] = "f" * 64
    rows[4] = entry_line(e)
    return rows, 5, "edited"


def remove(rows):
    del rows[3]
    return rows, 4, "removed, inserted or reordered"


def insert(rows):
    prev = json.loads(rows[2])
    forged = {"seq": prev["seq"] + 1, "ts": prev["ts"], "kind": "alert", "payload": {"forged": True},
              "prev_hash": prev["hash"]}
    forged["hash"] = entry_hash(forged)
    rows.insert(3, entry_line(forged))
    return rows, 5, "removed, inserted or reordered"


def reorder(rows):
    rows[3], rows[4] = rows[4], rows[3]
    return rows, 4, "removed, inserted or reordered"


def truncate_middle(rows):
    del rows[2:6]
    return rows, 3, "removed, inserted or reordered"


def remove_first(rows):
    del rows[0]
    return rows, 1, "chain's start"


def reformat(rows):
    rows[1] = json.dumps(json.loads(rows[1]), indent=None)        # same content, spaces added
    return rows, 2, "canonical form"


def garbage(rows):
    rows[6] = rows[6][:40]
    return rows, 7, "not a JSON entry"


@pytest.mark.parametrize("tamper", [edit_payload, edit_payload_and_rehash, edit_hash, remove, insert, reorder,
                                    truncate_middle, remove_first, reformat, garbage])
def test_tampering_is_detected_at_the_first_bad_line(tmp_path, tamper):
    ledger = make_ledger(tmp_path)
    rows, line, words = tamper(lines(ledger))
    write(ledger, rows)
    result = verify(ledger.path)
    assert not result.ok
    assert result.first_bad_line == line, result.problem
    assert words in result.problem and result.problem.startswith(f"line {line}:")


def test_truncated_tail_needs_the_published_head(tmp_path):
    ledger = make_ledger(tmp_path)
    published = ledger.head()
    assert verify(ledger.path, expect_head=published).ok
    ledger.append("alert", {"later": True})
    assert verify(ledger.path, expect_head=published).ok      # the chain grew past the published head: fine
    write(ledger, lines(ledger)[:5])
    assert verify(ledger.path).ok                             # the chain alone cannot tell...
    result = verify(ledger.path, expect_head=published)       # ...the published head can
    assert not result.ok and "not in the ledger" in result.problem


def test_anchored_historian_files(tmp_path):
    root = make_historian(tmp_path / "hist")
    ledger = make_ledger(tmp_path, 3)
    anchor = ledger.anchor(root)
    files = historian_files(root)
    assert len(files) == 3 and anchor["payload"]["files"] == files
    assert verify(ledger.path, historian=root).ok
    again = ledger.anchor(root)                               # nothing new: an empty incremental anchor
    assert again["payload"]["files"] == {} and again["payload"]["digest"] == anchor["payload"]["digest"]
    assert verify(ledger.path, historian=root).files_checked == 3

    # change one value in an anchored Parquet file and write it back under the same name
    target = root / sorted(files)[1]
    table = pq.read_table(target)
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                    [[v + 1.0 for v in table["value"].to_pylist()]]), target)
    result = verify(ledger.path, historian=root)
    assert not result.ok and result.first_bad_line == 4     # the anchor that recorded the file
    assert sorted(files)[1] in result.problem and "differs from its anchor" in result.problem
    # anchoring again does not bless the change
    ledger.anchor(root)
    result = verify(ledger.path, historian=root)
    assert not result.ok and any("changed between the anchors" in p for p in result.file_problems)


def test_missing_anchored_file(tmp_path):
    root = make_historian(tmp_path / "hist")
    ledger = make_ledger(tmp_path, 2)
    ledger.anchor(root)
    victim = sorted(historian_files(root))[0]
    (root / victim).unlink()
    result = verify(ledger.path, historian=root)
    assert not result.ok and "missing" in result.problem and victim in result.problem


def test_retention_prune_stays_verifiable(tmp_path):
    clock = Clock()
    ledger = Ledger(tmp_path / "audit.jsonl", clock=clock, fsync=False)
    root = make_historian(tmp_path / "hist")
    for i in range(4):
        ledger.append("alert", {"old": i})
    ledger.anchor(root)
    clock.t += 3 * 365 * DAY
    for i in range(3):
        ledger.append("report", {"recent": i})
    clock.t += 3 * 365 * DAY                                # six years after the first entries
    with pytest.raises(LedgerError, match="signed_off_by"):
        ledger.prune(signed_off_by="")
    archive = tmp_path / "archive.jsonl"
    before = lines(ledger)
    assert ledger.prune(signed_off_by="records officer", archive=archive) == 5   # 4 alerts + the anchor
    rows = lines(ledger)
    assert json.loads(rows[0])["kind"] == "pruned" and json.loads(rows[-1])["kind"] == "checkpoint"
    result = verify(ledger.path, historian=root)
    assert result.ok, result.problem
    assert result.files_checked == 3                        # the pruned anchor's files are still checked
    checkpoint = json.loads(rows[-1])["payload"]
    assert archive.read_text() == "".join(r + "\n" for r in before[:5])
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == checkpoint["pruned_sha256"]
    assert checkpoint["signed_off_by"] == "records officer" and checkpoint["retention_days"] == 1827
    # appending and pruning again keep it verifiable
    ledger.append("alert", {"after": 1})
    assert ledger.prune(signed_off_by="records officer") == 0
    clock.t += 4 * 365 * DAY
    assert ledger.prune(signed_off_by="records officer") > 0
    assert verify(ledger.path).ok


def test_pruning_forgeries_are_detected(tmp_path):
    clock = Clock()
    ledger = Ledger(tmp_path / "audit.jsonl", clock=clock, fsync=False)
    for i in range(3):
        ledger.append("alert", {"old": i})
    clock.t += 6 * 365 * DAY
    for i in range(3):
        ledger.append("alert", {"new": i})
    ledger.prune(signed_off_by="officer")
    good = lines(ledger)
    # entries cut from just after the header
    write(ledger, good[:1] + good[2:])
    assert verify(ledger.path).first_bad_line == 2
    # the vouching checkpoint removed
    write(ledger, good[:-1])
    result = verify(ledger.path)
    assert not result.ok and result.first_bad_line == 1 and "no matching chained checkpoint" in result.problem
    # a header forged onto a ledger whose start was cut (no checkpoint vouches for it)
    fresh = make_ledger(tmp_path / "b", 6)
    rows = lines(fresh)
    cut = json.loads(rows[2])
    header = {"seq": cut["seq"], "ts": cut["ts"], "kind": "pruned", "payload": {"checkpoint_seq": 99,
              "checkpoint_hash": "0" * 64}, "prev_hash": None, "hash": cut["hash"]}
    write(fresh, [entry_line(header)] + rows[3:])
    assert verify(fresh.path).first_bad_line == 1
    # a broken ledger is never pruned
    write(ledger, good[:2] + good[3:])
    with pytest.raises(LedgerError, match="does not verify"):
        ledger.prune(signed_off_by="officer")


def test_cli_verify_and_anchor(tmp_path, capsys):
    root = make_historian(tmp_path / "hist")
    ledger = make_ledger(tmp_path, 3)
    assert main(["audit", "anchor", str(ledger.path), str(root)]) == 0
    out = dict(x.split("=", 1) for x in capsys.readouterr().out.splitlines())
    assert out["new_files"] == "3" and out["seq"] == "3"
    assert main(["audit", "verify", str(ledger.path), str(root)]) == 0
    out = dict(x.split("=", 1) for x in capsys.readouterr().out.splitlines())
    assert out["ok"] == "true" and out["entries"] == "4" and out["files_checked"] == "3"
    rows = lines(ledger)
    rows[1], rows[2] = rows[2], rows[1]
    write(ledger, rows)
    assert main(["audit", "verify", str(ledger.path)]) == 1
    captured = capsys.readouterr()
    assert "first_bad_line=2" in captured.out and "line 2:" in captured.err
    assert main(["audit", "prune", str(ledger.path)]) == 1    # no --by
    assert main(["audit", "anchor", str(ledger.path), str(tmp_path / "nowhere")]) == 1
    assert "no such historian folder" in capsys.readouterr().err


def test_alert_objects_and_numpy_figures_go_in_as_plain_json(tmp_path):
    import numpy as np

    from pipetwin.flows.contracts import Alert, Candidate

    alert = Alert(id="leak-7", kind="leak", severity="major", subject="north", network="north", opened_ns=T0,
                  updated_ns=T0, evidence={"estimated_flow": np.float64(0.004), "ufg_pct": float("nan"),
                                           "pipes": np.array(["p1", "p2"])},
                  candidates=[Candidate("n1", 0.9, 1.0, 2.0)])
    ledger = Ledger(tmp_path / "a.jsonl", clock=Clock(), fsync=False)
    entry = ledger.append("alert", alert)
    ledger.append("operator_action", {"alert": alert.id, "action": "ack", "by": "jo", "note": "crew sent, Straße 5"})
    stored = next(ledger.entries())
    assert stored == entry
    assert stored["payload"]["evidence"] == {"estimated_flow": 0.004, "ufg_pct": None, "pipes": ["p1", "p2"]}
    assert stored["payload"]["candidates"][0]["element"] == "n1"
    assert "Straße" in lines(ledger)[1]                       # UTF-8, not escaped
    assert verify(ledger.path).ok
