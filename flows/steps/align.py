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

Early close. Most ticks need not wait the whole allowance. Each source (an OPC-UA server, a
Modbus unit, a Kafka partition, a replay file) delivers its readings in time order: a Modbus
poll stamps all its registers at once, an OPC-UA subscription publishes its samples cycle by
cycle. So once every source that delivered in the tick before has delivered a reading stamped
at least ``early_margin_s`` after the tick's end, or has delivered the reading after which its
next, one cadence later, falls that far past the end (a poll-like source, whose every batch is one
instant: its cadence is learned as it goes; a source whose batches hold many instants may split
one across batches and has no cadence), the tick has everything it will get, and it closes then. Points that report by exception (deadbands) need not speak for this; a source
that falls silent holds one tick for the whole allowance and is then not waited for. The
allowance stays the upper bound, for the tick in which something is slow. A reading that
arrives after its tick closed (early or not) but is newer than the value held for its point
becomes the held value for the next tick (and is still counted as late), so closing early does
not throw measurements away: at worst it reaches the twin one tick later.

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
                 max_age_s: float = 60.0, early_margin_s: float | None = 0.1):
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
        # early close (None: off): each source's newest event time, and the sources a tick waits for
        self.early_margin_ns = None if early_margin_s is None else int(early_margin_s * 1e9)
        self.source_watermark: dict[str, int] = {}
        self.source_gap: dict[str, int] = {}      # each poll-like source's cadence in event time (ns)
        self.source_polls: dict[str, int] = {}    # single-instant batches in a row, per source
        self.expected: tuple[str, ...] = ()       # the sources that delivered in the tick closed last
        self.closed_early = 0
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
        self._hold_late(rows[known & late & (quality != BAD)], values[known & late & (quality != BAD)],
                        quality[known & late & (quality != BAD)], ts[known & late & (quality != BAD)])
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
            if self.early_margin_ns is not None:
                self._note_sources(batch.column("source"), ends, ts, use)
        return self._close(self.watermark - self.lateness_ns)

    def _note_sources(self, source: pa.Array, ends: np.ndarray, ts: np.ndarray, use: np.ndarray) -> None:
        """Each source's newest event time, and which open ticks each source delivered to."""
        names = pc.unique(source).to_pylist()
        for name in names:
            sel = np.ones(len(ts), bool) if len(names) == 1 else pc.equal(source, name).to_numpy(zero_copy_only=False)
            newest, before = int(ts[sel].max()), self.source_watermark.get(name, 0)
            # a poll-like source (every batch one instant: a Modbus poll) has a cadence, the EWMA
            # of its steps in event time; a source whose batches hold many instants (a replay, a
            # Kafka partition) may split an instant across batches, so it has none
            if int(ts[sel].min()) != newest:
                self.source_gap[name] = 0
                self.source_polls[name] = 0
            elif before and newest > before:
                polls = self.source_polls.get(name, 0) + 1
                self.source_polls[name] = polls
                gap = self.source_gap.get(name, 0) or newest - before
                self.source_gap[name] = int(0.8 * gap + 0.2 * (newest - before)) if polls >= 3 else 0
            self.source_watermark[name] = max(before, newest)
            for end in np.unique(ends[sel & use]):
                self.open[int(end)].setdefault("sources", set()).add(name)

    def _hold_late(self, rows: np.ndarray, values: np.ndarray, quality: np.ndarray, ts: np.ndarray) -> None:
        """A late reading newer than its point's held value is held for the next tick."""
        if not len(rows):
            return
        order = np.argsort(ts, kind="stable")
        rows, values, quality, ts = rows[order], values[order], quality[order], ts[order]
        newer = ts > self.held["ts"][rows]
        self.held["values"][rows[newer]] = values[newer]
        self.held["quality"][rows[newer]] = quality[newer]
        self.held["ts"][rows[newer]] = ts[newer]

    def _complete(self, end: int) -> bool:
        """Every source that delivered in the tick before is done with this tick: it delivered past
        the tick's end, or its next reading, one cadence after its newest, falls past it (a Modbus
        unit polled once a second whose poll for this tick is in), each with the margin."""
        if self.early_margin_ns is None or not self.expected:
            return False
        wm, gap, margin = self.source_watermark, self.source_gap, self.early_margin_ns
        return all(wm.get(name, 0) + max(gap.get(name, 0) - margin, 0) >= end + margin for name in self.expected)

    def _empty(self) -> dict:
        n = len(self.points)
        return {"values": np.full(n, np.nan), "quality": np.full(n, BAD, np.int8), "ts": np.zeros(n, np.int64),
                "received": 0, "sources": set()}

    def _close(self, until: int) -> list[Tick]:
        out = []
        held = self.held
        for end in sorted(self.open):
            t = self.open[end]
            if end > until:
                if not self._complete(end):
                    break
                self.closed_early += 1
            self.open.pop(end)
            self.expected = tuple(sorted(t.get("sources", ())))
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
                "network": self.network, "expected": self.expected, "closed_early": self.closed_early,
                "source_watermark": self.source_watermark, "source_gap": self.source_gap,
                "source_polls": self.source_polls}

    def restore(self, snap: dict) -> None:
        self.open = snap["open"]
        self.held = snap.get("held", self.held)
        self.hour = snap.get("hour", self.hour)
        self.availability = snap.get("availability", self.availability)
        self.network = snap.get("network", self.network)
        self.expected = snap.get("expected", self.expected)
        self.closed_early = snap.get("closed_early", self.closed_early)
        self.source_watermark = snap.get("source_watermark", self.source_watermark)
        self.source_gap = snap.get("source_gap", self.source_gap)
        self.source_polls = snap.get("source_polls", self.source_polls)
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
