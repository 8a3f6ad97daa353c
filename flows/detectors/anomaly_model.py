"""An online anomaly model for one sensor's stream, with river's protocol (``learn_one``/``score_one``),
scores in [0, 1].

Why this shape: a raw deviation is only alarming relative to how this stream usually deviates, and a
gas or water stream swings every day and every week. So the model

1. predicts each value three ways: a level (EW mean), a daily profile and a weekly profile (curves learnt
   online, interpolated between half-hour knots, each usable once its knots have been visited twice);
   each model keeps its running mean absolute error;
2. calls a value surprising only if no *competent* model (error within ``competent`` x the best one)
   expects it: z = min |x - prediction| / usual error over those. The daily profile misses the weekend,
   the weekly one is noisier; together they explain both, so daily and weekly cycles raise no alarm,
   while a spike, a step, or a lost cycle (a flat line where a cycle was expected) is surprising to all.
   The weekly profile needs two weeks, so with ``day_types`` (the live flow's measured streams; not NAB's,
   where it costs 4 points) the daily profile learns a day's shape net of its weekday's map, and each
   weekday's map (an offset, learnt from the first points of that weekday on, and a gain, from its second
   day on) is learnt alongside: the first weekend's dip is explained within its first hour, a step on a
   weekday already seen is news. Near midnight, where one day type eases into the next at an hour the
   model does not know, it accepts anything between the two days' maps; and the range rule below
   works on values net of their weekday's map;
3. passes z averaged over the last ``window`` points through Numenta's "anomaly likelihood" (how
   unusual the recent surprise is against the long-run distribution of surprises), on its log scale,
   so the score means the same on a noisy stream and a quiet one and one threshold serves every
   sensor; a value beyond the range seen so far (by ``spatial`` = 2 % of it) scores 1 at once, as
   Numenta's detector does. The same holds in the space of surprises: a point whose level surprise
   (|x - level| / its usual error, the plainest model) beats every earlier one by ``record`` (50 %), once
   ``record_after`` points have set the record, scores 1: a jump inside the range seen so far can still be
   the largest deviation the stream has ever made (an early transient no longer hides it behind the range).
   Nothing is scored before ``warmup`` points and (if set) ``warmup_s`` seconds
   of data: the live flow's measured streams wait for two daily cycles, NAB's files for 150 points;
4. reports a cluster of surprises once: an alarm (score >= ``alarm``) holds later likelihood scores
   below ``alarm`` for ``refractory`` points, because an operator (and NAB) wants the first alarm, not
   repeats of it. A new extreme (or a record surprise) still gets through once (it is news), then has its
   own refractory period;
5. with ``shape`` (keyword arguments of ``ShapeNovelty``; NAB's bench sets it, the live flow does not) a
   window of the stream unlike every shape learnt so far scores too (``shape_novelty``): a change of shape
   inside the usual range (a daily peak gone missing, a switch to oscillation) that no prediction above
   finds surprising. It is held by any alarm's refractory period, and does not hold the rules above back.

The defaults were chosen on the whole NAB corpus (one parameter set for every file; ``pipetwin bench
nab``) and checked on synthetic demand-like signals (tests/test_anomaly_detector.py).
river's running statistics are not used per point: the model does its own float arithmetic (a dict of
floats and lists), so one point costs some 20 us and the state pickles as it is.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime, timezone

from pipetwin.flows.detectors.shape_novelty import ShapeNovelty

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
_LOG_EPS = math.log(1.0000000001 - 0.9999999999)     # log-likelihood scale of Numenta's detector
_SQRT2 = math.sqrt(2.0)


def seconds(t) -> float | None:
    """A timestamp as epoch seconds (datetimes without a zone are taken as UTC)."""
    if t is None or isinstance(t, (int, float)):
        return t
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    raise TypeError(f"timestamp must be seconds, datetime or None, not {type(t).__name__}")


class SeasonalAnomaly:
    """Online univariate anomaly model. ``score_one(x, t)`` then ``learn_one(x, t)`` per point; ``t`` in
    seconds (or a datetime) lets the seasonal profile learn the daily and weekly cycles, ``None`` leaves the
    level model alone. ``snapshot()``/``restore()``: the whole state as a plain, picklable dict."""

    def __init__(self, level_alpha: float = 0.02, err_alpha: float = 0.003, slot_s: float = 1800.0,
                 slot_alpha: float = 0.15, slot_min_visits: int = 2, periods: tuple[float, ...] = (DAY_S, WEEK_S),
                 window: int = 20, hist_alpha: float = 0.0001, warmup: int = 150, refractory: int = 100,
                 spatial: float = 0.02, z_max: float = 30.0, alarm: float = 0.5, competent: float = 2.0,
                 spatial_z: float = 1.5, warmup_s: float = 0.0, record: float = 0.5, record_after: int = 300,
                 day_types: bool = False, day_alpha: float = 0.002, day_edge_s: float = 3 * 3600.0,
                 day_prior: float = 6.0, day_gain_limits: tuple[float, float] = (0.5, 2.0),
                 shape: dict | None = None):
        self.level_alpha, self.err_alpha = level_alpha, err_alpha
        self.slot_s, self.slot_alpha, self.slot_min_visits = slot_s, slot_alpha, slot_min_visits
        self.periods = tuple(float(p) for p in periods)
        self.window, self.hist_alpha, self.warmup = window, hist_alpha, warmup
        self.refractory, self.spatial, self.z_max, self.alarm = refractory, spatial, z_max, alarm
        self.competent, self.spatial_z, self.warmup_s = competent, spatial_z, warmup_s
        self.record, self.record_after = record, record_after
        self.day_types, self.day_alpha, self.day_edge_s = day_types, day_alpha, day_edge_s
        self.day_prior, self.day_gain_limits = day_prior, tuple(day_gain_limits)
        if day_types and DAY_S not in self.periods:
            raise ValueError("SeasonalAnomaly: day_types needs the daily profile (DAY_S in periods)")
        self._daily = self.periods.index(DAY_S) if day_types else -1
        self._n_knots = [max(2, int(round(p / slot_s))) for p in self.periods]
        self.shape = dict(shape) if shape is not None else None
        self._shape = ShapeNovelty(**self.shape) if self.shape is not None else None
        self.restore(self._fresh())

    def _fresh(self) -> dict:
        return {"n": 0, "level": 0.0, "err_level": 0.0,
                "knots": [[0.0] * k for k in self._n_knots], "visits": [[0] * k for k in self._n_knots],
                "last_knot": [-1] * len(self.periods), "err_profile": [0.0] * len(self.periods),
                "day_offset": [0.0] * 7, "day_seen": [0] * 7, "day_gain": [1.0] * 7, "day_date": [-1] * 7,
                "day_fit": [[0.0, 0.0, 0.0, 0.0] for _ in range(7)],
                "recent": [0.0] * self.window, "recent_sum": 0.0, "hist_mean": 0.0, "hist_var": 0.0,
                "lo": math.inf, "hi": -math.inf, "since_alarm": 1 << 30, "since_extreme": 1 << 30,
                "t_first": None, "t_last": None, "z_record": 0.0, "since_record": 1 << 30, "since_any": 1 << 30,
                "shape": ShapeNovelty(**self.shape).state if self.shape is not None else None}

    def snapshot(self) -> dict:
        return copy.deepcopy(self._s)

    def restore(self, snap: dict) -> None:
        self._s = copy.deepcopy(snap)
        for key, value in self._fresh().items():      # a snapshot from before a key existed starts it afresh
            self._s.setdefault(key, value)
        if self._shape is not None:
            if self._s["shape"] is None:                # a snapshot of a model without the shape rule
                self._s["shape"] = ShapeNovelty(**self.shape).state
            self._shape.state = self._s["shape"]
        self._cache = None          # score_one's evaluation of a point, reused by learn_one on the same point

    # -- predictions -------------------------------------------------------------------------------------
    def _knots(self, j: int, ts: float) -> tuple[int, int, float, int]:
        """Profile j's two knots around ``ts``, the weight of the second, and the nearest knot."""
        n = self._n_knots[j]
        p = (ts % self.periods[j]) / self.slot_s - 0.5
        f = math.floor(p)
        w = p - f
        k0 = int(f) % n
        k1 = (k0 + 1) % n
        return k0, k1, w, (k1 if w >= 0.5 else k0)

    def _profile(self, j: int, ts: float | None) -> float | None:
        """Profile j's prediction, or None while its knots have not been seen often enough."""
        if ts is None:
            return None
        k0, k1, w, _ = self._knots(j, ts)
        visits = self._s["visits"][j]
        if visits[k0] < self.slot_min_visits or visits[k1] < self.slot_min_visits:
            return None
        knots = self._s["knots"][j]
        return (1.0 - w) * knots[k0] + w * knots[k1]

    def _profiles(self, ts: float | None, x: float | None = None) -> tuple[list[float | None], tuple | None]:
        """Each profile's prediction, and (with ``day_types`` and a timestamp) (weekday, the daily shape) for
        learning. With ``day_types`` the daily profile is a day's shape net of its day type and predicts this
        weekday's map of it (gain x shape + offset, see ``_learn_day``); within ``day_edge_s`` of midnight,
        where one day type eases into the next at a time the model does not know, it predicts (given ``x``)
        the point nearest x of the band between the two days' maps."""
        out = [self._profile(j, ts) for j in range(len(self.periods))]
        j = self._daily
        if j < 0 or ts is None:
            return out, None
        d, shape = _weekday(ts), out[j]
        if shape is not None:
            off, g = self._s["day_offset"], self._s["day_gain"]
            pred = g[d] * shape + off[d]
            if x is not None:
                phase = ts % DAY_S
                near = (d - 1) % 7 if phase < self.day_edge_s else (d + 1) % 7 if phase > DAY_S - self.day_edge_s else d
                other = g[near] * shape + off[near]
                lo, hi = (pred, other) if pred < other else (other, pred)
                pred = lo if x < lo else hi if x > hi else x
            out[j] = pred
        return out, (d, shape)

    def expected(self, t=None) -> float:
        """What the model expects now: the prediction of whichever model has explained the stream best."""
        s = self._s
        pred, err = s["level"], s["err_level"]
        for p, e in zip(self._profiles(seconds(t))[0], s["err_profile"]):
            if p is not None and e < err:
                pred, err = p, e
        return pred

    # -- scoring -----------------------------------------------------------------------------------------
    def _surprise(self, x: float, profiles: list[float | None]) -> float:
        """|error| / usual |error| of the competent model (error within ``competent`` x the best) that expects x
        most: the daily profile misses the weekend, the weekly one is noisier, together they explain both."""
        s = self._s
        if s["n"] == 0:
            return 0.0
        best = s["err_level"]
        for p, e in zip(profiles, s["err_profile"]):
            if p is not None and e < best:
                best = e
        limit = self.competent * best
        floor = 1e-9 * (abs(s["level"]) + 1.0)
        z = self.z_max
        if s["err_level"] <= limit:
            z = min(z, abs(x - s["level"]) / (s["err_level"] + floor))
        for p, e in zip(profiles, s["err_profile"]):
            if p is not None and e <= limit:
                z = min(z, abs(x - p) / (e + floor))
        return z

    def _likelihood(self, z: float) -> float:
        """Anomaly likelihood of the averaged surprise (Numenta), on its log scale in [0, 1]."""
        s = self._s
        if s["hist_var"] <= 0.0:
            return 0.0
        avg = (s["recent_sum"] - s["recent"][s["n"] % self.window] + z) / self.window
        sd = max(math.sqrt(s["hist_var"]), 0.03 * s["hist_mean"] + 1e-6)
        tail = 0.5 * math.erfc((avg - s["hist_mean"]) / sd / _SQRT2)
        return min(1.0, math.log(1.0000000001 - (1.0 - tail)) / _LOG_EPS)

    def _level_surprise(self, x: float) -> float:
        """|x - level| / the level's usual error: the plainest model's surprise, for the record rule."""
        s = self._s
        if s["n"] <= 1:
            return 0.0
        return abs(x - s["level"]) / (s["err_level"] + 1e-9 * (abs(s["level"]) + 1.0))

    def _evaluate(self, x: float, ts: float | None) -> tuple:
        """(score, whether it is a new-extreme alarm, surprise, profile predictions, the level's surprise,
        whether it is a record-surprise alarm, (weekday, daily shape) or None) for x at ts."""
        s = self._s
        profiles, day = self._profiles(ts, x)
        z = self._surprise(x, profiles)
        z_level = self._level_surprise(x)
        if not self.ready():
            return 0.0, False, z, profiles, z_level, False, day
        score = self._likelihood(z)
        if s["since_alarm"] < self.refractory:
            score *= s["since_alarm"] / self.refractory * self.alarm
        record = (self.record > 0.0 and s["n"] >= self.record_after and z_level >= self.spatial_z
                  and z_level > s["z_record"] * (1.0 + self.record) and s["since_record"] >= self.refractory)
        # with day_types the range is that of x net of its weekday's map: a weekend below every weekday is no
        # new extreme once its day type's level is learnt, a spike on it still is
        span, xr = s["hi"] - s["lo"], x if day is None else self._net(x, day)
        if (self.spatial and span > 0 and z >= self.spatial_z and s["since_extreme"] >= self.refractory
                and (xr > s["hi"] + self.spatial * span or xr < s["lo"] - self.spatial * span)):
            # a new extreme is news even after a likelihood alarm, but only once
            return 1.0, True, z, profiles, z_level, record, day
        return (1.0 if record else score), False, z, profiles, z_level, record, day

    def ready(self) -> bool:
        """Whether the model has learnt enough to speak: ``warmup`` points AND ``warmup_s`` seconds between the
        first and the last timestamped point (both the likelihood and the beyond-the-range rule wait for it)."""
        s = self._s
        if s["n"] < self.warmup:
            return False
        if self.warmup_s <= 0.0:
            return True
        t0, t1 = s.get("t_first"), s.get("t_last")
        return t0 is not None and t1 - t0 >= self.warmup_s

    def score_one(self, x: float, t=None) -> float:
        ts, x = seconds(t), float(x)
        if not math.isfinite(x):
            return 0.0                  # no reading: nothing to judge (and nothing learnt, see learn_one)
        r = self._evaluate(x, ts)
        self._cache = (x, ts, self._s["n"], r, self._with_shape(x, r[0]))
        return self._cache[4]

    def _with_shape(self, x: float, score: float) -> float:
        """The score with the shape rule's (see ``shape_novelty``): a new shape is news too, unless any alarm
        (the model's or the shape rule's) was raised within ``refractory`` points. A shape alarm does not hold
        the model's own rules back: they report their own clusters once, as before."""
        if self._shape is None or not self.ready() or self._s["since_any"] < self.refractory:
            return score
        return max(score, self._shape.peek(x))

    # -- learning ----------------------------------------------------------------------------------------
    def learn_one(self, x: float, t=None) -> None:
        s = self._s
        ts, x = seconds(t), float(x)
        if not math.isfinite(x):
            return
        c = self._cache
        fresh = c is not None and c[0] == x and c[1] == ts and c[2] == s["n"]
        score, extreme, z, profiles, z_level, record, day = c[3] if fresh else self._evaluate(x, ts)
        final = c[4] if fresh else self._with_shape(x, score)
        self._cache = None
        s["since_any"] = 0 if (final >= self.alarm and s["since_any"] >= self.refractory) else s["since_any"] + 1
        s["since_alarm"] = 0 if (score >= self.alarm and s["since_alarm"] >= self.refractory) else s["since_alarm"] + 1
        s["since_extreme"] = 0 if extreme else s["since_extreme"] + 1
        s["since_record"] = 0 if record else s["since_record"] + 1
        s["z_record"] = max(s["z_record"], z_level)
        self._learn_surprise(z)
        self._learn_errors(x, profiles)
        if self._shape is not None:
            self._shape.update(x)
        xr = x if day is None else self._learn_day(x, day, ts)      # x net of its day type's map
        if ts is not None:
            self._learn_profile(x, ts, xr)
        s["level"] = x if s["n"] == 0 else s["level"] + max(self.level_alpha, 1.0 / (s["n"] + 1)) * (x - s["level"])
        s["lo"], s["hi"] = min(s["lo"], xr), max(s["hi"], xr)
        s["n"] += 1
        if ts is not None:
            s["t_first"] = ts if s.get("t_first") is None else s["t_first"]
            s["t_last"] = ts

    def _learn_surprise(self, z: float) -> None:
        """Numenta's moving average of the surprise, then the long-run mean and variance of that average."""
        s = self._s
        i = s["n"] % self.window
        s["recent_sum"] += z - s["recent"][i]
        s["recent"][i] = z
        if s["n"] >= 3 * self.window:
            avg = s["recent_sum"] / self.window
            a = max(self.hist_alpha, 1.0 / (s["n"] - 3 * self.window + 1))
            d = avg - s["hist_mean"]
            s["hist_mean"] += a * d
            s["hist_var"] = (1.0 - a) * (s["hist_var"] + a * d * d)

    def _learn_errors(self, x: float, profiles: list[float | None]) -> None:
        s = self._s
        if s["n"] == 0:
            return
        a = max(self.err_alpha, 1.0 / (s["n"] + 1))
        s["err_level"] += a * (abs(x - s["level"]) - s["err_level"])
        err = s["err_profile"]
        for j, p in enumerate(profiles):
            # until a profile can predict, it is charged the level's error (so it must earn its place)
            err[j] += a * (abs(x - (s["level"] if p is None else p)) - err[j])

    def _net(self, x: float, day: tuple[int, float | None]) -> float:
        """x net of its weekday's map: the daily shape plus what the map leaves unexplained."""
        d, shape = day
        s = self._s
        if shape is None:
            return x - s["day_offset"][d]
        return shape + (x - s["day_gain"][d] * shape - s["day_offset"][d])

    def _learn_day(self, x: float, day: tuple[int, float | None], ts: float) -> float:
        """Learn weekday ``day[0]``'s map from the daily shape ``day[1]`` to x, gain x shape + offset; return x
        net of it (what the daily profile and the range learn).

        The offset is the plain mean of x - gain x shape over the points of this weekday seen so far, with
        ``day_prior`` points of belief in no offset (half an hour of the live flow's 5-minute means), then an
        EW mean at ``day_alpha``: on a weekday not seen before (the first Saturday) it is about the mean
        departure since midnight, so a level that comes with the new day is learnt within its first hour (the
        day type's own level, unknown until seen), while a shift that starts later meets an offset learnt on
        the hours before it and stays surprising until it outweighs them (the prior keeps a lost cycle at a
        new day's midnight from passing for its level at once). Once a weekday has been seen, its offset moves
        slowly and a step on it is news. The gain (a weekend that scales the cycle rather than shifting it) is
        the least-squares slope of x on the shape over this weekday's points, but only from its next day on,
        within ``day_gain_limits``: fitted within a day it would take a lost cycle for a gain near 0."""
        s = self._s
        d, shape = day
        if shape is not None:
            date = int(ts // DAY_S)
            if date != s["day_date"][d]:          # a new day of this type: its gain from the days before
                if s["day_date"][d] >= 0:
                    mu, my, cuy, vuu = s["day_fit"][d]
                    g = cuy / vuu if vuu > 0.0 else 1.0
                    s["day_gain"][d] = min(max(g, self.day_gain_limits[0]), self.day_gain_limits[1])
                    s["day_offset"][d] = my - s["day_gain"][d] * mu
                s["day_date"][d] = date
            s["day_seen"][d] += 1
            fit = s["day_fit"][d]
            r = max(self.day_alpha, 1.0 / s["day_seen"][d])
            du, dy = shape - fit[0], x - fit[1]
            fit[0] += r * du
            fit[1] += r * dy
            fit[2] = (1.0 - r) * (fit[2] + r * du * dy)
            fit[3] = (1.0 - r) * (fit[3] + r * du * du)
            rate = max(self.day_alpha, 1.0 / (s["day_seen"][d] + self.day_prior))
            s["day_offset"][d] += rate * (x - s["day_gain"][d] * shape - s["day_offset"][d])
        return self._net(x, day)

    def _learn_profile(self, x: float, ts: float, x_daily: float) -> None:
        """Each profile learns x, the daily one ``x_daily`` (x net of its day type's offset)."""
        s = self._s
        for j in range(len(self.periods)):
            xj = x_daily if j == self._daily else x
            k0, k1, w, near = self._knots(j, ts)
            visits, knots = s["visits"][j], s["knots"][j]
            if near != s["last_knot"][j]:
                visits[near] += 1
                s["last_knot"][j] = near
            for k, wk in ((k0, 1.0 - w), (k1, w)):
                if visits[k] <= 1 and knots[k] == 0.0:
                    knots[k] = xj
                else:
                    knots[k] += max(self.slot_alpha, 1.0 / (visits[k] + 1)) * wk * (xj - knots[k])


def _weekday(ts: float) -> int:
    """0 = Monday ... 6 = Sunday (UTC, the profiles' clock)."""
    return (int(ts // DAY_S) + 3) % 7
