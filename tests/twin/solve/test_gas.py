"""Gas solver: against pandapipes' stored reference solutions, and on hand-made networks whose
answer is known (regulators, compressors, closed valves, several sources, zero and reversing flow)."""

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipetwin.twin.io.tabular import read_tabular
from pipetwin.twin.model import (Compressibility, GasProperties, LinkKind, LinkStatus, Medium, NetworkModel,
                                 NodeKind, make_demands, make_links, make_nodes, make_tanks)
from pipetwin.twin.solve.gas import GasOptions, GasSolver, solve_gas

REFERENCE_NETWORKS = ["gas_meshed_delta", "schutterwald", "grid10k"]


def _read_ref(path, column):
    with open(path, newline="") as fh:
        return {r["id"]: float(r[column]) for r in csv.DictReader(fh)}


@pytest.mark.parametrize("name", REFERENCE_NETWORKS)
def test_matches_pandapipes_reference(networks_dir, name):
    folder = networks_dir / name
    model = read_tabular(folder)
    result = solve_gas(model)
    assert result.converged, result.message
    ref_p = _read_ref(folder / "reference" / "node_pressure.csv", "pressure_pa")
    ref_m = _read_ref(folder / "reference" / "pipe_flow.csv", "mass_flow_kg_s")
    p_ref = np.array([ref_p[i] for i in model.nodes.ids])
    m_ref = np.array([ref_m[i] for i in model.links.ids])
    rel_p = np.abs(result.node_pressure_pa - p_ref) / p_ref
    assert rel_p.max() <= 1e-4, f"worst node {model.nodes.ids[rel_p.argmax()]}: {rel_p.max():.2e}"
    # flows: within 1e-3 relative, or, for flows that nearly vanish, within what the reference
    # itself converged to (its last flow correction, stated in network.json), at least 1e-9 kg/s
    meta = json.loads((folder / "network.json").read_text())
    abs_tol = max(1e-9, 2.0 * meta["reference_summary"]["last_max_dmdot_kg_s"])
    err = np.abs(result.link_flow - m_ref)
    ok = (err <= 1e-3 * np.abs(m_ref)) | (err <= abs_tol)
    worst = np.argmax(np.where(ok, 0, err))
    assert ok.all(), f"pipe {model.links.ids[worst]}: {result.link_flow[worst]} vs {m_ref[worst]}"
    assert not result.unsupplied.any()
    assert np.isfinite(result.node_pressure_pa).all()


# --- hand-made networks -------------------------------------------------------------------------

def chain(kinds_links, demand_at_end=0.01, p_source=5e5, setting=None, status=None, elevation=None,
          compressibility="linear"):
    """source - n1 - n2 - ... with the given link kinds, 1 km pipes of 0.1 m."""
    n = len(kinds_links) + 1
    ids = [f"n{i}" for i in range(n)]
    kinds = [NodeKind.SOURCE] + [NodeKind.JUNCTION] * (n - 2) + [NodeKind.CONSUMER]
    fixed = [p_source] + [math.nan] * (n - 1)
    nodes = make_nodes(ids, kinds, x=np.arange(n) * 100.0, elevation_m=elevation, fixed_pressure_pa=fixed)
    nl = len(kinds_links)
    links = make_links([f"l{k}" for k in range(nl)], kinds_links, np.arange(nl), np.arange(1, nl + 1),
                       length_m=[1000.0 if k == LinkKind.PIPE else 0.0 for k in kinds_links],
                       diameter_m=[0.1 if k == LinkKind.PIPE else 0.0 for k in kinds_links],
                       roughness=[1e-4] * nl, setting=setting, status=status)
    gas = GasProperties(compressibility=Compressibility(compressibility))
    return NetworkModel("chain", Medium.NATURAL_GAS, nodes, links, make_demands([n - 1], [demand_at_end]),
                        make_tanks(), gas=gas)


def test_regulator_holds_setpoint_then_goes_wide_open():
    model = chain([LinkKind.PIPE, LinkKind.PRV, LinkKind.PIPE], setting=[np.nan, 3e5, np.nan],
                  status=[1, LinkStatus.ACTIVE, 1])
    r = solve_gas(model)
    assert r.converged
    assert r.node_pressure_pa[2] == pytest.approx(3e5, abs=0.5)
    assert r.link_status[1] == LinkStatus.ACTIVE
    assert r.link_flow[1] == pytest.approx(0.01, rel=1e-9)
    assert r.node_pressure_pa[3] < 3e5
    # source below the setpoint: the regulator cannot hold it and passes everything (open)
    model.nodes.fixed_pressure_pa[0] = 2.5e5
    r = solve_gas(model)
    assert r.converged
    assert r.link_status[1] == LinkStatus.OPEN
    assert r.node_pressure_pa[2] < 2.5e5
    assert abs(r.node_pressure_pa[2] - r.node_pressure_pa[1]) < 1.0


