"""OPC-UA subscriptions to Reading batches (the bytewax source around them is ``opcua_source.py``).

Why a subscription and not polling: SCADA servers push data changes (with the device's source
timestamp) once per publishing interval, and a deadband on the server keeps noise off the wire.
One subscription carries every point of a server; its monitored items are created in one
``CreateMonitoredItems`` call, so thousands of points cost one round trip.

Protocol and plumbing are kept apart (STYLE.md, connectors/):

* ``quality_of`` and ``decode`` are pure: StatusCode severity bits to good/uncertain/bad, and a
  DataValue to (source ts ns, raw value, quality). Tested without a server.
* ``OpcUaSubscriber`` is the asyncio client: connect (anonymous, username/password, or a
  Basic256Sha256 certificate), subscribe, turn notifications into Arrow batches in the Reading
  schema (SI via the point table), and when the server goes away (keepalive / session watchdog)
  flag the outage with one BAD NaN reading per point, then reconnect with exponential backoff and
  subscribe again.
* ``OpcUaSource`` (in ``opcua_source.py``) is a thin bytewax ``FixedPartitionedSource`` around it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from asyncua import Client, ua
from asyncua.crypto import security_policies

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import BAD, GOOD, READING_SCHEMA, UNCERTAIN

_log = logging.getLogger(__name__)

CLIENT_APP_URI = "urn:pipetwin:opcua-client"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


# --- protocol: pure decoding ------------------------------------------------------------------

def quality_of(status: int) -> int:
    """Reading quality from an OPC-UA StatusCode: its two severity bits (Part 4, 7.34.1):
    00 good, 01 uncertain, 10 bad (11 is reserved and treated as bad).

    >>> quality_of(0), quality_of(0x40920000), quality_of(0x80310000), quality_of(0xC0000000)
    (0, 1, 2, 2)
    """
    severity = (int(status) >> 30) & 0b11
    return (GOOD, UNCERTAIN, BAD, BAD)[severity]


def datetime_ns(dt: datetime) -> int:
    """UTC nanoseconds of a datetime (asyncua decodes aware UTC; naive is taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return ((dt - _EPOCH) // _US) * 1000


def decode(dv: ua.DataValue, received_ns: int) -> tuple[int, float, int]:
    """(ts ns, raw value, quality) of a data change.

    The timestamp is the SOURCE timestamp (when the device measured), else the server's, else
    the time we received it. A value that is missing or not a number becomes NaN and bad, so it
    is flagged downstream instead of dropped.

    >>> dv = ua.DataValue(ua.Variant(12.5, ua.VariantType.Double), SourceTimestamp=_EPOCH + timedelta(seconds=1))
    >>> decode(dv, 0)
    (1000000000, 12.5, 0)
    >>> decode(ua.DataValue(ua.Variant("x")), 7)
    (7, nan, 2)
    """
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    ts_ns = datetime_ns(ts) if ts is not None else received_ns
    quality = quality_of(dv.StatusCode.value) if dv.StatusCode is not None else GOOD
    raw = dv.Value.Value if dv.Value is not None else None
    if isinstance(raw, (bool, int, float)) and not isinstance(raw, complex):
        value = float(raw)
        if not math.isfinite(value):
            quality = BAD
        return ts_ns, value, quality
    return ts_ns, math.nan, BAD


def monitored_item_requests(nodeids: Sequence[ua.NodeId], sampling_interval_ms: float,
                            deadbands_raw: np.ndarray, queue_size: int) -> list[ua.MonitoredItemCreateRequest]:
    """One request per node, client handle = position in ``nodeids``, so a notification maps
    to its point without a lookup by NodeId. An absolute deadband is set where it is > 0."""
    requests = []
    for k, nodeid in enumerate(nodeids):
        params = ua.MonitoringParameters(ClientHandle=k, SamplingInterval=sampling_interval_ms,
                                         QueueSize=queue_size, DiscardOldest=True)
        if deadbands_raw[k] > 0:
            params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=ua.DeadbandType.Absolute,
                                                DeadbandValue=float(deadbands_raw[k]))
        requests.append(ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=nodeid, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params))
    return requests


# --- configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class UserPassword:
    """Username/password identity on whatever channel the server offers."""

    username: str
    password: str


