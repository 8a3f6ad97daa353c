"""GasLib networks (``.net``) and nominations (``.scn``) in and out of a ``NetworkModel``.

GasLib (Schmidt et al. 2017, "GasLib - A Library of Gas Network Instances", Data 2(4):40) stores a
network as XML in the namespaces ``http://gaslib.zib.de/Gas`` and ``http://gaslib.zib.de/Framework``.
Every quantity is an element ``<name unit=".." value=".."/>``; this module converts each one to SI
here, once, so nothing past the reader sees bar, km or 1000 m3/h (STYLE.md §1.4).

Units and conventions, as read:

- pressures in ``bar`` are taken as **absolute** (1 bar = 1e5 Pa, no offset). The GasLib texts we
  could consult do not say "absolute" in so many words; the evidence is that GasLib's own element
  bounds use 1.01325 bar (one atmosphere) as the lowest inlet pressure of compressors and control
  valves, a floor that only makes sense on an absolute scale, that its validation models (Papay's
  Z(p)) need absolute pressure, and that LANL's GasModels.jl GasLib parser converts bar x 1e5 with no
  offset. A ``barg`` unit, should a file use it, is converted with +1.01325 bar.
- flows in ``1000m_cube_per_hour`` are volumes at normal conditions (0 degC, 1.01325 bar); a mass
  flow is ``kg/s = 1000 * value / 3600 * normDensity``.
- lengths km, diameters mm, roughness m, heights m, temperatures K, calorific value MJ/m3.

How GasLib maps onto the model:

- nodes: ``source`` (entry), ``sink`` (exit, ``NodeKind.CONSUMER``), ``innode``
  (``NodeKind.JUNCTION``). A steady solve needs one pressure reference, so exactly one entry becomes
  the slack (``NodeKind.SOURCE`` with ``fixed_pressure_pa``); the other entries are junctions that
  inject their nomination as a negative demand. The slack's own nomination is not a demand: the
  slack balances the network, so an unbalanced nomination is accepted, never an error.
- connections: ``pipe``, ``shortPipe``, ``valve`` (open), ``controlValve`` (``LinkKind.PRV``, an
  outlet-pressure regulator), ``compressorStation`` (``COMPRESSOR_OUTLET`` or ``COMPRESSOR_RATIO``)
  and ``resistor`` (setting = drag factor). Any other connection element is an error rather than
  silently dropped, since a missing link changes the topology.
- per-node pressure bounds have no field in the model; ``pressure_bounds`` returns them.

Every fault in a file (malformed XML, a missing or non-numeric value, an unknown unit or node)
raises ``NetworkFileError`` naming the file and the element, never a bare KeyError or ValueError.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipetwin.twin.model import (
    Compressibility,
    GasProperties,
    LinkKind,
    LinkStatus,
    Medium,
    NetworkFileError,
    NetworkModel,
    NodeKind,
    make_demands,
    make_links,
    make_nodes,
    make_tanks,
)

GAS_NS = "http://gaslib.zib.de/Gas"
FRAMEWORK_NS = "http://gaslib.zib.de/Framework"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

BAR_PA = 1e5
ATMOSPHERE_BAR = 1.01325
# GasLib lists no viscosity; 1e-5 Pa s is the usual value for natural gas at pipeline conditions and
# only enters the Reynolds number, which the default Nikuradse friction law does not use.
DEFAULT_VISCOSITY_PA_S = 1e-5
# What the writer puts where the model holds no bound: GasLib's own "unbounded" placeholders.
_UNBOUNDED_FLOW = 10000.0           # 1000 m3/h
_DEFAULT_PRESSURE_MAX_BAR = 100.0

# unit -> factor to SI (or to 1000 m3/h for flows), one table per kind of quantity
_LENGTH = {"m": 1.0, "km": 1e3, "mm": 1e-3, "cm": 1e-2}
_FLOW = {"1000m_cube_per_hour": 1.0, "m_cube_per_hour": 1e-3, "m_cube_per_s": 3.6}
_CALORIFIC = {"MJ_per_m_cube": 1e6, "kJ_per_m_cube": 1e3}
_DENSITY = {"kg_per_m_cube": 1.0}
_MOLAR_MASS = {"kg_per_kmol": 1.0, "g_per_mol": 1.0}
_DIMENSIONLESS = {"": 1.0, "1": 1.0, "dimensionless": 1.0}

_NODE_TAGS = ("source", "sink", "innode")
_LINK_KINDS = {"pipe": LinkKind.PIPE, "shortPipe": LinkKind.SHORT_PIPE, "valve": LinkKind.VALVE,
               "controlValve": LinkKind.PRV, "compressorStation": LinkKind.COMPRESSOR_OUTLET,
               "resistor": LinkKind.RESISTOR}


# -- raw records: the file's content in SI, before it becomes a model -------------------------------
@dataclass
class _Node:
    id: str
    tag: str                       # source | sink | innode
    x: float
    y: float
    height_m: float
    pressure_min_pa: float
    pressure_max_pa: float
    flow_max: float = 0.0          # 1000 m3/h; ranks entries when no scenario is given
    gas: dict = field(default_factory=dict)   # source gas properties, SI


@dataclass
class _Link:
    id: str
    tag: str
    from_id: str
    to_id: str
    values: dict = field(default_factory=dict)   # SI quantities the model needs


@dataclass
class _Net:
    title: str
    nodes: list[_Node]
    links: list[_Link]


# -- small XML helpers --------------------------------------------------------------------------
def _local(tag) -> str:
    """Tag without its namespace: GasLib files differ in prefixes, never in local names."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _where(elem: ET.Element) -> str:
    ident = elem.get("id")
    return f"<{_local(elem.tag)} id={ident!r}>" if ident is not None else f"<{_local(elem.tag)}>"


