"""Meter-end analytics over every smart meter at once: one closed hour of reads in, four checks
updated, flags out. Pure numpy over the meter axis (one vector operation per check per hour, a
loop over the handful of meter classes, never over meters), so a million meters cost tens of
milliseconds an hour.

What a meter is expected to read in an hour comes from its class, not from itself: the consumer's
base demand (the planner's per-house figure the twin also uses, ``e_i`` kg/h on average) times
the class factor of that hour, ``c_k(t)`` = the median over the meters of class ``k`` of
read / base. The class factor carries the hour of day and the weather (houses of one class feel
the same cold), so a meter compared with its class needs no weather model of its own.

Checks (docs/meter-analytics.md gives thresholds and measured figures):

- ``stopped``: the meter reads (about) zero for ``stopped_hours`` hours in a row while its class
  consumes.
- ``theft``: the meter's reads over the last ~``theft_tau_h`` hours (exponentially weighted) are
  below ``theft_ratio`` of what its class predicts AND far below its class's spread
  (robust z < -``theft_z``).
- ``usage_change``: two-sided CUSUM on the meter's hourly log ratio to its own learned level
  against the class (``z = log(q / a_i) / sigma_i``); a step either way crosses ``change_h``.
  A change is news: after ``change_hold_h`` hours the new level is learnt and the alarm ends.
- ``behind_meter_leak``: each night the smallest hourly excess over the expected read
  (``x - a_i * expected``) over the night hours stays above ``leak_frac`` of the meter's mean
  hourly use, and the excess is additive (the mean excess over the morning peak after it is below
  ``leak_additive`` x the night's mean excess: a leak adds the same flow at every hour, ratio ~1;
  a bigger household multiplies its use, ratio ~2.5), for ``leak_nights`` nights in a row;
  judged after the morning.

>>> import numpy as np
>>> m = MeterEndModel(np.full(40, 1.0), np.zeros(40, np.int64), warmup_h=24)
>>> hour = 3_600_000_000_000
>>> for h in range(48):
...     x = np.full(40, 1.0)
...     if h >= 30:
...         x[3] = 0.0                      # meter 3 stops
...     m.update((h + 1) * hour, x)
>>> int(m.state["stopped"].sum()), bool(m.state["stopped"][3])
(1, True)
"""

from __future__ import annotations

import numpy as np

HOUR_NS = 3_600_000_000_000
FLAGS = ("stopped", "theft", "leak", "change")        # one bool array each in the state, in priority order


