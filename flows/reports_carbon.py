"""Methane and CO2 reports from the historian: day, week, month or year tables (CSV) and a
self-contained HTML page, every figure traceable to the historian files and rows it came from.

What the historian holds and what each figure is made of (docs/historian.md, docs/carbon.md):

- **Gas burnt, per zone** (a historian ``network`` is a zone): the twin's estimated consumption
  ``consumption_kg_s`` in each tick's ``figures``, times the tick's interval (the gap to the
  previous tick, capped at ``max_gap_factor`` times the network's median tick so an outage is not
  bridged; ``coverage_s`` shows how much of the period the ticks cover).
- **Gas burnt, per customer class**: meter reads in ``readings`` (kg per interval after the point
  table's conversion; bad quality skipped). A class map (``point,class`` CSV) names each meter's
  class; without one, every reading from a meter feed (``source`` starting ``meters:``) is class
  ``metered``.
- **Gas released**: leak alerts (kind ``leak``, evidence ``estimated_flow`` in kg/s, as
  ``flows/detectors/leak.py`` writes them) and alerts whose evidence carries ``leak_flow_kg_s``,
  ``leak_kg_s``, ``estimated_leak_kg_s``, or ``leak_flow_m3_s`` at normal conditions. Each
  revision's flow holds from its update until the next revision, the clearing, or the network's
  last tick; the leak starts at the evidence's estimated start (``start_ns``, or
  ``leak_start_ns``) if given, else when the alert opened. Vents are alerts with ``vented_kg`` or ``vented_m3`` (normal), counted once per alert at
  its latest revision.

Intervals are split at period boundaries (UTC days, ISO weeks from Monday, calendar months and
years). ``sources`` lists every file read with its SHA-256, so a report can be anchored in the
audit ledger beside the historian's own anchors.

>>> noon = 1_709_208_000 * NS          # 2024-02-29 12:00 UTC
>>> [period_label(period_start(noon, p), p) for p in PERIODS]
['2024-02-29', '2024-W09', '2024-02', '2024']
>>> [(label, (b - a) // (3600 * NS)) for label, a, b in
...  [(period_label(p, "month"), a, b) for p, a, b in split(noon, noon + DAY_NS, "month")]]
[('2024-02', 12), ('2024-03', 12)]
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipetwin.flows.sinks.historian import KINDS, drop_duplicates
from pipetwin.twin.carbon import FactorTable, combustion_co2, gas_mass_kg, methane_released

PERIODS = ("day", "week", "month", "year")
NS = 1_000_000_000
DAY_NS = 86_400 * NS
LEAK_MASS_KEYS = ("leak_flow_kg_s", "leak_kg_s", "estimated_leak_kg_s")
LEAK_VOLUME_KEYS = ("leak_flow_m3_s",)
METER_SOURCE_PREFIX = "meters:"


# -- periods -------------------------------------------------------------------------------------


def period_start(ts_ns: int, period: str) -> int:
    """Start (ns, UTC) of the period holding ``ts_ns``."""
    if period == "day":
        return ts_ns // DAY_NS * DAY_NS
    if period == "week":                        # 1970-01-01 was a Thursday; ISO weeks start on Monday
        day = ts_ns // DAY_NS
        return (day - (day + 3) % 7) * DAY_NS
    unit = {"month": "M", "year": "Y"}[period]
    return int(np.datetime64(ts_ns, "ns").astype(f"datetime64[{unit}]").astype("datetime64[ns]").astype(np.int64))


def next_period(start_ns: int, period: str) -> int:
    if period == "day":
        return start_ns + DAY_NS
    if period == "week":
        return start_ns + 7 * DAY_NS
    unit = {"month": "M", "year": "Y"}[period]
    t = np.datetime64(start_ns, "ns").astype(f"datetime64[{unit}]") + 1
    return int(t.astype("datetime64[ns]").astype(np.int64))


def period_label(start_ns: int, period: str) -> str:
    d = datetime.fromtimestamp(start_ns // NS, timezone.utc)
    if period == "day":
        return d.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return d.strftime("%Y-%m") if period == "month" else d.strftime("%Y")


def split(start_ns: int, end_ns: int, period: str) -> list[tuple[int, int, int]]:
    """[start, end) cut at period boundaries: (period start, piece start, piece end)."""
    out = []
    a = start_ns
    while a < end_ns:
        p = period_start(a, period)
        b = min(end_ns, next_period(p, period))
        out.append((p, a, b))
        a = b
    return out


def parse_time(text: str | None) -> int | None:
    """ISO 8601 text (no zone means UTC) as int ns."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000


