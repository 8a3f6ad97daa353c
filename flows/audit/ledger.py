"""An append-only, hash-chained ledger of what regulators may ask about: alerts, operator actions,
study results, emission reports, and anchors of the historian's files. No blockchain: one JSON
line per entry, each carrying the previous entry's SHA-256, so any edited, removed, inserted or
reordered line breaks the chain at a line ``verify`` names.

An entry is ``{"seq", "ts", "kind", "payload", "prev_hash", "hash"}``. ``hash`` is SHA-256 over
the canonical JSON of the other five fields (keys sorted, no spaces, UTF-8, no NaN), and the line
on disk is exactly that canonical text with ``,"hash":"<hex>"`` before its closing brace, so a
verifier in any language can recompute it from the bytes. The first entry's ``prev_hash`` is 64
zeros.

Retention (default five years) removes old entries without breaking verifiability: ``prune``
first appends a chained ``checkpoint`` entry recording the last pruned entry's seq and hash, the
SHA-256 of the pruned lines (so an archived copy can be checked) and who signed the pruning off;
the file then starts with a ``pruned`` header standing in for that last pruned entry. The header
is only accepted when a chained checkpoint later in the file vouches for it, and the checkpoint
may only cut entries older than its retention period.

A chain proves the order and integrity of what it holds; it cannot by itself show that its newest
entries were not cut off. Publish ``head()`` (the last hash) to the regulator from time to time and
pass it back as ``expect_head`` (``pipetwin audit verify --expect-head``).

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     ledger = Ledger(pathlib.Path(tmp) / "audit.jsonl", clock=lambda: 1_700_000_000 * 10**9)
...     _ = ledger.append("alert", {"id": "leak-1", "severity": "major"})
...     _ = ledger.append("operator_action", {"alert": "leak-1", "action": "ack", "by": "jo"})
...     result = ledger.verify()
...     result.ok, result.entries
(True, 2)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

KINDS = ("alert", "operator_action", "study", "report", "anchor", "checkpoint")
GENESIS = "0" * 64
DEFAULT_RETENTION_DAYS = 1827     # five years, leap days included
NS_PER_DAY = 86_400 * 10**9


# -- canonical form ------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-safe copy of ``value``: dataclasses and numpy values become plain ones, non-finite
    floats become null (canonical JSON has no NaN), tuples become lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):   # numpy scalars and arrays
        return plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(body: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry without its ``hash``."""
    return hashlib.sha256(canonical({k: v for k, v in body.items() if k != "hash"}).encode("utf-8")).hexdigest()


def entry_line(body: dict) -> str:
    """The line on disk: the canonical body with the hash spliced in before the closing brace."""
    text = canonical({k: v for k, v in body.items() if k != "hash"})
    return text[:-1] + f',"hash":"{body["hash"]}"}}'


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{ts_ns % 10**9:09d}Z"


