"""The field simulator's physics and measurements: a "real" network that changes over time.

Each step it sets consumer demands from a daily profile with per-customer noise, applies the
scenario's events (leaks, valve closures, regulators failing, sensor faults, meter-end faults),
solves the network, and reads every SCADA point the way a field instrument would (true value +
noise + its fault) and every smart meter the way a head-end would (the volume through the meter
over each interval, as much of it as the meter registers).
It does no I/O: ``connectors/simulator_run.py`` serves these values from real OPC-UA and Modbus
servers and writes the meter files.

Scenario file (YAML), times in seconds from the start (or ISO timestamps)::

    start: 2026-01-15T00:00:00Z
    events:
      - {at: 3600, kind: leak, node: K1030, flow_kg_s: 0.002, ramp_s: 600}
      - {at: 7200, kind: valve_close, link: pipe_K1027_K1056_3}
      - {at: 9000, kind: regulator_fail, link: REG-1, mode: open}       # or closed
      - {at: 1800, kind: sensor, point: PT-003, fault: stuck, duration_s: 3600}
      - {at: 1800, kind: sensor, point: PT-005, fault: drift, rate_per_h: 500}   # SI units per hour
      - {at: 1800, kind: sensor, point: PT-007, fault: noisy, sigma: 200}
      - {at: 1800, kind: sensor, point: PT-009, fault: dropout, duration_s: 600}
      - {at: 5400, kind: outage, server: opcua, duration_s: 120}
      - {at: 86400, kind: meter, meter: M-house_ne_12, fault: behind_meter_leak, flow_kg_s: 2.0e-5}
      - {at: 86400, kind: meter, meter: M-house_ne_13, fault: usage_change, factor: 2.5}
      - {at: 86400, kind: meter, meter: M-house_ne_14, fault: theft, factor: 0.3}
      - {at: 86400, kind: meter, meter: M-house_ne_15, fault: stopped, duration_s: 172800}

Meter-end events act on one house behind one smart meter (any of them may end after ``duration_s``):
``behind_meter_leak`` is gas escaping inside the house, drawn from the network AND through the meter
(a constant extra flow, day and night); ``usage_change`` multiplies the house's use (drawn and
metered); ``theft`` (a bypass or a tampered meter) and ``stopped`` (a jammed meter) leave the house
drawing its gas from the network while the meter registers only ``factor`` of it, or nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipetwin.connectors.points import PointTable
from pipetwin.twin.model import LinkKind, LinkStatus, NetworkModel, NodeKind
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.result import SolveResult

# Hourly shape of residential gas demand on a winter weekday (mean 1): night low, morning and
# evening peaks (heating and hot water), as distribution operators' standard load profiles show.
WINTER_PROFILE = np.array([0.55, 0.5, 0.48, 0.48, 0.52, 0.7, 1.15, 1.45, 1.35, 1.15, 1.0, 0.95,
                           0.95, 0.9, 0.88, 0.92, 1.05, 1.3, 1.45, 1.4, 1.25, 1.05, 0.85, 0.67])
EVENT_KINDS = ("leak", "valve_close", "valve_open", "regulator_fail", "sensor", "outage", "meter")
SENSOR_FAULTS = ("stuck", "drift", "noisy", "dropout")
METER_FAULTS = ("behind_meter_leak", "usage_change", "theft", "stopped")


class ScenarioError(ValueError):
    """A scenario file that cannot be used: names the file, the event and the fault."""


@dataclass
class Event:
    at_s: float
    kind: str
    params: dict


@dataclass
class Scenario:
    start: datetime
    events: list[Event] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return int(self.start.timestamp() * 1e9)


def _seconds(value, start: datetime, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        t = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (t - start).total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError(f"{where}: 'at' {value!r} is neither seconds nor an ISO time") from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return (t - start).total_seconds()


def load_scenario(path: str | Path | None, model: NetworkModel, points: PointTable | None = None,
                  start: datetime | None = None) -> Scenario:
    """Read and check a scenario (None: no events). Every element, point and parameter is checked
    against the network and the point table before the simulation starts."""
    start = start or datetime(2026, 1, 15, tzinfo=timezone.utc)
    if path is None:
        return Scenario(start)
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: expected a mapping with 'events:'")
    if "start" in doc:
        s = doc["start"]
        s = s if isinstance(s, datetime) else datetime.fromisoformat(str(s).replace("Z", "+00:00"))
        start = s if s.tzinfo else s.replace(tzinfo=timezone.utc)
    nodes, links = model.node_index(), model.link_index()
    point_ids = points.index() if points is not None else {}
    events = []
    for n, e in enumerate(doc.get("events") or [], start=1):
        where = f"{path}, event {n}"
        if not isinstance(e, dict) or e.get("kind") not in EVENT_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {EVENT_KINDS}")
        kind = e["kind"]
        at = _seconds(e.get("at", 0), start, where)
        if kind == "leak":
            if e.get("node") not in nodes:
                raise ScenarioError(f"{where}: leak node {e.get('node')!r} is not in the network")
            if not float(e.get("flow_kg_s", 0)) > 0:
                raise ScenarioError(f"{where}: leak flow_kg_s must be > 0")
        elif kind in ("valve_close", "valve_open", "regulator_fail"):
            if e.get("link") not in links:
                raise ScenarioError(f"{where}: link {e.get('link')!r} is not in the network")
            if kind == "regulator_fail":
                k = links[e["link"]]
                if model.links.kind[k] != LinkKind.PRV:
                    raise ScenarioError(f"{where}: link {e['link']!r} is not a regulator")
                if e.get("mode") not in ("open", "closed"):
                    raise ScenarioError(f"{where}: regulator_fail mode is open or closed")
        elif kind == "sensor":
            if e.get("point") not in point_ids:
                raise ScenarioError(f"{where}: point {e.get('point')!r} is not in the point table")
            if e.get("fault") not in SENSOR_FAULTS:
                raise ScenarioError(f"{where}: sensor fault must be one of {SENSOR_FAULTS}")
        elif kind == "outage":
            if e.get("server") not in ("opcua", "modbus", "meters"):
                raise ScenarioError(f"{where}: outage server is opcua, modbus or meters")
            if not float(e.get("duration_s", 0)) > 0:
                raise ScenarioError(f"{where}: outage duration_s must be > 0")
        elif kind == "meter":
            _check_meter_event(e, points, where)
        events.append(Event(at, kind, {k: v for k, v in e.items() if k not in ("at", "kind")}))
    events.sort(key=lambda ev: ev.at_s)
    return Scenario(start, events)


def _number(e: dict, key: str, where: str) -> float:
    try:
        return float(e[key])
    except KeyError:
        raise ScenarioError(f"{where}: meter fault {e.get('fault')} needs {key}") from None
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: {key} {e[key]!r} is not a number") from None


def _check_meter_event(e: dict, points: PointTable | None, where: str) -> None:
    """A meter-end event names a smart meter of the point table and a fault with its parameter."""
    meter = e.get("meter")
    if points is None:
        raise ScenarioError(f"{where}: a meter event needs the point table (its meters)")
    row = points.index().get(meter)
    if row is None or points.protocol[row] != "meter":
        raise ScenarioError(f"{where}: meter {meter!r} is not a meter point of the point table")
    fault = e.get("fault")
    if fault not in METER_FAULTS:
        raise ScenarioError(f"{where}: meter fault must be one of {METER_FAULTS}, not {fault!r}")
    if fault == "behind_meter_leak" and not _number(e, "flow_kg_s", where) > 0:
        raise ScenarioError(f"{where}: behind_meter_leak flow_kg_s must be > 0")
    if fault == "usage_change" and not _number(e, "factor", where) > 0:
        raise ScenarioError(f"{where}: usage_change factor must be > 0")
    if fault == "theft" and not 0 <= _number(e, "factor", where) < 1:
        raise ScenarioError(f"{where}: theft factor (the share the meter registers) must be in [0, 1)")
    if "duration_s" in e and not _number(e, "duration_s", where) > 0:
        raise ScenarioError(f"{where}: meter fault duration_s must be > 0")


@dataclass
class Step:
    """What the field shows at one instant."""

    time_s: float
    ts_ns: int
    result: SolveResult
    scada: np.ndarray          # measured SI value per point-table row (NaN: not a SCADA point, or dropped out)
    true_scada: np.ndarray     # the instrument-free truth at the same rows
    leak_kg_s: float
    meter_reads: dict[str, float] | None = None   # point id -> interval volume (SI, kg) at an interval end
    outages: tuple[str, ...] = ()


class FieldSimulator:
    """Steps a gas network through time. Pure apart from its seeded random generator, so two runs
    with the same seed and scenario give the same readings."""

    def __init__(self, model: NetworkModel, points: PointTable, scenario: Scenario | None = None, *,
                 seed: int = 0, profile: np.ndarray = WINTER_PROFILE, demand_noise: float = 0.15,
                 sensor_noise: dict[str, float] | None = None):
        if not model.is_gas:
            raise ValueError("the field simulator drives gas networks")
        self.base_model = model
        self.model = model.copy()
        self.points = points
        self.scenario = scenario or Scenario(datetime(2026, 1, 15, tzinfo=timezone.utc))
        self.rng = np.random.default_rng(seed)
        self.profile = np.asarray(profile, float)
        self.demand_noise = demand_noise
        # instrument noise (1 sigma, SI): pressure 20 Pa (0.2 mbar), flow 0.5 %, temperature 0.05 K
        self.sensor_noise = {"pressure": 20.0, "temperature": 0.05, "level": 0.005, **(sensor_noise or {})}
        self.base_demand = model.base_demand()
        self.consumers = np.flatnonzero((model.nodes.kind == NodeKind.CONSUMER) & (self.base_demand > 0))
        self._ar = np.zeros(len(self.consumers))        # AR(1) customer noise state
        self.solver = GasSolver(self.model)
        self.last: SolveResult | None = None
        self.time_s = 0.0
        self._next_event = 0
        self.leaks: list[tuple[int, float, float, float]] = []   # node, flow, start, ramp
        self.sensor_faults: dict[int, dict] = {}
        self.outages: list[tuple[str, float, float]] = []
        self._stuck_value: dict[int, float] = {}
        self.scada_rows = np.array([i for i, p in enumerate(points.protocol) if p in ("opcua", "modbus")], np.int64)
        self.meter_rows = np.array([i for i, p in enumerate(points.protocol) if p == "meter"], np.int64)
        self.meter_period_s = float(points.period_s[self.meter_rows].min()) if len(self.meter_rows) else 3600.0
        self._meter_acc = np.zeros(len(self.meter_rows))
        self._next_meter_s = self.meter_period_s
        self.meter_faults: list[tuple[int, dict, float, float]] = []   # meter position, event, start, end

    # -- demand and events ---------------------------------------------------------------------
    def demand(self, time_s: float, dt: float = 1.0) -> np.ndarray:
        """Customers' demand now: base x the profile (interpolated hourly) x slow customer noise.
        The profile follows the UTC clock (the scenario's start plus ``time_s``), as the twin's
        demand model does, so a field started at any hour is in phase with it. ``dt`` is the step
        since the last call: the noise keeps its correlation time at any step."""
        start = self.scenario.start
        since_midnight = start.hour * 3600.0 + start.minute * 60.0 + start.second + start.microsecond * 1e-6
        hour = ((since_midnight + time_s) / 3600.0) % 24.0
        h0 = int(hour)
        w = hour - h0
        shape = (1 - w) * self.profile[h0] + w * self.profile[(h0 + 1) % 24]
        d = self.base_demand * shape
        # AR(1) per customer with a correlation time of ~1000 s (17 min), so demand wanders, not
        # flickers; 0.999 per second, so a coarse step keeps the same correlation time
        a = 0.999 ** max(dt, 0.0) if len(self.consumers) else 0.0
        self._ar = a * self._ar + math.sqrt(1 - a * a) * self.rng.standard_normal(len(self.consumers))
        d[self.consumers] *= np.maximum(1.0 + self.demand_noise * self._ar, 0.0)
        return d

    def _leak_demand(self, time_s: float) -> np.ndarray:
        extra = np.zeros(self.model.n_nodes)
        for node, flow, start, ramp in self.leaks:
            if time_s >= start:
                extra[node] += flow * (min((time_s - start) / ramp, 1.0) if ramp > 0 else 1.0)
        return extra

    def _apply_events(self, time_s: float) -> None:
        events = self.scenario.events
        topology_changed = False
        while self._next_event < len(events) and events[self._next_event].at_s <= time_s:
            e = events[self._next_event]
            self._next_event += 1
            p = e.params
            if e.kind == "leak":
                self.leaks.append((self.model.node_index()[p["node"]], float(p["flow_kg_s"]), e.at_s,
                                   float(p.get("ramp_s", 0.0))))
            elif e.kind in ("valve_close", "valve_open"):
                k = self.model.link_index()[p["link"]]
                self.model.links.status[k] = LinkStatus.CLOSED if e.kind == "valve_close" else LinkStatus.OPEN
                topology_changed = True
            elif e.kind == "regulator_fail":
                k = self.model.link_index()[p["link"]]
                if p["mode"] == "open":
                    self.model.links.kind[k] = LinkKind.VALVE      # passes everything, holds nothing
                    self.model.links.status[k] = LinkStatus.OPEN
                else:
                    self.model.links.status[k] = LinkStatus.CLOSED
                topology_changed = True
            elif e.kind == "sensor":
                row = self.points.index()[p["point"]]
                self.sensor_faults[row] = {**p, "start": e.at_s,
                                           "end": e.at_s + float(p.get("duration_s", math.inf))}
            elif e.kind == "outage":
                self.outages.append((p["server"], e.at_s, e.at_s + float(p["duration_s"])))
            elif e.kind == "meter":
                pos = int(np.flatnonzero(self.meter_rows == self.points.index()[p["meter"]])[0])
                self.meter_faults.append((pos, p, e.at_s, e.at_s + float(p.get("duration_s", math.inf))))
        if topology_changed:
            self.solver = GasSolver(self.model)
            self.last = None

    # -- measurements ----------------------------------------------------------------------------
    def true_values(self, result: SolveResult) -> np.ndarray:
        """The physical value at every point-table row (NaN for meters and unknown quantities)."""
        pts = self.points
        out = np.full(len(pts), np.nan)
        for i in self.scada_rows:
            q, e = pts.quantity[i], pts.element_index[i]
            if q == "pressure":
                out[i] = result.node_pressure_pa[e]
            elif q == "flow":
                out[i] = result.link_flow[e]
            elif q == "temperature":
                out[i] = self.model.gas.temperature_k
            elif q == "valve_state":
                out[i] = float(result.link_status[e] != LinkStatus.CLOSED)
            elif q == "demand":
                out[i] = result.node_demand[e]
        return out

    def measure(self, truth: np.ndarray, time_s: float, dt: float) -> np.ndarray:
        """Instrument readings: truth + noise, then each active fault."""
        pts = self.points
        out = truth.copy()
        for i in self.scada_rows:
            if not np.isfinite(out[i]):
                continue
            q = pts.quantity[i]
            sigma = self.sensor_noise.get(q, 0.0)
            if q == "flow":
                sigma = 0.005 * abs(truth[i]) + 1e-6
            out[i] += sigma * self.rng.standard_normal()
            fault = self.sensor_faults.get(i)
            if fault is None or not (fault["start"] <= time_s < fault["end"]):
                self._stuck_value.pop(i, None)
                continue
            kind = fault["fault"]
            if kind == "stuck":
                out[i] = self._stuck_value.setdefault(i, out[i])
            elif kind == "drift":
                out[i] += float(fault.get("rate_per_h", 0.0)) * (time_s - fault["start"]) / 3600.0
            elif kind == "noisy":
                out[i] += float(fault.get("sigma", 10 * sigma)) * self.rng.standard_normal()
            elif kind == "dropout":
                out[i] = np.nan
        return out

    def active_outages(self, time_s: float) -> tuple[str, ...]:
        return tuple(sorted({s for s, a, b in self.outages if a <= time_s < b}))

    # -- the step ------------------------------------------------------------------------------
    def step(self, dt: float = 1.0) -> Step:
        """Advance by ``dt`` seconds (the first call simulates t = 0) and read the field."""
        t = self.time_s
        self._apply_events(t)
        customers = self.demand(t, dt)
        registered = self._meter_faults(customers, t)
        d = customers + self._leak_demand(t)
        result = self.solver.solve(d, warm_start=self.last)
        if not result.converged:
            result = self.solver.solve(d)
        self.last = result
        truth = self.true_values(result)
        measured = self.measure(truth, t, dt)
        meter_reads = self._meters(result, customers, registered, t, dt)
        ts_ns = self.scenario.start_ns + int(round(t * 1e9))
        step = Step(t, ts_ns, result, measured, truth, float(self._leak_demand(t).sum()), meter_reads,
                    self.active_outages(t))
        self.time_s = t + dt
        return step

    def _meter_faults(self, customers: np.ndarray, time_s: float) -> np.ndarray:
        """Apply the active meter-end faults to the houses' draw (in place) and return the share of
        each meter's flow it registers (1: an honest meter). A leak behind the meter and a usage
        change are gas drawn through the meter; theft and a stopped meter draw gas the meter misses."""
        registered = np.ones(len(self.meter_rows))
        nodes = self.points.element_index[self.meter_rows]
        active = [(pos, p) for pos, p, start, end in self.meter_faults if start <= time_s < end]
        for pos, p in active:          # the house's own use first, then gas escaping behind the meter
            if p["fault"] == "usage_change":
                customers[nodes[pos]] *= float(p["factor"])
        for pos, p in active:
            if p["fault"] == "behind_meter_leak":
                customers[nodes[pos]] += float(p["flow_kg_s"])
            elif p["fault"] == "theft":
                registered[pos] = float(p["factor"])
            elif p["fault"] == "stopped":
                registered[pos] = 0.0
        return registered

    def _meters(self, result: SolveResult, customers: np.ndarray, registered: np.ndarray, time_s: float,
                dt: float) -> dict[str, float] | None:
        """Accumulate what each house's meter registers of the house's own draw (a leak upstream of
        a meter is not metered; an unsupplied house gets nothing; a tampered or stopped meter
        registers a share); at every interval end hand out the interval volumes (SI mass, kg)
        keyed by meter point id."""
        if not len(self.meter_rows):
            return None
        nodes = self.points.element_index[self.meter_rows]
        delivered = np.where(result.unsupplied[nodes], 0.0, np.maximum(customers[nodes], 0.0))
        self._meter_acc += registered * delivered * dt
        if time_s + dt < self._next_meter_s - 1e-9:
            return None
        reads = {self.points.ids[r]: float(v) for r, v in zip(self.meter_rows, self._meter_acc)}
        self._meter_acc[:] = 0.0
        self._next_meter_s += self.meter_period_s
        return reads
