"""Validate: the data-quality gate as a bytewax stateful step. Its state (per-point last values,
stuck counters) is what a recovery snapshot keeps, so a restarted flow judges the next reading
exactly as an uninterrupted one would."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
from bytewax.operators import StatefulLogic

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.quality import QualityGate

ACCEPTED = "accepted"
QUARANTINED = "quarantined"


class GateLogic(StatefulLogic):
    """Reading batch in; ("accepted", batch) and ("quarantined", batch) out (empty ones skipped)."""

    def __init__(self, points: PointTable, clock: Callable[[], int], resume: dict | None, **options):
        self.gate = QualityGate(points, clock=clock, **options)
        if resume is not None:
            self.gate.restore(resume)

    def on_item(self, batch: pa.RecordBatch):
        result = self.gate.process(batch)
        out = []
        if result.accepted.num_rows:
            out.append((ACCEPTED, result.accepted))
        if result.quarantined.num_rows:
            out.append((QUARANTINED, result.quarantined))
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return self.gate.snapshot()
