"""Meter-end analytics as a live detector: every smart meter's closed hours, four customer-side
checks (a leak behind the meter, a sudden usage change, theft suspicion, a stopped meter).

The balance step closes each hour of meter reads (``flows/steps/balance.py``) and hands the
closed hours to the detectors on that tick's twin state (``figures[METER_HOURS]``: a list of
``(hour_end_ns, kg per meter)`` in the point table's meter order); this detector folds them into
``MeterEndModel`` (numpy over all meters at once) and reports, on every tick until the model
clears them, one finding per flagged meter, so the alert book keeps the alert open between hours.

>>> import numpy as np
>>> from pipetwin.flows.steps.balance import METER_HOURS
>>> d = MeterEnd([f"M-{i}" for i in range(20)], np.full(20, 1.0), np.zeros(20, np.int64),
...              stopped_hours=3)
>>> class S: figures = {}
>>> for h in range(1, 6):
...     x = np.full(20, 1.0); x[7] = 0.0
...     S.figures = {METER_HOURS: [(h * 3_600_000_000_000, x)]}
...     d.learn_one(S)
>>> [(f.kind, f.subject) for f in d.score_one(S)]
[('meter_stopped', 'M-7')]
"""

from __future__ import annotations

import math

import numpy as np

from pipetwin.connectors.points import PointTable
from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector
from pipetwin.flows.detectors.meter_end_model import FLAGS, MeterEndModel
from pipetwin.flows.steps.balance import METER_HOURS
from pipetwin.twin.model import NetworkModel

KIND = {"stopped": "meter_stopped", "theft": "meter_theft", "leak": "meter_leak", "change": "meter_usage_change"}
SEVERITY = {"stopped": "warning", "theft": "warning", "leak": "major", "change": "info"}
MODEL = "MeterEndModel (class-normalized hourly reads: zero run, EW ratio to class + robust z, CUSUM on log level, night minimum excess)"


def meter_classes(model: NetworkModel, points: PointTable, n_bands: int = 4, n_zones: int = 1) -> np.ndarray:
    """Peer classes: the meters' base-demand bands (quantiles), so a small flat is compared with
    small flats and a large house with large houses; with ``n_zones`` > 1 also by district (the
    twin's compact zones, ``make_zones``), so a class shares its weather region too."""
    rows = np.flatnonzero(np.array(points.protocol) == "meter")
    nodes = points.element_index[rows]
    base = model.base_demand()[nodes]
    if len(base) < 2 * n_bands:
        return np.zeros(len(base), np.int64)
    bands = np.digitize(base, np.quantile(base, np.linspace(0, 1, n_bands + 1)[1:-1])).astype(np.int64)
    if n_zones <= 1:
        return bands
    from pipetwin.twin.estimate.demand import make_zones

    zones = np.maximum(make_zones(model, n_zones)[nodes], 0)
    return zones * n_bands + bands


