"""Meter-end analytics: each check flags its own fault on synthetic reads with a known answer and
leaves normal meters alone; the simulator's meter faults are validated and physically honest
(theft and a stopped meter still draw gas from the network); one scenario runs from the
simulator through the balance step's hand-off to alerts."""

import math
import pickle

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import readings_batch
from pipetwin.connectors.simulator import WINTER_PROFILE, FieldSimulator, ScenarioError, load_scenario
from pipetwin.flows.alerts import AlertBook, DetectLogic
from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.meter_end import MeterEnd
from pipetwin.flows.detectors.meter_end_model import FLAGS, HOUR_NS, MeterEndModel
from pipetwin.flows.flow import _without_meter_hours
from pipetwin.flows.steps.balance import METER_HOURS, BalanceLogic, ZoneBalance
from pipetwin.twin.model import LinkKind, Medium, NetworkModel, NodeKind, make_demands, make_links, make_nodes, make_tanks

# -- synthetic reads with known answers ------------------------------------------------------------
N, HOURS = 200, 6 * 24
LEAK, CHANGE, THEFT, STOPPED = 10, 20, 30, 40
ONSET = {LEAK: 60, CHANGE: 75, THEFT: 80, STOPPED: 90}      # hour index each fault starts


def synthetic(seed: int = 3, faults: bool = True):
    """Hourly reads (hours x meters): expected use x winter profile x 10 % lognormal noise, four
    classes by size; with ``faults`` a leak of half the house's mean use, a x2.5 usage step, a
    meter registering 30 % and a stopped meter."""
    rng = np.random.default_rng(seed)
    expected = rng.lognormal(np.log(0.2), 0.4, N)
    classes = np.digitize(expected, np.quantile(expected, [0.25, 0.5, 0.75]))
    x = expected * WINTER_PROFILE[np.arange(HOURS) % 24][:, None] * rng.lognormal(0.0, 0.1, (HOURS, N))
    if faults:
        x[ONSET[LEAK]:, LEAK] += 0.5 * expected[LEAK]
        x[ONSET[CHANGE]:, CHANGE] *= 2.5
        x[ONSET[THEFT]:, THEFT] *= 0.3
        x[ONSET[STOPPED]:, STOPPED] = 0.0
    x[rng.random(x.shape) < 0.01] = np.nan                   # a few reads never arrive
    return expected, classes, x


def first_flags(model: MeterEndModel, x: np.ndarray) -> dict[str, dict[int, int]]:
    """Per check: meter -> first hour index it was flagged in."""
    first = {f: {} for f in FLAGS}
    for h in range(len(x)):
        model.update((h + 1) * HOUR_NS, x[h])
        for f, pos in model.flagged().items():
            for p in pos:
                first[f].setdefault(int(p), h)
    return first


def test_each_check_flags_its_fault_and_nothing_else():
    expected, classes, x = synthetic()
    first = first_flags(MeterEndModel(expected, classes), x)
    assert set(first["leak"]) == {LEAK}
    assert set(first["theft"]) == {THEFT}
    assert set(first["stopped"]) == {STOPPED}
    # the usage step is seen as a change (the theft and the stop are drops, the leak a rise, first)
    assert CHANGE in first["change"] and set(first["change"]) <= {LEAK, CHANGE, THEFT, STOPPED}
    assert first["change"][CHANGE] - ONSET[CHANGE] <= 3
    assert first["stopped"][STOPPED] - ONSET[STOPPED] <= 7
    assert first["theft"][THEFT] - ONSET[THEFT] <= 24
    assert first["leak"][LEAK] - ONSET[LEAK] <= 48         # judged once a night, after the morning


def test_normal_meters_stay_quiet():
    expected, classes, x = synthetic(seed=8, faults=False)
    first = first_flags(MeterEndModel(expected, classes), x)
    assert all(not hits for hits in first.values()), first


