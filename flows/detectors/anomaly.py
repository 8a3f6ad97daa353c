"""Per-sensor anomaly findings for the live flow, on two streams of each sensor:

- ``residual`` (measured minus the twin's estimate), every tick, by ``ResidualWatch``: the telling one. A real
  change in the network is seen by every sensor and explained by the twin; a sensor that drifts, jumps, sticks
  or turns noisy disagrees with the physics the twin has fitted to all the others.
- ``measured``, by ``SeasonalAnomaly`` (the model scored on NAB) on the sensor's ``every_s`` means: what the twin
  cannot judge (a sensor it does not estimate, or a day that looks unlike the usual days). It says nothing
  before it has seen ``seasonal_warmup_s`` (two days) of the sensor: before the daily cycle is known, the
  morning peak itself would look anomalous. It learns each weekday's level from the first day of it
  (``day_types``): a gas network's weekend is no alarm from the first week on, while the weekly profile
  needs two (tests/test_anomaly_detector.py, issue 5).

Messages are in the sensor's own unit (from the point table, when given) with as many decimals as its noise
deserves, so an operator reads the value, the twin's estimate and the gap.

The flow calls ``learn_one(state)`` then ``score_one(state)`` on the same tick; ``learn_one`` judges the tick
before learning it (a model that had learnt a point first would half-expect it) and ``score_one`` reports it.
"""

from __future__ import annotations

import copy
import math

from pipetwin.connectors.points import PointTable
from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.anomaly_model import DAY_S, SeasonalAnomaly
from pipetwin.flows.detectors.base import Finding, TickDetector
from pipetwin.flows.detectors.residual_watch import ResidualWatch

STREAMS = ("measured", "residual")
SI_UNITS = {"pressure": "Pa", "temperature": "K", "level": "m"}
FAULT_TEXT = {"offset": "drifts or is offset from the twin", "spike": "jumped for a moment",
              "noisy": "has turned noisy", "stuck": "looks stuck"}


