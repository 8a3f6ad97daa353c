"""Field simulator: deterministic, physically consistent, faults and events as the scenario says."""

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.connectors.simulator import FieldSimulator, ScenarioError, load_scenario
from pipetwin.data import example
from pipetwin.twin.io import read_network
from pipetwin.twin.model import NodeKind


@pytest.fixture(scope="module")
def network():
    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


def scenario(tmp_path, model, points, text):
    path = tmp_path / "scenario.yaml"
    path.write_text("start: 2026-01-15T06:00:00Z\nevents:\n" + text)
    return load_scenario(path, model, points)


def test_same_seed_same_readings(network):
    model, points = network
    a = FieldSimulator(model, points, seed=3)
    b = FieldSimulator(model, points, seed=3)
    for _ in range(5):
        sa, sb = a.step(), b.step()
    assert np.array_equal(sa.scada, sb.scada, equal_nan=True)
    c = FieldSimulator(model, points, seed=4)
    for _ in range(5):
        sc = c.step()
    assert not np.array_equal(sa.scada, sc.scada, equal_nan=True)


def test_leak_is_supplied_by_the_gate_and_lowers_pressure(tmp_path, network):
    model, points = network
    node = "K1030"
    sc = scenario(tmp_path, model, points, f"  - {{at: 10, kind: leak, node: {node}, flow_kg_s: 0.01}}\n")
    sim = FieldSimulator(model, points, sc, seed=1, demand_noise=0.0)
    before = [sim.step() for _ in range(10)][-1]
    after = sim.step()
    assert after.leak_kg_s == pytest.approx(0.01)
    source = model.nodes.kind == NodeKind.SOURCE
    inflow = -after.result.node_demand[source].sum()
    customers = after.result.node_demand[~source].sum()
    assert inflow == pytest.approx(customers, rel=1e-7)              # the leak is in the balance
    i = model.node_index()[node]
    assert after.result.node_pressure_pa[i] < before.result.node_pressure_pa[i] - 50


def test_valve_closure_starves_meters_downstream(tmp_path, network):
    model, points = network
    # a pipe into a house: closing it cuts that house off
    meter = next(p for p, proto in zip(points.ids, points.protocol) if proto == "meter")
    house = points.element[points.index()[meter]]
    k = int(np.flatnonzero(model.links.to_node == model.node_index()[house])[0])
    sc = scenario(tmp_path, model, points, f"  - {{at: 0, kind: valve_close, link: {model.links.ids[k]}}}\n")
    sim = FieldSimulator(model, points, sc, seed=1)
    sim.meter_period_s = sim._next_meter_s = 10.0
    steps = [sim.step() for _ in range(10)]
    reads = steps[-1].meter_reads
    assert steps[-1].result.unsupplied[model.node_index()[house]]
    assert reads[meter] == 0.0
    assert sum(reads.values()) > 0


def test_meter_volumes_integrate_customer_demand(network):
    model, points = network
    sim = FieldSimulator(model, points, seed=2, demand_noise=0.0)
    sim.meter_period_s = sim._next_meter_s = 60.0
    total = 0.0
    for _ in range(60):
        st = sim.step()
        total += st.result.node_demand[model.nodes.kind == NodeKind.CONSUMER].sum()
    assert st.meter_reads is not None and len(st.meter_reads) == 1506
    assert sum(st.meter_reads.values()) == pytest.approx(total, rel=1e-9)


def test_sensor_faults(tmp_path, network):
    model, points = network
    sc = scenario(tmp_path, model, points,
                  "  - {at: 5, kind: sensor, point: PT-001, fault: stuck, duration_s: 10}\n"
                  "  - {at: 5, kind: sensor, point: PT-003, fault: drift, rate_per_h: 36000}\n"
                  "  - {at: 5, kind: sensor, point: PT-005, fault: dropout, duration_s: 3}\n"
                  "  - {at: 5, kind: sensor, point: PT-007, fault: noisy, sigma: 2000}\n"
                  "  - {at: 8, kind: outage, server: modbus, duration_s: 2}\n")
    sim = FieldSimulator(model, points, sc, seed=5)
    steps = [sim.step() for _ in range(20)]
    idx = points.index()
    stuck = [s.scada[idx["PT-001"]] for s in steps[5:15]]
    assert len(set(stuck)) == 1 and steps[15].scada[idx["PT-001"]] != stuck[0]
    drift = np.array([s.scada[idx["PT-003"]] - s.true_scada[idx["PT-003"]] for s in steps[5:20]])
    assert drift[-1] == pytest.approx(140.0, abs=100.0)                # 10 Pa/s for 14 s, plus noise
    assert all(np.isnan(s.scada[idx["PT-005"]]) for s in steps[5:8])
    assert not np.isnan(steps[8].scada[idx["PT-005"]])
    noisy = np.std([s.scada[idx["PT-007"]] - s.true_scada[idx["PT-007"]] for s in steps[5:20]])
    assert noisy > 500
    assert [s.outages for s in steps[7:11]] == [(), ("modbus",), ("modbus",), ()]


@pytest.mark.parametrize("event,fragment", [
    ("{at: 1, kind: leak, node: NOPE, flow_kg_s: 0.1}", "leak node 'NOPE'"),
    ("{at: 1, kind: leak, node: K1030, flow_kg_s: -1}", "flow_kg_s must be > 0"),
    ("{at: 1, kind: sensor, point: PT-001, fault: melted}", "sensor fault"),
    ("{at: 1, kind: sensor, point: XX, fault: stuck}", "point 'XX'"),
    ("{at: 1, kind: earthquake}", "kind must be one of"),
    ("{at: soon, kind: outage, server: opcua, duration_s: 5}", "'at' 'soon'"),
    ("{at: 1, kind: regulator_fail, link: pipe_K1027_K1056_1, mode: open}", "not a regulator"),
])
def test_scenario_errors_name_the_event(tmp_path, network, event, fragment):
    model, points = network
    with pytest.raises(ScenarioError, match="event 1") as err:
        scenario(tmp_path, model, points, f"  - {event}\n")
    assert fragment in str(err.value)