def _parse_xml(path: Path) -> ET.Element:
    """Parse a file, turning every I/O or syntax fault into NetworkFileError with its line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NetworkFileError(path, None, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise NetworkFileError(path, line, f"malformed XML: {exc}") from exc
    except (ValueError, LookupError, RecursionError) as exc:   # odd encodings, absurd nesting
        raise NetworkFileError(path, None, f"malformed XML: {exc}") from exc


def _attr(path: Path, elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None or not value.strip():
        raise NetworkFileError(path, _where(elem), f"missing attribute {name!r}")
    return value.strip()


def _number(path: Path, where: str, text: str | None, what: str) -> float:
    """A finite float, or NetworkFileError: 'nan' and 'inf' parse in Python but are never data."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NetworkFileError(path, where, f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise NetworkFileError(path, where, f"{what}: {text!r} is not a finite number")
    return value


def _coordinate(path: Path, elem: ET.Element, name: str) -> float:
    return _number(path, _where(elem), _attr(path, elem, name), f"attribute {name!r}")


def _raw(path: Path, elem: ET.Element, name: str, required: bool = True):
    """(unit, value) of the quantity child ``name``; None when optional and absent."""
    c = _child(elem, name)
    if c is None:
        if required:
            raise NetworkFileError(path, _where(elem), f"missing <{name}>")
        return None
    value = _number(path, _where(elem), c.get("value"), f"<{name}> value")
    return (c.get("unit") or "").strip(), value


def _scaled(path, elem, name, table, required=True):
    """A quantity converted by a unit table; unknown units are errors, not guesses."""
    raw = _raw(path, elem, name, required)
    if raw is None:
        return None
    unit, value = raw
    if unit not in table:
        raise NetworkFileError(path, _where(elem), f"<{name}>: unknown unit {unit!r}")
    return value * table[unit]


def _pressure_pa(path, elem, name, required=True):
    """Absolute Pa from bar (absolute, GasLib's convention), barg, Pa, kPa or MPa."""
    raw = _raw(path, elem, name, required)
    if raw is None:
        return None
    unit, value = raw
    factors = {"bar": BAR_PA, "Pa": 1.0, "kPa": 1e3, "MPa": 1e6}
    if unit == "barg":
        return (value + ATMOSPHERE_BAR) * BAR_PA
    if unit not in factors:
        raise NetworkFileError(path, _where(elem), f"<{name}>: unknown pressure unit {unit!r}")
    return value * factors[unit]


def _temperature_k(path, elem, name, required=True):
    raw = _raw(path, elem, name, required)
    if raw is None:
        return None
    unit, value = raw
    if unit == "K":
        return value
    if unit.lower() == "celsius":
        return value + 273.15
    raise NetworkFileError(path, _where(elem), f"<{name}>: unknown temperature unit {unit!r}")


def _positive(path, elem, name, value):
    if value is not None and value <= 0:
        raise NetworkFileError(path, _where(elem), f"<{name}> must be positive, got {value!r}")
    return value


# -- reading the network file -------------------------------------------------------------------
def _read_node(path: Path, elem: ET.Element) -> _Node:
    tag = _local(elem.tag)
    node = _Node(id=_attr(path, elem, "id"), tag=tag, x=_coordinate(path, elem, "x"),
                 y=_coordinate(path, elem, "y"),
                 height_m=_scaled(path, elem, "height", _LENGTH),
                 pressure_min_pa=_pressure_pa(path, elem, "pressureMin"),
                 pressure_max_pa=_pressure_pa(path, elem, "pressureMax"))
    if not 0.0 <= node.pressure_min_pa <= node.pressure_max_pa or node.pressure_max_pa <= 0.0:
        raise NetworkFileError(path, _where(elem), "pressure bounds must satisfy "
                               "0 <= pressureMin <= pressureMax, pressureMax > 0 (absolute)")
    if tag == "source":
        node.flow_max = _scaled(path, elem, "flowMax", _FLOW, required=False) or 0.0
        node.gas = _read_source_gas(path, elem)
    return node


