"""What-if studies on the wall: the variants of a ``pipetwin whatif`` study compared in a table,
over time, and side by side on the map.

The page reads only the study's output folder (``study.json`` and its Parquet tables, see
docs/whatif.md), found under the folder the wall was started with (``--studies``). The maps need
the pipes, which the tables do not carry: they come from the study's network file (or bundled
example), read with ``twin.io``; when it cannot be found, the maps show the nodes alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, quote

import numpy as np
import plotly.graph_objects as go
import pyarrow.parquet as pq
from dash import dash_table, dcc, html

from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.files import allowed_file, serve_folder
from pipetwin.dashboards.figures import PANEL, TEXT, Geometry, Units, pressure_units
from pipetwin.dashboards.network_maps import (MARK, VARIANT_COLOURS, coloured_pipe_traces, dark_layout, gap_lines,
                                              load_model, model_geometry, resolve_network, shared_range)

SCHEMA = "pipetwin.whatif/1"
TABLES = ("variants", "comparison", "ticks", "nodes")
SERVED = {"report.html", "variants.csv", "comparison.csv", "ticks.csv", "zone_ticks.csv", "nodes.csv", "study.json"}
MAP_COLUMNS = 3
CELL = {"backgroundColor": PANEL, "color": TEXT, "textAlign": "left", "fontSize": 15, "whiteSpace": "normal",
        "height": "auto"}
HEADER = {"backgroundColor": "#222", "color": "#eee", "fontWeight": "bold"}


# ---------------------------------------------------------------------------------- reading


def find_studies(root: str | Path | None) -> list[dict]:
    """Study output folders under ``root`` (itself, or up to two levels down), newest first."""
    if root is None or not Path(root).is_dir():
        return []
    root = Path(root).resolve()
    found = []
    for pattern in ("study.json", "*/study.json", "*/*/study.json"):
        for meta_file in root.glob(pattern):
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("schema") != SCHEMA:
                continue
            rel = meta_file.parent.relative_to(root).as_posix()
            found.append({"id": "." if rel == "" else rel, "name": meta.get("study", rel), "folder": meta_file.parent,
                          "meta": meta, "mtime": meta_file.stat().st_mtime})
    return sorted(found, key=lambda s: -s["mtime"])


def load_study(folder: str | Path) -> dict:
    """``study.json`` and the tables the page shows, as plain lists of rows."""
    folder = Path(folder)
    meta = json.loads((folder / "study.json").read_text())
    names = meta.get("tables", {})
    study = {"meta": meta, "folder": folder}
    for t in TABLES:
        path = folder / names.get(t, f"{t}.parquet")
        study[t] = pq.read_table(path).to_pylist() if path.exists() else []
    return study


def study_geometry(study: dict, ctx: WallContext | None = None) -> Geometry:
    """The study's network for the maps: its own file, else the wall's if it holds the same nodes,
    else its nodes alone (from the nodes table)."""
    meta = study["meta"]
    study_file = meta.get("study_file")
    path = resolve_network(str(meta.get("network", "")), Path(study_file).parent if study_file else None)
    if path is not None:
        try:
            return model_geometry(load_model(path))
        except Exception:        # a network the reader refuses: fall back to what the tables carry
            pass
    first = study["variants"][0]["variant"] if study["variants"] else None
    rows = [r for r in study["nodes"] if r["variant"] == first]
    ids = np.asarray([r["node"] for r in rows], dtype=object)
    if ctx is not None:
        try:
            geom = ctx.geometry()
        except Exception:       # Redis unreachable: the study page works from its files alone
            geom = None
        if geom is not None and len(ids) and set(ids) <= set(geom.node_ids):
            return geom
    empty = np.asarray([], dtype=object)
    return Geometry(node_ids=ids, node_kind=np.asarray(["junction"] * len(ids), dtype=object),
                    x=np.asarray([r["x"] for r in rows], float), y=np.asarray([r["y"] for r in rows], float),
                    link_ids=empty, link_kind=empty, fr=np.asarray([], np.int64), to=np.asarray([], np.int64),
                    length_m=np.asarray([], float), medium="natural_gas", point_ids=empty,
                    point_element=np.asarray([], np.int64), point_on_node=np.asarray([], bool), point_quantity=empty)


def changed_elements(changes: list[str], geom: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the nodes and links a variant's changes (in words) name."""
    words = {w for text in changes for w in re.split(r"[\s,;:()]+", text) if w}
    node_idx = np.flatnonzero([n in words for n in geom.node_ids]) if len(geom.node_ids) else np.array([], int)
    link_idx = np.flatnonzero([n in words for n in geom.link_ids]) if len(geom.link_ids) else np.array([], int)
    return node_idx, link_idx


# ---------------------------------------------------------------------------------- tables


