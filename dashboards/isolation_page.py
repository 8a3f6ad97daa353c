"""Isolation plan on the wall (``/isolation?pipe=ID``, reached from a pipe's drill-down): the valves
to close, the section shut in, the customers cut off and those left unsupplied downstream, the
customer-hours, and the twin's check of the remaining pressures, drawn on the map.

The plan needs the network model and two solves, which Redis does not carry: the page plans on
the network file the wall was started with (``--network-file``) through
``twin.isolation.plan_isolation``, the same function as ``pipetwin isolate``. Plans are kept per
pipe and file version, so reopening a plan is instant.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.figures import UNSUPPLIED, Geometry
from pipetwin.dashboards.network_maps import (MARK, MARK_2, dark_layout, gap_lines, load_model, model_geometry,
                                              resolve_network)
from pipetwin.twin.isolation import DEFAULT_REPAIR_HOURS, IsolationPlan, plan_isolation

PIPES = "#4f6d8a"           # the network in service, quiet so the plan stands out
SHOWN = 12                  # ids listed per category before "+N more"

_plans: OrderedDict = OrderedDict()
_lock = threading.Lock()


def network_path(ctx: WallContext) -> Path | None:
    return resolve_network(ctx.network_file) if ctx.network_file else None


def cached_plan(path: Path, pipe: str, repair_hours: float) -> IsolationPlan:
    """``plan_isolation`` on the network at ``path``, kept per (file version, pipe, repair time)."""
    key = (str(path), path.stat().st_mtime_ns, pipe, repair_hours)
    with _lock:
        if key in _plans:
            _plans.move_to_end(key)
            return _plans[key]
    plan = plan_isolation(load_model(path), pipe, repair_hours=repair_hours)
    with _lock:
        _plans[key] = plan
        while len(_plans) > 32:
            _plans.popitem(last=False)
    return plan


def plan_figure(geom: Geometry, plan: IsolationPlan, height: int = 720) -> go.Figure:
    """The network quiet, the section highlighted, what loses supply grey and dotted, the valves to
    close (or the squeeze-off points) marked, and nodes the twin finds below the minimum ringed."""
    nodes = {n: i for i, n in enumerate(geom.node_ids)}
    links = {n: i for i, n in enumerate(geom.link_ids)}
    section = np.asarray([links[i] for i in plan.section_links if i in links], np.int64)
    cut_nodes = np.zeros(len(geom.node_ids), bool)
    cut_nodes[[nodes[n] for n in plan.nodes_downstream + plan.section_nodes if n in nodes]] = True
    in_section = np.zeros(len(geom.link_ids), bool)
    in_section[section] = True
    dead = (cut_nodes[geom.fr] | cut_nodes[geom.to]) & ~in_section
    alive = ~dead & ~in_section
    fig = go.Figure()
    for idx, name, line in ((np.flatnonzero(alive), "in service", dict(color=PIPES, width=1.5)),
                            (np.flatnonzero(dead), "unsupplied downstream",
                             dict(color=UNSUPPLIED, width=2, dash="dot")),
                            (section, "isolated section", dict(color=MARK, width=6))):
        xs, ys = gap_lines(geom, idx)
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", line=line, name=name, hoverinfo="skip"))
    fig.add_trace(go.Scattergl(x=np.round(geom.mid_x, 2), y=np.round(geom.mid_y, 2), mode="markers", name="pipes",
                               marker=dict(size=6, opacity=0), customdata=geom.link_ids, showlegend=False,
                               hovertemplate="%{customdata}<extra>click: plan this pipe</extra>"))
    cust = [nodes[n] for n in plan.customers_direct + plan.customers_downstream if n in nodes]
    fig.add_trace(go.Scattergl(x=geom.x[cust], y=geom.y[cust], mode="markers", name="customers cut off",
                               marker=dict(size=5, color="#a0a0a0"), text=geom.node_ids[cust],
                               hovertemplate="%{text}<extra>cut off</extra>"))
    low = [nodes[n] for n in (plan.pressure.below_min if plan.pressure else []) if n in nodes]
    fig.add_trace(go.Scattergl(x=geom.x[low], y=geom.y[low], mode="markers", name="below minimum after",
                               marker=dict(symbol="circle-open", size=11, color="#E69F00", line=dict(width=2)),
                               text=geom.node_ids[low], hovertemplate="%{text}<extra>below minimum</extra>"))
    valves = np.asarray([links[v] for v in plan.valves_to_close if v in links], np.int64)
    feeding = set(plan.valves_feeding)
    fig.add_trace(go.Scattergl(x=geom.mid_x[valves], y=geom.mid_y[valves], mode="markers+text", name="valves to close",
                               text=list(geom.link_ids[valves]), textposition="top center",
                               textfont=dict(color=MARK_2), hovertemplate="%{text}<extra>close</extra>",
                               marker=dict(symbol=["diamond" if v in feeding else "diamond-open"
                                                   for v in geom.link_ids[valves]],
                                           size=15, color=MARK_2, line=dict(color="#000", width=1))))
    if plan.pipe in links:
        i = links[plan.pipe]
        fig.add_trace(go.Scattergl(x=[geom.mid_x[i]], y=[geom.mid_y[i]], mode="markers", name=f"burst: {plan.pipe}",
                                   marker=dict(symbol="star", size=20, color=MARK, line=dict(color="#fff", width=1)),
                                   hovertemplate=f"{plan.pipe}<extra>burst / work</extra>"))
    squeeze = [nodes[n] for n in plan.squeeze_points if n in nodes]
    fig.add_trace(go.Scattergl(x=geom.x[squeeze], y=geom.y[squeeze], mode="markers", name="squeeze-off points",
                               marker=dict(symbol="x", size=14, color=MARK_2, line=dict(color="#000", width=1)),
                               text=geom.node_ids[squeeze], hovertemplate="%{text}<extra>squeeze off</extra>"))
    dark_layout(fig, height)
    fig.update_layout(yaxis=dict(visible=False, scaleanchor="x", scaleratio=1), uirevision=f"iso-{plan.pipe}",
                      margin=dict(l=8, r=8, t=8, b=8))
    return fig


def _some(items: list[str]) -> str:
    if not items:
        return "none"
    return ", ".join(items[:SHOWN]) + (f" … (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def plan_tiles(plan: IsolationPlan) -> list:
    """The headline figures as the wall's tiles."""
    unit = plan.supply_unit.replace("_", "/")
    tiles = [("valves to close", len(plan.valves_to_close),
              f"{len(plan.valves_feeding)} feeding" if plan.valves_to_close else plan.convention),
             ("section", f"{plan.section_length_m:,.0f} m", f"{len(plan.section_links)} pipes"),
             ("cut off directly", len(plan.customers_direct), "customers in the section"),
             ("unsupplied downstream", len(plan.customers_downstream), f"{len(plan.nodes_downstream)} nodes"),
             ("customer-hours", f"{plan.customer_hours:,.0f}", f"{plan.repair_hours:g} h repair"),
             ("supply lost", f"{plan.supply_lost:.4g}", f"{unit} · {plan.undelivered:,.1f} {plan.undelivered_unit}")]
    p = plan.pressure
    if p is not None:
        tiles.append(("pressure check", "converged" if p.converged else "FAILED",
                      f"{len(p.below_min)} below min ({len(p.newly_below_min)} new)"))
        if p.lowest_gauge_pa is not None:
            tiles.append(("lowest after", f"{p.lowest_gauge_pa / 100.0:,.1f}", f"mbar(g) at {p.lowest_node}"))
    return [html.Div(className="kpi", children=[html.Div(k, className="kpi-label"),
                                                html.Div(str(v), className="kpi-value"),
                                                html.Div(s, className="kpi-sub")]) for k, v, s in tiles]


