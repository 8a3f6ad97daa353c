"""The data-quality gate: every Reading batch splits into ``accepted`` and ``quarantined`` (STYLE
§1.10, "bad data is a stream, not an exception"). Per-point completeness and gaps of the accepted
stream are counted by ``connectors/completeness.py``.

Checks, in the order they are tried (the first one that fails names the ``reason``):

================  ===========================================================================
reason            meaning
================  ===========================================================================
unknown_point     the point id is not in the point table (no range, period or limits to check)
not_finite        the value is NaN or infinite
bad_quality       the source already said ``bad``: kept out of ``accepted`` but stored, so the
                  quarantine holds everything that did not reach the twin
future            ``ts`` is more than ``max_future_s`` ahead of the clock
past              ``ts`` is more than ``max_past_s`` behind the clock
out_of_range      outside the point's ``[min_si, max_si]``
duplicate         same point and ``ts`` as an accepted reading, same value (a re-delivery)
conflict          same point and ``ts`` as an accepted reading, another value
late              older than the point's newest accepted reading by more than ``late_window_s``
rate              changed faster than the point's rate limit since its last accepted reading
================  ===========================================================================

Policies, and why:

- **Order is arrival order.** The stateful checks (duplicate, conflict, late, rate, stuck) walk the
  rows as they arrive, each point against its own last *accepted* reading, so the outcome does not
  depend on where a stream is cut into batches, and a snapshot taken between two batches resumes
  exactly (a bytewax recovery replays the same decisions).
- **Late data within the window is accepted** (``late_window_s``, default one hour: meter feeds
  and store-and-forward RTUs deliver out of order). It is counted (``late_accepted``) and checked
  against the point's recent history (the last ``history`` accepted timestamps) for duplicates and
  conflicts, but not for rate: the rate check follows the forward sequence. It does not move the
  point's "newest" state.
- **Rate limits in SI per second**, against the last accepted reading plus the point's deadband
  (quantization slack): pressure 10 kPa/s, temperature 0.5 K/s, level 0.5 m/s; flow and demand as
  a fraction (0.5) of the point's valid span per second, because their SI unit is kg/s for gas and
  m3/s for water and sizes span three decades. Volume, valve state and gas concentration are not
  rate-checked (meter volumes and valve states jump by nature). ``point_rate_limits`` overrides per
  point (``math.inf`` switches it off).
- **A step is not a spike for ever.** Rejecting against the last accepted value would lock a
  point out after a real step change (a regulator switching setpoint). When ``confirm_after``
  consecutive rate-rejected readings agree with each other (each within the rate limit of the one
  before), the last of them is accepted and becomes the new reference (counted as
  ``rate_rebased``). A spike shorter than that stays quarantined.
- **Stuck is a flag, not a quarantine.** A flat pressure can be real (a regulator holding its
  setpoint, an integer register). After ``stuck_after`` identical consecutive values (or
  ``stuck_after_s`` seconds of them) of a quantity that should move, readings are *accepted with
  quality set to uncertain* and counted (``stuck``), so the twin can lower their weight.

Invariant, per batch and in the running ``totals``: ``received == accepted + quarantined`` and
``quarantined`` is the sum of the per-reason counts. Nothing is dropped silently.

The per-row stateful walk is a small numba kernel over numpy arrays (a Python loop per reading
would be far too slow): ``pipetwin.kernels.quality.stateful_checks``. The stateless checks are numpy
over the whole batch.

>>> from pipetwin.connectors.points import points_from_columns
>>> from pipetwin.connectors.reading import readings_batch
>>> table = points_from_columns(["PT-1"], "pressure", min_si=1.0e5, max_si=5.0e5)
>>> gate = QualityGate(table, clock=lambda: 10 * 10**9)
>>> res = gate.process(readings_batch(["PT-1", "PT-1", "PT-9", "PT-1"], [10**9, 2 * 10**9, 10**9, 2 * 10**9],
...                                   [2.0e5, 9.0e5, 2.0e5, 2.0e5], 0, "test"))
>>> res.accepted.num_rows, res.quarantined.column("reason").to_pylist()
(2, ['out_of_range', 'unknown_point'])
>>> res.stats["received"] == res.stats["accepted"] + res.stats["quarantined"]
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN, point_rows, timestamps_ns
from pipetwin.kernels import quality as kernel

NS = 1_000_000_000
NO_TS = np.iinfo(np.int64).min

# reason codes: 0 is accepted; the order is the order of the checks
REASONS = ("accepted", "unknown_point", "not_finite", "bad_quality", "future", "past", "out_of_range",
           "duplicate", "conflict", "late", "rate")
(OK, UNKNOWN, NOT_FINITE, BAD_QUALITY, FUTURE, PAST, OUT_OF_RANGE,
 DUPLICATE, CONFLICT, LATE, RATE) = range(len(REASONS))
QUARANTINE_REASONS = REASONS[1:]
# the stateful kernel writes the last four codes itself
assert (DUPLICATE, CONFLICT, LATE, RATE) == (kernel.DUPLICATE, kernel.CONFLICT, kernel.LATE, kernel.RATE)

# flags on accepted rows (bit set), set by the stateful kernel
FLAG_STUCK, FLAG_LATE, FLAG_REBASED = kernel.FLAG_STUCK, kernel.FLAG_LATE, kernel.FLAG_REBASED

QUARANTINE_SCHEMA = READING_SCHEMA.append(pa.field("reason", pa.string(), nullable=False)).append(
    pa.field("detail", pa.string(), nullable=False))

DEFAULT_RATE_LIMITS = {"pressure": 10_000.0, "temperature": 0.5, "level": 0.5}   # SI per second
DEFAULT_SPAN_RATES = {"flow": 0.5, "demand": 0.5}          # fraction of the valid span per second
DEFAULT_STUCK_QUANTITIES = ("pressure", "flow", "temperature", "level")


@dataclass
class GateResult:
    """One batch through the gate: ``accepted`` in the Reading schema (stuck readings downgraded
    to uncertain), ``quarantined`` in ``QUARANTINE_SCHEMA`` (original quality, plus ``reason`` and
    ``detail``), both in arrival order, and the batch's counters."""

    accepted: pa.RecordBatch
    quarantined: pa.RecordBatch
    stats: dict[str, int] = field(default_factory=dict)


