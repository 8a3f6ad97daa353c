"""Methane and CO2 accounting on the wall: the reports ``pipetwin carbon --out DIR`` wrote, read
from their CSV and JSON files (docs/carbon.md) under the folder the wall was started with
(``--reports``).

The page shows what a regulator asks for beside every figure: the factor table (version, date,
source), the method's constants, and the historian files each row came from (with their SHA-256
in ``carbon_sources.csv``), so a figure can be recomputed and checked against the audit ledger.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import plotly.graph_objects as go
from dash import dcc, html

from pipetwin.dashboards.context import GRAPH_CONFIG, WallContext
from pipetwin.dashboards.files import allowed_file, serve_folder
from pipetwin.dashboards.figures import PANEL
from pipetwin.dashboards.network_maps import VARIANT_COLOURS
from pipetwin.dashboards.studies import data_table

PERIODS = ("day", "week", "month", "year")
FACTORS = "carbon_factors.json"
TEXT_COLUMNS = {"period", "period_start", "network", "basis", "customer_class", "currency", "first_ts", "last_ts",
                "source_files", "factors_version", "factors_date", "factors_source", "path", "kind", "sha256"}


def find_reports(root: str | Path | None) -> list[dict]:
    """Carbon report folders under ``root`` (itself, or up to two levels down), newest first, with
    the periods each holds."""
    if root is None or not Path(root).is_dir():
        return []
    root = Path(root).resolve()
    found = []
    for pattern in (FACTORS, f"*/{FACTORS}", f"*/*/{FACTORS}"):
        for factors in root.glob(pattern):
            folder = factors.parent
            periods = [p for p in PERIODS if (folder / f"carbon_{p}_summary.csv").exists()]
            if not periods:
                continue
            rel = folder.relative_to(root).as_posix() or "."
            found.append({"id": rel, "folder": folder, "periods": periods, "mtime": factors.stat().st_mtime})
    return sorted(found, key=lambda r: -r["mtime"])


def read_csv(path: Path) -> list[dict]:
    """Rows with numbers as floats (empty cells None); text columns stay text."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            if k in TEXT_COLUMNS or v is None:
                row[k] = v
            elif v == "":
                row[k] = None
            else:
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
        out.append(row)
    return out


def load_report(folder: str | Path, period: str) -> dict:
    folder = Path(folder)
    factors_file = folder / FACTORS
    return {"folder": folder, "period": period,
            "summary": read_csv(folder / f"carbon_{period}_summary.csv"),
            "combustion": read_csv(folder / f"carbon_{period}_combustion.csv"),
            "methane": read_csv(folder / f"carbon_{period}_methane.csv"),
            "sources": read_csv(folder / "carbon_sources.csv"),
            "factors": json.loads(factors_file.read_text()) if factors_file.exists() else {}}


def _r(v, digits: int = 3):
    if v is None:
        return None
    return int(round(float(v))) if digits == 0 else round(float(v), digits)


def _files(text: str | None) -> str:
    files = [f for f in (text or "").split(";") if f]
    return f"{len(files)} files" if len(files) != 1 else files[0]


def period_rows(report: dict) -> list[dict]:
    """Per period and zone: gas delivered and burnt, methane released, CO2 and CO2e."""
    return [{"period": r["period"], "zone": r["network"], "gas delivered kg": _r(r["gas_delivered_kg"], 1),
             "combustion CO2 t": _r((r["combustion_co2_kg"] or 0) / 1000.0, 4),
             "coverage %": _r(r["coverage_pct"], 1), "metered gas kg": _r(r["metered_gas_kg"], 1),
             "methane released kg": _r(r["methane_kg"], 3),
             "methane CO2e t": _r((r["methane_co2e_kg"] or 0) / 1000.0, 4),
             "total CO2e t": _r((r["total_co2e_kg"] or 0) / 1000.0, 4), "factors": r["factors_version"]}
            for r in report["summary"]]


def combustion_rows(report: dict) -> list[dict]:
    """Per period, zone and customer class, with the files and records each figure came from."""
    return [{"period": r["period"], "zone": r["network"], "basis": r["basis"], "class": r["customer_class"],
             "gas kg": _r(r["gas_kg"], 2), "volume m3(n)": _r(r["volume_m3_normal"], 2),
             "energy net TJ": _r(r["energy_net_tj"], 6), "CO2 kg": _r(r["co2_kg"], 2),
             "cost": None if r.get("cost") is None else f"{r['cost']:,.2f} {r.get('currency') or ''}",
             "records": _r(r["records"], 0), "from": r["first_ts"], "to": r["last_ts"],
             "source files": _files(r["source_files"])} for r in report["combustion"]]


