"""What-if edits to a network: each a pure function from a model to a changed copy.

A planner's question ("what if this valve is shut at 10:00, what if demand is 20 % up") is a list
of ``Change`` records, each active from ``at_s`` until ``until_s`` (seconds from the study's
start). ``apply_change`` never touches its input (as ``wntr.morph`` returns copies), so the live
twin and the baseline stay as they were and variants can be built side by side.

Demand changes are model edits too, so a changed model solves on its own: ``scale_demand``
multiplies the customers' base demands, ``leak`` adds a demand category on the pattern named
``LEAK_PATTERN``. When the demands come from elsewhere (the estimated demands of a replayed day),
``demand_transform`` turns the difference between the original and the changed model back into
a per-node scale and an added leak flow, the form a replay applies tick by tick.

>>> from pipetwin.twin.model import *
>>> nodes = make_nodes(["S", "A", "B"], [NodeKind.SOURCE, NodeKind.CONSUMER, NodeKind.CONSUMER],
...                    fixed_pressure_pa=[2e5, np.nan, np.nan])
>>> links = make_links(["p1", "p2"], [LinkKind.PIPE] * 2, [0, 1], [1, 2], [100.0] * 2, [0.1] * 2, [1e-4] * 2)
>>> m = NetworkModel("toy", Medium.NATURAL_GAS, nodes, links, make_demands([1, 2], [1e-3, 2e-3]), make_tanks())
>>> hot = apply_change(m, Change("scale_demand", nodes=("B",), factor=1.2))
>>> leaky = apply_change(hot, Change("leak", node="A", flow_kg_s=5e-4))
>>> scale, leak = demand_transform(m, leaky)
>>> scale.round(3).tolist(), leak.tolist(), m.base_demand().tolist()
([1.0, 1.0, 1.2], [0.0, 0.0005, 0.0], [0.0, 0.001, 0.002])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pipetwin.twin.model import LinkKind, LinkStatus, NetworkModel, NodeKind, make_links

LEAK_PATTERN = "leak"
KINDS = ("close", "open", "cut_pipe", "scale_demand", "leak", "setpoint", "source_pressure", "add_pipe")
REGULATING = (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET)


class ChangeError(ValueError):
    """A change that cannot apply to this network: names the element and what is wrong."""


@dataclass(frozen=True)
class Change:
    """One edit, active for ``at_s <= t < until_s``. Only the fields of its kind are read:

    - ``close`` / ``open``: ``link`` (any link: valve, pipe, regulator) shut or opened;
    - ``cut_pipe``: ``link`` must be a pipe; it leaves service (closed);
    - ``scale_demand``: ``factor`` on the customers at ``nodes`` (empty: every node with demand);
    - ``leak``: ``flow_kg_s`` escaping at ``node``;
    - ``setpoint``: ``pressure_pa`` (absolute) held by regulator or compressor ``link``;
    - ``source_pressure``: ``pressure_pa`` (absolute) at source ``node``;
    - ``add_pipe``: new pipe ``link`` from ``from_node`` to ``to_node`` (``length_m``,
      ``diameter_m``, ``roughness_m``), between existing nodes (planning).
    ``label`` says in words what the change is (a zone, a class) for reports."""

    kind: str
    at_s: float = 0.0
    until_s: float = math.inf
    link: str = ""
    node: str = ""
    nodes: tuple[str, ...] = ()
    factor: float = 1.0
    flow_kg_s: float = 0.0
    pressure_pa: float = math.nan
    from_node: str = ""
    to_node: str = ""
    length_m: float = math.nan
    diameter_m: float = math.nan
    roughness_m: float = 1e-4
    label: str = ""

    def active(self, t_s: float) -> bool:
        return self.at_s <= t_s < self.until_s

    def describe(self) -> str:
        who = self.label or (f"{len(self.nodes)} nodes" if self.nodes else "all customers")
        what = {"close": f"close {self.link}", "open": f"open {self.link}", "cut_pipe": f"cut pipe {self.link}",
                "scale_demand": f"demand x{self.factor:g} ({who})",
                "leak": f"leak {self.flow_kg_s:g} kg/s at {self.node}",
                "setpoint": f"setpoint of {self.link} to {self.pressure_pa:.0f} Pa",
                "source_pressure": f"source {self.node} at {self.pressure_pa:.0f} Pa",
                "add_pipe": f"new pipe {self.link} {self.from_node}-{self.to_node}"}.get(self.kind, self.kind)
        end = "" if math.isinf(self.until_s) else f" until {self.until_s:g} s"
        return f"{what} from {self.at_s:g} s{end}"


def check_change(model: NetworkModel, change: Change) -> None:
    """Raise ``ChangeError`` if ``change`` names elements that ``model`` lacks or values that make
    no sense. ``apply_change`` calls it; a study loader calls it early to fail before any work."""
    c = change
    if c.kind not in KINDS:
        raise ChangeError(f"kind {c.kind!r} is not one of {KINDS}")
    if not c.at_s < c.until_s:
        raise ChangeError(f"'until' ({c.until_s:g} s) must come after 'at' ({c.at_s:g} s)")
    links, nodes = model.link_index(), model.node_index()
    if c.kind in ("close", "open", "cut_pipe", "setpoint"):
        if c.link not in links:
            raise ChangeError(f"link {c.link!r} is not in network {model.name!r}")
        kind = model.links.kind[links[c.link]]
        if c.kind == "cut_pipe" and kind != LinkKind.PIPE:
            raise ChangeError(f"link {c.link!r} is a {LinkKind(kind).name.lower()}, not a pipe")
        if c.kind == "setpoint":
            if kind not in REGULATING:
                raise ChangeError(f"link {c.link!r} is a {LinkKind(kind).name.lower()}: only regulators and "
                                  "outlet-pressure compressors have a pressure setpoint")
            _check_pressure(c)
    elif c.kind == "scale_demand":
        if not (math.isfinite(c.factor) and c.factor >= 0):
            raise ChangeError(f"factor {c.factor!r} must be a number >= 0")
        missing = [n for n in c.nodes if n not in nodes]
        if missing:
            raise ChangeError(f"node {missing[0]!r} is not in network {model.name!r}"
                              + (f" ({len(missing)} nodes missing)" if len(missing) > 1 else ""))
    elif c.kind == "leak":
        if c.node not in nodes:
            raise ChangeError(f"leak node {c.node!r} is not in network {model.name!r}")
        if model.nodes.kind[nodes[c.node]] == NodeKind.SOURCE:
            raise ChangeError(f"leak node {c.node!r} is a source")
        if not (math.isfinite(c.flow_kg_s) and c.flow_kg_s > 0):
            raise ChangeError(f"leak flow_kg_s {c.flow_kg_s!r} must be > 0")
    elif c.kind == "source_pressure":
        if c.node not in nodes:
            raise ChangeError(f"source {c.node!r} is not in network {model.name!r}")
        if model.nodes.kind[nodes[c.node]] != NodeKind.SOURCE:
            raise ChangeError(f"node {c.node!r} is not a source")
        _check_pressure(c)
    elif c.kind == "add_pipe":
        if not c.link or c.link in links:
            raise ChangeError(f"new pipe id {c.link!r} is empty or already in network {model.name!r}")
        for end in (c.from_node, c.to_node):
            if end not in nodes:
                raise ChangeError(f"new pipe {c.link!r}: node {end!r} is not in network {model.name!r}")
        if c.from_node == c.to_node:
            raise ChangeError(f"new pipe {c.link!r} joins node {c.from_node!r} to itself")
        for name in ("length_m", "diameter_m", "roughness_m"):
            v = getattr(c, name)
            if not (math.isfinite(v) and v > 0):
                raise ChangeError(f"new pipe {c.link!r}: {name} {v!r} must be > 0")


def _check_pressure(c: Change) -> None:
    if not (math.isfinite(c.pressure_pa) and c.pressure_pa > 0):
        raise ChangeError(f"pressure {c.pressure_pa!r} Pa must be a positive absolute pressure")


def apply_change(model: NetworkModel, change: Change) -> NetworkModel:
    """``model`` with ``change`` made, as a new model (the input is left alone)."""
    check_change(model, change)
    c = change
    out = model.copy()
    if c.kind in ("close", "cut_pipe", "open"):
        out.links.status[out.link_index()[c.link]] = LinkStatus.OPEN if c.kind == "open" else LinkStatus.CLOSED
    elif c.kind == "setpoint":
        out.links.setting[out.link_index()[c.link]] = c.pressure_pa
    elif c.kind == "source_pressure":
        out.nodes.fixed_pressure_pa[out.node_index()[c.node]] = c.pressure_pa
    elif c.kind == "scale_demand":
        d = out.demands
        rows = _customer_rows(out)
        if c.nodes:
            index = out.node_index()
            rows &= np.isin(d.node, [index[n] for n in c.nodes])
        d.base[rows] *= c.factor
    elif c.kind == "leak":
        leak = _leak_pattern(out)
        d = out.demands
        out.demands = replace(d, node=np.append(d.node, np.int32(out.node_index()[c.node])),
                              base=np.append(d.base, c.flow_kg_s), pattern=np.append(d.pattern, np.int32(leak)))
    elif c.kind == "add_pipe":
        index = out.node_index()
        new = make_links([c.link], [LinkKind.PIPE], [index[c.from_node]], [index[c.to_node]], [c.length_m],
                         [c.diameter_m], [c.roughness_m])
        old = out.links
        out.links = type(old)(**{name: np.concatenate([getattr(old, name), getattr(new, name)])
                                 for name in old.__dataclass_fields__})
    return out


def apply_changes(model: NetworkModel, changes: list[Change]) -> NetworkModel:
    """Every change in order (later ones win where two touch the same element)."""
    for c in changes:
        model = apply_change(model, c)
    return model


def model_at(model: NetworkModel, changes: list[Change], t_s: float) -> NetworkModel:
    """The network as it stands at ``t_s``: the changes active then, applied in order."""
    return apply_changes(model, [c for c in changes if c.active(t_s)])


def breakpoints(changes: list[Change]) -> list[float]:
    """The times at which the set of active changes can differ (sorted, finite)."""
    return sorted({t for c in changes for t in (c.at_s, c.until_s) if math.isfinite(t)})


def _leak_pattern(model: NetworkModel) -> int:
    """Index of the constant ``LEAK_PATTERN`` pattern, added to ``model`` (a copy) if absent."""
    index = model.pattern_index()
    if LEAK_PATTERN not in index:
        model.patterns.append((LEAK_PATTERN, np.ones(1)))
        return len(model.patterns) - 1
    return index[LEAK_PATTERN]


def _customer_rows(model: NetworkModel) -> np.ndarray:
    """Demand rows that are customers' offtake (withdrawals that are not leaks)."""
    d = model.demands
    leak = model.pattern_index().get(LEAK_PATTERN, -2)
    return (d.pattern != leak) & (d.base > 0)


def customer_demand(model: NetworkModel) -> np.ndarray:
    """Base customer demand per node (leak categories left out)."""
    rows = _customer_rows(model)
    return np.bincount(model.demands.node[rows], weights=model.demands.base[rows], minlength=model.n_nodes)


def leak_demand(model: NetworkModel) -> np.ndarray:
    """Leak flow per node (the ``LEAK_PATTERN`` categories)."""
    leak = model.pattern_index().get(LEAK_PATTERN, -2)
    rows = model.demands.pattern == leak
    return np.bincount(model.demands.node[rows], weights=model.demands.base[rows], minlength=model.n_nodes)


def demand_transform(original: NetworkModel, changed: NetworkModel) -> tuple[np.ndarray, np.ndarray]:
    """(scale, leak) per node such that demand on ``changed`` = demand on ``original`` x scale +
    leak: how a replay carries recorded demands over to a changed network."""
    if changed.n_nodes != original.n_nodes:
        raise ChangeError("a change added or removed nodes: recorded demands no longer line up")
    before, after = customer_demand(original), customer_demand(changed)
    scale = np.ones(original.n_nodes)
    has = before > 0
    scale[has] = after[has] / before[has]
    return scale, leak_demand(changed) - leak_demand(original)
