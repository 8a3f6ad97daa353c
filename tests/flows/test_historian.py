"""The Parquet historian: round trips per kind, partition pruning, atomic files, de-duplication of
replays, other readers (pandas, duckdb), and the bytewax sink with and without recovery."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main

from pipetwin.connectors.quality import QUARANTINE_SCHEMA
from pipetwin.connectors.reading import READING_SCHEMA, readings_batch
from pipetwin.flows.contracts import Alert, Candidate, TwinState
from pipetwin.flows.sinks import historian as hmod
from pipetwin.flows.sinks.historian import (Historian, HistorianSink, alerts_from_table, historian_output, read,
                                            written_files)

NS = 10**9
HOUR = 3600 * NS
DAY0 = 19_723 * 86_400 * NS          # 2024-01-01T00:00Z
NETWORKS = ("north", "south")
ZERO = timedelta(seconds=0)


# ----------------------------------------------------------------------------------------------
# records


def readings(network: str, hour: int, n: int = 4) -> pa.RecordBatch:
    """``n`` readings of one network at one hour; values say where they came from."""
    base = 0 if network == "north" else 1000
    return readings_batch([f"{network}-P{i}" for i in range(n)], [DAY0 + hour * HOUR + i * NS for i in range(n)],
                          [base + hour + i / 10 for i in range(n)], [i % 3 for i in range(n)], f"src-{network}")


def quarantined(network: str, hour: int) -> pa.Table:
    rows = pa.Table.from_batches([readings(network, hour, 3)])
    return rows.append_column("reason", pa.array(["out_of_range", "rate", "late"])).append_column(
        "detail", pa.array([f"h{hour}"] * 3))


def state(network: str, tick: int, pressures: tuple[float, ...] = (4.0e5, 3.5e5, 3.0e5)) -> TwinState:
    """A small twin state at ``tick`` hours; sensor S2 did not report (NaN measured)."""
    measured = np.array([3.5e5 + tick, 3.0e5 - tick, np.nan])
    return TwinState(network=network, ts_ns=DAY0 + tick * HOUR, node_ids=["J1", "J2", "J3"],
                     node_pressure_pa=np.array(pressures) - tick, node_demand=np.zeros(3),
                     unsupplied=np.array([False, False, True]), link_ids=["L1"], link_flow=np.ones(1),
                     link_velocity_m_s=np.ones(1), sensor_ids=["S0", "S1", "S2"], sensor_measured=measured,
                     sensor_estimated=np.array([3.5e5, 3.0e5, 2.9e5]), zone_multipliers=np.array([1.0, 1.1]),
                     converged=True, iterations=3 + tick % 2, chi2=0.5 * tick, solve_ms=1.25,
                     figures={"inflow_kg_s": 2.5 + tick})


def alert(network: str, revision: int, hour: int) -> Alert:
    return Alert(id=f"{network}-leak-1", kind="leak", severity="major", subject="P7", network=network,
                 opened_ns=DAY0, updated_ns=DAY0 + hour * HOUR, status="cleared" if revision == 2 else "open",
                 message=f"rev {revision}", evidence={"residual_pa": 1200.0 + revision, "window_s": 600},
                 candidates=[Candidate("J2", 0.8, 1.0, 2.0), Candidate("J3", 0.2, 3.0, 4.0)],
                 cleared_ns=DAY0 + hour * HOUR if revision == 2 else None, revision=revision)


HOURS = (1, 5, 23, 25, 30)           # two days: 2024-01-01 and 2024-01-02


def write_all(hist: Historian) -> None:
    """Every kind, several batches, two days, two networks."""
    for network in NETWORKS:
        for hour in HOURS:
            hist.write_readings(readings(network, hour), network)
            hist.write_quarantine(quarantined(network, hour), network)
            hist.write_state(state(network, hour))
        for revision, hour in enumerate((2, 20, 26)):
            hist.write_alert(alert(network, revision, hour))


def sort_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    with Historian(tmp_path, max_rows=7, fsync=False) as hist:
        write_all(hist)
    return tmp_path


# ----------------------------------------------------------------------------------------------
# round trips


def test_readings_round_trip(filled: Path) -> None:
    expected = pa.concat_tables([pa.Table.from_batches([readings(n, h)]) for n in NETWORKS for h in HOURS])
    got = read(filled, "readings")
    assert got.column_names == ["network", *READING_SCHEMA.names]
    assert got.schema.remove(0) == READING_SCHEMA
    assert sort_rows(got.drop_columns("network"), ["point", "ts"]) == sort_rows(expected, ["point", "ts"])
    assert set(got["network"].to_pylist()) == set(NETWORKS)


def test_quarantine_round_trip(filled: Path) -> None:
    expected = pa.concat_tables([quarantined(n, h) for n in NETWORKS for h in HOURS]).cast(QUARANTINE_SCHEMA)
    got = read(filled, "quarantine", network="south")
    assert got.schema.remove(0) == QUARANTINE_SCHEMA
    south = expected.filter(pc.starts_with(expected["point"], "south"))
    assert sort_rows(got.drop_columns("network"), ["point", "ts"]) == sort_rows(south, ["point", "ts"])


def test_states_round_trip(filled: Path) -> None:
    got = read(filled, "states", network="north")
    assert got.num_rows == 3 * len(HOURS)
    s = state("north", 5)
    tick = got.filter(pc.equal(got["ts"], pa.scalar(s.ts_ns, pa.int64()).cast(got["ts"].type)))
    assert tick["point"].to_pylist() == s.sensor_ids
    assert tick["measured"].to_pylist()[:2] == s.sensor_measured[:2].tolist()
    assert tick["measured"].to_pylist()[2] is None and tick["residual"].to_pylist()[2] is None
    assert tick["residual"].to_pylist()[:2] == pytest.approx(s.residual[:2].tolist())


def test_ticks_round_trip(filled: Path) -> None:
    got = read(filled, "ticks")
    assert got.num_rows == len(NETWORKS) * len(HOURS)
    row = got.filter(pc.equal(got["network"], "south")).to_pylist()[1]      # hour 5
    summary = state("south", 5).summary()
    for name in ("converged", "iterations", "chi2", "solve_ms", "min_pressure_pa", "min_pressure_node",
                 "unsupplied_nodes", "sensors_reporting", "zone_multipliers"):
        assert row[name] == summary[name], name
    assert json.loads(row["figures"])["inflow_kg_s"] == 7.5


def test_alerts_round_trip(filled: Path) -> None:
    got = read(filled, "alerts")
    assert got.num_rows == 6
    assert alerts_from_table(got.filter(pc.equal(got["network"], "north"))) == \
        [alert("north", r, h) for r, h in enumerate((2, 20, 26))]


def test_partition_pruning_by_date_and_network(filled: Path) -> None:
    day2 = read(filled, "readings", start="2024-01-02", end=datetime(2024, 1, 3, tzinfo=timezone.utc))
    assert sorted(set(pc.cast(day2["ts"], pa.int64()).to_numpy() // HOUR - DAY0 // HOUR)) == [25, 30]
    window = read(filled, "states", network="south", start=DAY0 + 5 * HOUR, end=DAY0 + 25 * HOUR)
    assert set(window["network"].to_pylist()) == {"south"} and window.num_rows == 2 * 3
    # files outside the asked-for folders are never opened: a corrupt one there does not matter
    bad = filled / "readings" / "network=north" / "date=2024-01-01" / "part-zzz-00000000.parquet"
    bad.write_bytes(b"not parquet")
    assert read(filled, "readings", network="north", start="2024-01-02").num_rows == 2 * 4
    assert read(filled, "readings", network="south").num_rows == len(HOURS) * 4
    with pytest.raises(pa.ArrowInvalid):
        read(filled, "readings", network="north")


def test_point_query_and_empty_read(filled: Path) -> None:
    got = read(filled, "states", network="north", points=["S1"], start="2024-01-01", end="2024-01-02")
    assert got["point"].to_pylist() == ["S1"] * 3
    assert read(filled, "states", network="nowhere").num_rows == 0
    assert read(filled / "empty", "alerts").column_names[:2] == ["network", "id"]


def test_files_follow_the_layout_and_flush_policy(tmp_path: Path) -> None:
    hist = Historian(tmp_path, network="n", writer="w1", max_rows=4, max_span_s=600, fsync=False)
    hist.write_readings(readings("n", 0, 3))                  # 3 rows: buffered
    assert list(written_files(tmp_path)) == []
    hist.write_readings(readings("n", 0, 2))                  # 5 rows >= 4: flushed
    hist.write_readings(readings("n", 1, 1))                  # an hour later in event time: buffered...
    hist.write_readings(readings("n", 1, 1).slice(0, 0))
    assert hist.rows_buffered == 1
    hist.write_readings(readings_batch(["x"], [DAY0 + HOUR + 601 * NS], [1.0], 0, "s"))   # ...until 600 s on
    hist.close()
    names = [p.relative_to(tmp_path).as_posix() for p in written_files(tmp_path)]
    assert names == ["readings/network=n/date=2024-01-01/part-w1-00000000.parquet",
                     "readings/network=n/date=2024-01-01/part-w1-00000001.parquet"]
    assert [pq.read_metadata(tmp_path / n).num_rows for n in names] == [5, 2]
    assert hist.rows_written == 7 and hist.files_written == 2


def test_event_time_not_wall_clock_picks_the_day(tmp_path: Path) -> None:
    with Historian(tmp_path, fsync=False) as hist:
        hist.write_readings(readings_batch(["P"], [0], [1.0], 0, "s"), "n")
    assert [p.parent.name for p in written_files(tmp_path)] == ["date=1970-01-01"]


def test_unusual_network_names_round_trip(tmp_path: Path) -> None:
    with Historian(tmp_path, fsync=False) as hist:
        hist.write_readings(readings("north", 1), "zone 7/east")
    assert read(tmp_path, "readings", network="zone 7/east")["network"].to_pylist() == ["zone 7/east"] * 4
    with pytest.raises(ValueError):
        Historian(tmp_path).write_readings(readings("north", 1))


# ----------------------------------------------------------------------------------------------
# atomic files


def test_no_temp_files_after_close_and_writers_do_not_collide(tmp_path: Path) -> None:
    for _ in range(2):                    # two workers sharing a root
        with Historian(tmp_path, max_rows=5, fsync=False) as hist:
            write_all(hist)
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert everything and all(p.suffix == ".parquet" and not p.name.startswith(".") for p in everything)
    assert read(tmp_path, "readings", dedup=False).num_rows == 2 * len(NETWORKS) * len(HOURS) * 4


def test_reader_during_writes_sees_only_complete_files(tmp_path: Path) -> None:
    """Every file a concurrent reader finds opens and holds whole flushes (10 rows each)."""
    done = threading.Event()

    def writer() -> None:
        with Historian(tmp_path, network="n", max_rows=10, fsync=False) as hist:
            for i in range(300):
                hist.write_readings(readings_batch([f"P{i}"] * 10, DAY0 + np.arange(10) * NS + i * 10 * NS,
                                                   np.arange(10.0), 0, "s"))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while not done.is_set():
        table = read(tmp_path, "readings", dedup=False)
        assert table.num_rows % 10 == 0
        seen.append(table.num_rows)
        for path in written_files(tmp_path):
            assert pq.read_metadata(path).num_rows == 10
    thread.join()
    assert read(tmp_path, "readings").num_rows == 3000 and len(seen) > 1


def test_crash_during_a_write_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def torn_write(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    hist = Historian(tmp_path, network="n", writer="w", fsync=False)
    hist.write_readings(readings("n", 1))
    monkeypatch.setattr(hmod.pq, "write_table", torn_write)
    with pytest.raises(OSError):
        hist.flush()
    assert list(written_files(tmp_path)) == [] and read(tmp_path, "readings").num_rows == 0
    assert len(list(tmp_path.rglob(".part-w-*.tmp"))) == 1          # invisible to readers...
    monkeypatch.undo()
    hist.close()                                                    # the rows were kept: the retry writes them
    assert read(tmp_path, "readings").num_rows == 4 and list(tmp_path.rglob(".part-*")) == []
    stale = next(written_files(tmp_path)).with_name(".part-w-00000009.parquet.tmp")
    stale.write_bytes(b"PAR1 left by a crashed process")
    Historian.resume(tmp_path, {"version": 1, "writer": "w", "seq": 1, "watermarks": {}, "buffers": []}).close()
    assert not stale.exists() and read(tmp_path, "readings").num_rows == 4


# ----------------------------------------------------------------------------------------------
# duplicates and recovery


@pytest.mark.parametrize("kind", ["readings", "quarantine", "states", "ticks", "alerts"])
def test_replayed_duplicates_are_dropped_by_key(tmp_path: Path, kind: str) -> None:
    with Historian(tmp_path, max_rows=6, fsync=False) as first:
        write_all(first)
    with Historian(tmp_path, max_rows=4, fsync=False) as replay:     # replays half of it again
        for network in NETWORKS:
            for hour in HOURS[:3]:
                replay.write_readings(readings(network, hour), network)
                replay.write_quarantine(quarantined(network, hour), network)
                replay.write_state(state(network, hour))
            replay.write_alert(alert(network, 0, 2))
    once = read(tmp_path, kind)
    raw = read(tmp_path, kind, dedup=False)
    assert raw.num_rows > once.num_rows
    keys = hmod.KINDS[kind].keys
    assert once.group_by(list(keys)).aggregate([]).num_rows == once.num_rows
    fresh = tmp_path / "fresh"
    with Historian(fresh, max_rows=6, fsync=False) as clean:
        write_all(clean)
    assert once == read(fresh, kind)


def test_checkpoint_and_resume_rewrite_what_came_after(tmp_path: Path) -> None:
    """Plain-API recovery: files written after the checkpoint are removed on resume, carried
    buffers come back, and the replay leaves every row on disk once."""
    batches = [readings(n, h) for h in HOURS for n in NETWORKS]
    hist = Historian(tmp_path, writer="w", max_rows=6, fsync=False)
    for i, b in enumerate(batches[:5]):
        hist.write_readings(b, NETWORKS[i % 2])
    state_ = hist.checkpoint(carry_rows=4)
    assert state_["buffers"] and all(pa.ipc.open_stream(b[-1]).read_all().num_rows <= 4 for b in state_["buffers"])
    for i, b in enumerate(batches[5:8], start=5):          # written, partly flushed, then a crash
        hist.write_readings(b, NETWORKS[i % 2])
    hist.flush()
    after_checkpoint = [p for p in written_files(tmp_path) if hmod.file_seq(p.name, "w") >= state_["seq"]]
    assert after_checkpoint
    resumed = Historian.resume(tmp_path, state_, max_rows=6, fsync=False)
    assert not any(p.exists() for p in after_checkpoint)
    for i, b in enumerate(batches[5:], start=5):           # the source replays from the checkpoint
        resumed.write_readings(b, NETWORKS[i % 2])
    resumed.close()
    raw = read(tmp_path, "readings", dedup=False)
    assert raw.num_rows == len(batches) * 4 == read(tmp_path, "readings").num_rows


# ----------------------------------------------------------------------------------------------
# other readers


def test_pandas_reads_the_root(filled: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(filled / "states")
    assert {"network", "date", "ts", "point", "residual"} <= set(frame.columns)
    assert len(frame) == len(NETWORKS) * len(HOURS) * 3
    north = pd.read_parquet(filled / "ticks", filters=[("network", "=", "north")])
    assert len(north) == len(HOURS) and (north["network"] == "north").all()


def test_duckdb_reads_the_root(filled: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    per_tick = con.execute(
        f"SELECT network, ts, min_pressure_pa FROM read_parquet('{filled}/ticks/**/*.parquet', hive_partitioning=1)"
        " WHERE network = 'north' ORDER BY ts").fetchall()
    assert [row[2] for row in per_tick] == [3.5e5 - h for h in HOURS]      # J3 is unsupplied
    residual = con.execute(
        f"SELECT count(*), count(residual) FROM read_parquet('{filled}/states/**/*.parquet', hive_partitioning=1)"
        " WHERE network = 'south' AND point = 'S2' AND date = DATE '2024-01-02'").fetchone()
    assert residual == (2, 0)
    alerts = con.execute(
        f"SELECT id, revision, json_extract(evidence, '$.residual_pa')::DOUBLE FROM "
        f"read_parquet('{filled}/alerts/**/*.parquet', hive_partitioning=1) ORDER BY network, revision").fetchall()
    assert alerts[:3] == [("north-leak-1", r, 1200.0 + r) for r in range(3)]


# ----------------------------------------------------------------------------------------------
# bytewax


def reading_items() -> list[tuple[str, pa.RecordBatch]]:
    return [(n, readings(n, h, 2)) for h in HOURS for n in NETWORKS]


@pytest.mark.parametrize("workers", [1, 2])
def test_bytewax_sinks_under_run_main(tmp_path: Path, workers: int) -> None:
    states = [state(n, h) for h in HOURS for n in NETWORKS]
    alerts = [alert(n, r, h) for n in NETWORKS for r, h in enumerate((2, 20, 26))]
    flow = Dataflow("historian")
    historian_output("readings", op.input("readings_in", flow, TestingSource(reading_items(), batch_size=3)),
                     HistorianSink(tmp_path, "readings", parts=2, max_rows=5, fsync=False))
    states_in = op.input("states_in", flow, TestingSource(states))
    op.output("states", op.map("key_states", states_in, lambda s: (s.network, s)),
              HistorianSink(tmp_path, "states", fsync=False))
    historian_output("alerts", op.map("key_alerts", op.input("alerts_in", flow, TestingSource(alerts)),
                                      lambda a: (a.network, a)), HistorianSink(tmp_path, "alerts", fsync=False))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert read(tmp_path, "readings", dedup=False).num_rows == len(reading_items()) * 2
    for network in NETWORKS:                  # the key routes a network to one partition, one writer
        files = (tmp_path / "readings" / f"network={network}").rglob("*.parquet")
        assert len({p.name.rsplit("-", 1)[0] for p in files}) == 1
    assert read(tmp_path, "states").num_rows == len(states) * 3
    assert read(tmp_path, "ticks")["min_pressure_pa"].to_pylist()[:2] == [3.5e5 - 1, 3.5e5 - 5]
    assert sorted(alerts_from_table(read(tmp_path, "alerts")), key=lambda a: (a.network, a.revision)) == alerts
    assert not list(tmp_path.rglob(".*"))


def run_with_abort(root: Path, db: Path, epoch: timedelta, spy: list) -> None:
    """Run the readings flow twice over one recovery store: aborted mid-stream, then resumed."""
    items = reading_items()
    inp = [*items[:7], TestingSource.ABORT(), *items[7:]]

    def flow() -> Dataflow:
        f = Dataflow("historian_recovery")
        up = op.input("inp", f, TestingSource(inp, batch_size=3))
        historian_output("readings", up, HistorianSink(root, "readings", max_rows=3, carry_rows=100, fsync=False))
        return f

    db.mkdir(parents=True, exist_ok=True)
    init_db_dir(db, 1)
    run_main(flow(), epoch_interval=epoch, recovery_config=RecoveryConfig(str(db)))
    spy.append(read(root, "readings", dedup=False).num_rows)
    run_main(flow(), epoch_interval=epoch, recovery_config=RecoveryConfig(str(db)))


def test_bytewax_recovery_resume_writes_every_item_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[Path] = []
    original = Historian.remove_orphans
    monkeypatch.setattr(Historian, "remove_orphans", lambda self: removed.extend(original(self)) or removed)
    seen: list[int] = []
    run_with_abort(tmp_path / "root", tmp_path / "db", ZERO, seen)
    expected = pa.concat_tables([pa.Table.from_batches([b]) for _, b in reading_items()])
    raw = read(tmp_path / "root", "readings", dedup=False)
    assert 0 < seen[0] < expected.num_rows                    # the first run stopped part-way
    assert removed                                            # post-checkpoint files were rewritten...
    assert raw.num_rows == expected.num_rows                  # ...so each item is on disk once
    assert sort_rows(raw.drop_columns("network"), ["point", "ts"]) == sort_rows(expected, ["point", "ts"])


def test_bytewax_abort_before_any_snapshot_is_deduplicated(tmp_path: Path) -> None:
    """With no snapshot before the abort the whole input is replayed: duplicates on disk, none read."""
    seen: list[int] = []
    run_with_abort(tmp_path / "root", tmp_path / "db", timedelta(seconds=30), seen)
    total = len(reading_items()) * 2
    assert read(tmp_path / "root", "readings", dedup=False).num_rows == seen[0] + total
    assert read(tmp_path / "root", "readings").num_rows == total


# ----------------------------------------------------------------------------------------------
# the writer thread: the worker never waits for a flush, a snapshot holds every item once


class GatedWrites:
    """Holds each file write of ``Historian.write_file`` until ``open`` is set (a slow disk), then
    writes it for real; counts the writes begun."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.open, self.begun = threading.Event(), threading.Semaphore(0)
        original = Historian.write_file

        def gated(hist, key, buffer, seq):
            self.begun.release()
            assert self.open.wait(30), "gated write never released"
            return original(hist, key, buffer, seq)

        monkeypatch.setattr(Historian, "write_file", gated)


