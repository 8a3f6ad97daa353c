"""GasLib reader/writer: GasLib-134 against its XML, every nomination, round trips, and corrupted
files that must fail as NetworkFileError naming the file, never as another exception."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetwin.twin.io.gaslib import (
    pressure_bounds,
    read_gaslib,
    read_scenario,
    write_gaslib,
)
from pipetwin.twin.model import LinkKind, LinkStatus, NetworkFileError, NetworkModel, NodeKind
from tests.paths import NETWORKS

GASLIB_134 = NETWORKS / "gaslib" / "GasLib-134"
NET_134 = GASLIB_134 / "GasLib-134-v2.net"
SCENARIOS_134 = sorted((GASLIB_134 / "Nominations-134-v2").glob("*.scn"))
needs_134 = pytest.mark.skipif(not NET_134.exists(),
                               reason=f"GasLib-134 data not found at {GASLIB_134} (../shared absent)")
RHO_134 = 0.7433   # normDensity of every GasLib-134 entry, kg/m3


def kg_s(flow_1000m3h: float, rho: float = RHO_134) -> float:
    return 1000.0 * flow_1000m3h / 3600.0 * rho


# -- GasLib-134 ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_134() -> NetworkModel:
    return read_gaslib(NET_134)


@needs_134
def test_134_counts(model_134):
    m = model_134
    assert m.n_nodes == 134 and m.n_links == 133
    kinds = np.bincount(m.nodes.kind, minlength=4)
    # 3 sources: one slack (SOURCE), two become injecting junctions; 86 innodes + 2 = 88 junctions
    assert (kinds[NodeKind.SOURCE], kinds[NodeKind.CONSUMER], kinds[NodeKind.JUNCTION]) == (1, 45, 88)
    links = np.bincount(m.links.kind, minlength=len(LinkKind))
    assert links[LinkKind.PIPE] == 86 and links[LinkKind.SHORT_PIPE] == 45
    assert links[LinkKind.COMPRESSOR_OUTLET] == 1 and links[LinkKind.PRV] == 1
    tags = [el.tag.rsplit("}", 1)[-1] for el in ET.parse(NET_134).getroot().iter()]
    assert (tags.count("source"), tags.count("sink"), tags.count("innode")) == (3, 45, 86)
    assert m.medium.name == "NATURAL_GAS" and m.name == "greek" and m.source_file == str(NET_134)
    assert len(m.demands) == 0      # no scenario, no demands


@needs_134
def test_134_units_of_hand_picked_elements(model_134):
    m = model_134
    li, ni = m.link_index(), m.node_index()
    j = li["p_br2"]   # <length km 15.25> <diameter mm 914.4> <roughness m 8e-06>, node_2 -> node_3
    assert m.links.length_m[j] == pytest.approx(15250.0)
    assert m.links.diameter_m[j] == pytest.approx(0.9144)
    assert m.links.roughness[j] == pytest.approx(8e-6)
    assert m.nodes.ids[m.links.from_node[j]] == "node_2" and m.nodes.ids[m.links.to_node[j]] == "node_3"
    j = li["p_br71"]  # 12.5585 km, 762.0 mm
    assert (m.links.length_m[j], m.links.diameter_m[j]) == pytest.approx((12558.5, 0.762))
    i = ni["node_1"]  # x="10524.5596" y="16380.294", height 0 m
    assert (m.nodes.x[i], m.nodes.y[i], m.nodes.elevation_m[i]) == pytest.approx((10524.5596, 16380.294, 0))
    b = pressure_bounds(NET_134)
    assert len(b) == 134
    assert b["node_66"] == pytest.approx((27.6e5, 37.7e5))    # bar, absolute
    assert b["node_1"] == pytest.approx((50.0e5, 66.4e5))
    # default slack without a scenario: the largest flowMax (node_1 178.707, node_20 451.452,
    # node_80 522.0), held at its pressureMax 66.4 bar
    slack = np.flatnonzero(m.nodes.kind == NodeKind.SOURCE)
    assert len(slack) == 1 and m.nodes.ids[slack[0]] == "node_80"
    assert m.nodes.fixed_pressure_pa[slack[0]] == pytest.approx(66.4e5)
    sid = m.nodes.ids[slack[0]]
    assert m.nodes.fixed_pressure_pa[slack[0]] == pytest.approx(b[sid][1])
    assert np.isnan(np.delete(m.nodes.fixed_pressure_pa, slack[0])).all()
    # control valve node_65 -> node_66: min(37.7, 66.4 - 1, pressureOutMax 100) bar
    cv = li["controlValve_br65"]
    assert m.links.setting[cv] == pytest.approx(37.7e5)
    assert m.links.status[cv] == LinkStatus.ACTIVE
    # compressor cs node_29 -> node_30: min(pressureOutMax 100, pressureMax(node_30) 66.4) bar
    assert m.links.setting[li["cs"]] == pytest.approx(66.4e5)
    assert m.links.kind[li["cs"]] == LinkKind.COMPRESSOR_OUTLET
    assert np.isnan(m.links.setting[m.links.kind == LinkKind.PIPE]).all()
    g = m.gas
    assert g.normal_density_kg_m3 == pytest.approx(0.7433)
    assert g.temperature_k == pytest.approx(289.15)
    assert g.calorific_value_j_m3 == pytest.approx(36.4543670654e6)
    assert g.molar_mass_kg_kmol == pytest.approx(16.62)
    assert g.compressibility.model == "papay"
    assert g.compressibility.pseudocritical_pressure_pa == pytest.approx(46e5)
    assert g.compressibility.pseudocritical_temperature_k == pytest.approx(193.08)
    assert g.friction == "nikuradse" and g.dynamic_viscosity_pa_s == 1e-5


def _exit_and_entry_sums(scn: Path) -> tuple[float, dict[str, float]]:
    """Read the nomination with a regex, independently of the module under test."""
    text = scn.read_text()
    exits, entries = 0.0, {}
    for nid, kind, body in re.findall(r'<node id="([^"]+)" type="(\w+)">(.*?)</node>', text, re.S):
        value = float(re.search(r'bound="both"[^>]*value="([^"]+)"', body).group(1))
        if kind == "exit":
            exits += value
        else:
            entries[nid] = value
    return exits, entries


@needs_134
@pytest.mark.parametrize("scn", SCENARIOS_134, ids=lambda p: p.stem)
def test_134_every_nomination_loads(scn):
    m = read_gaslib(NET_134, scn)
    exits, entries = _exit_and_entry_sums(scn)
    flows = read_scenario(scn)
    assert len(flows) == 48
    assert sum(v for v in flows.values() if v > 0) == pytest.approx(exits, rel=1e-12)
    assert {k: -v for k, v in flows.items() if k in entries} == pytest.approx(entries)
    # the slack is the largest injection and carries no demand; other entries inject
    slack_id = max(entries, key=entries.get)
    ni = m.node_index()
    assert m.nodes.kind[ni[slack_id]] == NodeKind.SOURCE
    demand = m.base_demand()
    assert demand[ni[slack_id]] == 0.0 and ni[slack_id] not in set(m.demands.node)
    consumers = m.nodes.kind == NodeKind.CONSUMER
    assert demand[consumers].sum() == pytest.approx(kg_s(exits), rel=1e-12)
    for nid, v in entries.items():
        if nid != slack_id:
            assert m.nodes.kind[ni[nid]] == NodeKind.JUNCTION
            assert demand[ni[nid]] == pytest.approx(-kg_s(v))
    assert len(m.demands) == 45 + 2
    assert (m.demands.pattern == -1).all()


@needs_134
def test_134_keywords_override_defaults():
    scn = SCENARIOS_134[0]
    m = read_gaslib(NET_134, scn, slack="node_1", slack_pressure_pa=60e5, compressor="ratio",
                    compressor_ratio=1.3, control_valve_setpoint_pa={"controlValve_br65": 30e5},
                    friction="colebrook", dynamic_viscosity_pa_s=1.1e-5)
    ni, li = m.node_index(), m.link_index()
    assert m.nodes.kind[ni["node_1"]] == NodeKind.SOURCE
    assert m.nodes.fixed_pressure_pa[ni["node_1"]] == 60e5
    assert m.nodes.kind[ni["node_20"]] == NodeKind.JUNCTION
    assert m.base_demand()[ni["node_20"]] == pytest.approx(-kg_s(read_scenario(scn)["node_20"] * -1))
    assert m.links.kind[li["cs"]] == LinkKind.COMPRESSOR_RATIO and m.links.setting[li["cs"]] == 1.3
    assert m.links.setting[li["controlValve_br65"]] == 30e5
    assert m.gas.friction == "colebrook" and m.gas.dynamic_viscosity_pa_s == 1.1e-5
    m = read_gaslib(NET_134, compressor="ratio")      # default ratio: 66.4 / 66.4 -> 1
    assert m.links.setting[li["cs"]] == pytest.approx(1.0)
    m = read_gaslib(NET_134, compressor_setpoint_pa=70e5)
    assert m.links.setting[li["cs"]] == 70e5
    with pytest.raises(ValueError, match="slack"):
        read_gaslib(NET_134, slack="node_2")
    with pytest.raises(ValueError, match="compressor"):
        read_gaslib(NET_134, compressor="power")
    with pytest.raises(ValueError, match="no_such_valve"):
        read_gaslib(NET_134, control_valve_setpoint_pa={"no_such_valve": 1e6})


def _assert_same_network(a: NetworkModel, b: NetworkModel) -> None:
    assert list(a.nodes.ids) == list(b.nodes.ids) and list(a.links.ids) == list(b.links.ids)
    np.testing.assert_array_equal(a.nodes.kind, b.nodes.kind)
    np.testing.assert_array_equal(a.links.kind, b.links.kind)
    np.testing.assert_array_equal(a.links.from_node, b.links.from_node)
    np.testing.assert_array_equal(a.links.to_node, b.links.to_node)
    np.testing.assert_array_equal(a.links.status, b.links.status)
    for col in ("x", "y", "elevation_m", "fixed_pressure_pa"):
        np.testing.assert_allclose(getattr(a.nodes, col), getattr(b.nodes, col), rtol=1e-12)
    for col in ("length_m", "diameter_m", "roughness", "setting"):
        np.testing.assert_allclose(getattr(a.links, col), getattr(b.links, col), rtol=1e-12)
    assert a.gas == b.gas and a.name == b.name


@needs_134
@pytest.mark.parametrize("with_bounds", [True, False])
def test_134_round_trip(tmp_path, model_134, with_bounds):
    bounds = pressure_bounds(NET_134) if with_bounds else None
    out = tmp_path / "rt.net"
    write_gaslib(model_134, out, pressure_bounds=bounds,
                 entries=["node_1", "node_20", "node_80"])
    slack = model_134.nodes.ids[model_134.nodes.kind == NodeKind.SOURCE][0]
    again = read_gaslib(out, slack=slack)
    _assert_same_network(model_134, again)
    if with_bounds:
        again_bounds = pressure_bounds(out)
        assert again_bounds.keys() == bounds.keys()
        for nid, (lo, hi) in bounds.items():
            assert again_bounds[nid] == pytest.approx((lo, hi), rel=1e-12)
    # and the written file writes back to the same text
    out2 = tmp_path / "rt2.net"
    write_gaslib(again, out2, pressure_bounds=bounds, entries=["node_1", "node_20", "node_80"])
    assert out2.read_text() == out.read_text()


@needs_134
def test_134_round_trip_with_scenario_marks_injecting_junctions_as_entries(tmp_path):
    m = read_gaslib(NET_134, SCENARIOS_134[3])
    out = tmp_path / "rt.net"
    write_gaslib(m, out)          # entries inferred: the SOURCE plus the injecting junctions
    root = ET.parse(out).getroot()
    sources = {e.get("id") for e in root.iter("{http://gaslib.zib.de/Gas}source")}
    assert sources == {"node_1", "node_20", "node_80"}
    slack = m.nodes.ids[m.nodes.kind == NodeKind.SOURCE][0]
    again = read_gaslib(out, SCENARIOS_134[3], slack=slack)
    np.testing.assert_allclose(again.base_demand(), m.base_demand(), rtol=1e-12)


# -- a small synthetic network: every element kind, and a playground for corruption -------------
SMALL_NET = """<?xml version="1.0" encoding="UTF-8"?>
<network xmlns="http://gaslib.zib.de/Gas" xmlns:framework="http://gaslib.zib.de/Framework">
  <framework:information><framework:title>small</framework:title></framework:information>
  <framework:nodes>
    <source id="s1" x="0" y="0">
      <height unit="m" value="10"/>
      <pressureMin unit="bar" value="40"/>
      <pressureMax unit="bar" value="70"/>
      <flowMax unit="1000m_cube_per_hour" value="500"/>
      <gasTemperature unit="K" value="283.15"/>
      <calorificValue unit="MJ_per_m_cube" value="36"/>
      <normDensity unit="kg_per_m_cube" value="0.8"/>
      <molarMass unit="kg_per_kmol" value="18"/>
      <pseudocriticalPressure unit="bar" value="46"/>
      <pseudocriticalTemperature unit="K" value="200"/>
    </source>
    <source id="s2" x="5" y="5">
      <height unit="m" value="0"/>
      <pressureMin unit="bar" value="40"/>
      <pressureMax unit="bar" value="60"/>
      <flowMax unit="1000m_cube_per_hour" value="100"/>
      <gasTemperature unit="Celsius" value="20"/>
      <normDensity unit="kg_per_m_cube" value="0.7"/>
    </source>
    <innode id="j1" x="1" y="0">
      <height unit="m" value="12.5"/>
      <pressureMin unit="bar" value="30"/>
      <pressureMax unit="bar" value="70"/>
    </innode>
    <innode id="j2" x="2" y="0">
      <height unit="m" value="12"/>
      <pressureMin unit="bar" value="30"/>
      <pressureMax unit="bar" value="70"/>
    </innode>
    <innode id="j3" x="3" y="0">
      <height unit="m" value="11"/>
      <pressureMin unit="barg" value="20"/>
      <pressureMax unit="bar" value="50"/>
    </innode>
    <innode id="j4" x="4" y="0">
      <height unit="m" value="11"/>
      <pressureMin unit="bar" value="20"/>
      <pressureMax unit="bar" value="80"/>
    </innode>
    <sink id="d1" x="4" y="1">
      <height unit="m" value="9"/>
      <pressureMin unit="bar" value="25"/>
      <pressureMax unit="bar" value="80"/>
    </sink>
  </framework:nodes>
  <framework:connections>
    <pipe id="p1" from="s1" to="j1">
      <length unit="km" value="2.5"/>
      <diameter unit="mm" value="500"/>
      <roughness unit="m" value="1.2e-05"/>
    </pipe>
    <valve id="v1" from="j1" to="j2"/>
    <controlValve id="cv1" from="j2" to="j3">
      <pressureDifferentialMin unit="bar" value="2"/>
      <pressureOutMax unit="bar" value="45"/>
    </controlValve>
    <compressorStation id="cs1" from="j3" to="j4">
      <pressureOutMax unit="bar" value="75"/>
    </compressorStation>
    <resistor id="r1" from="j4" to="d1">
      <dragFactor value="2.5"/>
      <diameter unit="mm" value="300"/>
    </resistor>
    <shortPipe id="sp1" from="s2" to="j2"/>
  </framework:connections>
