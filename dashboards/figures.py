"""Figures of the wall, built from plain tables (pure functions: tables in, plotly figures out).

The network map's figure and the links' end points go to the browser once per page load; each
new tick then sends a compact frame (``map_frame``: a colour class per link as one character, node
pressures and the isobars packed at display resolution, the sensors), and the browser draws it
(dashboards/assets/wall.js). Pipes are WebGL line traces, one per colour class (a WebGL line has
one colour), with gaps between segments, so a 10,000-pipe network is a handful of traces.

The map is drawn on a plain background, and the page asks nothing of any other server. With map
tiles configured (dashboards/tiles.py) the geometry comes in web mercator metres and the figure
carries the tiles covering the network as layout images under the traces; the browser swaps them
for the view's own as the user pans and zooms (wall.js).

Colours are colour-blind safe: cividis for pressure, viridis for velocity and flow, purple-orange
for residuals, and the Okabe-Ito palette for severities.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa
from dash import Patch
from plotly.colors import sample_colorscale

from pipetwin.dashboards.tiles import Tiles, tile_layer

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
    drawn: np.ndarray | None = None        # links drawn as lines, in drawing order (see ``drawn_links``)
    drawn_flip: np.ndarray | None = None   # drawn from its ``to`` end (so it continues the one before)
    grid_x: np.ndarray | None = None       # the isobars' grid (None: nodes on a line, no contours)
    grid_y: np.ndarray | None = None
    grid_nodes: np.ndarray | None = None   # (cells, k) the nodes each cell's value comes from
    grid_weights: np.ndarray | None = None  # (cells, k) their weights; NaN outside the network
    tiles: Tiles | None = None             # map tiles under it: x and y are then web mercator metres

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
    grid = contour_weights(x, y)
    fr = np.asarray([index[n] for n in links["from"].to_pylist()], np.int64)
    to = np.asarray([index[n] for n in links["to"].to_pylist()], np.int64)
    drawn, flip = chain_order(len(x), fr, to, drawn_links(x, y, fr, to))
    return Geometry(node_ids=node_ids, node_kind=np.asarray(nodes["kind"].to_pylist(), dtype=object), x=x, y=y,
                    link_ids=link_ids, link_kind=np.asarray(links["kind"].to_pylist(), dtype=object),
                    fr=fr, to=to, drawn=drawn, drawn_flip=flip,
                    length_m=links["length_m"].to_numpy(zero_copy_only=False).astype(float),
                    medium=tables["meta"].get("medium", "natural_gas"),
                    point_ids=np.asarray(points["point"].to_pylist(), dtype=object), point_element=element,
                    point_on_node=on_node, point_quantity=np.asarray(points["quantity"].to_pylist(), dtype=object),
                    **grid)


def drawn_links(x: np.ndarray, y: np.ndarray, fr: np.ndarray, to: np.ndarray, share: float = 0.005) -> np.ndarray:
    """The links the map draws as lines: all but the short ones ending at a leaf (house services:
    shorter than ``share`` of the map's diagonal, a pixel or two on a wall). Their houses are still
    drawn as nodes coloured by pressure, and every link keeps its hover and click, so the wall
    loses nothing it could show while a 10,000-node network draws a fraction of the segments."""
    degree = np.bincount(np.concatenate([fr, to]), minlength=len(x))
    leaf = (degree[fr] == 1) | (degree[to] == 1)
    span = float(np.hypot(np.ptp(x), np.ptp(y))) if len(x) else 0.0
    short = np.hypot(x[fr] - x[to], y[fr] - y[to]) < share * span
    return np.flatnonzero(~(leaf & short))


def chain_order(n_nodes: int, fr: np.ndarray, to: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The links ``idx`` in depth-first order, each oriented to start where the one before ended
    whenever the walk allows: the browser then draws a run of links of one colour as one polyline
    (one point per link instead of three), which is what its WebGL redraw costs."""
    adj: list[list[tuple[int, int, bool]]] = [[] for _ in range(n_nodes)]
    for k in idx:
        adj[fr[k]].append((int(k), int(to[k]), False))
        adj[to[k]].append((int(k), int(fr[k]), True))
    seen = np.zeros(len(fr), bool)
    visited = np.zeros(n_nodes, bool)
    order, flip = [], []
    for start in np.concatenate([fr[idx], to[idx]]) if len(idx) else []:
        if visited[start]:
            continue
        visited[start] = True
        stack = [(int(start), 0)]
        while stack:
            node, i = stack[-1]
            if i == len(adj[node]):
                stack.pop()
                continue
            stack[-1] = (node, i + 1)
            k, other, flipped = adj[node][i]
            if seen[k]:
                continue
            seen[k] = True
            order.append(k)
            flip.append(flipped)
            if not visited[other]:
                visited[other] = True
                stack.append((other, 0))
    return np.asarray(order, np.int64), np.asarray(flip, bool)


def contour_weights(x: np.ndarray, y: np.ndarray, n: int = 90, k: int = 4) -> dict:
    """Where each cell of the isobars' grid takes its value from, worked out once: the ``k``
    nearest nodes, weighted by inverse squared distance. Each tick's field is then a weighted sum
    (microseconds), not a fresh interpolation. Cells farther from every node than a few times the
    network's own spacing (bays between branches, outside the streets) stay empty rather than
    inventing a field there."""
    empty = {"grid_x": None, "grid_y": None, "grid_nodes": None, "grid_weights": None}
    if len(x) < k or np.ptp(x) <= 0 or np.ptp(y) <= 0:
        return empty
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([x, y]))
    spacing = float(np.median(tree.query(np.column_stack([x, y]), k=2)[0][:, 1]))
    gx, gy = np.linspace(x.min(), x.max(), n), np.linspace(y.min(), y.max(), n)
    X, Y = np.meshgrid(gx, gy)
    dist, nodes = tree.query(np.column_stack([X.ravel(), Y.ravel()]), k=k)
    w = 1.0 / np.maximum(dist, 1e-9) ** 2
    w /= w.sum(axis=1, keepdims=True)
    cell = max(float(gx[1] - gx[0]), float(gy[1] - gy[0]))
    w[dist[:, 0] > 3.0 * max(spacing, cell)] = np.nan
    return {"grid_x": gx, "grid_y": gy, "grid_nodes": nodes.astype(np.int64), "grid_weights": w}


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
    xs = np.empty((n, 3), object)
    ys = np.empty((n, 3), object)
    xs[:, 0], xs[:, 1] = np.round(geom.x[geom.fr[idx]], 2).tolist(), np.round(geom.x[geom.to[idx]], 2).tolist()
    ys[:, 0], ys[:, 1] = np.round(geom.y[geom.fr[idx]], 2).tolist(), np.round(geom.y[geom.to[idx]], 2).tolist()
    return xs.ravel().tolist(), ys.ravel().tolist()


