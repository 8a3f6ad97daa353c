"""The leak detector inside the real flow, on the field simulator with an injected leak.

The flow's fitted twin absorbs a leak as demand; the detector takes its residuals against the
demand-model twin (``PriorTwin``) instead. Production windows are an hour with a day's baseline;
here they are 30 s with a 3-minute baseline (and the prior solved every 10 s), so a few simulated
minutes run the whole cycle: learn, stay quiet, then alarm with candidates."""

from datetime import datetime, timezone

import numpy as np
import pytest

from pipetwin.connectors.simulator import WINTER_PROFILE, Event, Scenario
from pipetwin.flows.contracts import Alert
from pipetwin.flows.detectors.leak import LeakDetector
from pipetwin.flows.steps.twin import PriorTwin
from pipetwin.twin.leaks.localize import pipe_distances

from .test_flow import network, run_flow, simulated_batches  # noqa: F401  (network: the fixture)

START = datetime(2026, 1, 15, 2, 0, tzinfo=timezone.utc)    # night: the profile is flat, demand lowest
LEAK_NODE, LEAK_AT_S, LEAK_KG_S = "K1030", 240.0, 0.006
SECONDS = 480


def short_detectors(model, points):
    return lambda: [LeakDetector.for_points(model, points, window_s=30.0, warmup_s=180.0,
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
    # three baseline minutes, then two tested leak-free minutes: no alert before the leak starts
    assert min(a.opened_ns for a in leaks) >= t0 + LEAK_AT_S * 1e9


def test_leak_alert_opens_soon_with_candidates_near_the_leak(network, leak_run):
    model, _ = network
    states, leaks = leak_run
    t0 = states[0].ts_ns
    first = leaks[0]
    assert first.status == "open" and first.severity == "major"
    assert first.opened_ns <= t0 + (LEAK_AT_S + 120.0) * 1e9        # within four 30-s windows
    last = leaks[-1]
    ev = last.evidence
    assert ev["estimated_flow"] == pytest.approx(LEAK_KG_S, rel=0.5)
    assert abs(ev["start_ns"] - (t0 + LEAK_AT_S * 1e9)) <= 60e9
    assert ev["search_area_links"] and set(ev["search_area_links"]) <= set(model.links.ids)
    assert len(last.candidates) >= 5 and all(np.isfinite([c.x, c.y]).all() for c in last.candidates)
    nodes = model.node_index()
    dist = pipe_distances(model, np.array([nodes[LEAK_NODE]]))[0]
    near = [dist[nodes[c.element]] for c in last.candidates[:5]]
    assert min(near) <= 300.0, f"top-5 candidates {[c.element for c in last.candidates[:5]]} are {near} m away"
