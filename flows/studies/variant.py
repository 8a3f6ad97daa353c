"""One variant of a study: the recorded demands re-solved, tick by tick, on the network as the
variant's changes make it at each tick.

Why re-solve instead of estimating again: the history's sensors measured the network as it was.
Fitting demands to them on a network with a valve shut would explain the valve's effect away as
a change in demand. So the baseline replay (the flow, ``baseline.py``) turns the recorded day
into demands once, and every variant asks the planner's question of the physics: with these
demands, scaled and with leaks added as the variant says, what would the changed network do?

The network changes only where a change starts or ends, so each distinct set of active changes
is one model version with its own solver (topology analysis and factorization paid once per
version); ticks within a version warm-start from the previous tick. Everything here is a pure
function of its arguments, so a variant runs in any process and two runs give identical numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipetwin.twin.changes import Change, demand_transform, model_at
from pipetwin.twin.model import NetworkModel
from pipetwin.twin.solve.gas import GasSolver


@dataclass
class VariantInput:
    """All a variant needs, picklable (one per worker process)."""

    name: str
    model: NetworkModel            # the network as recorded
    changes: list[Change]
    t_s: np.ndarray                # tick end, seconds from the study's start
    demand: np.ndarray             # (ticks, nodes) the baseline's estimated demand, kg/s
    zones: np.ndarray              # per node, -1 outside any zone
    customers: np.ndarray          # bool per node
    min_service_pa: float          # absolute


@dataclass
class VariantResult:
    """Per tick (rows) and per zone (columns; the last column is the whole network) figures, and
    per-node aggregates for maps."""

    name: str
    t_s: np.ndarray
    min_pressure_pa: np.ndarray        # (ticks, zones+1) lowest pressure of a supplied customer (NaN: none)
    min_node: np.ndarray               # (ticks, zones+1) int node index of that minimum, -1 none
    below_min: np.ndarray              # (ticks, zones+1) supplied customers below the minimum service pressure
    unsupplied: np.ndarray             # (ticks, zones+1) customers cut off from every source
    line_pack_kg: np.ndarray           # per tick
    leak_kg_s: np.ndarray              # per tick, leak flow at supplied nodes
    undelivered_kg_s: np.ndarray       # per tick, demand of unsupplied customers
    inflow_kg_s: np.ndarray            # per tick, from the sources
    converged: np.ndarray              # per tick
    iterations: np.ndarray             # per tick
    node_min_pressure_pa: np.ndarray   # per node over the study (supplied ticks only; NaN never supplied)
    node_min_tick: np.ndarray          # per node, tick index of that minimum (-1 none)
    node_ticks_below: np.ndarray       # per node, ticks supplied but below the minimum service pressure
    node_ticks_unsupplied: np.ndarray  # per node
    versions: int                      # distinct network versions solved
    seconds: float                     # wall time of the re-solve


def run_variant(v: VariantInput) -> VariantResult:
    """Re-solve every tick of ``v`` (see the module docstring)."""
    t0 = time.perf_counter()
    model = v.model
    n_ticks, n = v.demand.shape
    n_zones = int(v.zones.max()) + 1 if (v.zones >= 0).any() else 0
    cols = n_zones + 1
    # member[c]: customers in zone c, the last column every customer
    member = np.zeros((cols, n), bool)
    for z in range(n_zones):
        member[z] = v.customers & (v.zones == z)
    member[-1] = v.customers
    out = {k: np.full((n_ticks, cols), np.nan) for k in ("min_pressure_pa",)}
    min_node = np.full((n_ticks, cols), -1, np.int64)
    below = np.zeros((n_ticks, cols), np.int64)
    unsup = np.zeros((n_ticks, cols), np.int64)
    per_tick = {k: np.zeros(n_ticks) for k in ("line_pack_kg", "leak_kg_s", "undelivered_kg_s", "inflow_kg_s")}
    converged = np.zeros(n_ticks, bool)
    iterations = np.zeros(n_ticks, np.int64)
    node_min = np.full(n, np.inf)
    node_min_tick = np.full(n, -1, np.int64)
    node_below = np.zeros(n, np.int64)
    node_unsup = np.zeros(n, np.int64)
    versions: dict[tuple[int, ...], tuple[GasSolver, np.ndarray, np.ndarray]] = {}
    key = None
    last = None
    for i in range(n_ticks):
        t = float(v.t_s[i])
        k = tuple(j for j, c in enumerate(v.changes) if c.active(t))
        if k not in versions:
            changed = model_at(model, v.changes, t)
            versions[k] = (GasSolver(changed), *demand_transform(model, changed))
        solver, scale, leak = versions[k]
        if k != key:
            key, last = k, None            # a new topology or setting: start cold
        demand = v.demand[i] * scale + leak
        try:
            result = solver.solve(demand, warm_start=last)
        except np.linalg.LinAlgError:
            if last is None:
                raise
            result = None        # a warm chord step that lost definiteness: solve cold instead
        if last is not None and (result is None or not result.converged):
            result = solver.solve(demand)
        last = result if result.converged else None
        supplied = ~result.unsupplied
        p = result.node_pressure_pa
        converged[i], iterations[i] = result.converged, result.iterations
        low = supplied & (p < v.min_service_pa)
        for c in range(cols):
            ok = member[c] & supplied
            if ok.any():
                j = int(np.argmin(np.where(ok, p, np.inf)))
                out["min_pressure_pa"][i, c], min_node[i, c] = p[j], j
            below[i, c] = int((member[c] & low).sum())
            unsup[i, c] = int((member[c] & ~supplied).sum())
        per_tick["line_pack_kg"][i] = solver.line_pack_kg(p)      # cut-off pipes (pressure 0) hold nothing
        per_tick["leak_kg_s"][i] = float(leak[supplied].sum())
        per_tick["undelivered_kg_s"][i] = float(np.maximum(demand, 0.0)[v.customers & ~supplied].sum())
        per_tick["inflow_kg_s"][i] = float(-result.node_demand[solver.fixed].sum())
        lower = supplied & (p < node_min)
        node_min[lower], node_min_tick[lower] = p[lower], i
        node_below += low
        node_unsup += ~supplied
    return VariantResult(name=v.name, t_s=np.asarray(v.t_s, float), min_pressure_pa=out["min_pressure_pa"],
                         min_node=min_node, below_min=below, unsupplied=unsup, converged=converged,
                         iterations=iterations, node_min_pressure_pa=np.where(np.isinf(node_min), np.nan, node_min),
                         node_min_tick=node_min_tick, node_ticks_below=node_below, node_ticks_unsupplied=node_unsup,
                         versions=len(versions), seconds=time.perf_counter() - t0, **per_tick)