class MeterEndModel:
    """Configuration in ``__init__``; the state is one dict of arrays (``snapshot``/``restore``).

    ``expected_kg_h``: each meter's mean hourly use by its class (base demand x 3600, SI kg);
    ``classes``: each meter's class label (small non-negative ints: peers that share a profile
    and the weather, e.g. base-demand band x zone)."""

    def __init__(self, expected_kg_h: np.ndarray, classes: np.ndarray, *, night_hours: tuple[int, ...] = (1, 2, 3, 4),
                 morning_hours: tuple[int, ...] = (6, 7, 8, 9), utc_offset_h: int = 0, warmup_h: int = 48, min_class: int = 5,
                 stopped_hours: int = 6, stopped_frac: float = 0.02, class_consuming: float = 0.2,
                 theft_ratio: float = 0.5, theft_z: float = 4.0, theft_tau_h: float = 12.0,
                 change_k: float = 1.0, change_h: float = 10.0, change_hold_h: int = 72, sigma_floor: float = 0.05,
                 leak_frac: float = 0.1, leak_additive: float = 1.6, leak_nights: int = 1):
        self.expected_kg_h = np.asarray(expected_kg_h, np.float32)
        self.classes = np.asarray(classes, np.int64)
        self.night_hours, self.morning_hours, self.utc_offset_h = tuple(night_hours), tuple(morning_hours), utc_offset_h
        self.warmup_h, self.min_class = warmup_h, min_class
        self.stopped_hours, self.stopped_frac, self.class_consuming = stopped_hours, stopped_frac, class_consuming
        self.theft_ratio, self.theft_z, self.theft_tau_h = theft_ratio, theft_z, theft_tau_h
        self.change_k, self.change_h, self.change_hold_h, self.sigma_floor = change_k, change_h, change_hold_h, sigma_floor
        self.leak_frac, self.leak_additive, self.leak_nights = leak_frac, leak_additive, leak_nights
        n = len(self.expected_kg_h)
        order = np.argsort(self.classes, kind="stable")
        cuts = np.flatnonzero(np.diff(self.classes[order])) + 1
        self._groups = np.split(order, cuts) if n else []
        self._group_of = np.zeros(n, np.int64)
        for g, members in enumerate(self._groups):
            self._group_of[members] = g
        self.state = self.fresh_state(n)

    @staticmethod
    def fresh_state(n: int) -> dict:
        f32 = lambda v=0.0: np.full(n, v, np.float32)  # noqa: E731
        s = {"hours": np.zeros(n, np.int32),            # hours with a read (learning)
             "level": f32(1.0), "fast": f32(1.0), "var": f32(0.04),   # own level vs class, its fast twin, var of log
             "s_up": f32(), "s_down": f32(), "change_since": np.full(n, -1, np.int64),
             "zero_run": np.zeros(n, np.int32),
             "ew_x": f32(), "ew_e": f32(), "ew_w": f32(),
             "night_min": f32(np.inf), "night_sum": f32(), "night_n": np.zeros(n, np.int32),
             "day_excess": f32(), "day_n": np.zeros(n, np.int32), "leak_run": np.zeros(n, np.int32),
             "q_hour": f32(np.nan), "q_smooth": f32(np.nan), "theft_zs": f32(np.nan),
             "night_excess": f32(np.nan), "day_excess_mean": f32(np.nan), "hour_index": np.zeros(1, np.int64)}
        for flag in FLAGS:
            s[flag] = np.zeros(n, bool)
        return s

    # -- one hour ----------------------------------------------------------------------------------
    def class_factors(self, x: np.ndarray) -> np.ndarray:
        """Per meter: its class's median read / expected this hour (all meters' median where the
        class has fewer than ``min_class`` reads)."""
        ratio = x / np.where(self.expected_kg_h > 0, self.expected_kg_h, np.nan)
        per_group = np.full(len(self._groups), np.nan)
        for g, members in enumerate(self._groups):
            r = ratio[members]
            r = r[np.isfinite(r)]
            if len(r) >= self.min_class:
                per_group[g] = np.median(r)
        if np.isnan(per_group).any():
            ok = np.isfinite(ratio)
            per_group[np.isnan(per_group)] = np.median(ratio[ok]) if ok.any() else np.nan
        return per_group[self._group_of]

    def update(self, hour_end_ns: int, x: np.ndarray) -> None:
        """Fold in one closed hour: ``x`` kg per meter over the hour (NaN: no read)."""
        s = self.state
        x = np.asarray(x, np.float32)
        hour_index = int(hour_end_ns - 1) // HOUR_NS
        s["hour_index"][0] = hour_index
        local_hour = (hour_index + self.utc_offset_h) % 24
        c = self.class_factors(x)
        expected = self.expected_kg_h * c
        have = np.isfinite(x) & (expected > 0)
        q = np.where(have, x / np.where(expected > 0, expected, 1.0), np.nan)
        s["q_hour"] = q
        s["hours"] += have
        learnt = s["hours"] > self.warmup_h
        self._stopped(x, expected, c, have)
        self._theft(x, expected, have, learnt)
        excess = self._change(q, x, expected, have, learnt, hour_index)
        self._leak(excess, have, learnt, local_hour)
        for k, v in s.items():              # the state stays single precision (half the memory and snapshot)
            if v.dtype == np.float64:
                s[k] = v.astype(np.float32)

    def _stopped(self, x, expected, c, have) -> None:
        s = self.state
        consuming = np.isfinite(c) & (c > self.class_consuming)
        zero = have & (x <= self.stopped_frac * expected) & consuming
        s["zero_run"] = np.where(zero, s["zero_run"] + 1, np.where(have, 0, s["zero_run"]))
        s["stopped"] = s["zero_run"] >= self.stopped_hours

    def _theft(self, x, expected, have, learnt) -> None:
        s = self.state
        a = 1.0 / self.theft_tau_h
        s["ew_x"] = np.where(have, (1 - a) * s["ew_x"] + a * np.where(have, x, 0.0), s["ew_x"])
        s["ew_e"] = np.where(have, (1 - a) * s["ew_e"] + a * expected, s["ew_e"])
        s["ew_w"] = np.where(have, (1 - a) * s["ew_w"] + a, s["ew_w"])
        q_s = np.where(s["ew_e"] > 0, s["ew_x"] / np.where(s["ew_e"] > 0, s["ew_e"], 1.0), np.nan)
        s["q_smooth"] = q_s
        logq = np.log(np.maximum(q_s, 1e-3))
        zs = np.full(len(x), np.nan)
        for members in self._groups:
            v = logq[members]
            ok = np.isfinite(v)
            if ok.sum() < self.min_class:
                continue
            med = np.median(v[ok])
            mad = 1.4826 * np.median(np.abs(v[ok] - med)) + self.sigma_floor
            zs[members] = (v - med) / mad
        s["theft_zs"] = zs
        warm = s["ew_w"] > 1 - np.exp(-2.0)          # two time constants of reads behind the average
        s["theft"] = learnt & warm & (q_s < self.theft_ratio) & (zs < -self.theft_z) & ~s["stopped"]

    def _change(self, q, x, expected, have, learnt, hour_index) -> np.ndarray:
        """CUSUM on the log ratio to the meter's own level; returns the hour's excess read over
        ``level x expected`` (kg) for the night check."""
        s = self.state
        level = np.maximum(s["level"], 1e-3)
        logr = np.log(np.maximum(np.where(have, q, 1.0), 1e-3) / level)
        sigma = np.sqrt(np.maximum(s["var"], self.sigma_floor ** 2))
        z = np.clip(np.where(have, logr / sigma, 0.0), -20, 20)
        live = learnt & have
        s["s_up"] = np.where(live, np.maximum(0.0, s["s_up"] + z - self.change_k), 0.0)
        s["s_down"] = np.where(live, np.maximum(0.0, s["s_down"] - z - self.change_k), 0.0)
        fast_a = 1.0 / 6.0
        s["fast"] = np.where(have, (1 - fast_a) * s["fast"] + fast_a * np.where(have, q, 1.0), s["fast"])
        onset = live & ~s["change"] & ((s["s_up"] > self.change_h) | (s["s_down"] > self.change_h))
        s["change_since"] = np.where(onset, hour_index, s["change_since"])
        s["change"] = s["change"] | onset
        # a change held long enough (and not a leak, theft or stop) becomes the meter's new level
        settled = s["change"] & (hour_index - s["change_since"] >= self.change_hold_h) & ~(s["leak"] | s["theft"] | s["stopped"])
        s["level"] = np.where(settled, s["fast"], s["level"])
        s["s_up"] = np.where(settled, 0.0, s["s_up"])
        s["s_down"] = np.where(settled, 0.0, s["s_down"])
        s["change"] = s["change"] & ~settled
        s["change_since"] = np.where(settled, -1, s["change_since"])
        if settled.any():        # the night being gathered was measured against the old level: start afresh
            s["night_min"][settled], s["night_sum"][settled], s["night_n"][settled] = np.inf, 0.0, 0
            s["day_excess"][settled], s["day_n"][settled] = 0.0, 0
        # learning: running mean during warm-up, then slow (a week) on quiet hours only
        n = np.maximum(s["hours"], 1).astype(float)
        quiet = have & ~(s["change"] | s["leak"] | s["theft"] | s["stopped"]) & (np.abs(z) < 3)
        rate = np.where(learnt, 1.0 / (24 * 7), 1.0 / n)
        upd = np.where(learnt, quiet, have)
        q1 = np.where(have, q, 1.0)
        s["level"] = np.where(upd, (1 - rate) * s["level"] + rate * q1, s["level"])
        dev = np.log(np.maximum(q1, 1e-3) / np.maximum(s["level"], 1e-3))
        s["var"] = np.where(upd & (s["hours"] > 3), (1 - rate) * s["var"] + rate * dev * dev, s["var"])
        return np.where(have, x - s["level"] * expected, np.nan)

    def _leak(self, excess, have, learnt, local_hour) -> None:
        s = self.state
        if local_hour in self.night_hours:
            s["night_min"] = np.where(have, np.minimum(s["night_min"], excess), s["night_min"])
            s["night_sum"] += np.where(have, excess, 0.0)
            s["night_n"] += have
        elif local_hour in self.morning_hours:
            s["day_excess"] += np.where(have, excess, 0.0)
            s["day_n"] += have
        if local_hour != self.morning_hours[-1]:
            return
        # the night and the morning after it are over: a leak adds the same flow to both, a bigger
        # household multiplies its use (its mean excess over the morning peak is ~2.5x the night's)
        floor = self.leak_frac * s["level"] * self.expected_kg_h
        nm = np.where(np.isfinite(s["night_min"]), s["night_min"], np.nan)
        whole_night = s["night_n"] >= max(1, len(self.night_hours) - 1)      # one read may be missing
        night_mean = np.where(whole_night, s["night_sum"] / np.maximum(s["night_n"], 1), np.nan)
        dm = np.where(s["day_n"] >= max(1, len(self.morning_hours) - 1), s["day_excess"] / np.maximum(s["day_n"], 1), np.nan)
        additive = dm < self.leak_additive * night_mean
        night_flow = learnt & whole_night & (nm > floor) & additive
        s["leak_run"] = np.where(night_flow, s["leak_run"] + 1, 0)
        s["leak"] = (s["leak_run"] >= self.leak_nights) & ~(s["stopped"] | s["theft"])
        s["night_excess"], s["day_excess_mean"] = nm, dm
        s["night_min"][:] = np.inf
        s["night_sum"][:] = 0.0
        s["night_n"][:] = 0
        s["day_excess"][:] = 0.0
        s["day_n"][:] = 0

    # -- output ------------------------------------------------------------------------------------
    def flagged(self) -> dict[str, np.ndarray]:
        """Meter positions per check, each meter under its highest-priority check only."""
        s = self.state
        taken = np.zeros(len(self.expected_kg_h), bool)
        out = {}
        for flag in FLAGS:
            hit = s[flag] & ~taken
            out[flag] = np.flatnonzero(hit)
            taken |= hit
        return out

    def snapshot(self) -> dict:
        return {k: v.copy() for k, v in self.state.items()}

    def restore(self, snap: dict) -> None:
        self.state = {k: np.array(v) for k, v in snap.items()}