def test_a_usage_step_is_learnt_after_its_hold():
    expected, classes, x = synthetic()
    # held 26 h, then the new normal: the level is re-learnt between that night and its morning,
    # a night measured against the old level must not pass for a leak
    model = MeterEndModel(expected, classes, change_hold_h=26)
    first = first_flags(model, x)
    assert not model.state["change"][CHANGE]
    assert CHANGE not in first["leak"]
    assert model.state["level"][CHANGE] == pytest.approx(2.5, rel=0.15)


def test_snapshot_restores_the_same_state():
    expected, classes, x = synthetic()
    a = MeterEndModel(expected, classes)
    for h in range(100):
        a.update((h + 1) * HOUR_NS, x[h])
    b = MeterEndModel(expected, classes)
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    for h in range(100, HOURS):
        a.update((h + 1) * HOUR_NS, x[h])
        b.update((h + 1) * HOUR_NS, x[h])
    for f in FLAGS:
        assert (a.state[f] == b.state[f]).all()


# -- the simulator's meter faults ----------------------------------------------------------------
HOUSES = 12


def street() -> NetworkModel:
    """A gate feeding a street of twelve houses (23 mbar gauge), each behind its own meter."""
    ids = ["gate", "street"] + [f"h{i}" for i in range(HOUSES)]
    kinds = [NodeKind.SOURCE, 0] + [NodeKind.CONSUMER] * HOUSES
    nodes = make_nodes(ids, kinds, x=np.arange(len(ids)), fixed_pressure_pa=[101325 + 2300] + [math.nan] * (HOUSES + 1))
    n_links = HOUSES + 1
    links = make_links(["main"] + [f"svc{i}" for i in range(HOUSES)], [LinkKind.PIPE] * n_links,
                       [0] + [1] * HOUSES, [1] + list(range(2, HOUSES + 2)), length_m=[200] + [15] * HOUSES,
                       diameter_m=[0.1] + [0.025] * HOUSES, roughness=[1e-4] * n_links)
    base = np.linspace(4e-5, 9e-5, HOUSES)
    return NetworkModel("street", Medium.NATURAL_GAS, nodes, links,
                        make_demands(list(range(2, HOUSES + 2)), base), make_tanks())


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    model = street()
    table = tmp_path_factory.mktemp("pts") / "points.csv"
    rows = ["id,protocol,address,element,quantity,unit,period_s",
            "PT-street,opcua,ns=2;s=PT,street,pressure,mbar,1"]
    rows += [f"M-{i},meter,M-{i},h{i},volume,m3,3600" for i in range(HOUSES)]
    table.write_text("\n".join(rows) + "\n")
    return model, load_points(table, model)


def scenario(tmp_path, network, events: str):
    path = tmp_path / "s.yaml"
    path.write_text("events:\n" + events)
    model, points = network
    return load_scenario(path, model, points)


@pytest.mark.parametrize("event, problem", [
    ("{kind: meter, meter: M-99, fault: stopped}", "meter 'M-99' is not a meter point"),
    ("{kind: meter, meter: PT-street, fault: stopped}", "meter 'PT-street' is not a meter point"),
    ("{kind: meter, meter: M-1, fault: melted}", "meter fault must be one of"),
    ("{kind: meter, meter: M-1, fault: theft, factor: 1.5}", r"theft factor .* must be in \[0, 1\)"),
    ("{kind: meter, meter: M-1, fault: theft}", "meter fault theft needs factor"),
    ("{kind: meter, meter: M-1, fault: behind_meter_leak, flow_kg_s: -1}", "flow_kg_s must be > 0"),
    ("{kind: meter, meter: M-1, fault: usage_change, factor: lots}", "factor 'lots' is not a number"),
    ("{kind: meter, meter: M-1, fault: stopped, duration_s: 0}", "duration_s must be > 0"),
])
def test_meter_events_are_validated(tmp_path, network, event, problem):
    with pytest.raises(ScenarioError, match=rf"event 1: .*{problem}"):
        scenario(tmp_path, network, f"  - {event}\n")


