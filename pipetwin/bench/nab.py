"""``pipetwin bench nab NAB_DIR``: our online anomaly model over the Numenta Anomaly Benchmark, scored
with NAB's own method (``pipetwin.bench.nab_score``).

Every file is streamed point by point through a fresh model with the same parameters (no per-file
tuning; the labels are read only by the scorer, after detection). Progress goes to stderr; the
figures go to stdout as ``key=value`` lines: ``standard``, ``low_fp``, ``low_fn``, ``files``, ``seconds``.
``--detector river-sad`` runs river's StandardAbsoluteDeviation instead, the issue's baseline anchor.
The pipetwin model runs with its shape-novelty rule (``flows/detectors/shape_novelty.py``), which uses what
NAB hands every detector before the first point: the file's min and max and its probationary period;
``--no-shape`` runs the model without it (the live flow's default).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from pipetwin.bench.nab_score import PROFILE_NAMES, LabelledFile, load_profiles, score_corpus, window_indices

DETECTORS = ("pipetwin", "river-sad")


@dataclass
class NabFile:
    name: str                  # relative path, e.g. realKnownCause/nyc_taxi.csv
    seconds: list[float]
    values: list[float]
    timestamps: list[datetime]


def read_file(path: Path, name: str) -> NabFile:
    """One NAB csv (timestamp,value)."""
    seconds, values, stamps = [], [], []
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}: line 1 must be the header 'timestamp,value', got {header!r}")
        for line, row in enumerate(rows, start=2):
            try:
                t = datetime.fromisoformat(row[0])
                v = float(row[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{line}: expected 'YYYY-MM-DD HH:MM:SS,number', got {row!r}") from None
            stamps.append(t)
            seconds.append(t.replace(tzinfo=timezone.utc).timestamp())
            values.append(v)
    return NabFile(name, seconds, values, stamps)


def list_files(nab_dir: Path, only: str | None, limit: int | None) -> list[str]:
    data = nab_dir / "data"
    if not data.is_dir():
        raise SystemExit(f"{nab_dir}: no data/ folder (expected a NAB checkout: data/, labels/, config/)")
    names = sorted(str(p.relative_to(data)) for p in data.glob("*/*.csv"))
    if only:
        names = [n for n in names if fnmatch.fnmatch(n, only) or only in n]
    if limit:
        names = names[:limit]
    if not names:
        raise SystemExit(f"{data}: no csv file matches --only {only!r}")
    return names


# the shape-novelty rule (flows/detectors/shape_novelty.py): windows of WIDTH downsampled values, the
# downsampling step set so that the probation holds WINDOWS_PER_PROBATION windows (as ARTime does)
SHAPE_WIDTH, WINDOWS_PER_PROBATION = 8, 13
SHAPE_VIGILANCE, SHAPE_QUIET = 0.6, 60


def probation(n: int) -> int:
    """NAB's probationary period of a file of n points (NAB tells its detectors this up front)."""
    return int(min(math.floor(0.15 * n), 750))


