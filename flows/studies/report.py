"""The study's HTML report: one self-contained file (plotly.js inlined once, no network access
needed to open it) with the figures a planner compares variants by and the summary tables.

Figure builders are pure (tables in, ``go.Figure`` out) so a Dash page can reuse them.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc

ATMOSPHERE_PA = 101325.0


def _mbar_gauge(values) -> list:
    return [None if v is None else (v - ATMOSPHERE_PA) / 100.0 for v in values]


def _by_variant(ticks: pa.Table):
    variants = list(dict.fromkeys(ticks["variant"].to_pylist()))
    for name in variants:
        rows = ticks.filter(pc.equal(ticks["variant"], name))
        yield name, rows


def min_pressure_figure(ticks: pa.Table, min_service_pa: float) -> go.Figure:
    fig = go.Figure()
    for name, rows in _by_variant(ticks):
        fig.add_trace(go.Scatter(x=rows["ts"].to_pylist(), y=_mbar_gauge(rows["min_pressure_pa"].to_pylist()),
                                 mode="lines", name=name))
    fig.add_hline(y=(min_service_pa - ATMOSPHERE_PA) / 100.0, line_dash="dash", line_color="red",
                  annotation_text="minimum service pressure")
    fig.update_layout(title="Lowest customer pressure", yaxis_title="mbar (gauge)", xaxis_title="time (UTC)")
    return fig


def customers_figure(ticks: pa.Table) -> go.Figure:
    fig = go.Figure()
    for name, rows in _by_variant(ticks):
        below = rows["customers_below_min"].to_numpy()
        cut = rows["customers_unsupplied"].to_numpy()
        fig.add_trace(go.Scatter(x=rows["ts"].to_pylist(), y=(below + cut).tolist(), mode="lines", name=name,
                                 customdata=list(zip(below.tolist(), cut.tolist())),
                                 hovertemplate="%{y} affected (%{customdata[0]} low, %{customdata[1]} cut off)"))
    fig.update_layout(title="Customers below minimum service pressure or unsupplied", yaxis_title="customers",
                      xaxis_title="time (UTC)")
    return fig


def line_pack_figure(ticks: pa.Table) -> go.Figure:
    fig = go.Figure()
    for name, rows in _by_variant(ticks):
        fig.add_trace(go.Scatter(x=rows["ts"].to_pylist(), y=rows["line_pack_kg"].to_pylist(), mode="lines",
                                 name=name))
    fig.update_layout(title="Line pack", yaxis_title="kg of gas in the pipes", xaxis_title="time (UTC)")
    return fig


def zone_min_figure(comparison: pa.Table) -> go.Figure:
    fig = go.Figure()
    for name, rows in _by_variant(comparison):
        fig.add_trace(go.Bar(x=rows["zone"].to_pylist(), y=_mbar_gauge(rows["min_pressure_pa"].to_pylist()),
                             name=name))
    fig.update_layout(title="Lowest customer pressure per zone", yaxis_title="mbar (gauge)", barmode="group")
    return fig


def _table_html(table: pa.Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.column_names)
    body = []
    for row in table.to_pylist():
        cells = []
        for v in row.values():
            text = f"{v:,.6g}" if isinstance(v, float) else ("" if v is None else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(path: Path, meta: dict, ticks: pa.Table, comparison: pa.Table, variants: pa.Table) -> None:
    figures = [min_pressure_figure(ticks, meta["min_service_pressure_pa"]), customers_figure(ticks),
               line_pack_figure(ticks), zone_min_figure(comparison)]
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    notes = (f"History: {html.escape(meta['history'])}; {meta['ticks']} ticks of {meta['tick_s']:g} s from "
             f"{html.escape(meta['start'])}. Minimum service pressure {meta['min_service_pressure_pa']:.0f} Pa "
             f"absolute ({(meta['min_service_pressure_pa'] - ATMOSPHERE_PA) / 100:.0f} mbar gauge). Methane is "
             f"{meta['methane_mass_fraction']:.3g} of the gas by mass ({html.escape(meta['composition'])}); "
             f"CO2e with GWP100 {meta['gwp100_methane']:g} (factor table {html.escape(meta['factors_version'])}, "
             f"{html.escape(meta['factors_date'])}). Each variant re-solves the demands the baseline replay "
             "estimated, on the network as its changes make it.")
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>What-if study: {html.escape(meta['study'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} th{{background:#eee}}</style></head>
<body><h1>What-if study: {html.escape(meta['study'])}</h1>
<p>{html.escape(meta.get('description', ''))}</p><p>{notes}</p>
<h2>Variants</h2>{_table_html(variants)}
{''.join(parts)}
<h2>Per zone</h2>{_table_html(comparison)}
</body></html>"""
    path.write_text(doc, encoding="utf-8")
