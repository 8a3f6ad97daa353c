"""The wall in a real browser (Debian chromium, headless, through chromium-driver): it loads with the
map and figures, follows new states and alerts without a reload, acknowledges into Redis, and the
drill-down opens the right series. Screenshots go to ``test-artifacts/`` for people to look at."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def wall(wall_data):
    from pipetwin.dashboards.serve import WallServer

    with WallServer(wall_data["url"], wall_data["network"], wall_data["historian"], poll_ms=300) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1080",
                "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def wait_for(browser, predicate, timeout=90.0, what="condition"):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = predicate(browser)
            if last:
                return last
        except Exception as exc:        # the element is not there yet (or was just redrawn)
            last = exc
        time.sleep(0.1)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"timeout-{what.replace(' ', '-')}.png"))
    logs = []
    try:
        logs = [e["message"][:400] for e in browser.get_log("browser")][-5:]
    except Exception:           # not every driver keeps the console log
        pass
    raise AssertionError(f"timed out waiting for {what}: {last!r}; browser console: {logs}")


def shown_ts(browser) -> str | None:
    """The tick the wall shows (its ``data-ts``), read in the page itself."""
    return browser.execute_script("var e = document.getElementById('wall-ts'); return e && e.getAttribute('data-ts');")


def css(browser, selector):
    from selenium.webdriver.common.by import By
    return browser.find_elements(By.CSS_SELECTOR, selector)


def test_wall_loads_with_map_and_figures(browser, wall, wall_data):
    browser.get(wall.url + "/")
    wait_for(browser, lambda b: css(b, "#wall-map .scatterlayer, #wall-map canvas"), what="the map")
    wait_for(browser, lambda b: len(css(b, "#wall-kpis .kpi")) >= 8, what="the headline tiles")
    wait_for(browser, lambda b: shown_ts(b) == str(wall_data["ts_ns"]),
             what="the latest tick on the wall")
    tiles = css(browser, "#wall-kpis")[0].text
    assert "LINE PACK" in tiles.upper() and "mbar(g)" in tiles
    wait_for(browser, lambda b: css(b, "#wall-strip .main-svg"), what="the strip")
    time.sleep(1.0)
    browser.save_screenshot(str(ARTIFACTS / "wall.png"))


def test_new_state_and_alert_appear_without_reload(browser, wall, wall_data):
    from pipetwin.flows.contracts import Alert
    from pipetwin.flows.sinks.redis_sink import read_state, write_alert, write_state

    browser.get(wall.url + "/")
    wait_for(browser, lambda b: shown_ts(b) not in (None, "0"), what="the first tick")
    marker = browser.execute_script("window.__same_page = 'yes'; return window.__same_page;")
    r, net = wall_data["redis"], wall_data["network"]
    now = read_state(r, net)["summary"]["ts_ns"] + 1_000_000_000
    alert = Alert(id=f"{net}:pressure_limit:K9999:{now}", kind="pressure_limit", severity="critical",
                  subject="BROWSER-TEST-NODE", network=net, opened_ns=now, updated_ns=now,
                  message="pressure below the minimum service pressure")
    write_alert(r, alert)
    wait_for(browser, lambda b: "BROWSER-TEST-NODE" in css(b, "#wall-alerts")[0].text, what="the new alert")
    # a new tick: the flow's own writer, one second later
    from tests.dashboards.test_browser import _state_at
    write_state(r, _state_at(r, net, now))
    wait_for(browser, lambda b: shown_ts(b) == str(now), what="the new tick")
    assert browser.execute_script("return window.__same_page;") == marker     # no reload happened
    browser.save_screenshot(str(ARTIFACTS / "wall-new-alert.png"))


# summary keys TwinState.summary() computes itself; the rest are the flow's figures, carried on
COMPUTED = {"network", "ts_ns", "converged", "iterations", "chi2", "solve_ms", "min_pressure_pa", "min_pressure_node",
            "max_pressure_pa", "unsupplied_nodes", "zone_multipliers", "sensors_reporting", "max_abs_residual"}


def _state_at(r, network, ts_ns):
    """The latest state again, stamped ``ts_ns`` (a new tick as the flow would write it)."""
    import numpy as np

    from pipetwin.flows.contracts import TwinState
    from pipetwin.flows.sinks.redis_sink import read_state

    s = read_state(r, network)
    n, k, e = s["nodes"], s["links"], s["sensors"]
    summary = s["summary"]
    return TwinState(network=network, ts_ns=ts_ns, node_ids=n["id"].to_pylist(),
                     node_pressure_pa=n["pressure_pa"].to_numpy() - 50.0, node_demand=n["demand"].to_numpy(),
                     unsupplied=n["unsupplied"].to_numpy(zero_copy_only=False), link_ids=k["id"].to_pylist(),
                     link_flow=k["flow"].to_numpy(), link_velocity_m_s=k["velocity_m_s"].to_numpy(),
                     sensor_ids=e["point"].to_pylist(), sensor_measured=e["measured"].to_numpy(),
                     sensor_estimated=e["estimated"].to_numpy(), zone_multipliers=np.array(summary["zone_multipliers"]),
                     converged=True, iterations=2, chi2=1.0, solve_ms=5.0,
                     figures={k: v for k, v in summary.items() if k not in COMPUTED})


def test_acknowledging_in_the_console_changes_redis(browser, wall, wall_data):
    from selenium.webdriver.common.by import By

    from pipetwin.flows.sinks.redis_sink import get_alert

    leak_id = wall_data["leak_id"]
    browser.get(f"{wall.url}/alerts?id={leak_id}")
    wait_for(browser, lambda b: "leak" in css(b, "#alert-detail h3")[0].text, what="the alert's detail")
    wait_for(browser, lambda b: css(b, "#candidates-map .main-svg"), what="the candidates map")
    browser.find_element(By.CSS_SELECTOR, "#op-name").send_keys("browser test")
    browser.find_element(By.CSS_SELECTOR, "#btn-ack").click()
    wait_for(browser, lambda b: "acknowledged by browser test" in css(b, "#op-result")[0].text,
             what="the console's confirmation")
    stored = get_alert(wall_data["redis"], wall_data["network"], leak_id)
    assert stored.status == "acknowledged" and stored.evidence["acknowledged_by"] == "browser test"
    wait_for(browser, lambda b: css(b, "#detail-status")[0].text == "acknowledged", what="the new status shown")
    browser.save_screenshot(str(ARTIFACTS / "alert-console.png"))


def test_drilldown_opens_the_right_series(browser, wall):
    browser.get(f"{wall.url}/asset?id=PT-002")
    wait_for(browser, lambda b: "PT-002" in css(b, "#drill-title")[0].text, what="the drill-down title")
    wait_for(browser, lambda b: css(b, "#series-PT-002 .main-svg"), what="PT-002's series")
    title = wait_for(browser, lambda b: css(b, "#series-PT-002 .gtitle")[0].text, what="the series title")
    assert title.startswith("PT-002")
    quality = wait_for(browser, lambda b: css(b, "#quality-PT-002")[0].text, what="PT-002's quality line")
    share = float(quality.split("completeness ")[1].split(" %")[0])
    assert 30.0 < share < 100.0           # the dropout: a minute of 150 s missing
    browser.save_screenshot(str(ARTIFACTS / "drilldown.png"))


def test_data_quality_page(browser, wall):
    browser.get(f"{wall.url}/quality")
    wait_for(browser, lambda b: "points" in css(b, "#q-summary")[0].text, what="the quality summary")
    wait_for(browser, lambda b: "PT-002" in css(b, "#q-table")[0].text, what="the point table")
    browser.save_screenshot(str(ARTIFACTS / "quality.png"))
