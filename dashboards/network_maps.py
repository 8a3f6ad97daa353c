"""Network maps for the study pages (what-if, isolation): the network read from a file rather than
from Redis, and the small figure pieces those maps share with the wall's look.

The study pages draw networks the live wall may not be showing (a study's own network, the model an
isolation plan was computed on), so they build the wall's ``Geometry`` from a ``NetworkModel``.
Models are read once per file version and kept (a 10,000-node network takes a second to read).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from pipetwin.dashboards.figures import BACKGROUND, N_CLASSES, TEXT, UNSUPPLIED, Geometry, classes, nice_range
from pipetwin.twin.model import LinkKind, NetworkModel, NodeKind

# Okabe-Ito, in the order variants are drawn (the first is the baseline's)
VARIANT_COLOURS = ("#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999")
MARK = "#D55E00"           # changed / isolated elements
MARK_2 = "#F0E442"         # valves and squeeze points

_models: OrderedDict = OrderedDict()
_lock = threading.Lock()


def resolve_network(name: str, relative_to: Path | None = None) -> Path | None:
    """A network file or folder (absolute, or relative to ``relative_to``), or a bundled example's name."""
    from pipetwin.data import DATA_DIR, example

    if not name:
        return None
    for candidate in ([Path(relative_to) / name] if relative_to else []) + [Path(name), DATA_DIR / name]:
        if candidate.exists():
            return candidate.resolve()
    try:
        return example(name)
    except ValueError:
        return None


def load_model(path: Path) -> NetworkModel:
    """The network at ``path``, read once per version of the file (its mtime), a few kept."""
    from pipetwin.twin.io import read_network

    path = Path(path)
    key = (str(path), path.stat().st_mtime_ns)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = read_network(path)
    with _lock:
        _models[key] = model
        while len(_models) > 4:
            _models.popitem(last=False)
    return model


def model_geometry(model: NetworkModel) -> Geometry:
    """The wall's ``Geometry`` of a model (no sensors: a study map shows the network itself)."""
    empty = np.asarray([], dtype=object)
    return Geometry(node_ids=np.asarray(model.nodes.ids, dtype=object),
                    node_kind=np.asarray([NodeKind(k).name.lower() for k in model.nodes.kind], dtype=object),
                    x=np.asarray(model.nodes.x, float), y=np.asarray(model.nodes.y, float),
                    link_ids=np.asarray(model.links.ids, dtype=object),
                    link_kind=np.asarray([LinkKind(k).name.lower() for k in model.links.kind], dtype=object),
                    fr=np.asarray(model.links.from_node, np.int64), to=np.asarray(model.links.to_node, np.int64),
                    length_m=np.asarray(model.links.length_m, float),
                    medium="water" if not model.is_gas else "natural_gas",
                    point_ids=empty, point_element=np.asarray([], np.int64), point_on_node=np.asarray([], bool),
                    point_quantity=empty)


def gap_lines(geom: Geometry, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like ``figures.segments`` but as float arrays with NaN gaps: a static map is sent once, and
    numpy arrays skip plotly's per-element validation (seconds on a few thousand pipes)."""
    idx = np.asarray(idx, np.int64)
    xs = np.full(3 * len(idx), np.nan)
    ys = np.full(3 * len(idx), np.nan)
    xs[0::3], xs[1::3] = geom.x[geom.fr[idx]], geom.x[geom.to[idx]]
    ys[0::3], ys[1::3] = geom.y[geom.fr[idx]], geom.y[geom.to[idx]]
    return np.round(xs, 2), np.round(ys, 2)


def class_colours(scale: str = "Cividis") -> list[str]:
    return sample_colorscale(scale, [(k + 0.5) / N_CLASSES for k in range(N_CLASSES)])


def coloured_pipe_traces(geom: Geometry, values: np.ndarray, dead: np.ndarray, lo: float, hi: float,
                         width: float = 2.0, scale: str = "Cividis") -> list[go.Scattergl]:
    """Pipes as one WebGL line trace per colour class, plus the dead ones grey and dotted."""
    c = classes(values, lo, hi)
    traces = []
    for k, colour in enumerate(class_colours(scale)):
        xs, ys = gap_lines(geom, np.flatnonzero((c == k) & ~dead & np.isfinite(values)))
        traces.append(go.Scattergl(x=xs, y=ys, mode="lines", line=dict(color=colour, width=width),
                                   hoverinfo="skip", showlegend=False, name=f"class {k}"))
    xs, ys = gap_lines(geom, np.flatnonzero(dead))
    traces.append(go.Scattergl(x=xs, y=ys, mode="lines", line=dict(color=UNSUPPLIED, width=width, dash="dot"),
                               hoverinfo="skip", name="unsupplied", showlegend=False))
    return traces


def shared_range(arrays: list[np.ndarray]) -> tuple[float, float]:
    """One colour range over every map of a comparison, so equal colours mean equal pressures."""
    finite = [a[np.isfinite(a)] for a in arrays]
    allv = np.concatenate(finite) if finite else np.array([])
    return nice_range(allv)


def dark_layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(template="plotly_dark", paper_bgcolor=BACKGROUND, plot_bgcolor=BACKGROUND, height=height,
                      margin=dict(l=8, r=8, t=30, b=8), dragmode="pan", font=dict(color=TEXT),
                      legend=dict(orientation="h", y=0.01, x=0.01, bgcolor="rgba(0,0,0,0.4)"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