def make_model(detector: str, f: NabFile | None = None, shape: bool = True):
    """A fresh model for file f. NAB hands each detector the file's min and max (inputMin/inputMax) and its
    probationary period before the first point; the shape rule uses them, the rest of the model does not."""
    if detector == "pipetwin":
        from pipetwin.flows.detectors.anomaly_model import SeasonalAnomaly
        if not shape or f is None or not f.values:
            return SeasonalAnomaly()
        pb = probation(len(f.values))
        step = max(1, pb // (SHAPE_WIDTH * WINDOWS_PER_PROBATION))
        return SeasonalAnomaly(shape={"step": step, "width": SHAPE_WIDTH, "vigilance": SHAPE_VIGILANCE,
                                      "quiet": SHAPE_QUIET, "probation": pb,
                                      "lo": min(f.values), "hi": max(f.values)})
    if detector == "river-sad":
        return RiverSad()
    raise SystemExit(f"unknown detector {detector!r} (choose from {', '.join(DETECTORS)})")


class RiverSad:
    """river's StandardAbsoluteDeviation, score squashed to [0, 1) (monotone, so NAB's ranking is unchanged)."""

    def __init__(self):
        from river.anomaly import StandardAbsoluteDeviation
        self.model = StandardAbsoluteDeviation()

    def score_one(self, x: float, t=None) -> float:
        z = self.model.score_one(None, x)
        return z / (1.0 + z)

    def learn_one(self, x: float, t=None) -> None:
        self.model.learn_one(None, x)


def detect(args: tuple[str, Path, str, bool]) -> tuple[str, np.ndarray, float]:
    """Stream one file through a fresh model: score each point before learning it."""
    name, path, detector, shape = args
    f = read_file(path, name)
    model = make_model(detector, f, shape)
    out = np.empty(len(f.values))
    t0 = time.perf_counter()
    score, learn = model.score_one, model.learn_one
    for i, (x, t) in enumerate(zip(f.values, f.seconds)):
        out[i] = score(x, t)
        learn(x, t)
    return name, out, time.perf_counter() - t0


def run(nab_dir: Path, names: list[str], detector: str, processes: int, progress=None, shape: bool = True
        ) -> tuple[dict[str, np.ndarray], float]:
    """Scores per file, and the seconds spent in the model's loop summed over files."""
    jobs = [(n, nab_dir / "data" / n, detector, shape) for n in names]
    scores, loop_s = {}, 0.0
    with Pool(processes) if processes > 1 else _Serial() as pool:
        for name, s, seconds in pool.imap_unordered(detect, jobs):
            scores[name] = s
            loop_s += seconds
            if progress:
                progress(name)
    return scores, loop_s


class _Serial:
    """Pool's imap_unordered in this process (no worker start-up for one process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, jobs):
        return map(fn, jobs)


def labelled(nab_dir: Path, names: list[str]) -> tuple[list[LabelledFile], int]:
    """Each file's label windows as point indices, and the number of windows in the labels file (NAB's
    'perfect' counts them all)."""
    path = nab_dir / "labels" / "combined_windows.json"
    windows = json.loads(path.read_text())
    out = []
    for n in names:
        if n not in windows:
            raise ValueError(f"{path}: no entry for data file {n}")
        f = read_file(nab_dir / "data" / n, n)
        out.append(LabelledFile.build(n, len(f.values), window_indices(n, f.timestamps, windows[n])))
    return out, sum(len(windows[n]) for n in names)


def evaluate(nab_dir: Path, names: list[str], detector: str, processes: int, quiet: bool = False,
             shape: bool = True) -> dict:
    """Detect over the files, then score: {profile: ProfileResult, 'files': n, 'seconds': s}."""
    from rich.console import Console
    from rich.progress import Progress

    t0 = time.perf_counter()
    with Progress(transient=True, disable=quiet, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"{detector} over NAB", total=len(names))
        scores, loop_s = run(nab_dir, names, detector, processes, progress=lambda n: bar.advance(task), shape=shape)
    seconds = time.perf_counter() - t0
    files, n_windows = labelled(nab_dir, names)
    profiles = load_profiles(nab_dir / "config" / "profiles.json")
    results = score_corpus(files, [scores[f.name] for f in files], profiles, n_windows)
    points = sum(f.n for f in files)
    return {"results": results, "files": len(names), "seconds": seconds, "points": points,
            "us_per_point": 1e6 * loop_s / max(points, 1)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pipetwin bench nab", description=__doc__.splitlines()[0])
    p.add_argument("nab_dir", metavar="NAB_DIR", type=Path, help="NAB folder with data/, labels/, config/")
    p.add_argument("--files", type=int, default=None, help="only the first N files, sorted by path (the first five hold no anomaly)")
    p.add_argument("--only", default=None, help="only files whose path matches this glob or contains it")
    p.add_argument("--processes", type=int, default=1, help="worker processes for detection (default 1)")
    p.add_argument("--detector", choices=DETECTORS, default="pipetwin")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-shape", action="store_true", help="pipetwin without the shape-novelty rule (the earlier model)")
    o = p.parse_args(argv)
    names = list_files(o.nab_dir, o.only, o.files)
    r = evaluate(o.nab_dir, names, o.detector, max(1, o.processes), o.quiet, shape=not o.no_shape)
    for name, res in r["results"].items():
        print(f"{name}: threshold={res.threshold:.6g} raw={res.raw:.3f} null={res.null:.3f} "
              f"perfect={res.perfect:.0f} tp={res.counts['tp']} fp={res.counts['fp']}", file=sys.stderr)
    if r["results"] and any(res.perfect == res.null for res in r["results"].values()):
        print("note: these files hold no labelled anomaly window, so the normalized score is undefined (nan)",
              file=sys.stderr)
    for name, res in r["results"].items():
        print(f"{PROFILE_NAMES.get(name, name)}={res.normalized:.1f}")
    print(f"detector={o.detector}")
    print(f"shape={0 if o.no_shape or o.detector != 'pipetwin' else 1}")
    print(f"files={r['files']}")
    print(f"points={r['points']}")
    print(f"seconds={r['seconds']:.1f}")
    print(f"us_per_point={r['us_per_point']:.1f}")
    if o.out:
        o.out.write_text(json.dumps({
            "detector": o.detector, "files": r["files"], "points": r["points"], "seconds": r["seconds"],
            "us_per_point": r["us_per_point"],
            "profiles": {n: {"normalized": res.normalized, "raw": res.raw, "threshold": res.threshold,
                             "null": res.null, "perfect": res.perfect, "counts": res.counts}
                         for n, res in r["results"].items()}}, indent=2))
    return 0