def contour_grid(geom: Geometry, pressure_display: np.ndarray, supplied: np.ndarray):
    """Node pressures on the isobars' grid; NaN outside the network and around unsupplied parts."""
    if geom.grid_weights is None or supplied.sum() < 4:
        return None
    values = np.where(supplied, pressure_display, np.nan)
    z = (geom.grid_weights * values[geom.grid_nodes]).sum(axis=1)
    return geom.grid_x, geom.grid_y, np.round(z.reshape(len(geom.grid_y), len(geom.grid_x)), 3)


def _asset_style(kind: str) -> tuple[str, str, int]:
    return {"source": ("diamond", "#56B4E9", 14), "tank": ("square", "#56B4E9", 12)}.get(kind, ("circle", "#fff", 6))


def _scatter(**props) -> dict:
    return {"type": "scattergl", **props}


def map_figure(geom: Geometry, state: dict | None, quantity: str = "pressure", contours: bool = True,
               height: int = 720) -> tuple[dict, dict]:
    """The whole map as a plain figure dict (plotly's validating objects take seconds on a
    10,000-pipe network; a dict goes straight to the browser), and what the patches compare
    against next time (class hashes, ranges)."""
    r2 = lambda v: np.round(np.asarray(v, float), 2).tolist()  # noqa: E731
    colours = sample_colorscale(SCALES.get(quantity, "Viridis"), [(k + 0.5) / N_CLASSES for k in range(N_CLASSES)])
    special = np.flatnonzero(np.isin(geom.node_kind, ["source", "tank"]))
    reg_links = np.flatnonzero(np.isin(geom.link_kind, ["prv", "psv", "pbv", "fcv", "tcv", "gpv",
                                                        "compressor_ratio", "compressor_outlet", "pump"]))
    styles = [_asset_style(k) for k in geom.node_kind[special]] + [("triangle-up", "#CC79A7", 13)] * len(reg_links)
    data = [{"type": "contour", "x": [0, 1], "y": [0, 1], "z": [[None, None], [None, None]], "visible": False,
             "contours": {"coloring": "lines", "showlabels": True, "labelfont": {"color": TEXT, "size": 11}},
             "line": {"width": 1}, "colorscale": "Cividis", "showscale": False, "hoverinfo": "skip",
             "name": "isobars"}]
    data += [_scatter(x=[], y=[], mode="lines", line={"color": colours[k], "width": 2.5}, hoverinfo="skip",
                      showlegend=False, name=f"class {k}") for k in range(N_CLASSES)]
    data.append(_scatter(x=[], y=[], mode="lines", line={"color": UNSUPPLIED, "width": 2, "dash": "dot"},
                         hoverinfo="skip", name="unsupplied", showlegend=True))
    data.append(_scatter(x=r2(geom.mid_x), y=r2(geom.mid_y), mode="markers", marker={"size": 6, "opacity": 0},
                         customdata=geom.link_ids.tolist(), name="pipes", showlegend=False,
                         hovertemplate="%{customdata}<extra>pipe</extra>"))
    data.append(_scatter(x=r2(geom.x), y=r2(geom.y), mode="markers", customdata=geom.node_ids.tolist(),
                         marker={"size": 4, "color": [], "colorscale": "Cividis", "showscale": True,
                                 "colorbar": {"title": {"text": ""}, "thickness": 12, "x": 1.0}},
                         name="nodes", showlegend=False,
                         hovertemplate="%{customdata}: %{marker.color:.1f}<extra></extra>"))
    data.append(_scatter(x=r2(np.concatenate([geom.x[special], geom.mid_x[reg_links]])),
                         y=r2(np.concatenate([geom.y[special], geom.mid_y[reg_links]])), mode="markers",
                         name="stations", customdata=np.concatenate([geom.node_ids[special],
                                                                     geom.link_ids[reg_links]]).tolist(),
                         marker={"symbol": [st[0] for st in styles], "color": [st[1] for st in styles],
                                 "size": [st[2] for st in styles], "line": {"color": "#000", "width": 1}},
                         hovertemplate="%{customdata}<extra>station</extra>"))
    data.append(_scatter(x=[], y=[], mode="markers", name="sensors", customdata=[], text=[],
                         marker={"symbol": "circle-open", "size": 11, "line": {"width": 2.5}, "color": [],
                                 "colorscale": "PuOr", "cmid": 0},
                         hovertemplate="%{text}<extra>sensor</extra>"))
    data.append(_scatter(x=[], y=[], mode="markers+text", name="leak candidates", text=[], hoverinfo="text",
                         textposition="top center", textfont={"color": TEXT},
                         marker={"symbol": "x", "size": 14, "color": "#D55E00"}))
    layout = {"template": "plotly_dark", "paper_bgcolor": BACKGROUND, "plot_bgcolor": BACKGROUND, "height": height,
              "margin": {"l": 8, "r": 8, "t": 8, "b": 8}, "uirevision": "map", "dragmode": "pan",
              "legend": {"orientation": "h", "y": 0.01, "x": 0.01, "bgcolor": "rgba(0,0,0,0.4)"},
              "xaxis": {"visible": False}, "yaxis": {"visible": False, "scaleanchor": "x", "scaleratio": 1}}
    fig = {"data": data, "layout": layout,
           "meta": {"pipes": T_PIPES, "classes": N_CLASSES, "nodes": T_NODES, "sensors": T_SENSORS,
                    "contour": T_CONTOUR}}
    if geom.tiles is not None:
        add_tiles(fig, geom, height)
    if state is not None:
        fig = apply_frame(fig, map_frame(geom, state, quantity, contours), geometry_arrays(geom))
    return fig, {}