def iso(ts_ns: int | None) -> str:
    if ts_ns is None:
        return ""
    return datetime.fromtimestamp(ts_ns / NS, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- reading the historian, file by file (so each row knows where it came from) ------------------


@dataclass
class SourceFile:
    path: str              # relative to the historian root
    kind: str
    sha256: str
    rows: int              # rows read from it (before de-duplication)
    first_ts: int | None
    last_ts: int | None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def day_tables(root: str | Path, kind: str, columns: list[str], *, network: str | None = None,
               start_ns: int | None = None, end_ns: int | None = None, sources: list[SourceFile] | None = None,
               where: pc.Expression | None = None) -> Iterator[pa.Table]:
    """One table per (network, date) folder of a historian kind: rows in [start, end) (and
    matching ``where``) with ``network`` and ``file`` columns added and timestamps as int ns,
    de-duplicated by the kind's key (a replayed record lands in the same day folder as the first).
    Folders outside the range are not opened; every file read is appended to ``sources``. One day
    at a time keeps a year of meter reads out of memory."""
    spec = KINDS[kind]
    root = Path(root)
    tcol = spec.time_column
    first_day = None if start_ns is None else day_of(start_ns)
    last_day = None if end_ns is None else day_of(end_ns - 1)
    wanted = list(dict.fromkeys([*columns, tcol, *[k for k in spec.keys if k != "network"]]))
    for folder in sorted(root.glob(f"{kind}/network=*/date=*")):
        net = unquote(folder.parent.name.split("=", 1)[1])
        day = folder.name.split("=", 1)[1]
        if (network is not None and net != network) or (first_day and day < first_day) or \
                (last_day and day > last_day):
            continue
        parts = []
        for path in sorted(folder.glob("*.parquet")):
            if path.name.startswith("."):
                continue
            table = pq.read_table(path, columns=wanted, filters=where)
            ts = table[tcol].cast(pa.int64()).to_numpy()
            keep = np.ones(len(ts), bool)
            if start_ns is not None:
                keep &= ts >= start_ns
            if end_ns is not None:
                keep &= ts < end_ns
            rel = path.relative_to(root).as_posix()
            if sources is not None:
                sources.append(SourceFile(rel, kind, _sha256(path), int(keep.sum()),
                                          int(ts[keep].min()) if keep.any() else None,
                                          int(ts[keep].max()) if keep.any() else None))
            table = table.filter(pa.array(keep))
            for i, f in enumerate(table.schema):
                if pa.types.is_timestamp(f.type):
                    table = table.set_column(i, f.name, table[f.name].cast(pa.int64()))
            parts.append(table.append_column("network", pa.array([net] * table.num_rows, pa.string()))
                         .append_column("file", pa.array([rel] * table.num_rows, pa.string())))
        if parts:
            yield drop_duplicates(pa.concat_tables(parts), list(spec.keys))


def load(root: str | Path, kind: str, columns: list[str], **options) -> pa.Table:
    """``day_tables`` in one table (for the small kinds: ticks, alerts)."""
    tables = list(day_tables(root, kind, columns, **options))
    if tables:
        return pa.concat_tables(tables)
    spec = KINDS[kind]
    wanted = list(dict.fromkeys([*columns, spec.time_column, *[k for k in spec.keys if k != "network"]]))
    fields = [spec.schema.field(c) for c in wanted]
    fields = [f.with_type(pa.int64()) if pa.types.is_timestamp(f.type) else f for f in fields]
    return pa.schema(fields + [pa.field("network", pa.string()), pa.field("file", pa.string())]).empty_table()


def day_of(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS, timezone.utc).strftime("%Y-%m-%d")


# -- the three sources of figures -------------------------------------------------------------


@dataclass
class Piece:
    """One contribution to a figure: gas mass over [start, end) from one record of one file."""

    network: str
    group: str              # customer class, or the alert id for released gas
    start_ns: int
    end_ns: int
    gas_kg: float
    file: str


def tick_pieces(ticks: pa.Table, max_gap_factor: float = 3.0) -> list[Piece]:
    """Gas burnt per tick (twin estimate): consumption x the tick's interval."""
    out = []
    nets = ticks["network"].to_pylist()
    ts_all = ticks["ts"].to_numpy()
    figures = ticks["figures"].to_pylist()
    files = ticks["file"].to_pylist()
    for net in sorted(set(nets)):
        idx = np.array([i for i, n in enumerate(nets) if n == net])
        idx = idx[np.argsort(ts_all[idx], kind="stable")]
        ts = ts_all[idx]
        gaps = np.diff(ts)
        median = float(np.median(gaps)) if len(gaps) else 0.0
        dt = np.concatenate([[median], gaps]) if len(gaps) else np.zeros(1)
        dt = np.minimum(dt, max_gap_factor * median)
        for j, i in enumerate(idx):
            rate = json.loads(figures[i] or "{}").get("consumption_kg_s")
            if rate is None or not math.isfinite(rate) or dt[j] <= 0:
                continue
            out.append(Piece(net, "all (twin estimate)", int(ts[j] - dt[j]), int(ts[j]), rate * dt[j] / NS,
                             files[i]))
    return out


def period_starts(ts_ns: np.ndarray, period: str) -> np.ndarray:
    """``period_start`` over an array."""
    ts_ns = np.asarray(ts_ns, np.int64)
    if period == "day":
        return ts_ns // DAY_NS * DAY_NS
    if period == "week":
        day = ts_ns // DAY_NS
        return (day - (day + 3) % 7) * DAY_NS
    unit = {"month": "M", "year": "Y"}[period]
    return ts_ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]").astype("datetime64[ns]").astype(np.int64)