def test_snapshot_during_a_slow_flush_holds_every_item_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot taken while a file is being written and items wait in the queue returns at
    once; resuming from it (the first run's later files counting as post-checkpoint) leaves every
    item on disk exactly once."""
    items = reading_items()                            # 10 items of 2 rows
    gate = GatedWrites(monkeypatch)
    sink = HistorianSink(tmp_path, "readings", max_rows=3, fsync=False, queue_batches=64)
    part = sink.build_part("w", "readings0", None)
    part.write_batch(items[:2])                        # north h1 + south h1: 2 rows each, no flush yet
    part.write_batch(items[2:4])                       # north reaches 4 rows: a flush starts and blocks
    assert gate.begun.acquire(timeout=10)
    part.write_batch(items[4:6])                       # queued behind the blocked flush
    t = time.perf_counter()
    state = part.snapshot()
    assert time.perf_counter() - t < 1.0               # no wait for the disk
    carried = sum(b[-1].num_rows for b in state["buffers"]) + sum(b.num_rows for _, b in state["pending"])
    assert carried == 12 and len(state["pending"]) == 2 and not list(written_files(tmp_path))
    part.write_batch(items[6:])                        # after the snapshot: the replay's job on resume
    gate.open.set()
    part.close()                                       # a run that went on, then "crashed" after this
    assert read(tmp_path, "readings", dedup=False).num_rows == 20
    resumed = sink.build_part("w", "readings0", state)     # resume deletes the files numbered from the state's seq
    resumed.write_batch(items[6:])                     # the source replays what came after the snapshot
    resumed.close()
    expected = pa.concat_tables([pa.Table.from_batches([b]) for _, b in items])
    raw = read(tmp_path, "readings", dedup=False)
    assert raw.num_rows == expected.num_rows
    assert sort_rows(raw.drop_columns("network"), ["point", "ts"]) == sort_rows(expected, ["point", "ts"])


def test_full_queue_blocks_the_worker_and_drops_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = GatedWrites(monkeypatch)
    sink = HistorianSink(tmp_path, "readings", max_rows=1, fsync=False, queue_batches=1)
    part = sink.build_part("w", "readings0", None)
    items = reading_items()
    done = threading.Event()

    def produce() -> None:
        for item in items:
            part.write_batch([item])
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert gate.begun.acquire(timeout=10)
    assert not done.wait(0.5)                          # one item in the flush, one in the queue: blocked
    gate.open.set()
    producer.join(10)
    assert done.is_set()
    part.close()
    assert read(tmp_path, "readings", dedup=False).num_rows == len(items) * 2


def test_a_failed_write_surfaces_on_the_worker(tmp_path: Path) -> None:
    (tmp_path / "readings").write_text("a file where the kind's folder belongs")
    part = HistorianSink(tmp_path, "readings", max_rows=1, fsync=False).build_part("w", "readings0", None)
    part.write_batch(reading_items()[:1])
    deadline = time.monotonic() + 10
    with pytest.raises(RuntimeError, match="historian writer"):
        while time.monotonic() < deadline:
            part.write_batch(reading_items()[1:2])
            time.sleep(0.01)
        part.close()


def test_worker_thread_mode_still_writes_in_place(tmp_path: Path) -> None:
    sink = HistorianSink(tmp_path, "readings", max_rows=3, fsync=False, background=False)
    part = sink.build_part("w", "readings0", None)
    part.write_batch(reading_items()[:3])             # north h1, south h1, north h5
    assert read(tmp_path, "readings", dedup=False).num_rows == 4     # north: 4 rows >= max_rows, on disk at once
    part.close()
    assert read(tmp_path, "readings", dedup=False).num_rows == 6
