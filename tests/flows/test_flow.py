"""The whole flow on simulated field data, run by bytewax's own test helpers: readings in; twin
states, quarantined readings and alerts out."""

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import readings_batch
from pipetwin.connectors.simulator import FieldSimulator, load_scenario
from pipetwin.data import example
from pipetwin.flows.contracts import Alert, TwinState
from pipetwin.flows.detectors.data_quality import SensorSilent
from pipetwin.flows.detectors.pressure_limit import PressureLimit
from pipetwin.flows.detectors.residual import SensorResidual
from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow
from pipetwin.twin.io import read_network


@pytest.fixture(scope="module")
def network():
    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


def simulated_batches(model, points, seconds, scenario=None, seed=0):
    sim = FieldSimulator(model, points, scenario, seed=seed)
    rows = sim.scada_rows
    ids = [points.ids[r] for r in rows]
    out = []
    for _ in range(seconds):
        st = sim.step(1.0)
        v = st.scada[rows]
        out.append(readings_batch(ids, np.full(len(rows), st.ts_ns), v, 0, "simulator"))
    return out


def run_flow(model, points, batches, detectors=lambda: [], max_age_s=60.0):
    states, alerts, accepted, quarantined = [], [], [], []
    latest = [0]

    def clock():      # event time: a replay's "now" is its newest reading
        return latest[0]

    for b in batches:
        latest[0] = max(latest[0], int(b.column("ts").cast(pa.int64()).to_numpy().max()))
    sinks = FlowSinks(readings=TestingSink(accepted), quarantine=TestingSink(quarantined),
                      states=[TestingSink(states)], alerts=[TestingSink(alerts)])
    flow = build_flow(TestingSource(batches), model, points, sinks, clock, detectors,
                      FlowConfig("schutterwald", tick_s=1.0, lateness_s=1.0, max_age_s=max_age_s))
    run_main(flow)
    return states, alerts, accepted, quarantined


def test_twin_follows_the_field(network):
    model, points = network
    batches = simulated_batches(model, points, 30)
    states, alerts, accepted, quarantined = run_flow(model, points, batches)
    assert len(states) == 30 and all(isinstance(s, TwinState) for s in states)
    assert all(s.converged for s in states)
    assert sum(b.num_rows for b in accepted) == sum(b.num_rows for b in batches)
    assert not quarantined
    last = states[-1]
    pressure = np.array([points.quantity[points.index()[p]] == "pressure" for p in last.sensor_ids])
    # the fitted twin explains the pressures to within a few instrument sigmas (20 Pa)
    assert np.nanmax(np.abs(last.residual[pressure])) < 150.0
    assert last.summary()["sensors_reporting"] == len(last.sensor_ids)
    assert last.figures["inflow_kg_s"] == pytest.approx(last.figures["consumption_kg_s"], rel=1e-6)


def test_bad_readings_are_quarantined_and_counted(network):
    model, points = network
    batches = simulated_batches(model, points, 5)
    bad = readings_batch(["PT-001", "NOT-A-POINT"], [batches[2].column("ts")[0].value] * 2, [9e9, 1.0], 0, "x")
    batches.insert(3, bad)
    states, alerts, accepted, quarantined = run_flow(model, points, batches)
    n_in = sum(b.num_rows for b in batches)
    n_acc = sum(b.num_rows for b in accepted)
    n_q = sum(b.num_rows for b in quarantined)
    assert n_acc + n_q == n_in and n_q == 2
    reasons = sorted(r for b in quarantined for r in b.column("reason").to_pylist())
    assert reasons == ["out_of_range", "unknown_point"]


def test_silent_sensor_opens_then_clears_an_alert(network, tmp_path):
    model, points = network
    path = tmp_path / "s.yaml"
    path.write_text("events:\n  - {at: 5, kind: sensor, point: PT-002, fault: dropout, duration_s: 15}\n")
    scenario = load_scenario(path, model, points)
    batches = simulated_batches(model, points, 45, scenario)
    states, alerts, _, _ = run_flow(model, points, batches,
                                    detectors=lambda: [SensorSilent(ticks=5), SensorResidual(),
                                                       PressureLimit(min_pa=101325 + 5000)], max_age_s=2.0)
    silent = [a for a in alerts if isinstance(a, Alert) and a.kind == "data_quality" and a.subject == "PT-002"]
    assert [a.status for a in silent] == ["open", "cleared"]
    assert silent[0].id == silent[1].id and silent[1].revision == 1
    assert not [a for a in alerts if a.kind == "pressure_limit"]


