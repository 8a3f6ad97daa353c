"""What every meter feed shares (files, MQTT, Redis Stream): the error and counter records, and
the parsing of timestamps, values, status words and units (DESIGN.md, "Contracts").

Policies (also in ``docs/meter-feeds.md``):

* A reading's ``ts`` is the END of its interval, in UTC ns (the volume is known only then).
* A row whose meter is known and whose time parses but whose value does not becomes a ``bad``
  reading (value NaN): the gate sees the meter failing. A row with an unknown meter or a time that
  does not parse cannot become a reading; it goes to the error list as a :class:`RowError` naming
  file (or topic / stream entry), row and reason. Every case is counted in :class:`FeedStats`.
* Timestamps without a zone are UTC. Numbers are epoch seconds, milliseconds, microseconds or
  nanoseconds, told apart by magnitude (see :func:`epoch_to_ns`).

>>> epoch_to_ns(np.array([1.7e9, 1.7e12, 1.7e15])).tolist()
[1700000000000000000, 1700000000000000000, 1700000000000000000]
>>> quality_from_status(pa.array(["ok", "estimated", "error", None, "odd"])).tolist()
[0, 1, 2, 0, 1]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipetwin.connectors.points import normalize_unit, unit_registry
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN

NS = 1_000_000_000
MAX_ERRORS_KEPT = 10_000          # the in-memory error list is bounded; counts are not
_NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
STATUS_QUALITY = {
    "": GOOD, "0": GOOD, "ok": GOOD, "good": GOOD, "valid": GOOD, "a": GOOD, "actual": GOOD, "measured": GOOD,
    "1": UNCERTAIN, "e": UNCERTAIN, "estimated": UNCERTAIN, "estimate": UNCERTAIN, "substituted": UNCERTAIN,
    "s": UNCERTAIN, "uncertain": UNCERTAIN, "edited": UNCERTAIN, "interpolated": UNCERTAIN,
    "2": BAD, "bad": BAD, "error": BAD, "err": BAD, "invalid": BAD, "failed": BAD, "x": BAD,
}


# ----------------------------------------------------------------------------- errors and counts


@dataclass(frozen=True)
class RowError:
    """One input row that could not become a reading. ``where`` is a file, ``topic`` or
    ``stream``; ``row`` the 1-based data row (CSV: line = row + 1), or a stream entry id."""

    where: str
    row: int | str | None
    column: str
    meter_id: str | None
    problem: str


@dataclass
class FeedStats:
    """Counters every feed keeps, so that nothing is dropped without a number showing it."""

    files: int = 0
    unreadable_files: int = 0
    rows: int = 0
    readings: int = 0
    bad_values: int = 0            # emitted as bad readings
    unknown_meters: int = 0        # to the error list
    bad_timestamps: int = 0        # to the error list
    bad_payloads: int = 0          # MQTT / stream entries that are not what the mapping expects
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ErrorList(list):
    """A list of :class:`RowError` that keeps the most recent ``MAX_ERRORS_KEPT``."""

    def extend_bounded(self, errors: Iterable[RowError]) -> None:
        self.extend(errors)
        if len(self) > MAX_ERRORS_KEPT:
            del self[: len(self) - MAX_ERRORS_KEPT]


# ----------------------------------------------------------------------------- value, time, status parsing


def filled(arr, fill) -> np.ndarray:
    """An Arrow array as numpy with nulls replaced by ``fill``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


