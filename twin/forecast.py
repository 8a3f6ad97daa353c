"""Hourly demand forecasts, 24 h ahead, learned online: what a zone (or a large consumer) will
draw in each of the next hours, so the twin starts each hour from a demand it expects rather
than from the last one it saw, and the control room sees the day coming (docs/forecast.md).

The model, per series (multiplicative seasonality, additive heating term)::

    y[t] = P[hour(t)] * W[weekday(t)] * (L + beta * HDD[t])

- ``P``: the shape of the day (24 values, mean 1), exponentially weighted per hour of day;
- ``W``: the weekday factor (7 values, mean 1), learned day by day after the first week (each
  weekday's demand against the level at the day's start) and used only while
  it forecasts the last week's hours better than the daily shape alone (so a Sunday can differ
  from a Monday, and a series without a weekly rhythm is not given one out of noise);
- ``L``: the level (the demand at no heating), an exponentially weighted mean with a half-life of
  ``level_half_life_h``, so a step in demand (a new estate, a cold spell without a thermometer)
  is followed within a day;
- persistence: the last hour's relative error carried forward, decaying as phi^k with phi the
  errors' lag-1 autocorrelation (an hour above its forecast is followed by more);
- ``beta``: heating-degree sensitivity (HDD = max(base - T, 0), K), the exponentially weighted
  regression slope of the deseasonalised demand on HDD, used once temperatures have varied by at
  least a kelvin; without a temperature series the term is absent (an hour without a reading is
  taken at the recent mean HDD).

The first day is a warm-up: values are kept until 24 hours of the day have been seen, then ``P``
and ``L`` start from their means (HoltWinters' priming, but forecasting a flat level meanwhile).
Why not river's models: ``pipetwin bench forecast`` runs both side by side on the simulator's
and the benchmark sets' series; this model had the lower MAPE there (figures in docs/forecast.md).

Pure numpy; every object's state is a plain dict of numbers and arrays (``snapshot``/``restore``),
so it survives a bytewax recovery.

>>> import numpy as np
>>> f = DemandForecaster()
>>> shape = 1.0 + 0.5 * np.sin(np.arange(24) / 24 * 2 * np.pi)
>>> for k in range(24 * 7):
...     f.learn_one(k * HOUR_NS, 2.0 * shape[k % 24])
>>> bool(np.allclose(f.forecast(24 * 7 * HOUR_NS), 2.0 * shape, rtol=1e-6))
True
"""

from __future__ import annotations

import math

import numpy as np

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS


def _alpha(half_life_h: float) -> float:
    return 1.0 - 0.5 ** (1.0 / half_life_h)


def mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Mean absolute percentage error over the hours where both are finite and the actual is not
    zero (%)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    ok = np.isfinite(a) & np.isfinite(f) & (a != 0)
    if not ok.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs((f[ok] - a[ok]) / a[ok])))