def empty_stats() -> dict[str, int]:
    """All counters at zero, so every key is always present."""
    keys = ("received", "accepted", "quarantined", *QUARANTINE_REASONS, "stuck", "late_accepted",
            "rate_rebased")
    return {k: 0 for k in keys}


# ----------------------------------------------------------------------------------------------
# the gate


class QualityGate:
    """Splits Reading batches into accepted and quarantined; see the module docstring for the
    checks and policies. Constructor arguments are configuration, kept as given; the per-point
    state lives in arrays indexed by point row and round-trips through ``snapshot``/``restore``.

    ``clock`` returns "now" in ns (``time.time_ns`` live, the replay clock in replays, a fixed
    value in tests); it is read once per batch.
    """

    def __init__(self, points: PointTable, *, max_future_s: float = 300.0, max_past_s: float = 7 * 86400.0,
                 late_window_s: float = 3600.0, stuck_after: int = 600, stuck_after_s: float | None = None,
                 stuck_quantities: Sequence[str] = DEFAULT_STUCK_QUANTITIES,
                 rate_limits: Mapping[str, float] | None = None,
                 span_rates: Mapping[str, float] | None = None,
                 point_rate_limits: Mapping[str, float] | None = None, confirm_after: int = 3,
                 history: int = 4, clock: Callable[[], int] = time.time_ns):
        if stuck_after < 2 or confirm_after < 1 or history < 1:
            raise ValueError("stuck_after >= 2, confirm_after >= 1 and history >= 1 are needed")
        self.points = points
        self.max_future_s, self.max_past_s, self.late_window_s = max_future_s, max_past_s, late_window_s
        self.stuck_after, self.stuck_after_s, self.stuck_quantities = stuck_after, stuck_after_s, stuck_quantities
        self.rate_limits, self.span_rates, self.point_rate_limits = rate_limits, span_rates, point_rate_limits
        self.confirm_after, self.history, self.clock = confirm_after, history, clock
        self._ids = pa.array(points.ids, pa.string())
        self._rate = self.rate_limit_si_s()
        self._stuck_on = np.array([q in stuck_quantities for q in points.quantity], bool)
        self._lo = np.where(np.isnan(points.min_si), -np.inf, points.min_si)
        self._hi = np.where(np.isnan(points.max_si), np.inf, points.max_si)
        self._deadband = np.nan_to_num(np.asarray(points.deadband_si, float))
        self._fresh_state()

    # -- configuration ------------------------------------------------------------------------

    def rate_limit_si_s(self) -> np.ndarray:
        """Per point rate limit in SI units per second (``inf``: not checked)."""
        absolute = {**DEFAULT_RATE_LIMITS, **(self.rate_limits or {})}
        span_rates = {**DEFAULT_SPAN_RATES, **(self.span_rates or {})}
        span = self.points.max_si - self.points.min_si
        out = np.full(len(self.points), np.inf)
        for i, q in enumerate(self.points.quantity):
            if q in absolute:
                out[i] = absolute[q]
            elif q in span_rates and np.isfinite(span[i]):
                out[i] = span_rates[q] * span[i]
        index = self.points.index()
        for pid, limit in (self.point_rate_limits or {}).items():
            if pid not in index:
                raise KeyError(f"point_rate_limits: {pid!r} is not in point table {self.points.site!r}")
            out[index[pid]] = limit
        return out

    # -- state --------------------------------------------------------------------------------

    def _fresh_state(self) -> None:
        n, k = len(self.points), self.history
        self._state = {
            "last_ts": np.full(n, NO_TS, np.int64), "last_v": np.zeros(n), "run_n": np.zeros(n, np.int64),
            "run_start": np.zeros(n, np.int64), "pend_n": np.zeros(n, np.int64),
            "pend_ts": np.zeros(n, np.int64), "pend_v": np.zeros(n), "hist_ts": np.full((n, k), NO_TS, np.int64),
            "hist_v": np.zeros((n, k)), "hist_pos": np.zeros(n, np.int64),
        }
        self.totals = empty_stats()

    def snapshot(self) -> dict:
        """Plain picklable copy of the state: point ids, per-point arrays, running totals."""
        return {"ids": list(self.points.ids), "arrays": {k: a.copy() for k, a in self._state.items()},
                "totals": dict(self.totals)}

    def restore(self, snapshot: dict) -> None:
        """Resume from ``snapshot()``. Points are matched by id, so a point table that gained
        points starts them fresh and one that lost points forgets them."""
        self._fresh_state()
        old = {p: i for i, p in enumerate(snapshot["ids"])}
        new_rows = np.array([i for i, p in enumerate(self.points.ids) if p in old], np.int64)
        old_rows = np.array([old[self.points.ids[i]] for i in new_rows], np.int64)
        same_history = snapshot["arrays"]["hist_ts"].shape[1] == self.history
        for key, arr in snapshot["arrays"].items():
            if key.startswith("hist") and not same_history:
                continue          # history length changed: the rings start empty
            self._state[key][new_rows] = arr[old_rows]
        self.totals = {**empty_stats(), **snapshot["totals"]}

    # -- the work -----------------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch) -> GateResult:
        """Split one batch. Raises only for a batch that is not in the Reading schema (a bug in
        the caller, not bad data)."""
        if batch.schema.names != READING_SCHEMA.names:
            raise TypeError(f"QualityGate.process: expected columns {READING_SCHEMA.names}, got {batch.schema.names}")
        rows = point_rows(self._ids, batch.column("point"))
        ts = timestamps_ns(batch.column("ts"))
        v = batch.column("value").to_numpy(zero_copy_only=False)
        q = batch.column("quality").to_numpy(zero_copy_only=False)
        code, ref = self._stateless_checks(rows, ts, v, q, self.clock())
        flag = np.zeros(len(rows), np.int8)
        s = self._state
        kernel.stateful_checks(np.maximum(rows, 0), ts, v, code, flag, ref, self._rate, self._deadband,
                               self._stuck_on, self.stuck_after,
                               -1 if self.stuck_after_s is None else int(self.stuck_after_s * NS),
                               int(self.late_window_s * NS), self.confirm_after, s["last_ts"], s["last_v"],
                               s["run_n"], s["run_start"], s["pend_n"], s["pend_ts"], s["pend_v"], s["hist_ts"],
                               s["hist_v"], s["hist_pos"])
        result = self._split(batch, rows, ts, v, q, code, flag, ref)
        for key, n in result.stats.items():
            self.totals[key] += n
        return result

    def _stateless_checks(self, rows, ts, v, q, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Reason codes from checks that need no history, first failure wins; ``ref`` holds the
        figure the detail quotes (seconds off the clock, the violated bound)."""
        n = len(rows)
        code = np.zeros(n, np.int8)
        ref = np.zeros(n)
        known = rows >= 0
        r = np.maximum(rows, 0)
        lo, hi = self._lo[r], self._hi[r]
        off_s = (ts - now_ns) / NS
        checks = (
            (UNKNOWN, ~known, None),
            (NOT_FINITE, ~np.isfinite(v), None),
            (BAD_QUALITY, q >= BAD, None),
            (FUTURE, off_s > self.max_future_s, off_s),
            (PAST, -off_s > self.max_past_s, -off_s),
            (OUT_OF_RANGE, (v < lo) | (v > hi), np.where(v < lo, lo, hi)),
        )
        for reason, failed, figure in checks:
            hit = failed & (code == OK)
            code[hit] = reason
            if figure is not None:
                ref[hit] = figure[hit]
        return code, ref

    def _split(self, batch, rows, ts, v, q, code, flag, ref) -> GateResult:
        keep = code == OK
        stuck = (flag & FLAG_STUCK) != 0
        quality = np.where(stuck & (q == GOOD), np.int8(UNCERTAIN), q).astype(np.int8)
        cols = [batch.column(0), batch.column(1), batch.column(2), pa.array(quality, pa.int8()), batch.column(4)]
        mask = pa.array(keep)
        accepted = pa.RecordBatch.from_arrays(cols, schema=READING_SCHEMA).filter(mask)
        quarantined = self._quarantine(batch.filter(pc.invert(mask)), rows[~keep], ts[~keep], v[~keep],
                                       code[~keep], ref[~keep])
        counts = np.bincount(code, minlength=len(REASONS))
        stats = empty_stats()
        stats.update(received=len(code), accepted=int(counts[OK]), quarantined=len(code) - int(counts[OK]),
                     stuck=int(stuck.sum()), late_accepted=int(((flag & FLAG_LATE) != 0).sum()),
                     rate_rebased=int(((flag & FLAG_REBASED) != 0).sum()))
        for c, name in enumerate(REASONS[1:], start=1):
            stats[name] = int(counts[c])
        return GateResult(accepted, quarantined, stats)

    def _quarantine(self, bad: pa.RecordBatch, rows, ts, v, code, ref) -> pa.RecordBatch:
        reason = pc.take(pa.array(REASONS, pa.string()), pa.array(code.astype(np.int32)))
        detail = self._details(rows, v, code, ref)
        return pa.RecordBatch.from_arrays([*bad.columns, reason, detail], schema=QUARANTINE_SCHEMA)

    # -- detail text (vectorized with pyarrow: one string per quarantined row) ----------------

    def _details(self, rows, v, code, ref) -> pa.Array:
        """A short human sentence per quarantined row quoting the figures that failed."""
        if len(code) == 0:
            return pa.array([], pa.string())
        r = np.maximum(rows, 0)
        templates = {
            UNKNOWN: lambda m: [f"not in point table {self.points.site!r}"],
            NOT_FINITE: lambda m: ["value=", _num(v[m])],
            BAD_QUALITY: lambda m: ["source reported quality bad"],
            FUTURE: lambda m: ["ts ", _num(ref[m]), f" s ahead of the clock (max {self.max_future_s:g} s)"],
            PAST: lambda m: ["ts ", _num(ref[m]), f" s behind the clock (max {self.max_past_s:g} s)"],
            OUT_OF_RANGE: lambda m: ["value=", _num(v[m]), " outside [", _num(self._lo[r[m]]), ", ",
                                     _num(self._hi[r[m]]), "]"],
            DUPLICATE: lambda m: ["same ts and value as an accepted reading"],
            CONFLICT: lambda m: ["value=", _num(v[m]), ", accepted value at this ts=", _num(ref[m])],
            LATE: lambda m: ["", _num(ref[m]), f" s older than the newest accepted (window {self.late_window_s:g} s)"],
            RATE: lambda m: ["rate ", _num(ref[m]), " /s > limit ", _num(self._rate[r[m]]), " /s"],
        }
        positions, parts = [], []
        for c in np.unique(code):
            where = np.flatnonzero(code == c)
            pieces = templates[int(c)](where)
            arrays = [p if isinstance(p, pa.Array) else pa.array(np.full(len(where), p, object), pa.string())
                      for p in pieces]
            parts.append(arrays[0] if len(arrays) == 1 else pc.binary_join_element_wise(*arrays, ""))
            positions.append(where)
        order = np.argsort(np.concatenate(positions), kind="stable")
        return pa.concat_arrays(parts).take(pa.array(order))


def _num(x: np.ndarray) -> pa.Array:
    """Numbers as short text (6 significant digits) for detail strings."""
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(x) & (x != 0), np.floor(np.log10(np.abs(x))), 0)
    rounded = np.where(np.isfinite(x), np.round(x / 10.0 ** (mag - 5)) * 10.0 ** (mag - 5), x)
    return pc.cast(pa.array(rounded), pa.string())
