"""The alert console: every alert with filters, one alert's evidence and leak candidates on the map,
and the operator's acknowledge / clear, written back to Redis so every subscriber sees it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dash_table, dcc, html
from dash.exceptions import PreventUpdate

from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.figures import (BACKGROUND, SEVERITY_COLOURS, STATUS_COLOURS, evidence_figure, segments)

COLUMNS = ["severity", "status", "kind", "subject", "opened", "updated", "revision", "message", "id"]


def _time(ns) -> str:
    return "" if not ns else datetime.fromtimestamp(int(ns) / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def rows(alerts: list[dict]) -> list[dict]:
    return [{"severity": a["severity"], "status": a["status"], "kind": a["kind"], "subject": a["subject"],
             "opened": _time(a["opened_ns"]), "updated": _time(a["updated_ns"]), "revision": a["revision"],
             "message": a.get("message", ""), "id": a["id"]} for a in alerts]


def alert_list(ctx: WallContext, history: bool) -> list[dict]:
    """Open alerts, or with ``history`` the latest revision of every alert in the stream."""
    if not history:
        return ctx.store.open_alerts()
    latest: dict[str, dict] = {}
    for a in ctx.store.alert_history(5000):        # newest first: the first seen is the latest
        latest.setdefault(a["id"], a)
    return list(latest.values())


# the kinds the flow's detectors raise (the alert contract; tests/dashboards/test_wall.py checks
# this list against flows/detectors, which the wall may not import)
ALERT_KINDS = ("leak", "anomaly", "pressure_limit", "supply", "data_quality", "balance",
               "meter_leak", "meter_theft", "meter_stopped", "meter_usage_change")


def layout(ctx: WallContext, search: str) -> html.Div:
    chosen = parse_qs((search or "").lstrip("?")).get("id", [None])[0]
    select = lambda i, name, options: dcc.Dropdown(id=i, options=options, multi=True, placeholder=name,  # noqa: E731
                                                   className="filter")
    return html.Div(className="console", children=[
        html.Div(className="filters", children=[
            select("f-status", "status", ["open", "acknowledged", "cleared"]),
            select("f-severity", "severity", list(SEVERITY_COLOURS)),
            select("f-kind", "kind", list(ALERT_KINDS)),
            dcc.Checklist(id="f-history", options=[{"label": " history (cleared too)", "value": "all"}], value=[],
                          inline=True),
        ]),
        dash_table.DataTable(
            id="alert-table", columns=[{"name": c, "id": c} for c in COLUMNS], data=[], page_size=15,
            row_selectable="single", sort_action="native", style_as_list_view=True,
            style_header={"backgroundColor": "#222", "color": "#eee", "fontWeight": "bold"},
            style_cell={"backgroundColor": "#171a21", "color": "#e8e8e8", "textAlign": "left",
                        "maxWidth": 380, "overflow": "hidden", "textOverflow": "ellipsis", "fontSize": 15},
            style_data_conditional=[{"if": {"filter_query": f"{{severity}} = {s}", "column_id": "severity"},
                                     "backgroundColor": c, "color": "#000"} for s, c in SEVERITY_COLOURS.items()]
            + [{"if": {"filter_query": f"{{status}} = {s}", "column_id": "status"}, "color": c}
               for s, c in STATUS_COLOURS.items()]),
        dcc.Store(id="alert-chosen", data=chosen),
        dcc.Store(id="alert-version", data=""),
        html.Div(id="alert-detail", className="detail"),
        html.Div(className="actions", children=[
            dcc.Input(id="op-name", placeholder="your name", value="", debounce=False),
            dcc.Input(id="op-note", placeholder="note (optional)", value=""),
            html.Button("Acknowledge", id="btn-ack", n_clicks=0, className="btn"),
            html.Button("Clear", id="btn-clear", n_clicks=0, className="btn"),
            html.Span(id="op-result", className="op-result"),
        ]),
    ])


def candidates_figure(ctx: WallContext, alert: dict) -> go.Figure | None:
    cands = alert.get("candidates") or []
    geom = ctx.geometry()
    if not cands or geom is None:
        return None
    fig = go.Figure()
    xs, ys = segments(geom, np.arange(len(geom.link_ids)))
    fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", line=dict(color="#555", width=1.5), hoverinfo="skip",
                               name="network"))
    search_area = (alert.get("evidence") or {}).get("search_area_links") or []
    if search_area:
        idx = np.flatnonzero(np.isin(geom.link_ids, search_area))
        sx, sy = segments(geom, idx)
        fig.add_trace(go.Scattergl(x=sx, y=sy, mode="lines", line=dict(color="#E69F00", width=4),
                                   name="search area"))
    scores = [c["score"] for c in cands]
    top = max(scores) if scores else 1.0
    fig.add_trace(go.Scattergl(x=[c["x"] for c in cands], y=[c["y"] for c in cands], mode="markers+text",
                               text=[f"{i + 1}. {c['element']}" for i, c in enumerate(cands)],
                               textposition="top center", name="candidates",
                               marker=dict(size=[8 + 14 * (s / top if top else 0) for s in scores], color="#D55E00",
                                           symbol="x")))
    fig.update_layout(template="plotly_dark", paper_bgcolor=BACKGROUND, plot_bgcolor=BACKGROUND, height=420,
                      margin=dict(l=5, r=5, t=30, b=5), title=dict(text="leak candidates", font=dict(size=13)),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def detail(ctx: WallContext, alert: dict | None) -> list:
    if alert is None:
        return [html.Div("select an alert", className="quiet")]
    ev = {k: v for k, v in (alert.get("evidence") or {}).items() if not isinstance(v, list) or len(v) <= 12}
    children = [
        html.H3([html.Span(alert["severity"], className="sev",
                           style={"background": SEVERITY_COLOURS[alert["severity"]]}),
                 f" {alert['kind']} · {alert['subject']} · ", html.Span(alert["status"], id="detail-status")]),
        html.Div(alert.get("message", ""), className="detail-message"),
        html.Div(f"opened {_time(alert['opened_ns'])} · updated {_time(alert['updated_ns'])} · "
                 f"revision {alert['revision']} · id {alert['id']}", className="quiet"),
        html.Div(className="detail-row", children=[
            dcc.Graph(figure=evidence_figure(alert), config=GRAPH_CONFIG, style={"flex": "1"}),
            html.Pre(json.dumps(ev, indent=1, default=str)[:4000], className="evidence-json"),
        ]),
    ]
    fig = candidates_figure(ctx, alert)
    if fig is not None:
        children.append(dcc.Graph(id="candidates-map", figure=fig, config=GRAPH_CONFIG))
        children.append(html.Ol([html.Li(f"{c['element']} (score {c['score']:.3g})")
                                 for c in alert.get("candidates", [])]))
    return children


def register(app, ctx: WallContext) -> None:
    @app.callback(Output("alert-table", "data"), Output("alert-version", "data"),
                  Input("tick", "n_intervals"), Input("f-status", "value"), Input("f-severity", "value"),
                  Input("f-kind", "value"), Input("f-history", "value"), Input("op-result", "children"),
                  State("alert-version", "data"), State("alert-table", "data"))
    def table(_n, status, severity, kind, history, _acted, seen, current):
        version = ctx.store.alerts_version() + json.dumps([status, severity, kind, history])
        if version == seen and current:
            raise PreventUpdate
        alerts = alert_list(ctx, bool(history) or bool(status and "cleared" in status))
        keep = [a for a in alerts if (not status or a["status"] in status)
                and (not severity or a["severity"] in severity) and (not kind or a["kind"] in kind)]
        keep.sort(key=lambda a: -a["updated_ns"])
        return rows(keep), version

    @app.callback(Output("alert-chosen", "data"), Input("alert-table", "selected_rows"),
                  State("alert-table", "data"), prevent_initial_call=True)
    def choose(selected, data):
        if not selected or not data or selected[0] >= len(data):
            raise PreventUpdate
        return data[selected[0]]["id"]

    @app.callback(Output("alert-detail", "children"), Input("alert-chosen", "data"), Input("op-result", "children"),
                  Input("alert-version", "data"))
    def show(alert_id, _acted, _version):
        return detail(ctx, ctx.store.alert(alert_id) if alert_id else None)

    @app.callback(Output("op-result", "children"), Input("btn-ack", "n_clicks"), Input("btn-clear", "n_clicks"),
                  State("alert-chosen", "data"), State("op-name", "value"), State("op-note", "value"),
                  prevent_initial_call=True)
    def act(n_ack, n_clear, alert_id, name, note):
        from dash import ctx as cb
        if not alert_id:
            return "select an alert first"
        if not (name or "").strip():
            return "enter your name: the record says who acted"
        status = "acknowledged" if cb.triggered_id == "btn-ack" else "cleared"
        try:
            stored = ctx.store.operator_action(alert_id, status, name.strip(), note or "")
        except (KeyError, ValueError) as exc:
            return f"not done: {exc}"
        return f"{status} by {name.strip()} (revision {stored['revision']})"