def test_historian_keeps_everything_the_flow_saw(network, tmp_path):
    from pipetwin.flows.sinks.historian import read

    model, points = network
    batches = simulated_batches(model, points, 12)
    states, alerts, accepted, quarantined = [], [], [], []
    sinks = FlowSinks(states=[TestingSink(states)], alerts=[TestingSink(alerts)], historian=str(tmp_path))
    latest = max(int(b.column("ts").cast(pa.int64()).to_numpy().max()) for b in batches)
    flow = build_flow(TestingSource(batches), model, points, sinks, lambda: latest,
                      lambda: [PressureLimit(min_pa=3e5)], FlowConfig("schutterwald", tick_s=1.0, lateness_s=1.0))
    run_main(flow)
    readings = read(tmp_path, "readings", network="schutterwald")
    assert readings.num_rows == sum(b.num_rows for b in batches)
    ticks = read(tmp_path, "ticks", network="schutterwald")
    assert ticks.num_rows == len(states) == 12
    sensor_rows = read(tmp_path, "states", network="schutterwald")
    assert sensor_rows.num_rows == 12 * len(states[0].sensor_ids)
    stored = read(tmp_path, "alerts", network="schutterwald")
    assert stored.num_rows == len(alerts) >= 1          # every node is below 3 bar: one pressure alert


def test_quiet_points_hold_their_last_value(network):
    """Report-by-exception: a point that sends one value and then nothing still counts for a minute."""
    model, points = network
    batches = simulated_batches(model, points, 10)
    keep = [b if i == 0 else b.filter(pa.compute.not_equal(b.column("point"), "PT-001")) for i, b in enumerate(batches)]
    states, _, _, _ = run_flow(model, points, keep)
    i = states[-1].sensor_ids.index("PT-001")
    assert np.isfinite(states[-1].sensor_measured[i])
    assert states[-1].sensor_measured[i] == pytest.approx(float(batches[0].filter(
        pa.compute.equal(batches[0].column("point"), "PT-001")).column("value")[0].as_py()))


def test_hourly_data_availability_reaches_the_state(network):
    """A point that goes silent for part of an hour shows in the next hour's availability figures."""
    from pipetwin.flows.steps.align import TickAligner

    model, points = network
    aligner = TickAligner(points, "schutterwald", tick_s=60.0, lateness_s=0.0, max_age_s=60.0)
    hour = 3_600_000_000_000
    ticks = []
    scada = [p for p, proto in zip(points.ids, points.protocol) if proto in ("opcua", "modbus")]
    for minute in range(1, 62):
        ids = [p for p in scada if not (p == "PT-001" and minute > 30)]      # PT-001 silent after 30 min
        ts = 5 * hour + minute * 60_000_000_000 - 1
        ticks += aligner.add(readings_batch(ids, np.full(len(ids), ts), np.full(len(ids), 2e5), 0, "x"))
    ticks += aligner.flush()
    fig = ticks[-1].figures
    assert fig["availability_worst_point"] == "PT-001"
    assert fig["availability_worst"] == pytest.approx(30 / 60)       # its last value aged out at minute 31
    assert fig["availability_points_below_target"] == 1


def test_two_networks_in_one_flow(network):
    """Keyed by network: two feeds (here the same field under two names) give two separate twins."""
    model, points = network
    one = simulated_batches(model, points, 6, seed=1)
    two = [b.set_column(4, "source", pa.array(["north"] * b.num_rows)) for b in simulated_batches(model, points, 6, seed=2)]
    batches = [b for pair in zip(one, two) for b in pair]
    states, alerts = [], []
    latest = max(int(b.column("ts").cast(pa.int64()).to_numpy().max()) for b in batches)
    config = FlowConfig("schutterwald", tick_s=1.0, lateness_s=1.0,
                        network_of=lambda b: "north" if b.column("source")[0].as_py() == "north" else "schutterwald")
    run_main(build_flow(TestingSource(batches), model, points, FlowSinks(states=[TestingSink(states)]),
                        lambda: latest, lambda: [], config))
    by_network = {}
    for s in states:
        by_network.setdefault(s.network, []).append(s)
    assert sorted(by_network) == ["north", "schutterwald"]
    assert len(by_network["north"]) == len(by_network["schutterwald"]) == 6
    assert not np.allclose(by_network["north"][-1].sensor_measured, by_network["schutterwald"][-1].sensor_measured)