def _read_source_gas(path: Path, elem: ET.Element) -> dict:
    """The gas an entry feeds in; absent properties are left out and fall back to defaults."""
    gas = {"normal_density_kg_m3": _scaled(path, elem, "normDensity", _DENSITY, False),
           "temperature_k": _temperature_k(path, elem, "gasTemperature", False),
           "calorific_value_j_m3": _scaled(path, elem, "calorificValue", _CALORIFIC, False),
           "molar_mass_kg_kmol": _scaled(path, elem, "molarMass", _MOLAR_MASS, False),
           "pseudocritical_pressure_pa": _pressure_pa(path, elem, "pseudocriticalPressure", False),
           "pseudocritical_temperature_k": _temperature_k(path, elem, "pseudocriticalTemperature",
                                                          False)}
    _positive(path, elem, "normDensity", gas["normal_density_kg_m3"])
    return {k: v for k, v in gas.items() if v is not None}


def _read_link(path: Path, elem: ET.Element) -> _Link:
    tag = _local(elem.tag)
    link = _Link(id=_attr(path, elem, "id"), tag=tag, from_id=_attr(path, elem, "from"),
                 to_id=_attr(path, elem, "to"))
    v = link.values
    if tag == "pipe":
        v["length_m"] = _positive(path, elem, "length", _scaled(path, elem, "length", _LENGTH))
        v["diameter_m"] = _positive(path, elem, "diameter", _scaled(path, elem, "diameter", _LENGTH))
        v["roughness_m"] = _scaled(path, elem, "roughness", _LENGTH)
        if v["roughness_m"] < 0:
            raise NetworkFileError(path, _where(elem), "<roughness> must not be negative")
    elif tag == "resistor":
        v["drag_factor"] = _scaled(path, elem, "dragFactor", _DIMENSIONLESS)
        v["diameter_m"] = _positive(path, elem, "diameter", _scaled(path, elem, "diameter", _LENGTH))
    elif tag == "controlValve":
        v["dp_min_pa"] = _pressure_pa(path, elem, "pressureDifferentialMin", False) or 0.0
        v["p_out_max_pa"] = _pressure_pa(path, elem, "pressureOutMax", False)
    elif tag == "compressorStation":
        v["p_out_max_pa"] = _pressure_pa(path, elem, "pressureOutMax", False)
    return link


def _read_net(path: Path) -> _Net:
    """The whole .net file as SI records, with ids checked to be unique and links to be known."""
    root = _parse_xml(path)
    if _local(root.tag) != "network":
        raise NetworkFileError(path, f"<{_local(root.tag)}>", "root element is not <network>")
    nodes_el, links_el = _child(root, "nodes"), _child(root, "connections")
    if nodes_el is None:
        raise NetworkFileError(path, "<network>", "missing <framework:nodes>")
    nodes = [_read_node(path, e) for e in nodes_el if _local(e.tag) in _NODE_TAGS]
    unknown = [e for e in nodes_el if _local(e.tag) not in _NODE_TAGS]
    if unknown:
        raise NetworkFileError(path, _where(unknown[0]), "unknown node element")
    links: list[_Link] = []
    for e in links_el if links_el is not None else ():
        if _local(e.tag) not in _LINK_KINDS:
            raise NetworkFileError(path, _where(e), "unknown connection element")
        links.append(_read_link(path, e))
    _check_ids(path, nodes, links)
    info = _child(root, "information")
    title_el = _child(info, "title") if info is not None else None
    title = (title_el.text or "").strip() if title_el is not None else ""
    return _Net(title=title or path.stem, nodes=nodes, links=links)


def _check_ids(path: Path, nodes: list[_Node], links: list[_Link]) -> None:
    seen: set[str] = set()
    for n in nodes:
        if n.id in seen:
            raise NetworkFileError(path, f"<{n.tag} id={n.id!r}>", "duplicate node id")
        seen.add(n.id)
    seen_links: set[str] = set()
    for lk in links:
        where = f"<{lk.tag} id={lk.id!r}>"
        if lk.id in seen_links:
            raise NetworkFileError(path, where, "duplicate connection id")
        seen_links.add(lk.id)
        for end in (lk.from_id, lk.to_id):
            if end not in seen:
                raise NetworkFileError(path, where, f"unknown node {end!r}")
        if lk.from_id == lk.to_id:
            raise NetworkFileError(path, where, "connects a node to itself")


