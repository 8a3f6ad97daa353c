"""GeoJSON: nodes as Points, links as LineStrings (with their interior vertices), every feature
carrying its id, kind and SI attributes, so a GIS or a web map can draw the network, and a GIS
export can come back in. The medium's constants ride in a top-level ``pipetwin`` member; a file
without it (a plain GIS export) takes them from the caller."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipetwin.twin.io.tabular import medium_from_meta, medium_meta
from pipetwin.twin.model import (LinkKind, LinkStatus, Medium, NetworkFileError, NetworkModel, NodeKind,
                                 make_demands, make_links, make_nodes, make_tanks)


def _num(v: float):
    v = float(v)
    return None if math.isnan(v) else v


def to_geojson(model: NetworkModel) -> dict:
    """The model as a GeoJSON FeatureCollection (coordinates in the model's own CRS)."""
    nodes, links = model.nodes, model.links
    demand = model.base_demand()
    features = []
    for i in range(len(nodes)):
        features.append({
            "type": "Feature", "id": str(nodes.ids[i]),
            "geometry": {"type": "Point", "coordinates": [float(nodes.x[i]), float(nodes.y[i])]},
            "properties": {"element": "node", "id": str(nodes.ids[i]),
                           "kind": NodeKind(nodes.kind[i]).name.lower(),
                           "elevation_m": float(nodes.elevation_m[i]), "demand": float(demand[i]),
                           "fixed_pressure_pa": _num(nodes.fixed_pressure_pa[i]),
                           "fixed_head_m": _num(nodes.fixed_head_m[i])}})
    for k in range(len(links)):
        a, b = links.from_node[k], links.to_node[k]
        coords = [[float(nodes.x[a]), float(nodes.y[a])]]
        coords += [[float(x), float(y)] for x, y in model.vertices.get(str(links.ids[k]), [])]
        coords.append([float(nodes.x[b]), float(nodes.y[b])])
        features.append({
            "type": "Feature", "id": str(links.ids[k]),
            "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {"element": "link", "id": str(links.ids[k]),
                           "kind": LinkKind(links.kind[k]).name.lower(),
                           "from": str(nodes.ids[a]), "to": str(nodes.ids[b]),
                           "length_m": float(links.length_m[k]), "diameter_m": float(links.diameter_m[k]),
                           "roughness": float(links.roughness[k]), "status": int(links.status[k]),
                           "setting": _num(links.setting[k])}})
    out = {"type": "FeatureCollection", "name": model.name, "pipetwin": medium_meta(model),
           "features": features}
    if model.crs:
        out["crs"] = {"type": "name", "properties": {"name": model.crs}}
    return out


def write_geojson(model: NetworkModel, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_geojson(model)), encoding="utf-8")


LINK_KINDS = {k.name.lower(): k for k in LinkKind}
NODE_KINDS = {k.name.lower(): k for k in NodeKind}


def _prop_num(path, where, props, key, default=math.nan, positive=False):
    v = props.get(key, default)
    if v is None:
        v = default
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise NetworkFileError(path, where, f"{key}={v!r} is not a number") from None
    if positive and not v > 0:
        raise NetworkFileError(path, where, f"{key}={v} must be > 0")
    return v


