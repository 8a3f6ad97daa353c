"""Shape novelty: does the recent stretch of a stream look like any stretch seen before?

Why: the level and profile models of ``anomaly_model`` call a value surprising when it is far from what
is expected *now*; a change of shape that stays inside the usual range (a daily spike that goes
missing, a switch to oscillation, a higher daily peak at an hour that has had such values before) can
slip past them. Here the stream is cut into short windows of a downsampled signal and each window is
compared with a small set of prototype windows learnt online; a window unlike every prototype is novel.

How, in the manner of Fuzzy ART (Carpenter, Grossberg & Rosen 1991; ARTime used it on NAB):

1. every ``step`` points become one value: their mean, or their most extreme point when that stands
   out from the mean by more than ``spike`` of the range (so a short spike survives the downsampling);
   it is min-max normalised with the range given up front (NAB hands each detector the file's min and
   max), else with the range seen so far;
2. the last ``width`` such values form a window; its features are the window as it is (where the
   stream is) and the window rescaled to its own min and max (its shape; a window flatter than
   ``flat`` of the range keeps its flatness rather than having its noise blown up), complement coded;
3. each prototype is a box in feature space; the match of a window to a prototype is the share of the
   window that the box already covers (1 inside the box); the best match below ``vigilance`` makes the
   window novel: its novelty ``1 - match`` becomes a score, and the window founds a new prototype (so
   the same new shape is not news twice); otherwise the best prototype's box grows to take the window in
   (fuzzy ART's fast learning), which is how a prototype generalises;
4. a novel window is news only after ``quiet`` windows in a row that founded no prototype: a stream
   whose windows keep founding prototypes (noise wandering about feature space; a shape set still being
   learnt) has no settled repertoire a window could break from, so its novelty is not news (ARTime masks
   its detections after each new category in the same spirit). The score of a novel window is
   0.5 (1 - match) / (1 - vigilance), capped at 1: 0.5 at the vigilance, 1 at twice its distance;
5. nothing is scored during ``probation`` points (they only teach prototypes), and at most
   ``max_prototypes`` are kept (when full, the one matched least recently is replaced).

The defaults of ``vigilance`` and ``quiet`` were chosen on the NAB corpus (``pipetwin bench nab``, standard
profile: 72.2 without the rule; 75.3 at 0.6 and 60, 73.9-74.3 at 0.6 with 50 or 70, 72.1-74.0 at 0.55 or
0.65 with 40-80: a sharp optimum, though nearly every setting near it beats the model without the rule).

The work happens every ``step`` points on a (prototypes x features) numpy array: a few microseconds per
point on average. ``update(x)`` learns and returns the point's score; ``peek(x)`` returns the same score
without learning (for river's score-then-learn protocol). The state is a plain dict (``state``).
"""

from __future__ import annotations

import math

import numpy as np


