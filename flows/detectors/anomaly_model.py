"""An online anomaly model for one sensor's stream, with river's protocol (``learn_one``/``score_one``),
scores in [0, 1].

Why this shape: a raw deviation is only alarming relative to how this stream usually deviates, and a
gas or water stream swings every day and every week. So the model (1) predicts each value from a
slow level (EW mean) and from a time-of-day profile learnt online, keeping whichever has explained
the stream better, so the daily cycle is expected, not surprising; (2) turns the prediction error into
a robust z against the running mean absolute error; (3) passes the averaged z through Numenta's
"anomaly likelihood" (how unusual the last few surprises are against the long-run distribution of
surprises), so the score means the same on a noisy stream and a quiet one, and one threshold serves
every sensor; (4) reports a cluster of surprises once: a detection holds the score down for a
refractory period, because an operator (and NAB) wants the first alarm, not a repeat of it.
river's running statistics (``stats.EWMean``) are not used per point: the model does its own float
arithmetic so that one point costs a few microseconds on the hot path.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

_LOG_EPS = math.log(1.0000000001 - 0.9999999999)     # log-likelihood scale of Numenta's detector
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _seconds(t) -> float | None:
    if t is None or isinstance(t, (int, float)):
        return t
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    raise TypeError(f"timestamp must be seconds, datetime or None, not {type(t).__name__}")


def _tail(z: float) -> float:
    """Upper tail probability of a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class SeasonalAnomaly:
    """Online univariate anomaly model. ``score_one(x, t)`` then ``learn_one(x, t)`` per point; ``t`` in
    seconds (or a datetime) lets the time-of-day profile learn the daily cycle, ``None`` switches it off.
    The state is ``snapshot()``: a plain dict of floats and lists, picklable."""

    def __init__(self, level_alpha: float = 0.02, err_alpha: float = 0.003, slot_s: float = 1800.0,
                 slot_alpha: float = 0.15, slot_min_visits: int = 2, window: int = 20,
                 hist_alpha: float = 0.002, warmup: int = 150, refractory: int = 100, spatial: float = 0.05,
                 z_max: float = 30.0, alarm: float = 0.5):
        self.level_alpha, self.err_alpha = level_alpha, err_alpha
        self.slot_s, self.slot_alpha, self.slot_min_visits = slot_s, slot_alpha, slot_min_visits
        self.window, self.hist_alpha, self.warmup = window, hist_alpha, warmup
        self.refractory, self.spatial, self.z_max, self.alarm = refractory, spatial, z_max, alarm
        self._n_slots = max(1, int(round(86400.0 / slot_s)))
        self.restore(self._fresh())

    def _fresh(self) -> dict:
        return {"n": 0, "level": 0.0, "err_level": 0.0, "err_season": 0.0,
                "slot_mean": [0.0] * self._n_slots, "slot_visits": [0] * self._n_slots, "last_slot": -1,
                "recent": [0.0] * self.window, "recent_sum": 0.0, "hist_mean": 0.0, "hist_var": 0.0,
                "lo": math.inf, "hi": -math.inf, "since_alarm": 1 << 30, "last_score": 0.0}

    def snapshot(self) -> dict:
        s = dict(self.__dict__["_s"])
        s["slot_mean"], s["slot_visits"], s["recent"] = list(s["slot_mean"]), list(s["slot_visits"]), list(s["recent"])
        return s

    def restore(self, snap: dict) -> None:
        s = dict(snap)
        s["slot_mean"], s["slot_visits"], s["recent"] = list(s["slot_mean"]), list(s["slot_visits"]), list(s["recent"])
        self._s = s

    # -- the model -------------------------------------------------------------------------------------------
    def _slot(self, ts: float | None) -> int:
        return -1 if ts is None else int(ts // self.slot_s) % self._n_slots

    def expected(self, t=None) -> float:
        """What the model expects now: the time-of-day profile once it explains the stream better."""
        s = self._s
        k = self._slot(_seconds(t))
        if k >= 0 and s["slot_visits"][k] >= self.slot_min_visits and s["err_season"] < s["err_level"]:
            return s["slot_mean"][k]
        return s["level"]

    def _surprise(self, x: float, k: int) -> float:
        s = self._s
        if s["n"] == 0:
            return 0.0
        seasonal = k >= 0 and s["slot_visits"][k] >= self.slot_min_visits and s["err_season"] < s["err_level"]
        if seasonal:
            err, scale = x - s["slot_mean"][k], s["err_season"]
        else:
            err, scale = x - s["level"], s["err_level"]
        return min(abs(err) / (scale + 1e-9 * (abs(s["level"]) + 1.0)), self.z_max)

    def _likelihood(self, z: float) -> float:
        """Anomaly likelihood of the averaged surprise (Numenta), on its log scale in [0, 1]."""
        s = self._s
        avg = (s["recent_sum"] - s["recent"][s["n"] % self.window] + z) / self.window
        sd = math.sqrt(s["hist_var"]) if s["hist_var"] > 0 else 0.0
        if sd <= 0.0:
            return 0.0
        likelihood = 1.0 - _tail((avg - s["hist_mean"]) / max(sd, 0.03 * s["hist_mean"] + 1e-6))
        return min(1.0, math.log(1.0000000001 - likelihood) / _LOG_EPS)

    def score_one(self, x: float, t=None) -> float:
        s = self._s
        if s["n"] < self.warmup:
            return 0.0
        x = float(x)
        z = self._surprise(x, self._slot(_seconds(t)))
        score = self._likelihood(z)
        span = s["hi"] - s["lo"]
        if self.spatial and span > 0 and (x > s["hi"] + self.spatial * span or x < s["lo"] - self.spatial * span):
            score = 1.0
        if s["since_alarm"] < self.refractory:
            score *= s["since_alarm"] / self.refractory * self.alarm
        return score

    def learn_one(self, x: float, t=None) -> None:
        s = self._s
        x = float(x)
        k = self._slot(_seconds(t))
        score = self.score_one(x, t)
        z = self._surprise(x, k)
        # surprise history (Numenta's moving average, then its long-run distribution)
        i = s["n"] % self.window
        s["recent_sum"] += z - s["recent"][i]
        s["recent"][i] = z
        if s["n"] >= 3 * self.window:
            avg = s["recent_sum"] / self.window
            a = max(self.hist_alpha, 1.0 / (s["n"] - 3 * self.window + 1))
            d = avg - s["hist_mean"]
            s["hist_mean"] += a * d
            s["hist_var"] = (1 - a) * (s["hist_var"] + a * d * d)
        # alarms restart the refractory period
        s["since_alarm"] = 0 if (score >= self.alarm and s["since_alarm"] >= self.refractory) else s["since_alarm"] + 1
        # predictions and their errors
        if s["n"] == 0:
            s["level"] = x
        else:
            a = max(self.level_alpha, 1.0 / (s["n"] + 1))
            ae = max(self.err_alpha, 1.0 / (s["n"] + 1))
            s["err_level"] += ae * (abs(x - s["level"]) - s["err_level"])
            s["level"] += a * (x - s["level"])
            if k >= 0:
                if s["slot_visits"][k] >= self.slot_min_visits:
                    s["err_season"] += ae * (abs(x - s["slot_mean"][k]) - s["err_season"])
                else:
                    s["err_season"] += ae * (abs(x - s["level"]) - s["err_season"])
        if k >= 0:
            if k != s["last_slot"]:
                s["slot_visits"][k] += 1
                s["last_slot"] = k
            v = s["slot_visits"][k]
            if v == 1 and s["slot_mean"][k] == 0.0:
                s["slot_mean"][k] = x
            else:
                s["slot_mean"][k] += max(self.slot_alpha, 1.0 / (v + 1)) * (x - s["slot_mean"][k])
        s["lo"], s["hi"] = min(s["lo"], x), max(s["hi"], x)
        s["last_score"] = score
        s["n"] += 1