def meter_cells(days: Iterable[pa.Table], classes: dict[str, str] | None, period: str,
                start_ns: int | None = None, end_ns: int | None = None) -> dict[tuple[int, str, str], Cell]:
    """Gas burnt per (period, network, customer class) from meter reads, one day folder at a
    time: each read's kg belongs to the interval ending at its stamp (so a read stamped at midnight
    closes the previous day). Bad quality and non-finite values are skipped."""
    names = sorted(set(classes.values())) if classes else ["metered"]
    points = pa.array(list(classes), pa.string()) if classes else None
    code = np.array([names.index(c) for c in classes.values()], np.int64) if classes else None
    cells: dict[tuple[int, str, str], Cell] = defaultdict(Cell)
    for t in days:
        if t.num_rows == 0:
            continue
        ts = t["ts"].to_numpy()
        value = t["value"].to_numpy(zero_copy_only=False).astype(float)
        keep = (t["quality"].to_numpy() != 2) & np.isfinite(value)
        if classes:
            idx = pc.fill_null(pc.index_in(t["point"], value_set=points), -1).to_numpy()
            keep &= idx >= 0
            cls = np.where(idx >= 0, code[np.maximum(idx, 0)], -1)
        else:
            keep &= pc.fill_null(pc.starts_with(t["source"], METER_SOURCE_PREFIX), False).to_numpy()
            cls = np.zeros(len(ts), np.int64)
        if start_ns is not None:
            keep &= ts - 1 >= start_ns
        if end_ns is not None:
            keep &= ts - 1 < end_ns
        if not keep.any():
            continue
        mask = pa.array(keep)
        g = pa.table({"p": period_starts(ts[keep] - 1, period), "n": t["network"].filter(mask), "c": cls[keep],
                      "v": value[keep], "ts": ts[keep], "f": t["file"].filter(mask)})
        agg = g.group_by(["p", "n", "c"], use_threads=False).aggregate(
            [("v", "sum"), ("v", "count"), ("ts", "min"), ("ts", "max"), ("f", "distinct")])
        for row in agg.to_pylist():
            c = cells[(row["p"], row["n"], names[row["c"]])]
            c.gas_kg += row["v_sum"]
            c.records += row["v_count"]
            c.first_ns = row["ts_min"] - 1 if c.first_ns is None else min(c.first_ns, row["ts_min"] - 1)
            c.last_ns = row["ts_max"] if c.last_ns is None else max(c.last_ns, row["ts_max"])
            c.files.update(row["f_distinct"])
    return cells