</network>
"""

SMALL_SCN = """<?xml version="1.0" ?>
<boundaryValue xmlns="http://gaslib.zib.de/Gas" xmlns:framework="http://gaslib.zib.de/Framework">
  <scenario id="scenario_1">
    <node id="d1" type="exit">
      <flow bound="lower" unit="1000m_cube_per_hour" value="100"/>
      <flow bound="upper" unit="1000m_cube_per_hour" value="140"/>
    </node>
    <node id="s1" type="entry">
      <flow bound="both" unit="1000m_cube_per_hour" value="90"/>
    </node>
    <node id="s2" type="entry">
      <flow bound="both" unit="1000m_cube_per_hour" value="30"/>
    </node>
  </scenario>
</boundaryValue>
"""


def _write(tmp: Path, name: str, data: str | bytes) -> Path:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def test_small_network_reads_every_element_kind(tmp_path):
    net, scn = _write(tmp_path, "small.net", SMALL_NET), _write(tmp_path, "small.scn", SMALL_SCN)
    m = read_gaslib(net, scn)
    li, ni = m.link_index(), m.node_index()
    assert m.name == "small"
    assert [LinkKind(k) for k in m.links.kind] == [LinkKind.PIPE, LinkKind.VALVE, LinkKind.PRV,
                                                  LinkKind.COMPRESSOR_OUTLET, LinkKind.RESISTOR,
                                                  LinkKind.SHORT_PIPE]
    assert m.links.status[li["v1"]] == LinkStatus.OPEN
    # control valve j2 -> j3: min(pMax j3 50, pMax j2 70 - 2, pressureOutMax 45) bar
    assert m.links.setting[li["cv1"]] == pytest.approx(45e5)
    # compressor j3 -> j4: min(pressureOutMax 75, pMax j4 80) bar
    assert m.links.setting[li["cs1"]] == pytest.approx(75e5)
    assert m.links.setting[li["r1"]] == 2.5 and m.links.diameter_m[li["r1"]] == pytest.approx(0.3)
    assert m.links.length_m[li["sp1"]] == 0.0
    # barg: 20 bar gauge + 1.01325 bar
    assert pressure_bounds(net)["j3"] == pytest.approx((21.01325e5, 50e5))
    # gas averaged over the entries that state each property; 20 degC -> 293.15 K
    assert m.gas.normal_density_kg_m3 == pytest.approx(0.75)
    assert m.gas.temperature_k == pytest.approx(288.15)
    assert m.gas.calorific_value_j_m3 == pytest.approx(36e6)
    assert m.gas.compressibility.pseudocritical_temperature_k == pytest.approx(200.0)
    # slack s1 (largest nominated inflow) at its pressureMax; s2 injects; d1 takes the midpoint
    assert m.nodes.kind[ni["s1"]] == NodeKind.SOURCE and m.nodes.fixed_pressure_pa[ni["s1"]] == pytest.approx(70e5)
    d = m.base_demand()
    assert d[ni["d1"]] == pytest.approx(kg_s(120.0, 0.75))
    assert d[ni["s2"]] == pytest.approx(-kg_s(30.0, 0.75))
    assert d[ni["s1"]] == 0.0
    assert read_scenario(scn) == {"d1": 120.0, "s1": -90.0, "s2": -30.0}


def test_small_network_round_trip(tmp_path):
    m = read_gaslib(_write(tmp_path, "small.net", SMALL_NET))
    out = tmp_path / "out.net"
    write_gaslib(m, out, pressure_bounds=pressure_bounds(tmp_path / "small.net"), entries=["s1", "s2"])
    again = read_gaslib(out, slack="s1")
    _assert_same_network(m, again)


def test_writer_rejects_what_gaslib_cannot_hold(tmp_path):
    m = read_gaslib(_write(tmp_path, "small.net", SMALL_NET))
    m.links.kind[0] = LinkKind.PUMP
    with pytest.raises(ValueError, match="PUMP"):
        write_gaslib(m, tmp_path / "x.net")


# -- specific faults: each names the file and the element -----------------------------------------
NET_FAULTS = [
    ('from="s1" to="j1"', 'from="s1" to="nowhere"', "p1", "unknown node"),
    ('<length unit="km" value="2.5"/>', "", "p1", "missing <length>"),
    ('<diameter unit="mm" value="500"/>', '<diameter unit="mm" value="five hundred"/>', "p1", "not a number"),
    ('<diameter unit="mm" value="500"/>', '<diameter unit="mm" value="nan"/>', "p1", "finite"),
    ('<diameter unit="mm" value="500"/>', '<diameter unit="mm" value="-500"/>', "p1", "positive"),
    ('<length unit="km" value="2.5"/>', '<length unit="furlong" value="2.5"/>', "p1", "unknown unit"),
    ('<pressureMax unit="bar" value="50"/>', '<pressureMax unit="psi" value="50"/>', "j3", "unknown pressure unit"),
    ('<pressureMax unit="bar" value="50"/>', '<pressureMax unit="bar" value="5"/>', "j3", "pressureMin"),
    ('<innode id="j4" x="4" y="0">', '<innode id="j4" x="4">', "j4", "'y'"),
    ('<innode id="j4"', '<innode id="j3"', "j3", "duplicate"),
    ('<valve id="v1" from="j1" to="j2"/>', '<turbine id="v1" from="j1" to="j2"/>', "v1", "unknown connection"),
    ('<valve id="v1" from="j1" to="j2"/>', '<valve id="v1" from="j1" to="j1"/>', "v1", "itself"),
    ('<dragFactor value="2.5"/>', "", "r1", "dragFactor"),
]


@pytest.mark.parametrize("old, new, element, problem", NET_FAULTS)
def test_net_fault_names_file_and_element(tmp_path, old, new, element, problem):
    assert old in SMALL_NET
    net = _write(tmp_path, "bad.net", SMALL_NET.replace(old, new, 1))
    with pytest.raises(NetworkFileError, match=re.escape(problem)) as info:
        read_gaslib(net)
    assert info.value.path == str(net) and element in str(info.value.where)


def test_malformed_xml_names_the_line(tmp_path):
    net = _write(tmp_path, "bad.net", SMALL_NET.replace("</pipe>", "</pip>", 1))
    with pytest.raises(NetworkFileError, match="malformed XML") as info:
        read_gaslib(net)
    assert info.value.path == str(net) and isinstance(info.value.where, int) and info.value.where > 40
    with pytest.raises(NetworkFileError, match="cannot read"):
        read_gaslib(tmp_path / "missing.net")
    with pytest.raises(NetworkFileError, match="not <network>"):
        read_gaslib(_write(tmp_path, "scn.net", SMALL_SCN))


SCN_FAULTS = [
    ('<node id="s2" type="entry">', '<node id="ghost" type="entry">', "ghost", "not in the network"),
    ('<node id="s2" type="entry">', '<node id="j1" type="entry">', "j1", "is a <innode>"),
    ('<node id="s2" type="entry">', '<node id="d1" type="entry">', "d1", "twice"),
    ('<node id="s2" type="entry">', '<node id="s2" type="exit">', "s2", "is a <source>"),
    ('<node id="s2" type="entry">', '<node id="s2" type="transit">', "s2", "unknown node type"),
    ('value="30"', 'value="thirty"', "s2", "not a number"),
    ('unit="1000m_cube_per_hour" value="30"', 'unit="MW" value="30"', "s2", "unknown unit"),
]


@pytest.mark.parametrize("old, new, element, problem", SCN_FAULTS)
def test_scenario_fault_names_file_and_element(tmp_path, old, new, element, problem):
    assert old in SMALL_SCN
    net = _write(tmp_path, "small.net", SMALL_NET)
    scn = _write(tmp_path, "bad.scn", SMALL_SCN.replace(old, new, 1))
    with pytest.raises(NetworkFileError, match=re.escape(problem)) as info:
        read_gaslib(net, scn)
    assert info.value.path == str(scn) and element in str(info.value.where)


def test_unbalanced_nomination_is_absorbed_by_the_slack(tmp_path):
    net = _write(tmp_path, "small.net", SMALL_NET)
    scn = _write(tmp_path, "s.scn", SMALL_SCN.replace('value="90"', 'value="500"'))
    m = read_gaslib(net, scn)     # entries 530 vs exits 120 (1000 m3/h): accepted
    assert m.nodes.kind[m.node_index()["s1"]] == NodeKind.SOURCE
    assert m.base_demand().sum() == pytest.approx(kg_s(120.0 - 30.0, 0.75))


# -- property tests: any corruption is a NetworkFileError naming the file, or a valid model --------
_SMALL_TREE = ET.fromstring(SMALL_NET.encode())
_ATTRS = [(i, name) for i, el in enumerate(_SMALL_TREE.iter()) for name in el.attrib]
_VALUE_ATTRS = [(i, name) for i, name in _ATTRS if name in ("value", "x", "y")]
_ENDS = [(i, name) for i, name in _ATTRS if name in ("from", "to")]


def _mutated(i: int, name: str, value: str | None) -> bytes:
    tree = ET.fromstring(SMALL_NET.encode())
    el = list(tree.iter())[i]
    if value is None:
        del el.attrib[name]
    else:
        el.set(name, value)
    return ET.tostring(tree, encoding="utf-8")


def _not_a_finite_number(s: str) -> bool:
    try:
        return not np.isfinite(float(s))
    except ValueError:
        return True


def _read_outcome(path: Path, scn: Path | None = None):
    """The read's result, or the NetworkFileError it raised; any other exception fails the test."""
    try:
        return read_gaslib(path, scn)
    except NetworkFileError as exc:
        assert exc.path in {str(path), str(scn)}, exc
        assert exc.path in str(exc)
        return exc


