"""Map tiles in a real browser (Debian chromium, headless): the plain wall asks nothing of any other
server, and a wall with ``tiles`` asks a tile server (a real HTTP server on 127.0.0.1 here, counting
what it is asked for) for the tiles of the view it shows, also after a zoom, while the map still
draws its frames. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
import struct
import time
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from tests.dashboards.test_browser import ARTIFACTS, browser, css, shown_ts, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def tile_png(size: int = 256) -> bytes:
    """A light grey 256-pixel tile with a darker grid line on its top and left edges (so the
    screenshot shows where tiles meet), as PNG."""
    rows = []
    for y in range(size):
        row = bytes([200 if (y < 2) else 235] * 3) * size
        if y >= 2:
            row = bytes([200] * 3) * 2 + row[6:]
        rows.append(b"\x00" + row)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


class TileServer:
    """An XYZ tile server on 127.0.0.1 that serves one PNG for every tile and keeps the paths asked."""

    def __init__(self):
        self.paths: list[str] = []
        png, paths = tile_png(), self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(png)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.template = f"http://127.0.0.1:{self.server.server_address[1]}/tiles/{{z}}/{{x}}/{{y}}.png"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def zooms(self) -> set[int]:
        return {int(m.group(1)) for p in list(self.paths) if (m := re.fullmatch(r"/tiles/(\d+)/\d+/\d+\.png", p))}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def map_state(browser) -> dict:
    return browser.execute_script("""
        const gd = document.querySelector('#wall-map .js-plotly-plot');
        if (!gd || !gd.data || !gd._fullLayout) { return null; }
        let pipes = 0;
        for (let k = 1; k <= 9; k++) { pipes += (gd.data[k] && gd.data[k].x) ? gd.data[k].x.length : 0; }
        return {pipes: pipes, images: (gd.layout.images || []).length,
                shown: document.querySelectorAll('#wall-map .main-svg image').length,
                range: gd._fullLayout.xaxis.range,
                zoom: (gd.layout.images && gd.layout.images.length) ?
                    parseInt(gd.layout.images[0].source.split('/tiles/')[1]) : null};""")


def other_origins(browser, own: str) -> list[str]:
    """Every resource the page loaded from anywhere but its own server."""
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    host = urlparse(own).netloc
    return [u for u in urls if urlparse(u).netloc not in (host, "")]


def zoom_in_twice(browser) -> None:
    """As a user does: the modebar's zoom in, twice (half the range each)."""
    for _ in range(2):
        browser.execute_script("document.querySelector('#wall-map .modebar-btn[data-title=\"Zoom in\"]').click();")
        time.sleep(0.5)


def new_tick(wall_data) -> str:
    """A new state one second after the last, written with the flow's own writer."""
    from pipetwin.flows.sinks.redis_sink import read_state, write_state
    from tests.dashboards.test_browser import _state_at

    r, net = wall_data["redis"], wall_data["network"]
    now = read_state(r, net)["summary"]["ts_ns"] + 1_000_000_000
    write_state(r, _state_at(r, net, now))
    return str(now)


def latest_ts(wall_data) -> str:
    """The tick the flow wrote last (the other browser tests add ticks of their own)."""
    from pipetwin.flows.sinks.redis_sink import read_state

    return str(read_state(wall_data["redis"], wall_data["network"])["summary"]["ts_ns"])


def test_the_plain_wall_asks_no_other_server(browser, wall_data):
    from pipetwin.dashboards.serve import WallServer

    with WallServer(wall_data["url"], wall_data["network"], wall_data["historian"], poll_ms=300) as server:
        browser.get(server.url + "/")
        wait_for(browser, lambda b: shown_ts(b) == latest_ts(wall_data), what="the latest tick")
        wait_for(browser, lambda b: (map_state(b) or {}).get("pipes", 0) > 0, what="the pipes drawn")
        before = map_state(browser)
        assert before["images"] == 0
        assert other_origins(browser, server.url) == []
        # a user's zoom stays through the next frame
        zoom_in_twice(browser)
        wait_for(browser, lambda b: map_state(b)["range"][1] - map_state(b)["range"][0] <
                 (before["range"][1] - before["range"][0]) / 3, what="the zoom")
        zoomed = map_state(browser)["range"]
        now = new_tick(wall_data)
        wait_for(browser, lambda b: shown_ts(b) == now, what="the new tick")
        assert map_state(browser)["range"] == pytest.approx(zoomed)


def test_the_wall_draws_on_tiles_from_the_configured_server(browser, wall_data):
    from pipetwin.dashboards.serve import WallServer
    from pipetwin.dashboards.tiles import Tiles

    with TileServer() as tiles, WallServer(wall_data["url"], wall_data["network"], wall_data["historian"],
                                           poll_ms=300, tiles=Tiles(tiles.template, "tiles: test server")) as server:
        browser.get(server.url + "/")
        wait_for(browser, lambda b: shown_ts(b) == latest_ts(wall_data), what="the latest tick")
        wait_for(browser, lambda b: (map_state(b) or {}).get("pipes", 0) > 0, what="the pipes drawn on tiles")
        wait_for(browser, lambda b: len(tiles.paths) > 0, what="tile requests at the tile server")
        state = wait_for(browser, lambda b: (s := map_state(b)) and s["shown"] > 0 and s, what="tiles in the map")
        assert all(re.fullmatch(r"/tiles/\d+/\d+/\d+\.png", p) for p in tiles.paths)
        first = state["zoom"]
        assert 12 <= first <= 18 and tiles.zooms() == {first}     # a town's few kilometres; one zoom fetched
        assert set(other_origins(browser, server.url)) <= {tiles.template.split("/tiles")[0] + p for p in tiles.paths}
        assert "tiles: test server" in css(browser, "#wall-map .annotation-text")[0].text
        browser.save_screenshot(str(ARTIFACTS / "wall-tiles.png"))

        # zoom in twice: the browser asks for the tiles of the new view two levels down
        asked = len(tiles.paths)
        zoom_in_twice(browser)
        wait_for(browser, lambda b: map_state(b)["zoom"] == first + 2, what="the deeper tiles on the map")
        assert len(tiles.paths) > asked and first + 2 in tiles.zooms()
        # and the map keeps following the flow: a new tick is drawn over the zoomed tiles
        now = new_tick(wall_data)
        wait_for(browser, lambda b: shown_ts(b) == now, what="the new tick over the tiles")
        after = map_state(browser)
        assert after["zoom"] == first + 2 and after["pipes"] > 0 and after["shown"] > 0     # the zoom stayed
        assert after["range"][1] - after["range"][0] < (state["range"][1] - state["range"][0]) / 3
        browser.save_screenshot(str(ARTIFACTS / "wall-tiles-zoomed.png"))