@dataclass(frozen=True)
class CertificateSecurity:
    """A Basic256Sha256 secure channel with our application certificate (DER) and key (PEM).

    ``server_certificate`` pins the server's certificate; without it the client reads it from
    the server's endpoint list. ``app_uri`` must be the URI in our certificate."""

    certificate: Path | str
    private_key: Path | str
    mode: str = "SignAndEncrypt"            # or "Sign"
    server_certificate: Path | str | None = None
    app_uri: str = CLIENT_APP_URI
    user: UserPassword | None = None


Security = UserPassword | CertificateSecurity | None


class OpcUaAuthError(ConnectionError):
    """The server refused our identity or security settings: retrying would not help."""


_AUTH_CODES = {
    ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenRejected,
    ua.StatusCodes.BadIdentityTokenInvalid, ua.StatusCodes.BadSecurityPolicyRejected,
    ua.StatusCodes.BadCertificateInvalid, ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadSecurityChecksFailed, ua.StatusCodes.BadSecurityModeRejected,
}


def is_auth_failure(exc: BaseException) -> bool:
    """True for refusals of identity or security (wrong password, untrusted certificate)."""
    code = getattr(exc, "code", None)
    return isinstance(exc, ua.UaStatusCodeError) and code in _AUTH_CODES


@dataclass
class Counters:
    """What the subscriber has seen, for health pages and tests."""

    notifications: int = 0        # data change notifications received
    readings: int = 0             # rows handed out (notifications + gap markers)
    bad: int = 0                  # rows with quality bad (gap markers included)
    gaps: int = 0                 # outages detected
    gap_readings: int = 0         # BAD NaN rows written for outages
    reconnects: int = 0           # successful connections after an outage
    connect_failures: int = 0     # failed connection attempts
    batches: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Pending:
    """Readings accumulated since the last batch: position in the subscribed rows, ts, raw, q."""

    k: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    q: list[int] = field(default_factory=list)
    since: float = 0.0

    def add(self, k: int, ts: int, raw: float, q: int) -> None:
        if not self.k:
            self.since = time.monotonic()
        self.k.append(k)
        self.ts.append(ts)
        self.raw.append(raw)
        self.q.append(q)


# --- the asyncio client -----------------------------------------------------------------------

_END = object()


