"""Figures of the wall, built from plain tables (pure functions: tables in, plotly figures out).

The network map is drawn once per page load; each new tick then sends only what changed (a
``dash.Patch``): the pipes of the colour classes whose membership moved, the node colours when they
changed at display resolution, the sensors and the contour field. Pipes are WebGL line traces, one
per colour class (a WebGL line has one colour), with ``None`` between segments, so a 10,000-pipe
network is a handful of traces.

Colours are colour-blind safe: cividis for pressure, viridis for velocity and flow, purple-orange
for residuals, and the Okabe-Ito palette for severities.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa
from dash import Patch
from plotly.colors import sample_colorscale

N_CLASSES = 8
SEVERITY_COLOURS = {"critical": "#D55E00", "major": "#E69F00", "warning": "#F0E442", "info": "#56B4E9"}
STATUS_COLOURS = {"open": "#D55E00", "acknowledged": "#E69F00", "cleared": "#009E73"}
UNSUPPLIED = "#6b6b6b"
BACKGROUND = "#0f1115"
PANEL = "#171a21"
TEXT = "#e8e8e8"
SCALES = {"pressure": "Cividis", "velocity": "Viridis", "flow": "Viridis"}
ATMOSPHERE_PA = 101_325.0
WATER_PA_PER_M = 9806.65

# trace order of the map (the patches address traces by position)
T_CONTOUR = 0
T_PIPES = 1                               # N_CLASSES traces
T_UNSUPPLIED = T_PIPES + N_CLASSES
T_LINKS_HOVER = T_UNSUPPLIED + 1
T_NODES = T_LINKS_HOVER + 1
T_ASSETS = T_NODES + 1
T_SENSORS = T_ASSETS + 1
T_CANDIDATES = T_SENSORS + 1


@dataclass
class Units:
    """Pressure as a control room reads it: gas in mbar or bar gauge, water in metres of head."""
    label: str
    scale: float
    offset: float

    def __call__(self, pa_values):
        return (np.asarray(pa_values, float) - self.offset) / self.scale


def pressure_units(medium: str, pressures_pa: np.ndarray) -> Units:
    if medium == "water":
        return Units("m", WATER_PA_PER_M, 0.0)
    finite = pressures_pa[np.isfinite(pressures_pa)]
    top = float(finite.max()) if len(finite) else ATMOSPHERE_PA
    if top - ATMOSPHERE_PA < 1.0e5:
        return Units("mbar(g)", 100.0, ATMOSPHERE_PA)
    return Units("bar(g)", 1.0e5, ATMOSPHERE_PA)


@dataclass
class Geometry:
    """The network as arrays the figures index into (built once from the published tables)."""
    node_ids: np.ndarray
    node_kind: np.ndarray
    x: np.ndarray
    y: np.ndarray
    link_ids: np.ndarray
    link_kind: np.ndarray
    fr: np.ndarray
    to: np.ndarray
    length_m: np.ndarray
    medium: str
    point_ids: np.ndarray
    point_element: np.ndarray        # node or link index
    point_on_node: np.ndarray
    point_quantity: np.ndarray
    triangulation: object = None    # scipy Delaunay of the node coordinates, for contours

    @property
    def mid_x(self) -> np.ndarray:
        return 0.5 * (self.x[self.fr] + self.x[self.to])

    @property
    def mid_y(self) -> np.ndarray:
        return 0.5 * (self.y[self.fr] + self.y[self.to])


def geometry(tables: dict) -> Geometry:
    nodes, links, points = tables["nodes"], tables["links"], tables["points"]
    node_ids = np.asarray(nodes["id"].to_pylist(), dtype=object)
    index = {n: i for i, n in enumerate(node_ids)}
    link_ids = np.asarray(links["id"].to_pylist(), dtype=object)
    link_index = {n: i for i, n in enumerate(link_ids)}
    on_node = np.asarray([o == "node" for o in points["on"].to_pylist()], bool)
    element = np.asarray([(index if n else link_index).get(e, -1)
                          for e, n in zip(points["element"].to_pylist(), on_node)], np.int64)
    x = nodes["x"].to_numpy(zero_copy_only=False).astype(float)
    y = nodes["y"].to_numpy(zero_copy_only=False).astype(float)
    tri = None
    if len(x) >= 4 and np.ptp(x) > 0 and np.ptp(y) > 0:
        from scipy.spatial import Delaunay, QhullError
        try:
            tri = Delaunay(np.column_stack([x, y]))
        except QhullError:    # all nodes on a line: no contour field, the pipes still show
            tri = None
    return Geometry(node_ids=node_ids, node_kind=np.asarray(nodes["kind"].to_pylist(), dtype=object), x=x, y=y,
                    link_ids=link_ids, link_kind=np.asarray(links["kind"].to_pylist(), dtype=object),
                    fr=np.asarray([index[n] for n in links["from"].to_pylist()], np.int64),
                    to=np.asarray([index[n] for n in links["to"].to_pylist()], np.int64),
                    length_m=links["length_m"].to_numpy(zero_copy_only=False).astype(float),
                    medium=tables["meta"].get("medium", "natural_gas"),
                    point_ids=np.asarray(points["point"].to_pylist(), dtype=object), point_element=element,
                    point_on_node=on_node, point_quantity=np.asarray(points["quantity"].to_pylist(), dtype=object),
                    triangulation=tri)


# ---------------------------------------------------------------------------------- the map


def link_values(geom: Geometry, state: dict, quantity: str) -> np.ndarray:
    """What colours each pipe: its mean end pressure, or the magnitude of its velocity or flow."""
    if quantity == "pressure":
        p = state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False)
        return 0.5 * (p[geom.fr] + p[geom.to])
    column = "velocity_m_s" if quantity == "velocity" else "flow"
    return np.abs(state["links"][column].to_numpy(zero_copy_only=False))


def nice_range(values: np.ndarray) -> tuple[float, float]:
    """A colour range rounded outward to a round step, so small drifts between ticks keep every
    pipe in its class (and the patch small)."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 0:
        hi = lo + max(abs(lo) * 1e-3, 1e-9)
    step = 10.0 ** np.floor(np.log10((hi - lo) / 2))
    return float(np.floor(lo / step) * step), float(np.ceil(hi / step) * step)


