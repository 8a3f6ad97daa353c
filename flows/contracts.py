"""What moves between the flow's steps and out to its sinks (DESIGN.md, "Contracts").

- ``Tick``: one network's aligned measurements at one tick: a value per point-table row (NaN where
  nothing arrived), with the quality and the reading's own timestamp.
- ``TwinState``: the twin fitted to a tick: pressures and flows everywhere, estimated demands,
  zone multipliers, and measured vs estimated at every sensor. Serialized for Redis as Arrow IPC
  (nodes, links, sensors) plus a small JSON summary.
- ``Alert``: id, kind, severity, subject, times, status, message, evidence and, for leaks, ranked
  candidate locations. Serialized as JSON; ``id`` is stable across updates so subscribers can
  deduplicate at-least-once deliveries.

Redis keys for network ``N`` (documented for other systems in docs/redis-keys.md):
``pipetwin:N:state:nodes|links|sensors`` (Arrow IPC bytes), ``pipetwin:N:state:summary`` (JSON),
``pipetwin:N:states`` (stream of summaries), ``pipetwin:N:alerts`` (stream of alert JSON, consumer
groups), ``pipetwin:N:updates`` (pub/sub: a tick's timestamp when a new state is in).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa


def redis_key(network: str, what: str) -> str:
    return f"pipetwin:{network}:{what}"


@dataclass
class Tick:
    network: str
    ts_ns: int                    # the tick's end (event time)
    values: np.ndarray            # float64 per point-table row, SI; NaN where no good reading
    quality: np.ndarray           # int8 per row (2 where nothing arrived)
    reading_ts_ns: np.ndarray     # int64 per row: the timestamp of the value used (0: none)
    received: int = 0             # readings folded into this tick
    late: int = 0                 # readings that arrived after their tick closed (counted, not used)
    figures: dict = field(default_factory=dict)   # e.g. the last full hour's data availability


@dataclass
class TwinState:
    network: str
    ts_ns: int
    node_ids: list[str]
    node_pressure_pa: np.ndarray
    node_demand: np.ndarray       # estimated (kg/s or m3/s)
    unsupplied: np.ndarray        # bool
    link_ids: list[str]
    link_flow: np.ndarray
    link_velocity_m_s: np.ndarray
    sensor_ids: list[str]
    sensor_measured: np.ndarray   # NaN: no reading this tick
    sensor_estimated: np.ndarray
    zone_multipliers: np.ndarray
    converged: bool
    iterations: int
    chi2: float
    solve_ms: float
    figures: dict = field(default_factory=dict)   # inflow, consumption, line pack, min pressure, ...

    @property
    def residual(self) -> np.ndarray:
        return self.sensor_measured - self.sensor_estimated

    def summary(self) -> dict:
        supplied = ~self.unsupplied
        p = self.node_pressure_pa[supplied]
        i_min = int(np.argmin(np.where(supplied, self.node_pressure_pa, np.inf))) if supplied.any() else -1
        return {"network": self.network, "ts_ns": int(self.ts_ns), "converged": bool(self.converged),
                "iterations": int(self.iterations), "chi2": float(self.chi2), "solve_ms": float(self.solve_ms),
                "min_pressure_pa": float(p.min()) if len(p) else None,
                "min_pressure_node": self.node_ids[i_min] if i_min >= 0 else None,
                "max_pressure_pa": float(p.max()) if len(p) else None,
                "unsupplied_nodes": int(self.unsupplied.sum()),
                "zone_multipliers": [float(x) for x in self.zone_multipliers],
                "sensors_reporting": int(np.isfinite(self.sensor_measured).sum()),
                "max_abs_residual": float(np.nanmax(np.abs(self.residual))) if np.isfinite(self.residual).any() else None,
                **{k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in self.figures.items()}}

    def to_ipc(self) -> dict[str, bytes]:
        """Three Arrow IPC blobs (nodes, links, sensors)."""
        ipc = ipc_bytes

        nodes = pa.table({"id": pa.array(self.node_ids, pa.string()), "pressure_pa": self.node_pressure_pa,
                          "demand": self.node_demand, "unsupplied": self.unsupplied})
        links = pa.table({"id": pa.array(self.link_ids, pa.string()), "flow": self.link_flow,
                          "velocity_m_s": self.link_velocity_m_s})
        sensors = pa.table({"point": pa.array(self.sensor_ids, pa.string()), "measured": self.sensor_measured,
                            "estimated": self.sensor_estimated, "residual": self.residual})
        return {"nodes": ipc(nodes), "links": ipc(links), "sensors": ipc(sensors)}


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def read_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(blob)).read_all()


SEVERITIES = ("info", "warning", "major", "critical")
STATUSES = ("open", "acknowledged", "cleared")


@dataclass
class Candidate:
    element: str
    score: float
    x: float
    y: float


@dataclass
class Alert:
    id: str
    kind: str                     # leak | anomaly | pressure_limit | data_quality | ...
    severity: str                 # info | warning | major | critical
    subject: str                  # element or point id
    network: str
    opened_ns: int
    updated_ns: int
    status: str = "open"
    message: str = ""
    evidence: dict = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    cleared_ns: int | None = None
    revision: int = 0             # increases with every update; (id, revision) is unique

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r} is not one of {SEVERITIES}")
        if self.status not in STATUSES:
            raise ValueError(f"alert status {self.status!r} is not one of {STATUSES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=float, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Alert":
        d = json.loads(text)
        d["candidates"] = [Candidate(**c) for c in d.get("candidates", [])]
        return cls(**d)
