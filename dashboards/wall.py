"""The wall: the network live on a map, the headline figures, open alerts and the last hours.

One short poll (``poll_ms``, 500 ms by default) asks Redis for the latest tick's timestamp only
(one GET of a small JSON); when it moved, the callback reads the state and sends a compact frame
that the browser draws itself (figures.map_frame, assets/wall.js); the figure and the network's
geometry travel once per page load. So the wall shows a new state within about half a poll plus
drawing time, and an idle wall costs one tiny request per poll.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from pipetwin.dashboards import forecast_figure
from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.figures import (SEVERITY_COLOURS, geometry_arrays, map_figure, map_frame, pressure_units,
                                         strip_extend, strip_figure, strip_rows)

STRIP_TICKS = 3600          # the strip's history: the last hour at 1 s ticks
STRIP_EVERY_S = 5.0         # how often the strip takes in new ticks


def layout(ctx: WallContext) -> html.Div:
    return html.Div(className="wall", children=[
        html.Div(id="wall-kpis", className="kpis"),
        html.Div(className="wall-main", children=[
            html.Div(className="wall-map", children=[
                html.Div(className="controls", children=[
                    dcc.RadioItems(id="wall-quantity", value="pressure", inline=True,
                                   options=[{"label": " pressure", "value": "pressure"},
                                            {"label": " velocity", "value": "velocity"},
                                            {"label": " flow", "value": "flow"}]),
                    dcc.Checklist(id="wall-contours", value=["on"], inline=True,
                                  options=[{"label": " isobars", "value": "on"}]),
                    html.Span(id="wall-ts", className="stamp", **{"data-ts": "0"}),
                ]),
                dcc.Graph(id="wall-map", config=GRAPH_CONFIG, style={"height": "72vh"},
                          figure={"layout": {"template": "plotly_dark"}}),
            ]),
            html.Div(className="wall-side", children=[
                html.H3("Open alerts"),
                html.Div(id="wall-alerts", className="alert-list"),
                html.H3("Zones"),
                html.Div(id="wall-zones"),
            ]),
        ]),
        dcc.Graph(id="wall-strip", config=GRAPH_CONFIG, figure={"layout": {"template": "plotly_dark"}}),
        dcc.Graph(id="wall-forecast", config=GRAPH_CONFIG, figure={"layout": {"template": "plotly_dark"}}),
        dcc.Store(id="wall-forecast-memo", data={}),
        dcc.Store(id="wall-memo", data={}),
        dcc.Store(id="wall-base"), dcc.Store(id="wall-geo"), dcc.Store(id="wall-frame"),
    ])


def _fmt(value, digits: int = 4, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:,.{digits}g} {unit}".strip() if isinstance(value, (int, float)) else str(value)


def kpi_tiles(summary: dict, alerts: list[dict], medium: str, n_sensors: int) -> list:
    """The headline figures, each a tile a person can read from across the room."""
    p_min = summary.get("min_pressure_pa")
    units = pressure_units(medium, np.array([summary.get("max_pressure_pa") or p_min or 101325.0], float))
    lag = datetime.now(timezone.utc).timestamp() - summary["ts_ns"] / 1e9
    flow_unit = "kg/s" if medium != "water" else "m³/s"
    by_sev = {s: sum(1 for a in alerts if a["severity"] == s) for s in SEVERITY_COLOURS}
    tiles = [
        ("inflow", _fmt(summary.get("inflow_kg_s"), 4, flow_unit), None),
        ("consumption", _fmt(summary.get("consumption_kg_s"), 4, flow_unit), None),
        ("unaccounted (last hour)", _fmt(summary.get("ufg_pct"), 3, "%"), None),
        ("line pack", _fmt(summary.get("line_pack_kg"), 5, "kg"), None),
        ("min pressure", _fmt(None if p_min is None else float(units(p_min)), 4, units.label),
         summary.get("min_pressure_node")),
        ("sensors reporting", f"{summary.get('sensors_reporting', 0)} / {n_sensors}",
         _fmt(100 * summary["availability_mean"], 3, "% last hour") if summary.get("availability_mean") is not None
         else None),
        ("unsupplied nodes", str(summary.get("unsupplied_nodes", 0)), None),
        ("twin", "converged" if summary.get("converged") else "NOT converged",
         f"χ² {_fmt(summary.get('chi2'), 3)} · {_fmt(summary.get('solve_ms'), 3, 'ms')} · "
         + (f"lag {lag:.1f} s" if lag < 3600 else "replay")),
    ]
    out = [html.Div(className="kpi", children=[html.Div(label, className="kpi-label"),
                                               html.Div(value, className="kpi-value"),
                                               html.Div(sub or "", className="kpi-sub")])
           for label, value, sub in tiles]
    out.append(html.Div(className="kpi", children=[
        html.Div("open alerts", className="kpi-label"),
        html.Div(className="kpi-value", children=[
            html.Span(str(n), className="sev", style={"background": SEVERITY_COLOURS[s]}, title=s)
            for s, n in by_sev.items()]),
        html.Div(" · ".join(f"{n} {s}" for s, n in by_sev.items() if n) or "none", className="kpi-sub")]))
    return out


def alert_items(alerts: list[dict]) -> list:
    rank = {"critical": 0, "major": 1, "warning": 2, "info": 3}
    items = []
    for a in sorted(alerts, key=lambda a: (rank.get(a["severity"], 9), -a["updated_ns"]))[:30]:
        when = datetime.fromtimestamp(a["opened_ns"] / 1e9, tz=timezone.utc).strftime("%H:%M:%S")
        items.append(html.A(href=f"/alerts?id={a['id']}", className=f"alert-item {a['status']}",
                            id={"type": "wall-alert", "id": a["id"]}, children=[
            html.Span(a["severity"], className="sev", style={"background": SEVERITY_COLOURS[a["severity"]]}),
            html.Span(f" {a['kind']} · {a['subject']} ", className="alert-subject"),
            html.Span(f"{when} · {a['status']}", className="alert-when"),
            html.Div(a.get("message", ""), className="alert-message")]))
    return items or [html.Div("no open alerts", className="quiet")]


def zone_rows(summary: dict) -> html.Table:
    """Per zone: the demand multiplier the twin estimates, the forecast's for this hour, and the
    last closed hour's unaccounted-for gas (the twin's estimate of what the zone took less its
    meters: docs/forecast.md, flows/steps/balance.py)."""
    mult = summary.get("zone_multipliers") or []
    expected = summary.get("forecast_multipliers") or []     # the current hour's forecast (docs/forecast.md)
    ufg_kg = summary.get("zone_ufg_kg") or []
    ufg_pct = summary.get("zone_ufg_pct") or []

    def cell(values: list, i: int, fmt: str) -> str:
        return fmt.format(values[i]) if i < len(values) and values[i] is not None else "–"

    head = html.Tr([html.Th("zone"), html.Th("demand × estimated"), html.Th("× expected"),
                    html.Th("unaccounted (last hour)")])
    return html.Table(className="zones", children=[head] + [
        html.Tr([html.Td(str(i)), html.Td(f"{m:.3f}"), html.Td(cell(expected, i, "{:.3f}")),
                 html.Td(f"{cell(ufg_kg, i, '{:,.1f} kg')} · {cell(ufg_pct, i, '{:+.1f} %')}"
                         if i < len(ufg_kg) else "–")])
        for i, m in enumerate(mult)])


def register(app, ctx: WallContext) -> None:
    forecast_figure.register(app, ctx)        # the zones' demand against the forecast, and the next 24 h
    app.clientside_callback(ClientsideFunction(namespace="wall", function_name="draw"),
                            Output("wall-map", "figure"), Output("wall-ts", "children"), Output("wall-ts", "data-ts"),
                            Input("wall-frame", "data"), State("wall-base", "data"), State("wall-geo", "data"))

    @app.callback(
        Output("wall-base", "data"), Output("wall-geo", "data"), Output("wall-frame", "data"),
        Output("wall-strip", "figure"), Output("wall-memo", "data"),
        Output("wall-kpis", "children"), Output("wall-alerts", "children"), Output("wall-zones", "children"),
        Input("tick", "n_intervals"), Input("wall-quantity", "value"), Input("wall-contours", "value"),
        State("wall-memo", "data"))
    def refresh(_n, quantity, contours, memo):
        memo = memo or {}
        summary = ctx.store.summary()
        alerts_version = ctx.store.alerts_version()
        view = [quantity, bool(contours)]
        fresh = memo.get("view") != view
        if summary is None:
            raise PreventUpdate
        ts = int(summary["ts_ns"])
        if not fresh and memo.get("ts") == ts and memo.get("alerts") == alerts_version:
            raise PreventUpdate
        geom = ctx.map_geometry()       # with map tiles: in web mercator metres
        if geom is None:
            raise PreventUpdate
        alerts = ctx.store.open_alerts()
        alert_children = alert_items(alerts)
        n_sensors = int(np.isin(geom.point_quantity, ["pressure", "flow"]).sum())
        if not fresh and memo.get("ts") == ts:        # only the alerts moved (e.g. an acknowledgement)
            memo = {**memo, "alerts": alerts_version}
            return (no_update, no_update, no_update, no_update, memo,
                    kpi_tiles(summary, alerts, geom.medium, n_sensors), alert_children, no_update)
        state = ctx.store.state()
        if state is None:
            raise PreventUpdate
        stamp = datetime.fromtimestamp(ts / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        frame = map_frame(geom, state, quantity, bool(contours), None if fresh else memo.get("range"))
        frame["stamp"] = stamp
        if fresh or memo.get("strip_id") is None:
            base, _ = map_figure(geom, None, quantity, bool(contours))
            geo = geometry_arrays(geom)
            last_id, history = ctx.store.recent(STRIP_TICKS)
            strip_out = strip_figure(history, geom.medium)
            rows, shown = strip_rows(history), len(history)
        elif time.monotonic() - memo.get("strip_at", 0.0) < STRIP_EVERY_S:
            # the strip spans an hour: redrawing it with every tick would cost the map its frame rate
            base, geo, strip_out = no_update, no_update, no_update
            last_id, rows, shown = memo["strip_id"], memo["strip_rows"], memo["strip_n"]
        else:
            base, geo = no_update, no_update
            last_id, new = ctx.store.after(memo["strip_id"])
            rows, shown = memo["strip_rows"], memo["strip_n"] + len(new)
            drop = max(0, shown - STRIP_TICKS)
            shown -= drop
            strip_out = strip_extend(new, rows, geom.medium, drop) if new else no_update
        memo = {"view": view, "ts": ts, "alerts": alerts_version, "range": frame["range"],
                "strip_id": last_id, "strip_rows": rows,
                "strip_n": shown, "strip_at": memo.get("strip_at", 0.0) if strip_out is no_update else time.monotonic()}
        return (base, geo, frame, strip_out, memo, kpi_tiles(state["summary"], alerts, geom.medium, n_sensors),
                alert_children, zone_rows(state["summary"]))

    @app.callback(Output("url", "href", allow_duplicate=True), Input("wall-map", "clickData"),
                  prevent_initial_call=True)
    def drill(click):
        if not click or not click.get("points"):
            raise PreventUpdate
        element = click["points"][0].get("customdata")
        if not element:
            raise PreventUpdate
        return f"/asset?id={element}"
