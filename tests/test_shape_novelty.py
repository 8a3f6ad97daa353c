"""The shape-novelty rule on signals with known answers: a repeated waveform, then a new one inside the same range."""

import math
import pickle

import numpy as np
import pytest

from pipetwin.flows.detectors.anomaly_model import SeasonalAnomaly
from pipetwin.flows.detectors.shape_novelty import ShapeNovelty

PERIOD = 48                                 # points per cycle


def cycles(n_cycles: int, seed: int = 0) -> np.ndarray:
    """A daily-like cycle with one sharp peak per cycle, and a little noise."""
    rng = np.random.default_rng(seed)
    i = np.arange(n_cycles * PERIOD)
    phase = (i % PERIOD) / PERIOD
    x = 40 + 10 * np.sin(2 * math.pi * phase) + 30 * np.exp(-((phase - 0.3) / 0.04) ** 2)
    return x + rng.normal(0, 0.3, len(x))


def oscillation(n: int, seed: int = 0) -> np.ndarray:
    """A fast oscillation between values the cycle also takes: nothing out of range, only the shape is new."""
    return 50 + 15 * np.sign(np.sin(2 * math.pi * np.arange(n) / 6))


def lost_peak(n: int, seed: int = 0) -> np.ndarray:
    """The cycle without its daily peak: every value is one the cycle takes, the peak goes missing."""
    rng = np.random.default_rng(seed)
    phase = (np.arange(n) % PERIOD) / PERIOD
    return 40 + 10 * np.sin(2 * math.pi * phase) + rng.normal(0, 0.3, n)


def run(model: ShapeNovelty, x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x))
    for i, v in enumerate(x):
        p = model.peek(v)
        out[i] = model.update(v)
        assert p == out[i], f"peek and update disagree at point {i}"
    return out


def novelty(**kw) -> ShapeNovelty:
    return ShapeNovelty(**{"step": 3, "width": 8, "vigilance": 0.8, "quiet": 20, "probation": 10 * PERIOD,
                           "lo": 0.0, "hi": 85.0, **kw})


# A window that only just fails the vigilance (a box that has grown to its limit meets a window at its edge)
# scores 0.5; a new shape scores clearly more. NAB's corpus-wide threshold (0.506 with the rule on) sits
# between the two.
EDGE = 0.51


@pytest.mark.parametrize("new, at_least", [(lost_peak, 0.58), (oscillation, 0.54)])
def test_repeated_waveform_scores_low_and_a_new_shape_in_range_scores_high(new, at_least):
    normal = cycles(40)
    at = len(normal)
    x = np.concatenate([normal, new(3 * PERIOD), cycles(5, seed=1)])
    assert x[at:at + 3 * PERIOD].min() >= normal.min() and x[at:at + 3 * PERIOD].max() <= normal.max()
    s = run(novelty(), x)
    assert s[10 * PERIOD:at].max() < EDGE, f"a repeated waveform scored {s[10 * PERIOD:at].max():.3f}"
    hit = np.flatnonzero(s[at:at + 3 * PERIOD] >= at_least)
    assert len(hit), f"the new shape scored only {s[at:at + 3 * PERIOD].max():.3f}"
    assert hit[0] <= PERIOD // 3, f"found {hit[0]} points late"
    assert s[at + 5 * PERIOD:].max() < EDGE, "the cycle's return was learnt before: no news"


def test_nothing_is_scored_in_probation():
    x = np.concatenate([cycles(3), oscillation(PERIOD)])
    assert run(novelty(), x).max() == 0.0


def test_a_stream_that_keeps_making_new_shapes_is_held_quiet():
    """Noise founds new prototypes all the time; ``quiet`` keeps it from being news at every window."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 50, 40 * PERIOD)
    s = run(novelty(), x)
    assert (s >= 0.5).sum() <= 2


def test_seasonal_model_with_the_shape_rule_finds_what_it_alone_misses():
    """Without timestamps the model has only its level to go by: a lost peak inside the usual swing is no
    surprise to it, but it is a new shape."""
    normal = cycles(40)
    at = len(normal)
    x = np.concatenate([normal, lost_peak(3 * PERIOD)])
    shape = {"step": 3, "width": 8, "vigilance": 0.8, "quiet": 20, "probation": 10 * PERIOD, "lo": 0.0, "hi": 85.0}

    def stream(m):
        out = np.empty(len(x))
        for i, v in enumerate(x):
            out[i] = m.score_one(v)
            m.learn_one(v)
        return out

    plain, with_shape = stream(SeasonalAnomaly(warmup=PERIOD)), stream(SeasonalAnomaly(warmup=PERIOD, shape=shape))
    assert plain[10 * PERIOD:at].max() < 0.5 and with_shape[10 * PERIOD:at].max() < EDGE
    assert with_shape[at:at + PERIOD].max() >= 0.58
    assert plain[at:].max() < 0.5, "the plain model finds it too: this test no longer shows the rule"


def test_shape_state_snapshots_and_pickles():
    shape = {"step": 3, "width": 8, "vigilance": 0.6, "quiet": 20, "probation": 4 * PERIOD, "lo": 0.0, "hi": 90.0}
    x = np.concatenate([cycles(12), oscillation(PERIOD)])
    a = SeasonalAnomaly(warmup=PERIOD, shape=shape)
    for v in x[:8 * PERIOD]:
        a.score_one(v)
        a.learn_one(v)
    b = SeasonalAnomaly(warmup=PERIOD, shape=shape)
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    for v in x[8 * PERIOD:]:
        assert a.score_one(v) == b.score_one(v)
        a.learn_one(v)
        b.learn_one(v)
    c = SeasonalAnomaly(warmup=PERIOD, shape=shape)
    c.restore(SeasonalAnomaly().snapshot())            # a snapshot of a model without the rule starts it afresh
    assert c.score_one(50.0) == 0.0