def classes(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    c = np.floor((values - lo) / (hi - lo) * N_CLASSES).astype(np.int64)
    return np.clip(np.where(np.isfinite(values), c, 0), 0, N_CLASSES - 1)


def segments(geom: Geometry, idx: np.ndarray) -> tuple[list, list]:
    """x and y of the links ``idx`` as one polyline with gaps (None) between links."""
    if len(idx) == 0:
        return [], []
    n = len(idx)
    xs = np.empty(3 * n, object)
    ys = np.empty(3 * n, object)
    xs[0::3], xs[1::3], xs[2::3] = np.round(geom.x[geom.fr[idx]], 2), np.round(geom.x[geom.to[idx]], 2), None
    ys[0::3], ys[1::3], ys[2::3] = np.round(geom.y[geom.fr[idx]], 2), np.round(geom.y[geom.to[idx]], 2), None
    return xs.tolist(), ys.tolist()


def class_members(geom: Geometry, state: dict, quantity: str) -> tuple[list[np.ndarray], np.ndarray, tuple]:
    """The links of each colour class, the unsupplied links, and the range."""
    values = link_values(geom, state, quantity)
    unsupplied_node = state["nodes"]["unsupplied"].to_numpy(zero_copy_only=False).astype(bool)
    dead = unsupplied_node[geom.fr] | unsupplied_node[geom.to]
    lo, hi = nice_range(values[~dead])
    c = classes(values, lo, hi)
    return [np.flatnonzero((c == k) & ~dead) for k in range(N_CLASSES)], np.flatnonzero(dead), (lo, hi)


def members_hash(idx: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(idx, np.int64).tobytes())


def contour_grid(geom: Geometry, pressure_display: np.ndarray, supplied: np.ndarray, n: int = 90):
    """Node pressures interpolated on a grid (linear on the nodes' triangulation), NaN outside
    the network's hull and around unsupplied parts: the isobars dispatchers read."""
    if geom.triangulation is None or supplied.sum() < 4:
        return None
    from scipy.interpolate import LinearNDInterpolator

    values = np.where(supplied, pressure_display, np.nan)
    gx = np.linspace(geom.x.min(), geom.x.max(), n)
    gy = np.linspace(geom.y.min(), geom.y.max(), n)
    X, Y = np.meshgrid(gx, gy)
    Z = LinearNDInterpolator(geom.triangulation, values)(X, Y)
    return gx, gy, np.round(Z, 3)


def _contour_values(z) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in z]


def _asset_style(kind: str) -> tuple[str, str, int]:
    return {"source": ("diamond", "#56B4E9", 14), "tank": ("square", "#56B4E9", 12)}.get(kind, ("circle", "#fff", 6))


