"""Burst and planned-work isolation: which valves to close, what that cuts off, and what the rest
of the network's pressures do then.

The valve graph (Walski's segments; Jun and Loganathan 2007): remove every isolation valve
(``LinkKind.VALVE``) and the links already closed; what stays connected is a *segment*, the
smallest part of the network a crew can shut in. A burst pipe's segment is its isolated section,
and the valves to close are the open valves with exactly one end in it. Each of them is needed:
leaving one open joins the section to a neighbouring segment (and, for the ``feeding`` ones,
to a source). Valves already closed on the boundary are listed, not operated.

Networks without any isolation valve (GIS exports often lack them, e.g. the bundled
Schutterwald grid, and EPANET files, whose valves are control valves) follow the squeeze-off
convention: crews squeeze the burst pipe off (water: cut it out) at both ends, so the section is
that pipe alone and its end nodes stay in service if something else feeds them.

Supply is judged on the undirected graph (as the solvers' own ``unsupplied`` pass does): a
node is supplied when a path of usable links joins it to a source (or, for water, a tank).
Customers are consumer nodes and nodes with a positive demand. The duration impact is the simple
model planners quote: every customer who loses supply is out for ``repair_hours`` (customer-hours =
customers x repair time), and the gas or water not delivered meanwhile is the lost demand times
that time. Gas customers also need their appliances relit after supply returns; that time is
site practice and left out.

>>> from pipetwin.twin.model import LinkKind, Medium, NetworkModel, NodeKind
>>> from pipetwin.twin.model import make_demands, make_links, make_nodes, make_tanks
>>> nan = float("nan")
>>> nodes = make_nodes(["S", "A", "B", "C"], [NodeKind.SOURCE, 0, 0, NodeKind.CONSUMER],
...                    fixed_pressure_pa=[2e5, nan, nan, nan])
>>> links = make_links(["p1", "v1", "p2"], [0, LinkKind.VALVE, 0], [0, 1, 2], [1, 2, 3],
...                    length_m=[100.0, 0.0, 50.0], diameter_m=[0.1, 0.1, 0.1], roughness=[1e-4] * 3)
>>> net = NetworkModel("doc", Medium.NATURAL_GAS, nodes, links, make_demands([3], [0.01]), make_tanks())
>>> plan = isolate(net, "p2", repair_hours=4)
>>> plan.valves_to_close, plan.section_nodes, plan.customers_direct, plan.customer_hours
(['v1'], ['B', 'C'], ['C'], 4.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipetwin.twin.model import LinkKind, LinkStatus, NetworkModel, NodeKind

ATMOSPHERE_PA = 101325.0     # gas pressures are absolute; service pressures are quoted gauge
DEFAULT_MIN_GAUGE_PA = {"gas": 2000.0, "water": 20.0 * 9806.65}   # 20 mbar appliance supply; 20 m head
DEFAULT_REPAIR_HOURS = 8.0
VALVES = "valves"
SQUEEZE_OFF = "squeeze-off"


@dataclass
class PressureCheck:
    """The twin's solve of the network with the section shut in, against a minimum service
    pressure (gauge Pa). ``below_min`` lists supplied nodes under it after isolation, worst first;
    ``newly_below_min`` those that were above it before."""

    converged: bool
    message: str
    min_pressure_gauge_pa: float
    lowest_node: str | None
    lowest_gauge_pa: float | None
    below_min: list[str]
    below_min_gauge_pa: list[float]
    newly_below_min: list[str]
    below_min_before: int
    unsupplied_by_solver: int


@dataclass
class IsolationPlan:
    pipe: str
    medium: str
    convention: str                    # "valves" or "squeeze-off" (the network has no isolation valve)
    note: str
    valves_to_close: list[str]
    valves_feeding: list[str]          # of those, the ones whose far side reaches a source
    valves_already_closed: list[str]
    squeeze_points: list[str]          # nodes where crews squeeze off (squeeze-off convention)
    section_links: list[str]
    section_nodes: list[str]
    section_length_m: float
    sources_shut_in: list[str]         # sources inside the section: their outlet is shut too
    customers_direct: list[str]        # customers inside the section
    customers_downstream: list[str]    # customers outside it left without any source
    nodes_downstream: list[str]        # every node outside the section left without a source
    supply_lost: float                 # demand of the customers cut off (kg/s gas, m3/s water)
    supply_unit: str
    repair_hours: float
    customer_hours: float
    undelivered: float                 # supply_lost x repair time (kg or m3)
    undelivered_unit: str
    pressure: PressureCheck | None = None
    extra: dict = field(default_factory=dict)

    @property
    def customers_affected(self) -> int:
        return len(self.customers_direct) + len(self.customers_downstream)

    def figures(self) -> dict:
        """The headline numbers, for ``key=value`` lines and dashboards."""
        out = {"pipe": self.pipe, "convention": self.convention, "valves_to_close": len(self.valves_to_close),
               "valves_feeding": len(self.valves_feeding), "section_pipes": len(self.section_links),
               "section_nodes": len(self.section_nodes), "section_length_m": round(self.section_length_m, 3),
               "customers_direct": len(self.customers_direct),
               "customers_downstream": len(self.customers_downstream),
               "customers_affected": self.customers_affected, f"supply_lost_{self.supply_unit}": self.supply_lost,
               "repair_hours": self.repair_hours, "customer_hours": self.customer_hours,
               f"undelivered_{self.undelivered_unit}": self.undelivered}
        if self.pressure is not None:
            out.update({"resolve_converged": self.pressure.converged,
                        "min_pressure_gauge_pa": self.pressure.min_pressure_gauge_pa,
                        "lowest_gauge_pa": self.pressure.lowest_gauge_pa,
                        "nodes_below_min": len(self.pressure.below_min),
                        "nodes_newly_below_min": len(self.pressure.newly_below_min)})
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "figures": self.figures()}


# -- graph passes ------------------------------------------------------------------------------


def _labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def supply_nodes(model: NetworkModel) -> np.ndarray:
    """Where supply comes from: sources (gate stations, reservoirs) and, for water, tanks."""
    kind = model.nodes.kind
    return (kind == NodeKind.SOURCE) | ((kind == NodeKind.TANK) & (not model.is_gas))


def supplied_mask(model: NetworkModel, usable: np.ndarray, removed_nodes: np.ndarray | None = None) -> np.ndarray:
    """Nodes joined to a supply node by ``usable`` links; ``removed_nodes`` neither supply nor pass
    supply on (a shut-in section)."""
    n = model.n_nodes
    removed = np.zeros(n, bool) if removed_nodes is None else removed_nodes
    fr, to = model.links.from_node, model.links.to_node
    use = usable & ~removed[fr] & ~removed[to]
    label = _labels(n, fr[use], to[use])
    fed = np.zeros(label.max() + 1, bool)
    fed[label[supply_nodes(model) & ~removed]] = True
    return fed[label] & ~removed


def segments(model: NetworkModel) -> np.ndarray:
    """Segment label per node: components over the links that are neither isolation valves nor
    closed."""
    links = model.links
    conn = (links.kind != LinkKind.VALVE) & (links.status != LinkStatus.CLOSED)
    return _labels(model.n_nodes, links.from_node[conn], links.to_node[conn])


def customers(model: NetworkModel, time_s: float = 0.0) -> np.ndarray:
    return (model.nodes.kind == NodeKind.CONSUMER) | (model.node_demand(time_s) > 0)


# -- the plan ----------------------------------------------------------------------------------


def isolate(model: NetworkModel, pipe_id: str, *, repair_hours: float = DEFAULT_REPAIR_HOURS,
            time_s: float = 0.0) -> IsolationPlan:
    """The isolation plan of ``pipe_id`` from the graph alone (no solve; see ``plan_isolation``)."""
    links, nodes = model.links, model.nodes
    index = model.link_index()
    if pipe_id not in index:
        raise ValueError(f"{model.name}: no link with id {pipe_id!r}")
    k = index[pipe_id]
    if links.kind[k] == LinkKind.VALVE:
        raise ValueError(f"{model.name}: {pipe_id!r} is an isolation valve, not a pipe; close it instead")
    if not repair_hours >= 0:
        raise ValueError(f"repair_hours must be >= 0, got {repair_hours}")
    n = model.n_nodes
    fr, to = links.from_node, links.to_node
    is_valve = links.kind == LinkKind.VALVE
    closed = links.status == LinkStatus.CLOSED
    section_link = np.zeros(model.n_links, bool)
    section_node = np.zeros(n, bool)
    to_close = np.zeros(model.n_links, bool)
    already = np.zeros(model.n_links, bool)
    if is_valve.any():
        convention = VALVES
        note = "section = the valve segment holding the pipe; close the open valves on its boundary"
        conn = ~is_valve & ~closed
        conn[k] = True
        label = _labels(n, fr[conn], to[conn])
        section_node = label == label[fr[k]]
        section_link = ~is_valve & section_node[fr] & section_node[to]
        boundary = is_valve & (section_node[fr] != section_node[to])
        to_close, already = boundary & ~closed, boundary & closed
        squeeze: list[str] = []
    else:
        convention = SQUEEZE_OFF
        how = "squeeze the pipe off" if model.is_gas else "cut the pipe out"
        note = (f"the network has no isolation valves: crews {how} at both ends, so the section "
                "is the pipe itself and its end nodes stay in service if other pipes feed them")
        section_link[k] = True
        squeeze = [str(nodes.ids[fr[k]]), str(nodes.ids[to[k]])]
    # supply before and after: the section's links and nodes shut in, the valves closed
    usable = ~closed
    before = supplied_mask(model, usable)
    after = supplied_mask(model, usable & ~to_close & ~section_link, section_node)
    downstream = before & ~after & ~section_node
    cust = customers(model, time_s)
    direct = cust & section_node & before          # customers who had supply until now
    down_c = cust & downstream
    demand = model.node_demand(time_s)
    lost = float(np.maximum(demand, 0.0)[direct | down_c].sum())
    # which boundary valves face a source: the far side is supplied once the section is shut in
    far = np.where(section_node[fr], to, fr)
    feeding = to_close & after[far]
    gas = model.is_gas
    ids = nodes.ids
    return IsolationPlan(
        pipe=pipe_id, medium="gas" if gas else "water", convention=convention, note=note,
        valves_to_close=[str(x) for x in links.ids[to_close]], valves_feeding=[str(x) for x in links.ids[feeding]],
        valves_already_closed=[str(x) for x in links.ids[already]], squeeze_points=squeeze,
        section_links=[str(x) for x in links.ids[section_link]],
        section_nodes=[str(x) for x in ids[section_node]],
        section_length_m=float(links.length_m[section_link].sum()),
        sources_shut_in=[str(x) for x in ids[section_node & supply_nodes(model)]],
        customers_direct=[str(x) for x in ids[direct]], customers_downstream=[str(x) for x in ids[down_c]],
        nodes_downstream=[str(x) for x in ids[downstream]],
        supply_lost=lost, supply_unit="kg_s" if gas else "m3_s", repair_hours=float(repair_hours),
        customer_hours=float((direct.sum() + down_c.sum()) * repair_hours),
        undelivered=lost * repair_hours * 3600.0, undelivered_unit="kg" if gas else "m3",
        extra={"time_s": float(time_s)})


def isolated_model(model: NetworkModel, plan: IsolationPlan) -> NetworkModel:
    """A copy of ``model`` with the plan carried out: its valves and the section's links closed."""
    out = model.copy()
    index = out.link_index()
    for lid in (*plan.valves_to_close, *plan.section_links):
        out.links.status[index[lid]] = LinkStatus.CLOSED
    return out