def epoch_to_ns(x: np.ndarray) -> np.ndarray:
    """Epoch numbers to ns, unit told by magnitude: < 1e11 seconds (until year 5138), < 1e14
    milliseconds, < 1e17 microseconds, else nanoseconds. Head-ends use all four."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    scale = np.where(a < 1e11, 1e9, np.where(a < 1e14, 1e6, np.where(a < 1e17, 1e3, 1.0)))
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), np.round(x * scale), 0).astype(np.int64)


def parse_time_text(text: str) -> int | None:
    """One timestamp as ISO 8601 (zone optional, UTC if absent) or an epoch number, in UTC ns."""
    text = text.strip()
    if not text:
        return None
    if re.match(_NUMBER, text):
        return int(epoch_to_ns(np.array([float(text)]))[0])
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def parse_timestamps(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC ns, parsed mask) for a column of timestamps, epoch numbers or text. Text is parsed once
    per distinct value: an hourly file has a handful of distinct times for a million rows."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            col = pc.assume_timezone(col, "UTC")
        ns = pc.cast(col, pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        ok = pc.is_valid(ns).to_numpy(zero_copy_only=False)
        return filled(ns, 0), ok
    if pa.types.is_date(t):
        ns = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        return filled(ns, 0) * NS, pc.is_valid(col).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = filled(pc.cast(col, pa.float64()), np.nan)
        return epoch_to_ns(x), np.isfinite(x)
    enc = pc.dictionary_encode(pc.cast(col, pa.string()))
    parsed = [parse_time_text(s) for s in enc.dictionary.to_pylist()]
    lut = np.array([0 if p is None else p for p in parsed] + [0], np.int64)
    lut_ok = np.array([p is not None for p in parsed] + [False])
    idx = filled(enc.indices, len(parsed)).astype(np.int64)
    return lut[idx], lut_ok[idx]


def parse_values(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(float64, parsed mask). Text that is not a plain decimal number (``1,5``, ``n/a``, empty)
    is not parsed: NaN with the mask False, so the row becomes a bad reading, not a guess."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        v = filled(pc.cast(col, pa.float64()), np.nan).astype(np.float64)
        return v, np.isfinite(v)
    text = pc.cast(col, pa.string())
    ok = filled(pc.match_substring_regex(text, _NUMBER), False).astype(bool)
    v = filled(pc.cast(pc.utf8_trim_whitespace(pc.if_else(pa.array(ok), text, None)), pa.float64()), np.nan)
    return v.astype(np.float64), ok


def quality_from_status(col: pa.Array | pa.ChunkedArray | None, n: int = 0) -> np.ndarray:
    """Head-end status words to quality (``STATUS_QUALITY``); missing status is good, a word we do
    not know is uncertain (the meter said something we cannot judge)."""
    if col is None:
        return np.full(n, GOOD, np.int8)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    enc = pc.dictionary_encode(pc.cast(col, pa.string()))
    words = [("" if w is None else w.strip().lower()) for w in enc.dictionary.to_pylist()]
    lut = np.array([STATUS_QUALITY.get(w, UNCERTAIN) for w in words] + [GOOD], np.int8)
    return lut[filled(enc.indices, len(words)).astype(np.int64)]


def unit_factor(unit: str, point_unit: str) -> float:
    """Factor from a value in ``unit`` (as written in the feed) to the point's unit; NaN when
    they do not convert (kWh against m3): those rows become bad readings."""
    if unit.strip() == point_unit.strip() or not unit.strip():
        return 1.0
    try:
        u, basis = normalize_unit(unit)
        p, pbasis = normalize_unit(point_unit)
        return float(unit_registry().Quantity(1.0, u).to(p).magnitude) * basis / pbasis
    except Exception:       # pint raises several kinds for unknown or mismatched units
        return float("nan")


# ----------------------------------------------------------------------------- batch building


def reading_batch(point_ids: pa.Array, ts_ns: np.ndarray, values: np.ndarray, quality: np.ndarray,
                  source: str) -> pa.RecordBatch:
    """A Reading batch from columns already aligned (fast path for a million rows; non-finite
    values are marked bad, as ``readings_batch`` does)."""
    q = np.where(np.isfinite(values), quality, BAD).astype(np.int8)
    n = len(values)
    return pa.RecordBatch.from_arrays(
        [point_ids, pa.array(np.asarray(ts_ns, np.int64), pa.timestamp("ns", tz="UTC")),
         pa.array(np.asarray(values, np.float64)), pa.array(q, pa.int8()),
         pa.repeat(pa.scalar(source, pa.string()), n)], schema=READING_SCHEMA)


__all__ = [
    "NS", "MAX_ERRORS_KEPT", "STATUS_QUALITY", "RowError", "FeedStats", "ErrorList", "filled", "epoch_to_ns",
    "parse_time_text", "parse_timestamps", "parse_values", "quality_from_status", "unit_factor", "reading_batch",
]