def plan_details(plan: IsolationPlan) -> html.Table:
    rows = [("convention", plan.note), ("valves to close", _some(plan.valves_to_close)),
            ("of which feeding", _some(plan.valves_feeding)), ("already closed", _some(plan.valves_already_closed))]
    if plan.squeeze_points:
        rows.append(("squeeze off at", _some(plan.squeeze_points)))
    rows += [("section pipes", _some(plan.section_links)), ("sources shut in", _some(plan.sources_shut_in)),
             ("customers cut off directly", _some(plan.customers_direct)),
             ("customers unsupplied downstream", _some(plan.customers_downstream))]
    p = plan.pressure
    if p is not None:
        rows += [("pressure check", f"{p.message}; minimum {p.min_pressure_gauge_pa / 100.0:g} mbar(g); "
                                    f"{p.below_min_before} below it before"),
                 ("below minimum after", _some([f"{n} ({g / 100.0:.1f} mbar)" for n, g in
                                                zip(p.below_min, p.below_min_gauge_pa)])),
                 ("newly below minimum", _some(p.newly_below_min))]
    return html.Table(className="zones", id="iso-details",
                      children=[html.Tr([html.Th(k), html.Td(v)]) for k, v in rows])


def layout(ctx: WallContext, search: str = "") -> html.Div:
    query = parse_qs((search or "").lstrip("?"))
    pipe = query.get("pipe", [""])[0]
    path = network_path(ctx)
    if path is None:
        why = (f"network file {ctx.network_file!r} not found" if ctx.network_file else "no network file")
        return html.Div(className="isolation", children=[html.H2("isolation plan", id="iso-title"), html.Div(
            f"{why}: start the wall with --network-file FILE (the network the twin runs on, a file, folder or "
            "bundled example such as schutterwald) to plan isolations from the map", className="quiet",
            id="iso-message")])
    if not pipe:
        return html.Div(className="isolation", children=[html.H2("isolation plan", id="iso-title"), html.Div(
            "click a pipe on the wall, then 'isolation plan' on its drill-down page", className="quiet",
            id="iso-message")])
    try:
        hours = float(query.get("hours", [DEFAULT_REPAIR_HOURS])[0])
        plan = cached_plan(path, pipe, hours)
    except ValueError as exc:
        return html.Div(className="isolation", children=[html.H2(f"isolation plan · {pipe}", id="iso-title"),
                                                         html.Div(str(exc), className="quiet", id="iso-message")])
    geom = model_geometry(load_model(path))
    return html.Div(className="isolation", children=[
        html.H2(f"isolation plan · {pipe}", id="iso-title"),
        html.Div(f"network {path.name} · {plan.note}", className="quiet"),
        html.Div(className="actions", children=[
            dcc.Link("back to the pipe", href=f"/asset?{urlencode({'id': pipe})}"),
            *[dcc.Link(f"{h:g} h repair", href=f"/isolation?{urlencode({'pipe': pipe, 'hours': f'{h:g}'})}",
                       className="btn" if h == hours else "") for h in (2.0, 4.0, 8.0, 24.0)]]),
        html.Div(plan_tiles(plan), className="kpis", id="iso-kpis"),
        dcc.Store(id="iso-hours", data=hours),
        html.Div(className="wall-main", children=[
            html.Div(className="wall-map", children=[
                dcc.Graph(id="iso-map", figure=plan_figure(geom, plan), config=GRAPH_CONFIG)]),
            html.Div(className="wall-side", children=[plan_details(plan)]),
        ]),
    ])


def click_target(click: dict | None, hours: float | None = None) -> str | None:
    """Where a click on the plan's map leads: the plan of the pipe clicked."""
    points = (click or {}).get("points") or []
    pipe = points[0].get("customdata") if points else None
    if not isinstance(pipe, str):
        return None
    return f"/isolation?{urlencode({'pipe': pipe, **({'hours': f'{hours:g}'} if hours else {})})}"


def register(app, ctx: WallContext) -> None:
    @app.callback(Output("url", "href", allow_duplicate=True), Input("iso-map", "clickData"),
                  State("iso-hours", "data"), prevent_initial_call=True)
    def replan(click, hours):
        target = click_target(click, hours)
        if target is None:
            raise PreventUpdate
        return target
