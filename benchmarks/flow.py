"""The flow's figures: throughput (gate + align + historian), twin tick cost, end-to-end latency.

    python benchmarks/flow.py [--quick] [--shared ../shared] [--only throughput|ticks|latency]

Same as `pipetwin bench flow`; see pipetwin/bench/flow.py for what is measured and how.
"""

import argparse

from pipetwin.bench.flow import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shared", default=None)
    parser.add_argument("--only", choices=["throughput", "ticks", "latency"], default=None)
    args = parser.parse_args()
    raise SystemExit(main(quick=args.quick, shared=args.shared, only=args.only))
