"""`pipetwin bench leaks SET_DIR --out predictions.json`: run the leak detector over every scenario of a
leak set (shared/benchmarks/FORMAT.md, leaks/) and write the predictions file the shared scorer reads.

Each scenario is replayed offline: the no-leak twin (``leak_twin.twin_states``) yields one
``TwinState`` per recorded step, and the same ``LeakDetector`` the flow runs learns and scores it
tick by tick. A scenario is "detected" when the detector's leak finding first appears (its time is
the end of the window that raised it); the candidates are those of its last revision (the alert
refines its location while it stays open). Parameters are the same for every scenario."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import Progress

from pipetwin.bench.leak_twin import find_benchmarks_root, read_scenario, twin_states
from pipetwin.flows.detectors.leak import LeakDetector


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")


def detect(folder: Path, root: Path, models: dict, false_alarms_per_year: float) -> dict:
    """Prediction for one scenario: {"detected", "detected_at", "candidates", ...extras}."""
    sc = read_scenario(folder, root, models)
    det = LeakDetector(sc.model, sc.kind, sc.element, false_alarms_per_year=false_alarms_per_year)
    first, last = None, None
    for state, _ in twin_states(sc):
        det.learn_one(state)
        findings = [f for f in det.score_one(state) if f.kind == "leak"]
        if findings:
            last = findings[0]
            if first is None:
                first = (state.ts_ns, findings[0])
    if first is None:
        return {"detected": False, "detected_at": None, "candidates": []}
    return {"detected": True,
            "detected_at": _iso(first[1].evidence["detected_ns"]),
            "candidates": [c.element for c in last.candidates],
            "scores": [round(c.score, 4) for c in last.candidates],
            "estimated_flow": last.evidence["estimated_flow"],
            "estimated_start": _iso(last.evidence["start_ns"]),
            "search_area_length_m": last.evidence["search_area_length_m"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="pipetwin bench leaks", description=__doc__.split("\n")[0])
    ap.add_argument("set_dir",
                    help="folder with one sub-folder per scenario (meta.json, sensors.csv, readings.parquet)")
    ap.add_argument("--out", required=True, help="predictions JSON to write")
    ap.add_argument("--benchmarks-root", default=None, help="folder holding networks/ (default: found from SET_DIR)")
    ap.add_argument("--false-alarms-per-year", type=float, default=1.0,
                    help="stated false-alarm rate of the detector on a leak-free network (default 1)")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names to run (default: all)")
    args = ap.parse_args(argv)
    set_dir = Path(args.set_dir)
    if not set_dir.is_dir():
        raise SystemExit(f"{set_dir}: no such folder")
    root = Path(args.benchmarks_root) if args.benchmarks_root else find_benchmarks_root(set_dir)
    names = sorted(p.name for p in set_dir.iterdir() if (p / "meta.json").is_file())
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"{set_dir}: no scenario {', '.join(unknown)}")
        names = [n for n in names if n in args.only]
    if not names:
        raise SystemExit(f"{set_dir}: no scenario folders (with meta.json)")
    models: dict = {}
    out = {}
    t0 = time.perf_counter()
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("leak scenarios", total=len(names))
        for name in names:
            progress.update(task, description=f"scenario {name}")
            out[name] = detect(set_dir / name, root, models, args.false_alarms_per_year)
            progress.advance(task)
    seconds = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"scenarios={len(names)}")
    print(f"detected={sum(p['detected'] for p in out.values())}")
    print(f"seconds={seconds:.1f}")
    print(f"seconds_per_scenario={seconds / len(names):.2f}")
    print(f"predictions={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
