"""The full (nonlinear) answer of the sensors to a leak of a given size at a given node.

The linear signatures (``signature.py``) rank thousands of candidates at once, but a large leak
moves a network off its linearisation point (head loss grows as flow^1.85: a 6 L/s leak fed by
one pipe can drop the pressures half as much again as the tangent says). For the few best
candidates the twin re-solves the network with the leak, from the state the flow saw, and the
ranking is redone on those exact shifts.

The state's boundary conditions are read from the state itself: water tanks at the head the
twin had, pumps on or off as they ran; gas sources at their fixed pressure.
"""

from __future__ import annotations

import numpy as np

from pipetwin.twin.leaks.signature import FLOW, MIN_FLOW, PRESSURE
from pipetwin.twin.model import PA_PER_M_WATER, LinkKind, LinkStatus, NetworkModel


class LeakResponder:
    """Holds the prepared solver for one model; ``shifts`` is a pure function of its arguments."""

    def __init__(self, model: NetworkModel):
        self.model = model
        if model.is_gas:
            from pipetwin.twin.solve.gas import GasSolver

            self.gas = GasSolver(model)
        else:
            from pipetwin.twin.solve.water import prepare

            self.net = prepare(model)

    def _solve(self, demand, tank_head, status, warm):
        if self.model.is_gas:
            return self.gas.solve(demand, warm_start=warm)
        from pipetwin.twin.solve.water import solve_water

        return solve_water(self.model, 0.0, demand=demand, tank_head=tank_head, status=status, warm_start=warm,
                           options={"controls": False}, prepared=self.net)

    def shifts(self, node_pressure_pa: np.ndarray, link_flow: np.ndarray, demand: np.ndarray, kind: np.ndarray,
               element: np.ndarray, nodes: np.ndarray, flows: np.ndarray) -> np.ndarray:
        """Sensor shifts (sensors x len(nodes)) of a leak of ``flows[i]`` at ``nodes[i]``, against
        the same state without a leak."""
        model = self.model
        tank_head = status = None
        if not model.is_gas:
            tn = model.tanks.node.astype(np.int64)
            tank_head = np.asarray(node_pressure_pa)[tn] / PA_PER_M_WATER + model.nodes.elevation_m[tn]
            status = model.links.status.copy()
            pumps = np.flatnonzero(model.links.kind == LinkKind.PUMP)
            status[pumps] = np.where(np.abs(np.asarray(link_flow)[pumps]) > MIN_FLOW, LinkStatus.OPEN,
                                     LinkStatus.CLOSED)
        base = self._solve(demand, tank_head, status, None)

        def observe(r):
            return np.where(kind == PRESSURE, r.node_pressure_pa[np.where(kind == PRESSURE, element, 0)],
                            r.link_flow[np.where(kind == FLOW, element, 0)])

        y0 = observe(base)
        out = np.zeros((len(kind), len(nodes)))
        for i, (n, q) in enumerate(zip(nodes, flows)):
            d = np.array(demand, float)
            d[n] += q
            out[:, i] = observe(self._solve(d, tank_head, status, base)) - y0
        return out