class ShapeNovelty:
    """Online shape-novelty score in [0, 1] of a univariate stream; see the module docstring."""

    def __init__(self, step: int = 5, width: int = 8, vigilance: float = 0.6, probation: int = 600,
                 lo: float | None = None, hi: float | None = None, spike: float = 0.05, flat: float = 0.1,
                 max_prototypes: int = 200, quiet: int = 60):
        if step < 1 or width < 2:
            raise ValueError("ShapeNovelty: step >= 1 and width >= 2")
        if not 0.0 < vigilance < 1.0:
            raise ValueError("ShapeNovelty: vigilance must be in (0, 1)")
        self.step, self.width, self.vigilance, self.probation = step, width, vigilance, probation
        self.spike, self.flat, self.max_prototypes, self.quiet = spike, flat, max_prototypes, quiet
        self.fixed_range = lo is not None and hi is not None and hi > lo
        self.state = {"n": 0, "buf": [], "ds": [], "avg": None, "since_new": 0,
                      "lo": lo if self.fixed_range else math.inf, "hi": hi if self.fixed_range else -math.inf,
                      "w": np.empty((0, 4 * width)), "used": np.empty(0, dtype=np.int64)}

    # -- features ----------------------------------------------------------------------------------------
    def _down(self, buf: list[float]) -> float:
        """The block's mean, or its extreme (the one further from the running average) if it stands out."""
        s = self.state
        mean = sum(buf) / len(buf)
        avg = mean if s["avg"] is None else s["avg"]
        hi, lo = max(buf), min(buf)
        ext = hi if abs(hi - avg) >= abs(lo - avg) else lo
        span = s["hi"] - s["lo"]
        if span > 0 and abs(ext - mean) > self.spike * span:
            return ext
        return mean

    def _features(self, ds: list[float]) -> np.ndarray:
        """The window where it is and its own shape, in [0, 1], complement coded (so |f| = 2 width)."""
        s = self.state
        span = s["hi"] - s["lo"]
        a = np.asarray(ds, dtype=float)
        a = np.clip((a - s["lo"]) / span, 0.0, 1.0) if span > 0 else np.zeros_like(a)
        lo = a.min()
        shape = (a - lo) / max(a.max() - lo, self.flat)
        f = np.concatenate((a, shape))
        return np.concatenate((f, 1.0 - f))

    def _window(self, x: float) -> np.ndarray | None:
        """The feature window that x completes, or None when x does not complete a block (or a window)."""
        s = self.state
        if len(s["buf"]) + 1 < self.step:
            return None
        ds = s["ds"][-(self.width - 1):] + [self._down(s["buf"] + [x])]
        return self._features(ds) if len(ds) == self.width else None

    # -- scoring -----------------------------------------------------------------------------------------
    def _match(self, f: np.ndarray) -> tuple[int, float]:
        """(best prototype, its match): the share of the window the prototype's box already covers."""
        w = self.state["w"]
        if len(w) == 0:
            return -1, 0.0
        m = np.minimum(w, f).sum(axis=1) / (0.5 * len(f))
        j = int(np.argmax(m))
        return j, float(m[j])

    def _score(self, m: float) -> float:
        if m >= self.vigilance or self.state["since_new"] < self.quiet:
            return 0.0
        return min(1.0, 0.5 * (1.0 - m) / (1.0 - self.vigilance))

    def peek(self, x: float) -> float:
        """The score ``update(x)`` would return, without learning x."""
        if self.state["n"] < self.probation:
            return 0.0
        f = self._window(x)
        return 0.0 if f is None else self._score(self._match(f)[1])

    # -- learning ----------------------------------------------------------------------------------------
    def update(self, x: float) -> float:
        """Learn x; the score of the window it completes (0 while it completes none, or in probation)."""
        s = self.state
        x = float(x)
        if not self.fixed_range:
            s["lo"], s["hi"] = min(s["lo"], x), max(s["hi"], x)
        f = self._window(x)
        if len(s["buf"]) + 1 >= self.step:
            d = self._down(s["buf"] + [x])
            s["avg"] = d if s["avg"] is None else 0.5 * (s["avg"] + d)
            s["ds"] = (s["ds"] + [d])[-self.width:]
            s["buf"] = []
        else:
            s["buf"].append(x)
        score = 0.0
        if f is not None:
            j, m = self._match(f)
            if s["n"] >= self.probation:
                score = self._score(m)
            self._learn(f, j, m)
        s["n"] += 1
        return score

    def _learn(self, f: np.ndarray, j: int, m: float) -> None:
        """Fast learning: the best prototype's box grows to take f in; or f founds a new prototype."""
        s = self.state
        if j >= 0 and m >= self.vigilance:
            s["w"][j] = np.minimum(s["w"][j], f)
            s["used"][j] = s["n"]
            s["since_new"] += 1
            return
        s["since_new"] = 0
        if len(s["w"]) < self.max_prototypes:
            s["w"] = np.vstack((s["w"], f))
            s["used"] = np.append(s["used"], s["n"])
        else:
            k = int(np.argmin(s["used"]))
            s["w"][k] = f
            s["used"][k] = s["n"]
