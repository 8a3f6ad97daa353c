"""Solver speed against EPANET (water) and pandapipes (gas), side by side in one process.

    python benchmarks/solver.py [--quick] [--shared ../shared] [--profile]

Same as `pipetwin bench solver`; needs the test extras (wntr, pandapipes). See
pipetwin/bench/solver.py for what is timed and how. ``--profile`` prints instead where a cold gas
solve spends its time, phase by phase, on Schutterwald and grid10k (pipetwin/bench/solver_profile.py).
"""

import argparse

from pipetwin.bench.solver import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        from pipetwin.bench.solver_profile import main as profile

        raise SystemExit(profile(["--shared", args.shared] if args.shared else []))
    raise SystemExit(main(quick=args.quick, shared=args.shared))
