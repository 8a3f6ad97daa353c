"""A sensor that disagrees with the fitted physics: |measured - estimated| beyond k sigma for
several ticks in a row. More telling than a raw spike, because the twin has already explained
what demand and network state can explain."""

from __future__ import annotations

import numpy as np

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector


class SensorResidual(TickDetector):
    def __init__(self, sigma_pa: float = 50.0, k: float = 6.0, persistence: int = 5, flow_rel: float = 0.05):
        self.sigma_pa, self.k, self.persistence, self.flow_rel = sigma_pa, k, persistence, flow_rel
        self.run: dict[str, int] = {}

    def _limit(self, state: TwinState) -> np.ndarray:
        is_pressure = np.abs(state.sensor_estimated) > 1e3      # pressures are Pa (>1e3); flows kg/s
        return np.where(is_pressure, self.k * self.sigma_pa,
                        np.maximum(self.flow_rel * np.abs(state.sensor_estimated), 1e-4))

    def learn_one(self, state: TwinState) -> None:
        r = np.abs(state.residual)
        over = np.isfinite(r) & (r > self._limit(state))
        for pid, o in zip(state.sensor_ids, over):
            self.run[pid] = self.run.get(pid, 0) + 1 if o else 0

    def score_one(self, state: TwinState) -> list[Finding]:
        out = []
        limit = self._limit(state)
        for i, pid in enumerate(state.sensor_ids):
            if self.run.get(pid, 0) >= self.persistence:
                r = float(state.residual[i])
                out.append(Finding("anomaly", pid, "warning", abs(r) / limit[i],
                                   f"{pid} disagrees with the twin by {r:,.3g} for {self.run[pid]} ticks",
                                   {"residual": r, "measured": float(state.sensor_measured[i]),
                                    "estimated": float(state.sensor_estimated[i]), "ticks": self.run[pid],
                                    "model": "residual k-sigma"}))
        return out

    def snapshot(self) -> dict:
        return {"run": dict(self.run)}

    def restore(self, snap: dict) -> None:
        self.run = dict(snap["run"])
