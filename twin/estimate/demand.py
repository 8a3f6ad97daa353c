"""Weighted least squares over demand multipliers: the twin's answer to "what demand makes the
network look like the sensors say?".

Consumers are grouped into zones; each zone's demand is its prior (base x profile, or the meters'
own reads where a house is metered and known) times a multiplier theta. Gauss-Newton minimises

    sum_i ((y_i - h_i(theta)) / sigma_i)^2  +  sum_z ((theta_z - theta0_z) / sigma_theta)^2

where h is the steady-state solve. The prior keeps zones that no sensor sees at their expected
demand. Sensitivities come from warm-started finite-difference solves (a handful of zones, each
re-solve a few Newton steps); the whole fit starts from the last tick's multipliers and solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipetwin.twin.model import NetworkModel, NodeKind
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.result import SolveResult

PRESSURE = 0
FLOW = 1


@dataclass
class Measurements:
    """One tick's measured values, aligned arrays. ``kind`` PRESSURE reads node ``element``'s
    pressure (Pa, as the solver reports it), FLOW reads link ``element``'s flow (kg/s)."""

    kind: np.ndarray       # int8
    element: np.ndarray    # int64 node or link index
    value: np.ndarray      # SI
    sigma: np.ndarray      # SI, one standard deviation

    def __len__(self) -> int:
        return len(self.value)


@dataclass
class Estimate:
    multipliers: np.ndarray     # per zone
    demand: np.ndarray          # per node, as solved
    result: SolveResult
    residual: np.ndarray        # measured minus estimated, per measurement (SI)
    chi2: float                 # sum of squared normalised residuals (measurements only)
    iterations: int
    solves: int


def make_zones(model: NetworkModel, n_zones: int, seed: int = 0) -> np.ndarray:
    """Group consumers into ``n_zones`` compact zones by their coordinates (k-means); -1 for
    nodes that are not consumers. Districts in a real utility come from its GIS; this is the
    fallback when none are given."""
    consumers = np.flatnonzero((model.nodes.kind == NodeKind.CONSUMER) | (model.base_demand() > 0))
    zones = np.full(model.n_nodes, -1, np.int64)
    if len(consumers) == 0:
        return zones
    xy = np.column_stack([model.nodes.x[consumers], model.nodes.y[consumers]])
    k = min(n_zones, len(consumers))
    rng = np.random.default_rng(seed)
    centres = xy[rng.choice(len(xy), k, replace=False)]
    for _ in range(30):
        label = np.argmin(((xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1), axis=1)
        new = np.array([xy[label == z].mean(0) if (label == z).any() else centres[z] for z in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    zones[consumers] = label
    return zones


def observe(result: SolveResult, m: Measurements) -> np.ndarray:
    """The solved network's value at every measurement."""
    return np.where(m.kind == PRESSURE, result.node_pressure_pa[np.where(m.kind == PRESSURE, m.element, 0)],
                    result.link_flow[np.where(m.kind == FLOW, m.element, 0)])


def zone_demand(prior: np.ndarray, zones: np.ndarray, theta: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    """Node demands for multipliers ``theta``: zone members scaled, known (metered) nodes and
    nodes outside any zone at their prior."""
    scale = np.ones(len(prior))
    member = zones >= 0
    if known is not None:
        member &= ~known
    scale[member] = theta[zones[member]]
    return prior * scale


def estimate_demand(solver: GasSolver, prior: np.ndarray, zones: np.ndarray, m: Measurements, *,
                    theta0: np.ndarray | None = None, sigma_theta: float = 0.3, known: np.ndarray | None = None,
                    warm_start: SolveResult | None = None, max_iter: int = 4, tol: float = 1e-4,
                    step: float = 1e-3) -> Estimate:
    """Fit zone multipliers to ``m`` (see the module docstring). ``theta0``: the last tick's
    multipliers (also the prior's centre); ``known``: nodes whose demand is metered, left alone."""
    n_zones = int(zones.max()) + 1 if (zones >= 0).any() else 0
    theta = np.ones(n_zones) if theta0 is None else np.asarray(theta0, float).copy()
    centre = theta.copy()
    w = 1.0 / np.asarray(m.sigma, float)
    result = solver.solve(zone_demand(prior, zones, theta, known), warm_start=warm_start)
    solves = 1
    it = 0
    for it in range(1, max_iter + 1):
        h = observe(result, m)
        r = (m.value - h) * w
        jac = np.empty((len(m), n_zones))
        for z in range(n_zones):
            t = theta.copy()
            dz = step * max(abs(theta[z]), 0.1)
            t[z] += dz
            probe = solver.solve(zone_demand(prior, zones, t, known), warm_start=result)
            solves += 1
            jac[:, z] = (observe(probe, m) - h) * w / dz
        # normal equations with the prior as extra rows
        a = jac.T @ jac + np.eye(n_zones) / sigma_theta ** 2
        b = jac.T @ r - (theta - centre) / sigma_theta ** 2
        delta = np.linalg.solve(a, b)
        theta = np.maximum(theta + delta, 0.0)
        result = solver.solve(zone_demand(prior, zones, theta, known), warm_start=result)
        solves += 1
        if np.max(np.abs(delta)) < tol:
            break
    residual = m.value - observe(result, m)
    return Estimate(theta, zone_demand(prior, zones, theta, known), result, residual,
                    float(np.sum((residual * w) ** 2)), it, solves)
