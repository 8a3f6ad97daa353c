"""The study pages of the wall (what-if, carbon, isolation) on real outputs: a what-if study run by
the CLI on the bundled Schutterwald grid, the carbon report of that study's historian, and
isolation plans on Schutterwald. Layouts and figure builders are tested as plain functions; one
browser test opens the pages in chromium (screenshots in ``test-artifacts/``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipetwin.dashboards import carbon_page, isolation_page, studies
from pipetwin.dashboards.context import WallContext

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "pipe_K1203_K1204_1"          # the only feed of 109 houses (examples/whatif-valve-closure.yaml)
BURST = "pipe_K1045_K1046_9"           # docs/isolation.md: 428 houses downstream, 3,424 customer-hours


def _cli(*args: str) -> str:
    if args[0] in ("whatif", "carbon"):
        args = (*args, "--ledger", "")           # no audit ledger in the checkout
    done = subprocess.run([sys.executable, "-m", "pipetwin.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """``pipetwin whatif`` on the shipped valve-closure study (about 10 s), then ``pipetwin carbon``
    on the historian its baseline replay wrote."""
    root = tmp_path_factory.mktemp("study-pages")
    _cli("whatif", "examples/whatif-valve-closure.yaml", "--out", str(root / "studies" / "valve"), "--quiet")
    _cli("carbon", str(root / "studies" / "valve" / "historian"), "--period", "day",
         "--out", str(root / "reports" / "valve-day"))
    return {"studies": root / "studies", "reports": root / "reports", "study": root / "studies" / "valve",
            "report": root / "reports" / "valve-day"}


def _ctx(**dirs) -> WallContext:
    """The pages here read files only; the Redis store is not touched (``store=None``)."""
    return WallContext(store=None, **dirs)


def _find(component, wanted_id):
    """The component with ``id == wanted_id`` in a Dash layout tree."""
    if getattr(component, "id", None) == wanted_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if child is not None and not isinstance(child, (str, int, float)):
            found = _find(child, wanted_id)
            if found is not None:
                return found
    return None


def _trace(fig, name, k=None):
    """The trace called ``name`` (of the ``k``-th map when the figure has several)."""
    found = [t for t in fig.data if t.name == name]
    return found if k is None else found[k]


# ---------------------------------------------------------------------------------- what-if


def test_the_study_folder_is_found_and_compared(outputs):
    found = studies.find_studies(outputs["studies"])
    assert [s["id"] for s in found] == ["valve"]
    study = studies.load_study(found[0]["folder"])
    rows = {r["variant"]: r for r in studies.variant_rows(study)}
    assert list(rows) == ["baseline", "planned-closure", "burst-then-closure"]
    assert rows["baseline"]["customers unsupplied"] == 0 and rows["baseline"]["changes"] == "none"
    assert rows["planned-closure"]["customers unsupplied"] == 109
    assert rows["planned-closure"]["customer-h unsupplied"] == pytest.approx(109.0)     # 109 houses for one hour
    assert rows["burst-then-closure"]["gas lost kg"] == pytest.approx(9.0)              # 5 g/s for 30 min
    assert rows["burst-then-closure"]["methane kg"] > 8.0
    assert rows["planned-closure"]["line pack vs baseline kg"] < 0
    assert "UTC" in rows["baseline"]["when"] and rows["baseline"]["where"].startswith("house")
    zones = studies.zone_rows(study)
    assert len(zones) == 3 * 5 and {z["zone"] for z in zones} == {"zone 0", "zone 1", "zone 2", "zone 3", "network"}


def test_the_variants_side_by_side_on_the_map(outputs):
    study = studies.load_study(outputs["study"])
    geom = studies.study_geometry(study)
    assert len(geom.link_ids) == 2559 and CLOSED in set(geom.link_ids)     # the pipes come from the network file
    fig = studies.variants_map(study, geom)
    assert [a.text for a in fig.layout.annotations] == ["baseline", "planned-closure", "burst-then-closure"]
    nodes = _trace(fig, "nodes")
    assert len(nodes) == 3
    assert len({(t.marker.cmin, t.marker.cmax) for t in nodes}) == 1      # one colour scale for every map
    assert [bool(t.marker.showscale) for t in nodes] == [True, False, False]
    changed = _trace(fig, "changed element")
    assert list(changed[0].text) == []
    assert CLOSED in changed[1].text and {"K1204", CLOSED} <= set(changed[2].text)
    cut = _trace(fig, "unsupplied")
    assert np.isfinite(np.asarray(cut[0].x, float)).sum() == 0           # the baseline cuts nobody off
    assert np.isfinite(np.asarray(cut[1].x, float)).sum() > 0             # the closure greys its houses
    assert len(_trace(fig, "cut off at some tick", 1).x) >= 109


def test_the_timeline_has_every_variant(outputs):
    study = studies.load_study(outputs["study"])
    fig = studies.timeline_figure(study)
    names = {t.name for t in fig.data}
    assert names == {"baseline", "planned-closure", "burst-then-closure"}
    assert len(fig.data) == 4 * 3
    unsupplied = [t for t in fig.data if t.name == "planned-closure" and t.xaxis == "x2" and t.line.dash != "dot"][0]
    assert max(unsupplied.y) == 109 and unsupplied.y[0] == 0


def test_the_studies_page(outputs):
    page = studies.layout(_ctx(studies_dir=str(outputs["studies"])), "?study=valve")
    assert _find(page, "study-title").children == "valve closure"
    assert _find(page, "study-report").href == "/study-files/valve/report.html"
    assert len(_find(page, "study-variants").data) == 3
    assert _find(page, "study-maps").figure is not None
    unknown = studies.layout(_ctx(studies_dir=str(outputs["studies"])), "?study=nothing")
    assert _find(unknown, "study-view") is None
    off = studies.layout(_ctx(), "")
    assert "--studies" in _find(off, "studies-list").children


def test_only_study_outputs_are_served(outputs):
    root = outputs["studies"]
    assert studies.study_file(root, "valve/report.html") == (outputs["study"] / "report.html").resolve()
    assert studies.study_file(root, "valve/variants.csv") is not None
    assert studies.study_file(root, "valve/history/readings.parquet") is None
    assert studies.study_file(outputs["study"] / "history", "../report.html") is None     # outside the root
    assert studies.study_file(root, "valve/nothing.html") is None


def test_the_wall_serves_the_reports(outputs):
    """The HTML reports open from the pages' links (the wall's own server, no Redis needed)."""
    from pipetwin.dashboards.app import create_app

    app = create_app("redis://127.0.0.1:1", "x", studies_dir=str(outputs["studies"]),
                     reports_dir=str(outputs["reports"]))
    client = app.server.test_client()
    page = client.get("/study-files/valve/report.html")
    assert page.status_code == 200 and b"plotly" in page.data and b"<script src=\"http" not in page.data
    assert client.get("/carbon-files/valve-day/carbon_day.html").status_code == 200
    assert client.get("/carbon-files/valve-day/carbon_sources.csv").data.startswith(b"path,kind,sha256")
    assert client.get("/study-files/valve/history/readings.parquet").status_code == 404
    assert client.get("/study-files/valve/..%2F..%2Freports/valve-day/carbon_day.html").status_code == 404


def test_a_hand_written_study_without_its_network_draws_the_nodes(tmp_path):
    """A study whose network file is gone: the map falls back to the nodes table."""
    folder = tmp_path / "s"
    folder.mkdir()
    ts = pa.array([0, 300_000_000_000], pa.timestamp("ns", tz="UTC"))
    meta = {"schema": studies.SCHEMA, "study": "tiny", "network": "gone.inp", "study_file": str(tmp_path / "x.yaml"),
            "ticks": 2, "tick_s": 300.0, "min_service_pressure_pa": 150_000.0,
            "variants": [{"name": "baseline", "changes": []}, {"name": "shut", "changes": ["close P2 from 0 s"]},
                         {"name": "leak", "changes": ["leak 0.01 kg/s at B from 0 s"]}],
            "tables": {t: f"{t}.parquet" for t in ("variants", "comparison", "ticks", "nodes")}}
    (folder / "study.json").write_text(json.dumps(meta))
    names = ["baseline", "shut", "leak"]
    pq.write_table(pa.table({
        "variant": names, "changes": ["", "close P2 from 0 s", "leak 0.01 kg/s at B from 0 s"],
        "min_pressure_pa": [190_000.0, 180_000.0, 170_000.0], "customer_hours_below_min": [0.0, 0.0, 0.5],
        "customer_hours_unsupplied": [0.0, 0.167, 0.0], "customers_unsupplied": [0, 1, 0],
        "line_pack_mean_kg": [5.0, 4.0, 5.0], "line_pack_vs_baseline_kg": [0.0, -1.0, 0.0],
        "gas_lost_kg": [0.0, 0.0, 3.0], "methane_released_kg": [0.0, 0.0, 2.82], "co2e_t": [0.0, 0.0, 0.084],
        "gas_not_delivered_kg": [0.0, 1.0, 0.0]}), folder / "variants.parquet")
    pq.write_table(pa.table({
        "variant": names, "zone": ["network"] * 3, "customers": [2] * 3,
        "min_pressure_pa": [190_000.0, 180_000.0, 170_000.0], "min_pressure_ts": pa.array([0, 0, 300_000_000_000],
                                                                                          ts.type),
        "min_pressure_node": ["C", "B", "C"], "min_pressure_vs_baseline_pa": [0.0, -10_000.0, -20_000.0],
        "customers_below_min": [0, 0, 1], "customer_hours_below_min": [0.0, 0.0, 0.5],
        "customers_unsupplied": [0, 1, 0], "customer_hours_unsupplied": [0.0, 0.167, 0.0]}),
        folder / "comparison.parquet")
    pq.write_table(pa.table({
        "variant": [n for n in names for _ in range(2)], "ts": pa.concat_arrays([ts] * 3),
        "min_pressure_pa": [190_000.0, 195_000.0, 180_000.0, 185_000.0, 170_000.0, 175_000.0],
        "customers_below_min": [0, 0, 0, 0, 1, 1], "customers_unsupplied": [0, 0, 1, 1, 0, 0],
        "line_pack_kg": [5.0, 5.0, 4.0, 4.0, 5.0, 5.0]}), folder / "ticks.parquet")
    pq.write_table(pa.table({
        "variant": [n for n in names for _ in range(3)], "node": ["A", "B", "C"] * 3, "x": [0.0, 1.0, 2.0] * 3,
        "y": [0.0, 1.0, 0.0] * 3, "min_pressure_pa": [200_000.0, 195_000.0, 190_000.0, 200_000.0, 190_000.0, None,
                                                      200_000.0, 175_000.0, 170_000.0],
        "hours_below_min": [0.0] * 8 + [0.5], "hours_unsupplied": [0.0] * 5 + [0.167] + [0.0] * 3}),
        folder / "nodes.parquet")
    study = studies.load_study(folder)
    geom = studies.study_geometry(study)
    assert list(geom.node_ids) == ["A", "B", "C"] and len(geom.link_ids) == 0
    fig = studies.variants_map(study, geom)
    assert list(_trace(fig, "changed element", 2).text) == ["B"]          # the leak node is marked
    assert list(_trace(fig, "cut off at some tick", 1).x) == [2.0]        # C cut off by the closure
    assert list(_trace(fig, "below minimum", 2).x) == [2.0]
    rows = studies.variant_rows(study)
    assert [r["customers unsupplied"] for r in rows] == [0, 1, 0]
    assert rows[0]["min pressure mbar(g)"] == pytest.approx((190_000.0 - 101_325.0) / 100.0, abs=0.05)
    page = studies.layout(_ctx(studies_dir=str(tmp_path)), "?study=s")
    assert "nodes only" in _find(page, "study-map-note").children


# ---------------------------------------------------------------------------------- carbon


def test_the_carbon_report_page(outputs):
    found = carbon_page.find_reports(outputs["reports"])
    assert [(r["id"], r["periods"]) for r in found] == [("valve-day", ["day"])]
    report = carbon_page.load_report(found[0]["folder"], "day")
    rows = carbon_page.period_rows(report)
    summary = report["summary"]
    assert len(rows) == len(summary) >= 1
    assert rows[0]["combustion CO2 t"] == pytest.approx(summary[0]["combustion_co2_kg"] / 1000.0, abs=1e-4)
    assert rows[0]["combustion CO2 t"] > 0 and rows[0]["factors"] == "2026.1"       # a version, not a number
    combustion = carbon_page.combustion_rows(report)
    assert combustion[0]["records"] > 0 and combustion[0]["source files"]
    sources = carbon_page.source_rows(report)
    assert sources and all(len(s["sha256"]) == 64 for s in sources)
    fig = carbon_page.period_figure(report)
    assert fig.data[0].y[0] == pytest.approx(rows[0]["combustion CO2 t"], rel=1e-3)
    page = carbon_page.layout(_ctx(reports_dir=str(outputs["reports"])), "")
    factors = _find(page, "carbon-factors")
    text = " ".join(str(row.children[1].children) for row in factors.children)
    assert "2026.1" in text and "29.8" in text and "56,100 kg CO2/TJ" in text
    assert _find(page, "carbon-report").href == "/carbon-files/valve-day/carbon_day.html"
    assert carbon_page.report_file(outputs["reports"], "valve-day/carbon_day.html") is not None
    assert carbon_page.report_file(outputs["reports"], "valve-day/../valve-day/carbon_factors.json") is not None
    assert carbon_page.report_file(outputs["reports"], "../studies/valve/report.html") is None
    assert "--reports" in _find(carbon_page.layout(_ctx(), ""), "carbon-list").children


# ---------------------------------------------------------------------------------- isolation


def test_the_isolation_plan_on_the_map():
    ctx = _ctx(network_file="schutterwald")
    path = isolation_page.network_path(ctx)
    plan = isolation_page.cached_plan(path, BURST, 8.0)
    assert len(plan.customers_downstream) == 428 and plan.customer_hours == pytest.approx(3424.0)
    t0 = time.perf_counter()
    assert isolation_page.cached_plan(path, BURST, 8.0) is plan       # kept: reopening is instant
    assert time.perf_counter() - t0 < 0.05
    geom = isolation_page.model_geometry(isolation_page.load_model(path))
    fig = isolation_page.plan_figure(geom, plan)
    section = _trace(fig, "isolated section", 0)
    i = list(geom.link_ids).index(BURST)
    assert list(section.x[:2]) == [round(geom.x[geom.fr[i]], 2), round(geom.x[geom.to[i]], 2)]
    assert np.isfinite(np.asarray(_trace(fig, "unsupplied downstream", 0).x, float)).sum() > 0
    assert len(_trace(fig, "customers cut off", 0).x) == 428
    assert set(_trace(fig, "squeeze-off points", 0).text) == set(plan.squeeze_points) and plan.squeeze_points
    page = isolation_page.layout(ctx, f"?pipe={BURST}")
    tiles = {t.children[0].children: t.children[1].children for t in _find(page, "iso-kpis").children}
    assert tiles["unsupplied downstream"] == "428" and tiles["customer-hours"] == "3,424"
    assert tiles["pressure check"] == "converged"
    shorter = isolation_page.layout(ctx, f"?pipe={BURST}&hours=2")
    tiles = {t.children[0].children: t.children[1].children for t in _find(shorter, "iso-kpis").children}
    assert tiles["customer-hours"] == "856"


def test_a_click_on_the_plan_map_plans_that_pipe():
    assert isolation_page.click_target({"points": [{"customdata": CLOSED}]}) == f"/isolation?pipe={CLOSED}"
    assert isolation_page.click_target({"points": [{"customdata": "P 1"}]}, 4.0) == "/isolation?pipe=P+1&hours=4"
    assert isolation_page.click_target({"points": [{"x": 1.0}]}) is None
    assert isolation_page.click_target(None) is None


def test_the_isolation_page_explains_what_is_missing():
    assert "--network-file" in _find(isolation_page.layout(_ctx(), "?pipe=x"), "iso-message").children
    wrong = isolation_page.layout(_ctx(network_file="schutterwald"), "?pipe=no-such-pipe")
    assert "no-such-pipe" in _find(wrong, "iso-message").children
    assert "click a pipe" in _find(isolation_page.layout(_ctx(network_file="schutterwald"), ""), "iso-message").children


def test_the_dashboard_command_takes_the_study_folders():
    from pipetwin.cli import build_parser

    args = build_parser().parse_args(["dashboard", "--redis-url", "redis://x", "--studies", "s", "--reports", "r",
                                      "--network-file", "schutterwald"])
    assert (args.studies, args.reports, args.network_file) == ("s", "r", "schutterwald")


# ---------------------------------------------------------------------------------- in a browser


@pytest.mark.browser
def test_study_pages_in_the_browser(outputs, wall_data):
    from selenium.webdriver.common.by import By

    from pipetwin.dashboards.serve import WallServer
    from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, DRIVER, css, wait_for

    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1400",
                "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    ARTIFACTS.mkdir(exist_ok=True)
    browser = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    browser.set_page_load_timeout(60)
    server = WallServer(wall_data["url"], wall_data["network"], wall_data["historian"], poll_ms=300,
                        studies_dir=str(outputs["studies"]), reports_dir=str(outputs["reports"]),
                        network_file="schutterwald")
    try:
        with server:
            browser.get(server.url + "/studies?study=valve")
            wait_for(browser, lambda b: "valve closure" in css(b, "#study-title")[0].text, what="the study")
            wait_for(browser, lambda b: css(b, "#study-maps canvas") and css(b, "#study-maps .gtitle, "
                                                                              "#study-maps .annotation-text"),
                     what="the variant maps")
            wait_for(browser, lambda b: css(b, "#study-timeline .main-svg"), what="the timeline")
            assert len(css(browser, "#study-maps .annotation-text")) >= 3
            time.sleep(1.0)
            browser.save_screenshot(str(ARTIFACTS / "studies.png"))
            # a pipe's drill-down links to its isolation plan
            browser.get(f"{server.url}/asset?id={BURST}")
            wait_for(browser, lambda b: css(b, "#drill-isolation"), what="the isolation link")
            browser.find_element(By.CSS_SELECTOR, "#drill-isolation").click()
            wait_for(browser, lambda b: BURST in css(b, "#iso-title")[0].text, what="the isolation page")
            wait_for(browser, lambda b: css(b, "#iso-map canvas") and css(b, "#iso-map .legendtext"),
                     what="the isolation map")
            assert "428" in css(browser, "#iso-kpis")[0].text
            time.sleep(1.0)
            browser.save_screenshot(str(ARTIFACTS / "isolation.png"))
            browser.get(server.url + "/carbon")
            wait_for(browser, lambda b: "2026.1" in css(b, "#carbon-factors")[0].text, what="the carbon factors")
            wait_for(browser, lambda b: css(b, "#carbon-period-figure .main-svg"), what="the carbon figure")
            browser.save_screenshot(str(ARTIFACTS / "carbon.png"))
    finally:
        browser.quit()