def _flow_kg_s(kind: str, evidence: dict, table: FactorTable) -> float | None:
    if kind == "leak" and evidence.get("estimated_flow") is not None:     # flows/detectors/leak.py, kg/s on gas
        return float(evidence["estimated_flow"])
    for key in LEAK_MASS_KEYS:
        if evidence.get(key) is not None:
            return float(evidence[key])
    for key in LEAK_VOLUME_KEYS:
        if evidence.get(key) is not None:
            return gas_mass_kg(table, volume_m3=float(evidence[key]))
    return None


def release_pieces(alerts: pa.Table, table: FactorTable, data_end: dict[str, int]) -> list[Piece]:
    """Gas released, from leak alerts (flow x time between revisions) and vent alerts."""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for row in alerts.to_pylist():
        by_id[row["id"]].append(row)
    out = []
    for aid, revs in sorted(by_id.items()):
        revs.sort(key=lambda r: r["revision"])
        net = revs[0]["network"]
        last = revs[-1]
        ev_last = json.loads(last["evidence"] or "{}")
        vented = ev_last.get("vented_kg")
        if vented is None and ev_last.get("vented_m3") is not None:
            vented = gas_mass_kg(table, volume_m3=float(ev_last["vented_m3"]))
        if vented is not None:
            t = last["opened_ts"] or last["updated_ts"]
            out.append(Piece(net, aid, t, t + 1, float(vented), last["file"]))
        for i, rev in enumerate(revs):
            ev = json.loads(rev["evidence"] or "{}")
            flow = _flow_kg_s(rev["kind"], ev, table)
            if flow is None or rev["status"] == "cleared":
                continue
            start = rev["updated_ts"]
            if i == 0:
                start = int(ev.get("start_ns", ev.get("leak_start_ns", rev["opened_ts"] or start)))
            if i + 1 < len(revs):
                end = revs[i + 1]["updated_ts"]
            else:
                end = rev["cleared_ts"] or data_end.get(net, start)
            if end > start:
                out.append(Piece(net, aid, start, end, flow * (end - start) / NS, rev["file"]))
    return out


# -- aggregation --------------------------------------------------------------------------------


def clip(pieces: list[Piece], start_ns: int | None, end_ns: int | None) -> list[Piece]:
    """The parts of ``pieces`` inside [start, end), their gas shared in proportion to time."""
    if start_ns is None and end_ns is None:
        return pieces
    lo = -(2**63) if start_ns is None else start_ns
    hi = 2**63 - 1 if end_ns is None else end_ns
    out = []
    for p in pieces:
        a, b = max(p.start_ns, lo), min(p.end_ns, hi)
        if b > a:
            share = (b - a) / (p.end_ns - p.start_ns)
            out.append(Piece(p.network, p.group, a, b, p.gas_kg * share, p.file))
    return out


@dataclass
class Cell:
    gas_kg: float = 0.0
    records: int = 0
    covered_ns: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    files: set = field(default_factory=set)


