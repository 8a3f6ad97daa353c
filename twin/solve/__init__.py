"""Steady-state solvers: gas (isothermal) and water (EPANET-compatible GGA)."""
