"""Zone balance: inflow integrated at the gate, meters folded in by interval, UFG when the hour
closes; a silent meter is covered by the twin's estimate of that house."""

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import readings_batch
from pipetwin.data import example
from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.balance import UnaccountedGas
from pipetwin.flows.steps.balance import HOUR_NS, ZoneBalance, gate_flow_rows
from pipetwin.twin.io import read_network


@pytest.fixture(scope="module")
def network():
    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


def state(model, points, balance, ts_ns, inflow_kg_s, house_kg_s):
    ids = balance.gate_ids
    measured = np.array([inflow_kg_s / len(ids) * s for s in balance.gate_signs])
    demand = np.zeros(model.n_nodes)
    demand[balance.meter_nodes] = house_kg_s
    return TwinState("schutterwald", ts_ns, list(model.nodes.ids), np.full(model.n_nodes, 2e5), demand,
                     np.zeros(model.n_nodes, bool), [], np.zeros(0), np.zeros(0), ids, measured, measured.copy(),
                     np.ones(1), True, 1, 0.0, 0.0)


def test_gate_meters_found(network):
    model, points = network
    rows, signs = gate_flow_rows(model, points)
    assert len(rows) >= 1 and set(np.abs(signs)) == {1.0}


def test_hourly_ufg(network):
    model, points = network
    bal = ZoneBalance(model, points, meter_lateness_s=600)
    n = len(bal.meter_rows)
    inflow, house = 0.1, 0.09 / n                    # 10 % of the gas is not consumed by houses
    t0 = 10 * HOUR_NS
    for k in range(1, 361):                          # one hour of 10 s ticks
        bal.add_state(state(model, points, bal, t0 + k * 10_000_000_000, inflow, house), 10.0)
    metered = np.full(n, house * 3600)
    ids = [points.ids[r] for r in bal.meter_rows]
    silent = ids[0]                                   # one meter never reports: the twin covers it
    bal.add_meters(readings_batch(ids[1:], np.full(n - 1, t0 + HOUR_NS), metered[1:], 0, "meters"))
    assert bal.close(t0 + HOUR_NS + 300 * 10**9) is None         # the meters' lateness has not passed
    figures = bal.close(t0 + HOUR_NS + 601 * 10**9)
    assert figures["balance_meters_reporting"] == n - 1 and silent
    assert figures["balance_inflow_kg"] == pytest.approx(360.0, rel=1e-9)
    assert figures["balance_metered_kg"] + figures["balance_estimated_unmetered_kg"] == pytest.approx(324.0, rel=1e-9)
    assert figures["ufg_pct"] == pytest.approx(10.0, rel=1e-6)
    s = state(model, points, bal, t0 + 2 * HOUR_NS, inflow, house)
    s.figures.update(figures)
    findings = UnaccountedGas(pct=5.0).score_one(s)
    assert len(findings) == 1 and findings[0].kind == "balance" and findings[0].severity == "warning"


def test_ufg_per_zone_points_at_the_zone_that_took_more_than_its_meters(network):
    """The twin says zone 2 took 20 % more than its houses' meters read (a leak it had to explain
    there); the other zones balance. The zones' UFG sums to the network's."""
    from pipetwin.twin.estimate.demand import make_zones

    model, points = network
    zones = make_zones(model, 4)
    bal = ZoneBalance(model, points, meter_lateness_s=600, zones=zones)
    n = len(bal.meter_rows)
    house = 0.09 / n
    leak_zone_meters = bal.meter_zones == 2
    t0 = 10 * HOUR_NS
    for k in range(1, 361):
        s = state(model, points, bal, t0 + k * 10_000_000_000, 0.0, house)
        s.node_demand[bal.meter_nodes[leak_zone_meters]] *= 1.2       # the twin's estimate in zone 2
        s.sensor_measured[:] = np.nan                                 # no gate figure needed here
        bal.add_state(s, 10.0)
    ids = [points.ids[r] for r in bal.meter_rows]
    bal.add_meters(readings_batch(ids, np.full(n, t0 + HOUR_NS), np.full(n, house * 3600), 0, "meters"))
    figures = bal.close(t0 + HOUR_NS + 601 * 10**9)
    ufg = np.array(figures["zone_ufg_kg"])
    expected_2 = 0.2 * house * 3600 * leak_zone_meters.sum()
    assert ufg[2] == pytest.approx(expected_2, rel=1e-6) and expected_2 > 1.0
    assert np.abs(np.delete(ufg, 2)).max() < 1e-6 * expected_2
    assert figures["zone_ufg_pct"][2] == pytest.approx(100 * 0.2 / 1.2, rel=1e-6)
