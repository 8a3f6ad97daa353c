"""State estimation recovers the demand that made the measurements, and leaves unseen zones at
their prior."""

import numpy as np
import pytest

from pipetwin.data import example
from pipetwin.twin.estimate.demand import (FLOW, PRESSURE, Measurements, estimate_demand, make_zones,
                                           observe, zone_demand)
from pipetwin.twin.io import read_network
from pipetwin.twin.model import NodeKind
from pipetwin.twin.solve.gas import GasSolver


@pytest.fixture(scope="module")
def setting():
    model = read_network(example("schutterwald"))
    solver = GasSolver(model)
    zones = make_zones(model, 4)
    rng = np.random.default_rng(0)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    sensors = rng.choice(junctions, 40, replace=False)
    source = int(np.flatnonzero(model.nodes.kind == NodeKind.SOURCE)[0])
    gate = np.flatnonzero((model.links.from_node == source) | (model.links.to_node == source))
    return model, solver, zones, sensors, gate


def measurements(model, solver, zones, sensors, gate, truth, noise=0.0, seed=1):
    prior = model.base_demand()
    res = solver.solve(zone_demand(prior, zones, truth, None))
    kind = np.r_[np.full(len(sensors), PRESSURE), np.full(len(gate), FLOW)].astype(np.int8)
    element = np.r_[sensors, gate]
    sigma = np.r_[np.full(len(sensors), 20.0), np.full(len(gate), 1e-4)]
    m = Measurements(kind, element, np.zeros(len(kind)), sigma)
    rng = np.random.default_rng(seed)
    m.value = observe(res, m) + noise * sigma * rng.standard_normal(len(kind))
    return m, res


def test_make_zones_covers_every_consumer(setting):
    model, _, zones, _, _ = setting
    consumers = model.nodes.kind == NodeKind.CONSUMER
    assert (zones[consumers] >= 0).all() and (zones[~consumers] == -1).all()
    assert len(np.unique(zones[consumers])) == 4


def test_recovers_zone_multipliers_without_noise(setting):
    model, solver, zones, sensors, gate = setting
    truth = np.array([1.3, 0.8, 1.1, 0.95])
    m, res = measurements(model, solver, zones, sensors, gate, truth)
    est = estimate_demand(solver, model.base_demand(), zones, m, sigma_theta=10.0)
    assert np.allclose(est.multipliers, truth, atol=2e-3)
    assert est.chi2 < 1e-3
    assert np.max(np.abs(est.result.node_pressure_pa - res.node_pressure_pa)) < 1.0


def test_noisy_measurements_fit_within_their_noise(setting):
    model, solver, zones, sensors, gate = setting
    truth = np.array([1.2, 1.0, 0.9, 1.05])
    m, _ = measurements(model, solver, zones, sensors, gate, truth, noise=1.0)
    est = estimate_demand(solver, model.base_demand(), zones, m, sigma_theta=10.0)
    # chi-square about the number of measurements minus parameters, multipliers near the truth
    assert est.chi2 < 2 * len(m)
    assert np.abs(est.multipliers - truth).max() < 0.1
    # the total demand is pinned by the gate flow meters
    assert est.demand.sum() == pytest.approx(zone_demand(model.base_demand(), zones, truth, None).sum(), rel=2e-3)


def test_unseen_zone_stays_at_prior_and_warm_start_is_cheaper(setting):
    model, solver, zones, sensors, gate = setting
    truth = np.array([1.2, 1.0, 0.9, 1.05])
    m, _ = measurements(model, solver, zones, sensors, gate, truth)
    # only pressure sensors, and only inside zone 0's area: other zones are barely seen
    keep = np.flatnonzero(m.kind == PRESSURE)[:3]
    few = Measurements(m.kind[keep], m.element[keep], m.value[keep], m.sigma[keep])
    est = estimate_demand(solver, model.base_demand(), zones, few, sigma_theta=0.05)
    assert np.abs(est.multipliers - 1.0).max() < 0.3
    first = estimate_demand(solver, model.base_demand(), zones, m, sigma_theta=10.0)
    again = estimate_demand(solver, model.base_demand(), zones, m, sigma_theta=10.0,
                            theta0=first.multipliers, warm_start=first.result)
    assert again.iterations <= first.iterations and again.solves <= first.solves


def test_metered_nodes_are_not_scaled(setting):
    model, solver, zones, sensors, gate = setting
    known = np.zeros(model.n_nodes, bool)
    known[np.flatnonzero(zones == 0)[:10]] = True
    d = zone_demand(model.base_demand(), zones, np.array([2.0, 2.0, 2.0, 2.0]), known)
    assert np.allclose(d[known], model.base_demand()[known])
    assert np.allclose(d[(zones >= 0) & ~known], 2 * model.base_demand()[(zones >= 0) & ~known])