def _solve(model: NetworkModel, time_s: float):
    if model.is_gas:
        from pipetwin.twin.solve.gas import solve_gas

        return solve_gas(model)
    from pipetwin.twin.solve.water import solve_water

    return solve_water(model, time_s)


def _gauge(model: NetworkModel, result) -> np.ndarray:
    p = result.node_pressure_pa
    return p - ATMOSPHERE_PA if model.is_gas else p


def check_pressures(model: NetworkModel, plan: IsolationPlan, min_pressure_gauge_pa: float | None = None,
                    time_s: float | None = None) -> PressureCheck:
    """Solve the network before and after isolation and list supplied nodes under the minimum
    service pressure (gauge Pa; default 20 mbar gas, 20 m water)."""
    t = plan.extra.get("time_s", 0.0) if time_s is None else time_s
    pmin = DEFAULT_MIN_GAUGE_PA[plan.medium] if min_pressure_gauge_pa is None else float(min_pressure_gauge_pa)
    check = ~supply_nodes(model)
    base = _solve(model, t)
    low_before = check & ~base.unsupplied & (_gauge(model, base) < pmin)
    cut = isolated_model(model, plan)
    if not (supplied_mask(cut, cut.links.status != LinkStatus.CLOSED) & check).any():
        return PressureCheck(True, "nothing is left supplied: no solve needed", pmin, None, None, [], [], [],
                             int(low_before.sum()), int(check.sum()))
    res = _solve(cut, t)
    gauge = _gauge(model, res)
    ok = check & ~res.unsupplied
    below = np.flatnonzero(ok & (gauge < pmin))
    below = below[np.argsort(gauge[below], kind="stable")]
    ids = model.nodes.ids
    lowest = int(np.argmin(np.where(ok, gauge, np.inf))) if ok.any() else -1
    return PressureCheck(
        converged=bool(res.converged), message=str(res.message), min_pressure_gauge_pa=pmin,
        lowest_node=str(ids[lowest]) if lowest >= 0 else None,
        lowest_gauge_pa=float(gauge[lowest]) if lowest >= 0 else None,
        below_min=[str(ids[i]) for i in below], below_min_gauge_pa=[float(gauge[i]) for i in below],
        newly_below_min=[str(ids[i]) for i in below if not low_before[i]],
        below_min_before=int(low_before.sum()), unsupplied_by_solver=int(res.unsupplied.sum()))


def plan_isolation(model: NetworkModel, pipe_id: str, *, repair_hours: float = DEFAULT_REPAIR_HOURS,
                   min_pressure_gauge_pa: float | None = None, time_s: float = 0.0,
                   solve: bool = True) -> IsolationPlan:
    """``isolate`` plus the twin's pressure check of what is left in service."""
    plan = isolate(model, pipe_id, repair_hours=repair_hours, time_s=time_s)
    if solve:
        plan.pressure = check_pressures(model, plan, min_pressure_gauge_pa, time_s)
    return plan