def map_figure(geom: Geometry, state: dict | None, quantity: str = "pressure", contours: bool = True,
               height: int = 720) -> tuple[go.Figure, dict]:
    """The whole map, and what the patches compare against next time (class hashes, ranges)."""
    fig = go.Figure()
    fig.add_trace(go.Contour(x=[0, 1], y=[0, 1], z=[[None, None], [None, None]], visible=False,
                             contours=dict(coloring="lines", showlabels=True,
                                           labelfont=dict(color=TEXT, size=11)),
                             line=dict(width=1), colorscale="Cividis", showscale=False, hoverinfo="skip",
                             name="isobars"))
    colours = sample_colorscale(SCALES.get(quantity, "Viridis"), [(k + 0.5) / N_CLASSES for k in range(N_CLASSES)])
    for k in range(N_CLASSES):
        fig.add_trace(go.Scattergl(x=[], y=[], mode="lines", line=dict(color=colours[k], width=2.5),
                                   hoverinfo="skip", showlegend=False, name=f"class {k}"))
    fig.add_trace(go.Scattergl(x=[], y=[], mode="lines", line=dict(color=UNSUPPLIED, width=2, dash="dot"),
                               hoverinfo="skip", name="unsupplied", showlegend=True))
    fig.add_trace(go.Scattergl(x=np.round(geom.mid_x, 2), y=np.round(geom.mid_y, 2), mode="markers",
                               marker=dict(size=6, opacity=0), customdata=geom.link_ids, name="pipes",
                               hovertemplate="%{customdata}<extra>pipe</extra>", showlegend=False))
    fig.add_trace(go.Scattergl(x=np.round(geom.x, 2), y=np.round(geom.y, 2), mode="markers",
                               marker=dict(size=4, color=[], colorscale="Cividis", showscale=True,
                                           colorbar=dict(title=dict(text=""), thickness=12, x=1.0)),
                               customdata=geom.node_ids, name="nodes", showlegend=False,
                               hovertemplate="%{customdata}: %{marker.color:.1f}<extra></extra>"))
    special = np.flatnonzero(np.isin(geom.node_kind, ["source", "tank"]))
    reg_links = np.flatnonzero(np.isin(geom.link_kind, ["prv", "psv", "pbv", "fcv", "tcv", "gpv",
                                                        "compressor_ratio", "compressor_outlet", "pump"]))
    ax = np.concatenate([geom.x[special], geom.mid_x[reg_links]])
    ay = np.concatenate([geom.y[special], geom.mid_y[reg_links]])
    styles = [_asset_style(k) for k in geom.node_kind[special]] + [("triangle-up", "#CC79A7", 13)] * len(reg_links)
    fig.add_trace(go.Scattergl(x=ax, y=ay, mode="markers", name="stations",
                               marker=dict(symbol=[s[0] for s in styles], color=[s[1] for s in styles],
                                           size=[s[2] for s in styles], line=dict(color="#000", width=1)),
                               customdata=np.concatenate([geom.node_ids[special], geom.link_ids[reg_links]]),
                               hovertemplate="%{customdata}<extra>station</extra>"))
    fig.add_trace(go.Scattergl(x=[], y=[], mode="markers", name="sensors",
                               marker=dict(symbol="circle-open", size=11, line=dict(width=2.5), color=[],
                                           colorscale="PuOr", cmid=0),
                               customdata=[], hovertemplate="%{text}<extra>sensor</extra>", text=[]))
    fig.add_trace(go.Scattergl(x=[], y=[], mode="markers+text", name="leak candidates", text=[],
                               textposition="top center", textfont=dict(color=TEXT),
                               marker=dict(symbol="x", size=14, color="#D55E00"), hoverinfo="text"))
    fig.update_layout(template="plotly_dark", paper_bgcolor=BACKGROUND, plot_bgcolor=BACKGROUND, height=height,
                      margin=dict(l=8, r=8, t=8, b=8), uirevision="map", dragmode="pan",
                      legend=dict(orientation="h", y=0.01, x=0.01, bgcolor="rgba(0,0,0,0.4)"),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x", scaleratio=1))
    memo = {"hashes": [None] * N_CLASSES, "unsupplied": None, "nodes": None, "contour": 0}
    if state is not None:
        patch, memo = map_update(geom, state, quantity, contours, memo, patch=None)
        fig = go.Figure(_apply(fig.to_dict(), patch))
    return fig, memo


def map_update(geom: Geometry, state: dict, quantity: str, contours: bool, memo: dict,
               patch: Patch | None | bool = True) -> tuple:
    """What changed since ``memo``, as a list of (trace, property, value) changes (``patch=None``)
    or as a ``dash.Patch`` (the default), and the new memo."""
    changes: list[tuple[int, str, object]] = []
    members, dead, (lo, hi) = class_members(geom, state, quantity)
    hashes = []
    for k, idx in enumerate(members):
        h = members_hash(idx)
        hashes.append(h)
        if memo.get("hashes", [None] * N_CLASSES)[k] != h:
            xs, ys = segments(geom, idx)
            changes += [(T_PIPES + k, "x", xs), (T_PIPES + k, "y", ys)]
    hd = members_hash(dead)
    if memo.get("unsupplied") != hd:
        xs, ys = segments(geom, dead)
        changes += [(T_UNSUPPLIED, "x", xs), (T_UNSUPPLIED, "y", ys)]
    p = state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False)
    units = pressure_units(geom.medium, p)
    supplied = ~state["nodes"]["unsupplied"].to_numpy(zero_copy_only=False).astype(bool)
    shown = np.round(units(p), 1)
    node_colour = np.where(supplied, shown, np.nan)
    nh = zlib.crc32(np.nan_to_num(node_colour, nan=-1e300).tobytes()) ^ hash(units.label)
    if memo.get("nodes") != nh:
        changes.append((T_NODES, "marker.color", [None if not np.isfinite(v) else float(v) for v in node_colour]))
        changes.append((T_NODES, "marker.colorbar.title.text", f"pressure<br>{units.label}"))
    ch = None
    if contours:
        grid = contour_grid(geom, units(p), supplied)
        if grid is not None:
            gx, gy, z = grid
            ch = zlib.crc32(np.nan_to_num(z, nan=-1e300).tobytes())
            if memo.get("contour") != ch:
                changes += [(T_CONTOUR, "x", np.round(gx, 2).tolist()), (T_CONTOUR, "y", np.round(gy, 2).tolist()),
                            (T_CONTOUR, "z", _contour_values(z)), (T_CONTOUR, "visible", True)]
    if ch is None and memo.get("contour", 0) is not None:
        changes.append((T_CONTOUR, "visible", False))
    sx, sy, sc, st, sid = sensor_markers(geom, state, units)
    changes += [(T_SENSORS, "x", sx), (T_SENSORS, "y", sy), (T_SENSORS, "marker.color", sc),
                (T_SENSORS, "text", st), (T_SENSORS, "customdata", sid)]
    memo = {"hashes": hashes, "unsupplied": hd, "nodes": nh, "contour": ch, "range": [lo, hi], "quantity": quantity}
    if patch is None:
        return changes, memo
    out = Patch()
    for trace, prop, value in changes:
        target = out["data"][trace]
        *head, last = prop.split(".")
        for part in head:
            target = target[part]
        target[last] = value
    return out, memo


