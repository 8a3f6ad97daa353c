"""The leak detector inside the real flow, on the field simulator with an injected leak.

The flow's fitted twin absorbs a leak as demand; the detector takes its residuals against the
demand-model twin (``PriorTwin``) instead. Production windows are an hour with a day's baseline;
here they are 20 s with a 100-s baseline (and the prior solved every 10 s), so four simulated
minutes run the whole cycle: learn, stay quiet, then alarm with candidates."""

from datetime import datetime, timezone

import numpy as np
import pytest

from pipetwin.connectors.simulator import WINTER_PROFILE, Event, Scenario
from pipetwin.flows.contracts import Alert
from pipetwin.flows.detectors.leak import LeakDetector
from pipetwin.flows.steps.twin import PriorTwin
from pipetwin.twin.leaks.localize import pipe_distances

from ..test_leak_detector import net3  # noqa: F401  (fixture)
from .test_flow import network, run_flow, simulated_batches  # noqa: F401  (network: the fixture)

START = datetime(2026, 1, 15, tzinfo=timezone.utc)    # midnight: the simulator's day and the UTC day agree
LEAK_NODE, LEAK_AT_S, LEAK_KG_S = "K1030", 160.0, 0.006     # about 12 % of the night's inflow
SECONDS = 260


def short_detectors(model, points):
    return lambda: [LeakDetector.for_points(model, points, window_s=20.0, warmup_s=100.0,
                                            prior=PriorTwin(model, points, WINTER_PROFILE, every_s=10.0))]


@pytest.fixture(scope="module")
def leak_run(network):  # noqa: F811
    model, points = network
    scenario = Scenario(START, [Event(LEAK_AT_S, "leak", {"node": LEAK_NODE, "flow_kg_s": LEAK_KG_S})])
    batches = simulated_batches(model, points, SECONDS, scenario)
    states, alerts, _, _ = run_flow(model, points, batches, detectors=short_detectors(model, points))
    return states, [a for a in alerts if isinstance(a, Alert) and a.kind == "leak"]


def test_quiet_before_the_leak(leak_run):
    states, leaks = leak_run
    t0 = states[0].ts_ns
    assert len(states) == SECONDS
    assert leaks, "the injected leak raised no leak alert"
    # the baseline, then three tested leak-free windows: no alert before the leak starts
    assert min(a.opened_ns for a in leaks) >= t0 + LEAK_AT_S * 1e9


def test_leak_alert_opens_soon_with_candidates_near_the_leak(network, leak_run):
    model, _ = network
    states, leaks = leak_run
    t0 = states[0].ts_ns
    first = leaks[0]
    assert first.status == "open" and first.severity == "major"
    assert first.opened_ns <= t0 + (LEAK_AT_S + 60.0) * 1e9        # within three 20-s windows
    last = leaks[-1]
    assert len({a.id for a in leaks}) == 1 and last.revision >= 1 and last.status == "open"   # revised, not cleared
    ev = last.evidence
    assert ev["estimated_flow"] == pytest.approx(LEAK_KG_S, rel=0.5)
    assert abs(ev["start_ns"] - (t0 + LEAK_AT_S * 1e9)) <= 40e9
    assert ev["search_area_links"] and set(ev["search_area_links"]) <= set(model.links.ids)
    assert len(last.candidates) >= 5 and all(np.isfinite([c.x, c.y]).all() for c in last.candidates)
    nodes = model.node_index()
    dist = pipe_distances(model, np.array([nodes[LEAK_NODE]]))[0]
    near = [dist[nodes[c.element]] for c in last.candidates[:5]]
    assert min(near) <= 300.0, f"top-5 candidates {[c.element for c in last.candidates[:5]]} are {near} m away"


def test_alert_opens_updates_and_clears_when_the_leak_is_repaired(net3):  # noqa: F811
    """A leak from hour 30 to hour 40 (then repaired), through the flow's alert book: the alert
    opens, is revised while the leak lasts, clears within hours of the repair (the detector's
    leak-ended CUSUM), and the detector watches afresh (its CUSUMs restart; no new alarm)."""
    from pipetwin.flows.alerts import AlertBook
    from pipetwin.twin.model import NodeKind

    from ..test_leak_detector import states

    model, _, _, kind, element, _, _ = net3
    node = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)[30]
    det = LeakDetector(model, kind, element)
    book = AlertBook("net3", clear_after=2, update_every=12)
    leaking = list(states(net3, hours=40, leak_node=node, leak_flow=0.01, leak_from_h=30.0, seed=1))
    repaired = list(states(net3, hours=60, seed=3))[len(leaking):]
    revisions = []
    for st in leaking + repaired:
        det.learn_one(st)
        revisions += book.step(st.ts_ns, det.score_one(st))
    hour = 3600 * 10 ** 9
    assert [a.status for a in revisions][0] == "open" and revisions[-1].status == "cleared"
    assert len({a.id for a in revisions}) == 1 and len(revisions) >= 3        # opened, revised, cleared
    assert 30 * hour < revisions[0].opened_ns <= 34 * hour
    assert 40 * hour < revisions[-1].cleared_ns <= 46 * hour
    assert det.alarm is None and max(det.s_bal, det.s_prs) < det.h      # watching afresh, no new alarm
    assert all(a.evidence["search_area_links"] for a in revisions)


@pytest.mark.slow
def test_normal_operation_raises_no_leak_alert(network):  # noqa: F811
    """Ten simulated minutes without a leak (the short windows: 25 tested windows): no leak alert."""
    model, points = network
    batches = simulated_batches(model, points, 600, Scenario(START, []), seed=4)
    states, alerts, _, _ = run_flow(model, points, batches, detectors=short_detectors(model, points))
    assert len(states) == 600
    assert not [a for a in alerts if isinstance(a, Alert) and a.kind == "leak"]


def test_prior_twin_follows_the_profile_over_the_utc_day(network):  # noqa: F811
    model, points = network
    prior = PriorTwin(model, points, WINTER_PROFILE, every_s=60.0)
    day = 86_400 * 10 ** 9 * 20_000          # some midnight UTC
    hour = 3_600 * 10 ** 9
    assert prior.factor(day) == pytest.approx(WINTER_PROFILE[0])
    assert prior.factor(day + 7 * hour + hour // 2) == pytest.approx((WINTER_PROFILE[7] + WINTER_PROFILE[8]) / 2)
    assert prior.factor(day + 23 * hour + hour // 2) == pytest.approx((WINTER_PROFILE[23] + WINTER_PROFILE[0]) / 2)
    with pytest.raises(ValueError, match="daily load profile"):
        PriorTwin(model, points, [1.0, -0.5])


def test_prior_twin_keeps_the_measurements_and_solves_the_demand_model(network):  # noqa: F811
    """Its estimates are the demand model's, whatever the fitted twin did; one solve per interval."""
    model, points = network
    batches = simulated_batches(model, points, 3)
    states, _, _, _ = run_flow(model, points, batches)
    prior = PriorTwin(model, points, WINTER_PROFILE, every_s=60.0)
    mine = prior.state(states[0])
    assert np.array_equal(mine.sensor_measured, states[0].sensor_measured, equal_nan=True)
    minute = 60 * 10 ** 9
    middle = states[0].ts_ns - states[0].ts_ns % minute + minute // 2        # the middle of the tick's minute
    assert mine.node_demand.sum() == pytest.approx(model.base_demand().sum() * prior.factor(middle))
    assert mine.converged and not np.allclose(mine.sensor_estimated, states[0].sensor_estimated)
    last = prior.last
    prior.state(states[1])
    assert prior.last is last                   # same minute: held, not re-solved