def _when(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC") if ts is not None else "–"


def _r(v, digits: int = 2):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else round(float(v), digits)


def units_of(study: dict) -> Units:
    p = np.array([r["min_pressure_pa"] for r in study["ticks"] if r["min_pressure_pa"] is not None]
                 or [study["meta"].get("min_service_pressure_pa", 101325.0)], float)
    return pressure_units("natural_gas", p)


def variant_rows(study: dict) -> list[dict]:
    """One row per variant: the issue's comparison (lowest pressure and when, customers below the
    minimum or cut off and for how long, line pack, gas lost, methane)."""
    units = units_of(study)
    network = {r["variant"]: r for r in study["comparison"] if r["zone"] == "network"}
    out = []
    for v in study["variants"]:
        z = network.get(v["variant"], {})
        out.append({
            "variant": v["variant"], "changes": v["changes"] or "none",
            f"min pressure {units.label}": _r(units(v["min_pressure_pa"]), 1) if v["min_pressure_pa"] else None,
            "when": _when(z.get("min_pressure_ts")), "where": z.get("min_pressure_node") or "–",
            "customers below min": z.get("customers_below_min"),
            "customer-h below min": _r(v["customer_hours_below_min"]),
            "customers unsupplied": v["customers_unsupplied"],
            "customer-h unsupplied": _r(v["customer_hours_unsupplied"]),
            "line pack mean kg": _r(v["line_pack_mean_kg"], 1),
            "line pack vs baseline kg": _r(v["line_pack_vs_baseline_kg"], 1),
            "gas lost kg": _r(v["gas_lost_kg"], 3), "methane kg": _r(v["methane_released_kg"], 3),
            "CO2e t": _r(v["co2e_t"], 4), "not delivered kg": _r(v["gas_not_delivered_kg"], 3)})
    return out


def zone_rows(study: dict) -> list[dict]:
    units = units_of(study)
    return [{"variant": r["variant"], "zone": r["zone"], "customers": r["customers"],
             f"min pressure {units.label}": _r(units(r["min_pressure_pa"]), 1) if r["min_pressure_pa"] else None,
             "when": _when(r["min_pressure_ts"]), "where": r["min_pressure_node"] or "–",
             "vs baseline mbar": _r((r["min_pressure_vs_baseline_pa"] or 0.0) / 100.0, 1),
             "below min": r["customers_below_min"], "customer-h below min": _r(r["customer_hours_below_min"]),
             "unsupplied": r["customers_unsupplied"], "customer-h unsupplied": _r(r["customer_hours_unsupplied"])}
            for r in study["comparison"]]


def data_table(rows: list[dict], table_id: str) -> dash_table.DataTable:
    columns = list(rows[0]) if rows else []
    return dash_table.DataTable(id=table_id, data=rows, columns=[{"name": c, "id": c} for c in columns],
                                sort_action="native", style_cell=CELL, style_header=HEADER,
                                style_table={"overflowX": "auto"}, export_format="csv")


# ---------------------------------------------------------------------------------- figures


def timeline_figure(study: dict, height: int = 560) -> go.Figure:
    """Lowest customer pressure, customers affected and line pack over the study, one colour per variant."""
    from plotly.subplots import make_subplots

    units = units_of(study)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=(f"lowest customer pressure {units.label}",
                                        "customers unsupplied (solid) / below minimum (dotted)", "line pack kg"))
    for k, v in enumerate(study["variants"]):
        name, colour = v["variant"], VARIANT_COLOURS[k % len(VARIANT_COLOURS)]
        rows = [r for r in study["ticks"] if r["variant"] == name]
        t = [r["ts"] for r in rows]
        p = [None if r["min_pressure_pa"] is None else round(float(units(r["min_pressure_pa"])), 3) for r in rows]
        line = dict(color=colour, width=2, dash="solid" if k == 0 else ["dash", "dot", "dashdot", "longdash"][k % 4])
        fig.add_trace(go.Scatter(x=t, y=p, mode="lines", name=name, legendgroup=name, line=line), row=1, col=1)
        fig.add_trace(go.Scatter(x=t, y=[r["customers_unsupplied"] for r in rows], mode="lines", name=name,
                                 legendgroup=name, showlegend=False, line=dict(color=colour, width=2)), row=2, col=1)
        fig.add_trace(go.Scatter(x=t, y=[r["customers_below_min"] for r in rows], mode="lines", name=name,
                                 legendgroup=name, showlegend=False, line=dict(color=colour, width=2, dash="dot")),
                      row=2, col=1)
        fig.add_trace(go.Scatter(x=t, y=[r["line_pack_kg"] for r in rows], mode="lines", name=name,
                                 legendgroup=name, showlegend=False, line=line), row=3, col=1)
    floor = study["meta"].get("min_service_pressure_pa")
    if floor is not None:
        fig.add_hline(y=float(units(floor)), line=dict(color="#D55E00", width=1, dash="dash"), row=1, col=1,
                      annotation_text="minimum service pressure", annotation_font_color=TEXT)
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      margin=dict(l=70, r=10, t=40, b=30), legend=dict(orientation="h", y=1.08))
    return fig


