"""Align: readings into ticks of event time. Within a tick the newest good value of each point wins.

Late data policy. A tick (t - tick_s, t] closes when the newest event time seen (the watermark)
reaches t + lateness_s. A reading whose tick has already closed is late: it is counted (the next
tick's ``late``, the state summary's ``late_readings``) and not used; the twin moves on, and the
historian, which takes readings before this step, still stores it. So ``lateness_s`` is the
trade: every state waits that long after its tick's end (the latency floor), and a reading is
late when it reaches this step more than about ``lateness_s`` after readings stamped later than
it did (transport delay: OPC-UA sampling + publishing intervals, a Modbus poll's duration, a
stall of the worker). So set it above the slowest source's delivery delay. ``pipetwin bench
flow`` measures latency and late readings per lateness at 10,000 points; FlowConfig's default
(0.3 s) suits sources delivering within ~0.2 s (OPC-UA at 100 ms sampling and publishing).

SCADA reports on change (OPC-UA deadbands, report-by-exception RTUs), so a point that says
nothing still holds its last value: each tick carries every point's last good value for up to
``max_age_s`` (sample-and-hold); older than that, the point counts as silent (NaN)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.operators import StatefulLogic

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import BAD
from pipetwin.flows.contracts import Tick


RECENT_ID_LISTS = 32     # id lists remembered by TickAligner._rows (one per poller is enough)


class TickAligner:
    """Folds Reading batches into Ticks. Pure apart from its own arrays; ``snapshot`` is plain."""

    def __init__(self, points: PointTable, network: str, tick_s: float = 1.0, lateness_s: float = 2.0,
                 max_age_s: float = 60.0):
        self.points, self.network = points, network
        self.tick_ns = int(tick_s * 1e9)
        self.lateness_ns = int(lateness_s * 1e9)
        self.max_age_ns = int(max_age_s * 1e9)
        n = len(points)
        self.held = {"values": np.full(n, np.nan), "quality": np.full(n, BAD, np.int8), "ts": np.zeros(n, np.int64)}
        # data availability per hour: ticks in which each SCADA point had a value (fresh or held)
        self.scada = np.array([p in ("opcua", "modbus") for p in points.protocol])
        self.hour = {"start": -1, "ticks": 0, "available": np.zeros(n, np.int64)}
        self.availability: dict = {}
        self._ids = pa.array(points.ids, pa.string())
        self._recent: list[tuple[pa.Array, np.ndarray]] = []
        self.open: dict[int, dict] = {}     # tick end ns -> {values, quality, ts, received}
        self.closed_until = 0               # every tick ending at or before this has been emitted
        self.watermark = 0
        self.late = 0

    def _tick_for(self, ts: np.ndarray) -> np.ndarray:
        return (ts // self.tick_ns + 1) * self.tick_ns       # a reading at exactly t belongs to (t, t+1]

    def _rows(self, ids: pa.Array) -> np.ndarray:
        """Point-table rows of ``ids`` (-1: unknown). A poller sends the same ids every poll, and
        ``index_in`` hashes the whole point table on each call (milliseconds at 10,000 points),
        so the last few id lists are remembered."""
        for known, rows in self._recent:
            if known.equals(ids):
                return rows
        rows = pc.fill_null(pc.index_in(ids, value_set=self._ids), -1).to_numpy().astype(np.int64)
        self._recent = [(ids, rows), *self._recent[:RECENT_ID_LISTS - 1]]
        return rows

    def add(self, batch: pa.RecordBatch) -> list[Tick]:
        rows = self._rows(batch.column("point"))
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        values = batch.column("value").to_numpy()
        quality = batch.column("quality").to_numpy()
        known = rows >= 0
        ends = self._tick_for(ts)
        late = ends <= self.closed_until
        self.late += int(late.sum())
        use = known & ~late & (quality != BAD)
        for end in np.unique(ends[use]):
            sel = use & (ends == end)
            t = self.open.setdefault(int(end), self._empty())
            r, v, q, s = rows[sel], values[sel], quality[sel], ts[sel]
            order = np.argsort(s, kind="stable")            # newest last, so it wins
            r, v, q, s = r[order], v[order], q[order], s[order]
            newer = s >= t["ts"][r]
            t["values"][r[newer]] = v[newer]
            t["quality"][r[newer]] = q[newer]
            t["ts"][r[newer]] = s[newer]
            t["received"] += int(sel.sum())
        if len(ts):
            self.watermark = max(self.watermark, int(ts.max()))
        return self._close(self.watermark - self.lateness_ns)

    def _empty(self) -> dict:
        n = len(self.points)
        return {"values": np.full(n, np.nan), "quality": np.full(n, BAD, np.int8), "ts": np.zeros(n, np.int64),
                "received": 0}

    def _close(self, until: int) -> list[Tick]:
        out = []
        held = self.held
        for end in sorted(e for e in self.open if e <= until):
            t = self.open.pop(end)
            fresh = t["quality"] != BAD
            for key in ("values", "quality", "ts"):
                held[key][fresh] = t[key][fresh]
            alive = (held["ts"] > 0) & (end - held["ts"] <= self.max_age_ns)
            self._count_availability(end, alive)
            out.append(Tick(self.network, end, np.where(alive, held["values"], np.nan),
                            np.where(alive, held["quality"], BAD).astype(np.int8),
                            np.where(alive, held["ts"], 0), t["received"], self.late, dict(self.availability)))
            self.closed_until = max(self.closed_until, end)
        return out

    def _count_availability(self, end: int, alive: np.ndarray, target: float = 0.95) -> None:
        """Share of each SCADA point's ticks with a value, per clock hour; when an hour ends, its
        figures (mean, points under 95 %, the worst point) go out with every tick of the next."""
        hour = (end - 1) // 3_600_000_000_000
        h = self.hour
        if h["start"] != hour:
            if h["start"] >= 0 and h["ticks"] and self.scada.any():
                share = h["available"][self.scada] / h["ticks"]
                ids = [p for p, s in zip(self.points.ids, self.scada) if s]
                worst = int(np.argmin(share))
                self.availability = {"availability_hour": int(h["start"]), "availability_mean": float(share.mean()),
                                     "availability_points_below_target": int((share < target).sum()),
                                     "availability_worst_point": ids[worst],
                                     "availability_worst": float(share[worst])}
            h["start"], h["ticks"] = hour, 0
            h["available"][:] = 0
        h["ticks"] += 1
        h["available"] += alive

    def flush(self) -> list[Tick]:
        """Close every open tick (end of a replay)."""
        return self._close(np.iinfo(np.int64).max)

    def snapshot(self) -> dict:
        return {"open": self.open, "closed_until": self.closed_until, "watermark": self.watermark,
                "late": self.late, "held": self.held, "hour": self.hour, "availability": self.availability,
                "network": self.network}

    def restore(self, snap: dict) -> None:
        self.open = snap["open"]
        self.held = snap.get("held", self.held)
        self.hour = snap.get("hour", self.hour)
        self.availability = snap.get("availability", self.availability)
        self.network = snap.get("network", self.network)
        self.closed_until, self.watermark, self.late = snap["closed_until"], snap["watermark"], snap["late"]


class AlignLogic(StatefulLogic):
    """One aligner per key; with ``network_of`` the key's network names its ticks (bytewax does
    not hand the key to the logic, so it is read off the first batch)."""

    def __init__(self, aligner: TickAligner, resume: dict | None, network_of=None):
        self.aligner, self.network_of = aligner, network_of
        if resume is not None:
            aligner.restore(resume)

    def on_item(self, batch: pa.RecordBatch):
        if self.network_of is not None:
            self.aligner.network = self.network_of(batch)
        return self.aligner.add(batch), StatefulLogic.RETAIN

    def on_eof(self):
        return self.aligner.flush(), StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return self.aligner.snapshot()
