"""Solver speed against EPANET (water) and pandapipes (gas), side by side in one process.

    python benchmarks/solver.py [--quick] [--shared ../shared]

Same as `pipetwin bench solver`; needs the test extras (wntr, pandapipes). See
pipetwin/bench/solver.py for what is timed and how.
"""

import argparse

from pipetwin.bench.solver import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", default=None)
    args = parser.parse_args()
    raise SystemExit(main(quick=args.quick, shared=args.shared))
