"""Modbus TCP: register decoding, request planning and an asyncio poller.

Protocol is kept apart from plumbing (STYLE.md, connectors/): ``decode_block``/``decode_registers``
and ``encode_value`` turn register words into numbers and back, and ``plan_requests`` groups the
point table's registers into few reads; all three are pure and tested without a server.
``ModbusPoller`` is the only part that talks to a device, and ``ModbusSource`` (in
``modbus_source.py``) is a thin bytewax wrapper around it.

Words on the wire are 16-bit big-endian registers. A multi-register value has its words either
high word first (``big``, the Modbus convention and our default) or low word first (``little``,
what many PLCs do for 32-bit values); bytes inside a word are always big-endian.

>>> encode_value(1.5, "float32", "big")
[16320, 0]
>>> decode_registers(np.array([0, 16320], np.uint16), "float32", "little")
1.5
>>> from pipetwin.connectors.points import parse_modbus
>>> [(r.unit, r.start, r.count) for r in plan_requests([parse_modbus("1/0/float32"), parse_modbus("1/4/int16")])]
[(1, 0, 5)]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from pipetwin.connectors.points import MODBUS_TYPES, ModbusAddress, PointTable
from pipetwin.connectors.reading import BAD, GOOD, readings_batch

__all__ = ["MAX_READ_REGISTERS", "ModbusPoller", "PollStats", "ReadRequest", "decode_block",
           "decode_registers", "encode_block", "encode_value", "next_deadline", "plan_requests"]

MAX_READ_REGISTERS = 125          # the Modbus limit for one "read holding registers" (0x03)
# big-endian numpy dtype of each register type: words laid high word first reinterpret as it
_DTYPES = {"int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "float32": ">f4", "float64": ">f8"}


def _check_kind(type: str, order: str) -> int:
    if type not in _DTYPES:
        raise ValueError(f"Modbus type {type!r} is not one of {sorted(_DTYPES)}")
    if order not in ("big", "little"):
        raise ValueError(f"Modbus word order {order!r} is not big or little")
    return MODBUS_TYPES[type]


# ---------------------------------------------------------------------------------------------
# Pure decoding / encoding
# ---------------------------------------------------------------------------------------------

def decode_block(words: np.ndarray, offsets: np.ndarray, type: str, order: str) -> np.ndarray:
    """float64 values of many points of one type and word order, each starting at ``offsets``
    in the register array ``words`` (as read from the device).

    Vectorized because a poll decodes hundreds of points and Python per-value ``struct`` calls
    would dominate: gather the words into a (points, words) matrix, put the high word first,
    and reinterpret the big-endian bytes as the type.

    >>> decode_block(np.array([0xFFFF, 0, 7], np.uint16), np.array([0, 2]), "int16", "big")
    array([-1.,  7.])
    """
    n = _check_kind(type, order)
    offsets = np.asarray(offsets, dtype=np.int64)
    idx = offsets[:, None] + np.arange(n)
    if order == "little":
        idx = idx[:, ::-1]
    be_words = np.asarray(words, dtype=np.uint16)[idx].astype(">u2")   # C-contiguous copy
    return be_words.view(_DTYPES[type]).reshape(len(offsets)).astype(np.float64)


def decode_registers(words: np.ndarray | Sequence[int], type: str, order: str = "big") -> float:
    """The value held in exactly the registers ``words`` (1, 2 or 4 of them, as the type needs)."""
    n = _check_kind(type, order)
    words = np.asarray(words, dtype=np.uint16)
    if len(words) != n:
        raise ValueError(f"{type} needs {n} registers, got {len(words)}")
    return float(decode_block(words, np.zeros(1, np.int64), type, order)[0])


def encode_block(values: np.ndarray | Sequence[float], type: str, order: str = "big") -> np.ndarray:
    """Register words (points, words) for many values of one type and order: the inverse of
    ``decode_block``. Integer types round to nearest and raise ``ValueError`` when a value is not
    finite or out of range (a device cannot hold it); float32 overflows to +-inf like a device."""
    n = _check_kind(type, order)
    dtype = np.dtype(_DTYPES[type])
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not np.isfinite(v).all() or (np.rint(v) < info.min).any() or (np.rint(v) > info.max).any():
            raise ValueError(f"value out of the {type} range [{info.min}, {info.max}]")
        arr = np.rint(v).astype(dtype)
    else:
        with np.errstate(over="ignore"):
            arr = v.astype(dtype)
    words = arr.view(">u2").reshape(len(v), n).astype(np.uint16)
    return words[:, ::-1].copy() if order == "little" else words


def encode_value(value: float, type: str, order: str = "big") -> list[int]:
    """The registers a device holds for ``value`` (what the field server writes)."""
    return [int(w) for w in encode_block([value], type, order)[0]]


# ---------------------------------------------------------------------------------------------
# Request planning
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReadRequest:
    """One "read holding registers" call: ``count`` words from ``start`` on device ``unit``,
    serving the points at ``members`` (positions in the planned address list)."""

    unit: int
    start: int
    count: int
    members: tuple[int, ...]


def plan_requests(addresses: Sequence[ModbusAddress], max_gap: int = 8,
                  max_count: int = MAX_READ_REGISTERS) -> list[ReadRequest]:
    """Group the registers of each device into few reads.

    Points sorted by (unit, register) join the current read while the unused registers between
    them are at most ``max_gap`` and the read stays within ``max_count`` words. Every request is
    a round trip, so bridging small gaps is cheaper than another request; but gap registers must
    be readable on the device (set ``max_gap=0`` for devices that reject undefined registers).
    """
    if not 1 <= max_count <= MAX_READ_REGISTERS:
        raise ValueError(f"max_count must be 1..{MAX_READ_REGISTERS}, got {max_count}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    order = sorted(range(len(addresses)), key=lambda i: (addresses[i].unit, addresses[i].register))
    requests: list[ReadRequest] = []
    unit = start = end = -1
    members: list[int] = []
    for i in order:
        a = addresses[i]
        a_end = a.register + a.words
        if members and a.unit == unit and a.register - end <= max_gap and max(end, a_end) - start <= max_count:
            members.append(i)
            end = max(end, a_end)
            continue
        if members:
            requests.append(ReadRequest(unit, start, end - start, tuple(members)))
        if a.words > max_count:
            raise ValueError(f"a {a.type} point needs {a.words} registers, more than max_count={max_count}")
        unit, start, end, members = a.unit, a.register, a_end, [i]
    if members:
        requests.append(ReadRequest(unit, start, end - start, tuple(members)))
    return requests


@dataclass(frozen=True)
class _Group:
    """Points of one read that share type and order: decoded with one ``decode_block`` call."""

    type: str
    order: str
    positions: np.ndarray      # into the poller's rows
    offsets: np.ndarray        # word offsets inside the read


def _groups(request: ReadRequest, addresses: Sequence[ModbusAddress]) -> list[_Group]:
    kinds: dict[tuple[str, str], list[int]] = {}
    for i in request.members:
        kinds.setdefault((addresses[i].type, addresses[i].order), []).append(i)
    return [_Group(t, o, np.array(pos, np.int64), np.array([addresses[i].register - request.start for i in pos]))
            for (t, o), pos in kinds.items()]


def next_deadline(previous: float, period: float, now: float) -> float:
    """The first ``previous + k*period`` after ``now`` (k >= 1): a slow poll skips missed slots
    instead of bursting to catch up, so timestamps stay one period apart."""
    nxt = previous + period
    if nxt <= now:
        nxt += math.ceil((now - nxt) / period + 1e-12) * period
    return nxt


# ---------------------------------------------------------------------------------------------
# The asyncio poller
# ---------------------------------------------------------------------------------------------

@dataclass
class PollStats:
    """Counters of one poller; ``errors`` counts exception responses, timeouts, short replies and
    failed connection attempts, ``reconnects`` successful connections after a loss."""

    polls: int = 0
    requests: int = 0
    readings: int = 0
    bad: int = 0
    reconnects: int = 0
    errors: int = 0


class ModbusPoller:
    """Polls the Modbus points of a point table on one TCP server (``unit`` picks one device;
    None: all units on it) and returns one Reading batch per poll.

    Each poll reads every planned request once and stamps all readings with the poll's start
    time (UTC ns from ``now_ns``). A request that fails (exception response, timeout, short reply)
    makes its points BAD with value NaN; while the connection is down every point is BAD. So the
    stream has one row per point per poll and gaps are visible downstream, never silent.

    The reads of a poll run concurrently over up to ``connections`` TCP connections (requests
    dealt round-robin, ``asyncio.gather`` over the lanes): a Modbus TCP client may have only one
    request outstanding per connection (pymodbus' client locks, and many servers, the bundled
    simulator's included, answer pipelined requests one data arrival at a time), so a poll of R
    requests costs about R / connections round trips instead of R. Devices limit their TCP
    connections (often 4 to 16; some PLCs 1 or 2), so keep ``connections`` within that;
    ``connections=1`` reads serially.

    Reconnection is ours, not pymodbus' (its clients run with ``reconnect_delay=0``): the
    connections are opened and lost together; after a loss new ones are tried no sooner than
    ``backoff_s``, doubling per failure up to ``backoff_max_s``, while polls go on emitting BAD
    rows. Owning it keeps the counters honest and the poll period independent of connection trouble.
    """

    def __init__(self, points: PointTable, host: str, port: int = 502, *, period_s: float = 1.0,
                 timeout_s: float = 1.0, source: str | None = None, unit: int | None = None,
                 max_gap: int = 8, max_count: int = MAX_READ_REGISTERS, backoff_s: float = 0.1,
                 backoff_max_s: float = 10.0, now_ns: Callable[[], int] = time.time_ns, connections: int = 4):
        if connections < 1:
            raise ValueError(f"Modbus connections must be >= 1, got {connections}")
        self.points, self.host, self.port = points, host, port
        self.period_s, self.timeout_s, self.unit = period_s, timeout_s, unit
        # one name per unit: each unit is polled on its own, and the tick aligner follows each
        # source's own event time (a unit's poll says nothing about another unit's)
        self.source = source or (f"modbus:{host}:{port}" if unit is None else f"modbus:{host}:{port}/{unit}")
        self.backoff_s, self.backoff_max_s, self.now_ns = backoff_s, backoff_max_s, now_ns
        rows = [r for r in points.select("modbus") if unit is None or points.address[r].unit == unit]
        self.rows = np.array(rows, dtype=np.int64)
        addresses = [points.address[r] for r in self.rows]
        self.requests = plan_requests(addresses, max_gap=max_gap, max_count=max_count)
        self._groups = [_groups(r, addresses) for r in self.requests]
        self._ids = pa.array([points.ids[r] for r in self.rows], pa.string())
        self.stats = PollStats()
        # lane k reads requests k, k + n, k + 2n, ... on connection k
        n_lanes = max(1, min(connections, len(self.requests)))
        self._lanes = [list(range(k, len(self.requests), n_lanes)) for k in range(n_lanes)]
        self._clients: list[AsyncModbusTcpClient] = []
        self._ever_connected = False
        self._retry_at = 0.0
        self._delay = backoff_s

    @property
    def connected(self) -> bool:
        return bool(self._clients) and all(c.connected for c in self._clients)

    async def poll_once(self) -> pa.RecordBatch:
        """Read every planned request once, the lanes concurrently; one Reading row per point."""
        ts = self.now_ns()
        raw = np.full(len(self.rows), np.nan)
        if await self._ensure_connected():
            clients = self._clients
            await asyncio.gather(*(self._read_lane(clients[k], lane, raw) for k, lane in enumerate(self._lanes)))
            if self._clients and not self.connected:
                self._lost()
        return self._batch(ts, raw)

    async def _read_lane(self, client: AsyncModbusTcpClient, lane: list[int], raw: np.ndarray) -> None:
        """One connection's share of a poll, in order; stops once the connection is gone."""
        for i in lane:
            if not client.connected:
                return
            words = await self._read(client, self.requests[i])
            if words is not None:
                for g in self._groups[i]:
                    raw[g.positions] = decode_block(words, g.offsets, g.type, g.order)

    async def run(self, max_polls: int | None = None) -> AsyncIterator[pa.RecordBatch]:
        """Poll every ``period_s`` (slots skipped when a poll overruns), forever or ``max_polls`` times."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        done = 0
        while max_polls is None or done < max_polls:
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            yield await self.poll_once()
            done += 1
            due = next_deadline(due, self.period_s, loop.time())

    async def close(self) -> None:
        self._close_clients()

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients = []

    async def __aenter__(self) -> ModbusPoller:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _batch(self, ts: int, raw: np.ndarray) -> pa.RecordBatch:
        values = self.points.to_si(self.rows, raw)
        quality = np.where(np.isfinite(values), GOOD, BAD).astype(np.int8)
        self.stats.polls += 1
        self.stats.readings += len(values)
        self.stats.bad += int((quality == BAD).sum())
        return readings_batch(self._ids, np.full(len(values), ts, np.int64), values, quality, self.source)

    async def _ensure_connected(self) -> bool:
        """Connected (every lane's connection), or a connection attempt if the backoff allows one."""
        if self.connected:
            return True
        if time.monotonic() < self._retry_at:
            return False
        self._close_clients()
        clients = [AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0,
                                        reconnect_delay=0, name=self.source) for _ in self._lanes]
        ok = await asyncio.gather(*(c.connect() for c in clients))
        if all(ok):
            self._clients = clients
            self.stats.reconnects += self._ever_connected
            self._ever_connected = True
            self._delay = self.backoff_s
            return True
        for client in clients:
            client.close()
        self.stats.errors += 1
        self._back_off()
        return False

    def _back_off(self) -> None:
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(2 * self._delay, self.backoff_max_s)

    def _lost(self) -> None:
        """A connection went away: drop them all and wait before the next attempt."""
        self._close_clients()
        self._back_off()

    async def _read(self, client: AsyncModbusTcpClient, request: ReadRequest) -> np.ndarray | None:
        """The request's registers, or None after counting the failure."""
        self.stats.requests += 1
        try:
            reply = await client.read_holding_registers(request.start, count=request.count, device_id=request.unit)
        except (ModbusException, asyncio.TimeoutError, OSError):   # lost, no reply in time, garbled reply
            self.stats.errors += 1
            return None
        if reply.isError() or len(reply.registers) < request.count:
            self.stats.errors += 1
            return None
        return np.asarray(reply.registers[:request.count], dtype=np.uint16)