def aggregate(pieces: list[Piece], period: str) -> dict[tuple[int, str, str], Cell]:
    """Pieces summed by (period start, network, group); a piece across a boundary is shared in
    proportion to time."""
    cells: dict[tuple[int, str, str], Cell] = defaultdict(Cell)
    for p in pieces:
        span = p.end_ns - p.start_ns
        for start, a, b in split(p.start_ns, p.end_ns, period):
            c = cells[(start, p.network, p.group)]
            c.gas_kg += p.gas_kg * (b - a) / span
            c.records += 1
            c.covered_ns += b - a
            c.first_ns = a if c.first_ns is None else min(c.first_ns, a)
            c.last_ns = b if c.last_ns is None else max(c.last_ns, b)
            c.files.add(p.file)
    return cells


# -- the report ---------------------------------------------------------------------------------


@dataclass
class CarbonReport:
    period: str
    factors: FactorTable
    summary: list[dict]
    combustion: list[dict]
    methane: list[dict]
    sources: list[SourceFile]
    outputs: dict[str, str] = field(default_factory=dict)     # file name -> sha256

    def totals(self) -> dict:
        return {"combustion_co2_kg": sum(r["co2_kg"] for r in self.combustion if r["basis"] == "twin estimate"),
                "metered_co2_kg": sum(r["co2_kg"] for r in self.combustion if r["basis"] == "meters"),
                "gas_released_kg": sum(r["gas_released_kg"] for r in self.methane),
                "ch4_kg": sum(r["ch4_kg"] for r in self.methane),
                "methane_co2e_kg": sum(r["co2e_kg"] for r in self.methane)}

    def ledger_payload(self) -> dict:
        """What to append to the audit ledger: ``Ledger(path).append("report", report.ledger_payload())``."""
        return {"report": "carbon", "period": self.period, "totals": self.totals(), **self.factors.stamp(),
                "outputs": self.outputs, "sources": {s.path: s.sha256 for s in self.sources}}