def test_regulator_closes_against_reverse_flow():
    # two sources; the regulator would have to pass flow backwards to hold the higher side
    ids = ["s1", "a", "b", "s2"]
    nodes = make_nodes(ids, [NodeKind.SOURCE, 0, 0, NodeKind.SOURCE],
                       fixed_pressure_pa=[5e5, np.nan, np.nan, 4e5])
    links = make_links(["p1", "reg", "p2"], [LinkKind.PIPE, LinkKind.PRV, LinkKind.PIPE], [0, 1, 2], [1, 2, 3],
                       length_m=[500, 0, 500], diameter_m=[0.1, 0, 0.1], roughness=[1e-4] * 3,
                       setting=[np.nan, 4.5e5, np.nan], status=[1, LinkStatus.ACTIVE, 1])
    model = NetworkModel("rev", Medium.NATURAL_GAS, nodes, links, make_demands([2], [0.0]), make_tanks())
    r = solve_gas(model)
    assert r.converged
    # the regulator feeds b at 4.5 bar towards the 4 bar source: forward flow, held
    assert r.link_status[1] == LinkStatus.ACTIVE and r.link_flow[1] > 0
    model.nodes.fixed_pressure_pa[3] = 6e5            # now the far side is higher: flow would reverse
    r = solve_gas(model)
    assert r.converged
    assert r.link_status[1] == LinkStatus.CLOSED
    assert r.link_flow[1] == 0.0
    assert abs(r.link_flow[0]) < 1e-9


def test_closed_valve_leaves_unsupplied_part_without_nan():
    model = chain([LinkKind.PIPE, LinkKind.VALVE, LinkKind.PIPE], status=[1, LinkStatus.CLOSED, 1])
    r = solve_gas(model)
    assert r.converged
    assert r.unsupplied.tolist() == [False, False, True, True]
    assert np.isfinite(r.node_pressure_pa).all() and np.isfinite(r.link_flow).all()
    assert abs(r.link_flow[0]) < 1e-12            # nothing downstream is served
    assert r.link_flow[1:].tolist() == [0.0, 0.0]
    assert r.node_pressure_pa[2] == 0.0


def test_open_valve_and_short_pipe_are_lossless():
    model = chain([LinkKind.PIPE, LinkKind.VALVE, LinkKind.SHORT_PIPE, LinkKind.PIPE])
    r = solve_gas(model)
    assert r.converged
    # lossless links are a conductance 1e4 x the median pipe's: their drop is negligible next to a pipe's
    pipe_drop = r.node_pressure_pa[0] - r.node_pressure_pa[1]
    assert abs(r.node_pressure_pa[1] - r.node_pressure_pa[3]) < 1e-3 * pipe_drop
    assert r.extra["max_lossless_dp_pa"] < 1e-3 * pipe_drop
    assert np.allclose(r.link_flow, 0.01, rtol=1e-9)


@pytest.mark.parametrize("mode", [LinkKind.COMPRESSOR_RATIO, LinkKind.COMPRESSOR_OUTLET])
def test_compressor_raises_pressure(mode):
    setting = 1.5 if mode == LinkKind.COMPRESSOR_RATIO else 6e5
    model = chain([LinkKind.PIPE, mode, LinkKind.PIPE], setting=[np.nan, setting, np.nan],
                  status=[1, LinkStatus.ACTIVE, 1], demand_at_end=0.2)
    r = solve_gas(model)
    assert r.converged
    expect = 1.5 * r.node_pressure_pa[1] if mode == LinkKind.COMPRESSOR_RATIO else 6e5
    assert r.node_pressure_pa[2] == pytest.approx(expect, rel=1e-6)
    assert r.link_flow[1] == pytest.approx(0.2, rel=1e-9)


def test_zero_demand_is_hydrostatic():
    # no flow anywhere: pressures differ only by the gas column (p1 - p2 = -rho g (h1 - h2))
    model = chain([LinkKind.PIPE, LinkKind.PIPE], demand_at_end=0.0, p_source=1.2e5, elevation=[0.0, 50.0, 100.0])
    r = solve_gas(model)
    assert r.converged
    assert np.allclose(r.link_flow, 0.0, atol=1e-12)
    rho = GasSolver(model).density(r.node_pressure_pa)
    dp = r.node_pressure_pa[0] - r.node_pressure_pa[1]
    assert dp == pytest.approx(0.5 * (rho[0] + rho[1]) * 9.81 * 50.0, rel=1e-6)


def test_several_sources_share_the_load_and_balance():
    ids = ["s1", "a", "b", "c", "s2"]
    nodes = make_nodes(ids, [NodeKind.SOURCE, 0, NodeKind.CONSUMER, 0, NodeKind.SOURCE],
                       fixed_pressure_pa=[3e5, np.nan, np.nan, np.nan, 3e5])
    links = make_links([f"p{k}" for k in range(4)], [0] * 4, [0, 1, 2, 3], [1, 2, 3, 4],
                       length_m=[800.0] * 4, diameter_m=[0.08] * 4, roughness=[1e-4] * 4)
    model = NetworkModel("two", Medium.NATURAL_GAS, nodes, links, make_demands([2], [0.05]), make_tanks())
    r = solve_gas(model)
    assert r.converged
    assert r.node_demand[0] == pytest.approx(-0.025, rel=1e-6)
    assert r.node_demand[4] == pytest.approx(-0.025, rel=1e-6)
    assert r.link_flow[0] == pytest.approx(-r.link_flow[3], rel=1e-6)


