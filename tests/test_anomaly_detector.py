"""The online anomaly model and the per-sensor anomaly detector on signals with known answers."""

import math
import pickle

import numpy as np
import pytest

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.anomaly import SensorAnomaly
from pipetwin.flows.detectors.anomaly_model import SeasonalAnomaly

STEP_S = 300.0                 # 5-minute samples
DAY = int(86400 / STEP_S)      # points per day
T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400


def daily(n: int, seed: int = 0, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A demand-like daily cycle, lower at weekends (easing in and out over three hours), and noise."""
    rng = np.random.default_rng(seed)
    t = T0 + STEP_S * np.arange(n)
    phase = 2 * math.pi * ((t % 86400) / 86400)
    ramp = int(3 * 3600 / STEP_S)
    weekend = np.convolve(((t // 86400 + 3) % 7) >= 5, np.ones(ramp) / ramp, mode="same")
    x = 50 + 20 * np.sin(phase) + 8 * np.sin(2 * phase) - 5 * weekend + rng.normal(0, noise, n)
    return t, x


def stream(model: SeasonalAnomaly, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    for i in range(len(x)):
        out[i] = model.score_one(x[i], t[i])
        model.learn_one(x[i], t[i])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_daily_and_weekly_cycles_raise_no_alarm_after_warmup(seed):
    """Warm-up: two weeks, the weekly profile needs to have seen each weekday twice."""
    t, x = daily(28 * DAY, seed=seed)
    s = stream(SeasonalAnomaly(), t, x)
    assert s.min() >= 0.0 and s.max() <= 1.0
    assert s[14 * DAY:].max() < 0.5, f"alarm on a plain seasonal signal at point {int(np.argmax(s[14 * DAY:]))}"


@pytest.mark.parametrize("kind", ["spike", "step", "flatline"])
def test_spike_step_and_lost_cycle_raise_an_alarm_at_once(kind):
    t, x = daily(21 * DAY, seed=1)
    at = 17 * DAY + DAY // 3
    if kind == "spike":
        x[at] += 30
    elif kind == "step":
        x[at:] -= 15
    else:                                   # the daily cycle stops: the value freezes at its daily mean
        x[at:] = 50 + np.random.default_rng(2).normal(0, 0.5, len(x) - at)
    s = stream(SeasonalAnomaly(), t, x)
    assert s[14 * DAY:at].max() < 0.5
    hit = np.flatnonzero(s[at:] >= 0.5)
    assert len(hit) and hit[0] <= DAY // 4, f"{kind}: first alarm {hit[:1]} points after the change"


def test_a_cluster_of_surprises_is_reported_once():
    t, x = daily(8 * DAY, seed=3)
    at = 6 * DAY
    x[at:at + 20] += 40
    s = stream(SeasonalAnomaly(), t, x)
    assert (s[at:at + 40] >= 0.5).sum() == 1


def test_snapshot_restore_gives_identical_scores():
    t, x = daily(5 * DAY, seed=4)
    x[4 * DAY + 10] += 25
    a = SeasonalAnomaly()
    first = stream(a, t[:3 * DAY], x[:3 * DAY])
    b = SeasonalAnomaly()
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    rest_a, rest_b = stream(a, t[3 * DAY:], x[3 * DAY:]), stream(b, t[3 * DAY:], x[3 * DAY:])
    assert first.shape == (3 * DAY,)
    np.testing.assert_array_equal(rest_a, rest_b)
    assert rest_a.max() >= 0.5


def test_missing_values_are_skipped_not_learnt():
    t, x = daily(4 * DAY, seed=7)
    a, b = SeasonalAnomaly(), SeasonalAnomaly()
    stream(a, t, x)
    x_gaps = x.copy()
    x_gaps[DAY] = np.nan
    s = stream(b, t, x_gaps)
    assert s[DAY] == 0.0 and np.isfinite(s).all()
    assert b.expected(t[-1]) == pytest.approx(a.expected(t[-1]), rel=1e-3)


def _state(k: int, measured: np.ndarray, estimated: np.ndarray) -> TwinState:
    ids = ["P1", "P2", "F1"]
    n = np.zeros(2)
    return TwinState("net", int((T0 + STEP_S * k) * 1e9), ["J1", "J2"], n + 3e5, n, np.zeros(2, bool), [], np.zeros(0),
                     np.zeros(0), ids, measured, estimated, np.ones(1), True, 3, 1.0, 1.0)


def _ticks(n: int, fault_at: int):
    """Three sensors following the daily cycle; from ``fault_at`` P2 reads 3 kPa low while the twin (fitted to the
    other sensors) still estimates the cycle: its residual, not its raw value, is what is strange."""
    t, x = daily(n, seed=5, noise=0.0)
    rng = np.random.default_rng(6)
    for k in range(n):
        truth = np.array([3e5 + 400 * x[k], 2.9e5 + 400 * x[k], 0.02 * x[k]])
        measured = truth + rng.normal(0, [50, 50, 0.01], 3)
        if k >= fault_at:
            measured[1] -= 3000
        if k == 40:
            measured[2] = np.nan            # a missing reading is skipped, not scored
        yield _state(k, measured, truth + rng.normal(0, [30, 30, 0.005], 3))


def run_detector(det: SensorAnomaly, states) -> list[list]:
    out = []
    for s in states:
        det.learn_one(s)
        out.append(det.score_one(s))
    return out


def test_sensor_anomaly_flags_the_sensor_that_disagrees_with_the_twin():
    fault_at = 4 * DAY
    findings = run_detector(SensorAnomaly(), _ticks(5 * DAY, fault_at))
    before = [f for fs in findings[2 * DAY:fault_at] for f in fs]
    after = [f for fs in findings[fault_at:fault_at + 12] for f in fs]
    assert before == []
    assert after, "no finding within an hour of the fault"
    f = after[0]
    assert f.kind == "anomaly" and f.subject == "P2" and f.score >= 0.5
    assert f.evidence["stream"] == "residual"
    assert f.evidence["residual"] == pytest.approx(-3000, abs=400)
    assert set(f.evidence) >= {"value", "expected", "residual", "model"}
    assert {x.subject for x in after} == {"P2"}


def test_sensor_anomaly_snapshot_is_picklable_and_resumes_identically():
    states = list(_ticks(5 * DAY, 4 * DAY))
    a = SensorAnomaly()
    run_detector(a, states[:3 * DAY])
    b = SensorAnomaly()
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    fa, fb = run_detector(a, states[3 * DAY:]), run_detector(b, states[3 * DAY:])
    assert [[(f.subject, f.score) for f in x] for x in fa] == [[(f.subject, f.score) for f in x] for x in fb]
    assert any(fa)


def test_unknown_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown stream"):
        SensorAnomaly(streams=("pressure",))