def add_tiles(fig: dict, geom: Geometry, height: int) -> None:
    """The tiles covering the network (for a wall about twice as wide as high) under the traces,
    their attribution in the corner, and what the browser needs to choose tiles for other views
    (``meta.tiles``). Nothing of this is there without tiles: the plain map requests nothing."""
    tiles = geom.tiles
    pad = 0.03 * max(float(np.ptp(geom.x)), float(np.ptp(geom.y)), 1.0)
    x_range = (float(geom.x.min()) - pad, float(geom.x.max()) + pad)
    y_range = (float(geom.y.min()) - pad, float(geom.y.max()) + pad)
    _, images = tile_layer(x_range, y_range, 2.0 * height, tiles.template, tiles.max_zoom)
    layout = fig["layout"]
    layout["images"] = images       # the axes stay autoranged: a set range would undo a user's zoom each frame
    nodes = fig["data"][T_NODES]["marker"]          # the colour bar stays legible over light tiles
    nodes["colorbar"] = {**nodes["colorbar"], "bgcolor": "rgba(15,17,21,0.8)"}
    if tiles.attribution:
        layout["annotations"] = [{"text": tiles.attribution, "xref": "paper", "yref": "paper", "x": 1.0, "y": 0.0,
                                  "xanchor": "right", "yanchor": "bottom", "showarrow": False,
                                  "font": {"size": 10, "color": "#222"}, "bgcolor": "rgba(255,255,255,0.7)"}]
    fig["meta"]["tiles"] = {"template": tiles.template, "max_zoom": tiles.max_zoom,
                            "bounds": [*x_range, *y_range]}


