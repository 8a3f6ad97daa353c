"""NAB's own scoring, re-implemented over numpy so the figures stay comparable with the published
scoreboard (numenta/NAB: nab/sweeper.py, nab/scorer.py and the ``normalize`` step of nab/runner.py).

How NAB scores, and what this module keeps exactly:

- Every point gets a sweep score. Inside a labelled window it is the scaled sigmoid of its relative
  position (``-(right - i + 1) / width``), divided by its value at the window's left edge and times
  ``tpWeight``; so the earliest detection of a window earns ``tpWeight``. Outside windows it is the
  scaled sigmoid of the distance past the previous window's right edge (``|right - i| / (width - 1)``),
  or -1 before the first window, times ``fpWeight``: a false positive just after a window costs
  little, one far from any window costs ``fpWeight``.
- The first ``min(floor(0.15 n), 750)`` points of a file are probation: never scored.
- For a threshold t, a point is a detection when its anomaly score >= t. A window is worth the best
  sweep score among its detections, or ``-fnWeight`` when it has none; every detection outside
  windows adds its (negative) sweep score.
- One threshold per profile for the whole corpus: the one maximising the corpus total, among the
  corpus's distinct anomaly scores and NAB's start value 1.1 (nothing detected). Ties go to the higher
  threshold, as NAB's stable sort does.
- Normalized score = 100 (raw - null) / (perfect - null): null is the null detector (a constant 0.5 for
  every point) scored the same way, perfect is the number of labelled windows times ``tpWeight``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

PROBATION_PERCENT = 0.15
START_THRESHOLD = 1.1
PROFILE_NAMES = {"standard": "standard", "reward_low_FP_rate": "low_fp", "reward_low_FN_rate": "low_fn"}


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's 2 sigmoid(-5 p) - 1, and exactly -1 from p >= 3 on."""
    position = np.asarray(position, dtype=float)
    out = 2.0 / (1.0 + np.exp(np.minimum(5.0 * position, 700.0))) - 1.0
    return np.where(position >= 3.0, -1.0, out)


MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n: int) -> float:
    return min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000)


@dataclass
class LabelledFile:
    """One data file's labels as NAB's sweeper sees them: windows as (first, last) point indices.

    ``tp_part`` is the sweep score of each point before the profile weight (inside a window: relative to
    the left edge's value; outside: the raw scaled sigmoid), ``window`` its window number (-1 outside),
    ``scorable`` False in probation."""
    name: str
    n: int
    windows: list[tuple[int, int]]
    part: np.ndarray
    window: np.ndarray
    scorable: np.ndarray

    @classmethod
    def build(cls, name: str, n: int, windows: list[tuple[int, int]]) -> LabelledFile:
        idx = np.arange(n, dtype=float)
        part = np.full(n, -1.0)                     # before any window: position 3 -> -1
        window = np.full(n, -1, dtype=np.int64)
        prev_right, prev_width = None, None
        bounds = [(a, b) for a, b in windows] + [(n, n)]
        cursor = 0
        for k, (left, right) in enumerate(bounds):
            if prev_right is not None and cursor < left:     # the gap after the previous window
                gap = idx[cursor:left]
                part[cursor:left] = scaled_sigmoid(np.abs(prev_right - gap) / max(prev_width - 1.0, 1e-12))
            if k == len(windows):
                break
            width = float(right - left + 1)
            inside = idx[left:right + 1]
            part[left:right + 1] = scaled_sigmoid(-(right - inside + 1) / width) / MAX_TP
            window[left:right + 1] = k
            prev_right, prev_width, cursor = right, width, right + 1
        scorable = np.arange(n) >= probation_length(n)
        return cls(name, n, list(windows), part, window, scorable)


def window_indices(name: str, timestamps: list[datetime], windows: list[list[str]]) -> list[tuple[int, int]]:
    """Label windows (timestamp strings) to point indices; NAB enters a window only on an exact timestamp."""
    where = {t: i for i, t in enumerate(timestamps)}
    out = []
    for start, end in windows:
        a, b = datetime.fromisoformat(start), datetime.fromisoformat(end)
        if a not in where or b not in where:
            raise ValueError(f"{name}: label window {start} .. {end} does not start and end on data timestamps")
        out.append((where[a], where[b]))
    return out


