"""Leak signatures and localization (twin/leaks) against the twin's own solvers: a leak simulated
at node k must rank k (or a node next to it) first, and the linearised signatures must match finite
differences of the full nonlinear solve."""

from pathlib import Path

import numpy as np
import pytest

from pipetwin.twin.io import read_network
from pipetwin.twin.leaks.localize import fit_candidates, rank_candidates, search_area
from pipetwin.twin.leaks.signature import FLOW, PRESSURE, signatures
from pipetwin.twin.model import NodeKind
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.water import WaterSolver

DATA = Path(__file__).resolve().parents[1] / "pipetwin" / "data"


def observe(result, kind, element):
    return np.where(kind == PRESSURE, result.node_pressure_pa[np.where(kind == PRESSURE, element, 0)],
                    result.link_flow[np.where(kind == FLOW, element, 0)])


@pytest.fixture(scope="module")
def net3():
    model = read_network(DATA / "Net3.inp")
    # a tight convergence test, so that finite differences measure the physics, not the stopping rule
    solver = WaterSolver(model, {"accuracy": 1e-10, "trials": 200})
    demand = model.node_demand(0.0)
    base = solver.solve(demand)
    assert base.converged
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    kind = np.concatenate([np.full(len(junctions[::2]), PRESSURE), np.full(2, FLOW)]).astype(np.int8)
    pumps = np.flatnonzero(model.links.kind == 1)[:2]
    element = np.concatenate([junctions[::2], pumps])
    return model, solver, demand, base, kind, element


def neighbours(model, k):
    links = model.links
    out = set(links.to_node[links.from_node == k]) | set(links.from_node[links.to_node == k])
    return out | {k}


def test_water_signatures_match_finite_differences(net3):
    model, solver, demand, base, kind, element = net3
    sig = signatures(model, base.node_pressure_pa, base.link_flow, kind, element, base.link_status)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    dq = 1e-3   # 1 L/s: small enough to stay linear
    for k in junctions[[5, 12, 40, 80]]:
        up, down = demand.copy(), demand.copy()
        up[k] += dq
        down[k] -= dq
        fd = (observe(solver.solve(up, warm_start=base), kind, element)
              - observe(solver.solve(down, warm_start=base), kind, element)) / (2 * dq)    # central
        scale = np.abs(fd).max()
        # 3 %, or 0.05 Pa per L/s for nodes next to a tank that hardly see a leak at all
        assert np.abs(sig[:, k] - fd).max() < 0.03 * scale + 50.0, model.nodes.ids[k]


def test_gas_signatures_match_finite_differences():
    model = read_network(DATA / "schutterwald")
    solver = GasSolver(model)
    demand = model.node_demand()
    base = solver.solve(demand)
    nodes = np.arange(model.n_nodes)
    sources = np.flatnonzero(model.nodes.kind == NodeKind.SOURCE)
    gate = np.flatnonzero((model.links.from_node == sources[0]) | (model.links.to_node == sources[0]))
    out_sign = np.where(model.links.from_node[gate] == sources[0], 1.0, -1.0)
    kind = np.array([PRESSURE] * 6 + [FLOW] * len(gate), np.int8)
    element = np.concatenate([nodes[::400][:6], gate])
    sig = signatures(model, base.node_pressure_pa, base.link_flow, kind, element)
    consumers = np.flatnonzero(model.nodes.kind == NodeKind.CONSUMER)
    dq = 1e-4   # 0.1 g/s against about 100 g/s in total
    for k in consumers[[3, 700, 1400]]:
        d = demand.copy()
        d[k] += dq
        r = solver.solve(d, warm_start=base)
        fd = (observe(r, kind, element) - observe(base, kind, element)) / dq
        assert np.abs(sig[:6, k] - fd[:6]).max() < 0.01 * np.abs(fd[:6]).max()
        assert np.abs(sig[6:, k] - fd[6:]).max() < 1e-3
        # the gate meters see the whole leak
        assert float(out_sign @ sig[6:, k]) == pytest.approx(1.0, abs=1e-9)


def test_simulated_leak_ranks_its_node_or_a_neighbour_first(net3):
    model, solver, demand, base, kind, element = net3
    sig = signatures(model, base.node_pressure_pa, base.link_flow, kind, element, base.link_status)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    sigma = np.where(kind == PRESSURE, 10.0, 1e-4)
    hits = 0
    tried = junctions[3::9]
    for k in tried:
        d = demand.copy()
        d[k] += 2e-3     # 2 L/s
        r = solver.solve(d, warm_start=base)
        shift = observe(r, kind, element) - observe(base, kind, element)
        rank = rank_candidates(shift, sigma, sig, junctions)
        hits += int(rank.nodes[0] in neighbours(model, k))
        assert rank.flow[0] > 0
        assert abs(rank.score.sum() - 1.0) < 1e-9 and (np.diff(rank.chi2) >= 0).all()
    assert hits >= 0.9 * len(tried), f"{hits} of {len(tried)}"


def test_fit_is_a_non_negative_least_squares():
    sig = np.array([[1.0, -1.0], [2.0, -2.0]])
    q, chi2 = fit_candidates(np.array([0.5, 1.0]), np.ones(2), sig)
    assert q[0] == pytest.approx(0.5) and chi2[0] == pytest.approx(0.0)
    assert q[1] == 0.0 and chi2[1] == pytest.approx(1.25)    # a leak cannot inject water


def test_search_area_holds_the_top_candidates(net3):
    model, solver, demand, base, kind, element = net3
    sig = signatures(model, base.node_pressure_pa, base.link_flow, kind, element, base.link_status)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    k = junctions[20]
    d = demand.copy()
    d[k] += 2e-3
    shift = observe(solver.solve(d, warm_start=base), kind, element) - observe(base, kind, element)
    rank = rank_candidates(shift, np.where(kind == PRESSURE, 200.0, 1e-3), sig, junctions)
    area = search_area(model, rank, mass=0.9)
    assert area["mass"] >= 0.9 or len(area["nodes"]) == 50
    assert area["length_m"] > 0 and area["nodes"][0] == model.nodes.ids[rank.nodes[0]]
