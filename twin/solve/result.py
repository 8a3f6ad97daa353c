"""What every solver returns: arrays aligned to the model's node and link order, plus convergence
figures. Failure to converge is reported here, not raised (as WNTR's NewtonSolver does)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class SolveResult:
    converged: bool
    iterations: int
    residual: float                 # max |nodal mass/volume balance error|, kg/s (gas) or m3/s (water)
    message: str
    node_pressure_pa: np.ndarray    # gas: absolute Pa; water: gauge Pa (head above elevation x 9806.65)
    node_head_m: np.ndarray         # water: hydraulic head; gas: NaN
    link_flow: np.ndarray           # gas: kg/s; water: m3/s; positive from -> to
    link_velocity_m_s: np.ndarray
    link_status: np.ndarray         # int8 LinkStatus as solved (closed / open / active)
    unsupplied: np.ndarray          # bool per node: cut off from every source, pressure set to 0
    node_demand: np.ndarray         # delivered demand per node (emitters and leaks included)
    elapsed_s: float = 0.0
    time_s: float = 0.0             # simulation time this state belongs to (extended period)
    extra: dict = field(default_factory=dict)

    def node_table(self, node_ids) -> pa.Table:
        return pa.table({"id": pa.array(list(node_ids), pa.string()),
                         "pressure_pa": self.node_pressure_pa, "head_m": self.node_head_m,
                         "demand": self.node_demand, "unsupplied": self.unsupplied})

    def link_table(self, link_ids) -> pa.Table:
        return pa.table({"id": pa.array(list(link_ids), pa.string()), "flow": self.link_flow,
                         "velocity_m_s": self.link_velocity_m_s, "status": self.link_status})
