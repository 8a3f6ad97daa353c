"""Leak localization on the twin: sensitivity signatures of candidate leak locations and their ranking."""
