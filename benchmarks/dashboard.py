"""How fast the wall follows the twin on a 10,000-node network: the time from a state's publish
(``write_state``) to the browser's DOM showing it (p50 / p99), and the bytes each update costs.

A synthetic city of ~10,600 nodes is solved for a day's demand swing (12 states); every second
the next of them is published, as a new tick, to an embedded Redis. ``pipetwin dashboard`` serves the wall
in its own process and Debian's chromium (headless, through chromium-driver) shows it. In the page
a MutationObserver stamps the moment the wall's tick stamp changes, after the next animation frame
(so the map's redraw is included); the payload is read from chromium's network log (the encoded
size of each ``_dash-update-component`` response).

    .venv/bin/python benchmarks/dashboard.py [--updates 60] [--blocks 28] [--poll-ms 500]

Prints key=value lines: nodes, links, updates, latency_p50_ms, latency_p99_ms, latency_max_ms,
payload_first_kb (the first full draw), payload_update_kb_p50 / _max (each later update),
poll_ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--blocks", type=int, default=28, help="city size: ~13 x blocks^2 nodes (28: ~10,600)")
    ap.add_argument("--sensors", type=int, default=300)
    ap.add_argument("--poll-ms", type=int, default=500)
    ap.add_argument("--swing", type=float, default=0.25,
                    help="demand swing between states (0.25: +-25 %% in 12 s, every pipe moves; 0.005: a "
                         "control room's minute-to-minute drift)")
    args = ap.parse_args(argv)

    from rich.progress import track
    from selenium import webdriver

    from pipetwin.bench.synthetic import city
    from pipetwin.connectors.points import points_from_columns
    from pipetwin.flows.contracts import TwinState
    from pipetwin.flows.redis_embedded import connect, start_embedded_redis
    from pipetwin.flows.sinks.redis_sink import write_network, write_state
    from pipetwin.twin.solve.gas import GasSolver

    model = city(args.blocks, 4, seed=0)
    model.name = "bench"
    rng = np.random.default_rng(0)
    junctions = np.flatnonzero(model.base_demand() > 0)
    sensor_nodes = rng.choice(junctions, size=min(args.sensors, len(junctions)), replace=False)
    points = points_from_columns([str(model.nodes.ids[i]) for i in sensor_nodes], "pressure")
    solver = GasSolver(model)
    base = model.base_demand()

    def state(ts_ns: int, factor: float):
        result = solver.solve(base * factor)
        p = result.node_pressure_pa
        measured = p[sensor_nodes] + rng.normal(0, 20.0, len(sensor_nodes))
        return TwinState(network=model.name, ts_ns=ts_ns, node_ids=list(model.nodes.ids), node_pressure_pa=p,
                         node_demand=base * factor, unsupplied=result.unsupplied, link_ids=list(model.links.ids),
                         link_flow=result.link_flow, link_velocity_m_s=result.link_velocity_m_s,
                         sensor_ids=list(points.ids), sensor_measured=measured, sensor_estimated=p[sensor_nodes],
                         zone_multipliers=np.array([factor]), converged=result.converged, iterations=3, chi2=1.0,
                         solve_ms=0.0, figures={"inflow_kg_s": float((base * factor).sum()),
                                                "consumption_kg_s": float((base * factor).sum()),
                                                "line_pack_kg": solver.line_pack_kg(p)})

    redis_server = start_embedded_redis(port=0)
    r = connect(redis_server.url)
    write_network(r, model, points)
    t0 = time.time_ns()
    first = state(t0, 1.0)
    # the day's demand swing, solved before the clock starts: publishing is then as cheap as the
    # flow's own write, and what is timed is the wall alone
    swing = [state(t0, float(1.0 + args.swing * np.sin(2 * np.pi * k / 12))) for k in
             track(range(12), description="solving states", console=None)]
    write_state(r, first)
    wall = subprocess.Popen([sys.executable, "-m", "pipetwin.cli", "dashboard", "--redis-url", redis_server.url,
                             "--network", model.name, "--port", "0", "--poll-ms", str(args.poll_ms)],
                            stdout=subprocess.PIPE, text=True)
    url = wall.stdout.readline().strip()
    print(url, flush=True)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1920,1080"):
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "/")
        shown = lambda: driver.execute_script(  # noqa: E731
            "var e = document.getElementById('wall-ts'); return e && e.getAttribute('data-ts');")
        end = time.time() + 120
        while shown() != str(first.ts_ns) and time.time() < end:
            time.sleep(0.1)
        if shown() != str(first.ts_ns):
            logs = [e["message"][:300] for e in driver.get_log("browser")][-5:]
            raise SystemExit(f"the wall never showed the first state; browser console: {logs}")
        time.sleep(2.0)
        first_payload, _ = _payloads(driver)
        driver.execute_script("""
            window.__seen = {}; window.__draw = [];
            const draw = window.dash_clientside.wall.draw;
            window.dash_clientside.wall.draw = function (f, b, g) {
                const t = performance.now(); const out = draw(f, b, g);
                window.__draw.push(performance.now() - t); return out; };
            const el = document.getElementById('wall-ts');
            new MutationObserver(() => {
                const ts = el.getAttribute('data-ts');
                requestAnimationFrame(() => setTimeout(() => { window.__seen[ts] = Date.now(); }, 0));
            }).observe(el, {attributes: true, attributeFilter: ['data-ts']});""")
        published = {}
        for i in track(range(1, args.updates + 1), description="publishing states", console=None):
            st = dataclasses.replace(swing[i % len(swing)], ts_ns=t0 + i * 1_000_000_000)
            tick_start = time.time()
            write_state(r, st)
            published[str(st.ts_ns)] = time.time() * 1000.0
            time.sleep(max(0.0, 1.0 - (time.time() - tick_start)))
        time.sleep(3.0)
        seen = driver.execute_script("return window.__seen;")
        draw_ms = np.array(driver.execute_script("return window.__draw;") or [np.nan])
        updates, request_ms = _payloads(driver)
    finally:
        driver.quit()
        wall.terminate()
        redis_server.close()

    lat = np.array([seen[k] - v for k, v in published.items() if k in seen])
    missed = len(published) - len(lat)
    upd = np.array([b for b in updates if b > 2048]) / 1024.0   # 204 "no change" replies are a few bytes
    print(f"nodes={model.n_nodes}")
    print(f"links={model.n_links}")
    print(f"poll_ms={args.poll_ms}")
    print(f"swing={args.swing}")
    print(f"updates={len(published)}")
    print(f"updates_shown={len(lat)}")
    print(f"updates_skipped={missed}")
    if len(lat):
        print(f"latency_p50_ms={np.percentile(lat, 50):.0f}")
        print(f"latency_p99_ms={np.percentile(lat, 99):.0f}")
        print(f"latency_max_ms={lat.max():.0f}")
    print(f"frame_to_figure_ms_p50={np.nanpercentile(draw_ms, 50):.1f}")
    if request_ms:
        print(f"frame_request_ms_p50={np.percentile(request_ms, 50):.0f}")
    print(f"payload_first_kb={sum(first_payload) / 1024.0:.0f}")
    if len(upd):
        print(f"payload_update_kb_p50={np.percentile(upd, 50):.1f}")
        print(f"payload_update_kb_max={upd.max():.1f}")
    return 0


def _payloads(driver) -> tuple[list[int], list[float]]:
    """Encoded sizes of the ``_dash-update-component`` responses since the last call, and how long
    each of those carrying a frame took from request to last byte (ms)."""
    sent, requests, sizes, took = {}, {}, [], []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent" and "_dash-update-component" in params["request"]["url"]:
            sent[params["requestId"]] = params["timestamp"]
        elif msg["method"] == "Network.responseReceived" and "_dash-update-component" in params["response"]["url"]:
            requests[params["requestId"]] = True
        elif msg["method"] == "Network.loadingFinished" and params["requestId"] in requests:
            sizes.append(int(params["encodedDataLength"]))
            if sizes[-1] > 2048 and params["requestId"] in sent:
                took.append(1000.0 * (params["timestamp"] - sent[params["requestId"]]))
    return sizes, took


if __name__ == "__main__":
    sys.exit(main())
