"""Leak detection and localization on the shared public leak set, scored by the shared scorer.

    python benchmarks/leaks.py [--shared ../shared] [--set public] [--out predictions.json]

Runs `pipetwin bench leaks` over every scenario (same parameters for all), then
shared/tools/score_leaks.py, and prints the scorer's table and its figures as key=value lines:
score, detection_rate, false_alarm_rate, median_time_to_detect_h, median_localization_m,
p80_localization_m, share_within_300m, plus seconds (detector run time).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipetwin.bench.leaks import main as bench_leaks

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--set", default="public")
    parser.add_argument("--out", default=None, help="keep the predictions here (default: a temporary file)")
    args = parser.parse_args()
    shared = Path(args.shared)
    set_dir = shared / "benchmarks" / "leaks" / args.set
    scorer = shared / "tools" / "score_leaks.py"
    if not set_dir.is_dir() or not scorer.is_file():
        raise SystemExit(f"{set_dir} or {scorer} not found")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "predictions.json"
    t0 = time.perf_counter()
    rc = bench_leaks([str(set_dir), "--out", str(out)])
    seconds = time.perf_counter() - t0
    if rc:
        return rc
    summary = out.with_suffix(".score.json")
    scored = subprocess.run([sys.executable, str(scorer), str(set_dir), str(out), "--json", str(summary)],
                            capture_output=True, text=True)
    print(scored.stdout, end="")
    if scored.returncode:
        print(scored.stderr, file=sys.stderr)
        return scored.returncode
    s = json.loads(summary.read_text())["summary"]
    for key in ("score", "detection_rate", "false_alarm_rate", "premature_alarms", "median_time_to_detect_h",
                "median_localization_m", "p80_localization_m", "share_within_300m"):
        value = s.get(key)
        print(f"{key}={'inf' if value is None and 'localization' in key else value}")
    print(f"seconds={seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
