"""A real OPC-UA field server for the simulator and the tests (asyncua on loopback).

Why it exists: the OPC-UA client (``opcua.py``) should meet the same protocol in tests and in
simulated runs as in the field, so the simulator writes its readings into a real server instead
of short-cutting to Arrow. One ``Double`` variable per OPC-UA point of the point table, at the
point's NodeId; values are written in the point's raw unit (``PointTable.from_si``) with a source
timestamp, exactly as a PLC gateway would publish them.

Security is optional and layered as on a real gateway: anonymous or username/password
identities, and the None / Basic256Sha256 Sign / SignAndEncrypt channels. A self-signed server
certificate is generated into a temporary folder when a secure policy is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

from pipetwin.connectors.points import PointTable

_log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:pipetwin:field"
APP_URI = "urn:pipetwin:opcua-field-server"
DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:0/pipetwin/"
YIELD_EVERY = 250           # writes between yields to the event loop in set_values
# Names accepted for ``security``; the secure ones need a certificate (made on the fly).
SECURITY_POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


@dataclass(frozen=True)
class CertificateFiles:
    """A DER certificate and its PEM private key on disk (what asyncua loads on both sides)."""

    cert: Path
    key: Path


async def self_signed_certificate(directory: str | Path, app_uri: str, *, client: bool,
                                  name: str = "pipetwin") -> CertificateFiles:
    """Make (or reuse) a self-signed application certificate for 127.0.0.1/localhost.

    The subject alternative names carry ``app_uri``, which OPC-UA peers compare with the
    application description, so client and server each need their own."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(directory / f"{name}-cert.der", directory / f"{name}-key.pem")
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    await setup_self_signed_certificate(files.key, files.cert, app_uri, "localhost", [usage],
                                        {"commonName": name, "organizationName": "pipetwin"})
    return files


