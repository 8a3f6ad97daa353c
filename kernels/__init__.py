"""Numba kernels the twin calls. Imports nothing of ours: numpy, numba and math only."""