def _first(shown: set, key: str, count: int) -> bool:
    """Legend entry on the first map where the marker has something to show (once per figure)."""
    if count == 0 or key in shown:
        return False
    shown.add(key)
    return True


def variants_map(study: dict, geom: Geometry, height_per_row: int = 520) -> go.Figure:
    """One map per variant, side by side: pipes and nodes coloured by the lowest pressure over the
    study on one shared scale, anything cut off at some tick grey and dotted, the elements the
    variant changes marked. Panning one map pans them all."""
    from plotly.subplots import make_subplots

    variants = [v["variant"] for v in study["variants"]]
    words = {v["name"]: v.get("changes", []) for v in study["meta"].get("variants", [])}
    units = units_of(study)
    index = {n: i for i, n in enumerate(geom.node_ids)}
    per = {}
    for name in variants:
        pmin = np.full(len(geom.node_ids), np.nan)
        hours_un = np.zeros(len(geom.node_ids))
        hours_low = np.zeros(len(geom.node_ids))
        for r in study["nodes"]:
            if r["variant"] == name and r["node"] in index:
                i = index[r["node"]]
                pmin[i] = np.nan if r["min_pressure_pa"] is None else r["min_pressure_pa"]
                hours_un[i] = r["hours_unsupplied"] or 0.0
                hours_low[i] = r["hours_below_min"] or 0.0
        per[name] = (units(pmin), hours_un, hours_low)
    lo, hi = shared_range([p[h == 0] for p, h, _ in per.values()])
    cols = min(MAP_COLUMNS, max(len(variants), 1))
    nrows = max(1, -(-len(variants) // cols))
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=variants, horizontal_spacing=0.01,
                        vertical_spacing=0.05)
    legend: set = set()
    for k, name in enumerate(variants):
        row, col = k // cols + 1, k % cols + 1
        p, hours_un, hours_low = per[name]
        dead_node = hours_un > 0
        link_p = 0.5 * (p[geom.fr] + p[geom.to]) if len(geom.fr) else np.array([])
        dead = dead_node[geom.fr] | dead_node[geom.to] if len(geom.fr) else np.array([], bool)
        for trace in coloured_pipe_traces(geom, link_p, dead, lo, hi, width=1.6):
            fig.add_trace(trace, row=row, col=col)
        text = [f"{n}<br>lowest {v:.1f} {units.label}<br>{hl:.2f} h below min · {hu:.2f} h unsupplied"
                if np.isfinite(v) else f"{n}<br>never supplied" for n, v, hl, hu in zip(geom.node_ids, p, hours_low,
                                                                                         hours_un)]
        fig.add_trace(go.Scattergl(
            x=np.round(geom.x, 2), y=np.round(geom.y, 2), mode="markers", name="nodes", showlegend=False,
            marker=dict(size=3, color=np.where(dead_node, np.nan, np.round(p, 2)), colorscale="Cividis",
                        cmin=lo, cmax=hi, showscale=k == 0,
                        colorbar=dict(title=dict(text=f"lowest<br>{units.label}"), thickness=12)),
            hovertemplate="%{text}<extra></extra>", text=text), row=row, col=col)
        low = np.flatnonzero((hours_low > 0) & ~dead_node)
        fig.add_trace(go.Scattergl(x=geom.x[low], y=geom.y[low], mode="markers", name="below minimum",
                                   legendgroup="low", showlegend=_first(legend, "low", len(low)),
                                   marker=dict(symbol="circle-open", size=9, color="#E69F00", line=dict(width=2)),
                                   hoverinfo="skip"), row=row, col=col)
        dn = np.flatnonzero(dead_node)
        fig.add_trace(go.Scattergl(x=geom.x[dn], y=geom.y[dn], mode="markers", name="cut off at some tick",
                                   legendgroup="dead", showlegend=_first(legend, "dead", len(dn)),
                                   hoverinfo="skip",
                                   marker=dict(size=4, color="#6b6b6b")), row=row, col=col)
        nodes_c, links_c = changed_elements(words.get(name, []), geom)
        xs, ys = gap_lines(geom, links_c)
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name="changed", legendgroup="changed",
                                   showlegend=False, line=dict(color=MARK, width=6), hoverinfo="skip"),
                      row=row, col=col)
        mx = np.concatenate([geom.mid_x[links_c], geom.x[nodes_c]])
        my = np.concatenate([geom.mid_y[links_c], geom.y[nodes_c]])
        labels = list(geom.link_ids[links_c]) + list(geom.node_ids[nodes_c])
        fig.add_trace(go.Scattergl(x=mx, y=my, mode="markers", name="changed element", legendgroup="changed",
                                   showlegend=_first(legend, "changed", len(labels)), text=labels,
                                   hovertemplate="%{text}<extra>changed</extra>",
                                   marker=dict(symbol="x", size=15, color=MARK, line=dict(color="#000", width=1))),
                      row=row, col=col)
    dark_layout(fig, nrows * height_per_row)
    fig.update_xaxes(matches="x")
    fig.update_yaxes(matches="y")
    fig.update_layout(yaxis=dict(scaleanchor="x", scaleratio=1), uirevision="study-maps", showlegend=True,
                      margin=dict(l=8, r=8, t=40, b=40),
                      legend=dict(orientation="h", y=0.0, yanchor="top", x=0.0, bgcolor="rgba(0,0,0,0)"))
    fig.update_annotations(font=dict(size=16, color=TEXT))
    return fig


