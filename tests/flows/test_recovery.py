"""Crash recovery with real processes: the replay flow runs under ``python -m bytewax.run`` with a
recovery directory and a one-second snapshot interval, is killed with SIGKILL mid-stream, and is
restarted with the same recovery directory until it finishes. The historian must then hold what an
uninterrupted run holds: every reading once, nothing missing, one twin state per tick, and alert
revisions whose only duplicates are exact re-deliveries.

The helpers here (the cached simulated history and the clean run) are shared with
``test_cluster.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipetwin.flows.sinks.historian import KINDS, drop_duplicates, read, written_files

NETWORK = "schutterwald"
TICK_S = 10.0                    # 30 ticks over the 300 s history: the twin's fit costs ~0.3 s a tick
KINDS_STORED = ("readings", "quarantine", "states", "ticks", "alerts")
REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# shared helpers


def history_path(tmp_path_factory) -> Path:
    """300 s of simulated SCADA readings (PT-002 drops out from 60 s to 120 s; two invalid rows at
    100 s), written once per test session."""
    from pipetwin.flows.replay_flow import write_simulated_history

    path = tmp_path_factory.getbasetemp() / "replay" / "history.parquet"
    if not path.exists():
        write_simulated_history(path, 300)
    return path


def clean_root(tmp_path_factory) -> Path:
    """The historian of one uninterrupted in-process run over the history, made once per session."""
    from bytewax.testing import run_main

    from pipetwin.flows.replay_flow import get_flow

    root = tmp_path_factory.getbasetemp() / "replay" / "clean"
    if not (root / "done").exists():
        run_main(get_flow(str(history_path(tmp_path_factory)), str(root), NETWORK, tick_s=TICK_S))
        (root / "done").write_text("")
    return root


def flow_spec(history: Path, historian: str | Path, **options) -> str:
    """The import string ``python -m bytewax.run`` takes for ``replay_flow.get_flow``."""
    extra = "".join(f", {k}={v!r}" for k, v in {"tick_s": TICK_S, **options}.items())
    return f"pipetwin.flows.replay_flow:get_flow({str(history)!r}, {str(historian)!r}, {NETWORK!r}{extra})"


def bytewax_run(spec: str, *args: str, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """``python -m bytewax.run spec args`` as a child process, its output in ``log``."""
    with open(log, "ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", spec, *args], cwd=cwd or REPO,
                                stdout=sink, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 50.0) -> None:
    """Wait for a run; fail with its output if it fails or hangs."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"bytewax run did not finish in {timeout} s:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, f"bytewax run failed ({proc.returncode}):\n{log.read_text()[-3000:]}"


def stored(roots: Path | list[Path], kind: str, dedup: bool) -> pa.Table:
    """One kind from one historian root or several (cluster workers with their own disks), with
    ``read``'s de-duplication applied across all of them."""
    roots = roots if isinstance(roots, list) else [roots]
    table = pa.concat_tables([read(r, kind, dedup=False) for r in roots])
    if dedup:
        table = drop_duplicates(table, KINDS[kind].keys)
    return sort_rows(table, kind)


def sort_rows(table: pa.Table, kind: str) -> pa.Table:
    keys = list(dict.fromkeys(["network", *KINDS[kind].keys]))
    return table.sort_by([(k, "ascending") for k in keys])


def comparable(table: pa.Table) -> list[dict]:
    """Rows as dicts with NaN spelled out, so a quarantined NaN reading equals itself."""
    return [{k: "NaN" if isinstance(v, float) and v != v else v for k, v in row.items()} for row in table.to_pylist()]


