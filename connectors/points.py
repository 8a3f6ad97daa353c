"""Point tables: one file per site (YAML or CSV) saying, for every field signal, where to read it,
what it measures and how to turn its raw value into SI.

Columns (CSV) / keys (YAML, under ``points:``):

``id``            point id, unique in the site
``protocol``      ``opcua`` | ``modbus`` | ``meter`` | ``mqtt``
``address``       OPC-UA NodeId (``ns=2;s=PT-101``); Modbus ``unit/register/type[/order]`` (type
                  int16, uint16, int32, uint32, float32, float64; order ``big`` (default: high word
                  first) or ``little``); meter id; MQTT ``topic#json.path``
``element``       the network node (pressure, temperature, level, demand, gas concentration) or
                  link (flow, valve state) the point measures
``quantity``      pressure | flow | temperature | level | demand | volume | valve_state | gas_concentration
``unit``          any unit pint knows (bar, mbar, kPa, psi, m3/h, kg/s, degC, m, ...). A gas flow or
                  volume given in m3 is at normal conditions and is turned into kg by the network's
                  normal density
``reference``     pressure only: ``gauge`` (default) or ``absolute``
``scale``, ``offset``   raw -> unit: value = raw * scale + offset (defaults 1, 0)
``min``, ``max``  valid range, in the point's unit (optional)
``period_s``      expected reporting period in seconds (SCADA 1 s, meters 3600)
``deadband``      change below which a value need not be reported, in the point's unit (optional)

Everything is converted once here: ``PointTable`` holds, per point, ``si_scale`` and ``si_offset``
so that ``value_si = raw * si_scale + si_offset``, with ranges and deadbands in SI too. Errors name
the file and the row.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipetwin.twin.model import Medium, NetworkModel

PROTOCOLS = ("opcua", "modbus", "meter", "mqtt")
MODBUS_TYPES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}
# quantity -> (SI unit for pint, element is a node (True) or a link (False))
QUANTITIES = {
    "pressure": ("Pa", True), "flow": (None, False), "temperature": ("K", True), "level": ("m", True),
    "demand": (None, True), "volume": (None, True), "valve_state": ("dimensionless", False),
    "gas_concentration": ("dimensionless", True),
}
STANDARD_ATMOSPHERE_PA = 101325.0


class PointTableError(ValueError):
    """A point table that cannot be used: names the file, the row (or point id) and the fault."""

    def __init__(self, path, row: int | None, problem: str):
        where = f"{path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.row, self.problem = str(path), row, problem


@dataclass(frozen=True)
class ModbusAddress:
    unit: int
    register: int
    type: str
    order: str        # "big": high word first; "little": low word first

    @property
    def words(self) -> int:
        return MODBUS_TYPES[self.type]


@dataclass
class PointTable:
    """Structure of arrays, one row per point, aligned to ``ids``."""

    site: str
    ids: list[str]
    protocol: list[str]
    address: list[object]          # str (OPC-UA NodeId, meter id, mqtt topic#path) or ModbusAddress
    element: list[str]
    element_index: np.ndarray      # int64 node or link index in the model (-1 without a model)
    quantity: list[str]
    unit: list[str]
    si_scale: np.ndarray           # value_si = raw * si_scale + si_offset
    si_offset: np.ndarray
    min_si: np.ndarray             # NaN: no bound
    max_si: np.ndarray
    period_s: np.ndarray
    deadband_si: np.ndarray
    source_file: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.ids)}

    def select(self, protocol: str) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.protocol) if p == protocol], dtype=np.int64)

    def to_si(self, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Raw field values of the points at ``rows`` in SI."""
        return np.asarray(raw, float) * self.si_scale[rows] + self.si_offset[rows]

    def from_si(self, rows: np.ndarray, si: np.ndarray) -> np.ndarray:
        """The raw value a device would hold for an SI value (the simulator writes these)."""
        return (np.asarray(si, float) - self.si_offset[rows]) / self.si_scale[rows]


