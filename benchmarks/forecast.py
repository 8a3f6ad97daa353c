"""MAPE of the hourly demand forecast on a held-out day: the field simulator's zones and gate
inflow, and the shared leak sets' inflow, metered total and metered consumers, beside a
seasonal-naive baseline (same hour yesterday) and river's HoltWinters and SNARIMAX.

    python benchmarks/forecast.py [--days 8] [--step-s 900] [--no-twin] [--only sim|sets]

Same as `pipetwin bench forecast` (pipetwin/bench/forecast.py, which lists every key): prints
``<dataset>_<series>_<day_ahead|hour_ahead>_mape_<model>`` lines in %, the hours trained on per
dataset, and ``seconds``.
"""

import sys

from pipetwin.bench.forecast import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
