"""A recorded Parquet history replayed through the whole flow, as a module-level factory that
``python -m bytewax.run`` can call. This is how a replay runs as its own process, as a cluster
(``-i/-a``), or with recovery (``-r``)::

    python -m bytewax.recovery RECOVERY 1
    python -m bytewax.run "pipetwin.flows.replay_flow:get_flow('history.parquet', 'historian')" \\
        -r RECOVERY -s 1 -b 0

Only the source and the clock differ from a live run (DESIGN.md): the source is a
``ParquetReplaySource`` (one partition per file, its row offset in the snapshot) and the clock is
event time, the newest timestamp of the history (what "now" was when it was recorded), so a
replay judges every reading the same way however fast, and however often restarted, it runs.

``write_simulated_history`` records the field simulator's SCADA readings to replay: a few
minutes of the bundled network with a sensor dropout (a data-quality alert opens, then clears)
and a couple of invalid rows for the quarantine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from bytewax.dataflow import Dataflow

from pipetwin.connectors.points import load_points
from pipetwin.connectors.reading import readings_batch
from pipetwin.connectors.replay import ParquetReplaySource
from pipetwin.data import example
from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow
from pipetwin.twin.io import read_network

START = datetime(2026, 1, 15, tzinfo=timezone.utc)


def get_flow(history: str | Sequence[str], historian: str, network: str = "schutterwald", *,
             example_network: str = "schutterwald", speed: float = math.inf, batch_rows: int = 4096,
             tick_s: float = 1.0, lateness_s: float = 1.0, max_age_s: float = 5.0, silent_ticks: int = 5,
             min_pa: float | None = None, redis_url: str | None = None, leak_window_s: float = 3600.0,
             leak_warmup_s: float = 86400.0) -> Dataflow:
    """The full flow (gate, align, twin, detect, alerts) over ``history`` (one Parquet file or
    several: one source partition each) into the Parquet historian at ``historian``, keyed as
    ``network``. ``example_network`` names the bundled model and point table. ``speed`` paces the
    replay (``inf``: as fast as it goes; 30: thirty seconds of history per second). With
    ``redis_url`` the states and alerts also go to that Redis, and the network is published there,
    as in a live run (the wall can watch a replay). The leak detector runs as in a live run, on the
    demand-model twin (docs/leaks.md), with ``leak_window_s`` windows after a ``leak_warmup_s``
    baseline (a short replay raises no leak alarm with the production hour and day)."""
    from pipetwin.connectors.simulator import WINTER_PROFILE
    from pipetwin.flows.detectors.data_quality import SensorSilent
    from pipetwin.flows.detectors.leak import LeakDetector
    from pipetwin.flows.detectors.pressure_limit import PressureLimit
    from pipetwin.flows.steps.twin import PriorTwin

    paths = [history] if isinstance(history, (str, Path)) else list(history)
    model = read_network(example(example_network))
    points = load_points(example(example_network) / "points.csv", model)
    if min_pa is None:        # 50 mbar below the lowest source pressure, as `pipetwin run` does
        source_p = model.nodes.fixed_pressure_pa[np.isfinite(model.nodes.fixed_pressure_pa)]
        min_pa = float(source_p.min()) - 5000.0 if len(source_p) else 101325.0
    newest = newest_ts_ns(paths)
    source = ParquetReplaySource(paths, speed=float(speed), batch_rows=batch_rows)
    sinks = FlowSinks(historian=str(historian))
    if redis_url is not None:
        from pipetwin.flows.redis_embedded import connect
        from pipetwin.flows.sinks.redis_sink import RedisSink, write_network

        model.name = network
        write_network(connect(redis_url), model, points)
        sinks = FlowSinks(states=[RedisSink(redis_url)], alerts=[RedisSink(redis_url)], historian=str(historian))
    return build_flow(source, model, points, sinks, lambda: newest,
                      lambda: [PressureLimit(min_pa=min_pa), SensorSilent(ticks=silent_ticks),
                               LeakDetector.for_points(model, points, window_s=leak_window_s, warmup_s=leak_warmup_s,
                                                       prior=PriorTwin(model, points, WINTER_PROFILE))],
                      FlowConfig(network, tick_s=tick_s, lateness_s=lateness_s, max_age_s=max_age_s))


def newest_ts_ns(paths: Sequence[str | Path]) -> int:
    """The newest ``ts`` in the history files, ns since the epoch (the replay's event-time "now")."""
    ts = ds.dataset([str(p) for p in paths], format="parquet").to_table(columns=["ts"])["ts"]
    if len(ts) == 0:
        return 0
    return int(pc.max(pc.cast(ts, pa.int64())).as_py())


def simulated_history(seconds: int = 300, *, example_network: str = "schutterwald", seed: int = 0,
                      dropout: tuple[str, float, float] | None = ("PT-002", 60.0, 60.0),
                      invalid_at_s: float | None = 100.0) -> pa.Table:
    """``seconds`` of the field simulator's SCADA readings (Reading schema, one row per point per
    second). ``dropout`` = (point, at_s, duration_s) silences one sensor (its readings are NaN,
    so bad: the gate quarantines them and the twin sees a silent sensor). At ``invalid_at_s`` two
    invalid rows are added: an unknown point and an out-of-range pressure."""
    from pipetwin.connectors.simulator import Event, FieldSimulator, Scenario

    model = read_network(example(example_network))
    points = load_points(example(example_network) / "points.csv", model)
    events = [] if dropout is None else [Event(float(dropout[1]), "sensor", {
        "point": dropout[0], "fault": "dropout", "duration_s": float(dropout[2])})]
    sim = FieldSimulator(model, points, Scenario(START, events), seed=seed)
    rows = sim.scada_rows
    ids = [points.ids[r] for r in rows]
    batches = []
    for _ in range(int(seconds)):
        step = sim.step(1.0)
        batches.append(readings_batch(ids, np.full(len(rows), step.ts_ns), step.scada[rows], 0, "simulator"))
        if invalid_at_s is not None and step.time_s == float(invalid_at_s):
            batches.append(readings_batch(["NOT-A-POINT", ids[0]], [step.ts_ns + 1] * 2, [1.0, 9e9], 0, "simulator"))
    return pa.Table.from_batches(batches)


def write_simulated_history(path: str | Path, seconds: int = 300, **options) -> pa.Table:
    """``simulated_history(seconds, **options)`` written to ``path`` as Parquet; returns the table."""
    table = simulated_history(seconds, **options)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))
    return table


__all__ = ["get_flow", "newest_ts_ns", "simulated_history", "write_simulated_history"]
