"""The baseline replay: the history through the product's own flow (``build_flow``: quality gate,
ticks, state estimation, detectors, historian), once per study.

What a study takes from it is the demand the twin estimated at every tick (``TwinState
.node_demand``): the recorded day's consumption, fitted to what the sensors saw. Variants then
re-solve those demands on their changed networks (``variant.py``). The historian the replay
writes (``OUT/historian``) is the baseline's full record, readable as any live day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from pipetwin.connectors.points import PointTable
from pipetwin.flows.contracts import TwinState
from pipetwin.flows.studies.study import customers_of
from pipetwin.twin.model import NetworkModel


@dataclass
class BaselineReplay:
    ts_ns: np.ndarray          # int64, tick ends
    demand: np.ndarray         # (ticks, nodes) estimated demand, kg/s
    converged: np.ndarray      # bool per tick: the state estimation's solve converged
    chi2: np.ndarray           # per tick, the fit to the sensors
    min_customer_pa: np.ndarray  # per tick, the twin's lowest supplied customer pressure (NaN: none)
    seconds: float             # wall time of the replay


class _Collect(StatelessSinkPartition):
    def __init__(self, into: list):
        self.into = into

    def write_batch(self, items: list[TwinState]) -> None:
        self.into.extend(items)


class StateCollector(DynamicSink):
    """Keeps every TwinState in a list (one process, in memory: a study's day is small)."""

    def __init__(self) -> None:
        self.states: list[TwinState] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Collect:
        return _Collect(self.states)


def replay_baseline(readings: Path, model: NetworkModel, points: PointTable, historian: Path, *, tick_s: float,
                    n_zones: int, max_age_s: float) -> BaselineReplay:
    """Replay ``readings`` through the flow (event-time clock, as fast as it goes)."""
    import time

    from bytewax.testing import run_main

    from pipetwin.connectors.replay import ParquetReplaySource
    from pipetwin.flows.detectors.pressure_limit import PressureLimit
    from pipetwin.flows.flow import FlowConfig, FlowSinks, build_flow
    from pipetwin.flows.replay_flow import newest_ts_ns

    t0 = time.perf_counter()
    newest = newest_ts_ns([readings])
    collector = StateCollector()
    source_p = model.nodes.fixed_pressure_pa[np.isfinite(model.nodes.fixed_pressure_pa)]
    min_pa = float(source_p.min()) - 5000.0 if len(source_p) else 101325.0
    flow = build_flow(ParquetReplaySource([readings], speed=math.inf), model, points,
                      FlowSinks(states=[collector], historian=str(historian)), lambda: newest,
                      lambda: [PressureLimit(min_pa=min_pa)],
                      FlowConfig(model.name, tick_s=tick_s, lateness_s=1.0, max_age_s=max_age_s, n_zones=n_zones))
    run_main(flow)
    states = sorted(collector.states, key=lambda s: s.ts_ns)
    if not states:
        raise ValueError(f"{readings}: the replay produced no ticks (no usable readings for this network)")
    customers = customers_of(model)
    lowest = [np.min(s.node_pressure_pa[customers & ~s.unsupplied], initial=np.inf) for s in states]
    return BaselineReplay(ts_ns=np.array([s.ts_ns for s in states], np.int64),
                          demand=np.vstack([np.asarray(s.node_demand, float) for s in states]),
                          converged=np.array([s.converged for s in states]),
                          chi2=np.array([s.chi2 for s in states]),
                          min_customer_pa=np.where(np.isinf(lowest), np.nan, lowest), seconds=time.perf_counter() - t0)