def geometry_arrays(geom: Geometry) -> dict:
    """Each link's two ends, sent to the browser once per page: later frames say only which
    colour class each link is in, and the browser draws the classes itself."""
    r2 = lambda v: np.round(v, 2).tolist()  # noqa: E731
    a, b = geom.fr[geom.drawn], geom.to[geom.drawn]
    fr, to = np.where(geom.drawn_flip, b, a), np.where(geom.drawn_flip, a, b)
    return {"x0": r2(geom.x[fr]), "y0": r2(geom.y[fr]), "x1": r2(geom.x[to]), "y1": r2(geom.y[to])}


def pack(values: np.ndarray, step: float) -> dict:
    """Numbers at display resolution as little-endian int16 in base64 (NaN: -32768), about 2.7
    bytes a value on the wire instead of 6-10 as JSON text."""
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    offset = float(np.nanmin(v)) if finite.any() else 0.0
    step = max(step, (float(np.nanmax(v)) - offset) / 60000.0) if finite.any() else step
    q = np.where(finite, np.round((np.where(finite, v, offset) - offset) / step), -32768).astype("<i2")
    return {"b": base64.b64encode(q.tobytes()).decode(), "o": offset, "s": step}


def unpack(p: dict | None) -> list | None:
    if p is None:
        return None
    q = np.frombuffer(base64.b64decode(p["b"]), "<i2")
    return [None if v == -32768 else p["o"] + float(v) * p["s"] for v in q]