def build_report(root: str | Path, period: str, factors: FactorTable | None = None, *,
                 network: str | None = None, start_ns: int | None = None, end_ns: int | None = None,
                 classes: dict[str, str] | None = None, max_gap_factor: float = 3.0) -> CarbonReport:
    if period not in PERIODS:
        raise ValueError(f"period {period!r} is not one of {PERIODS}")
    factors = factors or FactorTable()
    sources: list[SourceFile] = []
    opts = {"network": network, "start_ns": start_ns, "end_ns": end_ns, "sources": sources}
    # a tick or meter read stamped at or just after ``end`` still covers time before it: read a day
    # more and clip the pieces to the range
    later = {**opts, "end_ns": None if end_ns is None else end_ns + DAY_NS}
    ticks = load(root, "ticks", ["ts", "figures"], **later)
    meter_filter = pc.field("point").isin(list(classes)) if classes else \
        pc.starts_with(pc.field("source"), METER_SOURCE_PREFIX)
    readings = day_tables(root, "readings", ["point", "ts", "value", "quality", "source"], where=meter_filter,
                          **later)
    # every alert revision up to the end: a leak open since before ``start`` still leaks inside the range
    alerts = load(root, "alerts", ["id", "revision", "kind", "status", "opened_ts", "updated_ts", "cleared_ts",
                                   "evidence"], **{**opts, "start_ns": None})
    data_end: dict[str, int] = {}
    for net, ts in zip(ticks["network"].to_pylist(), ticks["ts"].to_pylist()):
        data_end[net] = max(data_end.get(net, ts), ts)
    for net, ts in zip(alerts["network"].to_pylist(), alerts["updated_ts"].to_pylist()):
        data_end.setdefault(net, ts)
        data_end[net] = max(data_end[net], ts)
    if end_ns is not None:
        data_end = {k: min(v, end_ns) for k, v in data_end.items()}

    def stamp(key, cell: Cell) -> dict:
        start, net, group = key
        return {"period": period_label(start, period), "period_start": iso(start), "network": net,
                "records": cell.records, "first_ts": iso(cell.first_ns), "last_ts": iso(cell.last_ns),
                "source_files": ";".join(sorted(cell.files))}

    def inside(pieces: list[Piece]) -> list[Piece]:
        return clip(pieces, start_ns, end_ns)

    combustion = []
    for basis, cells in (("twin estimate", aggregate(inside(tick_pieces(ticks, max_gap_factor)), period)),
                         ("meters", meter_cells(readings, classes, period, start_ns, end_ns))):
        for key, cell in sorted(cells.items()):
            start, net, group = key
            cls = "default" if basis == "twin estimate" else group
            r = combustion_co2(factors, mass_kg=cell.gas_kg, customer_class=cls)
            row = {**stamp(key, cell), "basis": basis, "customer_class": group, "gas_kg": cell.gas_kg,
                   "volume_m3_normal": r["volume_m3_normal"], "energy_gross_kwh": r["energy_gross_kwh"],
                   "energy_net_tj": r["energy_net_tj"], "co2_kg": r["co2_kg"], "cost": r["cost"],
                   "currency": r["currency"]}
            if basis == "twin estimate":
                row["coverage_s"] = cell.covered_ns / NS
                row["period_s"] = (next_period(start, period) - start) / NS
            combustion.append(row)
    methane: dict[tuple[int, str], dict] = {}
    for key, cell in sorted(aggregate(inside(release_pieces(alerts, factors, data_end)), period).items()):
        start, net, aid = key
        row = methane.setdefault((start, net), {**stamp(key, Cell()), "gas_released_kg": 0.0, "events": [],
                                               "records": 0, "files": set()})
        row["gas_released_kg"] += cell.gas_kg
        row["events"].append(aid)
        row["records"] += cell.records
        row["files"] |= cell.files
    methane_rows = []
    for (start, net), row in sorted(methane.items()):
        r = methane_released(factors, mass_kg=row["gas_released_kg"])
        lost = combustion_co2(factors, mass_kg=row["gas_released_kg"])
        methane_rows.append({**{k: v for k, v in row.items() if k not in ("files", "events")},
                             "ch4_kg": r["ch4_kg"], "co2_vented_kg": r["co2_vented_kg"], "co2e_kg": r["co2e_kg"],
                             "lost_gas_cost": lost["cost"], "currency": factors.currency,
                             "events": ";".join(sorted(row["events"])),
                             "source_files": ";".join(sorted(row["files"]))})
    summary: dict[tuple[str, str], dict] = {}
    for r in combustion:
        s = summary.setdefault((r["period"], r["network"]), _summary_row(r))
        if r["basis"] == "twin estimate":
            s["combustion_co2_kg"] += r["co2_kg"]
            s["gas_delivered_kg"] += r["gas_kg"]
            s["coverage_pct"] = 100.0 * r["coverage_s"] / r["period_s"]
        else:
            s["metered_gas_kg"] += r["gas_kg"]
    for r in methane_rows:
        s = summary.setdefault((r["period"], r["network"]), _summary_row(r))
        s["methane_kg"] += r["ch4_kg"]
        s["methane_co2e_kg"] += r["co2e_kg"]
    rows = []
    for _, s in sorted(summary.items()):
        s["total_co2e_kg"] = s["combustion_co2_kg"] + s["methane_co2e_kg"]
        rows.append({**s, **factors.stamp()})
    return CarbonReport(period, factors, rows, combustion, methane_rows, sources)


def _summary_row(r: dict) -> dict:
    return {"period": r["period"], "period_start": r["period_start"], "network": r["network"],
            "gas_delivered_kg": 0.0, "combustion_co2_kg": 0.0, "coverage_pct": None, "metered_gas_kg": 0.0,
            "methane_kg": 0.0, "methane_co2e_kg": 0.0}