def points_from_columns(ids: Sequence[str], quantity: str | Sequence[str], *, min_si: float = math.nan,
                        max_si: float = math.nan, period_s: float = 1.0, deadband_si: float = 0.0) -> PointTable:
    """A small in-memory point table already in SI (tests, benchmarks, docs): every point is an
    ``opcua`` point whose address and element are its id, with no unit conversion.

    >>> t = points_from_columns(["P1", "P2"], "pressure", max_si=5.0e5)
    >>> len(t), t.quantity, t.max_si.tolist()
    (2, ['pressure', 'pressure'], [500000.0, 500000.0])
    """
    n = len(ids)
    quantities = [quantity] * n if isinstance(quantity, str) else list(quantity)
    full = lambda x: np.full(n, x, float)   # noqa: E731
    return PointTable(site="hand", ids=list(ids), protocol=["opcua"] * n, address=list(ids),
                      element=list(ids), element_index=np.full(n, -1, np.int64), quantity=quantities,
                      unit=[""] * n, si_scale=full(1.0), si_offset=full(0.0), min_si=full(min_si),
                      max_si=full(max_si), period_s=full(period_s), deadband_si=full(deadband_si))


@lru_cache(maxsize=1)
def unit_registry():
    """The one pint ``UnitRegistry`` of the connectors (built on first use: building it is slow).
    Shared so that units from point tables and from meter feeds are compared in one registry."""
    import pint

    return pint.UnitRegistry()


_POWER = re.compile(r"(?<![A-Za-z_])([NS]?)(m|cm|mm|dm|km|ft|in)(2|3|²|³)(?![0-9])")


def normalize_unit(unit: str) -> tuple[str, float]:
    """Unit text as utilities write it (``m3/h``, ``Nm3/h``, ``Sm3/d``, ``m³``) in pint's words,
    and the factor from the stated gas volume to normal-condition volume: ``N``/plain is normal
    (0 C, 1.01325 bar), ``S`` standard (15 C): 273.15 / 288.15 of it."""
    factor = 1.0

    def repl(match):
        nonlocal factor
        if match.group(1) == "S":
            factor = 273.15 / 288.15
        power = {"2": "2", "3": "3", "²": "2", "³": "3"}[match.group(3)]
        return f"{match.group(2)}**{power}"

    return _POWER.sub(repl, unit.strip()), factor


def _linear_to_si(unit: str, si_unit: str) -> tuple[float, float]:
    """(scale, offset) with value_si = value * scale + offset, from pint (offsets for degC/degF)."""
    ureg = unit_registry()
    q0 = ureg.Quantity(0.0, unit).to(si_unit).magnitude
    q1 = ureg.Quantity(1.0, unit).to(si_unit).magnitude
    return float(q1 - q0), float(q0)


def _si_unit_for(quantity: str, unit: str, medium: Medium) -> tuple[str, float]:
    """SI target unit of a flow/demand/volume point and a factor applied after it (normal density
    for gas volumes -> mass)."""
    ureg = unit_registry()
    u = ureg.Unit(unit)
    if quantity in ("flow", "demand"):
        if u.dimensionality == ureg.Unit("kg/s").dimensionality:
            return "kg/s", 1.0
        if u.dimensionality == ureg.Unit("m^3/s").dimensionality:
            return "m^3/s", math.nan if medium == Medium.NATURAL_GAS else 1.0
        raise ValueError(f"{unit!r} is neither a mass nor a volume flow")
    if quantity == "volume":
        if u.dimensionality == ureg.Unit("kg").dimensionality:
            return "kg", 1.0
        if u.dimensionality == ureg.Unit("m^3").dimensionality:
            return "m^3", math.nan if medium == Medium.NATURAL_GAS else 1.0
        raise ValueError(f"{unit!r} is neither a mass nor a volume")
    raise AssertionError(quantity)