def methane_rows(report: dict) -> list[dict]:
    return [{"period": r["period"], "zone": r["network"], "gas released kg": _r(r["gas_released_kg"], 3),
             "CH4 kg": _r(r["ch4_kg"], 3), "CO2e kg": _r(r["co2e_kg"], 2), "events": _r(r["events"], 0),
             "records": _r(r["records"], 0), "from": r["first_ts"], "to": r["last_ts"],
             "source files": _files(r["source_files"])} for r in report["methane"]]


def source_rows(report: dict) -> list[dict]:
    return [{"file": r["path"], "kind": r["kind"], "rows": _r(r["rows"], 0), "from": r["first_ts"],
             "to": r["last_ts"], "sha256": r["sha256"]} for r in report["sources"]]


def factors_panel(factors: dict) -> html.Div:
    """The factor table as stated in the report: every figure depends on these."""
    if not factors:
        return html.Div("no carbon_factors.json beside the report", className="quiet")
    d = factors.get("derived", {})
    comp = factors.get("composition", {})
    lines = [
        ("version", factors.get("version")), ("date", factors.get("date")), ("source", factors.get("source")),
        ("GWP100 of methane", f"{factors.get('gwp100_ch4')} ({factors.get('gwp_source', '')})"),
        ("emission factor", f"{factors.get('ef_kg_co2_per_tj'):,.0f} kg CO2/TJ net ({factors.get('ef_source', '')})"
         if factors.get("ef_kg_co2_per_tj") is not None else None),
        ("composition", f"{comp.get('name', '')}: " + ", ".join(f"{k} {v:g}" for k, v in
                                                              comp.get("mole_fractions", {}).items())
         + (f" ({comp.get('source')})" if comp.get("source") else "")),
        ("derived", f"normal density {d.get('normal_density_kg_m3', 0):.4f} kg/m3 · methane mass fraction "
                    f"{d.get('methane_mass_fraction', 0):.4f} · net CV {d.get('net_cv_j_m3', 0) / 1e6:.2f} MJ/m3 · "
                    f"{d.get('ef_kg_co2_per_kg_gas', 0):.3f} kg CO2 per kg gas burnt (carbon balance "
                    f"{d.get('carbon_balance_kg_co2_per_kg_gas', 0):.3f})"),
        ("tariffs", ", ".join(f"{k} {v} {factors.get('currency', '')}/kWh"
                              for k, v in factors.get("tariffs", {}).items())
         or "none (no cost figures)"),
    ]
    return html.Table(className="zones", id="carbon-factors", children=[
        html.Tr([html.Th(k), html.Td(str(v))]) for k, v in lines if v is not None])


