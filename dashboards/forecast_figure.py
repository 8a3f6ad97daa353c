"""The wall's forecast panel: each zone's demand as the twin sees it over the strip's window
against what the forecast expected for those hours, then the next 24 hours (docs/forecast.md).

Everything comes from the tick summaries the flow writes (``zone_demand_kg_s``,
``zone_forecast_kg_s`` per tick; ``forecast_hour_ns`` and ``forecast_kg_s``, the next 24 hours
per series, in the latest), so the panel needs no key of its own. It is redrawn when the forecast
moves to a new hour and otherwise every ``EVERY_S``: the forecast is hourly, a tick adds little.
"""

from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State
from dash.exceptions import PreventUpdate

HOUR_NS = 3_600_000_000_000
EVERY_S = 60.0
HISTORY_TICKS = 3600          # the strip's window: the last hour at 1 s ticks
COLOURS = ("#56B4E9", "#E69F00", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")


def _iso(ts_ns) -> str:
    return np.datetime64(int(ts_ns), "ns").astype(str)


def _column(summaries: list[dict], key: str, i: int) -> list:
    out = []
    for s in summaries:
        v = s.get(key)
        out.append(v[i] if isinstance(v, list) and i < len(v) and v[i] is not None else None)
    return out


def forecast_figure(summaries: list[dict], latest: dict | None, medium: str = "natural_gas",
                    height: int = 300) -> go.Figure:
    """Per zone: the twin's demand over ``summaries`` (solid), the forecast for those hours
    (dotted) and the forecast from ``latest``'s hour for the next 24 hours (dashed, hourly steps).
    A title says so when there is no forecast yet (the first hour of a run)."""
    unit = "m³/s" if medium == "water" else "kg/s"
    fig = go.Figure()
    latest = latest or (summaries[-1] if summaries else {})
    ahead = latest.get("forecast_kg_s") or {}
    zones = sorted((k for k in ahead if k.startswith("zone")), key=lambda k: int(k[4:]))
    n_zones = max([len(s.get("zone_demand_kg_s") or []) for s in summaries] + [len(zones)])
    t = [_iso(s["ts_ns"]) for s in summaries]
    for z in range(n_zones):
        colour = COLOURS[z % len(COLOURS)]
        name = f"zone {z}"
        if summaries:
            fig.add_trace(go.Scatter(x=t, y=_column(summaries, "zone_demand_kg_s", z), mode="lines", name=name,
                                     legendgroup=name, line=dict(color=colour, width=1.5)))
            fig.add_trace(go.Scatter(x=t, y=_column(summaries, "zone_forecast_kg_s", z), mode="lines",
                                     name=f"{name} expected", legendgroup=name, showlegend=False,
                                     line=dict(color=colour, width=1, dash="dot")))
        values = ahead.get(f"zone{z}")
        if values and latest.get("forecast_hour_ns") is not None:
            start = int(latest["forecast_hour_ns"])
            xs = [_iso(start + k * HOUR_NS) for k in range(len(values) + 1)]
            fig.add_trace(go.Scatter(x=xs, y=list(values) + [values[-1]], mode="lines", line_shape="hv",
                                     name=f"{name} next 24 h", legendgroup=name, showlegend=False,
                                     line=dict(color=colour, width=1.5, dash="dash")))
    title = "zone demand: twin (solid), expected (dotted), next 24 h (dashed)" if zones else \
        "zone demand (the forecast starts once an hour has been learned)"
    fig.update_layout(template="plotly_dark", height=height, margin=dict(l=70, r=10, t=28, b=24),
                      title=dict(text=title, font=dict(size=12), x=0.01), uirevision="forecast",
                      yaxis_title=unit, legend=dict(orientation="h", y=-0.15))
    return fig


def forecast_table(latest: dict) -> list[dict]:
    """The next hours per zone as rows (hour start ISO, zone, kg/s): what the figure draws dashed."""
    ahead = latest.get("forecast_kg_s") or {}
    if latest.get("forecast_hour_ns") is None:
        return []
    start = int(latest["forecast_hour_ns"])
    return [{"hour": _iso(start + k * HOUR_NS), "series": name, "value": v}
            for name, values in ahead.items() for k, v in enumerate(values)]


def register(app, ctx) -> None:
    """The panel's own callback on the wall's poll: redraw when the forecast hour moves or
    ``EVERY_S`` has passed."""

    @app.callback(Output("wall-forecast", "figure"), Output("wall-forecast-memo", "data"),
                  Input("tick", "n_intervals"), State("wall-forecast-memo", "data"))
    def refresh(_n, memo):
        memo = memo or {}
        summary = ctx.store.summary()
        if summary is None:
            raise PreventUpdate
        hour = summary.get("forecast_hour_ns")
        if memo.get("hour") == hour and time.monotonic() - memo.get("at", 0.0) < EVERY_S:
            raise PreventUpdate
        geom = ctx.geometry()
        _, history = ctx.store.recent(HISTORY_TICKS)
        fig = forecast_figure(history, summary, geom.medium if geom is not None else "natural_gas")
        return fig, {"hour": hour, "at": time.monotonic()}
