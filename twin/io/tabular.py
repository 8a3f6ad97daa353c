"""The tabular network form (``network.json`` + ``nodes.csv`` + ``pipes.csv`` [+ ``valves.csv``]):
the shape every GIS export can target. Values are SI already (see shared/benchmarks/FORMAT.md)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from pipetwin.twin.model import (Compressibility, GasProperties, LinkKind, LinkStatus, Medium,
                                 NetworkFileError, NetworkModel, NodeKind, WaterProperties,
                                 make_demands, make_links, make_nodes, make_tanks)

NODE_COLUMNS = ["id", "kind", "x", "y", "elevation_m", "demand", "fixed_pressure_pa"]
PIPE_COLUMNS = ["id", "from", "to", "length_m", "diameter_m", "roughness_m"]
VALVE_COLUMNS = ["id", "from", "to", "kind", "status", "setpoint_pa"]
NODE_KINDS = {"junction": NodeKind.JUNCTION, "source": NodeKind.SOURCE, "consumer": NodeKind.CONSUMER}
VALVE_KINDS = {"isolation": LinkKind.VALVE, "regulator": LinkKind.PRV}
STATUSES = {"open": LinkStatus.OPEN, "closed": LinkStatus.CLOSED, "active": LinkStatus.ACTIVE}


def _rows(path: Path, columns: list[str]):
    """Yield (line number, row dict) of a CSV file whose header must hold ``columns``."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise NetworkFileError(path, None, f"cannot open: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise NetworkFileError(path, 1, "empty file, expected a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise NetworkFileError(path, 1, f"unreadable CSV: {exc}") from None
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise NetworkFileError(path, 1, f"missing column(s) {missing}; header is {header}")
        col = {c: header.index(c) for c in header}
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise NetworkFileError(path, line, f"{len(row)} fields, header has {len(header)}")
                yield line, {c: row[i].strip() for c, i in col.items()}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise NetworkFileError(path, line + 1, f"unreadable CSV: {exc}") from None


def _num(path, line, row, name, *, optional=False, positive=False, nonneg=False) -> float:
    text = row[name]
    if text == "":
        if optional:
            return math.nan
        raise NetworkFileError(path, line, f"{name} is empty (id {row.get('id')!r})")
    try:
        v = float(text)
    except ValueError:
        raise NetworkFileError(path, line, f"{name}={text!r} is not a number (id {row.get('id')!r})") from None
    if not math.isfinite(v):
        raise NetworkFileError(path, line, f"{name}={text!r} is not finite (id {row.get('id')!r})")
    if positive and v <= 0:
        raise NetworkFileError(path, line, f"{name}={text} must be > 0 (id {row.get('id')!r})")
    if nonneg and v < 0:
        raise NetworkFileError(path, line, f"{name}={text} must be >= 0 (id {row.get('id')!r})")
    return v


def medium_from_meta(meta: dict, path: Path) -> tuple[Medium, GasProperties, WaterProperties]:
    """The medium and its constants from a ``network.json``-shaped dict."""
    name = meta.get("medium")
    if name == "natural_gas":
        gas = GasProperties()
        for key in ("normal_density_kg_m3", "temperature_k", "dynamic_viscosity_pa_s", "gravity_m_s2"):
            if key in meta:
                setattr(gas, key, float(meta[key]))
        normal = meta.get("normal_conditions", {})
        gas.normal_pressure_pa = float(normal.get("pressure_pa", gas.normal_pressure_pa))
        gas.normal_temperature_k = float(normal.get("temperature_k", gas.normal_temperature_k))
        comp = meta.get("compressibility", {"model": "constant", "z": 1.0})
        model = comp.get("model")
        if model == "linear":
            gas.compressibility = Compressibility("linear", offset=float(comp.get("offset", 1.0)),
                                                  slope_per_pa=float(comp["slope_per_pa"]))
        elif model == "constant":
            gas.compressibility = Compressibility("constant", z=float(comp.get("z", 1.0)))
        elif model == "papay":
            gas.compressibility = Compressibility(
                "papay", pseudocritical_pressure_pa=float(comp["pseudocritical_pressure_pa"]),
                pseudocritical_temperature_k=float(comp["pseudocritical_temperature_k"]))
        else:
            raise NetworkFileError(path, "compressibility", f"unknown model {model!r}")
        gas.friction = meta.get("friction", "colebrook")
        return Medium.NATURAL_GAS, gas, WaterProperties()
    if name == "water":
        water = WaterProperties(headloss=meta.get("headloss", "H-W"))
        return Medium.WATER, GasProperties(), water
    raise NetworkFileError(path, "medium", f"unknown medium {name!r} (natural_gas or water)")


def read_tabular(folder: str | Path) -> NetworkModel:
    """Read a network in the tabular form from ``folder``."""
    folder = Path(folder)
    meta_path = folder / "network.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NetworkFileError(meta_path, None, f"cannot open: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NetworkFileError(meta_path, getattr(exc, "lineno", None), f"invalid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise NetworkFileError(meta_path, None, "expected a JSON object")
    try:
        medium, gas, water = medium_from_meta(meta, meta_path)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, NetworkFileError):
            raise
        raise NetworkFileError(meta_path, None, f"bad medium constants: {exc}") from None
    is_gas = medium == Medium.NATURAL_GAS

    ids, kinds, xs, ys, zs, fixed = [], [], [], [], [], []
    d_node, d_base = [], []
    index: dict[str, int] = {}
    npath = folder / "nodes.csv"
    for line, r in _rows(npath, NODE_COLUMNS):
        nid = r["id"]
        if not nid:
            raise NetworkFileError(npath, line, "empty id")
        if nid in index:
            raise NetworkFileError(npath, line, f"duplicate node id {nid!r}")
        kind = NODE_KINDS.get(r["kind"].lower())
        if kind is None:
            raise NetworkFileError(npath, line, f"unknown kind {r['kind']!r} for node {nid!r} "
                                                f"(one of {sorted(NODE_KINDS)})")
        x = _num(npath, line, r, "x", optional=True)
        y = _num(npath, line, r, "y", optional=True)
        z = _num(npath, line, r, "elevation_m", optional=True)
        demand = _num(npath, line, r, "demand", optional=True)
        p = _num(npath, line, r, "fixed_pressure_pa", optional=True)
        if kind == NodeKind.SOURCE:
            if math.isnan(p):
                raise NetworkFileError(npath, line, f"source {nid!r} has no fixed_pressure_pa")
            if p <= 0:
                raise NetworkFileError(npath, line, f"source {nid!r}: fixed_pressure_pa={p} must be > 0")
        index[nid] = len(ids)
        ids.append(nid)
        kinds.append(kind)
        xs.append(0.0 if math.isnan(x) else x)
        ys.append(0.0 if math.isnan(y) else y)
        zs.append(0.0 if math.isnan(z) else z)
        fixed.append(p if kind == NodeKind.SOURCE else math.nan)
        if not math.isnan(demand) and demand != 0.0 and kind != NodeKind.SOURCE:
            d_node.append(index[nid])
            d_base.append(demand)
    if not ids:
        raise NetworkFileError(npath, None, "no nodes")

    fixed_arr = np.array(fixed)
    nodes = make_nodes(ids, kinds, xs, ys, zs,
                       fixed_pressure_pa=fixed_arr if is_gas else None,
                       fixed_head_m=None if is_gas else np.where(np.isnan(fixed_arr), np.nan,
                                                                  fixed_arr / 9806.65 + np.array(zs)))

    l_ids, l_kind, l_from, l_to, l_len, l_d, l_k, l_status, l_set = [], [], [], [], [], [], [], [], []
    seen: set[str] = set()

    def endpoints(path, line, r, lid):
        if not lid:
            raise NetworkFileError(path, line, "empty id")
        if lid in seen:
            raise NetworkFileError(path, line, f"duplicate link id {lid!r}")
        seen.add(lid)
        a, b = index.get(r["from"]), index.get(r["to"])
        if a is None:
            raise NetworkFileError(path, line, f"link {lid!r}: unknown from node {r['from']!r}")
        if b is None:
            raise NetworkFileError(path, line, f"link {lid!r}: unknown to node {r['to']!r}")
        if a == b:
            raise NetworkFileError(path, line, f"link {lid!r} connects node {r['from']!r} to itself")
        return a, b

    ppath = folder / "pipes.csv"
    for line, r in _rows(ppath, PIPE_COLUMNS):
        a, b = endpoints(ppath, line, r, r["id"])
        l_ids.append(r["id"])
        l_kind.append(LinkKind.PIPE)
        l_from.append(a)
        l_to.append(b)
        l_len.append(_num(ppath, line, r, "length_m", positive=True))
        l_d.append(_num(ppath, line, r, "diameter_m", positive=True))
        l_k.append(_num(ppath, line, r, "roughness_m", nonneg=True))
        l_status.append(LinkStatus.OPEN)
        l_set.append(math.nan)
    vpath = folder / "valves.csv"
    if vpath.exists():
        for line, r in _rows(vpath, VALVE_COLUMNS):
            a, b = endpoints(vpath, line, r, r["id"])
            kind = VALVE_KINDS.get(r["kind"].lower())
            if kind is None:
                raise NetworkFileError(vpath, line, f"valve {r['id']!r}: unknown kind {r['kind']!r} "
                                                    f"(one of {sorted(VALVE_KINDS)})")
            status = STATUSES.get((r["status"] or "open").lower())
            if status is None:
                raise NetworkFileError(vpath, line, f"valve {r['id']!r}: unknown status {r['status']!r}")
            setpoint = _num(vpath, line, r, "setpoint_pa", optional=True)
            if kind == LinkKind.PRV:
                if math.isnan(setpoint) or setpoint <= 0:
                    raise NetworkFileError(vpath, line, f"regulator {r['id']!r} needs setpoint_pa > 0")
                if status == LinkStatus.OPEN:
                    status = LinkStatus.ACTIVE
            l_ids.append(r["id"])
            l_kind.append(kind)
            l_from.append(a)
            l_to.append(b)
            l_len.append(0.0)
            l_d.append(0.0)
            l_k.append(0.0)
            l_status.append(status)
            l_set.append(setpoint)
    links = make_links(l_ids, l_kind, l_from, l_to, l_len, l_d, l_k, status=l_status, setting=l_set)
    return NetworkModel(name=str(meta.get("name", folder.name)), medium=medium, nodes=nodes, links=links,
                        demands=make_demands(d_node, d_base), tanks=make_tanks(), gas=gas, water=water,
                        crs=str(meta.get("crs", "")), source_file=str(folder))


def _g(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def medium_meta(model: NetworkModel) -> dict:
    """The medium and its constants as ``network.json`` states them."""
    if not model.is_gas:
        return {"medium": "water", "headloss": model.water.headloss}
    g = model.gas
    c = g.compressibility
    comp = ({"model": "linear", "offset": c.offset, "slope_per_pa": c.slope_per_pa} if c.model == "linear"
            else {"model": "constant", "z": c.z} if c.model == "constant"
            else {"model": "papay", "pseudocritical_pressure_pa": c.pseudocritical_pressure_pa,
                  "pseudocritical_temperature_k": c.pseudocritical_temperature_k})
    meta = {"medium": "natural_gas", "normal_density_kg_m3": g.normal_density_kg_m3,
            "temperature_k": g.temperature_k, "dynamic_viscosity_pa_s": g.dynamic_viscosity_pa_s,
            "gravity_m_s2": g.gravity_m_s2,
            "normal_conditions": {"temperature_k": g.normal_temperature_k, "pressure_pa": g.normal_pressure_pa},
            "compressibility": comp, "friction": g.friction}
    return meta


def write_tabular(model: NetworkModel, folder: str | Path) -> None:
    """Write ``model`` in the tabular form. Pipes go to pipes.csv, isolation valves and
    regulators to valves.csv; other link kinds have no tabular form and are refused."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nodes, links = model.nodes, model.links
    is_gas = model.is_gas
    meta = {"name": model.name, **medium_meta(model)}
    if model.crs:
        meta["crs"] = model.crs
    (folder / "network.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    demand = model.base_demand()
    names = {v: k for k, v in NODE_KINDS.items()}
    with open(folder / "nodes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(NODE_COLUMNS)
        for i in range(len(nodes)):
            kind = NodeKind(nodes.kind[i])
            if kind == NodeKind.TANK:
                raise ValueError(f"node {nodes.ids[i]!r}: tanks have no tabular form")
            if is_gas:
                fixed = nodes.fixed_pressure_pa[i]
            else:
                fixed = (nodes.fixed_head_m[i] - nodes.elevation_m[i]) * 9806.65 if kind == NodeKind.SOURCE else math.nan
            w.writerow([nodes.ids[i], names[kind], _g(nodes.x[i]), _g(nodes.y[i]), _g(nodes.elevation_m[i]),
                        _g(demand[i]), _g(fixed) if kind == NodeKind.SOURCE else ""])
    valve_rows = []
    with open(folder / "pipes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(PIPE_COLUMNS)
        for k in range(len(links)):
            a, b = nodes.ids[links.from_node[k]], nodes.ids[links.to_node[k]]
            kind = LinkKind(links.kind[k])
            if kind == LinkKind.PIPE:
                w.writerow([links.ids[k], a, b, _g(links.length_m[k]), _g(links.diameter_m[k]),
                            _g(links.roughness[k])])
            elif kind in (LinkKind.VALVE, LinkKind.PRV):
                status = "closed" if links.status[k] == LinkStatus.CLOSED else "open"
                valve_rows.append([links.ids[k], a, b, "isolation" if kind == LinkKind.VALVE else "regulator",
                                   status, _g(links.setting[k]) if kind == LinkKind.PRV else ""])
            else:
                raise ValueError(f"link {links.ids[k]!r}: {kind.name} has no tabular form")
    if valve_rows:
        with open(folder / "valves.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(VALVE_COLUMNS)
            w.writerows(valve_rows)