# GASLIB_FUZZ_EXAMPLES=5000 for a long fuzzing run; 60 keeps the suite fast
PROPERTY = settings(max_examples=int(os.environ.get("GASLIB_FUZZ_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(st.sampled_from(_ATTRS))
def test_removing_any_attribute_is_clean(tmp_path, target):
    outcome = _read_outcome(_write(tmp_path, "m.net", _mutated(*target, None)))
    if target[1] in ("id", "from", "to", "value", "unit", "x", "y"):
        assert isinstance(outcome, NetworkFileError), target   # every one of these is read
    else:
        assert isinstance(outcome, (NetworkModel, NetworkFileError))


@PROPERTY
@given(st.sampled_from(_ENDS), st.from_regex(r"[A-Za-z0-9_.\- ]{1,8}", fullmatch=True).filter(
    lambda s: s.strip() and s.strip() not in {"s1", "s2", "j1", "j2", "j3", "j4", "d1"}))
def test_unknown_node_reference_is_an_error(tmp_path, target, name):
    text = _mutated(*target, name)
    outcome = _read_outcome(_write(tmp_path, "m.net", text))
    assert isinstance(outcome, NetworkFileError) and "unknown node" in outcome.problem


@PROPERTY
@given(st.sampled_from(_VALUE_ATTRS), st.one_of(
    st.sampled_from(["", "abc", "1,5", "nan", "inf", "-inf", "1e999", "0x10", "12 bar"]),
    st.text(max_size=6).filter(_not_a_finite_number)))
def test_text_in_a_number_is_an_error(tmp_path, target, text):
    outcome = _read_outcome(_write(tmp_path, "m.net", _mutated(*target, text)))
    assert isinstance(outcome, NetworkFileError)


@PROPERTY
@given(st.integers(min_value=0, max_value=len(SMALL_NET.rstrip()) - 1))
def test_truncated_xml_is_an_error(tmp_path, n):
    outcome = _read_outcome(_write(tmp_path, "m.net", SMALL_NET[:n]))
    assert isinstance(outcome, NetworkFileError)


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes_are_an_error(tmp_path, data):
    net = _write(tmp_path, "m.net", data)
    assert isinstance(_read_outcome(net), NetworkFileError)
    with pytest.raises(NetworkFileError):
        read_scenario(net)
    with pytest.raises(NetworkFileError):
        pressure_bounds(net)


@PROPERTY
@given(st.integers(min_value=0, max_value=len(SMALL_NET) - 1), st.binary(min_size=1, max_size=4),
       st.booleans())
def test_splicing_random_bytes_into_the_network_is_clean(tmp_path, at, junk, replace):
    raw = SMALL_NET.encode()
    data = raw[:at] + junk + raw[at + (len(junk) if replace else 0):]
    _read_outcome(_write(tmp_path, "m.net", data))


@PROPERTY
@given(st.integers(min_value=0, max_value=len(SMALL_SCN) - 1), st.binary(min_size=1, max_size=4),
       st.booleans())
def test_splicing_random_bytes_into_the_scenario_is_clean(tmp_path, at, junk, replace):
    raw = SMALL_SCN.encode()
    data = raw[:at] + junk + raw[at + (len(junk) if replace else 0):]
    net = _write(tmp_path, "m.net", SMALL_NET)
    _read_outcome(net, _write(tmp_path, "m.scn", data))
