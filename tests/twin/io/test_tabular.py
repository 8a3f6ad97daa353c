"""Tabular form: read every shared tabular network, round-trip it, export GeoJSON, and refuse bad
files with an error that names the file and the line."""

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetwin.data import example
from pipetwin.twin.io.geojson import to_geojson, write_geojson
from pipetwin.twin.io.tabular import read_tabular, write_tabular
from pipetwin.twin.model import LinkKind, LinkStatus, NetworkFileError, NodeKind


@pytest.mark.parametrize("name", ["gas_meshed_delta", "schutterwald", "grid10k"])
def test_read_counts_match_network_json(networks_dir, name):
    folder = networks_dir / name
    meta = json.loads((folder / "network.json").read_text())
    model = read_tabular(folder)
    assert model.n_nodes == meta["counts"]["nodes"]
    assert model.n_links == meta["counts"]["pipes"] + meta["counts"]["valves"]
    assert int((model.nodes.kind == NodeKind.SOURCE).sum()) == meta["counts"]["sources"]
    assert model.base_demand().sum() == pytest.approx(meta["total_demand_kg_s"], rel=1e-9, abs=1e-12)
    assert model.gas.normal_density_kg_m3 == meta["normal_density_kg_m3"]
    assert model.gas.compressibility.slope_per_pa == meta["compressibility"]["slope_per_pa"]


def _same(a, b):
    assert list(a.nodes.ids) == list(b.nodes.ids) and list(a.links.ids) == list(b.links.ids)
    for col in ("kind", "x", "y", "elevation_m", "fixed_pressure_pa"):
        np.testing.assert_array_equal(getattr(a.nodes, col), getattr(b.nodes, col))
    for col in ("kind", "from_node", "to_node", "length_m", "diameter_m", "roughness", "status", "setting"):
        np.testing.assert_array_equal(getattr(a.links, col), getattr(b.links, col))
    np.testing.assert_array_equal(a.base_demand(), b.base_demand())
    assert a.gas == b.gas


def test_round_trip_bundled_schutterwald(tmp_path):
    model = read_tabular(example("schutterwald"))
    write_tabular(model, tmp_path / "out")
    _same(model, read_tabular(tmp_path / "out"))


def test_round_trip_with_valves_and_regulators(tmp_path):
    src = example("schutterwald")
    folder = tmp_path / "net"
    shutil.copytree(src, folder)
    (folder / "valves.csv").write_text("id,from,to,kind,status,setpoint_pa\n"
                                       "v1,K1030,K1035,isolation,closed,\n"
                                       "r1,K1037,K1038,regulator,open,150000\n")
    model = read_tabular(folder)
    k = model.link_index()
    assert model.links.kind[k["v1"]] == LinkKind.VALVE and model.links.status[k["v1"]] == LinkStatus.CLOSED
    assert model.links.kind[k["r1"]] == LinkKind.PRV and model.links.setting[k["r1"]] == 150000.0
    write_tabular(model, tmp_path / "out")
    _same(model, read_tabular(tmp_path / "out"))


def test_geojson_has_every_element(tmp_path):
    model = read_tabular(example("schutterwald"))
    gj = to_geojson(model)
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) == model.n_nodes + model.n_links
    first_link = gj["features"][model.n_nodes]
    assert first_link["geometry"]["type"] == "LineString"
    assert first_link["properties"]["from"] == model.nodes.ids[model.links.from_node[0]]
    write_geojson(model, tmp_path / "net.geojson")
    assert json.loads((tmp_path / "net.geojson").read_text())["name"] == "schutterwald"


GOOD_NODES = ("id,kind,x,y,elevation_m,demand,fixed_pressure_pa\n"
              "s,source,0,0,0,0,200000\n"
              "a,junction,1,0,0,0,\n"
              "b,consumer,2,0,0,0.01,\n")
GOOD_PIPES = ("id,from,to,length_m,diameter_m,roughness_m\n"
              "p1,s,a,100,0.1,0.0001\n"
              "p2,a,b,100,0.1,0.0001\n")
META = '{"medium": "natural_gas", "compressibility": {"model": "linear", "slope_per_pa": -2.2e-8}}'


def _write(folder, nodes=GOOD_NODES, pipes=GOOD_PIPES, meta=META):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "network.json").write_text(meta)
    (folder / "nodes.csv").write_text(nodes)
    (folder / "pipes.csv").write_text(pipes)
    return folder


