"""The data-quality gate, completeness and the quarantine sink.

Each reading in the generated streams carries a unique ``source`` ("r17"), so every output row can
be traced back to the reading it came from and to the fault injected into it.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetwin.connectors.completeness import Completeness
from pipetwin.connectors.points import load_points
from pipetwin.connectors.points import points_from_columns as hand_table
from pipetwin.connectors.quality import NS, QUARANTINE_REASONS, QUARANTINE_SCHEMA, QualityGate
from pipetwin.connectors.quarantine import QuarantineWriter
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN, empty_batch, readings_batch
from pipetwin.data import example
from pipetwin.twin.io import read_network

T0 = 1_700_000_000 * NS          # 2023-11-14 22:13:20 UTC
NOW = T0 + 3600 * NS


@pytest.fixture(scope="module")
def site_points():
    model = read_network(example("schutterwald"))
    return load_points(example("schutterwald") / "points.csv", model)


def raw_batch(points, ts, values, quality=GOOD, sources=None) -> pa.RecordBatch:
    """A Reading batch built directly, so NaN can arrive with good quality (readings_batch marks it bad)."""
    n = len(points)
    q = np.full(n, quality, np.int8) if np.isscalar(quality) else np.asarray(quality, np.int8)
    src = sources if sources is not None else [f"r{i}" for i in range(n)]
    return pa.RecordBatch.from_arrays(
        [pa.array(points, pa.string()), pa.array(np.asarray(ts, np.int64), pa.timestamp("ns", tz="UTC")),
         pa.array(np.asarray(values, float)), pa.array(q, pa.int8()), pa.array(src, pa.string())],
        schema=READING_SCHEMA)


def pressure_gate(**kw) -> QualityGate:
    table = hand_table(["P1", "P2"], "pressure", min_si=1.0e5, max_si=5.0e5, deadband_si=10.0)
    return QualityGate(table, clock=lambda: NOW, **kw)


def reasons(result) -> list[str]:
    return result.quarantined.column("reason").to_pylist()


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Tables equal column by column, NaN equal to NaN (Arrow's ``equals`` says NaN != NaN)."""
    assert got.column_names == want.column_names and got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name), want.column(name)
        if pa.types.is_floating(b.type):
            assert np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True), name
        else:
            assert a.to_pylist() == b.to_pylist(), name


def assert_counts_add_up(stats: dict[str, int]) -> None:
    assert stats["received"] == stats["accepted"] + stats["quarantined"]
    assert stats["quarantined"] == sum(stats[r] for r in QUARANTINE_REASONS)


# ---------------------------------------------------------------------------------------------
# one check at a time


def test_unknown_point_is_quarantined_with_its_row_intact():
    res = pressure_gate().process(raw_batch(["P1", "nope"], [T0, T0], [2e5, 2e5]))
    assert reasons(res) == ["unknown_point"]
    assert res.quarantined.column("point").to_pylist() == ["nope"]
    assert res.quarantined.schema == QUARANTINE_SCHEMA and res.accepted.schema == READING_SCHEMA
    assert_counts_add_up(res.stats)


def test_not_finite_and_bad_quality():
    batch = raw_batch(["P1"] * 4, [T0 + i * NS for i in range(4)], [2e5, math.nan, math.inf, 2.0001e5],
                      [GOOD, GOOD, GOOD, BAD])
    res = pressure_gate().process(batch)
    assert reasons(res) == ["not_finite", "not_finite", "bad_quality"]
    assert res.accepted.column("source").to_pylist() == ["r0"]
    # readings_batch already marks NaN bad: it is still named for what it is
    res = pressure_gate().process(readings_batch(["P1"], [T0], [math.nan], GOOD, "t"))
    assert reasons(res) == ["not_finite"]


def test_future_and_past_against_the_injected_clock():
    gate = pressure_gate(max_future_s=60.0, max_past_s=3600.0)
    ts = [NOW + 61 * NS, NOW + 59 * NS, NOW - 3601 * NS, NOW - 3599 * NS]
    res = gate.process(raw_batch(["P1", "P2", "P2", "P1"], ts, [2e5] * 4))
    assert reasons(res) == ["future", "past"]
    assert res.quarantined.column("detail").to_pylist()[0].startswith("ts 61 s ahead")


