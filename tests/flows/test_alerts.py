"""The alert book: one alert per (kind, subject), revisions only when something changes."""

from pipetwin.flows.alerts import AlertBook, merge_findings
from pipetwin.flows.detectors.base import Finding


def _residual(score=2.0):
    return Finding("anomaly", "PT-003", "warning", score, "PT-003 disagrees with the twin",
                   {"model": "residual k-sigma"})


def _fault(score=9.0):
    return Finding("anomaly", "PT-003", "major", score, "PT-003 reads stuck", {"model": "SeasonalAnomaly"})


def test_two_detectors_on_one_sensor_make_one_steady_alert():
    """The residual check and the anomaly model both see a biased sensor: one alert, the more severe
    finding speaking, the other in its evidence; and no new revision tick after tick."""
    book = AlertBook("net", clear_after=3, update_every=60)
    first = book.step(1, [_residual(), _fault()])
    assert len(first) == 1 and first[0].severity == "major" and first[0].message == "PT-003 reads stuck"
    assert first[0].evidence["also"][0]["model"] == "residual k-sigma"
    for t in range(2, 30):                       # both keep firing, in either order
        pair = [_residual(), _fault()] if t % 2 else [_fault(), _residual()]
        assert book.step(t, pair) == []
    cleared = [a for t in range(30, 34) for a in book.step(t, [])]
    assert [a.status for a in cleared] == ["cleared"] and cleared[0].revision == 1


def test_merge_keeps_different_subjects_and_kinds_apart():
    other = Finding("anomaly", "PT-004", "warning", 1.0, "x", {})
    leak = Finding("leak", "PT-003", "critical", 5.0, "leak", {})
    merged = merge_findings([_residual(), other, leak, _fault(score=1.0)])
    assert [(f.kind, f.subject, f.severity) for f in merged] == [
        ("anomaly", "PT-003", "major"), ("anomaly", "PT-004", "warning"), ("leak", "PT-003", "critical")]
    assert "also" not in merged[1].evidence and "also" not in merged[2].evidence
