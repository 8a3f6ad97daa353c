"""The detector protocol."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from pipetwin.flows.contracts import TwinState


@dataclass
class Finding:
    kind: str          # alert kind: pressure_limit | anomaly | data_quality | leak | ...
    subject: str       # element or point id
    severity: str      # info | warning | major | critical
    score: float
    message: str
    evidence: dict = field(default_factory=dict)
    candidates: list = field(default_factory=list)   # leak findings: contracts.Candidate, best first


class TickDetector(ABC):
    """Configuration in ``__init__``; state separate and picklable (``snapshot``/``restore``)."""

    def learn_one(self, state: TwinState) -> None:  # noqa: B027 - most detectors learn nothing
        """Update what the detector knows from one tick."""

    @abstractmethod
    def score_one(self, state: TwinState) -> list[Finding]:
        """What looks wrong in this tick."""

    def snapshot(self) -> dict:
        return {}

    def restore(self, snap: dict) -> None:  # noqa: B027
        pass