def _apply(fig: dict, changes: list) -> dict:
    for trace, prop, value in changes:
        target = fig["data"][trace]
        *head, last = prop.split(".")
        for part in head:
            target = target.setdefault(part, {})
        target[last] = value
    return fig


def sensor_markers(geom: Geometry, state: dict, units: Units):
    """Each sensor at its element, coloured by its residual (measured minus the twin's estimate)
    in display units; hover shows both values."""
    sensors = state["sensors"]
    ids = sensors["point"].to_pylist()
    where = {p: i for i, p in enumerate(geom.point_ids)}
    rows = np.array([where.get(p, -1) for p in ids], np.int64)
    ok = rows >= 0
    measured = sensors["measured"].to_numpy(zero_copy_only=False).astype(float)
    estimated = sensors["estimated"].to_numpy(zero_copy_only=False).astype(float)
    xs, ys, colours, texts, sid = [], [], [], [], []
    for i in np.flatnonzero(ok):
        r = rows[i]
        e = geom.point_element[r]
        if e < 0:
            continue
        if geom.point_on_node[r]:
            x, y = geom.x[e], geom.y[e]
        else:
            x, y = geom.mid_x[e], geom.mid_y[e]
        if geom.point_quantity[r] == "pressure":
            m, est, unit = units(measured[i]), units(estimated[i]), units.label
        else:
            m, est, unit = measured[i], estimated[i], "kg/s" if geom.medium != "water" else "m3/s"
        resid = float(m - est) if np.isfinite(m) else None
        xs.append(round(float(x), 2))
        ys.append(round(float(y), 2))
        colours.append(None if resid is None else round(resid, 3))
        sid.append(ids[i])
        mtxt = f"{float(m):.4g}" if np.isfinite(m) else "no reading"
        texts.append(f"{ids[i]}<br>measured {mtxt} {unit}<br>twin {float(est):.4g} {unit}")
    return xs, ys, colours, texts, sid


def candidates_trace_update(geom: Geometry, alert: dict | None) -> list[tuple[int, str, object]]:
    cands = (alert or {}).get("candidates") or []
    return [(T_CANDIDATES, "x", [c["x"] for c in cands]), (T_CANDIDATES, "y", [c["y"] for c in cands]),
            (T_CANDIDATES, "text", [f"{i + 1}. {c['element']}" for i, c in enumerate(cands)])]


