"""The twin update on a water network (L-TOWN's 33 pressure and 3 flow sensors, BattLeDIM):
the same estimator, through the water solver."""

import re

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.flows.contracts import Tick
from pipetwin.flows.steps.twin import TwinUpdater
from pipetwin.twin.estimate.demand import zone_demand
from pipetwin.twin.io import read_network
from tests.paths import network_file


def test_water_twin_tracks_zone_demand(tmp_path):
    path = network_file("L-TOWN.inp")
    model = read_network(path)
    text = path.read_text()
    pressure = re.findall(r"^\s*(\S+)\s.*PRESSURE SENSOR", text, re.M)
    flow = re.findall(r"^\s*(\S+)\s.*FLOW SENSOR", text, re.M)
    assert (len(pressure), len(flow)) == (33, 3)
    table = tmp_path / "ltown.csv"
    table.write_text("id,protocol,address,element,quantity,unit,reference\n"
                     + "".join(f"P-{n},opcua,ns=2;s=P-{n},{n},pressure,kPa,gauge\n" for n in pressure)
                     + "".join(f"F-{k},opcua,ns=2;s=F-{k},{k},flow,m3/h,\n" for k in flow))
    points = load_points(table, model)
    twin = TwinUpdater(model, points, n_zones=3)
    truth = np.array([1.15, 0.9, 1.0])
    field = twin.solver.solve(zone_demand(twin.prior, twin.zones, truth, None))
    values = np.full(len(points), np.nan)
    for r in range(len(points)):
        e = points.element_index[r]
        values[r] = field.node_pressure_pa[e] if points.quantity[r] == "pressure" else field.link_flow[e]
    for k in range(6):            # the flow fits tick after tick, each warm-started from the last
        tick = Tick("L-TOWN", 10**18 + k, values, np.zeros(len(points), np.int8), np.full(len(points), 10**18))
        state = twin.update(tick)
    assert state.converged
    assert np.allclose(state.zone_multipliers, truth, atol=0.02)
    assert np.nanmax(np.abs(state.residual[:33])) < 50.0          # Pa: 5 mm of head