class SensorAnomaly(TickDetector):
    """``points``: the point table, for units in messages (SI without it). ``residual``: ``ResidualWatch``
    parameters (thresholds in standard deviations; defaults calibrated on the simulator, see its docstring).
    ``seasonal``: ``SeasonalAnomaly`` parameters for the measured stream, fed every ``every_s`` seconds with
    the mean reading; ``threshold`` is its score from which a finding is raised (on the anomaly-likelihood
    log scale: 0.7 means a likelihood of 1 - 1e-7; NAB's best is near 0.5, but NAB charges a false alarm a
    tenth of a miss, a control room wants fewer). ``flow_rel``: the smallest offset reported on a sensor that is
    not a pressure, as a fraction of the twin's estimate (without a point table, a value above 1000 is taken
    for a pressure in Pa)."""

    def __init__(self, points: PointTable | None = None, streams: tuple[str, ...] = STREAMS,
                 residual: dict | None = None, seasonal: dict | None = None, every_s: float = 300.0,
                 threshold: float = 0.7, seasonal_warmup_s: float = 2 * DAY_S, flow_rel: float = 0.05):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"SensorAnomaly: threshold must be in (0, 1], got {threshold}")
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"SensorAnomaly: unknown stream(s) {sorted(unknown)}; choose from {STREAMS}")
        if every_s <= 0:
            raise ValueError(f"SensorAnomaly: every_s must be positive, got {every_s}")
        self.streams, self.threshold, self.every_s = tuple(streams), threshold, float(every_s)
        self.residual_params = dict(residual or {})
        self.seasonal_params = {"alarm": threshold, "warmup_s": seasonal_warmup_s, "day_types": True,
                                **(seasonal or {})}
        self.units, self.flow_rel = _units(points), flow_rel
        self.quantity = dict(zip(points.ids, points.quantity)) if points is not None else {}
        self.watch: dict[str, ResidualWatch] = {}
        self.seasonal: dict[str, SeasonalAnomaly] = {}
        self.window: dict[str, list] = {}         # pid -> [window index, sum, count]
        self.held: dict[str, Finding] = {}        # pid -> the measured stream's finding, shown until its next window
        self.held_until: dict[str, int] = {}
        self.pending: list[Finding] = []
        self.pending_ns: int | None = None

    # -- judging one tick ------------------------------------------------------------------------------------
    def learn_one(self, state: TwinState) -> None:
        self.pending, self.pending_ns = self._judge(state), state.ts_ns

    def score_one(self, state: TwinState) -> list[Finding]:
        if self.pending_ns == state.ts_ns:
            return list(self.pending)
        return copy.deepcopy(self)._judge(state)      # judged without learning the tick

    def _judge(self, state: TwinState) -> list[Finding]:
        t = state.ts_ns / 1e9
        out: dict[str, Finding] = {}
        for i, pid in enumerate(state.sensor_ids):
            x, est = float(state.sensor_measured[i]), float(state.sensor_estimated[i])
            if not math.isfinite(x):
                continue                       # no reading: the data-quality detector speaks, not this one
            if "measured" in self.streams:
                f = self._measured(pid, x, t, state.ts_ns)
                if f is not None:
                    out[pid] = f
            if "residual" in self.streams and math.isfinite(est):
                w = self.watch.get(pid)
                if w is None:
                    w = self.watch[pid] = ResidualWatch(**self.residual_params)
                spread1 = math.sqrt(w.s["var"])
                faults = w.update(x - est, x, t)
                if self.quantity.get(pid, "pressure" if abs(est) > 1e3 else "flow") != "pressure":
                    # a flow's residual wanders with line pack while demand ramps (the twin is steady-state):
                    # an offset counts once it is ``flow_rel`` of the flow
                    faults = [f for f in faults
                              if f[0] != "offset" or abs(x - est - w.expected()) >= self.flow_rel * abs(est)]
                if faults:
                    out[pid] = self._residual_finding(pid, x, est, w, spread1, max(faults, key=lambda f: f[1]))
        return _isolate(list(out.values()))

    def _measured(self, pid: str, x: float, t: float, ts_ns: int) -> Finding | None:
        """Feed the window mean to the seasonal model when a window closes; hold its finding one window."""
        k = int(t // self.every_s)
        win = self.window.get(pid)
        found = None
        if win is not None and k != win[0]:
            mean, t_mid = win[1] / win[2], (win[0] + 0.5) * self.every_s
            m = self.seasonal.get(pid)
            if m is None:
                m = self.seasonal[pid] = SeasonalAnomaly(**self.seasonal_params)
            expected = m.expected(t_mid)
            score = m.score_one(mean, t_mid)
            m.learn_one(mean, t_mid)
            if score >= self.threshold:
                self.held[pid] = self._seasonal_finding(pid, mean, expected, score)
                self.held_until[pid] = ts_ns + int(self.every_s * 1e9)
            win = None
        if win is None:
            win = self.window[pid] = [k, 0.0, 0]
        win[1] += x
        win[2] += 1
        if pid in self.held:
            if ts_ns < self.held_until[pid]:
                found = self.held[pid]
            else:
                del self.held[pid], self.held_until[pid]
        return found

    # -- messages ----------------------------------------------------------------------------------------------
    def _fmt(self, pid: str, si: float, spread_si: float, *, difference: bool = False) -> str:
        unit, scale, offset = self.units.get(pid, ("", 1.0, 0.0))
        v = si / scale if difference else (si - offset) / scale
        spread = abs(spread_si / scale)
        decimals = 0 if spread <= 0 or not math.isfinite(spread) else min(max(-math.floor(math.log10(spread)), 0), 6)
        return f"{v:,.{decimals}f} {unit}".rstrip()

    def _residual_finding(self, pid: str, x: float, est: float, w: ResidualWatch, spread1: float,
                          fault: tuple[str, float, float]) -> Finding:
        kind, ratio, stat = fault
        gap, usual, spread_min = x - est, w.expected(), w.spread()
        res = spread1 or spread_min or abs(gap) * 1e-3
        side = "above" if gap >= 0 else "below"
        head = (f"{pid} {FAULT_TEXT[kind]}: reads {self._fmt(pid, x, res)}, {self._fmt(pid, abs(gap), res, difference=True)} "
                f"{side} the twin's estimate of {self._fmt(pid, est, res)}")
        if kind == "offset":
            tail = (f"; usually {self._fmt(pid, usual, res, difference=True)} (±{self._fmt(pid, spread_min, res, difference=True)}"
                    f" over a minute)")
        elif kind == "spike":
            tail = f"; its readings usually scatter by {self._fmt(pid, spread1, res, difference=True)}"
        elif kind == "noisy":
            tail = (f"; its readings scatter by {self._fmt(pid, spread1 * math.sqrt(stat), res, difference=True)} over the"
                    f" last minute, usually {self._fmt(pid, spread1, res, difference=True)}")
        else:
            tail = f"; the same value for {w.s['same_s']:.0f} s"
        return Finding("anomaly", pid, "warning", float(ratio), head + tail,
                       {"stream": "residual", "fault": kind, "value": x, "expected": est + usual, "measured": x,
                        "estimated": est, "residual": gap, "usual_residual": usual, "statistic": stat,
                        "threshold": w.limits[kind],
                        "model": "ResidualWatch (1-min mean vs baseline, spike, variance ratio, repeats)"})

    def _seasonal_finding(self, pid: str, mean: float, expected: float, score: float) -> Finding:
        m = self.seasonal[pid]
        res = m.snapshot()["err_level"] or abs(mean) * 1e-3
        gap = mean - expected
        return Finding("anomaly", pid, "major" if score >= 0.9 else "warning", float(score),
                       f"{pid} departs from its usual pattern: {self._fmt(pid, mean, res)} over the last "
                       f"{self.every_s / 60:.0f} min where {self._fmt(pid, expected, res)} was usual at this hour "
                       f"({self._fmt(pid, abs(gap), res, difference=True)} {'above' if gap >= 0 else 'below'}; "
                       f"score {score:.2f})",
                       {"stream": "measured", "value": mean, "expected": expected, "score": score,
                        "model": "SeasonalAnomaly (EW level / daily and weekly profiles, anomaly likelihood)"})

    # -- state ---------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"watch": {p: w.snapshot() for p, w in self.watch.items()},
                "seasonal": {p: m.snapshot() for p, m in self.seasonal.items()},
                "window": copy.deepcopy(self.window), "held": copy.deepcopy(self.held),
                "held_until": dict(self.held_until), "pending": copy.deepcopy(self.pending),
                "pending_ns": self.pending_ns}

    def restore(self, snap: dict) -> None:
        self.watch = {}
        for p, s in snap["watch"].items():
            self.watch[p] = ResidualWatch(**self.residual_params)
            self.watch[p].restore(s)
        self.seasonal = {}
        for p, s in snap["seasonal"].items():
            self.seasonal[p] = SeasonalAnomaly(**self.seasonal_params)
            self.seasonal[p].restore(s)
        self.window, self.held = copy.deepcopy(snap["window"]), copy.deepcopy(snap["held"])
        self.held_until, self.pending = dict(snap["held_until"]), copy.deepcopy(snap["pending"])
        self.pending_ns = snap["pending_ns"]


def _isolate(findings: list[Finding]) -> list[Finding]:
    """One offset sensor pulls the twin's fit, and with it its neighbours' residuals by a fraction of its own:
    among residual offsets seen on the same tick, keep those at least half as strong as the strongest."""
    offsets = [f.score for f in findings if f.evidence.get("fault") == "offset"]
    if len(offsets) < 2:
        return findings
    top = max(offsets)
    return [f for f in findings if f.evidence.get("fault") != "offset" or f.score >= 0.5 * top]


def _units(points: PointTable | None) -> dict[str, tuple[str, float, float]]:
    """pid -> (unit, SI per unit, SI offset) so that value in unit = (SI - offset) / scale."""
    if points is None:
        return {}
    out = {}
    for i, pid in enumerate(points.ids):
        unit = points.unit[i] or SI_UNITS.get(points.quantity[i], "")     # as the point table (and SCADA) shows it
        out[pid] = (unit, float(points.si_scale[i]), float(points.si_offset[i]))
    return out
