"""The dataflow, top to bottom in DESIGN.md's order: validate (quality gate; bad readings to the
quarantine), align to ticks, update the twin (state estimation), detect, alert, sinks.

One definition serves live runs, replays and what-if studies: only the source and the clock
differ. Every stateful step is keyed by network, so the same flow runs as several bytewax
processes (one network, or one zone, per key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import bytewax.operators as op
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from pipetwin.connectors.points import PointTable
from pipetwin.flows.alerts import AlertBook, DetectLogic
from pipetwin.flows.detectors.base import TickDetector
from pipetwin.flows.steps.align import AlignLogic, TickAligner
from pipetwin.flows.steps.balance import METER_HOURS, BalanceLogic, ZoneBalance
from pipetwin.flows.steps.gate import ACCEPTED, QUARANTINED, GateLogic
from pipetwin.flows.steps.twin import TwinLogic, TwinUpdater
from pipetwin.twin.estimate.demand import make_zones
from pipetwin.twin.model import NetworkModel


@dataclass
class FlowSinks:
    """Where each stream goes. A stream with no sink is simply not wired (nothing is dropped
    on the way: every reading is either accepted or quarantined, and counted)."""

    readings: Sink | None = None      # accepted Reading batches
    quarantine: Sink | None = None    # quarantined batches with reasons
    states: list[Sink] = field(default_factory=list)   # TwinState (e.g. Redis)
    alerts: list[Sink] = field(default_factory=list)   # Alert revisions (e.g. Redis)
    historian: str | None = None      # a folder: readings, quarantine, states, ticks and alerts as Parquet


@dataclass
class FlowConfig:
    network: str
    tick_s: float = 1.0
    # a tick closes once readings 0.3 s past its end have arrived (align.py: late data policy): enough for
    # sources that deliver within ~0.2 s (OPC-UA sampling + publishing at 100 ms, Modbus polls in flight
    # concurrently). Raise it above the slowest source's delivery delay (OPC-UA publishing at 1 s: >= 1.5 s).
    lateness_s: float = 0.3
    # ... or sooner: once every source that delivered in the tick before is done with it (past its end plus
    # this margin, or its next poll due past it; align.py: early close; None: always wait the whole lateness);
    # then the state is in Redis ~0.3 s after its tick (p50, p99 < 0.5 s; pipetwin bench flow, 10,000 points)
    early_margin_s: float | None = 0.1
    max_age_s: float = 60.0                      # a point's last value holds this long (report by exception)
    meter_lateness_s: float = 900.0              # an hour's balance closes this long after the hour
    # several networks (or zones) in one flow: which one a batch belongs to; None: all are ``network``
    network_of: Callable[[pa.RecordBatch], str] | None = None
    historian_parts: int = 1                     # historian sink partitions (spread across workers)
    historian_options: dict = field(default_factory=dict)   # HistorianSink options (background, carry_rows, ...)
    n_zones: int = 4
    gate: dict = field(default_factory=dict)     # QualityGate options


def build_flow(source: Source | list[Source], model: NetworkModel, points: PointTable, sinks: FlowSinks,
               clock: Callable[[], int], detectors: Callable[[], list[TickDetector]],
               config: FlowConfig) -> Dataflow:
    """``source`` (one, or several merged) yields Reading record batches; ``clock`` returns "now"
    in ns (wall clock live, event time for replays); ``detectors`` builds fresh detector objects
    (one set per key)."""
    network = config.network
    zones = make_zones(model, config.n_zones)      # one zoning for the twin's multipliers and the balance
    flow = Dataflow("pipetwin")
    sources = source if isinstance(source, list) else [source]
    # RecordBatch in the Reading schema
    inputs = [op.input(f"readings_{i}" if i else "readings", flow, s) for i, s in enumerate(sources)]
    batches = inputs[0] if len(inputs) == 1 else op.merge("all_readings", *inputs)
    # (network, RecordBatch)
    keyed = op.key_on("by_network", batches, config.network_of or (lambda _batch: network))
    # (network, ("accepted" | "quarantined", RecordBatch))
    gated = op.stateful("gate", keyed, lambda resume: GateLogic(points, clock, resume, **config.gate))
    split = op.branch("accepted_or_not", gated, lambda kv: kv[1][0] == ACCEPTED)
    accepted = op.map_value("accepted_batch", split.trues, lambda tagged: tagged[1])
    quarantined = op.map_value("quarantined_batch", split.falses, lambda tagged: tagged[1])
    if sinks.readings is not None:
        op.output("historian_readings", op.key_rm("accepted_unkeyed", accepted), sinks.readings)
    if sinks.quarantine is not None:
        op.output("quarantine", op.key_rm("quarantined_unkeyed", quarantined), sinks.quarantine)
    # (network, Tick)
    ticks = op.stateful("align", accepted, lambda resume: AlignLogic(
        TickAligner(points, network, config.tick_s, config.lateness_s, config.max_age_s, config.early_margin_s), resume,
        config.network_of))
    # (network, TwinState)
    states = op.stateful("twin", ticks, lambda resume: TwinLogic(
        TwinUpdater(model, points, zones=zones), resume))
    # (network, RecordBatch) of the meters' interval reads only
    meter_ids = pa.array([p for p, proto in zip(points.ids, points.protocol) if proto == "meter"], pa.string())
    meters = op.filter_map_value("meter_reads", accepted, lambda b: _only(b, meter_ids))
    # (network, TwinState) carrying the last closed hour's zone balance
    tagged = op.merge("states_and_meters", op.map_value("tag_state", states, lambda st: ("state", st)),
                      op.map_value("tag_meters", meters, lambda b: ("meters", b)))
    balanced = op.stateful("balance", tagged, lambda resume: BalanceLogic(
        ZoneBalance(model, points, meter_lateness_s=config.meter_lateness_s, zones=zones),
        config.tick_s, resume))
    # (network, ("state", TwinState) | ("alert", Alert))
    detected = op.stateful("detect", balanced, lambda resume: DetectLogic(detectors(), AlertBook(network), resume))
    split_out = op.branch("state_or_alert", detected, lambda kv: kv[1][0] == "state")
    # (network, TwinState) and (network, Alert)
    keyed_states = op.map_value("state", split_out.trues, lambda tagged: _without_meter_hours(tagged[1]))
    keyed_alerts = op.map_value("alert", split_out.falses, lambda tagged: tagged[1])
    state_stream = op.key_rm("states_unkeyed", keyed_states)
    alert_stream = op.key_rm("alerts_unkeyed", keyed_alerts)
    for i, sink in enumerate(sinks.states):
        op.output(f"states_{i}", state_stream, sink)
    for i, sink in enumerate(sinks.alerts):
        op.output(f"alerts_{i}", alert_stream, sink)
    if sinks.historian is not None:
        from pipetwin.flows.sinks.historian import HistorianSink, historian_output

        hist = {"parts": config.historian_parts, **config.historian_options}
        historian_output("historian_readings_out", accepted, HistorianSink(sinks.historian, "readings", **hist))
        historian_output("historian_quarantine_out", quarantined, HistorianSink(sinks.historian, "quarantine", **hist))
        historian_output("historian_states_out", keyed_states, HistorianSink(sinks.historian, "states", **hist))
        historian_output("historian_alerts_out", keyed_alerts, HistorianSink(sinks.historian, "alerts", **hist))
    return flow


def _without_meter_hours(state):
    """The twin state minus the closed hours' per-meter reads the balance step lent the detectors
    (a million floats an hour are for the meter-end checks, not for Redis or the historian)."""
    state.figures.pop(METER_HOURS, None)
    return state


def _only(batch: pa.RecordBatch, ids: pa.Array) -> pa.RecordBatch | None:
    """The rows of ``batch`` whose point is in ``ids`` (None when there are none)."""
    if len(ids) == 0:
        return None
    keep = batch.filter(pc.is_in(batch.column("point"), value_set=ids))
    return keep if keep.num_rows else None
