"""Meter-end analytics (leak behind the meter, usage change, theft, stopped meter) on field-simulator
scenarios, and the checks' cost per hour at 1e5 and 1e6 meters.

    python benchmarks/meters.py [--days 7] [--step-s 300] [--per-case 8] [--quick] [--no-scale]

Runs `pipetwin bench meters` (pipetwin/bench/meters.py) and prints its key=value lines: per case
detected, delay_h (median, max), other checks flagged; false alarms per 1000 meter-days on the
meters with no fault; ms per hour and state size at 1e5 and 1e6 meters.
"""

import sys

from pipetwin.bench.meters import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
