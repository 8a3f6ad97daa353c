"""Data quality: per point, how complete its data was over a window, how many readings the gate
quarantined and why, and whether it reports now."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from dash import Input, Output, dash_table, dcc, html
from dash.exceptions import PreventUpdate

from pipetwin.dashboards import history
from pipetwin.dashboards.context import WallContext

WINDOWS = {"last hour": timedelta(hours=1), "last day": timedelta(days=1), "last week": timedelta(days=7)}
REFRESH_EVERY = 10           # polls between refreshes: the historian changes slowly


def layout(ctx: WallContext) -> html.Div:
    return html.Div(className="quality", children=[
        dcc.RadioItems(id="q-window", value="last hour", inline=True,
                       options=[{"label": f" {w}", "value": w} for w in WINDOWS]),
        html.Div(id="q-summary", className="quiet"),
        dash_table.DataTable(
            id="q-table", page_size=25, sort_action="native", filter_action="native",
            columns=[{"name": c, "id": c} for c in ("point", "protocol", "quantity", "now", "expected", "received",
                                                    "completeness %", "quarantined", "reasons")],
            style_cell={"backgroundColor": "#171a21", "color": "#e8e8e8", "textAlign": "left", "fontSize": 15},
            style_header={"backgroundColor": "#222", "color": "#eee", "fontWeight": "bold"},
            style_data_conditional=[
                {"if": {"filter_query": "{completeness %} < 90", "column_id": "completeness %"},
                 "backgroundColor": "#E69F00", "color": "#000"},
                {"if": {"filter_query": "{quarantined} > 0", "column_id": "quarantined"},
                 "backgroundColor": "#D55E00", "color": "#000"},
                {"if": {"filter_query": "{now} = silent", "column_id": "now"}, "color": "#D55E00"}]),
    ])


def table_rows(ctx: WallContext, window: str) -> tuple[list[dict], str]:
    tables = ctx.store.network_tables()
    if tables is None:
        return [], "waiting for the flow to publish the network"
    state = ctx.store.state()
    reporting = {}
    if state is not None:
        s = state["sensors"]
        reporting = dict(zip(s["point"].to_pylist(), np.isfinite(s["measured"].to_numpy(zero_copy_only=False))))
    if ctx.historian is None:
        comp = None
    else:
        comp = history.completeness(ctx.historian, ctx.network, tables["points"], WINDOWS[window], ctx.now())
    points = tables["points"]
    out = []
    for i, p in enumerate(points["point"].to_pylist()):
        row = {"point": p, "protocol": points["protocol"][i].as_py(), "quantity": points["quantity"][i].as_py(),
               "now": ("reporting" if reporting[p] else "silent") if p in reporting else "–"}
        if comp is not None:
            share = comp["completeness"][i].as_py()
            row.update({"expected": round(comp["expected"][i].as_py() or 0),
                        "received": int(comp["received"][i].as_py()),
                        "completeness %": None if share is None or share != share else round(100 * share, 1),
                        "quarantined": comp["quarantined"][i].as_py(), "reasons": comp["reasons"][i].as_py()})
        out.append(row)
    shares = [r["completeness %"] for r in out if r.get("completeness %") is not None]
    quarantined = sum(r.get("quarantined", 0) for r in out)
    text = (f"{len(out)} points · mean completeness {np.mean(shares):.1f} % · {quarantined} readings quarantined"
            if shares else f"{len(out)} points · no historian data in the window")
    return out, text


def register(app, ctx: WallContext) -> None:
    @app.callback(Output("q-table", "data"), Output("q-summary", "children"),
                  Input("tick", "n_intervals"), Input("q-window", "value"))
    def refresh(n, window):
        from dash import ctx as cb
        if cb.triggered_id == "tick" and (n or 0) % REFRESH_EVERY:
            raise PreventUpdate
        return table_rows(ctx, window)
