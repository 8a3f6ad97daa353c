"""Asset and sensor drill-down: one node, pipe or sensor, its live value, and its sensors' measured
and estimated series from the historian with min / max / mean over a day, week, month or year."""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np
import pyarrow as pa
from dash import Input, Output, State, dash_table, dcc, html
from dash.exceptions import PreventUpdate

from pipetwin.dashboards import history
from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.figures import pressure_units, series_figure


def resolve(ctx: WallContext, element: str) -> dict | None:
    """What ``element`` is (node, link or point) and the sensors that measure it."""
    geom = ctx.geometry()
    if geom is None or not element:
        return None
    nodes = {n: i for i, n in enumerate(geom.node_ids)}
    links = {n: i for i, n in enumerate(geom.link_ids)}
    points = {p: i for i, p in enumerate(geom.point_ids)}
    if element in points:
        r = points[element]
        e = int(geom.point_element[r])
        on_node = bool(geom.point_on_node[r])
        target = (geom.node_ids if on_node else geom.link_ids)[e] if e >= 0 else None
        return {"kind": "sensor", "id": element, "element": target, "on_node": on_node, "sensors": [element]}
    if element in nodes:
        i = nodes[element]
        sensors = [p for p, e, n in zip(geom.point_ids, geom.point_element, geom.point_on_node) if n and e == i]
        return {"kind": f"node ({geom.node_kind[i]})", "id": element, "element": element, "on_node": True,
                "sensors": sensors, "index": i}
    if element in links:
        i = links[element]
        sensors = [p for p, e, n in zip(geom.point_ids, geom.point_element, geom.point_on_node) if not n and e == i]
        return {"kind": f"link ({geom.link_kind[i]})", "id": element, "element": element, "on_node": False,
                "sensors": sensors, "index": i, "length_m": float(geom.length_m[i]),
                "from": geom.node_ids[geom.fr[i]], "to": geom.node_ids[geom.to[i]]}
    return None


def live_values(ctx: WallContext, what: dict) -> list[str]:
    state = ctx.store.state()
    if state is None:
        return []
    geom = ctx.geometry()
    p = state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False)
    units = pressure_units(geom.medium, p)
    element = what.get("element")
    out = []
    if what.get("on_node") and element is not None:
        i = int(np.flatnonzero(geom.node_ids == element)[0])
        out.append(f"pressure now {float(units(p[i])):.4g} {units.label} ({p[i]:,.0f} Pa absolute)"
                   if geom.medium != "water" else f"pressure now {float(units(p[i])):.4g} m")
        if bool(state["nodes"]["unsupplied"][i].as_py()):
            out.append("UNSUPPLIED")
        out.append(f"estimated demand {state['nodes']['demand'][i].as_py():.5g}")
    elif element is not None:
        i = int(np.flatnonzero(geom.link_ids == element)[0])
        out.append(f"flow now {state['links']['flow'][i].as_py():.5g} · velocity "
                   f"{state['links']['velocity_m_s'][i].as_py():.3g} m/s")
    return out


def layout(ctx: WallContext, search: str) -> html.Div:
    element = parse_qs((search or "").lstrip("?")).get("id", [""])[0]
    what = resolve(ctx, element)
    if what is None:
        return html.Div(className="drill", children=[
            html.H2(f"{element or 'nothing'} is not an element of network {ctx.network}" if element
                    else "click a node, pipe or sensor on the wall"),
        ])
    facts = [f"{what['kind']} {what['id']}"]
    if "length_m" in what:
        facts.append(f"from {what['from']} to {what['to']}, {what['length_m']:,.0f} m")
    if what["kind"] == "sensor":
        facts.append(f"measures {what['element']}")
    return html.Div(className="drill", children=[
        html.H2(" · ".join(facts), id="drill-title"),
        html.Div(" · ".join(live_values(ctx, what)), className="quiet"),
        html.A("isolation plan", href=f"/isolation?pipe={element}", id="drill-isolation", className="btn")
        if "length_m" in what else None,
        dcc.RadioItems(id="drill-period", value="day", inline=True,
                       options=[{"label": f" {p}", "value": p} for p in history.PERIODS]),
        dcc.Store(id="drill-sensors", data=what["sensors"]),
        html.Div(id="drill-series", children=[] if what["sensors"] else [
            html.Div("no sensor measures this element; the wall shows the twin's estimate", className="quiet")]),
    ])


def completeness_text(ctx: WallContext, point: str, series: pa.Table, received: int) -> str:
    """Readings received against what the point's expected period promises over the span the
    historian covers in the window (a history that starts mid-window is not counted as missing
    before it starts)."""
    tables = ctx.store.network_tables()
    if tables is None or series.num_rows < 2:
        return "completeness: not enough history"
    points = tables["points"]
    row = points["point"].to_pylist().index(point)
    period = float(points["period_s"][row].as_py() or 0.0)
    ts = series["ts"].cast("int64").to_numpy()
    span_s = (int(ts.max()) - int(ts.min())) / 1e9 + period
    if period <= 0 or span_s <= 0:
        return "completeness: no expected period"
    share = min(received / (span_s / period), 1.0)
    return f"completeness {100.0 * share:.1f} % ({received} of {span_s / period:.0f} expected)"


def register(app, ctx: WallContext) -> None:
    @app.callback(Output("drill-series", "children"), Input("drill-period", "value"),
                  State("drill-sensors", "data"))
    def show(period, sensors):
        if not sensors:
            raise PreventUpdate
        if ctx.historian is None:
            return [html.Div("no historian configured (start the wall with --historian)", className="quiet")]
        geom = ctx.geometry()
        now = ctx.now()
        out = []
        for point in sensors:
            table = history.series(ctx.historian, ctx.network, point, period, now)
            r = int(np.flatnonzero(geom.point_ids == point)[0])
            unit = None
            if geom.point_quantity[r] == "pressure":
                m = table["measured"].to_numpy(zero_copy_only=False).astype(float) if table.num_rows else np.array([])
                unit = pressure_units(geom.medium, m if len(m) else np.array([101325.0]))
            stats = history.statistics(table)
            quality = history.quality_counts(ctx.historian, ctx.network, point, period, now)
            shown = (lambda v: None if v is None else round(float(unit(v)) if unit else v, 4))
            out.append(html.Div(className="drill-sensor", id=f"series-{point}", children=[
                dcc.Graph(figure=series_figure(table, f"{point}: measured and twin estimate, last {period}", unit),
                          config=GRAPH_CONFIG),
                dash_table.DataTable(
                    columns=[{"name": c, "id": c} for c in ("series", "min", "max", "mean", "count")],
                    data=[{"series": k, "min": shown(v["min"]), "max": shown(v["max"]), "mean": shown(v["mean"]),
                           "count": v["count"]} for k, v in stats.items()],
                    style_cell={"backgroundColor": "#171a21", "color": "#e8e8e8"},
                    style_header={"backgroundColor": "#222", "color": "#eee"}),
                html.Div("readings by quality: " + (", ".join(f"{k} {v}" for k, v in quality.items()) or "none")
                         + " · " + completeness_text(ctx, point, table, sum(quality.values())),
                         className="quiet", id=f"quality-{point}"),
            ]))
        return out
