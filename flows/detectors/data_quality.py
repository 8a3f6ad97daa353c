"""A sensor that stopped reporting (nothing good for several ticks): the wall must show where the
twin is flying blind."""

from __future__ import annotations

import numpy as np

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector


class SensorSilent(TickDetector):
    def __init__(self, ticks: int = 10):
        self.ticks = ticks
        self.silent: dict[str, int] = {}

    def learn_one(self, state: TwinState) -> None:
        for pid, v in zip(state.sensor_ids, state.sensor_measured):
            self.silent[pid] = 0 if np.isfinite(v) else self.silent.get(pid, 0) + 1

    def score_one(self, state: TwinState) -> list[Finding]:
        return [Finding("data_quality", pid, "warning", float(n), f"{pid} has not reported for {n} ticks",
                        {"silent_ticks": n}) for pid, n in self.silent.items() if n >= self.ticks]

    def snapshot(self) -> dict:
        return {"silent": dict(self.silent)}

    def restore(self, snap: dict) -> None:
        self.silent = dict(snap["silent"])