# ---------------------------------------------------------------------------------- the page


def study_view(ctx: WallContext, entry: dict) -> html.Div:
    study = load_study(entry["folder"])
    meta = study["meta"]
    geom = study_geometry(study, ctx)
    base = f"/study-files/{quote(entry['id'])}"
    facts = [f"network {meta.get('network')}", meta.get("history", ""), f"{meta.get('ticks')} ticks of "
             f"{meta.get('tick_s', 0):g} s from {meta.get('start', '?')}",
             f"minimum service pressure {meta.get('min_service_pressure_pa', 0):,.0f} Pa absolute",
             f"factors {meta.get('factors_version')} ({meta.get('factors_date')}), GWP100 {meta.get('gwp100_methane')}"]
    return html.Div(id="study-view", children=[
        html.H2(meta.get("study", entry["id"]), id="study-title"),
        html.Div(meta.get("description", ""), className="quiet"),
        html.Div(" · ".join(f for f in facts if f), className="quiet"),
        html.Div(className="actions", children=[
            html.A("open the HTML report", href=f"{base}/report.html", target="_blank", id="study-report",
                   className="btn"),
            html.A("variants.csv", href=f"{base}/variants.csv"),
            html.A("comparison.csv", href=f"{base}/comparison.csv"),
            html.A("ticks.csv", href=f"{base}/ticks.csv")]),
        html.H3("variants"),
        data_table(variant_rows(study), "study-variants"),
        html.H3("the variants on the map (lowest pressure over the study)"),
        html.Div("" if len(geom.link_ids) else "the study's network file was not found: nodes only",
                 className="quiet", id="study-map-note"),
        dcc.Graph(id="study-maps", figure=variants_map(study, geom), config=GRAPH_CONFIG),
        html.H3("over time"),
        dcc.Graph(id="study-timeline", figure=timeline_figure(study), config=GRAPH_CONFIG),
        html.H3("per zone"),
        data_table(zone_rows(study), "study-zones"),
    ])


def layout(ctx: WallContext, search: str = "") -> html.Div:
    chosen = parse_qs((search or "").lstrip("?")).get("study", [""])[0]
    if ctx.studies_dir is None:
        return html.Div(className="studies", children=[html.H2("what-if studies"), html.Div(
            "no studies folder: start the wall with --studies DIR, the folder holding `pipetwin whatif --out` "
            "folders", className="quiet", id="studies-list")])
    studies = find_studies(ctx.studies_dir)
    items = [dcc.Link(f"{s['name']} ({s['id']})", href=f"/studies?study={quote(s['id'])}",
                      className="alert-item" + (" open" if s["id"] == chosen else "")) for s in studies]
    entry = next((s for s in studies if s["id"] == chosen), None)
    if entry is None and studies and not chosen:
        entry = studies[0]
    view = (study_view(ctx, entry) if entry is not None else
            html.Div(f"no study {chosen!r} under {ctx.studies_dir}" if chosen else "", className="quiet"))
    return html.Div(className="studies", children=[
        html.Div(className="wall-main", children=[
            html.Div(className="wall-side", style={"flex": "0 0 260px"}, children=[
                html.H3("what-if studies"),
                html.Div(items or f"no study under {ctx.studies_dir} (run `pipetwin whatif STUDY.yaml --out DIR`)",
                         id="studies-list")]),
            html.Div(view, style={"flex": "1", "minWidth": "0"}),
        ]),
    ])


def study_file(root: str | Path, rel: str) -> Path | None:
    """A served file of a study: only the report and the tables, only inside ``root``."""
    return allowed_file(root, rel, SERVED.__contains__)


def register(app, ctx: WallContext) -> None:
    serve_folder(app, "/study-files/<path:rel>", "study_files", lambda: ctx.studies_dir, SERVED.__contains__)