def map_frame(geom: Geometry, state: dict, quantity: str, contours: bool,
              colour_range: tuple[float, float] | None = None) -> dict:
    """One tick for the map, compact: each drawn link's colour class as one character ('0'-'7',
    '8' unsupplied), node pressures and the isobars' field packed at display resolution, and the
    sensors. About 60 kB on a 10,000-node network.

    ``colour_range`` keeps the classes' range of an earlier frame, so a colour means the same
    value from tick to tick (as a control room reads a map) and only the pipes whose value crossed
    a class boundary change; it widens only when a value falls outside it."""
    values = link_values(geom, state, quantity)
    unsupplied_node = state["nodes"]["unsupplied"].to_numpy(zero_copy_only=False).astype(bool)
    dead = unsupplied_node[geom.fr] | unsupplied_node[geom.to]
    lo, hi = nice_range(values[~dead])
    if colour_range is not None:
        lo, hi = min(lo, colour_range[0]), max(hi, colour_range[1])
    c = np.where(dead, N_CLASSES, classes(values, lo, hi))
    p = state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False)
    units = pressure_units(geom.medium, p)
    shown = np.where(~unsupplied_node, units(p), np.nan)
    # the tick as a string: nanoseconds since 1970 exceed a JavaScript number's 2**53
    frame = {"ts": str(int(state["summary"]["ts_ns"])),
             "cls": (c[geom.drawn].astype(np.uint8) + 48).tobytes().decode(),
             "range": [lo, hi], "unit": units.label, "nodes": pack(shown, 0.1), "contour": None}
    if contours:
        grid = contour_grid(geom, units(p), ~unsupplied_node)
        if grid is not None:
            gx, gy, z = grid
            frame.update(contour=pack(z.ravel(), 0.01), gx=np.round(gx, 2).tolist(), gy=np.round(gy, 2).tolist())
    sx, sy, sc, st, sid = sensor_markers(geom, state, units)
    frame["sensors"] = {"x": sx, "y": sy, "color": sc, "text": st, "customdata": sid}
    return frame


def apply_frame(fig: dict, frame: dict, geo: dict) -> dict:
    """What the browser does with a frame (dashboards/assets/wall.js ``draw``), in Python: for
    PNG export, tests and pages that draw the map server-side."""
    data = [dict(t) for t in fig["data"]]
    xs = [[] for _ in range(N_CLASSES + 1)]
    ys = [[] for _ in range(N_CLASSES + 1)]
    cls = frame["cls"]
    for i, ch in enumerate(cls):
        k = ord(ch) - 48
        if i > 0 and cls[i - 1] == ch and geo["x1"][i - 1] == geo["x0"][i] and geo["y1"][i - 1] == geo["y0"][i]:
            xs[k].append(geo["x1"][i])          # continues the previous link's line
            ys[k].append(geo["y1"][i])
            continue
        if xs[k]:
            xs[k].append(None)
            ys[k].append(None)
        xs[k] += [geo["x0"][i], geo["x1"][i]]
        ys[k] += [geo["y0"][i], geo["y1"][i]]
    for k in range(N_CLASSES + 1):
        data[T_PIPES + k] = {**data[T_PIPES + k], "x": xs[k], "y": ys[k]}
    marker = {**data[T_NODES]["marker"], "color": unpack(frame["nodes"])}
    marker["colorbar"] = {**marker["colorbar"], "title": {"text": f"pressure<br>{frame['unit']}"}}
    data[T_NODES] = {**data[T_NODES], "marker": marker}
    if frame.get("contour") is not None:
        z = unpack(frame["contour"])
        nx = len(frame["gx"])
        data[T_CONTOUR] = {**data[T_CONTOUR], "x": frame["gx"], "y": frame["gy"], "visible": True,
                           "z": [z[i:i + nx] for i in range(0, len(z), nx)]}
    else:
        data[T_CONTOUR] = {**data[T_CONTOUR], "visible": False}
    sn = frame["sensors"]
    data[T_SENSORS] = {**data[T_SENSORS], "x": sn["x"], "y": sn["y"], "text": sn["text"],
                       "customdata": sn["customdata"], "marker": {**data[T_SENSORS]["marker"], "color": sn["color"]}}
    return {**fig, "data": data}


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