def test_meter_event_needs_the_point_table(tmp_path, network):
    path = tmp_path / "s.yaml"
    path.write_text("events:\n  - {kind: meter, meter: M-1, fault: stopped}\n")
    with pytest.raises(ScenarioError, match="needs the point table"):
        load_scenario(path, network[0], None)


def hour_of(network, sc, seed=4, hours=1, dt=300.0):
    """The meters' reads and the houses' draw (kg) over ``hours`` of ``dt`` steps."""
    model, points = network
    sim = FieldSimulator(model, points, sc, seed=seed)
    reads, drawn = [], np.zeros(model.n_nodes)
    for _ in range(int(hours * 3600 / dt)):
        step = sim.step(dt)
        drawn += step.result.node_demand * dt
        if step.meter_reads:
            reads.append(np.array(list(step.meter_reads.values())))
    return np.array(reads), drawn


def test_meter_faults_are_physically_honest(tmp_path, network):
    model, points = network
    clean_reads, clean_draw = hour_of(network, scenario(tmp_path, network, ""))
    events = ("  - {at: 0, kind: meter, meter: M-1, fault: theft, factor: 0.3}\n"
              "  - {at: 0, kind: meter, meter: M-2, fault: stopped}\n"
              "  - {at: 0, kind: meter, meter: M-3, fault: behind_meter_leak, flow_kg_s: 3.0e-5}\n"
              "  - {at: 0, kind: meter, meter: M-4, fault: usage_change, factor: 2.5}\n")
    reads, draw = hour_of(network, scenario(tmp_path, network, events))
    house = {i: 2 + i for i in range(HOUSES)}
    # theft and a stopped meter: the network delivers the same gas, the meter registers 30 % / nothing
    assert draw[house[1]] == pytest.approx(clean_draw[house[1]], rel=1e-9)
    assert draw[house[2]] == pytest.approx(clean_draw[house[2]], rel=1e-9)
    assert reads[0, 1] == pytest.approx(0.3 * clean_reads[0, 1], rel=1e-9)
    assert reads[0, 2] == 0.0
    # a leak behind the meter and a bigger household: drawn from the network AND metered
    assert draw[house[3]] - clean_draw[house[3]] == pytest.approx(3.0e-5 * 3600, rel=1e-6)
    assert reads[0, 3] - clean_reads[0, 3] == pytest.approx(3.0e-5 * 3600, rel=1e-6)
    assert draw[house[4]] == pytest.approx(2.5 * clean_draw[house[4]], rel=1e-9)
    assert reads[0, 4] == pytest.approx(2.5 * clean_reads[0, 4], rel=1e-9)
    # untouched houses read as before
    assert reads[0, 0] == pytest.approx(clean_reads[0, 0], rel=1e-12)


# -- one scenario through the balance step's hand-off to alerts ------------------------------------
def test_scenario_through_balance_to_alerts(tmp_path, network):
    """Three days at 600 s steps: the balance step closes each hour and lends its reads to the
    detector; a stopped meter and a theft open their alerts, no other meter does, and the flow's
    state leaves without the per-meter reads."""
    model, points = network
    sc = scenario(tmp_path, network, "  - {at: 129600, kind: meter, meter: M-5, fault: stopped}\n"
                                     "  - {at: 129600, kind: meter, meter: M-8, fault: theft, factor: 0.2}\n")
    sim = FieldSimulator(model, points, sc, seed=2)
    balance = BalanceLogic(ZoneBalance(model, points, meter_lateness_s=900), 600.0, None)
    detector = MeterEnd.for_points(model, points, warmup_h=24, min_class=3)
    detect = DetectLogic([detector], AlertBook("street"), None)
    ids = [points.ids[r] for r in balance.balance.meter_rows]
    opened, lent = {}, 0
    dt = 600.0
    for _ in range(int(3 * 86400 / dt)):
        step = sim.step(dt)
        if step.meter_reads:
            end = step.ts_ns + int(dt * 1e9)
            balance.on_item(("meters", readings_batch(ids, np.full(len(ids), end),
                                                      np.array([step.meter_reads[i] for i in ids]), 0, "meters")))
        state = TwinState("street", step.ts_ns + int(dt * 1e9), list(model.nodes.ids), step.result.node_pressure_pa,
                          step.result.node_demand, step.result.unsupplied, [], np.zeros(0), np.zeros(0), [],
                          np.zeros(0), np.zeros(0), np.ones(1), True, 1, 0.0, 0.0)
        (state,), _ = balance.on_item(("state", state))
        lent += METER_HOURS in state.figures
        out, _ = detect.on_item(state)
        for kind, item in out:
            if kind == "alert" and item.status == "open":
                opened.setdefault((item.kind, item.subject), (item.opened_ns - sc.start_ns) / HOUR_NS)
        assert METER_HOURS not in _without_meter_hours(out[0][1]).figures
    assert lent >= 70                                        # one hand-off per closed hour
    assert ("meter_stopped", "M-5") in opened and ("meter_theft", "M-8") in opened
    assert {subject for _kind, subject in opened} <= {"M-5", "M-8"}, opened
    assert opened[("meter_stopped", "M-5")] - 36 <= 8        # six zero hours + the meters' lateness