@pytest.mark.parametrize("law", ["colebrook", "nikuradse", "swamee-jain", "weymouth", "panhandle-a",
                                 "panhandle-b"])
def test_every_friction_law_converges_on_schutterwald(networks_dir, law):
    model = read_tabular(networks_dir / "schutterwald")
    r = solve_gas(model, options=GasOptions(friction=law))
    assert r.converged, law
    assert r.residual < 1e-8
    assert (r.node_pressure_pa < 199562).all()


def test_warm_start_takes_fewer_iterations(networks_dir):
    model = read_tabular(networks_dir / "grid10k")
    solver = GasSolver(model)
    cold = solver.solve()
    warm = solver.solve(model.node_demand() * 1.01, warm_start=cold)
    assert cold.converged and warm.converged
    assert warm.iterations < cold.iterations


@st.composite
def random_networks(draw):
    """Small meshed gas networks with random demands and injections, so flows cross zero and
    reverse between draws."""
    n = draw(st.integers(3, 12))
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=8))
    edges = [(draw(st.integers(0, i - 1)), i) for i in range(1, n)]   # a spanning tree
    edges += [(a, b) for a, b in extra if a != b]
    demand = draw(st.lists(st.floats(-0.005, 0.01), min_size=n, max_size=n))
    nodes = make_nodes([f"n{i}" for i in range(n)], [NodeKind.SOURCE] + [NodeKind.JUNCTION] * (n - 1),
                       elevation_m=draw(st.lists(st.floats(0, 80), min_size=n, max_size=n)),
                       fixed_pressure_pa=[4e5] + [math.nan] * (n - 1))
    m = len(edges)
    links = make_links([f"p{k}" for k in range(m)], [0] * m, [a for a, _ in edges], [b for _, b in edges],
                       length_m=draw(st.lists(st.floats(10, 1000), min_size=m, max_size=m)),
                       diameter_m=draw(st.lists(st.floats(0.05, 0.3), min_size=m, max_size=m)),
                       roughness=[1e-4] * m)
    return NetworkModel("random", Medium.NATURAL_GAS, nodes, links,
                        make_demands(list(range(1, n)), demand[1:]), make_tanks())


@settings(max_examples=40, deadline=None)
@given(random_networks())
def test_random_networks_converge_with_mass_balance(model):
    # laminar switch on: pure Colebrook is nearly a step function of m at Re << 1 (lambda m^2 tends
    # to a constant), which a stagnant loop can only approach slowly; the references cover that law
    r = solve_gas(model, options=GasOptions(laminar_switch=True))
    assert r.converged, r.message
    assert np.isfinite(r.node_pressure_pa).all()
    assert r.residual < 1e-8
    # the source supplies exactly the net demand
    assert -r.node_demand[0] == pytest.approx(model.base_demand()[1:].sum(), abs=1e-9)


def test_undeliverable_demand_is_reported_not_hidden():
    # 0.5 kg/s through 1 km of 0.1 m pipe from 1.2 bar: would need a negative pressure
    model = chain([LinkKind.PIPE], demand_at_end=0.5, p_source=1.2e5)
    r = solve_gas(model)
    assert not r.converged
    assert "n1" in r.message and "cannot" in r.message
    assert np.isfinite(r.node_pressure_pa).all()


def test_gaslib_134_every_nomination_converges(networks_dir):
    """GasLib-134 (greek transmission network, 55-66 bar) with its compressor station holding
    its outlet and its control valve holding its setpoint, for each shipped nomination."""
    from pipetwin.twin.io.gaslib import read_gaslib

    folder = networks_dir / "gaslib" / "GasLib-134"
    scenarios = sorted((folder / "Nominations-134-v2").glob("*.scn"))
    assert len(scenarios) == 20
    for scn in scenarios:
        model = read_gaslib(folder / "GasLib-134-v2.net", scn)
        r = solve_gas(model)
        assert r.converged, f"{scn.name}: {r.message}"
        assert not r.unsupplied.any()
        # the slack source delivers what the nomination does not balance itself
        slack = model.nodes.kind == NodeKind.SOURCE
        assert -r.node_demand[slack].sum() == pytest.approx(model.base_demand().sum(), rel=1e-8)
        for k in np.flatnonzero(np.isin(model.links.kind, [LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET])):
            assert r.link_status[k] == LinkStatus.ACTIVE, scn.name
            assert r.node_pressure_pa[model.links.to_node[k]] == pytest.approx(model.links.setting[k], rel=1e-9)
        assert r.extra["max_lossless_dp_pa"] < 10.0