def read_geojson(path: str | Path, *, medium: str = "natural_gas", snap_m: float = 0.01) -> NetworkModel:
    """Read a network from GeoJSON. Points are nodes (``id``, ``kind``, ``elevation_m``,
    ``demand``, ``fixed_pressure_pa``/``fixed_head_m``); LineStrings are links (``id``, ``kind``,
    ``from``, ``to``, ``length_m``, ``diameter_m``, ``roughness``, ``status``, ``setting``).
    A link without ``from``/``to`` is joined to the nodes within ``snap_m`` of its ends, and a
    missing length is the line's own length (coordinates in metres). ``medium`` applies when the
    file has no ``pipetwin`` member."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NetworkFileError(path, None, f"cannot open: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NetworkFileError(path, getattr(exc, "lineno", None), f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(
            doc.get("features"), list):
        raise NetworkFileError(path, None, "expected a GeoJSON FeatureCollection")
    meta = doc.get("pipetwin") if isinstance(doc.get("pipetwin"), dict) else {"medium": medium}
    try:
        med, gas, water = medium_from_meta(meta, path)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, NetworkFileError):
            raise
        raise NetworkFileError(path, "pipetwin", f"bad medium constants: {exc}") from None
    points, lines = [], []
    for n, f in enumerate(doc["features"]):
        geom = f.get("geometry") if isinstance(f, dict) else None
        gtype = geom.get("type") if isinstance(geom, dict) else None
        props = f.get("properties") or {} if isinstance(f, dict) else {}
        if not isinstance(props, dict):
            raise NetworkFileError(path, f"feature {n}", "properties must be an object")
        fid = str(props.get("id", f.get("id", f"feature{n}")))
        coords = geom.get("coordinates") if isinstance(geom, dict) else None
        where = f"feature {n} ({fid})"
        try:
            if gtype == "Point":
                xy = (float(coords[0]), float(coords[1]))
                points.append((where, fid, xy, props))
            elif gtype == "LineString":
                xy = [(float(c[0]), float(c[1])) for c in coords]
                if len(xy) < 2:
                    raise ValueError("fewer than two points")
                lines.append((where, fid, xy, props))
            else:
                raise NetworkFileError(path, where, f"geometry {gtype!r}: expected Point or LineString")
        except (TypeError, ValueError, IndexError) as exc:
            raise NetworkFileError(path, where, f"bad coordinates: {exc}") from None

    index: dict[str, int] = {}
    ids, kinds, xs, ys, zs, fixed_p, fixed_h, d_node, d_base = [], [], [], [], [], [], [], [], []
    for where, fid, (x, y), props in points:
        if fid in index:
            raise NetworkFileError(path, where, f"duplicate node id {fid!r}")
        kind = NODE_KINDS.get(str(props.get("kind", "junction")).lower())
        if kind is None:
            raise NetworkFileError(path, where, f"unknown node kind {props.get('kind')!r}")
        index[fid] = len(ids)
        ids.append(fid)
        kinds.append(kind)
        xs.append(x)
        ys.append(y)
        zs.append(_prop_num(path, where, props, "elevation_m", 0.0))
        fixed_p.append(_prop_num(path, where, props, "fixed_pressure_pa"))
        fixed_h.append(_prop_num(path, where, props, "fixed_head_m"))
        demand = _prop_num(path, where, props, "demand", 0.0)
        if demand != 0.0 and kind != NodeKind.SOURCE:
            d_node.append(index[fid])
            d_base.append(demand)
        if kind == NodeKind.SOURCE and med == Medium.NATURAL_GAS and not fixed_p[-1] > 0:
            raise NetworkFileError(path, where, f"source {fid!r} needs fixed_pressure_pa > 0")
    if not ids:
        raise NetworkFileError(path, None, "no Point features (nodes)")
    xy_nodes = np.column_stack([xs, ys])

    def snap(where, point):
        d = np.hypot(xy_nodes[:, 0] - point[0], xy_nodes[:, 1] - point[1])
        i = int(np.argmin(d))
        if d[i] > snap_m:
            raise NetworkFileError(path, where, f"no node within {snap_m} m of the line's end {point}")
        return i

    cols: dict[str, list] = {k: [] for k in ("ids", "kind", "fr", "to", "len", "d", "k", "status", "setting")}
    vertices = {}
    seen: set[str] = set()
    for where, fid, xy, props in lines:
        if fid in seen:
            raise NetworkFileError(path, where, f"duplicate link id {fid!r}")
        seen.add(fid)
        kind = LINK_KINDS.get(str(props.get("kind", "pipe")).lower())
        if kind is None:
            raise NetworkFileError(path, where, f"unknown link kind {props.get('kind')!r}")
        a = index.get(str(props["from"])) if "from" in props else snap(where, xy[0])
        b = index.get(str(props["to"])) if "to" in props else snap(where, xy[-1])
        if a is None or b is None:
            missing = props.get("from") if a is None else props.get("to")
            raise NetworkFileError(path, where, f"unknown node {missing!r}")
        if a == b:
            raise NetworkFileError(path, where, "link joins a node to itself")
        geometric = float(np.sum(np.hypot(np.diff([p[0] for p in xy]), np.diff([p[1] for p in xy]))))
        is_pipe = kind == LinkKind.PIPE
        cols["ids"].append(fid)
        cols["kind"].append(kind)
        cols["fr"].append(a)
        cols["to"].append(b)
        cols["len"].append(_prop_num(path, where, props, "length_m", geometric, positive=is_pipe))
        cols["d"].append(_prop_num(path, where, props, "diameter_m", 0.0, positive=is_pipe))
        cols["k"].append(_prop_num(path, where, props, "roughness", 1e-4 if med == Medium.NATURAL_GAS else 100.0))
        status = props.get("status", int(LinkStatus.OPEN))
        if isinstance(status, str):
            status = LinkStatus[status.upper()] if status.upper() in LinkStatus.__members__ else None
        if status not in tuple(int(s) for s in LinkStatus):
            raise NetworkFileError(path, where, f"unknown status {props.get('status')!r}")
        cols["status"].append(int(status))
        cols["setting"].append(_prop_num(path, where, props, "setting"))
        if len(xy) > 2:
            vertices[fid] = np.array(xy[1:-1])
    nodes = make_nodes(ids, kinds, xs, ys, zs, fixed_pressure_pa=fixed_p, fixed_head_m=fixed_h)
    links = make_links(cols["ids"], cols["kind"], cols["fr"], cols["to"], cols["len"], cols["d"], cols["k"],
                       status=cols["status"], setting=cols["setting"])
    crs = doc.get("crs", {}).get("properties", {}).get("name", "") if isinstance(doc.get("crs"), dict) else ""
    return NetworkModel(name=str(doc.get("name", path.stem)), medium=med, nodes=nodes, links=links,
                        demands=make_demands(d_node, d_base), tanks=make_tanks(), gas=gas, water=water,
                        vertices=vertices, crs=crs, source_file=str(path))