def load_profiles(path: Path) -> dict[str, dict[str, float]]:
    """config/profiles.json -> {profile: cost matrix}."""
    raw = json.loads(Path(path).read_text())
    try:
        return {name: {k: float(v) for k, v in prof["CostMatrix"].items()} for name, prof in raw.items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: every profile needs a CostMatrix with tp/fp/fn/tn weights ({exc})") from None


@dataclass
class ThresholdResult:
    threshold: float
    score: float
    tp: int
    fp: int
    fn: int
    tn: int


def _corpus_arrays(files: list[LabelledFile], scores: list[np.ndarray]):
    s, v_tp, v_fp, win = [], [], [], []
    n_windows = 0
    for lf, sc in zip(files, scores):
        sc = np.asarray(sc, dtype=float)
        if sc.shape != (lf.n,):
            raise ValueError(f"{lf.name}: {sc.shape[0]} anomaly scores for {lf.n} data points")
        m = lf.scorable
        w = lf.window[m]
        inside = w >= 0
        s.append(sc[m])
        v_tp.append(np.where(inside, lf.part[m], 0.0))
        v_fp.append(np.where(inside, 0.0, lf.part[m]))
        present = np.unique(w[inside])                      # windows with at least one scorable point
        remap = np.full(len(lf.windows) + 1, -1, dtype=np.int64)
        remap[present] = n_windows + np.arange(len(present))
        win.append(np.where(inside, remap[w], -1))
        n_windows += len(present)
    return np.concatenate(s), np.concatenate(v_tp), np.concatenate(v_fp), np.concatenate(win), n_windows


def threshold_curve(files: list[LabelledFile], scores: list[np.ndarray], cost: dict[str, float]
                    ) -> list[ThresholdResult]:
    """NAB's calcScoreByThreshold over the whole corpus: the total for every distinct threshold, highest
    threshold first, starting with 1.1 (nothing detected)."""
    s, v_tp, v_fp, win, n_windows = _corpus_arrays(files, scores)
    fn_w, tp_w, fp_w = cost["fnWeight"], cost["tpWeight"], cost["fpWeight"]
    order = np.argsort(-s, kind="stable")
    s, v_tp, v_fp, win = s[order], v_tp[order], v_fp[order], win[order]
    inside = win >= 0
    delta = np.where(inside, 0.0, v_fp * fp_w)
    # a window's worth rises each time a detection beats its best so far (the earliest detection wins)
    pos = np.flatnonzero(inside)
    if len(pos):
        by_window = pos[np.argsort(win[pos], kind="stable")]
        w = win[by_window]
        val = v_tp[by_window] * tp_w
        offset = w * (abs(tp_w) + abs(fn_w) + 10.0)
        run = np.maximum.accumulate(np.maximum(val, -fn_w) + offset) - offset
        first = np.r_[True, w[1:] != w[:-1]]
        prev = np.where(first, -fn_w, np.r_[0.0, run[:-1]])
        delta[by_window] = run - prev
    total = -fn_w * n_windows + np.cumsum(delta)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(inside)
    fp = np.cumsum(~inside)
    n_in = int(inside.sum())
    n_out = len(s) - n_in
    out = []
    if not (len(s) and s[0] == START_THRESHOLD):
        out.append(ThresholdResult(START_THRESHOLD, -fn_w * n_windows, 0, 0, n_in, n_out))
    for k in np.flatnonzero(last_of_tie):
        out.append(ThresholdResult(float(s[k]), float(total[k]), int(tp[k]), int(fp[k]),
                                   n_in - int(tp[k]), n_out - int(fp[k])))
    return out


def best_threshold(files: list[LabelledFile], scores: list[np.ndarray], cost: dict[str, float]) -> ThresholdResult:
    curve = threshold_curve(files, scores, cost)
    return curve[int(np.argmax([r.score for r in curve]))]


def file_score(lf: LabelledFile, scores: np.ndarray, cost: dict[str, float], threshold: float) -> float:
    """One file's raw score at a given threshold (NAB's scoreDataSet)."""
    m = lf.scorable & (np.asarray(scores, dtype=float) >= threshold)
    outside = m & (lf.window < 0)
    total = float(lf.part[outside].sum()) * cost["fpWeight"]
    for k in np.unique(lf.window[lf.scorable & (lf.window >= 0)]):
        hit = m & (lf.window == k)
        total += float(lf.part[hit].max()) * cost["tpWeight"] if hit.any() else -cost["fnWeight"]
    return total


@dataclass
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    counts: dict


def score_corpus(files: list[LabelledFile], scores: list[np.ndarray], profiles: dict[str, dict[str, float]],
                 n_label_windows: int) -> dict[str, ProfileResult]:
    """Optimise one threshold per profile over the corpus and normalize null = 0, perfect = 100 (NaN when the
    files hold no labelled window: null and perfect coincide)."""
    null_scores = [np.full(lf.n, 0.5) for lf in files]
    out = {}
    for name, cost in profiles.items():
        best = best_threshold(files, scores, cost)
        null = best_threshold(files, null_scores, cost).score
        perfect = n_label_windows * cost["tpWeight"]
        normalized = 100.0 * (best.score - null) / (perfect - null) if perfect != null else math.nan
        out[name] = ProfileResult(name, best.threshold, best.score, null, perfect, normalized,
                                  {"tp": best.tp, "fp": best.fp, "fn": best.fn, "tn": best.tn})
    return out