# -- writing ------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


SUMMARY_COLUMNS = ["period", "period_start", "network", "gas_delivered_kg", "combustion_co2_kg", "coverage_pct",
                   "metered_gas_kg", "methane_kg", "methane_co2e_kg", "total_co2e_kg", "factors_version",
                   "factors_date", "factors_source"]
COMBUSTION_COLUMNS = ["period", "period_start", "network", "basis", "customer_class", "gas_kg", "volume_m3_normal",
                      "energy_gross_kwh", "energy_net_tj", "co2_kg", "cost", "currency", "coverage_s", "records",
                      "first_ts", "last_ts", "source_files"]
METHANE_COLUMNS = ["period", "period_start", "network", "gas_released_kg", "ch4_kg", "co2_vented_kg", "co2e_kg",
                   "lost_gas_cost", "currency", "events", "records", "first_ts", "last_ts", "source_files"]


def write_report(report: CarbonReport, out: str | Path) -> dict[str, str]:
    """CSV tables, the factor table as JSON, and ``carbon_<period>.html``; returns file -> sha256."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = report.period
    _write_csv(out / f"carbon_{p}_summary.csv", report.summary, SUMMARY_COLUMNS)
    _write_csv(out / f"carbon_{p}_combustion.csv", report.combustion, COMBUSTION_COLUMNS)
    _write_csv(out / f"carbon_{p}_methane.csv", report.methane, METHANE_COLUMNS)
    _write_csv(out / "carbon_sources.csv", [s.__dict__ | {"first_ts": iso(s.first_ts), "last_ts": iso(s.last_ts)}
                                            for s in report.sources],
               ["path", "kind", "sha256", "rows", "first_ts", "last_ts"])
    (out / "carbon_factors.json").write_text(json.dumps(report.factors.describe(), indent=2) + "\n",
                                             encoding="utf-8")
    (out / f"carbon_{p}.html").write_text(render_html(report), encoding="utf-8")
    names = [f"carbon_{p}_summary.csv", f"carbon_{p}_combustion.csv", f"carbon_{p}_methane.csv",
             "carbon_sources.csv", "carbon_factors.json", f"carbon_{p}.html"]
    report.outputs = {n: _sha256(out / n) for n in names}
    return report.outputs


def _table_html(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.6g}"
        text = "" if v is None else str(v)
        return html.escape(text if len(text) < 200 else text[:200] + " ...")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: CarbonReport) -> str:
    """One self-contained page: plotly.js is inlined once, so it opens offline."""
    import plotly.graph_objects as go

    f = report.factors
    d = f.describe()["derived"]
    nets = sorted({r["network"] for r in report.summary})
    figs = []
    co2 = go.Figure([go.Bar(name=n, x=[r["period"] for r in report.summary if r["network"] == n],
                            y=[r["combustion_co2_kg"] / 1e3 for r in report.summary if r["network"] == n])
                     for n in nets])
    co2.update_layout(barmode="stack", title="CO2 from combustion of delivered gas (t, twin estimate)",
                      yaxis_title="t CO2")
    figs.append(co2)
    ch4 = go.Figure([go.Bar(name=n, x=[r["period"] for r in report.summary if r["network"] == n],
                            y=[r["methane_co2e_kg"] / 1e3 for r in report.summary if r["network"] == n])
                     for n in nets])
    ch4.update_layout(barmode="stack", title=f"Methane released (t CO2e, GWP100 {f.gwp100_ch4})",
                      yaxis_title="t CO2e")
    figs.append(ch4)
    metered = [r for r in report.combustion if r["basis"] == "meters"]
    if metered:
        classes = sorted({r["customer_class"] for r in metered})
        fig = go.Figure([go.Bar(name=c, x=[r["period"] for r in metered if r["customer_class"] == c],
                                y=[r["energy_gross_kwh"] for r in metered if r["customer_class"] == c])
                         for c in classes])
        fig.update_layout(barmode="stack", title="Metered energy by customer class (kWh, gross CV)",
                          yaxis_title="kWh")
        figs.append(fig)
    plots = "".join(fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs))
    t = report.totals()
    method = f"""