class MeterEnd(TickDetector):
    """Configuration: the meters' ids (meter order of the point table), their expected mean use
    (kg/h) and class, and ``MeterEndModel``'s options; ``max_findings`` caps what one tick reports
    (highest scores first) so a fleet-wide fault cannot flood the alert book."""

    def __init__(self, meter_ids: list[str], expected_kg_h: np.ndarray, classes: np.ndarray, *,
                 max_findings: int = 2000, **options):
        self.meter_ids, self.max_findings, self.options = list(meter_ids), max_findings, options
        self.model = MeterEndModel(expected_kg_h, classes, **options)
        self.hour_end_ns = 0
        self._findings: list[Finding] = []

    @classmethod
    def for_points(cls, model: NetworkModel, points: PointTable, *, n_bands: int = 4, n_zones: int = 1,
                   **options) -> MeterEnd:
        rows = np.flatnonzero(np.array(points.protocol) == "meter")
        base_kg_s = np.maximum(model.base_demand()[points.element_index[rows]], 0.0)
        return cls([points.ids[r] for r in rows], base_kg_s * 3600.0, meter_classes(model, points, n_bands, n_zones),
                   **options)

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {"meter_ids": ["M-1", "M-2"], "expected_kg_h": np.ones(2), "classes": np.zeros(2, np.int64)}

    def learn_one(self, state: TwinState) -> None:
        hours = state.figures.get(METER_HOURS)
        if not hours:
            return
        for end_ns, kg in hours:
            if len(kg) != len(self.meter_ids) or end_ns <= self.hour_end_ns:
                continue                     # another point table's meters, or an hour already seen
            self.model.update(int(end_ns), kg)
            self.hour_end_ns = int(end_ns)
        self._findings = self._build()

    def score_one(self, state: TwinState) -> list[Finding]:
        return list(self._findings)

    def _build(self) -> list[Finding]:
        s, m = self.model.state, self.model
        out = []
        for check, pos in self.model.flagged().items():
            if check == "stopped":
                score = s["zero_run"][pos] / m.stopped_hours
            elif check == "theft":
                score = np.maximum(m.theft_ratio / np.maximum(s["q_smooth"][pos], 1e-3), -s["theft_zs"][pos] / m.theft_z)
            elif check == "leak":
                floor = m.leak_frac * s["level"][pos] * m.expected_kg_h[pos]
                score = s["night_excess"][pos] / np.maximum(floor, 1e-12)
            else:
                score = np.maximum(s["s_up"][pos], s["s_down"][pos]) / m.change_h
            out.extend((check, int(p), float(v)) for p, v in zip(pos, score))
        out.sort(key=lambda t: -t[2] if math.isfinite(t[2]) else 0.0)
        return [self._finding(check, p, score) for check, p, score in out[: self.max_findings]]

    def _finding(self, check: str, p: int, score: float) -> Finding:
        s, m = self.model.state, self.model
        expected = float(m.expected_kg_h[p])
        level = float(s["level"][p])
        evidence = {"meter": self.meter_ids[p], "check": check, "hour_end_ns": self.hour_end_ns,
                    "class": int(m.classes[p]), "expected_mean_kg_h": expected,
                    "last_hour_ratio_to_class": _f(s["q_hour"][p]),
                    "ratio_to_class_ew": _f(s["q_smooth"][p]), "class_robust_z": _f(s["theft_zs"][p]),
                    "own_level_vs_class": level, "cusum_up": _f(s["s_up"][p]), "cusum_down": _f(s["s_down"][p]),
                    "zero_run_h": int(s["zero_run"][p]), "night_min_excess_kg_h": _f(s["night_excess"][p]),
                    "day_mean_excess_kg_h": _f(s["day_excess_mean"][p]), "model": MODEL}
        meter = self.meter_ids[p]
        if check == "stopped":
            msg = f"meter {meter} reads zero for {int(s['zero_run'][p])} h while its class consumes"
        elif check == "theft":
            msg = (f"meter {meter} reads {100 * _f(s['q_smooth'][p]):.0f} % of what its class predicts "
                   f"(class z {_f(s['theft_zs'][p]):.1f}): theft or a tampered meter suspected")
        elif check == "leak":
            flow = _f(s["night_excess"][p])
            msg = (f"meter {meter}: continuous flow all night, at least {flow:.3g} kg/h above the house's "
                   f"night use ({100 * flow / max(level * expected, 1e-12):.0f} % of its mean): leak behind the meter?")
        else:
            up = s["s_up"][p] >= s["s_down"][p]
            msg = (f"meter {meter}: sudden usage {'rise' if up else 'drop'}, now {100 * float(s['fast'][p]) / level:.0f} % "
                   f"of its usual level")
        return Finding(KIND[check], meter, SEVERITY[check], score, msg, evidence)

    def snapshot(self) -> dict:
        return {"model": self.model.snapshot(), "hour_end_ns": self.hour_end_ns}

    def restore(self, snap: dict) -> None:
        self.model.restore(snap["model"])
        self.hour_end_ns = int(snap["hour_end_ns"])
        self._findings = self._build()


def _f(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else float("nan")
