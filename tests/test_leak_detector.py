"""The leak detector (flows/detectors/leak.py) on twin states with known statistics: sensor noise
only must not raise an alarm at the stated rate; a leak injected with the network's own signature
must raise one soon after it starts, and the alert must point at the leak. The CUSUM threshold
must give the false-alarm run length it promises."""

from pathlib import Path

import numpy as np
import pytest

from pipetwin.flows.contracts import TwinState
from pipetwin.flows.detectors.leak import LeakDetector
from pipetwin.twin.io import read_network
from pipetwin.twin.leaks.cusum import cusum_step, cusum_threshold
from pipetwin.twin.leaks.signature import FLOW, PRESSURE, signatures
from pipetwin.twin.model import NodeKind
from pipetwin.twin.solve.water import WaterSolver

DATA = Path(__file__).resolve().parents[1] / "pipetwin" / "data"
TICK_S = 300
HOUR = 3600 * 10 ** 9


@pytest.fixture(scope="module")
def net3():
    model = read_network(DATA / "Net3.inp")
    demand = model.node_demand(0.0)
    base = WaterSolver(model).solve(demand)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    fixed = np.isin(model.nodes.kind, (NodeKind.SOURCE, NodeKind.TANK))
    inlets = np.flatnonzero(fixed[model.links.from_node] | fixed[model.links.to_node])
    kind = np.concatenate([np.full(len(junctions[::4]), PRESSURE), np.full(len(inlets), FLOW)]).astype(np.int8)
    element = np.concatenate([junctions[::4], inlets])
    est = np.where(kind == PRESSURE, base.node_pressure_pa[np.where(kind == PRESSURE, element, 0)],
                   base.link_flow[np.where(kind == FLOW, element, 0)])
    sig = signatures(model, base.node_pressure_pa, base.link_flow, kind, element, base.link_status)
    return model, demand, base, kind, element, est, sig


def states(net3, hours, leak_node=None, leak_flow=0.0, leak_from_h=0.0, seed=0):
    """Twin states whose measurements are the twin plus sensor noise (50 Pa, 0.5 % of flow), and
    from ``leak_from_h`` on, a leak's signature."""
    model, demand, base, kind, element, est, sig = net3
    rng = np.random.default_rng(seed)
    noise = np.where(kind == PRESSURE, 50.0, 0.005 * np.maximum(np.abs(est), 1e-3))
    for t in range(int(hours * 3600 / TICK_S)):
        y = est + noise * rng.standard_normal(len(est))
        if leak_node is not None and t * TICK_S >= leak_from_h * 3600:
            y = y + leak_flow * sig[:, leak_node]
        yield TwinState(network="net3", ts_ns=t * TICK_S * 10 ** 9, node_ids=list(model.nodes.ids),
                        node_pressure_pa=base.node_pressure_pa, node_demand=demand, unsupplied=base.unsupplied,
                        link_ids=list(model.links.ids), link_flow=base.link_flow,
                        link_velocity_m_s=base.link_velocity_m_s, sensor_ids=[str(i) for i in range(len(est))],
                        sensor_measured=y, sensor_estimated=est, zone_multipliers=np.ones(1), converged=True,
                        iterations=1, chi2=0.0, solve_ms=0.0)


def run(det, stream):
    first = last = None
    for st in stream:
        det.learn_one(st)
        found = det.score_one(st)
        if found:
            last = found[0]
            first = first or (st.ts_ns, found[0])
    return first, last


def test_noise_only_raises_no_alarm(net3):
    model, _, _, kind, element, _, _ = net3
    det = LeakDetector(model, kind, element, false_alarms_per_year=1.0)
    first, _ = run(det, states(net3, hours=24 * 8))
    assert det.base is not None            # the baseline was learnt
    assert det.windows[-1]["index"] >= 24 * 8 - 2 and "z" in det.windows[-1]   # tested to the end
    assert len(det.windows) <= det.max_windows                                   # memory stays bounded
    assert first is None


def test_injected_leak_is_found_and_located(net3):
    model, _, _, kind, element, _, _ = net3
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    node = junctions[30]
    det = LeakDetector(model, kind, element, false_alarms_per_year=1.0)
    first, last = run(det, states(net3, hours=48, leak_node=node, leak_flow=0.01, leak_from_h=30.0, seed=1))
    assert first is not None
    ts, finding = first
    assert 30 * HOUR <= ts <= 34 * HOUR          # within 4 h of a leak of 10 L/s
    ev = last.evidence
    assert abs(ev["start_ns"] - 30 * HOUR) <= HOUR
    assert ev["estimated_flow"] == pytest.approx(0.01, rel=0.2)
    links = model.links
    near = {node} | set(links.to_node[links.from_node == node]) | set(links.from_node[links.to_node == node])
    top = model.node_index()[last.candidates[0].element]
    assert top in near
    assert last.kind == "leak" and last.candidates[0].score > 0
    assert ev["search_area_length_m"] > 0


def test_detector_snapshot_restores(net3):
    model, _, _, kind, element, _, _ = net3
    a = LeakDetector(model, kind, element)
    b = LeakDetector(model, kind, element)
    stream = list(states(net3, hours=30, seed=2))
    for st in stream[:200]:
        a.learn_one(st)
    b.restore(a.snapshot())
    for st in stream[200:]:
        a.learn_one(st)
        b.learn_one(st)
    assert a.s_bal == b.s_bal and a.base["theta"] == b.base["theta"]


def test_cusum_threshold_gives_the_stated_run_length():
    k, arl0 = 0.5, 200.0
    h = cusum_threshold(k, arl0)
    rng = np.random.default_rng(3)
    runs = []
    for _ in range(300):
        s, n = 0.0, 0
        while s <= h and n < 20000:
            s = cusum_step(s, rng.standard_normal(), k)
            n += 1
        runs.append(n)
    assert np.mean(runs) == pytest.approx(arl0, rel=0.2)
