"""Supply pressure below the minimum service pressure (or above the maximum operating pressure)
anywhere in the twin: what a dispatcher must act on first."""

from __future__ import annotations

import numpy as np

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector


class PressureLimit(TickDetector):
    """One finding per violated limit, naming the worst node and how many nodes are affected.
    Unsupplied nodes are reported apart (they have no pressure to compare)."""

    def __init__(self, min_pa: float, max_pa: float = np.inf, critical_below_pa: float | None = None):
        self.min_pa, self.max_pa = min_pa, max_pa
        self.critical_below_pa = critical_below_pa

    def score_one(self, state: TwinState) -> list[Finding]:
        out = []
        supplied = ~state.unsupplied
        p = np.where(supplied, state.node_pressure_pa, np.nan)
        low = supplied & (p < self.min_pa)
        if low.any():
            i = int(np.nanargmin(np.where(low, p, np.nan)))
            critical = self.critical_below_pa is not None and p[i] < self.critical_below_pa
            out.append(Finding("pressure_limit", state.node_ids[i], "critical" if critical else "major",
                               float((self.min_pa - p[i]) / self.min_pa),
                               f"{int(low.sum())} node(s) below {self.min_pa:,.0f} Pa; lowest {p[i]:,.0f} Pa at "
                               f"{state.node_ids[i]}", {"nodes_below": int(low.sum()), "min_pressure_pa": float(p[i])}))
        high = supplied & (p > self.max_pa)
        if high.any():
            i = int(np.nanargmax(np.where(high, p, np.nan)))
            out.append(Finding("pressure_limit", state.node_ids[i], "major", float((p[i] - self.max_pa) / self.max_pa),
                               f"{int(high.sum())} node(s) above {self.max_pa:,.0f} Pa; highest {p[i]:,.0f} Pa",
                               {"nodes_above": int(high.sum()), "max_pressure_pa": float(p[i])}))
        if state.unsupplied.any():
            n = int(state.unsupplied.sum())
            first = state.node_ids[int(np.flatnonzero(state.unsupplied)[0])]
            out.append(Finding("supply", first, "critical", float(n), f"{n} node(s) cut off from every source",
                               {"unsupplied_nodes": n}))
        return out
