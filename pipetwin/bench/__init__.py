"""Benchmarks run by `pipetwin bench` (they need the test extras: wntr, pandapipes)."""
