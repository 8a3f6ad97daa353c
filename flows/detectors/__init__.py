"""Detectors: one protocol, one small module each (as river keeps its anomaly detectors).

A detector sees the twin state of every tick: ``learn_one(state)`` updates what it knows,
``score_one(state)`` returns findings (a subject that looks wrong now, with a score and evidence).
The alert book turns findings into alerts that open, update and clear."""

from pipetwin.flows.detectors.base import Finding, TickDetector  # noqa: F401
