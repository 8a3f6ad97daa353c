"""The hourly demand forecaster on series with known answers: a pure daily shape, a step in the
level, a heating-degree effect, a weekly rhythm; and the scoring itself, which a forecaster that
says the same number every hour must fail."""

import math
import pickle

import numpy as np
import pytest

from pipetwin.twin.forecast import HOUR_NS, DemandForecaster, HourlySeries, SeasonalNaive, mape

# a winter weekday's gas demand shape (the simulator's WINTER_PROFILE)
SHAPE = np.array([0.55, 0.5, 0.48, 0.48, 0.52, 0.7, 1.15, 1.45, 1.35, 1.15, 1.0, 0.95,
                  0.95, 0.9, 0.88, 0.92, 1.05, 1.3, 1.45, 1.4, 1.25, 1.05, 0.85, 0.67])
MONDAY_NS = 4 * 24 * HOUR_NS          # 1970-01-05, a Monday


def day_ahead(model, y: np.ndarray, temps: np.ndarray | None = None, start_ns: int = MONDAY_NS) -> float:
    """Learn all but the last day of ``y``, forecast the last day from its start: MAPE (%)."""
    split = len(y) - 24
    for k in range(split):
        model.learn_one(start_ns + k * HOUR_NS, float(y[k]), None if temps is None else float(temps[k]))
    f = model.forecast(start_ns + split * HOUR_NS, 24, None if temps is None else temps[split:])
    return mape(y[split:], f)


class Constant:
    """A forecaster that learns nothing: the mean of what it has seen, every hour."""

    def __init__(self):
        self.values = []

    def learn_one(self, hour_ns, value, temperature_k=None):
        self.values.append(value)

    def forecast(self, start_ns, horizon=24, temperature_k=None):
        return np.full(horizon, np.mean(self.values))


def noisy(y, sigma, seed=0):
    return y * (1.0 + sigma * np.random.default_rng(seed).standard_normal(len(y)))


def test_a_pure_daily_shape_is_forecast_within_half_a_percent():
    y = noisy(0.08 * np.tile(SHAPE, 8), 0.01)
    assert day_ahead(DemandForecaster(), y) < 1.5     # the noise alone is ~0.8 %
    assert day_ahead(DemandForecaster(), 0.08 * np.tile(SHAPE, 8)) < 0.5


def test_a_forecaster_of_constants_fails_the_same_check():
    y = noisy(0.08 * np.tile(SHAPE, 8), 0.01)
    assert day_ahead(Constant(), y) > 20.0
    assert day_ahead(DemandForecaster(), y) < day_ahead(Constant(), y) / 10


def test_a_step_in_the_level_is_followed_within_two_days():
    level = np.r_[np.ones(24 * 8), 1.3 * np.ones(24 * 3)]          # +30 % from day 9 on
    y = noisy(0.05 * np.tile(SHAPE, 11) * level, 0.01, seed=1)
    f = DemandForecaster()
    assert day_ahead(f, y) < 3.0          # a level frozen at the first week's would be ~23 % off
    assert f.state["level"] == pytest.approx(0.05 * 1.3 * SHAPE.mean(), rel=0.03)   # the step is in the level


def test_the_heating_degree_effect_is_learned_and_used():
    rng = np.random.default_rng(2)
    days = 21
    daily = 273.15 + 4.0 + 5.0 * rng.standard_normal(days)            # a cold spell comes and goes
    temps = daily.repeat(24) + 2.0 * np.sin(np.arange(24 * days) / 24 * 2 * np.pi)
    hdd = np.maximum(288.15 - temps, 0.0)
    y = noisy(np.tile(SHAPE, days) * (0.01 + 0.004 * hdd), 0.01, seed=3)
    with_t = DemandForecaster()
    err_t = day_ahead(with_t, y, temps)
    err_none = day_ahead(DemandForecaster(), y)
    assert with_t.state["beta"] == pytest.approx(0.004, rel=0.15)
    assert err_t < 5.0 and err_t < err_none / 2


def test_a_weekly_rhythm_is_learned_and_a_flat_week_gets_none():
    weekly = np.array([1, 1, 1, 1, 1, 1.25, 1.35]).repeat(24)        # Saturday, Sunday higher
    weeks = 6
    y = noisy(0.03 * np.tile(SHAPE, 7 * weeks) * np.tile(weekly, weeks), 0.01, seed=4)
    errors = {}
    for weekday in (True, False):
        f, errs = DemandForecaster(weekday=weekday), []
        for k in range(len(y)):
            if k % 24 == 0 and k >= len(y) - 7 * 24:                  # each day of the last week, day ahead
                errs.append(mape(y[k:k + 24], f.forecast(MONDAY_NS + k * HOUR_NS)))
            f.learn_one(MONDAY_NS + k * HOUR_NS, float(y[k]))
        errors[weekday] = np.mean(errs)
        if weekday:
            assert f.uses_weekday and f.state["week"][6] > f.state["week"][0] * 1.2
    assert errors[True] < 5.0 and errors[True] < errors[False] / 1.8
    flat = DemandForecaster()
    for k, v in enumerate(noisy(0.03 * np.tile(SHAPE, 7 * 3), 0.03, seed=5)):
        flat.learn_one(MONDAY_NS + k * HOUR_NS, float(v))
    assert np.ptp(flat.state["week"]) < 0.05


