"""Unaccounted-for gas above a share of the inflow, hour after hour: the books say gas is going
somewhere it should not (a leak, theft, a stuck meter)."""

from __future__ import annotations

import math

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector


class UnaccountedGas(TickDetector):
    def __init__(self, pct: float = 5.0, major_pct: float = 15.0):
        self.pct, self.major_pct = pct, major_pct

    def score_one(self, state: TwinState) -> list[Finding]:
        ufg = state.figures.get("ufg_pct")
        if ufg is None or not math.isfinite(ufg) or ufg < self.pct:
            return []
        f = state.figures
        return [Finding("balance", state.network, "major" if ufg >= self.major_pct else "warning", ufg / self.pct,
                        f"unaccounted-for gas {ufg:.1f} % of the inflow in the hour to "
                        f"{f['balance_hour_end_ns']}", {k: v for k, v in f.items() if k.startswith(("balance", "ufg"))})]
