"""Scenario events that need a regulator: it fails open (downstream rises to upstream pressure)
or closed (everything behind it is cut off)."""

import math

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.connectors.simulator import FieldSimulator, load_scenario
from pipetwin.twin.model import (LinkKind, LinkStatus, Medium, NetworkModel, NodeKind, make_demands, make_links,
                                 make_nodes, make_tanks)


def regulated_network() -> NetworkModel:
    """A 4 bar gate feeding a district through a 1.1 bar (absolute) regulator."""
    ids = ["gate", "inlet", "district", "house"]
    nodes = make_nodes(ids, [NodeKind.SOURCE, 0, 0, NodeKind.CONSUMER], x=[0, 1, 2, 3],
                       fixed_pressure_pa=[4e5, math.nan, math.nan, math.nan])
    links = make_links(["main", "REG-1", "street", "service"],
                       [LinkKind.PIPE, LinkKind.PRV, LinkKind.PIPE, LinkKind.PIPE], [0, 1, 2, 2], [1, 2, 3, 3],
                       length_m=[500, 0, 300, 20], diameter_m=[0.1, 0, 0.1, 0.05], roughness=[1e-4] * 4,
                       setting=[math.nan, 1.1e5, math.nan, math.nan], status=[1, LinkStatus.ACTIVE, 1, 1])
    return NetworkModel("regulated", Medium.NATURAL_GAS, nodes, links, make_demands([3], [0.002]), make_tanks())


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_regulator_failure(tmp_path, mode):
    model = regulated_network()
    table = tmp_path / "points.csv"
    table.write_text("id,protocol,address,element,quantity,unit\nPT-district,opcua,ns=2;s=PT,district,pressure,mbar\n")
    points = load_points(table, model)
    path = tmp_path / "s.yaml"
    path.write_text(f"events:\n  - {{at: 3, kind: regulator_fail, link: REG-1, mode: {mode}}}\n")
    sim = FieldSimulator(model, points, load_scenario(path, model, points), seed=0, demand_noise=0.0)
    steps = [sim.step() for _ in range(5)]
    before, after = steps[2].result, steps[4].result
    assert before.node_pressure_pa[2] == pytest.approx(1.1e5, abs=1.0)
    if mode == "open":
        assert after.node_pressure_pa[2] > 3.9e5                      # the district sees gate pressure
        assert not after.unsupplied.any()
    else:
        assert after.unsupplied[[2, 3]].all()
        assert np.isfinite(after.node_pressure_pa).all()