# -- reading a nomination -----------------------------------------------------------------------
def _nominated_flow(path: Path, elem: ET.Element) -> float:
    """One node's flow in 1000 m3/h: the "both" bound, else the midpoint of lower and upper (or the
    one bound given). A nomination fixes a flow; ranges are not something a steady solve can use."""
    bounds: dict[str, float] = {}
    for c in elem:
        if _local(c.tag) != "flow":
            continue
        unit = (c.get("unit") or "").strip()
        if unit not in _FLOW:
            raise NetworkFileError(path, _where(elem), f"<flow>: unknown unit {unit!r}")
        bound = (c.get("bound") or "both").strip()
        if bound not in ("both", "lower", "upper"):
            raise NetworkFileError(path, _where(elem), f"<flow>: unknown bound {bound!r}")
        bounds[bound] = _number(path, _where(elem), c.get("value"), "<flow> value") * _FLOW[unit]
    if "both" in bounds:
        return bounds["both"]
    if "lower" in bounds and "upper" in bounds:
        return 0.5 * (bounds["lower"] + bounds["upper"])
    if bounds:
        return next(iter(bounds.values()))
    raise NetworkFileError(path, _where(elem), "node has no <flow>")


def _read_nomination(path: Path) -> dict[str, tuple[str, float]]:
    """node id -> (type "entry"|"exit", flow in 1000 m3/h as written). First scenario only."""
    root = _parse_xml(path)
    if _local(root.tag) != "boundaryValue":
        raise NetworkFileError(path, f"<{_local(root.tag)}>", "root element is not <boundaryValue>")
    scenario = _child(root, "scenario")
    if scenario is None:
        raise NetworkFileError(path, "<boundaryValue>", "missing <scenario>")
    out: dict[str, tuple[str, float]] = {}
    for e in scenario:
        if _local(e.tag) != "node":
            continue
        node_id = _attr(path, e, "id")
        kind = _attr(path, e, "type")
        if kind not in ("entry", "exit"):
            raise NetworkFileError(path, _where(e), f"unknown node type {kind!r}")
        if node_id in out:
            raise NetworkFileError(path, _where(e), "node nominated twice")
        out[node_id] = (kind, _nominated_flow(path, e))
    return out


def read_scenario(path) -> dict[str, float]:
    """Nominated flow per entry/exit of a GasLib ``.scn``, in **1000 m3/h at normal conditions**
    (0 degC, 1.01325 bar), signed as a withdrawal like ``Demands``: exits positive, entries negative.

    The unit stays volumetric because the mass conversion needs the gas's normDensity, which lives in
    the network file; ``read_gaslib`` does that conversion. Only the first <scenario> is read.
    """
    path = Path(path)
    return {nid: (v if kind == "exit" else -v) for nid, (kind, v) in _read_nomination(path).items()}


def pressure_bounds(net_path) -> dict[str, tuple[float, float]]:
    """Per-node (pressureMin, pressureMax) in absolute Pa. The model has no field for them, and
    state estimation and what-if checks need them, so they come straight from the file."""
    net = _read_net(Path(net_path))
    return {n.id: (n.pressure_min_pa, n.pressure_max_pa) for n in net.nodes}


# -- building the model -------------------------------------------------------------------------
def _gas_properties(net: _Net, friction: str, viscosity: float,
                    compressibility: Compressibility | None) -> GasProperties:
    """Average each property over the entries that state it (GasModels.jl does the same); entries of
    one GasLib network normally carry identical gas, so the mean is the gas itself."""
    def mean(key, default):
        vals = [n.gas[key] for n in net.nodes if key in n.gas]
        return float(np.mean(vals)) if vals else default

    base = GasProperties()
    z = compressibility or Compressibility(
        model="papay",
        pseudocritical_pressure_pa=mean("pseudocritical_pressure_pa",
                                        Compressibility().pseudocritical_pressure_pa),
        pseudocritical_temperature_k=mean("pseudocritical_temperature_k",
                                          Compressibility().pseudocritical_temperature_k))
    return GasProperties(
        normal_density_kg_m3=mean("normal_density_kg_m3", base.normal_density_kg_m3),
        temperature_k=mean("temperature_k", base.temperature_k),
        dynamic_viscosity_pa_s=viscosity,
        normal_pressure_pa=101325.0, normal_temperature_k=273.15,   # GasLib normal conditions
        compressibility=z, friction=friction,
        calorific_value_j_m3=mean("calorific_value_j_m3", base.calorific_value_j_m3),
        molar_mass_kg_kmol=mean("molar_mass_kg_kmol", base.molar_mass_kg_kmol))