def parse_iso(text: str) -> int:
    head, frac = text.rstrip("Z").split(".")
    seconds = int(datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    return seconds * 10**9 + int(frac.ljust(9, "0"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def historian_files(root: str | Path) -> dict[str, str]:
    """SHA-256 of every complete Parquet file of a historian, by path relative to its root (the
    layout of docs/historian.md; dot files are unfinished writes and are skipped)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): file_sha256(p)
            for p in sorted(root.glob("*/network=*/date=*/*.parquet")) if not p.name.startswith(".")}


def digest(files: dict[str, str]) -> str:
    """One hash over a set of file hashes: SHA-256 of the sorted ``path  sha256`` lines (the
    ``sha256sum`` format, so ``sha256sum -c`` can check the files too)."""
    text = "".join(f"{sha}  {path}\n" for path, sha in sorted(files.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- verification result -------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    entries: int
    first_bad_line: int | None = None     # 1-based line number in the ledger file
    problem: str = ""
    head: str = ""                        # hash of the last entry
    anchors: int = 0
    files_checked: int = 0
    file_problems: list[str] = field(default_factory=list)

    def figures(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "first_bad_line": self.first_bad_line,
                "anchors": self.anchors, "files_checked": self.files_checked,
                "file_problems": len(self.file_problems), "head": self.head}


class LedgerError(ValueError):
    pass


# -- the ledger ----------------------------------------------------------------------------------


class Ledger:
    """One ledger file. Writers take an exclusive ``flock`` on a lock file beside it, so several
    processes (the flow, the alert CLI, a report job) may share it on one machine."""

    def __init__(self, path: str | Path, *, clock: Callable[[], int] = time.time_ns, fsync: bool = True):
        self.path = Path(path)
        self.clock = clock
        self.fsync = fsync

    # -- writing --
    @contextmanager
    def _locked(self):
        """An exclusive lock on a lock file beside the ledger (not the ledger itself: ``prune``
        replaces the ledger's file, and a lock on a replaced file guards nothing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name("." + self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, kind: str, payload: Any) -> dict:
        """Append one entry and return it. ``kind``: alert, operator_action, study, report,
        anchor or checkpoint; ``payload``: anything JSON-like (dataclasses welcome)."""
        if kind not in KINDS:
            raise LedgerError(f"ledger kind {kind!r} is not one of {KINDS}")
        with self._locked():
            return self._append(kind, payload)

    def _append(self, kind: str, payload: Any) -> dict:
        with open(self.path, "a+b") as fh:
            last = _last_entry(fh)
            body = {"seq": 0 if last is None else int(last["seq"]) + 1, "ts": iso(int(self.clock())),
                    "kind": kind, "payload": plain(payload), "prev_hash": GENESIS if last is None else last["hash"]}
            body["hash"] = entry_hash(body)
            fh.seek(0, os.SEEK_END)
            fh.write((entry_line(body) + "\n").encode("utf-8"))
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return body

    def anchor(self, historian_dir: str | Path) -> dict:
        """Anchor the historian: the hash of every Parquet file not anchored before, the ones that
        changed or vanished since (shown, never silently re-blessed), and one digest over all."""
        if not Path(historian_dir).is_dir():
            raise LedgerError(f"{historian_dir}: no such historian folder")
        now = historian_files(historian_dir)
        known = self.anchored_files()
        new = {p: h for p, h in now.items() if p not in known}
        changed = {p: h for p, h in now.items() if p in known and known[p] != h}
        removed = sorted(p for p in known if p not in now)
        return self.append("anchor", {"historian": str(Path(historian_dir).resolve()), "files": new,
                                      "changed": changed, "removed": removed, "file_count": len(now),
                                      "total_bytes": sum((Path(historian_dir) / p).stat().st_size for p in now),
                                      "digest": digest(now)})

    def prune(self, *, retention_days: float = DEFAULT_RETENTION_DAYS, signed_off_by: str,
              archive: str | Path | None = None) -> int:
        """Remove entries older than ``retention_days``; return how many. A chained checkpoint
        records what went (and ``archive``, if given, keeps the removed lines)."""
        if not signed_off_by:
            raise LedgerError("pruning the audit ledger needs signed_off_by (who authorised it)")
        with self._locked():
            return self._prune(retention_days, signed_off_by, archive)

    def _prune(self, retention_days: float, signed_off_by: str, archive: str | Path | None) -> int:
        check = verify(self.path)
        if not check.ok:        # pruning a broken chain would hide where it broke
            raise LedgerError(f"{self.path}: will not prune a ledger that does not verify: {check.problem}")
        now = int(self.clock())
        cutoff = now - int(retention_days * NS_PER_DAY)
        lines = self.path.read_bytes().splitlines(keepends=True)
        entries = [json.loads(x) for x in lines]
        start = 1 if entries and entries[0]["kind"] == "pruned" else 0
        k = start        # only a leading run can go: what stays must be one contiguous chain
        while k < len(entries) and parse_iso(entries[k]["ts"]) < cutoff:
            k += 1
        if k == start:
            return 0
        gone = b"".join(lines[start:k])
        last = entries[k - 1]
        carried: dict[str, str] = {}
        for e in entries[start:k]:       # file hashes whose anchors go: carried so files stay checkable
            if e["kind"] in ("anchor", "checkpoint"):
                carried.update(e["payload"].get("files", {}))
                carried.update(e["payload"].get("changed", {}))
                carried.update(e["payload"].get("anchored_files", {}))
                for f in e["payload"].get("removed", []):
                    carried.pop(f, None)
        checkpoint = self._append("checkpoint", {
            "pruned_through_seq": last["seq"], "pruned_through_hash": last["hash"], "pruned_through_ts": last["ts"],
            "pruned_entries": k - start, "pruned_sha256": hashlib.sha256(gone).hexdigest(),
            "retention_days": retention_days, "cutoff": iso(cutoff), "signed_off_by": signed_off_by,
            "archive": str(archive) if archive else None, "anchored_files": carried})
        if archive is not None:
            with open(archive, "ab") as fh:
                fh.write(gone)
        header = {"seq": last["seq"], "ts": last["ts"], "kind": "pruned",
                  "payload": {"checkpoint_seq": checkpoint["seq"], "checkpoint_hash": checkpoint["hash"]},
                  "prev_hash": None, "hash": last["hash"]}
        rest = self.path.read_bytes().splitlines(keepends=True)[k:]
        tmp = self.path.with_name("." + self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write((entry_line(header) + "\n").encode("utf-8"))
            fh.writelines(rest)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return k - start

    # -- reading --
    def entries(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def head(self) -> str:
        with open(self.path, "rb") as fh:
            last = _last_entry(fh)
        return GENESIS if last is None else last["hash"]

    def anchored_files(self) -> dict[str, str]:
        """Latest anchored hash per historian file (paths relative to the historian)."""
        out: dict[str, str] = {}
        for e in self.entries():
            if e["kind"] == "checkpoint":
                for f, h in e["payload"].get("anchored_files", {}).items():
                    out.setdefault(f, h)
            if e["kind"] == "anchor":
                out.update(e["payload"]["files"])
                out.update(e["payload"].get("changed", {}))
                for p in e["payload"].get("removed", []):
                    out.pop(p, None)
        return out

    def verify(self, historian: str | Path | None = None, expect_head: str | None = None) -> Verification:
        return verify(self.path, historian=historian, expect_head=expect_head)


def _last_entry(fh) -> dict | None:
    """The last line of an open binary file, parsed (read backwards, so appends stay O(1))."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if end == 0:
        return None
    pos, chunk, tail = end, 4096, b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        fh.seek(pos)
        tail = fh.read(step) + tail
        body = tail.rstrip(b"\n")
        if b"\n" in body:
            return json.loads(body.rsplit(b"\n", 1)[1])
    return json.loads(tail.rstrip(b"\n")) if tail.strip() else None


# -- verification ----------------------------------------------------------------------------------


def verify(path: str | Path, *, historian: str | Path | None = None, expect_head: str | None = None) -> Verification:
    """Check the whole chain (and, with ``historian``, every anchored file against its hash).
    Stops at the first broken line and names it; file problems are listed in full."""
    path = Path(path)
    try:
        raw = path.read_bytes().split(b"\n")
    except OSError as exc:
        return Verification(False, 0, None, f"{path}: cannot read: {exc.strerror}")
    if raw and raw[-1] == b"":
        raw.pop()
    prev_hash, prev_seq, n, anchors = None, None, 0, 0
    header: dict | None = None
    history: dict[str, tuple[str, int]] = {}          # file -> (hash, line of the anchor that recorded it)
    problems: list[tuple[int, str]] = []
    notes: list[str] = []

    def bad(line: int, problem: str) -> Verification:
        return Verification(False, n, line, f"line {line}: {problem}", prev_hash or "", anchors)

    for i, data in enumerate(raw, start=1):
        try:
            e = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return bad(i, f"not a JSON entry ({exc})")
        if not isinstance(e, dict) or set(e) != {"seq", "ts", "kind", "payload", "prev_hash", "hash"}:
            return bad(i, "not a ledger entry (fields must be seq, ts, kind, payload, prev_hash, hash)")
        if i == 1 and e["kind"] == "pruned":
            if entry_line(e).encode("utf-8") != data:
                return bad(i, "the pruned-entries header is not in canonical form")
            header = {"seq": e["seq"], "hash": e["hash"], **(e["payload"] or {})}
            prev_hash, prev_seq = e["hash"], e["seq"]
            continue
        if e["kind"] not in KINDS:
            return bad(i, f"unknown kind {e['kind']!r}")
        if entry_hash(e) != e["hash"]:
            return bad(i, f"hash does not match the entry's content (seq {e['seq']} was edited)")
        if entry_line(e).encode("utf-8") != data:
            return bad(i, f"seq {e['seq']} is not in canonical form (reformatted or edited)")
        if e["prev_hash"] != (GENESIS if prev_hash is None else prev_hash):
            what = "the chain's start" if prev_hash is None else f"the hash of line {i - 1}"
            return bad(i, f"prev_hash does not match {what}: an entry before seq {e['seq']} was removed, "
                          "inserted or reordered")
        expected_seq = 0 if prev_seq is None else prev_seq + 1
        if e["seq"] != expected_seq:
            return bad(i, f"seq {e['seq']} where {expected_seq} was expected")
        if e["kind"] == "checkpoint" and header is not None and e["seq"] == header.get("checkpoint_seq"):
            p = e["payload"]
            if (e["hash"] != header.get("checkpoint_hash") or p["pruned_through_hash"] != header["hash"]
                    or p["pruned_through_seq"] != header["seq"]):
                return bad(1, f"the pruned-entries header does not match the checkpoint on line {i}")
            retention_ns = int(float(p["retention_days"]) * NS_PER_DAY)
            cutoff = parse_iso(p["cutoff"])
            if parse_iso(p["pruned_through_ts"]) >= cutoff or cutoff > parse_iso(e["ts"]) - retention_ns:
                return bad(i, "the checkpoint pruned entries younger than its retention period")
            header["vouched"] = True
        if e["kind"] == "checkpoint":
            for f, h in e["payload"].get("anchored_files", {}).items():
                history.setdefault(f, (h, i))
        if e["kind"] == "anchor":
            anchors += 1
            p = e["payload"]
            for f, h in {**p.get("files", {}), **p.get("changed", {})}.items():
                if f in history and history[f][0] != h:
                    problems.append((i, f"{f}: changed between the anchors on lines {history[f][1]} and {i}"))
                history[f] = (h, i)
            for f in p.get("removed", []):
                notes.append(f"{f}: removed from the historian, recorded by the anchor on line {i}")
                history.pop(f, None)
        prev_hash, prev_seq = e["hash"], e["seq"]
        n += 1
    if header is not None and not header.get("vouched"):
        return Verification(False, n, 1, "line 1: the pruned-entries header has no matching chained checkpoint "
                                         "(entries were cut from the start)", prev_hash or "", anchors)
    result = Verification(True, n, None, "", prev_hash or GENESIS, anchors)
    if expect_head is not None and expect_head not in {json.loads(d)["hash"] for d in raw}:
        result.ok = False
        result.problem = (f"the published head {expect_head[:12]}... is not in the ledger: entries after "
                          f"line {len(raw)} were removed, or the ledger was rewritten")
    if historian is not None:
        root = Path(historian)
        for f, (h, line) in sorted(history.items()):
            p = root / f
            if not p.exists():
                problems.append((line, f"{f}: anchored on line {line}, missing from {root}"))
            elif file_sha256(p) != h:
                problems.append((line, f"{f}: content differs from its anchor on line {line}"))
            result.files_checked += 1
    result.file_problems = [text for _, text in problems] + notes
    if problems:
        first = min(problems)
        result.ok = False
        if not result.problem:
            result.first_bad_line, result.problem = first[0], f"line {first[0]}: {first[1]}"
    return result
