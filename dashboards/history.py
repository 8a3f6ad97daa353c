"""What the drill-down and data-quality pages read from the Parquet historian.

The historian's layout is a documented contract (docs/historian.md):
``ROOT/<kind>/network=<name>/date=YYYY-MM-DD/*.parquet``. Only the day folders a query spans are
opened (partition pruning), and only the columns it needs, so a year's statistics stay cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

QUALITY_NAMES = {0: "good", 1: "uncertain", 2: "bad"}
PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30),
           "year": timedelta(days=365)}


def _files(root: str | Path, kind: str, network: str, start: datetime, end: datetime) -> list[str]:
    folder = Path(root) / kind / f"network={network}"
    if not folder.is_dir():
        return []
    first, last = start.date().isoformat(), end.date().isoformat()
    out = []
    for day in sorted(folder.glob("date=*")):
        if first <= day.name[5:] <= last:
            out.extend(str(p) for p in sorted(day.glob("*.parquet")))
    return out


def read(root: str | Path, kind: str, network: str, start: datetime, end: datetime,
         columns: list[str], points: list[str] | None = None) -> pa.Table:
    """Rows of one kind between ``start`` and ``end`` (UTC), optionally for some points only.
    Repeats of the same record (at-least-once writes) are removed."""
    files = _files(root, kind, network, start, end)
    if not files:
        return pa.table({c: pa.array([], pa.float64()) for c in columns})
    time_col = "updated_ts" if kind == "alerts" else "ts"
    data = ds.dataset(files, format="parquet")
    lo = pa.scalar(start, pa.timestamp("ns", tz="UTC"))
    hi = pa.scalar(end, pa.timestamp("ns", tz="UTC"))
    flt = (ds.field(time_col) >= lo) & (ds.field(time_col) <= hi)
    if points is not None:
        flt = flt & ds.field("point").isin(points)
    table = data.to_table(columns=columns, filter=flt)
    if table.num_rows == 0:
        return table
    keys = [c for c in ("point", time_col, "source") if c in columns]
    return unique(table.sort_by([(k, "ascending") for k in keys]), keys)


def unique(table: pa.Table, keys: list[str]) -> pa.Table:
    """Drop rows whose keys repeat the previous row's (the table is sorted by ``keys``)."""
    if table.num_rows < 2:
        return table
    same = np.ones(table.num_rows - 1, bool)
    for k in keys:
        col = table[k]
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        v = np.asarray(col.to_numpy(zero_copy_only=False))
        same &= v[1:] == v[:-1]
    return table.filter(pa.array(np.concatenate([[True], ~same])))


def series(root: str | Path, network: str, point: str, period: str = "day",
           now: datetime | None = None) -> pa.Table:
    """A sensor's measured and estimated values (and residual) over the last ``period``."""
    end = now or datetime.now(timezone.utc)
    return read(root, "states", network, end - PERIODS[period], end,
                ["point", "ts", "measured", "estimated", "residual"], [point])


def statistics(table: pa.Table, columns: tuple[str, ...] = ("measured", "estimated")) -> dict[str, dict]:
    """min / max / mean / count of each column (nulls and NaN left out)."""
    out = {}
    for c in columns:
        if c not in table.column_names:
            continue
        v = table[c].to_numpy(zero_copy_only=False).astype(float)
        v = v[np.isfinite(v)]
        out[c] = ({"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "count": int(len(v))}
                  if len(v) else {"min": None, "max": None, "mean": None, "count": 0})
    return out


def quality_counts(root: str | Path, network: str, point: str, period: str = "day",
                   now: datetime | None = None) -> dict[str, int]:
    """How many readings of each quality the point delivered over the period (accepted ones)."""
    end = now or datetime.now(timezone.utc)
    t = read(root, "readings", network, end - PERIODS[period], end, ["point", "ts", "source", "quality"], [point])
    if t.num_rows == 0:
        return {}
    q = t["quality"].to_numpy(zero_copy_only=False)
    return {QUALITY_NAMES.get(int(k), str(k)): int((q == k).sum()) for k in np.unique(q)}


def completeness(root: str | Path, network: str, points: pa.Table, window: timedelta,
                 now: datetime | None = None) -> pa.Table:
    """Per point: readings received over ``window`` against what its expected period promises,
    plus quarantined readings by reason. ``points`` is the published point table."""
    end = now or datetime.now(timezone.utc)
    start = end - window
    got = read(root, "readings", network, start, end, ["point", "ts", "source"])
    counts: dict[str, int] = {}
    if got.num_rows:
        vc = pc.value_counts(got["point"])
        counts = {v["values"].as_py(): v["counts"].as_py() for v in vc}
    bad = read(root, "quarantine", network, start, end, ["point", "ts", "reason"])
    reasons: dict[str, dict[str, int]] = {}
    if bad.num_rows:
        for p, r in zip(bad["point"].to_pylist(), bad["reason"].to_pylist()):
            reasons.setdefault(p, {}).setdefault(r, 0)
            reasons[p][r] += 1
    ids = points["point"].to_pylist()
    period = points["period_s"].to_numpy(zero_copy_only=False)
    expected = np.where(period > 0, window.total_seconds() / np.where(period > 0, period, 1.0), np.nan)
    received = np.array([counts.get(p, 0) for p in ids], float)
    share = np.where(expected > 0, np.minimum(received / np.where(expected > 0, expected, 1.0), 1.0), np.nan)
    return pa.table({
        "point": ids, "protocol": points["protocol"], "quantity": points["quantity"],
        "expected": expected, "received": received, "completeness": share,
        "quarantined": [sum(reasons.get(p, {}).values()) for p in ids],
        "reasons": [", ".join(f"{r} {n}" for r, n in sorted(reasons.get(p, {}).items())) for p in ids],
    })