def _per_link(value, link_id: str):
    """A setpoint keyword may be one number for all such links or a mapping by link id."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get(link_id)
    return None if value is None else float(value)


def _check_mapping_ids(value, ids: set[str], keyword: str) -> None:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - ids)
        if unknown:
            raise ValueError(f"{keyword}: no such link(s) {unknown}")


def _choose_slack(net: _Net, nomination: dict[str, tuple[str, float]] | None,
                  slack: str | None, path: Path) -> _Node:
    """The entry that holds pressure: the caller's, else the largest nominated inflow, else (no
    scenario) the largest flowMax. Ties go to the first entry in file order."""
    entries = [n for n in net.nodes if n.tag == "source"]
    if slack is not None:
        for n in entries:
            if n.id == slack:
                return n
        raise ValueError(f"slack={slack!r} is not a source (entry) node of {path}")
    if not entries:
        raise NetworkFileError(path, "<framework:nodes>", "no <source> node to hold pressure")
    if nomination is not None:
        return max(entries, key=lambda n: nomination.get(n.id, ("entry", 0.0))[1])
    return max(entries, key=lambda n: n.flow_max)


def _link_settings(net: _Net, bounds: dict[str, tuple[float, float]], compressor: str,
                   compressor_setpoint_pa, compressor_ratio, control_valve_setpoint_pa):
    """Kind, status and setting of each link, with the documented setpoint defaults."""
    kinds, status, settings = [], [], []
    for lk in net.links:
        kind, stat, setting = _LINK_KINDS[lk.tag], LinkStatus.OPEN, math.nan
        p_max_from, p_max_to = bounds[lk.from_id][1], bounds[lk.to_id][1]
        if lk.tag == "controlValve":
            stat = LinkStatus.ACTIVE
            setting = _per_link(control_valve_setpoint_pa, lk.id)
            if setting is None:
                caps = [p_max_to, p_max_from - lk.values["dp_min_pa"], lk.values["p_out_max_pa"]]
                setting = min(c for c in caps if c is not None)
        elif lk.tag == "compressorStation":
            stat = LinkStatus.ACTIVE
            outlet = _per_link(compressor_setpoint_pa, lk.id)
            if outlet is None:
                caps = [lk.values["p_out_max_pa"], p_max_to]
                outlet = min(c for c in caps if c is not None)
            if compressor == "outlet":
                setting = outlet
            else:
                kind = LinkKind.COMPRESSOR_RATIO
                ratio = _per_link(compressor_ratio, lk.id)
                setting = ratio if ratio is not None else max(1.0, outlet / p_max_from)
        elif lk.tag == "resistor":
            setting = lk.values["drag_factor"]
        kinds.append(kind)
        status.append(stat)
        settings.append(setting)
    return kinds, status, settings


def _demands(net: _Net, nomination, slack: _Node, index: dict[str, int], path: Path,
             density: float):
    """Demands in kg/s from the nomination: exits withdraw, entries inject, the slack is left out."""
    node_rows, base = [], []
    roles = {n.id: n.tag for n in net.nodes}
    for nid, (kind, flow) in (nomination or {}).items():
        where = f"<node id={nid!r}>"
        if nid not in roles:
            raise NetworkFileError(path, where, "node is not in the network")
        expected = {"entry": "source", "exit": "sink"}[kind]
        if roles[nid] != expected:
            raise NetworkFileError(path, where, f"nominated as {kind} but is a <{roles[nid]}>")
        if nid == slack.id:
            continue
        kg_s = 1000.0 * flow / 3600.0 * density
        node_rows.append(index[nid])
        base.append(kg_s if kind == "exit" else -kg_s)
    return make_demands(node_rows, base)


def read_gaslib(net_path, scenario_path=None, *, slack: str | None = None,
                slack_pressure_pa: float | None = None, compressor: str = "outlet",
                compressor_setpoint_pa: float | Mapping[str, float] | None = None,
                compressor_ratio: float | Mapping[str, float] | None = None,
                control_valve_setpoint_pa: float | Mapping[str, float] | None = None,
                friction: str = "nikuradse", dynamic_viscosity_pa_s: float = DEFAULT_VISCOSITY_PA_S,
                compressibility: Compressibility | None = None) -> NetworkModel:
    """Read a GasLib ``.net`` (and optionally one ``.scn`` nomination) into a gas ``NetworkModel``.

    Defaults, each overridable by its keyword:

    - ``slack``: the entry with the largest nominated inflow (largest flowMax without a scenario);
      its pressure ``slack_pressure_pa`` defaults to that node's pressureMax, the most a supplier
      delivers, which leaves the network the most head to meet exit minimums.
    - ``control_valve_setpoint_pa``: min(pressureMax of the to-node, pressureMax of the from-node
      minus pressureDifferentialMin, the valve's pressureOutMax): the highest outlet pressure the
      valve may hold without breaking a bound.
    - compressors: ``compressor="outlet"`` holds ``compressor_setpoint_pa``, by default
      min(pressureOutMax, pressureMax of the to-node); ``compressor="ratio"`` uses
      ``compressor_ratio``, by default that outlet setpoint over the from-node's pressureMax, at
      least 1 (no compression when the bounds are equal: pick a ratio for a real study).
    - ``friction="nikuradse"``, Papay compressibility from the entries' pseudocritical data (how
      GasLib's validation models pipes and Z), viscosity 1e-5 Pa s (GasLib lists none).

    Setpoint keywords take one number for every such link or a mapping by link id. Without a
    scenario there are no demands. Raises ``NetworkFileError`` for any fault in either file.

    >>> import pathlib, tempfile
    >>> net = pathlib.Path(tempfile.mkdtemp()) / "two.net"
    >>> _ = net.write_text('''<network xmlns="http://gaslib.zib.de/Gas"
    ...   xmlns:framework="http://gaslib.zib.de/Framework"><framework:nodes>
    ...  <source id="in" x="0" y="0"><height unit="m" value="0"/>
    ...   <pressureMin unit="bar" value="40"/><pressureMax unit="bar" value="70"/></source>
    ...  <sink id="out" x="1" y="0"><height unit="m" value="0"/>
    ...   <pressureMin unit="bar" value="30"/><pressureMax unit="bar" value="70"/></sink>
    ... </framework:nodes><framework:connections>
    ...  <pipe id="p" from="in" to="out"><length unit="km" value="12.5"/>
    ...   <diameter unit="mm" value="600"/><roughness unit="m" value="1e-05"/></pipe>
    ... </framework:connections></network>''')
    >>> m = read_gaslib(net)
    >>> float(m.links.length_m[0]), float(m.links.diameter_m[0]), float(m.nodes.fixed_pressure_pa[0])
    (12500.0, 0.6, 7000000.0)
    >>> read_gaslib(net, slack="out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: slack='out' is not a source (entry) node of ...
    """
    if compressor not in ("outlet", "ratio"):
        raise ValueError(f"compressor must be 'outlet' or 'ratio', got {compressor!r}")
    path = Path(net_path)
    net = _read_net(path)
    scn_path = Path(scenario_path) if scenario_path is not None else None
    nomination = _read_nomination(scn_path) if scn_path is not None else None
    link_ids = {lk.id for lk in net.links}
    for value, keyword in ((compressor_setpoint_pa, "compressor_setpoint_pa"),
                           (compressor_ratio, "compressor_ratio"),
                           (control_valve_setpoint_pa, "control_valve_setpoint_pa")):
        _check_mapping_ids(value, link_ids, keyword)

    slack_node = _choose_slack(net, nomination, slack, path)
    index = {n.id: i for i, n in enumerate(net.nodes)}
    bounds = {n.id: (n.pressure_min_pa, n.pressure_max_pa) for n in net.nodes}
    node_kind = [NodeKind.SOURCE if n.id == slack_node.id
                 else NodeKind.CONSUMER if n.tag == "sink" else NodeKind.JUNCTION for n in net.nodes]
    fixed = np.full(len(net.nodes), np.nan)
    fixed[index[slack_node.id]] = (slack_node.pressure_max_pa if slack_pressure_pa is None
                                   else float(slack_pressure_pa))
    nodes = make_nodes([n.id for n in net.nodes], node_kind, x=[n.x for n in net.nodes],
                       y=[n.y for n in net.nodes], elevation_m=[n.height_m for n in net.nodes],
                       fixed_pressure_pa=fixed)

    kinds, status, settings = _link_settings(net, bounds, compressor, compressor_setpoint_pa,
                                             compressor_ratio, control_valve_setpoint_pa)
    links = make_links([lk.id for lk in net.links], kinds,
                       [index[lk.from_id] for lk in net.links], [index[lk.to_id] for lk in net.links],
                       length_m=[lk.values.get("length_m", 0.0) for lk in net.links],
                       diameter_m=[lk.values.get("diameter_m", 0.0) for lk in net.links],
                       roughness=[lk.values.get("roughness_m", 0.0) for lk in net.links],
                       status=status, setting=settings)

    gas = _gas_properties(net, friction, dynamic_viscosity_pa_s, compressibility)
    demands = _demands(net, nomination, slack_node, index, scn_path or path,
                       gas.normal_density_kg_m3)
    return NetworkModel(name=net.title, medium=Medium.NATURAL_GAS, nodes=nodes, links=links,
                        demands=demands, tanks=make_tanks(), gas=gas, source_file=str(path))


# -- writing ------------------------------------------------------------------------------------
_WRITE_TAGS = {LinkKind.PIPE: "pipe", LinkKind.SHORT_PIPE: "shortPipe", LinkKind.VALVE: "valve",
               LinkKind.PRV: "controlValve", LinkKind.COMPRESSOR_OUTLET: "compressorStation",
               LinkKind.COMPRESSOR_RATIO: "compressorStation", LinkKind.RESISTOR: "resistor"}


def _g(name: str) -> str:
    return f"{{{GAS_NS}}}{name}"


def _f(name: str) -> str:
    return f"{{{FRAMEWORK_NS}}}{name}"


def _quantity(parent: ET.Element, name: str, value: float, unit: str | None) -> None:
    attrs = {"unit": unit, "value": repr(float(value))} if unit else {"value": repr(float(value))}
    ET.SubElement(parent, _g(name), attrs)


def _node_roles(model: NetworkModel, entries: Iterable[str] | None) -> list[str]:
    """GasLib tag per node. The model keeps no 'was an entry' flag, so entries are the SOURCE nodes
    plus any junction that injects (negative base demand), unless the caller lists them."""
    if any(k == NodeKind.TANK for k in model.nodes.kind):
        raise ValueError("GasLib has no storage tanks")
    base = model.base_demand()
    entry_ids = set(entries) if entries is not None else set()
    roles = []
    for i, nid in enumerate(model.nodes.ids):
        kind = model.nodes.kind[i]
        if kind == NodeKind.SOURCE or nid in entry_ids or (entries is None and base[i] < 0):
            roles.append("source")
        elif kind == NodeKind.CONSUMER:
            roles.append("sink")
        else:
            roles.append("innode")
    return roles


def _default_pressure_top_pa(model: NetworkModel) -> float:
    """pressureMax written where none is known: the highest pressure the model itself imposes, so
    setpoint defaults on re-reading reproduce the model's setpoints."""
    pressure_kinds = (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET)
    held = [p for p in model.nodes.fixed_pressure_pa if np.isfinite(p)]
    held += [s for k, s in zip(model.links.kind, model.links.setting)
             if k in pressure_kinds and np.isfinite(s)]
    return max(held) if held else _DEFAULT_PRESSURE_MAX_BAR * BAR_PA


def _write_nodes(model: NetworkModel, parent: ET.Element, roles: list[str],
                 bounds: Mapping[str, tuple[float, float]], top_pa: float) -> None:
    gas, z = model.gas, model.gas.compressibility
    n = model.nodes
    for i, nid in enumerate(n.ids):
        el = ET.SubElement(parent, _g(roles[i]), {"id": str(nid), "x": repr(float(n.x[i])),
                                                  "y": repr(float(n.y[i]))})
        p_min, p_max = bounds.get(nid, (ATMOSPHERE_BAR * BAR_PA, top_pa))
        if nid not in bounds and np.isfinite(n.fixed_pressure_pa[i]):
            p_max = float(n.fixed_pressure_pa[i])
        _quantity(el, "height", n.elevation_m[i], "m")
        _quantity(el, "pressureMin", p_min / BAR_PA, "bar")
        _quantity(el, "pressureMax", p_max / BAR_PA, "bar")
        if roles[i] == "innode":
            continue
        _quantity(el, "flowMin", 0.0, "1000m_cube_per_hour")
        _quantity(el, "flowMax", _UNBOUNDED_FLOW, "1000m_cube_per_hour")
        if roles[i] == "source":
            _quantity(el, "gasTemperature", gas.temperature_k, "K")
            _quantity(el, "calorificValue", gas.calorific_value_j_m3 / 1e6, "MJ_per_m_cube")
            _quantity(el, "normDensity", gas.normal_density_kg_m3, "kg_per_m_cube")
            _quantity(el, "molarMass", gas.molar_mass_kg_kmol, "kg_per_kmol")
            _quantity(el, "pseudocriticalPressure", z.pseudocritical_pressure_pa / BAR_PA, "bar")
            _quantity(el, "pseudocriticalTemperature", z.pseudocritical_temperature_k, "K")


def _write_links(model: NetworkModel, parent: ET.Element, top_pa: float) -> None:
    lk, ids = model.links, model.nodes.ids
    for j, lid in enumerate(lk.ids):
        kind = LinkKind(int(lk.kind[j]))
        if kind not in _WRITE_TAGS:
            raise ValueError(f"link {lid!r}: GasLib has no element for {kind.name}")
        tag = _WRITE_TAGS[kind]
        attrs = {"id": str(lid), "from": str(ids[lk.from_node[j]]), "to": str(ids[lk.to_node[j]])}
        if tag == "compressorStation":
            attrs.update(fuelGasVertex=attrs["from"], gasCoolerExisting="0",
                         internalBypassRequired="0")
        if tag == "controlValve":
            attrs.update(gasPreheaterExisting="0", internalBypassRequired="0")
        el = ET.SubElement(parent, _g(tag), attrs)
        _quantity(el, "flowMin", 0.0 if tag == "compressorStation" else -_UNBOUNDED_FLOW,
                  "1000m_cube_per_hour")
        _quantity(el, "flowMax", _UNBOUNDED_FLOW, "1000m_cube_per_hour")
        setting = float(lk.setting[j])
        p_out = setting if kind in (LinkKind.PRV, LinkKind.COMPRESSOR_OUTLET) and \
            np.isfinite(setting) else top_pa
        if tag == "pipe":
            _quantity(el, "length", lk.length_m[j] / 1e3, "km")
            _quantity(el, "diameter", lk.diameter_m[j] * 1e3, "mm")
            _quantity(el, "roughness", lk.roughness[j], "m")
        elif tag == "resistor":
            _quantity(el, "dragFactor", setting if np.isfinite(setting) else 0.0, None)
            _quantity(el, "diameter", lk.diameter_m[j] * 1e3, "mm")
        elif tag == "valve":
            _quantity(el, "pressureDifferentialMax", top_pa / BAR_PA, "bar")
        elif tag == "controlValve":
            _quantity(el, "pressureDifferentialMin", 0.0, "bar")
            _quantity(el, "pressureDifferentialMax", top_pa / BAR_PA, "bar")
            _quantity(el, "pressureInMin", ATMOSPHERE_BAR, "bar")
            _quantity(el, "pressureOutMax", p_out / BAR_PA, "bar")
            _quantity(el, "pressureLossIn", 0.0, "bar")
            _quantity(el, "pressureLossOut", 0.0, "bar")
        elif tag == "compressorStation":
            _quantity(el, "pressureLossIn", 0.0, "bar")
            _quantity(el, "pressureLossOut", 0.0, "bar")
            _quantity(el, "pressureInMin", ATMOSPHERE_BAR, "bar")
            _quantity(el, "pressureOutMax", p_out / BAR_PA, "bar")


def write_gaslib(model: NetworkModel, path, *,
                 pressure_bounds: Mapping[str, tuple[float, float]] | None = None,
                 entries: Iterable[str] | None = None) -> None:
    """Write ``model`` as a GasLib ``.net`` that ``read_gaslib`` reads back to the same ids, kinds,
    geometry, coordinates and heights (the scenario is not written).

    The model lacks some GasLib facts, so the writer fills them: node pressure bounds come from
    ``pressure_bounds`` (absolute Pa, as ``pressure_bounds()`` returns) or else 1.01325 bar up to
    the highest pressure the model holds (a source's pressureMax is its fixed pressure); a control
    valve's or outlet compressor's setting becomes its pressureOutMax; flow bounds are GasLib's
    unbounded placeholders (+/-10000 x 1000 m3/h); entries are ``entries`` or SOURCE nodes plus
    injecting junctions. Heat-capacity coefficients and valve open/closed states are not written.
    """
    if not model.is_gas:
        raise ValueError("write_gaslib writes gas networks only")
    bounds = dict(pressure_bounds or {})
    top_pa = _default_pressure_top_pa(model)
    for namespace, prefix in ((GAS_NS, ""), (FRAMEWORK_NS, "framework"), (XSI_NS, "xsi")):
        ET.register_namespace(prefix, namespace)
    root = ET.Element(_g("network"), {
        f"{{{XSI_NS}}}schemaLocation": f"{GAS_NS} http://gaslib.zib.de/schema/Gas.xsd"})
    info = ET.SubElement(root, _f("information"))
    for name, text in (("title", model.name), ("type", "gas"),
                       ("documentation", "written by pipetwin.twin.io.gaslib")):
        ET.SubElement(info, _f(name)).text = text
    _write_nodes(model, ET.SubElement(root, _f("nodes")), _node_roles(model, entries), bounds,
                 top_pa)
    _write_links(model, ET.SubElement(root, _f("connections")), top_pa)
    ET.indent(root, space="  ")
    ET.ElementTree(root).write(Path(path), encoding="UTF-8", xml_declaration=True)