class OpcUaSubscriber:
    """Subscribe to the OPC-UA points of ``points`` on one server; hand out Reading batches.

    ``deadband``: None takes each point's deadband from the table (turned into raw units, as the
    server compares raw values); 0 turns deadbands off; a positive number is one absolute raw
    deadband for every point. Batches are cut every ``batch_interval_s`` or at
    ``max_batch_rows``. A closed socket is noticed at once; ``watchdog_interval_s`` is how often
    (and how long) a keepalive read probes a silent connection: generous by default, because a
    busy server that answers late is not an outage.

    Use as ``async with sub: async for batch in sub.batches(): ...``, or run ``run()`` yourself
    and read ``batches()``. The whole run is one task; several subscribers share a loop.
    """

    def __init__(self, points: PointTable, url: str, *, sampling_interval_ms: float = 1000.0,
                 publishing_interval_ms: float | None = None, deadband: float | None = None,
                 security: Security = None, source: str | None = None, queue_size: int = 10,
                 batch_interval_s: float = 0.1, max_batch_rows: int = 50_000,
                 watchdog_interval_s: float = 5.0, request_timeout_s: float = 4.0,
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0,
                 max_queued_batches: int = 10_000):
        self.points = points
        self.url = url
        self.sampling_interval_ms = sampling_interval_ms
        self.publishing_interval_ms = publishing_interval_ms
        self.deadband = deadband
        self.security = security
        self.source = source
        self.queue_size = queue_size
        self.batch_interval_s = batch_interval_s
        self.max_batch_rows = max_batch_rows
        self.watchdog_interval_s = watchdog_interval_s
        self.request_timeout_s = request_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.max_queued_batches = max_queued_batches
        # state, separate from the configuration above
        self.rows = points.select("opcua")
        self.nodeids = [ua.NodeId.from_string(str(points.address[r])) for r in self.rows]
        self._ids = pa.array([points.ids[r] for r in self.rows], pa.string())
        self._source_name = source or f"opcua:{url}"
        self.counters = Counters()
        self.connected = False
        self.error: BaseException | None = None
        self._pending = _Pending()
        self._out: asyncio.Queue | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    # --- public surface ---------------------------------------------------------------------

    def deadbands_raw(self) -> np.ndarray:
        """Absolute deadband per subscribed point, in the raw units the server holds."""
        if self.deadband is not None:
            return np.full(len(self.rows), float(self.deadband))
        return self.points.deadband_si[self.rows] / np.abs(self.points.si_scale[self.rows])

    async def __aenter__(self) -> OpcUaSubscriber:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> asyncio.Task:
        """Run the connect / subscribe / reconnect loop as a task on the running loop."""
        self._ensure_queues()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"opcua-subscriber {self.url}")
        return self._task

    async def stop(self) -> None:
        """Ask the loop to end (the last readings are flushed) and wait for it."""
        self._ensure_queues()
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        """Reading batches as they are cut; ends after ``stop()``; raises if the loop failed
        for good (``OpcUaAuthError``)."""
        self._ensure_queues()
        if self._task is None:
            self.start()
        while True:
            item = await self._out.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    async def run(self) -> None:
        """Connect, subscribe and pump until stopped; after a loss, flag the gap and reconnect
        with exponential backoff. Identity/security refusals end the loop (``self.error``)."""
        self._ensure_queues()
        delay = self.reconnect_initial_s
        had_session = False
        try:
            while not self._stop.is_set():
                try:
                    client = await self._connect()
                except Exception as exc:                       # noqa: BLE001 - any failure retries
                    if is_auth_failure(exc):
                        raise OpcUaAuthError(f"{self.url}: {exc}") from exc
                    self.counters.connect_failures += 1
                    _log.info("OPC-UA connect to %s failed (%r); retry in %.1f s", self.url, exc, delay)
                    await self._sleep_or_stop(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                delay = self.reconnect_initial_s
                if had_session:
                    self.counters.reconnects += 1
                had_session = True
                lost_at_ns = await self._serve(client)
                if lost_at_ns is not None:
                    await self._mark_gap(lost_at_ns)
        except OpcUaAuthError as exc:
            self.error = exc
        finally:
            await self._flush()
            await self._out.put(_END)

    # --- connection -------------------------------------------------------------------------

    def _ensure_queues(self) -> None:
        if self._out is None:
            self._out = asyncio.Queue(maxsize=self.max_queued_batches)
            self._stop = asyncio.Event()

    async def _connect(self) -> Client:
        client = Client(self.url, timeout=self.request_timeout_s, watchdog_intervall=self.watchdog_interval_s)
        client.application_uri = CLIENT_APP_URI
        client.session_timeout = max(10_000, int(self.watchdog_interval_s * 10_000))
        await self._apply_security(client)
        try:
            await client.connect(auto_reconnect=False)
        except BaseException:
            await _quiet_disconnect(client)
            raise
        return client

    async def _apply_security(self, client: Client) -> None:
        sec = self.security
        user = sec if isinstance(sec, UserPassword) else getattr(sec, "user", None)
        if user is not None:
            client.set_user(user.username)
            client.set_password(user.password)
        if isinstance(sec, CertificateSecurity):
            client.application_uri = sec.app_uri
            mode = {"Sign": ua.MessageSecurityMode.Sign,
                    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}[sec.mode]
            await client.set_security(security_policies.SecurityPolicyBasic256Sha256,
                                      certificate=str(sec.certificate), private_key=str(sec.private_key),
                                      server_certificate=(str(sec.server_certificate)
                                                          if sec.server_certificate else None),
                                      mode=mode)

    async def _serve(self, client: Client) -> int | None:
        """Subscribe and pump notifications until the connection is lost (returns the time it
        was seen, UTC ns) or we are stopped (None). Loss comes from the client's watchdog (a
        failed keepalive read or a closed socket) through ``connection_lost_callback``."""
        lost = asyncio.Event()
        lost_at = [0]

        async def on_lost(exc: Exception) -> None:
            _log.warning("OPC-UA connection to %s lost: %r", self.url, exc)
            lost_at[0] = lost_at[0] or time.time_ns()
            lost.set()

        client.connection_lost_callback = on_lost
        tasks: list[asyncio.Task] = []
        try:
            sub = await self._subscribe(client)
            self.connected = True
            tasks = [asyncio.create_task(self._drain(sub, lost)), asyncio.create_task(self._ticker()),
                     asyncio.create_task(lost.wait()), asyncio.create_task(self._stop.wait())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks[:2]:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    _log.error("OPC-UA %s: notification pump failed", self.url, exc_info=t.exception())
            if self._stop.is_set() and not lost.is_set():
                return None
            return lost_at[0] or time.time_ns()
        except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
            _log.warning("OPC-UA subscription on %s failed: %r", self.url, exc)
            return lost_at[0] or time.time_ns()
        finally:
            self.connected = False
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._flush()
            await _quiet_disconnect(client)

    async def _subscribe(self, client: Client):
        """One subscription, all monitored items created in one batched request."""
        publishing = self.publishing_interval_ms or self.sampling_interval_ms
        sub = await client.create_subscription(publishing, None, queue_maxsize=0)
        requests = monitored_item_requests(self.nodeids, self.sampling_interval_ms,
                                           self.deadbands_raw(), self.queue_size)
        results = await sub.create_monitored_items(requests)
        refused = [k for k, r in enumerate(results) if isinstance(r, ua.StatusCode)]
        for k in refused:
            _log.warning("OPC-UA %s: point %s not monitored (%s)", self.url,
                         self.points.ids[self.rows[k]], results[k].name)
        await self._emit_bad(refused, time.time_ns())
        return sub

    async def _drain(self, sub: Any, lost: asyncio.Event) -> None:
        """Take every subscription event as it comes; a status change (the server closing the
        subscription) counts as a loss."""
        async for event in sub:
            monitored = getattr(getattr(event, "data", None), "monitored_item", None)
            if monitored is not None:
                self._on_data_change(monitored)
                if len(self._pending.k) >= self.max_batch_rows:
                    await self._flush()
            elif hasattr(event, "notification"):
                status = event.notification.Status
                if not status.is_good():
                    _log.warning("OPC-UA %s: subscription status %s", self.url, status.name)
                    lost.set()
                    return

    def _on_data_change(self, item: ua.MonitoredItemNotification) -> None:
        k = item.ClientHandle
        if not 0 <= k < len(self.rows):
            return
        ts, raw, q = decode(item.Value, time.time_ns())
        self.counters.notifications += 1
        self._pending.add(k, ts, raw, q)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.batch_interval_s)
            await self._flush()

    async def _sleep_or_stop(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # --- batches ----------------------------------------------------------------------------

    async def _mark_gap(self, lost_at_ns: int) -> None:
        """The outage as data: one BAD NaN reading per point at the time the loss was seen."""
        self.counters.gaps += 1
        self.counters.gap_readings += len(self.rows)
        await self._flush()
        await self._emit_bad(range(len(self.rows)), lost_at_ns)

    async def _emit_bad(self, ks: Sequence[int] | range, ts_ns: int) -> None:
        for k in ks:
            self._pending.add(k, ts_ns, math.nan, BAD)
        await self._flush()

    async def _flush(self) -> None:
        """Cut the pending readings into one Reading batch (raw -> SI via the table)."""
        p = self._pending
        if not p.k:
            return
        self._pending = _Pending()
        batch = self._to_batch(p)
        self.counters.readings += batch.num_rows
        self.counters.bad += int(np.count_nonzero(batch.column("quality").to_numpy() == BAD))
        self.counters.batches += 1
        await self._out.put(batch)

    def _to_batch(self, p: _Pending) -> pa.RecordBatch:
        ks = np.asarray(p.k, np.int64)
        values = self.points.to_si(self.rows[ks], np.asarray(p.raw, float))
        q = np.asarray(p.q, np.int8)
        q = np.where(np.isfinite(values), q, BAD).astype(np.int8)
        n = len(ks)
        return pa.RecordBatch.from_arrays(
            [self._ids.take(pa.array(ks)), pa.array(np.asarray(p.ts, np.int64), pa.timestamp("ns", tz="UTC")),
             pa.array(values, pa.float64()), pa.array(q, pa.int8()),
             pa.repeat(pa.scalar(self._source_name, pa.string()), n)],
            schema=READING_SCHEMA)


async def _quiet_disconnect(client: Client) -> None:
    """Tear a client down whatever state it is in (the server may already be gone)."""
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except Exception:                                          # noqa: BLE001 - best effort
        _log.debug("OPC-UA disconnect raised", exc_info=True)