def test_out_of_range_both_sides_and_unbounded_points():
    table = hand_table(["P1", "FREE"], "pressure", min_si=1.0e5, max_si=5.0e5)
    table.min_si[1] = table.max_si[1] = math.nan
    gate = QualityGate(table, clock=lambda: NOW)
    res = gate.process(raw_batch(["P1", "P1", "FREE", "P1"], [T0, T0 + NS, T0, T0 + 2 * NS],
                                 [9.9e4, 5.1e5, -1e9, 5.0e5]))
    assert reasons(res) == ["out_of_range", "out_of_range"]
    assert "outside [100000, 500000]" in res.quarantined.column("detail").to_pylist()[0]
    assert res.accepted.column("source").to_pylist() == ["r2", "r3"]


def test_rate_spike_is_caught_and_the_next_reading_compares_with_the_last_accepted():
    values = [2.0e5, 2.001e5, 2.6e5, 2.002e5, 2.003e5]     # one 60 kPa spike; limit 10 kPa/s
    res = pressure_gate().process(raw_batch(["P1"] * 5, [T0 + i * NS for i in range(5)], values))
    assert reasons(res) == ["rate"]
    assert res.quarantined.column("source").to_pylist() == ["r2"]
    assert "limit 10000 /s" in res.quarantined.column("detail").to_pylist()[0]


def test_rate_limit_scales_with_time_and_is_overridable():
    ts = [T0, T0 + 10 * NS]                   # 50 kPa in 10 s is 5 kPa/s: fine by default
    assert pressure_gate().process(raw_batch(["P1"] * 2, ts, [2e5, 2.5e5])).stats["rate"] == 0
    gate = pressure_gate(point_rate_limits={"P1": 1000.0})
    assert gate.process(raw_batch(["P1"] * 2, ts, [2e5, 2.5e5])).stats["rate"] == 1
    with pytest.raises(KeyError, match="nope"):
        pressure_gate(point_rate_limits={"nope": 1.0})


def test_default_rate_limits_by_quantity(site_points):
    gate = QualityGate(site_points)
    by_q = {q: gate._rate[site_points.quantity.index(q)] for q in set(site_points.quantity)}
    assert by_q["pressure"] == 10_000.0 and by_q["temperature"] == 0.5
    i = site_points.quantity.index("flow")
    assert by_q["flow"] == pytest.approx(0.5 * (site_points.max_si[i] - site_points.min_si[i]))
    assert math.isinf(by_q["volume"])


def test_a_real_step_is_accepted_after_confirm_after_consistent_readings():
    values = [2.0e5, 2.5e5, 2.5001e5, 2.5002e5, 2.5003e5]
    res = pressure_gate(confirm_after=3).process(raw_batch(["P1"] * 5, [T0 + i * NS for i in range(5)], values))
    assert reasons(res) == ["rate", "rate"]
    assert res.accepted.column("source").to_pylist() == ["r0", "r3", "r4"]
    assert res.stats["rate_rebased"] == 1


def test_stuck_values_are_accepted_as_uncertain_and_counted():
    values = [2.0e5, 2.1e5, 2.1e5, 2.1e5, 2.1e5, 2.1e5, 2.2e5, 2.2e5]
    res = pressure_gate(stuck_after=4).process(raw_batch(["P1"] * 8, [T0 + i * NS for i in range(8)], values))
    assert res.stats["quarantined"] == 0 and res.stats["stuck"] == 2
    assert res.accepted.column("quality").to_pylist() == [GOOD] * 4 + [UNCERTAIN] * 2 + [GOOD] * 2
    assert res.accepted.column("value").to_pylist() == values


def test_stuck_by_duration_and_only_for_quantities_that_move():
    ts = [T0 + i * 60 * NS for i in range(4)]
    res = pressure_gate(stuck_after=100, stuck_after_s=120.0).process(raw_batch(["P1"] * 4, ts, [2e5] * 4))
    assert res.accepted.column("quality").to_pylist() == [GOOD, GOOD, UNCERTAIN, UNCERTAIN]
    meters = hand_table(["M"], "volume", min_si=0.0, max_si=50.0, period_s=3600.0)
    gate = QualityGate(meters, stuck_after=2, clock=lambda: NOW)
    res = gate.process(raw_batch(["M"] * 4, [T0 - i * 3600 * NS for i in (3, 2, 1, 0)], [0.0] * 4))
    assert res.stats["stuck"] == 0 and res.stats["accepted"] == 4


