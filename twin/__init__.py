"""The network twin: model, importers, steady-state solvers. Imports pipetwin.kernels only."""