def test_bytewax_flow_carries_meter_hours_to_the_detector(network):
    """The real flow under bytewax: a pressure point every minute and the meters' hourly reads;
    the balance step lends each closed hour to ``MeterEnd``, a meter reading zero opens its alert,
    and no state leaves the flow with the per-meter reads on it."""
    from bytewax.testing import TestingSink, TestingSource, run_main

    from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow

    model, points = network
    meter_rows = [i for i, p in enumerate(points.protocol) if p == "meter"]
    ids = [points.ids[r] for r in meter_rows]
    per_hour = model.base_demand()[points.element_index[meter_rows]] * 3600.0
    t0 = 1_768_435_200 * 10**9                       # 2026-01-15 00:00 UTC
    rng = np.random.default_rng(1)
    batches = []
    for minute in range(1, 3 * 60 + 10):
        ts = t0 + minute * 60 * 10**9
        batches.append(readings_batch(["PT-street"], np.array([ts]), np.array([101325.0 + 2000.0]), 0, "scada"))
        if minute % 60 == 0:
            reads = per_hour * rng.lognormal(0.0, 0.05, len(ids))
            reads[ids.index("M-5")] = 0.0
            batches.append(readings_batch(ids, np.full(len(ids), ts), reads, 0, "meters"))
    latest = t0 + (3 * 60 + 9) * 60 * 10**9
    states, alerts = [], []
    detectors = lambda: [MeterEnd.for_points(model, points, warmup_h=0, stopped_hours=2, min_class=3)]  # noqa: E731
    flow = build_flow(TestingSource(batches), model, points, FlowSinks(states=[TestingSink(states)],
                                                                       alerts=[TestingSink(alerts)]),
                      lambda: latest, detectors,
                      FlowConfig("street", tick_s=60.0, lateness_s=1.0, max_age_s=120.0, meter_lateness_s=60.0))
    run_main(flow)
    assert states and all(METER_HOURS not in s.figures for s in states)
    assert max(s.figures.get("balance_meters_reporting", 0) for s in states) == HOUSES
    opened = {(a.kind, a.subject) for a in alerts if a.status == "open"}
    assert ("meter_stopped", "M-5") in opened and {subject for _kind, subject in opened} == {"M-5"}, opened


@pytest.mark.slow
def test_bench_prints_its_figures(capsys):
    """``pipetwin bench meters`` on a short run: every case and the false-alarm rate come out as
    key=value lines, and a stopped meter is found."""
    from pipetwin.bench.meters import main

    assert main(["--days", "3.5", "--step-s", "900", "--per-case", "2", "--runs", "1", "--no-scale"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines() if "=" in line)
    for case in ("leak", "change", "theft", "stopped", "leak_preexisting"):
        assert f"{case}_detected" in lines and f"{case}_delay_h_median" in lines
    assert lines["stopped_detected"] == "2/2"
    assert float(lines["false_alarms_per_1000_meter_days"]) < 1.0