def test_duplicates_and_conflicts_within_and_across_batches():
    gate = pressure_gate()
    res = gate.process(raw_batch(["P1", "P1", "P1", "P2"], [T0, T0, T0, T0], [2e5, 2e5, 2.1e5, 2e5]))
    assert reasons(res) == ["duplicate", "conflict"]
    assert "accepted value at this ts=200000" in res.quarantined.column("detail").to_pylist()[1]
    res = gate.process(raw_batch(["P2", "P2"], [T0, T0], [2e5, 3e5]))
    assert reasons(res) == ["duplicate", "conflict"]


def test_late_readings_inside_the_window_are_accepted_outside_are_quarantined():
    gate = pressure_gate(late_window_s=10.0)
    ts = [T0 + 20 * NS, T0 + 15 * NS, T0 + 5 * NS, T0 + 21 * NS]
    res = gate.process(raw_batch(["P1"] * 4, ts, [2e5, 2.0001e5, 2.0002e5, 2.0003e5]))
    assert reasons(res) == ["late"]
    assert res.quarantined.column("source").to_pylist() == ["r2"]
    assert res.stats["late_accepted"] == 1
    # a late re-delivery of a recent reading is still a duplicate (history), not a second copy
    res = gate.process(raw_batch(["P1", "P1"], [T0 + 15 * NS, T0 + 20 * NS], [2.0001e5, 2.0001e5]))
    assert reasons(res) == ["duplicate", "conflict"]


def test_first_failing_check_names_the_reason():
    res = pressure_gate().process(raw_batch(["P1"], [NOW + 10**6 * NS], [math.nan], BAD))
    assert reasons(res) == ["not_finite"]


def test_empty_batch_and_wrong_schema():
    res = pressure_gate().process(empty_batch())
    assert res.stats["received"] == 0 and res.quarantined.num_rows == 0
    with pytest.raises(TypeError, match="columns"):
        pressure_gate().process(pa.RecordBatch.from_pydict({"x": [1]}))


def test_snapshot_is_picklable_and_restores_by_point_id():
    gate = pressure_gate()
    gate.process(raw_batch(["P1", "P2"], [T0, T0], [2e5, 3e5]))
    snap = pickle.loads(pickle.dumps(gate.snapshot()))
    bigger = hand_table(["P0", "P2", "P1"], "pressure", min_si=1.0e5, max_si=5.0e5)
    other = QualityGate(bigger, clock=lambda: NOW)
    other.restore(snap)
    res = other.process(raw_batch(["P1", "P2", "P0"], [T0, T0, T0], [2e5, 3.1e5, 2e5]))
    assert reasons(res) == ["duplicate", "conflict"]
    assert other.totals["received"] == 5


# ---------------------------------------------------------------------------------------------
# generated streams with injected faults

FAULTS = ("clean", "out_of_range_hi", "out_of_range_lo", "rate", "future", "past", "nan", "bad",
          "duplicate", "conflict", "late_ok", "late")
EXPECTED_REASON = {"out_of_range_hi": "out_of_range", "out_of_range_lo": "out_of_range", "rate": "rate",
                   "future": "future", "past": "past", "nan": "not_finite", "bad": "bad_quality",
                   "duplicate": "duplicate", "conflict": "conflict", "late": "late"}
SEGMENT = 4        # readings per segment; a fault touches the second one, the others stay clean
STUCK_AFTER = 5


@dataclass
class Stream:
    batch: pa.RecordBatch
    reason: dict[str, str]          # source id -> expected quarantine reason
    stuck: set[str]                 # source ids expected accepted as uncertain
    late_ok: set[str]