def period_figure(report: dict, height: int = 420) -> go.Figure:
    """CO2 from combustion per zone and CO2e of the methane released, stacked by period."""
    fig = go.Figure()
    zones = sorted({r["network"] for r in report["summary"]})
    for k, zone in enumerate(zones):
        rows = [r for r in report["summary"] if r["network"] == zone]
        colour = VARIANT_COLOURS[k % len(VARIANT_COLOURS)]
        fig.add_trace(go.Bar(x=[r["period"] for r in rows], y=[(r["combustion_co2_kg"] or 0) / 1000.0 for r in rows],
                             name=f"{zone}: combustion CO2", marker_color=colour))
        fig.add_trace(go.Bar(x=[r["period"] for r in rows], y=[(r["methane_co2e_kg"] or 0) / 1000.0 for r in rows],
                             name=f"{zone}: methane CO2e", marker=dict(color=colour, pattern=dict(shape="/"))))
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      barmode="stack", yaxis_title="t CO2e", xaxis_type="category", margin=dict(l=60, r=10, t=40, b=40),
                      title=dict(text=f"emissions per {report['period']}", font=dict(size=15)),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def class_figure(report: dict, height: int = 360) -> go.Figure:
    """Gas burnt per customer class and period (the twin's estimate beside metered classes)."""
    fig = go.Figure()
    classes = sorted({(r["basis"], r["customer_class"]) for r in report["combustion"]})
    for k, (basis, cls) in enumerate(classes):
        rows = [r for r in report["combustion"] if (r["basis"], r["customer_class"]) == (basis, cls)]
        fig.add_trace(go.Bar(x=[f"{r['period']} · {r['network']}" for r in rows], y=[r["co2_kg"] for r in rows],
                             name=f"{cls} ({basis})", marker_color=VARIANT_COLOURS[k % len(VARIANT_COLOURS)]))
    fig.update_layout(template="plotly_dark", paper_bgcolor=PANEL, plot_bgcolor=PANEL, height=height,
                      barmode="group", yaxis_title="kg CO2", xaxis_type="category", margin=dict(l=60, r=10, t=40, b=40),
                      title=dict(text="combustion CO2 per customer class", font=dict(size=15)),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def report_view(entry: dict, period: str) -> html.Div:
    report = load_report(entry["folder"], period)
    f = report["factors"]
    base = f"/carbon-files/{quote(entry['id'])}"
    return html.Div(id="carbon-view", children=[
        html.H2(f"carbon report · {period} · {entry['id']}", id="carbon-title"),
        html.Div(f"factors {f.get('version')} of {f.get('date')} · {f.get('source')}", className="quiet"),
        html.Div(className="actions", children=[
            dcc.Link(f" {p} ", href="/carbon?" + urlencode({"report": entry["id"], "period": p}),
                     className="btn" if p == period else "") for p in entry["periods"]] + [
            html.A("open the HTML report", href=f"{base}/carbon_{period}.html", target="_blank", id="carbon-report"),
            html.A("summary.csv", href=f"{base}/carbon_{period}_summary.csv"),
            html.A("sources.csv", href=f"{base}/carbon_sources.csv")]),
        html.H3("per period and zone"),
        data_table(period_rows(report), "carbon-periods"),
        dcc.Graph(id="carbon-period-figure", figure=period_figure(report), config=GRAPH_CONFIG),
        html.H3("combustion per customer class"),
        data_table(combustion_rows(report), "carbon-combustion"),
        dcc.Graph(id="carbon-class-figure", figure=class_figure(report), config=GRAPH_CONFIG),
        html.H3("methane released"),
        data_table(methane_rows(report), "carbon-methane") if report["methane"] else
        html.Div("no leak or venting in these periods", className="quiet"),
        html.H3("factors"),
        factors_panel(f),
        html.H3("traceability: the historian files read"),
        data_table(source_rows(report), "carbon-sources"),
    ])


def layout(ctx: WallContext, search: str = "") -> html.Div:
    query = parse_qs((search or "").lstrip("?"))
    chosen = query.get("report", [""])[0]
    if ctx.reports_dir is None:
        return html.Div(className="carbon", children=[html.H2("carbon reports"), html.Div(
            "no reports folder: start the wall with --reports DIR, the folder holding `pipetwin carbon --out` "
            "folders", className="quiet", id="carbon-list")])
    reports = find_reports(ctx.reports_dir)
    entry = next((r for r in reports if r["id"] == chosen), None) or (reports[0] if reports and not chosen else None)
    period = query.get("period", [""])[0]
    if entry is not None and period not in entry["periods"]:
        period = entry["periods"][0]
    items = [dcc.Link(f"{r['id']} ({', '.join(r['periods'])})", href="/carbon?" + urlencode({"report": r["id"]}),
                      className="alert-item" + (" open" if entry is not None and r["id"] == entry["id"] else ""))
             for r in reports]
    view = (report_view(entry, period) if entry is not None else
            html.Div(f"no carbon report {chosen!r} under {ctx.reports_dir}" if chosen else "", className="quiet"))
    return html.Div(className="carbon", children=[
        html.Div(className="wall-main", children=[
            html.Div(className="wall-side", style={"flex": "0 0 260px"}, children=[
                html.H3("carbon reports"),
                html.Div(items or f"no report under {ctx.reports_dir} (run `pipetwin carbon HISTORIAN --out DIR`)",
                         id="carbon-list")]),
            html.Div(view, style={"flex": "1", "minWidth": "0"}),
        ]),
    ])


SERVED = re.compile(r"^carbon_(day|week|month|year)(\.html|_summary\.csv|_combustion\.csv|_methane\.csv)$|"
                    r"^carbon_sources\.csv$|^carbon_factors\.json$")


def report_file(root: str | Path, rel: str) -> Path | None:
    """A served file of a report: only its outputs, only inside ``root``."""
    return allowed_file(root, rel, lambda name: SERVED.match(name) is not None)


def register(app, ctx: WallContext) -> None:
    serve_folder(app, "/carbon-files/<path:rel>", "carbon_files", lambda: ctx.reports_dir,
                 lambda name: SERVED.match(name) is not None)