def parse_modbus(text: str) -> ModbusAddress:
    """``unit/register/type[/order]``, e.g. ``1/0/float32`` or ``1/10/int32/little``."""
    parts = [p.strip() for p in text.split("/")]
    if len(parts) not in (3, 4):
        raise ValueError(f"Modbus address {text!r}: expected unit/register/type[/order]")
    unit, register = int(parts[0]), int(parts[1])
    kind = parts[2].lower()
    order = parts[3].lower() if len(parts) == 4 else "big"
    if kind not in MODBUS_TYPES:
        raise ValueError(f"Modbus address {text!r}: type {kind!r} is not one of {sorted(MODBUS_TYPES)}")
    if order not in ("big", "little"):
        raise ValueError(f"Modbus address {text!r}: word order {order!r} is not big or little")
    if not (0 <= unit <= 247 and 0 <= register <= 65535 - MODBUS_TYPES[kind] + 1):
        raise ValueError(f"Modbus address {text!r}: unit 0-247, register 0-65535")
    return ModbusAddress(unit, register, kind, order)


def _rows_from_file(path: Path) -> tuple[str, list[tuple[int, dict]]]:
    """(site name, [(row number, fields)]) from a YAML or CSV point table."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PointTableError(path, None, f"cannot open: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PointTableError(path, None, f"not UTF-8 text: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            raise PointTableError(path, None if line is None else line + 1, f"invalid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
            raise PointTableError(path, None, "expected a mapping with a 'points:' list")
        rows = []
        for n, item in enumerate(doc["points"], start=1):
            if not isinstance(item, dict):
                raise PointTableError(path, n, "each point must be a mapping of column: value")
            rows.append((n, {str(k): ("" if v is None else str(v)) for k, v in item.items()}))
        return str(doc.get("site", path.stem)), rows
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None:
            raise PointTableError(path, 1, "empty file, expected a header row")
        rows = []
        for row in reader:
            if None in row:
                raise PointTableError(path, reader.line_num, "more fields than the header has")
            rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
        return path.stem, rows
    raise PointTableError(path, None, "a point table is a .yaml/.yml or .csv file")


def load_points(path: str | Path, model: NetworkModel | None = None,
                atmosphere_pa: float = STANDARD_ATMOSPHERE_PA) -> PointTable:
    """Read and validate a point table. With ``model``, elements must exist in it (nodes or
    links as the quantity needs), gas pressures become absolute and gas volumes become mass."""
    path = Path(path)
    site, rows = _rows_from_file(path)
    medium = model.medium if model is not None else Medium.NATURAL_GAS
    nodes = model.node_index() if model is not None else None
    links = model.link_index() if model is not None else None
    cols: dict[str, list] = {k: [] for k in ("ids", "protocol", "address", "element", "element_index",
                                             "quantity", "unit", "scale", "offset", "min", "max",
                                             "period", "deadband")}
    seen_ids: dict[str, int] = {}
    seen_addr: dict[tuple, int] = {}
    for n, r in rows:
        def need(key):
            v = r.get(key, "")
            if v == "":
                raise PointTableError(path, n, f"column {key!r} is empty")
            return v

        def num(key, default):
            v = r.get(key, "")
            if v == "":
                return default
            try:
                x = float(v)
            except ValueError:
                raise PointTableError(path, n, f"{key}={v!r} is not a number") from None
            if not math.isfinite(x):
                raise PointTableError(path, n, f"{key}={v!r} is not finite")
            return x

        pid = need("id")
        if pid in seen_ids:
            raise PointTableError(path, n, f"duplicate point id {pid!r} (first on row {seen_ids[pid]})")
        seen_ids[pid] = n
        protocol = need("protocol").lower()
        if protocol not in PROTOCOLS:
            raise PointTableError(path, n, f"point {pid!r}: protocol {protocol!r} is not one of {PROTOCOLS}")
        address: object = need("address")
        if protocol == "modbus":
            try:
                address = parse_modbus(str(address))
            except ValueError as exc:
                raise PointTableError(path, n, f"point {pid!r}: {exc}") from None
        key = (protocol, address)
        if key in seen_addr:
            raise PointTableError(path, n, f"point {pid!r}: address {r['address']!r} already used on row "
                                           f"{seen_addr[key]}")
        seen_addr[key] = n
        quantity = need("quantity").lower()
        if quantity not in QUANTITIES:
            raise PointTableError(path, n, f"point {pid!r}: quantity {quantity!r} is not one of "
                                           f"{sorted(QUANTITIES)}")
        si_unit, on_node = QUANTITIES[quantity]
        element = need("element")
        index = -1
        if model is not None:
            table = nodes if on_node else links
            if element not in table:
                raise PointTableError(path, n, f"point {pid!r}: {'node' if on_node else 'link'} {element!r} "
                                               f"is not in network {model.name!r}")
            index = table[element]
        unit = r.get("unit", "") or ("dimensionless" if si_unit == "dimensionless" else "")
        if not unit:
            raise PointTableError(path, n, f"point {pid!r}: column 'unit' is empty")
        try:
            pint_unit, volume_basis = normalize_unit(unit)
            post = 1.0
            if si_unit is None:
                si_unit, post = _si_unit_for(quantity, pint_unit, medium)
                if math.isnan(post):
                    if model is None:
                        raise ValueError("a gas volume needs the network (its normal density) to become mass")
                    post = model.gas.normal_density_kg_m3 * volume_basis
            scale_u, offset_u = _linear_to_si(pint_unit, si_unit)
        except Exception as exc:   # pint raises several types for unknown or mismatched units
            raise PointTableError(path, n, f"point {pid!r}: unit {unit!r}: {exc}") from None
        scale_u, offset_u = scale_u * post, offset_u * post
        if quantity == "pressure":
            reference = (r.get("reference", "") or "gauge").lower()
            if reference not in ("gauge", "absolute"):
                raise PointTableError(path, n, f"point {pid!r}: reference {reference!r} is gauge or absolute")
            if medium == Medium.NATURAL_GAS and reference == "gauge":
                offset_u += atmosphere_pa           # gas pressures are absolute inside
            if medium == Medium.WATER and reference == "absolute":
                offset_u -= atmosphere_pa           # water pressures are gauge inside (EPANET)
        scale, offset = num("scale", 1.0), num("offset", 0.0)
        if scale == 0.0:
            raise PointTableError(path, n, f"point {pid!r}: scale must not be 0")
        period = num("period_s", 1.0)
        if period <= 0:
            raise PointTableError(path, n, f"point {pid!r}: period_s must be > 0")
        lo, hi = num("min", math.nan), num("max", math.nan)
        if lo == lo and hi == hi and lo >= hi:
            raise PointTableError(path, n, f"point {pid!r}: min {lo} is not below max {hi}")
        cols["ids"].append(pid)
        cols["protocol"].append(protocol)
        cols["address"].append(address)
        cols["element"].append(element)
        cols["element_index"].append(index)
        cols["quantity"].append(quantity)
        cols["unit"].append(unit)
        cols["scale"].append(scale * scale_u)
        cols["offset"].append(offset * scale_u + offset_u)
        cols["min"].append(lo * scale_u + offset_u)
        cols["max"].append(hi * scale_u + offset_u)
        cols["period"].append(period)
        cols["deadband"].append(abs(num("deadband", 0.0) * scale_u))
    if not cols["ids"]:
        raise PointTableError(path, None, "no points")
    return PointTable(site=site, ids=cols["ids"], protocol=cols["protocol"], address=cols["address"],
                      element=cols["element"], element_index=np.array(cols["element_index"], np.int64),
                      quantity=cols["quantity"], unit=cols["unit"], si_scale=np.array(cols["scale"]),
                      si_offset=np.array(cols["offset"]), min_si=np.array(cols["min"]),
                      max_si=np.array(cols["max"]), period_s=np.array(cols["period"]),
                      deadband_si=np.array(cols["deadband"]), source_file=str(path))
