"""Isolation plans: known answers on hand-made networks, the squeeze-off convention, the twin's
pressure check, the CLI, and properties on random valve graphs (the section is sealed, every
returned valve is needed)."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetwin.cli import main
from pipetwin.twin.isolation import isolate, isolated_model, plan_isolation, segments, supplied_mask
from pipetwin.twin.model import (LinkKind, LinkStatus, Medium, NetworkModel, NodeKind, make_demands, make_links,
                                 make_nodes, make_tanks)

NAN = float("nan")
P, V = LinkKind.PIPE, LinkKind.VALVE


def gas_net(nodes, links, demands, name="hand") -> NetworkModel:
    """nodes: [(id, kind)], sources at 2 bar absolute; links: [(id, kind, a, b, length, diameter)]."""
    ids = [n for n, _ in nodes]
    at = {n: i for i, n in enumerate(ids)}
    kinds = [k for _, k in nodes]
    nd = make_nodes(ids, kinds, fixed_pressure_pa=[2.0e5 if k == NodeKind.SOURCE else NAN for k in kinds])
    lk = make_links([l[0] for l in links], [l[1] for l in links], [at[l[2]] for l in links],
                    [at[l[3]] for l in links], length_m=[l[4] for l in links], diameter_m=[l[5] for l in links],
                    roughness=[1e-4] * len(links))
    dm = make_demands([at[n] for n in demands], list(demands.values()))
    return NetworkModel(name, Medium.NATURAL_GAS, nd, lk, dm, make_tanks())


#   S -p1- A -v1- B -p2- C -p3- D(consumer)
#                        C -v2- F -p4- G(consumer)
BRANCH_NODES = [("S", NodeKind.SOURCE), ("A", 0), ("B", 0), ("C", 0), ("D", NodeKind.CONSUMER), ("F", 0),
                ("G", NodeKind.CONSUMER)]
BRANCH_LINKS = [("p1", P, "S", "A", 100.0, 0.1), ("v1", V, "A", "B", 0.0, 0.1), ("p2", P, "B", "C", 40.0, 0.1),
                ("p3", P, "C", "D", 25.0, 0.05), ("v2", V, "C", "F", 0.0, 0.1), ("p4", P, "F", "G", 30.0, 0.05)]
BRANCH_DEMAND = {"D": 0.002, "G": 0.003}


def test_branch_known_answer():
    net = gas_net(BRANCH_NODES, BRANCH_LINKS, BRANCH_DEMAND)
    plan = isolate(net, "p2", repair_hours=6.0)
    assert plan.convention == "valves"
    assert sorted(plan.valves_to_close) == ["v1", "v2"]
    assert plan.valves_feeding == ["v1"]              # v2's far side has no other source
    assert sorted(plan.section_nodes) == ["B", "C", "D"]
    assert sorted(plan.section_links) == ["p2", "p3"]
    assert plan.section_length_m == pytest.approx(65.0)
    assert plan.customers_direct == ["D"]
    assert plan.customers_downstream == ["G"]
    assert sorted(plan.nodes_downstream) == ["F", "G"]
    assert plan.supply_lost == pytest.approx(0.005)
    assert plan.customer_hours == pytest.approx(12.0)
    assert plan.undelivered == pytest.approx(0.005 * 6 * 3600)
    assert plan.sources_shut_in == []
    label = dict(zip(net.nodes.ids, segments(net)))
    assert label["B"] == label["C"] == label["D"] and label["F"] == label["G"] and label["S"] == label["A"]
    assert len({label["A"], label["B"], label["F"]}) == 3


def test_loop_makes_the_far_valve_feeding_and_keeps_g_supplied():
    nodes = BRANCH_NODES + [("H", 0)]
    links = BRANCH_LINKS + [("v3", V, "A", "H", 0.0, 0.1), ("p5", P, "H", "F", 80.0, 0.1)]
    plan = isolate(gas_net(nodes, links, BRANCH_DEMAND), "p3")
    assert sorted(plan.valves_to_close) == ["v1", "v2"]
    assert sorted(plan.valves_feeding) == ["v1", "v2"]
    assert plan.customers_downstream == [] and plan.nodes_downstream == []
    assert plan.supply_lost == pytest.approx(0.002)


def test_a_closed_boundary_valve_is_reported_not_operated():
    net = gas_net(BRANCH_NODES, BRANCH_LINKS, BRANCH_DEMAND)
    net.links.status[net.link_index()["v2"]] = LinkStatus.CLOSED
    plan = isolate(net, "p2")
    assert plan.valves_to_close == ["v1"]
    assert plan.valves_already_closed == ["v2"]
    assert plan.customers_downstream == []            # G was cut off before the burst
    assert plan.supply_lost == pytest.approx(0.002)


def test_source_inside_the_section_is_shut_in():
    plan = isolate(gas_net(BRANCH_NODES, BRANCH_LINKS, BRANCH_DEMAND), "p1")
    assert plan.valves_to_close == ["v1"] and plan.valves_feeding == []
    assert plan.sources_shut_in == ["S"]
    assert sorted(plan.customers_downstream) == ["D", "G"]


def test_no_valves_squeeze_off_tree_and_loop():
    links = [l for l in BRANCH_LINKS if l[1] == P] + [("p6", P, "A", "B", 10.0, 0.1), ("p7", P, "C", "F", 5.0, 0.1)]
    net = gas_net(BRANCH_NODES, links, BRANCH_DEMAND)
    plan = isolate(net, "p3")
    assert plan.convention == "squeeze-off" and "no isolation valves" in plan.note
    assert plan.valves_to_close == [] and plan.section_links == ["p3"] and plan.section_nodes == []
    assert plan.squeeze_points == ["C", "D"]
    assert plan.customers_direct == [] and plan.customers_downstream == ["D"]
    # a loop keeps both ends of the squeezed pipe supplied
    looped = gas_net(BRANCH_NODES, links + [("p8", P, "S", "C", 300.0, 0.1)], BRANCH_DEMAND)
    plan = isolate(looped, "p2")
    assert plan.customers_downstream == [] and plan.supply_lost == 0.0


def test_pressure_check_finds_the_node_pushed_below_minimum():
    # B is fed by a short fat pipe and, in parallel, a long thin one; cutting the fat one
    # forces B's demand through the thin pipe
    nodes = [("S", NodeKind.SOURCE), ("A", 0), ("B", NodeKind.CONSUMER), ("C", NodeKind.CONSUMER)]
    links = [("fat1", P, "S", "A", 50.0, 0.2), ("fat2", P, "A", "B", 50.0, 0.2), ("thin", P, "S", "B", 3000.0, 0.06),
             ("p", P, "A", "C", 20.0, 0.1)]
    net = gas_net(nodes, links, {"B": 0.02, "C": 0.001})
    plan = plan_isolation(net, "fat2", min_pressure_gauge_pa=90_000.0)
    pc = plan.pressure
    assert pc.converged
    assert pc.below_min_before == 0
    assert pc.below_min == ["B"] and pc.newly_below_min == ["B"]
    assert pc.lowest_node == "B" and pc.lowest_gauge_pa < 90_000.0
    # the same figure as solving the shut-in network directly
    from pipetwin.twin.solve.gas import solve_gas

    direct = solve_gas(isolated_model(net, plan))
    assert direct.node_pressure_pa[2] - 101325.0 == pytest.approx(pc.lowest_gauge_pa, rel=1e-9)
    # with a lax minimum nothing is reported
    assert plan_isolation(net, "fat2", min_pressure_gauge_pa=1000.0).pressure.below_min == []
    # a pipe too thin to carry B's demand: the twin says so instead of inventing a pressure
    net.links.diameter_m[net.link_index()["thin"]] = 0.03
    pc = plan_isolation(net, "fat2").pressure
    assert not pc.converged and "cannot deliver" in pc.message and pc.below_min == ["B"]


def test_water_network_resolves_with_the_water_solver():
    #   R -p1- A -v1- B -p2- C -v2- D,   A -p3- E -p4- D (a long thin loop)
    ids = ["R", "A", "B", "C", "D", "E"]
    at = {n: i for i, n in enumerate(ids)}
    nodes = make_nodes(ids, [NodeKind.SOURCE, 0, 0, 0, 0, 0], fixed_head_m=[60.0] + [NAN] * 5)
    spec = [("p1", P, "R", "A", 200.0, 0.3), ("v1", V, "A", "B", 0.0, 0.3), ("p2", P, "B", "C", 150.0, 0.2),
            ("v2", V, "C", "D", 0.0, 0.2), ("p3", P, "A", "E", 1500.0, 0.08), ("p4", P, "E", "D", 1500.0, 0.08)]
    links = make_links([s[0] for s in spec], [s[1] for s in spec], [at[s[2]] for s in spec],
                       [at[s[3]] for s in spec], length_m=[s[4] for s in spec], diameter_m=[s[5] for s in spec],
                       roughness=[110.0] * len(spec))
    net = NetworkModel("w", Medium.WATER, nodes, links,
                       make_demands([at["C"], at["D"], at["E"]], [0.01, 0.006, 0.002]), make_tanks())
    plan = plan_isolation(net, "p2", min_pressure_gauge_pa=50 * 9806.65)
    assert plan.medium == "water" and plan.supply_unit == "m3_s" and plan.undelivered_unit == "m3"
    assert sorted(plan.valves_to_close) == ["v1", "v2"] and sorted(plan.valves_feeding) == ["v1", "v2"]
    assert sorted(plan.section_nodes) == ["B", "C"] and plan.customers_direct == ["C"]
    assert plan.customers_downstream == [] and plan.supply_lost == pytest.approx(0.01)
    pc = plan.pressure
    assert pc.converged
    from pipetwin.twin.solve.water import solve_water

    direct = solve_water(isolated_model(net, plan))
    assert direct.unsupplied[at["B"]] and direct.unsupplied[at["C"]]
    gauge = {i: direct.node_pressure_pa[at[i]] for i in ("A", "D", "E")}
    assert pc.lowest_node == min(gauge, key=gauge.get)
    assert sorted(pc.below_min) == sorted(i for i, g in gauge.items() if g < 50 * 9806.65)


def test_errors_name_the_element():
    net = gas_net(BRANCH_NODES, BRANCH_LINKS, BRANCH_DEMAND)
    with pytest.raises(ValueError, match="no link with id 'zz'"):
        isolate(net, "zz")
    with pytest.raises(ValueError, match="'v1' is an isolation valve"):
        isolate(net, "v1")


def write_tabular(folder, with_valves: bool = True):
    folder.mkdir()
    (folder / "network.json").write_text(json.dumps({"name": "tiny", "medium": "natural_gas"}))
    (folder / "nodes.csv").write_text(
        "id,kind,x,y,elevation_m,demand,fixed_pressure_pa\n"
        "S,source,0,0,0,,200000\nA,junction,1,0,0,,\nB,junction,2,0,0,,\nC,consumer,3,0,0,0.002,\n"
        "D,consumer,2,1,0,0.001,\n")
    (folder / "pipes.csv").write_text(
        "id,from,to,length_m,diameter_m,roughness_m\n"
        "p1,S,A,100,0.1,0.0001\np2,B,C,50,0.1,0.0001\np3,B,D,30,0.05,0.0001\n")
    (folder / "valves.csv").write_text("id,from,to,kind,status,setpoint_pa\nv1,A,B,isolation,open,\n")


def test_cli_on_a_tabular_folder(tmp_path, capsys):
    folder = tmp_path / "tiny"
    write_tabular(folder)
    out = tmp_path / "plan.json"
    assert main(["isolate", str(folder), "p2", "--repair-hours", "4", "--json", str(out)]) == 0
    figures = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert figures["valves_to_close"] == "1"
    assert figures["customers_direct"] == "2"
    assert figures["customer_hours"] == "8.0"
    assert figures["resolve_converged"] == "true"
    plan = json.loads(out.read_text())
    assert plan["valves_to_close"] == ["v1"] and sorted(plan["customers_direct"]) == ["C", "D"]
    assert main(["isolate", str(folder), "nope"]) == 1


# -- properties on random valve graphs -----------------------------------------------------------


@st.composite
def valve_networks(draw):
    n = draw(st.integers(3, 18))
    links = []
    for j in range(1, n):                                    # a random spanning tree...
        links.append((draw(st.integers(0, j - 1)), j))
    for _ in range(draw(st.integers(0, n))):                 # ...plus loops
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a != b:
            links.append((a, b))
    kinds = [draw(st.sampled_from([P, P, V])) for _ in links]
    closed = [draw(st.booleans()) and draw(st.booleans()) for _ in links]   # about 1 in 4 closed
    sources = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=3))
    node_kind = [NodeKind.SOURCE if i in sources else draw(st.sampled_from([0, NodeKind.CONSUMER]))
                 for i in range(n)]
    pipe_links = [i for i, k in enumerate(kinds) if k == P]
    if not pipe_links:
        kinds[0] = P
        pipe_links = [0]
    target = draw(st.sampled_from(pipe_links))
    nodes = make_nodes([f"n{i}" for i in range(n)], node_kind,
                       fixed_pressure_pa=[2e5 if i in sources else NAN for i in range(n)])
    lk = make_links([f"l{i}" for i in range(len(links))], kinds, [a for a, _ in links], [b for _, b in links],
                    length_m=[10.0] * len(links), diameter_m=[0.1] * len(links),
                    status=[LinkStatus.CLOSED if c else LinkStatus.OPEN for c in closed])
    cons = [i for i, k in enumerate(node_kind) if k == NodeKind.CONSUMER]
    net = NetworkModel("random", Medium.NATURAL_GAS, nodes, lk, make_demands(cons, [0.001] * len(cons)), make_tanks())
    return net, f"l{target}"


def reach(net: NetworkModel, start: set[int], open_link: np.ndarray, blocked: set[int] = frozenset()) -> set[int]:
    """Plain breadth-first search, independent of the module's scipy pass."""
    adj: dict[int, list[int]] = {}
    for k in np.flatnonzero(open_link):
        a, b = int(net.links.from_node[k]), int(net.links.to_node[k])
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen = {s for s in start if s not in blocked}
    todo = deque(seen)
    while todo:
        u = todo.popleft()
        for w in adj.get(u, []):
            if w not in seen and w not in blocked:
                seen.add(w)
                todo.append(w)
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valve_networks())
def test_properties_section_sealed_and_every_valve_needed(case):
    net, pipe = case
    plan = isolate(net, pipe)
    lidx, nidx = net.link_index(), net.node_index()
    shut = isolated_model(net, plan)
    open_after = shut.links.status != LinkStatus.CLOSED
    section = {nidx[x] for x in plan.section_nodes}
    sources = set(np.flatnonzero(net.nodes.kind == NodeKind.SOURCE).tolist()) - section
    # the burst pipe is out of service
    assert not open_after[lidx[pipe]]
    if plan.convention == "valves":
        ends = {int(net.links.from_node[lidx[pipe]]), int(net.links.to_node[lidx[pipe]])}
        assert ends <= section
        # sufficiency: from the section nothing outside it (above all, no source) is reachable
        assert reach(shut, section, open_after) == section
        assert not (reach(shut, section, open_after) & sources)
        # minimality: reopening any one returned valve joins the section to the rest
        for v in plan.valves_to_close:
            again = open_after.copy()
            again[lidx[v]] = True
            assert reach(shut, section, again) - section, f"valve {v} was not needed"
        for v in plan.valves_feeding:
            again = open_after.copy()
            again[lidx[v]] = True
            assert reach(shut, section, again) & sources, f"valve {v} does not feed the section"
    else:
        assert plan.valves_to_close == [] and plan.section_links == [pipe]
    # every isolated pipe is cut off from all sources
    fed = reach(shut, sources, open_after, blocked=section)
    for lid in plan.section_links:
        k = lidx[lid]
        if plan.convention == "valves":
            assert int(net.links.from_node[k]) not in fed and int(net.links.to_node[k]) not in fed
    # downstream nodes really lost every source; nothing else that was supplied did
    before = reach(net, set(np.flatnonzero(net.nodes.kind == NodeKind.SOURCE).tolist()),
                   net.links.status != LinkStatus.CLOSED)
    down = {nidx[x] for x in plan.nodes_downstream}
    assert down == (before - fed - section)
    assert np.array_equal(supplied_mask(shut, open_after, np.isin(np.arange(net.n_nodes), list(section))),
                          np.isin(np.arange(net.n_nodes), list(fed)))
