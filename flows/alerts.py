"""The alert book: findings in, alert revisions out. An alert opens on the first finding for a
(kind, subject), is updated when its severity changes or its evidence moves by a lot (and at most
every ``update_every`` ticks otherwise), and clears after ``clear_after`` ticks without a finding.
Ids are stable across revisions, so subscribers deduplicate at-least-once deliveries by
(id, revision)."""

from __future__ import annotations

from bytewax.operators import StatefulLogic

from pipetwin.flows.contracts import Alert, TwinState
from pipetwin.flows.detectors.base import Finding, TickDetector

RANK = {"info": 0, "warning": 1, "major": 2, "critical": 3}


class AlertBook:
    def __init__(self, network: str, clear_after: int = 10, update_every: int = 60):
        self.network, self.clear_after, self.update_every = network, clear_after, update_every
        self.open: dict[tuple[str, str], dict] = {}   # (kind, subject) -> {"alert": Alert, "quiet": n, "since": n}

    def step(self, ts_ns: int, findings: list[Finding]) -> list[Alert]:
        out = []
        seen = set()
        for f in merge_findings(findings):
            key = (f.kind, f.subject)
            seen.add(key)
            entry = self.open.get(key)
            if entry is None:
                alert = Alert(id=f"{self.network}:{f.kind}:{f.subject}:{ts_ns}", kind=f.kind, severity=f.severity,
                              subject=f.subject, network=self.network, opened_ns=ts_ns, updated_ns=ts_ns,
                              message=f.message, evidence={**f.evidence, "score": f.score},
                              candidates=list(f.candidates))
                self.open[key] = {"alert": alert, "quiet": 0, "since": 0}
                out.append(alert)
                continue
            entry["quiet"] = 0
            entry["since"] += 1
            alert = entry["alert"]
            worse = RANK[f.severity] != RANK[alert.severity]
            if worse or entry["since"] >= self.update_every:
                alert = Alert(**{**alert.__dict__, "severity": f.severity, "updated_ns": ts_ns,
                                 "message": f.message, "evidence": {**f.evidence, "score": f.score},
                                 "candidates": list(f.candidates), "revision": alert.revision + 1})
                entry["alert"], entry["since"] = alert, 0
                out.append(alert)
        for key in list(self.open):
            if key in seen:
                continue
            entry = self.open[key]
            entry["quiet"] += 1
            if entry["quiet"] >= self.clear_after:
                a = entry["alert"]
                out.append(Alert(**{**a.__dict__, "status": "cleared", "cleared_ns": ts_ns, "updated_ns": ts_ns,
                                    "revision": a.revision + 1}))
                del self.open[key]
        return out

    def snapshot(self) -> dict:
        return {"open": {k: {**v, "alert": v["alert"].to_json()} for k, v in self.open.items()}}

    def restore(self, snap: dict) -> None:
        self.open = {tuple(k): {**v, "alert": Alert.from_json(v["alert"])} for k, v in snap["open"].items()}


def merge_findings(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, subject) and tick: two detectors that see the same sensor fault (the
    residual k-sigma check and the per-sensor anomaly model both watch residuals) would otherwise
    flip one alert between their severities every tick. The most severe (then highest-scoring)
    finding speaks; the others ride along in its evidence under ``also``."""
    best: dict[tuple[str, str], Finding] = {}
    others: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        key = (f.kind, f.subject)
        b = best.get(key)
        if b is None:
            best[key] = f
        elif (RANK[f.severity], f.score) > (RANK[b.severity], b.score):
            others.setdefault(key, []).append(b)
            best[key] = f
        else:
            others.setdefault(key, []).append(f)
    out = []
    for key, f in best.items():
        if key in others:
            also = [{"model": o.evidence.get("model", ""), "severity": o.severity, "score": o.score,
                     "message": o.message} for o in others[key]]
            f = Finding(f.kind, f.subject, f.severity, f.score, f.message, {**f.evidence, "also": also},
                        list(f.candidates))
        out.append(f)
    return out


class DetectLogic(StatefulLogic):
    """Twin state in; the state itself and any alert revisions out, tagged ("state"|"alert", x)."""

    def __init__(self, detectors: list[TickDetector], book: AlertBook, resume: dict | None):
        self.detectors, self.book = detectors, book
        if resume is not None:
            book.restore(resume["book"])
            for d, s in zip(detectors, resume["detectors"]):
                d.restore(s)

    def on_item(self, state: TwinState):
        self.book.network = state.network       # the key's network (several networks in one flow)
        findings = []
        for d in self.detectors:
            d.learn_one(state)
            findings.extend(d.score_one(state))
        alerts = self.book.step(state.ts_ns, findings)
        return [("state", state)] + [("alert", a) for a in alerts], StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return {"book": self.book.snapshot(), "detectors": [d.snapshot() for d in self.detectors]}
