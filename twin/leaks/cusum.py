"""One-sided CUSUM on standardised leak-flow estimates, with its threshold set from a stated
false-alarm rate.

For independent N(0, 1) inputs, a CUSUM with reference k and threshold h raises a false alarm on
average every ARL0 samples; Siegmund's approximation
ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2), b = h + 1.166
is accurate to a few per cent for the k and h used here, so h follows from the rate by
bisection. The reset point before an alarm is the classic estimate of when the change began.
"""

from __future__ import annotations

import math


def siegmund_arl0(k: float, h: float) -> float:
    """Average run length between false alarms (samples) of a CUSUM(k, h) on N(0, 1) data."""
    b = 2.0 * k * (h + 1.166)
    return (math.exp(b) - b - 1.0) / (2.0 * k * k)


def cusum_threshold(k: float, arl0: float) -> float:
    """The threshold h whose false-alarm run length is ``arl0`` samples.

    >>> round(cusum_threshold(0.5, siegmund_arl0(0.5, 5.0)), 6)
    5.0
    """
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if siegmund_arl0(k, mid) < arl0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def cusum_step(s: float, z: float, k: float) -> float:
    """The statistic after one more standardised sample ``z``."""
    return max(0.0, s + z - k)