def test_the_first_day_is_a_flat_level_then_the_shape():
    f = DemandForecaster()
    assert not f.ready and np.isnan(f.forecast(0)).all()
    for k in range(12):
        f.learn_one(k * HOUR_NS, 2.0 * SHAPE[k])
    assert f.ready and not f.warmed_up
    assert np.allclose(f.forecast(12 * HOUR_NS), np.mean(2.0 * SHAPE[:12]))
    for k in range(12, 24):
        f.learn_one(k * HOUR_NS, 2.0 * SHAPE[k])
    assert f.warmed_up and np.allclose(f.forecast(24 * HOUR_NS), 2.0 * SHAPE)


def test_the_last_error_carries_into_the_next_hours():
    rng = np.random.default_rng(6)
    ar = np.zeros(24 * 14)
    for i in range(1, len(ar)):
        ar[i] = 0.9 * ar[i - 1] + 0.03 * rng.standard_normal()
    y = 0.05 * np.tile(SHAPE, 14) * (1 + ar)
    f = DemandForecaster()
    errs_next = []
    for k in range(len(y) - 1):
        f.learn_one(k * HOUR_NS, float(y[k]))
        if k > 24 * 7:
            errs_next.append(abs(f.forecast((k + 1) * HOUR_NS, 1)[0] / y[k + 1] - 1))
    assert f.state["phi"] > 0.6
    assert np.mean(errs_next) < 0.5 * np.mean(np.abs(ar[24 * 7:]))      # the shape alone is off by |ar|


def test_gaps_and_nans_are_skipped_not_learned():
    f = DemandForecaster()
    for k in range(24 * 3):
        if 30 <= k < 40:
            continue                                                 # an outage: ten hours missing
        f.learn_one(k * HOUR_NS, 0.02 * SHAPE[k % 24])
    f.learn_one(72 * HOUR_NS, math.nan)
    assert f.state["n"] == 24 * 3 - 10
    assert mape(0.02 * SHAPE, f.forecast(72 * HOUR_NS)) < 0.5


def test_snapshot_pickles_and_restores_the_same_forecaster():
    y = noisy(0.05 * np.tile(SHAPE, 10), 0.02, seed=7)
    temps = 275.0 + np.random.default_rng(8).standard_normal(len(y))
    a = DemandForecaster()
    for k in range(24 * 9):
        a.learn_one(k * HOUR_NS, float(y[k]), float(temps[k]))
    b = DemandForecaster()
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    for k in range(24 * 9, len(y)):           # both go on learning the same hours
        a.learn_one(k * HOUR_NS, float(y[k]), float(temps[k]))
        b.learn_one(k * HOUR_NS, float(y[k]), float(temps[k]))
    assert np.array_equal(a.forecast(len(y) * HOUR_NS), b.forecast(len(y) * HOUR_NS))
    a.learn_one(len(y) * HOUR_NS, 1.0)        # the snapshot is a copy, not a view
    assert not np.array_equal(a.state["profile"], b.state["profile"])


def test_seasonal_naive_is_the_same_hour_yesterday():
    n = SeasonalNaive()
    for k in range(48):
        n.learn_one(k * HOUR_NS, float(k))
    assert n.forecast(48 * HOUR_NS, 3).tolist() == [24.0, 25.0, 26.0]
    assert n.forecast(60 * HOUR_NS, 24)[:12].tolist() == list(map(float, range(36, 48)))
    assert np.isnan(n.forecast(60 * HOUR_NS, 24)[12:]).all()       # 36 h ahead: not seen yet


def test_mape_ignores_zero_and_missing_actuals():
    assert mape([1.0, 2.0, 0.0, np.nan], [1.1, 1.8, 5.0, 1.0]) == pytest.approx(10.0)
    assert math.isnan(mape([0.0], [1.0]))


def test_hourly_series_average_ticks_and_learn_closed_hours():
    h = HourlySeries(["a", "b"], min_cover=0.5)
    t0 = 10 * HOUR_NS
    learned = []
    for s in range(1, 2 * 3600 + 1, 60):                 # a sample a minute for two hours
        ts = t0 + s * 1_000_000_000
        hour = (ts - 1) // HOUR_NS
        b = np.nan if hour == 11 and s % 3600 > 1200 else 5.0   # b silent most of the second hour
        learned += h.add(ts, np.array([1.0 + hour - 10, b]), 60.0, 280.0)
    learned += h.add(t0 + 2 * HOUR_NS + 60_000_000_000, np.array([9.0, 9.0]), 60.0)
    assert learned == [t0, t0 + HOUR_NS]
    fa, fb = h.forecasters["a"], h.forecasters["b"]
    assert fa.state["n"] == 2 and fb.state["n"] == 1       # b's second hour was not covered
    assert fa.forecast(t0 + 2 * HOUR_NS)[0] == pytest.approx(1.5)
    snap = pickle.loads(pickle.dumps(h.snapshot()))
    other = HourlySeries(["a", "b"])
    other.restore(snap)
    assert np.array_equal(other.forecast(t0 + 2 * HOUR_NS), h.forecast(t0 + 2 * HOUR_NS), equal_nan=True)
    renamed = HourlySeries(["a", "c"])
    renamed.restore(snap)                                  # another zoning: starts afresh
    assert not renamed.forecasters["a"].ready


def test_the_module_docstring_example_runs():
    import doctest

    import pipetwin.twin.forecast as module

    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0