def test_late_data_policy(network):
    """A tick closes once the newest event time seen passes its end by the lateness; until then a
    straggler still counts; after, it is late: counted in the next tick and not used in the closed
    one, but, being newer than the value held for its point, it is what the next tick holds."""
    from pipetwin.flows.steps.align import TickAligner

    _, points = network
    aligner = TickAligner(points, "schutterwald", tick_s=1.0, lateness_s=0.5, max_age_s=60.0, early_margin_s=None)
    s = 1_000_000_000
    t0 = 1_700_000_000 * s
    row = points.ids.index("PT-001")

    def add(ts_offset_s, value, point="PT-001"):
        return aligner.add(readings_batch([point], [t0 + int(ts_offset_s * s)], [value], 0, "x"))

    assert add(0.2, 2.0e5) == [] and add(1.4, 2.3e5, "PT-002") == []     # 1.4 < 1.0 + 0.5: tick 1 still open
    assert add(0.9, 2.1e5) == []                                          # a straggler within the lateness: used
    closed = add(1.5, 2.4e5, "PT-002")                                    # watermark 1.5 closes (0, 1]
    assert [t.ts_ns for t in closed] == [t0 + s] and closed[0].values[row] == 2.1e5 and closed[0].late == 0
    assert add(0.95, 9.9e5) == []                                         # late: its tick has closed
    assert aligner.late == 1
    nxt = add(2.6, 2.5e5, "PT-002")
    assert [t.ts_ns for t in nxt] == [t0 + 2 * s] and nxt[0].late == 1
    assert nxt[0].values[row] == 9.9e5                                    # held: the newest value known
    assert add(0.5, 7.7e5) == [] and aligner.late == 2                    # late and older than held: dropped
    assert add(3.6, 2.6e5, "PT-002")[0].values[row] == 9.9e5


def test_early_close_when_every_source_is_done_with_the_tick(network):
    """A tick closes before its lateness runs out once every source that delivered in the tick
    before is done with it: sources deliver in time order, so one that has delivered past the
    tick's end (+ margin), or whose next reading, one cadence after its newest, falls past it (a
    Modbus unit polled once a second), has nothing more for it. A source that falls silent holds
    one tick open for the whole allowance and is then not waited for; a straggler after an early
    close is held for the next tick."""
    from pipetwin.flows.steps.align import TickAligner

    _, points = network
    aligner = TickAligner(points, "schutterwald", tick_s=1.0, lateness_s=0.5, max_age_s=60.0, early_margin_s=0.1)
    s = 1_000_000_000
    t0 = 1_700_000_000 * s
    row, row3 = points.ids.index("PT-001"), points.ids.index("PT-003")
    clock = {"a": 0.0}

    def add(source, at_s, point="PT-001", value=2.0e5):
        return [t.ts_ns - t0 for t in aligner.add(readings_batch([point], [t0 + round(at_s * s)], [value], 0, source))]

    def opcua_until(until_s):
        """OPC-UA-like source a: a change every 0.1 s (at .05, .15, ...) up to ``until_s``."""
        closed = []
        while clock["a"] + 0.1 <= until_s + 1e-9:
            clock["a"] = round(clock["a"] + 0.1, 2)
            closed += add("opcua:a", clock["a"] - 0.05)
        return closed

    assert opcua_until(0.4) == [] and add("modbus:b/1", 0.4, "PT-002") == []
    assert opcua_until(1.4) == [] and add("modbus:b/1", 1.4, "PT-002") == []   # (0, 1]: no sources known yet
    assert opcua_until(1.6) == [s]                     # the lateness closes (0, 1]
    assert opcua_until(2.2) == []                      # a is past 2.1, b (no cadence known yet) is not
    assert add("modbus:b/1", 2.4, "PT-002") == [2 * s] and aligner.closed_early == 1   # 0.1 s early
    assert opcua_until(3.2) == [] and add("modbus:b/1", 3.4, "PT-002") == [3 * s]
    assert aligner.source_gap["modbus:b/1"] == s and aligner.source_gap["opcua:a"] == s // 10
    assert add("opcua:a", 2.9, "PT-003", 3.3e5) == [] and aligner.late == 1   # a straggler: late,
    assert aligner.held["values"][row3] == 3.3e5                                 # but held for (3, 4]
    assert add("opcua:a", 2.8, value=7.7e5) == [] and aligner.held["values"][row] == 2.0e5   # older: not
    # b polls once a second: its poll at 3.4 was its last for (3, 4]: the tick closes once a is past
    assert opcua_until(4.2) == [4 * s] and aligner.closed_early == 3
    assert opcua_until(5.2) == []                      # b falls silent: (4, 5] waits for it ...
    assert opcua_until(5.6) == [5 * s]                 # ... the allowance, once
    assert opcua_until(6.2) == [6 * s]                 # then only a is waited for
    assert aligner.closed_early == 4
    # a source whose batches hold many instants (a replay) may split one across batches: no cadence
    aligner.add(readings_batch(["PT-004", "PT-005"], [t0 + 6 * s + s // 4, t0 + 6 * s + s // 2], [2e5, 2e5], 0,
                               "replay:x"))
    assert aligner.source_gap.get("replay:x", 0) == 0
