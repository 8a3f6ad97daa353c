"""Zone balance: what came in at the gate against what the meters say was used, hour by hour.
Unaccounted-for gas (UFG) = measured inflow - metered consumption - estimated consumption of the
houses whose meters did not report. A steady UFG is meter error and theft; a UFG that grows is
what a leak looks like in the books.

The step sits between the twin update and the detectors: it integrates each tick's measured
gate inflow (and the twin's estimate for every house), folds in the hourly meter reads as they
arrive, closes an hour once the meters' lateness has passed, and attaches the last closed hour's
figures to every twin state (so they reach Redis, the historian and the detectors). On the tick an
hour closes, the state also carries that hour's per-meter reads for the detectors
(``figures[METER_HOURS]``, see ``flows/detectors/meter_end.py``); the flow takes them off again
before the state reaches any sink."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.operators import StatefulLogic

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import BAD
from pipetwin.flows.contracts import TwinState
from pipetwin.twin.model import NetworkModel, NodeKind

HOUR_NS = 3_600_000_000_000
# figures key: [(hour_end_ns, kg per meter in the point table's meter order, NaN: no read), ...]
METER_HOURS = "meter_hours"


def gate_flow_rows(model: NetworkModel, points: PointTable) -> tuple[np.ndarray, np.ndarray]:
    """Point rows of the flow meters on links that touch a source, and the sign that makes each
    an inflow (a link drawn towards its source measures outflow as negative)."""
    source = model.nodes.kind == NodeKind.SOURCE
    rows, signs = [], []
    for r, (q, e) in enumerate(zip(points.quantity, points.element_index)):
        if q != "flow" or e < 0:
            continue
        a, b = model.links.from_node[e], model.links.to_node[e]
        if source[a] != source[b]:
            rows.append(r)
            signs.append(1.0 if source[a] else -1.0)
    return np.array(rows, np.int64), np.array(signs)


class ZoneBalance:
    """One network, one zone (everything behind the gate meters); hours keyed by their end."""

    def __init__(self, model: NetworkModel, points: PointTable, *, meter_lateness_s: float = 900.0,
                 ufg_alert_pct: float = 5.0, zones: np.ndarray | None = None):
        self.gate_rows, self.gate_signs = gate_flow_rows(model, points)
        self.gate_ids = [points.ids[r] for r in self.gate_rows]
        self.meter_rows = np.array([i for i, p in enumerate(points.protocol) if p == "meter"], np.int64)
        self.meter_ids = pa.array([points.ids[r] for r in self.meter_rows], pa.string())
        self.meter_nodes = points.element_index[self.meter_rows]
        # per-zone figures use the twin's estimation zones (node -> zone, -1: none): see close()
        self.zones = np.full(model.n_nodes, -1, np.int64) if zones is None else np.asarray(zones, np.int64)
        self.n_zones = int(self.zones.max()) + 1 if (self.zones >= 0).any() else 0
        self.meter_zones = np.where(self.meter_nodes >= 0, self.zones[np.maximum(self.meter_nodes, 0)], -1)
        self.lateness_ns = int(meter_lateness_s * 1e9)
        self.ufg_alert_pct = ufg_alert_pct
        # per open hour: inflow kg, estimated use of metered houses kg (per meter), metered kg (per meter)
        self.hours: dict[int, dict] = {}
        self.last: dict = {}
        self.closed_reads: list[tuple[int, np.ndarray]] = []   # the hours the last ``close`` closed

    def _hour(self, end: int) -> dict:
        n = len(self.meter_rows)
        return self.hours.setdefault(end, {"inflow": 0.0, "seconds": 0.0, "estimated": np.zeros(n),
                                           "metered": np.full(n, np.nan), "zone_use": np.zeros(self.n_zones)})

    def add_state(self, state: TwinState, tick_s: float) -> None:
        end = (state.ts_ns - 1) // HOUR_NS * HOUR_NS + HOUR_NS
        h = self._hour(end)
        if len(self.gate_rows):
            pos = {p: i for i, p in enumerate(state.sensor_ids)}
            measured = np.array([state.sensor_measured[pos[p]] if p in pos else np.nan for p in self.gate_ids])
            if np.isfinite(measured).all():
                h["inflow"] += float(np.dot(measured, self.gate_signs)) * tick_s
                h["seconds"] += tick_s
        if len(self.meter_nodes):
            h["estimated"] += np.maximum(state.node_demand[self.meter_nodes], 0.0) * tick_s
        if self.n_zones:
            member = self.zones >= 0
            use = np.bincount(self.zones[member], weights=np.maximum(state.node_demand[member], 0.0),
                              minlength=self.n_zones)
            h.setdefault("zone_use", np.zeros(self.n_zones))[:] += use * tick_s

    def add_meters(self, batch: pa.RecordBatch) -> None:
        rows = pc.fill_null(pc.index_in(batch.column("point"), value_set=self.meter_ids), -1).to_numpy()
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        ok = (rows >= 0) & (batch.column("quality").to_numpy() != BAD)
        values = batch.column("value").to_numpy()
        for end in np.unique(ts[ok]):
            sel = ok & (ts == end)
            hour_end = (int(end) - 1) // HOUR_NS * HOUR_NS + HOUR_NS
            self._hour(hour_end)["metered"][rows[sel]] = values[sel]

    def close(self, now_ns: int) -> dict | None:
        """Close every hour whose meters are due; return the newest closed hour's figures."""
        closed = None
        self.closed_reads = []
        for end in sorted(e for e in self.hours if e + self.lateness_ns <= now_ns):
            h = self.hours.pop(end)
            if len(self.meter_rows):
                self.closed_reads.append((int(end), h["metered"]))
            reported = np.isfinite(h["metered"])
            metered = float(np.nansum(h["metered"]))
            estimated_missing = float(h["estimated"][~reported].sum())
            inflow = h["inflow"] if h["seconds"] > 0.9 * 3600 else float("nan")
            ufg = inflow - metered - estimated_missing
            closed = {"balance_hour_end_ns": int(end), "balance_inflow_kg": inflow, "balance_metered_kg": metered,
                      "balance_estimated_unmetered_kg": estimated_missing,
                      "balance_meters_reporting": int(reported.sum()), "balance_meters": int(len(reported)),
                      "ufg_kg": ufg, "ufg_pct": 100.0 * ufg / inflow if inflow > 0 else float("nan"),
                      **self._zone_figures(h, reported)}
        if closed is not None:
            self.last = closed
        return closed

    def _zone_figures(self, h: dict, reported: np.ndarray) -> dict:
        """Unaccounted-for gas per zone. A zone has no gate meter of its own, so what it took is
        the fitted twin's estimate (its demand multiplier x its houses' profile, the estimate the
        pressures and the gate flow pin down); less what its meters read and the estimate for its
        houses whose meters did not report. Summed over the zones it is the network's UFG up to the
        twin's fit of the gate flow; a leak shows in the zone whose multiplier it raised."""
        if not self.n_zones or "zone_use" not in h:
            return {}
        took = h["zone_use"]
        inzone = self.meter_zones >= 0
        z = self.meter_zones[inzone]
        metered = np.bincount(z, weights=np.nan_to_num(h["metered"][inzone]), minlength=self.n_zones)
        missing = np.bincount(z, weights=np.where(reported[inzone], 0.0, h["estimated"][inzone]),
                              minlength=self.n_zones)
        ufg = took - metered - missing
        pct = np.where(took > 0, 100.0 * ufg / np.where(took > 0, took, 1.0), np.nan)
        return {"zone_use_kg": [float(x) for x in took], "zone_metered_kg": [float(x) for x in metered],
                "zone_ufg_kg": [float(x) for x in ufg], "zone_ufg_pct": [float(x) for x in pct]}

    def snapshot(self) -> dict:
        return {"hours": self.hours, "last": self.last}

    def restore(self, snap: dict) -> None:
        self.hours, self.last = snap["hours"], snap["last"]


class BalanceLogic(StatefulLogic):
    """("state", TwinState) and ("meters", RecordBatch) in; twin states out, carrying the last
    closed hour's balance in their figures."""

    def __init__(self, balance: ZoneBalance, tick_s: float, resume: dict | None):
        self.balance, self.tick_s = balance, tick_s
        if resume is not None:
            balance.restore(resume)

    def on_item(self, tagged):
        kind, item = tagged
        if kind == "meters":
            self.balance.add_meters(item)
            return [], StatefulLogic.RETAIN
        self.balance.add_state(item, self.tick_s)
        self.balance.close(item.ts_ns)
        item.figures.update(self.balance.last)
        if self.balance.closed_reads:
            item.figures[METER_HOURS] = self.balance.closed_reads
        return [item], StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return self.balance.snapshot()
