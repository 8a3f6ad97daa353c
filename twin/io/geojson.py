"""GeoJSON export: nodes as Points, links as LineStrings (with their interior vertices), every
feature carrying its id, kind and SI attributes, so a GIS or a web map can draw the network."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipetwin.twin.model import LinkKind, NetworkModel, NodeKind


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
    out = {"type": "FeatureCollection", "name": model.name, "features": features}
    if model.crs:
        out["crs"] = {"type": "name", "properties": {"name": model.crs}}
    return out


def write_geojson(model: NetworkModel, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_geojson(model)), encoding="utf-8")