# ---------------------------------------------------------------------------------- strips and panels


STRIP = (("min_pressure_pa", "min pressure", "pressure"), ("inflow_kg_s", "inflow kg/s", None),
         ("consumption_kg_s", "consumption kg/s", None), ("line_pack_kg", "line pack kg", None))


def strip_figure(summaries: list[dict], medium: str, height: int = 260) -> go.Figure:
    """The last hours of the headline figures, one row each, sharing the time axis."""
    from plotly.subplots import make_subplots

    rows = [s for s in STRIP if any(x.get(s[0]) is not None for x in summaries)] or [STRIP[0]]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    # plain lists, not numpy: plotly sends numpy as typed arrays, which a Patch cannot extend
    t = [np.datetime64(int(s["ts_ns"]), "ns").astype(str) for s in summaries]
    p_all = np.array([s.get("min_pressure_pa") or np.nan for s in summaries], float)
    units = pressure_units(medium, p_all if len(p_all) else np.array([ATMOSPHERE_PA]))
    for i, (key, label, kind) in enumerate(rows, start=1):
        v = np.array([np.nan if s.get(key) is None else float(s[key]) for s in summaries], float)
        if kind == "pressure":
            v = units(v)
            label = f"min p {units.label}"
        y = [None if not np.isfinite(x) else round(float(x), 6) for x in v]
        fig.add_trace(go.Scattergl(x=t, y=y, mode="lines", line=dict(width=1.5, color="#56B4E9"), name=label,
                                   showlegend=False), row=i, col=1)
        fig.update_yaxes(title_text=label, title_font=dict(size=11), row=i, col=1)
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      margin=dict(l=70, r=10, t=6, b=24), uirevision="strip")
    return fig


def strip_extend(summaries: list[dict], fig_rows: list[str], medium: str, drop: int = 0) -> Patch:
    """Append new ticks to the strip without resending its history; drop its ``drop`` oldest."""
    patch = Patch()
    t = [np.datetime64(int(s["ts_ns"]), "ns").astype(str) for s in summaries]
    for i, key in enumerate(fig_rows):
        v = [s.get(key) for s in summaries]
        if key == "min_pressure_pa":
            units = pressure_units(medium, np.array([x for x in v if x is not None] or [ATMOSPHERE_PA], float))
            v = [None if x is None else float(units(x)) for x in v]
        patch["data"][i]["x"].extend(t)
        patch["data"][i]["y"].extend(v)
        for _ in range(drop):
            del patch["data"][i]["x"][0]
            del patch["data"][i]["y"][0]
    return patch


def strip_rows(summaries: list[dict]) -> list[str]:
    return [s[0] for s in STRIP if any(x.get(s[0]) is not None for x in summaries)] or [STRIP[0][0]]


def series_figure(table: pa.Table, title: str, unit: Units | None, height: int = 360) -> go.Figure:
    """A sensor's measured and estimated values over time (drill-down)."""
    fig = go.Figure()
    if table.num_rows:
        t = table["ts"].to_numpy(zero_copy_only=False)
        for col, colour, dash_ in (("measured", "#E69F00", "solid"), ("estimated", "#56B4E9", "dash")):
            v = table[col].to_numpy(zero_copy_only=False).astype(float)
            if unit is not None:
                v = unit(v)
            fig.add_trace(go.Scattergl(x=t, y=v, mode="lines", name=col, line=dict(color=colour, dash=dash_)))
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      title=dict(text=title, font=dict(size=14)), margin=dict(l=60, r=10, t=40, b=30),
                      yaxis_title=unit.label if unit else "", legend=dict(orientation="h"))
    return fig


def evidence_figure(alert: dict, height: int = 300) -> go.Figure:
    """The numbers an alert carries as evidence: series as lines, scalars as bars."""
    ev = alert.get("evidence") or {}
    fig = go.Figure()
    series = {k: v for k, v in ev.items() if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)}
    scalars = {k: v for k, v in ev.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not k.endswith("_ns")}
    for k, v in series.items():
        fig.add_trace(go.Scatter(y=v, mode="lines+markers", name=k))
    if scalars and not series:
        fig.add_trace(go.Bar(x=list(scalars), y=list(scalars.values()), marker_color="#56B4E9",
                             text=[f"{v:.4g}" for v in scalars.values()], textposition="outside"))
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      margin=dict(l=50, r=10, t=30, b=60), title=dict(text="evidence", font=dict(size=13)))
    return fig
