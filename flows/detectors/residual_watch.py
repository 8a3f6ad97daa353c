"""An online model of one sensor's residual against the twin (measured minus estimated), for the live flow's
1-second ticks: it tells a faulty sensor from a network that really changed, and says so only when the
statistics it judges by have been learnt.

Why a model of its own: NAB's streams are minutes apart and each stands alone; a live residual comes every
second, is mostly instrument noise around the twin's usual bias for this sensor, and a real change in the
network (a demand swing, a regulator step) is already explained by the twin, so it leaves the residual alone.
A sensor fault is what remains, and each kind leaves its own mark:

- ``offset`` (a drift or a bias): the residual's 1-minute mean leaves its long-run baseline. Judged in units of
  how far that 1-minute mean usually strays (learnt, so the twin's slowly wandering bias is accounted for);
- ``spike``: one reading far from the 1-minute mean, in units of the residual's usual tick-to-tick spread, and
  the reading itself jumped the same way (not the twin's estimate, pulled by another sensor's fault);
- ``noisy``: the residual's variance over the last minute (each reading counted at most as 5 sigma, so one
  spike does not make a noisy minute) is many times its usual one;
- ``stuck``: the reading has not changed by a single bit for ``stuck_s`` seconds on a sensor that, while
  learning, almost never repeated itself (a report-by-exception point that repeats is left alone).

Warm-up: nothing is judged before ``warmup_n`` points AND ``warmup_s`` seconds of data (a spread learnt over
two minutes of a quiet night is not the spread of a day). While a statistic is beyond half its threshold the
baseline learns ten times slower, so a slow drift is not absorbed before it is reported, yet a lasting new
normal (a re-calibrated sensor) is learnt in hours and the alert then clears.

Thresholds are in standard deviations of each statistic and were calibrated on an hour of normal simulated
operation of the bundled network through the real flow (see tests/test_anomaly_detector.py and the helper's
report): with the defaults no statistic came within half of its threshold.
"""

from __future__ import annotations

import math

KINDS = ("offset", "spike", "noisy", "stuck")


class ResidualWatch:
    """``update(residual, measured, t)`` per tick (t in seconds) returns the faults seen at that tick, each as
    (kind, statistic / threshold, statistic), before the tick is learnt. ``snapshot()``/``restore()``: the
    state as a plain dict."""

    def __init__(self, short_s: float = 60.0, long_s: float = 3600.0, warmup_n: int = 600, warmup_s: float = 600.0,
                 k_offset: float = 8.0, k_spike: float = 10.0, k_noisy: float = 6.0, stuck_s: float = 60.0,
                 repeat_rate: float = 0.01):
        if not (0 < short_s < long_s):
            raise ValueError(f"ResidualWatch: need 0 < short_s < long_s, got {short_s}, {long_s}")
        self.short_s, self.long_s, self.warmup_n, self.warmup_s = short_s, long_s, warmup_n, warmup_s
        self.limits = {"offset": k_offset, "spike": k_spike, "noisy": k_noisy, "stuck": 1.0}
        self.stuck_s, self.repeat_rate = stuck_s, repeat_rate
        self.s = self._fresh()
        self.last: dict[str, float] = {}     # the statistics judged at the last update (empty while warming up)
        self._dt, self._a = None, (0.0, 0.0)

    @staticmethod
    def _fresh() -> dict:
        return {"n": 0, "t0": None, "t": None, "base": 0.0, "var": 0.0, "mean1": 0.0, "var_mean1": 0.0,
                "var1": 0.0, "last_x": None, "mean_x": 0.0, "same_s": 0.0, "repeats": 0.0}

    def snapshot(self) -> dict:
        return dict(self.s)

    def restore(self, snap: dict) -> None:
        self.s = dict(snap)

    def ready(self) -> bool:
        """Whether the statistics have been learnt long enough to be judged."""
        s = self.s
        return s["n"] >= self.warmup_n and s["t"] - s["t0"] >= self.warmup_s

    def expected(self) -> float:
        """The residual this sensor usually shows (the twin's bias for it)."""
        return self.s["base"]

    def spread(self) -> float:
        """How far the 1-minute mean of the residual usually strays from its baseline (1 sigma)."""
        return math.sqrt(self.s["var_mean1"])

    def update(self, r: float, x: float, t: float) -> list[tuple[str, float, float]]:
        s = self.s
        if s["t"] is None:
            s.update(t0=t, t=t, base=r, mean1=r, last_x=x, mean_x=x, n=1)
            return []
        n, var, var_mean1, base, mean1_old = s["n"], s["var"], s["var_mean1"], s["base"], s["mean1"]
        dt = min(max(t - s["t"], 0.0), self.short_s)
        if dt != self._dt:                       # the tick is nearly always the same: keep its weights
            self._dt, self._a = dt, (1.0 - math.exp(-dt / self.short_s), 1.0 - math.exp(-dt / self.long_s))
        a_short, a_slow = self._a
        dev1 = r - mean1_old
        dev2 = dev1 * dev1
        # the 1-minute mean takes a reading at most 5 sigma from it: a spike moves it by a twelfth of that
        lim5 = 5.0 * math.sqrt(var) if n >= 10 else math.inf
        mean1 = mean1_old + a_short * max(-lim5, min(lim5, dev1))
        dx = x - s["mean_x"]
        # the short variance counts a reading at most as 5 sigma: one spike is a spike, not a noisy minute
        var1 = s["var1"] + a_short * ((min(dev2, 25.0 * var) if n >= 10 else dev2) - s["var1"])
        same = x == s["last_x"]
        same_s = s["same_s"] + dt if same else 0.0
        ready = n >= self.warmup_n and s["t"] - s["t0"] >= self.warmup_s
        odd = False
        found = []
        if ready:
            lim = self.limits
            spread = max(var_mean1, 0.04 * var)  # at least a fifth of the tick spread (a quiet hour is not the rule)
            stats = {"offset": abs(mean1 - base) / math.sqrt(spread) if spread > 0 else 0.0,
                     # a spike is in the reading itself: a residual that jumps because the twin's estimate
                     # jumped (pulled by another sensor) is not this sensor's spike
                     "spike": abs(dev1) / math.sqrt(var) if var > 0 and dx * dev1 > 0.25 * dev2 else 0.0,
                     "noisy": var1 / var if var > 0 else 0.0,
                     "stuck": same_s / self.stuck_s if s["repeats"] < self.repeat_rate else 0.0}
            for k, v in stats.items():
                if v >= 0.5 * lim[k]:
                    odd = True
                    if v >= lim[k]:
                        found.append((k, v / lim[k], v))
            self.last = stats
        # learn: equal weights while young, then a long memory; ten times slower while anything looks odd
        # (equal weights only during the warm-up: after it, a drift must not be learnt within minutes)
        a_long = (a_slow if ready else max(1.0 / (n + 1), a_slow)) * (0.1 if odd else 1.0)
        gap = mean1 - base
        s["var_mean1"] = var_mean1 + a_long * (gap * gap - var_mean1)
        s["base"] = base + a_long * (r - base)
        if dev2 < 100.0 * var or n < 10:        # one wild reading must not inflate the spread
            s["var"] = var + a_long * (dev2 - var)
        if same_s <= 3.0 * dt:                  # a long run of repeats is judged, not learnt as the usual
            s["repeats"] += max(1.0 / (n + 1), a_slow) * ((1.0 if same else 0.0) - s["repeats"])
        s["mean_x"] += a_short * (x - s["mean_x"])
        s.update(t=t, n=n + 1, mean1=mean1, var1=var1, last_x=x, same_s=same_s)
        return found