class DemandForecaster:
    """One series' hourly forecaster (the model in the module docstring). ``learn_one`` takes an
    hour's mean value keyed by the hour's start (ns since the epoch, UTC); ``forecast`` the next
    ``horizon`` hours from a given hour start. ``utc_offset_s`` moves hour-of-day and weekday to
    local time (demand follows the local clock)."""

    def __init__(self, *, level_half_life_h: float = 12.0, season_alpha: float = 0.1, weekday: bool = True,
                 weekday_alpha: float = 0.3, temperature_half_life_h: float = 24.0 * 21,
                 base_temperature_k: float = 288.15, utc_offset_s: float = 0.0):
        if level_half_life_h <= 0 or temperature_half_life_h <= 0:
            raise ValueError("half-lives must be > 0 hours")
        if not (0 < season_alpha <= 1 and 0 <= weekday_alpha <= 1):
            raise ValueError("season_alpha must be in (0, 1] and weekday_alpha in [0, 1]")
        self.level_half_life_h, self.season_alpha = level_half_life_h, season_alpha
        self.weekday, self.weekday_alpha = weekday, weekday_alpha
        self.temperature_half_life_h, self.base_temperature_k = temperature_half_life_h, base_temperature_k
        self.utc_offset_s = utc_offset_s
        self.state = self._fresh()

    @staticmethod
    def _fresh() -> dict:
        return {"n": 0, "level": math.nan, "profile": np.ones(24), "profile_n": np.zeros(24, np.int64),
                "week": np.ones(7), "warm": [],           # warm-up: (hour of day, value) until 24 hours are seen
                "hdd_mean": math.nan, "t_n": 0, "t_mean_h": 0.0, "t_mean_z": 0.0, "t_cov": 0.0, "t_var": 0.0,
                "beta": 0.0, "err_week": 0.0, "err_flat": 0.0, "day": None, "day_start_level": math.nan,
                "day_actual": 0.0, "day_base": 0.0, "day_hours": 0, "last_hour_ns": None,
                "resid": math.nan, "phi": 0.0, "ar_cov": 0.0, "ar_var": 0.0}

    # -- calendar -----------------------------------------------------------------------------------
    def _calendar(self, hour_ns: int) -> tuple[int, int]:
        local = hour_ns + int(self.utc_offset_s * 1e9)
        hour = int(local // HOUR_NS % 24)
        weekday = int((local // DAY_NS + 3) % 7)      # 1970-01-01 was a Thursday; Monday = 0
        return hour, weekday

    def _hdd(self, temperature_k: float | None) -> float:
        if temperature_k is None or not math.isfinite(temperature_k):
            return math.nan
        return max(self.base_temperature_k - float(temperature_k), 0.0)

    @property
    def ready(self) -> bool:
        """True once an hour has been learned (before that ``forecast`` returns NaN)."""
        return self.state["n"] > 0

    @property
    def warmed_up(self) -> bool:
        """True once the daily shape is known (a day of hours seen)."""
        return not self.state["warm"] and self.state["n"] > 0

    @property
    def uses_weekday(self) -> bool:
        """True when the weekday factor has forecast the last week's hours better than the daily
        shape alone (a series without a weekly rhythm is not given one out of noise)."""
        s = self.state
        return self.weekday and s["n"] > 8 * 24 and s["err_week"] < s["err_flat"]

    # -- learning -----------------------------------------------------------------------------------
    def learn_one(self, hour_ns: int, value: float, temperature_k: float | None = None) -> None:
        """Fold in one hour's mean ``value`` (the hour starting at ``hour_ns``), with that hour's
        mean outdoor temperature when there is one. NaN values are skipped."""
        if value is None or not math.isfinite(value):
            return
        s = self.state
        hour, day = self._calendar(hour_ns)
        hdd = self._hdd(temperature_k)
        s["n"] += 1
        a_level = _alpha(self.level_half_life_h)
        if s["n"] == 1 or s["warm"]:
            self._warm_up(hour, float(value), hdd)
            s["last_hour_ns"] = int(hour_ns)
            return
        week = s["week"][day] if self.uses_weekday else 1.0
        shape = s["profile"][hour] * week
        z = value / shape if shape > 0 else value
        heat = self._heat(hdd)
        self._learn_persistence(hour_ns, value / (shape * (s["level"] + heat)) - 1.0 if shape * (s["level"] + heat) > 0
                                else math.nan)
        if self.weekday:
            self._learn_weekday(hour_ns, hour, day, value, heat)
        # level: exponentially weighted, the heating term taken out
        s["level"] += a_level * (z - heat - s["level"])
        if math.isfinite(hdd):
            self._learn_temperature(z, hdd, a_level)
        base = s["level"] + self._heat(hdd)
        if base > 0:
            n = s["profile_n"][hour] + 1
            s["profile_n"][hour] = n
            a = max(self.season_alpha, 1.0 / n)
            s["profile"][hour] += a * (value / (base * week) - s["profile"][hour])
            self._normalise()

    def _learn_persistence(self, hour_ns: int, r: float) -> None:
        """Demand wanders (weather, events): an hour above its forecast is followed by more. The
        relative one-step error's lag-1 autocorrelation ``phi`` (exponentially weighted, about a
        week) carries the last error into the next hours, decaying as phi^k."""
        s = self.state
        if not math.isfinite(r):
            return
        follows = s["last_hour_ns"] is not None and int(hour_ns) - s["last_hour_ns"] == HOUR_NS
        if follows and math.isfinite(s["resid"]):
            a = _alpha(24.0 * 7)
            s["ar_cov"] += a * (r * s["resid"] - s["ar_cov"])
            s["ar_var"] += a * (s["resid"] ** 2 - s["ar_var"])
            s["phi"] = min(max(s["ar_cov"] / s["ar_var"], 0.0), 0.98) if s["ar_var"] > 0 else 0.0
        s["resid"] = r
        s["last_hour_ns"] = int(hour_ns)

    def _learn_weekday(self, hour_ns: int, hour: int, day: int, value: float, heat: float) -> None:
        """Once a local day is over, its demand against what the daily shape and the level at
        the day's start gave (one update per day, so the level cannot absorb it hour by hour);
        and whether the factor helps, by one-step errors with and without it over about a week."""
        s = self.state
        local_day = (int(hour_ns) + int(self.utc_offset_s * 1e9)) // DAY_NS
        if local_day != s["day"]:
            if s["day_hours"] >= 20 and s["day_base"] > 0 and s["n"] > 7 * 24:
                prev = int((s["day"] + 3) % 7)
                s["week"][prev] += self.weekday_alpha * (s["day_actual"] / s["day_base"] - s["week"][prev])
                s["week"] /= s["week"].mean()
            s["day"], s["day_start_level"] = local_day, s["level"]
            s["day_actual"], s["day_base"], s["day_hours"] = 0.0, 0.0, 0
        s["day_actual"] += value
        s["day_base"] += s["profile"][hour] * (s["day_start_level"] + heat)
        s["day_hours"] += 1
        if s["n"] > 8 * 24:
            base = s["level"] + heat
            a = _alpha(24.0 * 7)
            s["err_week"] += a * (abs(value - s["profile"][hour] * s["week"][day] * base) - s["err_week"])
            s["err_flat"] += a * (abs(value - s["profile"][hour] * base) - s["err_flat"])

    def _warm_up(self, hour: int, value: float, hdd: float) -> None:
        s = self.state
        s["warm"].append((hour, value))
        values = np.array([v for _, v in s["warm"]])
        s["level"] = float(values.mean())
        if math.isfinite(hdd):
            s["hdd_mean"] = hdd if not math.isfinite(s["hdd_mean"]) else s["hdd_mean"] + (hdd - s["hdd_mean"]) / len(values)
        if len({h for h, _ in s["warm"]}) < 24:
            return
        # a whole day seen: start the shape from each hour's mean over the mean
        hours = np.array([h for h, _ in s["warm"]])
        mean = values.mean()
        for h in range(24):
            s["profile"][h] = values[hours == h].mean() / mean if mean > 0 else 1.0
            s["profile_n"][h] = int((hours == h).sum())
        s["level"] = float(mean)
        s["warm"] = []
        self._normalise()

    def _learn_temperature(self, z: float, hdd: float, a_level: float) -> None:
        s = self.state
        s["hdd_mean"] = hdd if not math.isfinite(s["hdd_mean"]) else s["hdd_mean"] + a_level * (hdd - s["hdd_mean"])
        s["t_n"] += 1
        a = max(_alpha(self.temperature_half_life_h), 1.0 / s["t_n"])
        dh, dz = hdd - s["t_mean_h"], z - s["t_mean_z"]
        s["t_mean_h"] += a * dh
        s["t_mean_z"] += a * dz
        s["t_var"] = (1 - a) * (s["t_var"] + a * dh * dh)
        s["t_cov"] = (1 - a) * (s["t_cov"] + a * dh * dz)
        # a slope only once the temperature has moved by a kelvin or more (else it is noise); the
        # level moves with it so that the demand at the recent mean HDD stays where it was
        beta = s["t_cov"] / s["t_var"] if s["t_var"] >= 1.0 and s["t_n"] >= 48 else 0.0
        s["level"] -= (beta - s["beta"]) * s["hdd_mean"]
        s["beta"] = beta

    def _heat(self, hdd: float) -> float:
        """The heating term at ``hdd`` (NaN: at the recent mean)."""
        s = self.state
        h = hdd if math.isfinite(hdd) else s["hdd_mean"]
        return s["beta"] * h if math.isfinite(h) else 0.0

    def _normalise(self) -> None:
        s = self.state
        p = s["profile"].mean()
        if p > 0:
            s["profile"] /= p
            s["level"] *= p

    # -- forecasting --------------------------------------------------------------------------------
    def forecast(self, start_ns: int, horizon: int = 24, temperature_k: np.ndarray | None = None) -> np.ndarray:
        """The hourly means for the ``horizon`` hours starting at ``start_ns`` (rounded down to
        the hour), given the forecast outdoor temperature per hour when there is one. NaN before
        the first hour has been learned."""
        s = self.state
        out = np.full(int(horizon), np.nan)
        if not self.ready:
            return out
        start = int(start_ns) // HOUR_NS * HOUR_NS
        temps = np.full(len(out), np.nan) if temperature_k is None else np.asarray(temperature_k, float)
        for k in range(len(out)):
            if s["warm"]:
                out[k] = s["level"]
                continue
            hour, day = self._calendar(start + k * HOUR_NS)
            shape = s["profile"][hour] * (s["week"][day] if self.uses_weekday else 1.0)
            heat = self._heat(self._hdd(temps[k] if k < len(temps) else None))
            out[k] = max(shape * (s["level"] + heat), 0.0)
            ahead = (start + k * HOUR_NS - s["last_hour_ns"]) // HOUR_NS     # 1: the hour after the last learned
            if math.isfinite(s["resid"]) and ahead >= 1:
                out[k] *= 1.0 + s["resid"] * s["phi"] ** ahead
        return out

    # -- recovery -----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        s = self.state
        return {**s, "profile": s["profile"].copy(), "profile_n": s["profile_n"].copy(), "week": s["week"].copy(),
                "warm": list(s["warm"])}

    def restore(self, snap: dict) -> None:
        self.state = {**self._fresh(), **snap}
        for k, dtype in (("profile", float), ("profile_n", np.int64), ("week", float)):
            self.state[k] = np.asarray(self.state[k], dtype).copy()
        self.state["warm"] = list(self.state["warm"])


class SeasonalNaive:
    """The baseline: each hour as it was a ``period`` of hours before (24: same hour yesterday)."""

    def __init__(self, period: int = 24):
        self.period = period
        self.history: dict[int, float] = {}

    def learn_one(self, hour_ns: int, value: float, temperature_k: float | None = None) -> None:
        self.history[int(hour_ns) // HOUR_NS] = float(value)
        cutoff = int(hour_ns) // HOUR_NS - 2 * self.period
        for h in [h for h in self.history if h < cutoff]:
            del self.history[h]

    def forecast(self, start_ns: int, horizon: int = 24, temperature_k: np.ndarray | None = None) -> np.ndarray:
        start = int(start_ns) // HOUR_NS
        out = np.full(int(horizon), np.nan)
        for k in range(len(out)):
            back = start + k - self.period * (1 + k // self.period)
            out[k] = self.history.get(back, np.nan)
        return out


class HourlySeries:
    """Named series sampled every tick, averaged per hour and learned when the hour closes: the
    bridge between a tick stream (the twin) and the hourly forecasters. A closed hour is learned
    only if its samples cover at least ``min_cover`` of it (a restart or an outage leaves a gap,
    not a wrong mean)."""

    def __init__(self, names: list[str], *, min_cover: float = 0.5, **forecaster_options):
        self.names = list(names)
        self.min_cover = min_cover
        self.forecasters = {n: DemandForecaster(**forecaster_options) for n in self.names}
        self.hour_ns: int | None = None
        self.sums = np.zeros(len(self.names))
        self.seconds = np.zeros(len(self.names))
        self.temp_sum, self.temp_s = 0.0, 0.0

    def add(self, ts_ns: int, values: np.ndarray, dt_s: float, temperature_k: float | None = None) -> list[int]:
        """One sample of every series (NaN: none) covering ``dt_s`` seconds up to ``ts_ns``.
        Returns the start of each hour this closed and learned (usually none, sometimes one)."""
        hour = (int(ts_ns) - 1) // HOUR_NS * HOUR_NS
        learned = []
        if self.hour_ns is not None and hour != self.hour_ns:
            learned.append(self.close())
        self.hour_ns = hour
        v = np.asarray(values, float)
        ok = np.isfinite(v)
        self.sums[ok] += v[ok] * dt_s
        self.seconds[ok] += dt_s
        if temperature_k is not None and math.isfinite(temperature_k):
            self.temp_sum += temperature_k * dt_s
            self.temp_s += dt_s
        return [h for h in learned if h is not None]

    def close(self) -> int | None:
        """Learn the open hour (if covered well enough) and start afresh."""
        hour = self.hour_ns
        temp = self.temp_sum / self.temp_s if self.temp_s > 0 else None
        done = False
        for i, name in enumerate(self.names):
            if self.seconds[i] >= self.min_cover * 3600.0:
                self.forecasters[name].learn_one(hour, self.sums[i] / self.seconds[i], temp)
                done = True
        self.sums[:] = 0.0
        self.seconds[:] = 0.0
        self.temp_sum, self.temp_s = 0.0, 0.0
        return hour if done else None

    def forecast(self, start_ns: int, horizon: int = 24, temperature_k: np.ndarray | None = None) -> np.ndarray:
        """``(len(names), horizon)`` hourly forecasts from the hour of ``start_ns``."""
        return np.array([self.forecasters[n].forecast(start_ns, horizon, temperature_k) for n in self.names])

    def snapshot(self) -> dict:
        return {"names": list(self.names), "hour_ns": self.hour_ns, "sums": self.sums.copy(),
                "seconds": self.seconds.copy(), "temp": (self.temp_sum, self.temp_s),
                "forecasters": {n: f.snapshot() for n, f in self.forecasters.items()}}

    def restore(self, snap: dict) -> None:
        if list(snap["names"]) != self.names:      # another model or zoning: start afresh
            return
        self.hour_ns = snap["hour_ns"]
        self.sums, self.seconds = np.asarray(snap["sums"], float).copy(), np.asarray(snap["seconds"], float).copy()
        self.temp_sum, self.temp_s = snap["temp"]
        for n, f in self.forecasters.items():
            f.restore(snap["forecasters"][n])