def assert_same_history(got: Path | list[Path], want: Path | list[Path]) -> dict[str, int]:
    """Both historians hold the same records after de-duplication: readings, quarantine and alert
    revisions exactly; twin states with the same keys and measurements, estimates within the
    solver's tolerance (a restarted twin re-solves its first tick cold, without a warm start)."""
    counts = {}
    for kind in ("readings", "quarantine"):
        a, b = stored(got, kind, dedup=True), stored(want, kind, dedup=True)
        assert comparable(a) == comparable(b), f"{kind}: {a.num_rows} rows stored, {b.num_rows} in the clean run"
        counts[kind] = a.num_rows
    ticks_a, ticks_b = stored(got, "ticks", dedup=True), stored(want, "ticks", dedup=True)
    assert ticks_a["ts"].equals(ticks_b["ts"]), "ticks differ from the clean run"
    assert pc.count_distinct(ticks_a["ts"]).as_py() == ticks_a.num_rows
    counts["ticks"] = ticks_a.num_rows
    sa, sb = stored(got, "states", dedup=True), stored(want, "states", dedup=True)
    assert sa.select(["network", "ts", "point"]).equals(sb.select(["network", "ts", "point"]))
    assert sa["measured"].equals(sb["measured"])
    np.testing.assert_allclose(sa["estimated"].to_numpy(zero_copy_only=False),
                               sb["estimated"].to_numpy(zero_copy_only=False), rtol=1e-6, atol=1.0)
    counts["states"] = sa.num_rows
    cols = ["id", "revision", "kind", "subject", "status", "severity", "opened_ts", "updated_ts", "cleared_ts"]
    aa, ab = stored(got, "alerts", dedup=True), stored(want, "alerts", dedup=True)
    assert aa.select(cols).to_pylist() == ab.select(cols).to_pylist()
    counts["alerts"] = aa.num_rows
    return counts


def assert_duplicates_are_redeliveries(roots: Path | list[Path]) -> dict[str, int]:
    """Rows that repeat a key are exact copies of the first (a replayed write, never a changed
    record), so ``read(..., dedup=True)`` only removes re-deliveries. Ticks are left out of the
    comparison: a re-solved tick has another ``solve_ms``. Returns the duplicate count per kind."""
    extra = {}
    for kind in KINDS_STORED:
        raw = stored(roots, kind, dedup=False)
        keys = KINDS[kind].keys
        first: dict[tuple, dict] = {}
        for row in comparable(raw):
            key = tuple(row[k] for k in keys)
            if key in first and kind != "ticks":
                assert row == first[key], f"{kind}: key {key} repeats with other contents"
            first.setdefault(key, row)
        extra[kind] = raw.num_rows - len(first)
    return extra


# ----------------------------------------------------------------------------------------------
# the test


def test_sigkill_mid_stream_then_resume_stores_everything_once(tmp_path, tmp_path_factory):
    t_start = time.monotonic()
    history = history_path(tmp_path_factory)
    clean = clean_root(tmp_path_factory)
    received = pq.read_metadata(history).num_rows
    recovery, out = tmp_path / "recovery", tmp_path / "historian"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=REPO)
    # paced at 30x (about 10 s for the 300 s history), so the kill lands mid-stream: the first
    # historian file appears once a checkpoint carries more than 10,000 buffered readings (at
    # about 200 s of event time), long before the end
    spec = flow_spec(history, out, speed=30.0)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    log = tmp_path / "bytewax.log"
    proc = bytewax_run(spec, *args, log=log)
    deadline = time.monotonic() + 40
    while not list(written_files(out)):
        assert proc.poll() is None, f"the flow ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no historian file appeared within 40 s"
        time.sleep(0.02)
    assert proc.poll() is None, "the flow ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(list(written_files(out)))
    stored_at_kill = read(out, "readings", dedup=False).num_rows
    assert 0 < stored_at_kill < stored(clean, "readings", dedup=True).num_rows, "the kill was not mid-stream"

    restarts = 0
    while True:                      # resume with the same recovery directory until it ends
        restarts += 1
        resumed = bytewax_run(spec, *args, log=log)
        resumed.wait(timeout=50)
        if resumed.returncode == 0 or restarts >= 3:
            break
    finish(resumed, log)

    counts = assert_same_history(out, clean)
    assert counts["readings"] + counts["quarantine"] == received            # nothing lost, nothing made up
    assert counts["ticks"] == 30 and counts["states"] % counts["ticks"] == 0
    duplicates = assert_duplicates_are_redeliveries(out)
    # the historian's resume deletes files written after the restored checkpoint, so even the raw
    # files hold each record once
    assert duplicates == {kind: 0 for kind in KINDS_STORED}, duplicates
    alerts = stored(out, "alerts", dedup=True)
    for alert_id in set(alerts["id"].to_pylist()):
        revisions = alerts.filter(pc.equal(alerts["id"], alert_id))["revision"].to_pylist()
        assert sorted(revisions) == list(range(len(revisions))), f"{alert_id}: revisions {revisions}"
    silent = alerts.filter(pc.equal(alerts["subject"], "PT-002"))
    assert silent["status"].to_pylist() == ["open", "cleared"]
    print(f"\nkilled with {killed_at} file(s) and {stored_at_kill} readings on disk; {restarts} restart(s); "
          f"stored {counts}; {time.monotonic() - t_start:.1f} s")