def make_stream(points: list[str], kinds: list[list[str]], steps: np.ndarray, order: np.ndarray,
                stuck_point: str, stuck_at: int, stuck_len: int) -> Stream:
    """Per point a random walk at 1 s (never repeating a value), one fault per 4-reading segment
    on the segment's second reading; ``stuck_point`` is clean but flat for ``stuck_len`` readings."""
    rows = []   # (arrival key, point, ts, value, quality, expected reason or None, tag)
    n_seg = max(len(k) for k in kinds)
    length = n_seg * SEGMENT
    for p, pid in enumerate([*points, stuck_point]):
        step = steps[p % len(steps)][:length].copy()
        if pid == stuck_point:
            step[stuck_at + 1:stuck_at + stuck_len] = 0.0      # flat run, then the walk moves on
        walk = 2.0e5 + np.cumsum(step)
        point_kinds = kinds[p] if p < len(kinds) else []
        for k in range(length):
            seg, pos = divmod(k, SEGMENT)
            kind = point_kinds[seg] if pos == 1 and seg < len(point_kinds) else "clean"
            key = k + order[p] * 0.01
            ts, value, quality, why = T0 + k * NS, float(walk[k]), GOOD, EXPECTED_REASON.get(kind)
            tag = "stuck" if pid == stuck_point and stuck_at + STUCK_AFTER - 1 <= k < stuck_at + stuck_len else ""
            if kind == "out_of_range_hi":
                value = 4.0e5
            elif kind == "out_of_range_lo":
                value = 5.0e4
            elif kind == "rate":
                value += 40_000.0 if k % 3 else -40_000.0
            elif kind == "future":
                ts = NOW + 86400 * NS
            elif kind == "past":
                ts = NOW - 30 * 86400 * NS
            elif kind == "nan":
                value = math.nan
            elif kind == "bad":
                quality = BAD
            elif kind in ("duplicate", "conflict"):
                rows.append((key, pid, ts, value, quality, None, ""))
                key += 0.001
                value += 0.0 if kind == "duplicate" else 1.0
            elif kind == "late_ok":
                key += 1.005           # arrives after the next reading: 1 s late, window 1.5 s
                tag = "late_ok"
            elif kind == "late":
                key += 2.005           # after the next two: 2 s late
            rows.append((key, pid, ts, value, quality, why, tag))
    rows.sort(key=lambda r: r[0])
    sources = [f"r{i}" for i in range(len(rows))]
    batch = raw_batch([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                      sources)
    return Stream(batch, {s: r[5] for s, r in zip(sources, rows) if r[5]},
                  {s for s, r in zip(sources, rows) if r[6] == "stuck"},
                  {s for s, r in zip(sources, rows) if r[6] == "late_ok"})


def stream_gate(table) -> QualityGate:
    return QualityGate(table, clock=lambda: NOW, late_window_s=1.5, stuck_after=STUCK_AFTER)


def run(gate: QualityGate, batch: pa.RecordBatch, cuts: list[int]):
    """Feed ``batch`` cut at ``cuts``; check the invariant per batch; return both streams whole."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < batch.num_rows)), batch.num_rows]
    accepted, quarantined = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        res = gate.process(batch.slice(a, b - a))
        assert res.stats["received"] == b - a
        assert res.accepted.num_rows == res.stats["accepted"] and res.quarantined.num_rows == res.stats["quarantined"]
        assert_counts_add_up(res.stats)
        accepted.append(res.accepted)
        quarantined.append(res.quarantined)
    return (pa.Table.from_batches(accepted, schema=READING_SCHEMA),
            pa.Table.from_batches(quarantined, schema=QUARANTINE_SCHEMA))


PRESSURES = ["GS-PT-IN", "PT-001"]     # from the bundled point table: 1013.25..3013.25 hPa absolute


def stream_strategy():
    kinds = st.lists(st.lists(st.sampled_from(FAULTS), min_size=1, max_size=12), min_size=len(PRESSURES),
                     max_size=len(PRESSURES))
    step = st.floats(1.0, 400.0).flatmap(lambda x: st.sampled_from([x, -x]))
    steps = st.lists(st.lists(step, min_size=48, max_size=48), min_size=3, max_size=3).map(np.array)
    order = st.permutations(range(len(PRESSURES) + 1)).map(np.array)
    stuck = st.tuples(st.integers(0, 20), st.integers(1, 20))
    cuts = st.lists(st.integers(0, 200), max_size=6)
    return st.tuples(kinds, steps, order, stuck, cuts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_strategy())
def test_injected_faults_are_caught_with_the_right_reason(site_points, case):
    kinds, steps, order, (stuck_at, stuck_len), cuts = case
    stream = make_stream(PRESSURES, kinds, steps, order, "PT-002", stuck_at, stuck_len)
    gate = stream_gate(site_points)
    accepted, quarantined = run(gate, stream.batch, cuts)

    got = dict(zip(quarantined.column("source").to_pylist(), quarantined.column("reason").to_pylist()))
    assert got == stream.reason
    # every clean reading passes with its value and point untouched; quality only drops on stuck runs
    sources = stream.batch.column("source").to_pylist()
    clean = [s for s in sources if s not in stream.reason]
    assert accepted.column("source").to_pylist() == clean
    src_rows = {s: i for i, s in enumerate(sources)}
    rows = np.array([src_rows[s] for s in clean], np.int64)
    for col in ("point", "ts", "value"):
        assert accepted.column(col).to_pylist() == stream.batch.column(col).take(pa.array(rows)).to_pylist()
    uncertain = {s for s, q in zip(clean, accepted.column("quality").to_pylist()) if q == UNCERTAIN}
    assert uncertain == stream.stuck
    # cumulative totals add up, with the flags counted
    totals = gate.totals
    assert_counts_add_up(totals)
    assert totals["received"] == stream.batch.num_rows and totals["stuck"] == len(stream.stuck)
    assert totals["late_accepted"] == len(stream.late_ok)
    for reason in QUARANTINE_REASONS:
        assert totals[reason] == sum(r == reason for r in stream.reason.values())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_strategy(), st.integers(0, 200))
def test_snapshot_restore_mid_stream_matches_an_uninterrupted_run(site_points, case, split):
    kinds, steps, order, (stuck_at, stuck_len), cuts = case
    stream = make_stream(PRESSURES, kinds, steps, order, "PT-002", stuck_at, stuck_len)
    whole = run(stream_gate(site_points), stream.batch, [])
    split = min(split, stream.batch.num_rows)
    first = stream_gate(site_points)
    a1, q1 = run(first, stream.batch.slice(0, split), cuts)
    second = stream_gate(site_points)
    second.restore(pickle.loads(pickle.dumps(first.snapshot())))
    a2, q2 = run(second, stream.batch.slice(split), cuts)
    assert_same_rows(pa.concat_tables([a1, a2]), whole[0])
    assert_same_rows(pa.concat_tables([q1, q2]), whole[1])
    uninterrupted = stream_gate(site_points)
    uninterrupted.process(stream.batch)
    assert second.totals == uninterrupted.totals


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_clean_streams_pass_untouched(n_steps, n_points, seed):
    rng = np.random.default_rng(seed)
    table = hand_table([f"P{i}" for i in range(n_points)], "pressure", min_si=1e5, max_si=5e5)
    pts = np.repeat([f"P{i}" for i in range(n_points)], n_steps)
    ts = np.tile(T0 + np.arange(n_steps) * NS, n_points)
    values = 2e5 + np.cumsum(rng.uniform(1, 500, (n_points, n_steps)), axis=1).ravel()
    batch = raw_batch(list(pts), ts, values)
    res = QualityGate(table, clock=lambda: NOW).process(batch)
    assert res.quarantined.num_rows == 0 and res.accepted.equals(batch)


# ---------------------------------------------------------------------------------------------
# completeness and gaps


def test_completeness_with_known_dropouts_and_gaps():
    table = hand_table(["A", "B", "C"], "pressure", period_s=60.0)
    minutes = np.arange(120)
    keep = {"A": minutes,
            "B": minutes[(minutes < 20) | (minutes >= 35)],          # 15 missing in hour 0: one gap
            "C": minutes[(minutes < 60) & (minutes % 10 != 3)]}       # 6 missing in hour 0, silent in hour 1
    pts = np.concatenate([[p] * len(m) for p, m in keep.items()])
    ts = np.concatenate([T0 - T0 % (3600 * NS) + m * 60 * NS for m in keep.values()])
    batch = raw_batch(list(pts), ts, np.ones(len(pts)))
    comp = Completeness(table, gap_periods=3.0)
    half = len(pts) // 2
    comp.update(batch.slice(0, half))
    resumed = Completeness(table, gap_periods=3.0)
    resumed.restore(pickle.loads(pickle.dumps(comp.snapshot())))
    resumed.update(batch.slice(half))
    report = resumed.report().to_pydict()
    got = {(p, h.hour if hasattr(h, "hour") else h): c for p, h, c in
           zip(report["point"], report["hour"], report["completeness"])}
    hours = sorted({h for _, h in got})
    assert [got[("A", h)] for h in hours] == [1.0, 1.0]
    assert [got[("B", h)] for h in hours] == [45 / 60, 1.0]
    assert [got[("C", h)] for h in hours] == [54 / 60, 0.0]
    assert set(report["expected"]) == {60.0}
    below = resumed.below_target()
    assert below.column("point").to_pylist() == ["B", "C"]
    assert below.column("completeness").to_pylist() == pytest.approx([105 / 120, 54 / 120])
    gaps = resumed.gaps()
    assert resumed.gap_count == 1 and gaps.column("point").to_pylist() == ["B"]
    assert gaps.column("duration_s").to_pylist() == [16 * 60.0]


def test_completeness_of_hourly_meters_from_the_site_table(site_points):
    meters = [p for p, q in zip(site_points.ids, site_points.protocol) if q == "meter"]
    rng = np.random.default_rng(1)
    hour0 = T0 - T0 % (3600 * NS)
    dropped = set(rng.choice(len(meters), size=len(meters) // 10, replace=False).tolist())
    pts, ts = [], []
    for h in range(3):
        for i, m in enumerate(meters):
            if h == 1 and i in dropped:
                continue
            pts.append(m)
            ts.append(hour0 + h * 3600 * NS + 600 * NS)
    comp = Completeness(site_points)
    comp.update(raw_batch(pts, ts, np.ones(len(pts))))
    table = comp.report()
    is_meter = np.isin(np.array(table.column("point").to_pylist()), meters)
    hours = np.array(table.column("hour").cast(pa.int64()).to_pylist())
    received = np.array(table.column("received").to_pylist())
    assert set(np.array(table.column("expected").to_pylist())[is_meter]) == {1.0}
    for h in range(3):
        in_hour = is_meter & (hours == hour0 + h * 3600 * NS)
        assert received[in_hour].sum() == len(meters) - (len(dropped) if h == 1 else 0)
    # SCADA points sent nothing: they are reported at 0, and listed below target with the dropped meters
    below = set(comp.below_target().column("point").to_pylist())
    assert {meters[i] for i in dropped} <= below and "GS-PT-IN" in below
    assert comp.gap_count == 0


def test_completeness_ignores_bad_and_by_default_uncertain():
    table = hand_table(["A"], "pressure", period_s=1200.0)
    batch = raw_batch(["A"] * 3, [T0, T0 + NS, T0 + 2 * NS], [1.0] * 3, [GOOD, UNCERTAIN, BAD])
    for count_uncertain, expected in ((False, [1]), (True, [2])):
        comp = Completeness(table, count_uncertain=count_uncertain)
        comp.update(batch)
        assert comp.report().column("received").to_pylist() == expected


# ---------------------------------------------------------------------------------------------
# quarantine sink


def test_quarantine_parquet_round_trip_partitioned_by_day(tmp_path):
    gate = pressure_gate(max_past_s=10 * 86400.0)
    day = 86400 * NS
    batches = [raw_batch(["P1", "X", "P2"], [T0 - day, T0, T0 + i], [9e5, 1.0, math.nan],
                         sources=[f"b{i}-{j}" for j in range(3)]) for i in range(3)]
    expected = []
    with QuarantineWriter(tmp_path / "q", max_buffered_rows=4) as writer:
        for b in batches:
            res = gate.process(b)
            expected.append(res.quarantined)
            writer.write(res.quarantined)
        assert writer.rows_written + writer.rows_buffered == 9
    assert writer.rows_written == 9 and writer.rows_buffered == 0
    folders = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert folders == ["date=2023-11-13", "date=2023-11-14"]
    assert not list((tmp_path / "q").rglob(".*"))
    table = ds.dataset(tmp_path / "q", partitioning="hive").to_table()
    want = pa.Table.from_batches(expected).sort_by("source")
    got = table.sort_by("source")
    assert_same_rows(got.select(want.column_names).cast(want.schema), want)
    dates = {s: str(d) for s, d in zip(got.column("source").to_pylist(), got.column("date").to_pylist())}
    assert dates["b0-0"] == "2023-11-13" and dates["b0-1"] == "2023-11-14"
    with pytest.raises(ValueError, match="after close"):
        writer.write(expected[0])
