"""Per-sensor anomaly findings: one online model (``SeasonalAnomaly``) on each sensor's measured stream and
one on its residual against the twin. The residual model is the more telling one: it fires when a
sensor disagrees with the physics the twin has fitted; the measured model catches what the twin
cannot judge (a sensor it does not estimate, or one whose estimate follows it).

The flow calls ``learn_one(state)`` then ``score_one(state)`` on the same tick; so ``learn_one``
scores the tick before learning it (a model that had learnt a point first would half-expect it)
and ``score_one`` reports those scores."""

from __future__ import annotations

import math

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.anomaly_model import SeasonalAnomaly
from pipetwin.flows.detectors.base import Finding, TickDetector

STREAMS = ("measured", "residual")


class SensorAnomaly(TickDetector):
    """``threshold``: the model score from which a finding is raised. The score is on the anomaly-likelihood
    log scale (0.5: a likelihood of 1 - 1e-5; 0.7: 1 - 1e-7). NAB's best corpus threshold is near 0.5, but
    NAB charges a false alarm a tenth of a missed anomaly; a control room wants fewer, hence 0.7. A finding
    also starts the model's refractory period (one finding per episode). ``model_params`` go to every
    ``SeasonalAnomaly``."""

    def __init__(self, threshold: float = 0.7, streams: tuple[str, ...] = STREAMS, model_params: dict | None = None):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"SensorAnomaly: threshold must be in (0, 1], got {threshold}")
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"SensorAnomaly: unknown stream(s) {sorted(unknown)}; choose from {STREAMS}")
        self.threshold, self.streams = threshold, tuple(streams)
        self.model_params = dict(model_params or {})
        self.models: dict[tuple[str, str], SeasonalAnomaly] = {}
        self.pending: list[dict] = []
        self.pending_ns: int | None = None

    def _model(self, key: tuple[str, str]) -> SeasonalAnomaly:
        m = self.models.get(key)
        if m is None:
            # the model's refractory period follows our findings; a residual is noise around zero, so
            # "beyond the range seen so far" says nothing there
            params = {"alarm": self.threshold, **({"spatial": 0.0} if key[1] == "residual" else {}),
                      **self.model_params}
            m = self.models[key] = SeasonalAnomaly(**params)
        return m

    def _values(self, state: TwinState, i: int) -> dict[str, float]:
        measured, estimated = float(state.sensor_measured[i]), float(state.sensor_estimated[i])
        out = {}
        if math.isfinite(measured):
            if "measured" in self.streams:
                out["measured"] = measured
            if "residual" in self.streams and math.isfinite(estimated):
                out["residual"] = measured - estimated
        return out

    def _score(self, state: TwinState) -> list[dict]:
        t = state.ts_ns / 1e9
        rows = []
        for i, pid in enumerate(state.sensor_ids):
            for stream, x in self._values(state, i).items():
                m = self._model((pid, stream))
                rows.append({"i": i, "pid": pid, "stream": stream, "value": x,
                             "expected": m.expected(t), "score": m.score_one(x, t)})
        return rows

    def learn_one(self, state: TwinState) -> None:
        self.pending, self.pending_ns = self._score(state), state.ts_ns
        t = state.ts_ns / 1e9
        for row in self.pending:
            self._model((row["pid"], row["stream"])).learn_one(row["value"], t)

    def score_one(self, state: TwinState) -> list[Finding]:
        rows = self.pending if self.pending_ns == state.ts_ns else self._score(state)
        out = []
        for r in rows:
            if r["score"] < self.threshold:
                continue
            i = r["i"]
            measured, estimated = float(state.sensor_measured[i]), float(state.sensor_estimated[i])
            what = "disagrees with the twin" if r["stream"] == "residual" else "departs from its usual pattern"
            out.append(Finding(
                "anomaly", r["pid"], "major" if r["score"] >= 0.9 else "warning", float(r["score"]),
                f"{r['pid']} {what}: {r['value']:,.4g} where {r['expected']:,.4g} was expected "
                f"(score {r['score']:.2f})",
                {"stream": r["stream"], "value": r["value"], "expected": r["expected"], "measured": measured,
                 "estimated": estimated, "residual": measured - estimated,
                 "model": "SeasonalAnomaly (EW level / time-of-day profile, anomaly likelihood)"}))
        return out

    def snapshot(self) -> dict:
        return {"models": {f"{pid}\x1f{stream}": m.snapshot() for (pid, stream), m in self.models.items()},
                "pending": [dict(r) for r in self.pending], "pending_ns": self.pending_ns}

    def restore(self, snap: dict) -> None:
        self.models = {}
        for key, s in snap["models"].items():
            pid, stream = key.split("\x1f")
            self._model((pid, stream)).restore(s)
        self.pending, self.pending_ns = [dict(r) for r in snap["pending"]], snap["pending_ns"]