class _PasswordUsers:
    """asyncua user manager: accept only the configured username/password pairs (no anonymous)."""

    def __init__(self, users: Mapping[str, str]):
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User)
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now, so the server keeps one port across stop/start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _with_port(endpoint: str, port: int | None) -> str:
    """``endpoint`` with its port replaced by ``port`` (0 or absent: a free port)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    want = port if port is not None else (parts.port or 0)
    if want == 0:
        want = free_port(parts.hostname or "127.0.0.1")
    return urlunsplit((parts.scheme, f"{parts.hostname}:{want}", parts.path or "/", "", ""))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class OpcUaFieldServer:
    """An asyncua server exposing the OPC-UA points of a point table.

    Usage (inside a coroutine)::

        server = OpcUaFieldServer(points)             # endpoint port 0: a free port, kept
        endpoint = await server.start()               # opc.tcp://127.0.0.1:PORT/pipetwin/
        await server.set_values({"PT-002": 2.0e5})    # SI in, raw (mbar gauge) on the wire
        await server.stop(); await server.start()     # same port again: clients reconnect
        await server.close()

    Before the first write each variable is ``BadWaitingForInitialData`` (no value yet), so a
    subscriber sees "bad" rather than a made-up zero.
    """

    def __init__(self, points: PointTable, endpoint: str | int = DEFAULT_ENDPOINT, *,
                 security: Iterable[str] = ("None",), users: Mapping[str, str] | None = None,
                 cert_dir: str | Path | None = None, name: str = "pipetwin field server"):
        self.points = points
        self.endpoint = (_with_port(DEFAULT_ENDPOINT, endpoint) if isinstance(endpoint, int)
                         else _with_port(endpoint, None))
        self.security = tuple(security)
        unknown = set(self.security) - set(SECURITY_POLICIES)
        if unknown:
            raise ValueError(f"unknown security policies {sorted(unknown)}; use {sorted(SECURITY_POLICIES)}")
        self.users = dict(users) if users else None
        self.cert_dir = cert_dir
        self.name = name
        self.rows = points.select("opcua")
        self.nodeids = [ua.NodeId.from_string(str(points.address[r])) for r in self.rows]
        self._row_of = {points.ids[r]: k for k, r in enumerate(self.rows)}
        self._status = np.zeros(len(self.rows), np.uint32)          # ua.StatusCodes.Good
        self._server: Server | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.certificate: CertificateFiles | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        """Build (first time), then listen. Returns the endpoint URL clients connect to."""
        if self._server is None:
            self._server = await self._build()
        await self._server.start()
        _log.info("OPC-UA field server listening on %s", self.endpoint)
        return self.endpoint

    async def stop(self) -> None:
        """Close every connection and the listening socket; the address space is kept, so
        ``start`` again serves the same nodes on the same port (an outage, as seen by clients)."""
        if self._server is not None:
            await self._server.stop()

    async def close(self) -> None:
        """Stop and forget the server and its temporary certificate folder."""
        await self.stop()
        self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> OpcUaFieldServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- values -----------------------------------------------------------------------------

    async def set_values(self, si: Mapping[str, float], ts: datetime | int | None = None) -> None:
        """Write SI values (point id -> value) as raw field values with one source timestamp
        (``ts``: datetime or UTC ns; default now). Points not served here are an error."""
        server = self._require_server()
        source_ts = _as_datetime(ts)
        now = _now()
        ks = np.array([self._row_of[p] for p in si], np.int64) if si else np.zeros(0, np.int64)
        raw = self.points.from_si(self.rows[ks], np.fromiter(si.values(), float, len(si)))
        for j, (k, x) in enumerate(zip(ks.tolist(), raw.tolist())):
            dv = ua.DataValue(Value=ua.Variant(float(x), ua.VariantType.Double),
                              StatusCode=ua.StatusCode(int(self._status[k])),
                              SourceTimestamp=source_ts, ServerTimestamp=now)
            await server.write_attribute_value(self.nodeids[k], dv)
            if j % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)        # a big write must not starve publish/keepalive

    def set_status(self, point_id: str, status: ua.StatusCode | int) -> None:
        """The OPC-UA status the next ``set_values`` of this point carries (tests, fault scenarios)."""
        code = status.value if isinstance(status, ua.StatusCode) else int(status)
        self._status[self._row_of[point_id]] = code

    # --- building ---------------------------------------------------------------------------

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("OpcUaFieldServer: call start() first")
        return self._server

    async def _build(self) -> Server:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(self.name)
        await server.set_application_uri(APP_URI)
        server.set_force_server_timestamp(False)      # keep the timestamps we write
        await self._configure_security(server)
        await self._add_points(server)
        return server

    async def _configure_security(self, server: Server) -> None:
        policies = [SECURITY_POLICIES[s] for s in self.security]
        server.set_security_policy(policies)
        if self.users is not None:
            server.iserver.user_manager = _PasswordUsers(self.users)
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if any(s != "None" for s in self.security):
            folder = self.cert_dir
            if folder is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="pipetwin-opcua-")
                folder = self._tmp.name
            self.certificate = await self_signed_certificate(folder, APP_URI, client=False, name="server")
            await server.load_certificate(str(self.certificate.cert))
            await server.load_private_key(str(self.certificate.key))

    async def _add_points(self, server: Server) -> None:
        """One Double variable per point at its own NodeId, under an ``Objects/<site>`` folder.
        Namespaces are registered until every index the table uses exists (ns=2 is ours)."""
        wanted = max((n.NamespaceIndex for n in self.nodeids), default=2)
        idx = await server.register_namespace(NAMESPACE_URI)
        while idx < wanted:
            idx = await server.register_namespace(f"{NAMESPACE_URI}:{idx + 1}")
        folder = await server.nodes.objects.add_folder(ua.NodeId(self.points.site or "site", 2),
                                                       f"2:{self.points.site or 'site'}")
        waiting = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
        for k, nodeid in enumerate(self.nodeids):
            pid = self.points.ids[self.rows[k]]
            var = await folder.add_variable(nodeid, ua.QualifiedName(pid, nodeid.NamespaceIndex),
                                            ua.Variant(math.nan, ua.VariantType.Double))
            await server.write_attribute_value(var.nodeid, ua.DataValue(
                Value=ua.Variant(None, ua.VariantType.Null), StatusCode=waiting,
                SourceTimestamp=_now(), ServerTimestamp=_now()))


def _as_datetime(ts: datetime | int | None) -> datetime:
    """A UTC datetime from a datetime, an integer of UTC nanoseconds, or None (now)."""
    if ts is None:
        return _now()
    if isinstance(ts, datetime):
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    seconds, ns = divmod(int(ts), 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=ns // 1000)
