"""The recorded day a study replays, as one Parquet file of readings the replay source reads.

Three origins, one output (``history/readings.parquet`` under the study's output folder):

- ``simulate``: the bundled field simulator run for ``seconds`` at ``step_s`` (its SCADA points
  only), so the examples need no other input;
- ``historian``: the accepted readings of one UTC day of a Parquet historian (what a live run
  recorded);
- ``readings``: a benchmark-style ``readings.parquet`` used where it lies (no copy).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import READING_SCHEMA, readings_batch
from pipetwin.flows.studies.study import SIMULATION_START, HistorySpec, StudyError
from pipetwin.twin.model import NetworkModel


def simulate_readings(model: NetworkModel, points: PointTable, seconds: float, step_s: float, seed: int,
                      start: datetime) -> pa.Table:
    """The field simulator's SCADA readings (Reading schema) every ``step_s`` for ``seconds`` from
    ``start``. The simulator's demand profile runs from midnight of ``SIMULATION_START``, so a
    later start begins at that hour of the profile (06:00: the morning peak)."""
    from pipetwin.connectors.simulator import FieldSimulator, Scenario

    sim = FieldSimulator(model, points, Scenario(SIMULATION_START), seed=seed)
    sim.time_s = (start - SIMULATION_START).total_seconds()
    rows = sim.scada_rows
    ids = [points.ids[r] for r in rows]
    batches = []
    for _ in range(int(round(seconds / step_s))):
        try:
            step = sim.step(step_s)
        except np.linalg.LinAlgError:
            # a warm-started solve can meet a non-positive-definite chord step (a solver issue seen
            # on synthetic grids); the same step from a cold start solves
            sim.last = None
            step = sim.step(step_s)
        batches.append(readings_batch(ids, np.full(len(rows), step.ts_ns), step.scada[rows], 0, "simulator"))
    return pa.Table.from_batches(batches, schema=READING_SCHEMA)


def historian_readings(spec: HistorySpec, network: str) -> pa.Table:
    """One UTC day of a historian's accepted readings (Reading schema)."""
    from pipetwin.flows.sinks.historian import read

    start = datetime.combine(spec.day, time(0), tzinfo=timezone.utc)
    table = read(spec.path, "readings", network=spec.network or network, start=start, end=start + timedelta(days=1))
    if table.num_rows == 0:
        raise StudyError(f"{spec.path}: no readings for network {spec.network or network!r} on {spec.day}")
    return table.select(READING_SCHEMA.names).cast(READING_SCHEMA)


def prepare_history(spec: HistorySpec, model: NetworkModel, points: PointTable, out: Path) -> Path:
    """The readings file to replay (written under ``out`` unless it already is one)."""
    if spec.kind == "readings":
        return spec.path
    table = (simulate_readings(model, points, spec.seconds, spec.step_s, spec.seed, spec.start)
             if spec.kind == "simulate" else historian_readings(spec, model.name))
    path = out / "history" / "readings.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
