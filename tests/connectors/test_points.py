"""Point tables: units to SI once, validation that names the row, both file forms."""

from pathlib import Path

import numpy as np
import pytest

from pipetwin.connectors.points import PointTableError, load_points, normalize_unit, parse_modbus
from pipetwin.data import example
from pipetwin.twin.io import read_network

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "site.yaml"


@pytest.fixture(scope="module")
def model():
    return read_network(example("schutterwald"))


def test_bundled_table_loads(model):
    table = load_points(example("schutterwald") / "points.csv", model)
    protocols = {p: table.protocol.count(p) for p in set(table.protocol)}
    assert protocols["meter"] == 1506 and 45 <= len(table) - protocols["meter"] <= 60
    assert (table.element_index >= 0).all()


def test_documented_yaml_example_loads_and_converts(model):
    table = load_points(REPO_DOCS, model)
    i = table.index()
    rho_n = model.gas.normal_density_kg_m3
    # 1000 mbar gauge -> 101325 + 100000 Pa absolute
    assert table.to_si(np.array([i["GS-PT-IN"]]), [1000.0])[0] == pytest.approx(201325.0)
    # 3.6 Nm3/h -> 0.001 Nm3/s -> kg/s
    assert table.to_si(np.array([i["GS-FT-01"]]), [3.6])[0] == pytest.approx(1e-3 * rho_n)
    # raw 5 in decibar with scale 0.1 -> 0.5 bar gauge
    assert table.to_si(np.array([i["PT-001"]]), [5.0])[0] == pytest.approx(101325.0 + 0.5e5)
    assert table.max_si[i["PT-001"]] == pytest.approx(101325.0 + 2e5)
    assert table.address[i["PT-001"]] == parse_modbus("1/0/float32/big")
    # round trip for the simulator: SI -> raw -> SI
    rows = np.arange(len(table))
    si = np.array([2e5, 0.01, 1.5e5, 0.4])
    assert np.allclose(table.to_si(rows, table.from_si(rows, si)), si)


def test_units_spelled_as_utilities_do():
    assert normalize_unit("m3/h") == ("m**3/h", 1.0)
    assert normalize_unit("Nm³/h") == ("m**3/h", 1.0)
    unit, factor = normalize_unit("Sm3/d")
    assert unit == "m**3/d" and factor == pytest.approx(273.15 / 288.15)


def test_water_pressure_stays_gauge(tmp_path):
    net3 = read_network(example("net3"))
    f = tmp_path / "w.csv"
    # 'm' is a length to pint, not metres of water: refused rather than misread
    f.write_text("id,protocol,address,element,quantity,unit,reference\nP,opcua,ns=2;s=P,10,pressure,m,\n")
    with pytest.raises(PointTableError, match="row 2"):
        load_points(f, net3)
    f.write_text("id,protocol,address,element,quantity,unit,reference\n"
                 "P,opcua,ns=2;s=P,10,pressure,psi,gauge\n"
                 "Q,opcua,ns=2;s=Q,10,pressure,kPa,absolute\n")
    t = load_points(f, net3)
    assert t.to_si(np.array([0]), [1.0])[0] == pytest.approx(6894.757, rel=1e-6)
    assert t.to_si(np.array([1]), [101.325])[0] == pytest.approx(0.0, abs=1e-9)


HEADER = "id,protocol,address,element,quantity,unit\n"
GOOD = "P1,opcua,ns=2;s=P1,K1030,pressure,mbar\n"


@pytest.mark.parametrize("rows,fragment", [
    (GOOD + "P1,opcua,ns=2;s=P2,K1030,pressure,mbar\n", "row 3: duplicate point id 'P1'"),
    (GOOD + "P2,opcua,ns=2;s=P1,K1030,pressure,mbar\n", "row 3: point 'P2': address"),
    ("P1,opcua,ns=2;s=P1,NOPE,pressure,mbar\n", "row 2: point 'P1': node 'NOPE' is not in network"),
    ("P1,opcua,ns=2;s=P1,K1030,flow,m3/h\n", "link 'K1030'"),
    ("P1,opcua,ns=2;s=P1,K1030,pressure,furlongs\n", "unit 'furlongs'"),
    ("P1,opcua,ns=2;s=P1,K1030,pressure,kg\n", "unit 'kg'"),
    ("P1,modbus,1/0/float16,K1030,pressure,mbar\n", "type 'float16'"),
    ("P1,bacnet,x,K1030,pressure,mbar\n", "protocol 'bacnet'"),
    ("P1,opcua,ns=2;s=P1,K1030,humidity,%\n", "quantity 'humidity'"),
])
def test_bad_rows_are_named(tmp_path, model, rows, fragment):
    f = tmp_path / "site.csv"
    f.write_text(HEADER + rows)
    with pytest.raises(PointTableError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_points(f, model)


def test_bad_yaml_is_named(tmp_path, model):
    f = tmp_path / "site.yaml"
    f.write_text("points:\n  - {id: P1, protocol: opcua\n")
    with pytest.raises(PointTableError, match="invalid YAML"):
        load_points(f, model)
    f.write_text("points: 3\n")
    with pytest.raises(PointTableError, match="'points:' list"):
        load_points(f, model)
