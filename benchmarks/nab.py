"""The anomaly model over the whole Numenta Anomaly Benchmark, with river's StandardAbsoluteDeviation run
side by side in the same process for a ratio.

    python benchmarks/nab.py [NAB_DIR] [--processes 2]

Same scoring as `pipetwin bench nab` (see pipetwin/bench/nab.py and pipetwin/bench/nab_score.py). Prints
``standard``, ``low_fp``, ``low_fn``, ``seconds``, ``us_per_point`` for ours, the same with a ``river_sad_`` prefix, and
``standard_over_river_sad``.
"""

import argparse
from pathlib import Path

from pipetwin.bench.nab import evaluate, list_files
from pipetwin.bench.nab_score import PROFILE_NAMES

DEFAULT_NAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "nab"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nab_dir", nargs="?", type=Path, default=DEFAULT_NAB.resolve())
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    names = list_files(args.nab_dir, None, None)
    figures = {}
    for detector, prefix in (("pipetwin", ""), ("river-sad", "river_sad_")):
        r = evaluate(args.nab_dir, names, detector, args.processes)
        for profile, res in r["results"].items():
            figures[prefix + PROFILE_NAMES[profile]] = res.normalized
        figures[prefix + "seconds"] = r["seconds"]
        figures[prefix + "us_per_point"] = r["us_per_point"]
        figures["files"], figures["points"] = r["files"], r["points"]
    figures["standard_over_river_sad"] = figures["standard"] / figures["river_sad_standard"]
    for key, value in figures.items():
        print(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}")