@pytest.mark.parametrize("nodes,pipes,where,fragment", [
    (GOOD_NODES.replace("0.01", "lots"), GOOD_PIPES, "nodes.csv, line 4", "not a number"),
    (GOOD_NODES.replace("junction", "hydrant"), GOOD_PIPES, "nodes.csv, line 3", "unknown kind"),
    (GOOD_NODES + "a,junction,1,1,0,0,\n", GOOD_PIPES, "nodes.csv, line 5", "duplicate node id"),
    (GOOD_NODES.replace("200000", ""), GOOD_PIPES, "nodes.csv, line 2", "no fixed_pressure_pa"),
    (GOOD_NODES, GOOD_PIPES.replace("a,b,100", "a,zz,100"), "pipes.csv, line 3", "unknown to node 'zz'"),
    (GOOD_NODES, GOOD_PIPES.replace("0.1,0.0001\np2", "-0.1,0.0001\np2"), "pipes.csv, line 2", "must be > 0"),
    (GOOD_NODES, GOOD_PIPES.replace("p2,a,b", "p2,a,a"), "pipes.csv, line 3", "to itself"),
    (GOOD_NODES, "id,from,to,length_m\n", "pipes.csv, line 1", "missing column"),
    (GOOD_NODES, GOOD_PIPES + "p3,a,b,100,0.1\n", "pipes.csv, line 4", "fields"),
])
def test_bad_files_name_file_and_line(tmp_path, nodes, pipes, where, fragment):
    folder = _write(tmp_path / "net", nodes, pipes)
    with pytest.raises(NetworkFileError) as err:
        read_tabular(folder)
    assert where in str(err.value) and fragment in str(err.value)


def test_bad_medium_is_named(tmp_path):
    folder = _write(tmp_path / "net", meta='{"medium": "steam"}')
    with pytest.raises(NetworkFileError, match="network.json.*unknown medium"):
        read_tabular(folder)
    folder = _write(tmp_path / "net2", meta='{"medium": ')
    with pytest.raises(NetworkFileError, match="invalid JSON"):
        read_tabular(folder)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["nodes", "pipes"]), pos=st.integers(0, 10_000),
       junk=st.binary(min_size=1, max_size=12))
def test_corrupted_files_fail_cleanly(tmp_path_factory, which, pos, junk):
    """Random bytes spliced anywhere into a valid file: either it still reads or the error names
    a file of the network (a mangled node id surfaces in pipes.csv); never another exception."""
    folder = tmp_path_factory.mktemp("fuzz")
    text = (GOOD_NODES if which == "nodes" else GOOD_PIPES).encode()
    pos %= len(text)
    data = text[:pos] + junk + text[pos:]
    _write(folder)
    (folder / f"{which}.csv").write_bytes(data)
    try:
        read_tabular(folder)
    except NetworkFileError as exc:
        assert f"{which}.csv" in str(exc) or "pipes.csv" in str(exc)


# --- GeoJSON: the pair -------------------------------------------------------------------------

def test_geojson_round_trip(tmp_path):
    from pipetwin.twin.io.geojson import read_geojson

    model = read_tabular(example("schutterwald"))
    write_geojson(model, tmp_path / "net.geojson")
    back = read_geojson(tmp_path / "net.geojson")
    _same(model, back)
    assert back.crs == model.crs


def test_geojson_plain_gis_export_snaps_line_ends(tmp_path):
    """A GIS layer without from/to: ends join the nodes they touch, lengths from the geometry."""
    from pipetwin.twin.io.geojson import read_geojson
    from pipetwin.twin.solve.gas import solve_gas

    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]},
         "properties": {"id": "gate", "kind": "source", "fixed_pressure_pa": 2e5}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [300, 400]},
         "properties": {"id": "house", "kind": "consumer", "demand": 0.001}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [300, 0], [300.004, 400]]},
         "properties": {"id": "main", "diameter_m": 0.1}},
    ]}
    (tmp_path / "gis.geojson").write_text(json.dumps(doc))
    model = read_geojson(tmp_path / "gis.geojson")
    assert model.links.length_m[0] == pytest.approx(700.0, abs=1e-3)
    assert model.links.to_node[0] == model.node_index()["house"]
    assert len(model.vertices["main"]) == 1
    assert solve_gas(model).converged


@pytest.mark.parametrize("mutate,fragment", [
    (lambda d: d["features"][2]["geometry"]["coordinates"].__setitem__(-1, [999, 999]), "no node within"),
    (lambda d: d["features"][1]["properties"].__setitem__("demand", "much"), "not a number"),
    (lambda d: d["features"][2]["properties"].__setitem__("kind", "teleporter"), "unknown link kind"),
    (lambda d: d["features"][1].__setitem__("geometry", {"type": "Polygon", "coordinates": []}), "Polygon"),
    (lambda d: d.__setitem__("type", "Feature"), "FeatureCollection"),
])
def test_geojson_bad_features_are_named(tmp_path, mutate, fragment):
    from pipetwin.twin.io.geojson import read_geojson

    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]},
         "properties": {"id": "gate", "kind": "source", "fixed_pressure_pa": 2e5}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100, 0]},
         "properties": {"id": "house", "kind": "consumer", "demand": 0.001}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [100, 0]]},
         "properties": {"id": "main", "diameter_m": 0.1}},
    ]}
    mutate(doc)
    (tmp_path / "bad.geojson").write_text(json.dumps(doc))
    with pytest.raises(NetworkFileError, match=fragment) as err:
        read_geojson(tmp_path / "bad.geojson")
    assert "bad.geojson" in str(err.value)
