"""Serving the wall: a threaded WSGI server on a port of its own (``pipetwin dashboard``), started
in the background by ``pipetwin run`` and by the browser tests."""

from __future__ import annotations

import socket
import threading

from werkzeug.serving import make_server

from pipetwin.dashboards.app import create_app
from pipetwin.dashboards.tiles import Tiles


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WallServer:
    """The wall on ``http://host:port``, served from a daemon thread until ``close``."""

    def __init__(self, redis_url: str, network: str, historian: str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, poll_ms: int = 500, studies_dir: str | None = None, reports_dir: str | None = None,
                 network_file: str | None = None, tiles: Tiles | None = None):
        self.app = create_app(redis_url, network, historian, poll_ms=poll_ms, studies_dir=studies_dir,
                              reports_dir=reports_dir, network_file=network_file, tiles=tiles)
        self.host, self.port = host, port or free_port(host)
        self._server = make_server(host, self.port, self.app.server, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="wall", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WallServer":
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def __enter__(self) -> "WallServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