<h2>Method</h2>
<ul>
<li>Gas burnt per zone: the twin's estimated consumption (historian <code>ticks</code>, figure
<code>consumption_kg_s</code>) times each tick's interval (capped at 3 median ticks; coverage shown).
Per customer class: meter reads in <code>readings</code> (kg per interval; bad quality skipped).</li>
<li>Energy = gas mass x calorific value: net {d['net_cv_j_m3'] / 1e6:.3f} MJ/m3, gross
{d['gross_cv_j_m3'] / 1e6:.3f} MJ/m3 at {f.normal_temperature_k - 273.15:g} degC and {f.normal_pressure_pa:g} Pa
(normal density {d['normal_density_kg_m3']:.4f} kg/m3, ideal gas, composition "{html.escape(f.composition.name)}").</li>
<li>CO2 = net energy x {f.ef_kg_co2_per_tj:,.0f} kg CO2/TJ ({html.escape(f.ef_source)}), i.e.
{d['ef_kg_co2_per_kg_gas']:.4f} kg CO2 per kg gas (carbon balance of the composition:
{d['carbon_balance_kg_co2_per_kg_gas']:.4f}).</li>
<li>Gas released: leak alerts' estimated flow integrated between alert revisions; vent alerts' volumes.
Methane = gas x methane mass fraction {d['methane_mass_fraction']:.4f}; CO2e = methane x GWP100
{f.gwp100_ch4} ({html.escape(f.gwp_source)}) + the gas's own CO2.</li>
<li>Cost: gross energy (kWh) x tariff per customer class {html.escape(json.dumps(f.tariffs))} {html.escape(f.currency)}
{html.escape(f.tariff_source)}.</li>
</ul>
<p>Factor table version <b>{html.escape(f.version)}</b> dated <b>{html.escape(f.date)}</b>
({html.escape(f.source)}). Composition: {html.escape(json.dumps(f.composition.mole_fractions))}
({html.escape(f.composition.source)}).</p>"""
    totals = "".join(f"<li>{html.escape(k)} = {v:,.6g}</li>" for k, v in t.items())
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pipetwin carbon report ({report.period})</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>Methane and CO2 report, by {report.period}</h1>
<p>Generated {iso(int(datetime.now(timezone.utc).timestamp() * NS))} from {len(report.sources)} historian files.</p>
<ul>{totals}</ul>
{plots}
<h2>Summary</h2>{_table_html(report.summary, SUMMARY_COLUMNS[:-3])}
<h2>Combustion</h2>{_table_html(report.combustion, COMBUSTION_COLUMNS)}
<h2>Methane released</h2>{_table_html(report.methane, METHANE_COLUMNS)}
{method}
<h2>Traceability: historian files read</h2>
{_table_html([s.__dict__ | {"first_ts": iso(s.first_ts), "last_ts": iso(s.last_ts)} for s in report.sources],
             ["path", "kind", "sha256", "rows", "first_ts", "last_ts"])}
</body></html>
"""


def load_classes(path: str | Path) -> dict[str, str]:
    """A ``point,class`` CSV: the customer class of each meter point."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"point", "class"} <= set(reader.fieldnames):
            raise ValueError(f"{path}, line 1: expected columns point,class; got {reader.fieldnames}")
        for row in reader:
            if not row["point"] or not row["class"]:
                raise ValueError(f"{path}, line {reader.line_num}: empty point or class")
            out[row["point"]] = row["class"]
    return out


def load_factors(path: str | Path) -> FactorTable:
    """A factor table from YAML (docs/carbon.md shows one); errors name the file."""
    import yaml

    from pipetwin.twin.carbon import factor_table_from_dict

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the factor table: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of factor names to values")
    try:
        return factor_table_from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
