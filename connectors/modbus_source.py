"""The bytewax source over a Modbus TCP server: ``ModbusSource``, one partition per device (unit),
each driving a ``ModbusPoller`` (``modbus.py``) on its own event loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.modbus import MAX_READ_REGISTERS, ModbusPoller, next_deadline
from pipetwin.connectors.points import PointTable


class ModbusSource(FixedPartitionedSource[pa.RecordBatch, int]):
    """Polls a Modbus TCP server from a bytewax dataflow; one partition per device (unit) on
    ``host:port``, so cluster workers share devices. Each item is one Arrow batch in the Reading
    schema holding a whole poll: bytewax's per-item overhead would dominate with one item per value.

    ``connections`` TCP connections per device carry a poll's reads concurrently (see
    ``ModbusPoller``), and a poll in flight never holds up bytewax's worker thread (see
    ``_ModbusPartition``); ``wait_for_poll=True`` makes ``next_batch`` wait for the poll's
    replies instead (the flow as first built; ``pipetwin bench flow`` compares the two).

    ``max_polls`` ends each partition after that many polls (tests, bounded replays). The
    snapshot is the partition's poll count: there is nothing to seek back to in a live device,
    so resuming only carries the count on (and with it ``max_polls``).

    Each partition drives its own event loop, so run the dataflow from a thread without a running
    loop (from async code: ``await asyncio.to_thread(run_main, flow)``).
    """

    def __init__(self, points: PointTable, host: str, port: int = 502, *, period_s: float = 1.0,
                 timeout_s: float = 1.0, source: str | None = None, max_polls: int | None = None,
                 max_gap: int = 8, max_count: int = MAX_READ_REGISTERS, backoff_s: float = 0.1,
                 backoff_max_s: float = 10.0, connections: int = 4, wait_for_poll: bool = False):
        self.points, self.host, self.port = points, host, port
        self.period_s, self.timeout_s, self.source, self.max_polls = period_s, timeout_s, source, max_polls
        self.max_gap, self.max_count, self.backoff_s, self.backoff_max_s = max_gap, max_count, backoff_s, backoff_max_s
        self.connections, self.wait_for_poll = connections, wait_for_poll

    def list_parts(self) -> list[str]:
        units = sorted({self.points.address[r].unit for r in self.points.select("modbus")})
        return [f"{self.host}:{self.port}/{u}" for u in units]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ModbusPartition:
        unit = int(for_part.rsplit("/", 1)[1])
        poller = ModbusPoller(self.points, self.host, self.port, period_s=self.period_s,
                              timeout_s=self.timeout_s, source=self.source, unit=unit,
                              max_gap=self.max_gap, max_count=self.max_count, backoff_s=self.backoff_s,
                              backoff_max_s=self.backoff_max_s, connections=self.connections)
        return _ModbusPartition(poller, self.max_polls, resume_state or 0, self.wait_for_poll)


class _ModbusPartition(StatefulSourcePartition[pa.RecordBatch, int]):
    """One device. The asyncio ``ModbusPoller`` runs on a private event loop that only turns
    inside ``next_batch``, and never blocks it: a due poll is started as a task, each call runs
    the loop's ready work without waiting for I/O (requests go out, replies that arrived are
    read), and returns ``[]`` until the poll is done, asking to be called again ``turn_s`` later.
    A poll's round trips would otherwise be time bytewax's one worker thread waits with every
    other step held up (measured: about 50 ms per poll of 16 reads on a busy machine, times 8
    devices a second at 10,000 points), and the polls of all devices now overlap.

    Why not a thread or the sync client: one implementation of polling, backoff and counters
    serves both asyncio users and bytewax; there is no thread to leak or synchronize with
    bytewax's worker. Socket events that arrive between polls (a server closing the connection)
    are handled when the loop next turns, which is when the poll needs them.
    """

    turn_s = 0.005      # while a poll is in flight: how soon to look again (the replies' extra delay)

    def __init__(self, poller: ModbusPoller, max_polls: int | None, polls_done: int, wait_for_poll: bool = False):
        self._poller, self._max_polls, self._polls = poller, max_polls, polls_done
        self._wait = wait_for_poll
        self._loop = asyncio.new_event_loop()
        self._period = timedelta(seconds=poller.period_s)
        self._due = datetime.now(timezone.utc)               # the poll schedule
        self._next_awake = self._due
        self._task: asyncio.Task | None = None

    def next_batch(self) -> list[pa.RecordBatch]:
        if self._task is None:
            if self._max_polls is not None and self._polls >= self._max_polls:
                raise StopIteration()
            self._task = self._loop.create_task(self._poller.poll_once())
        if self._wait:
            self._loop.run_until_complete(self._task)
        self._turn()
        if not self._task.done():
            self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=self.turn_s)
            return []
        batch = self._task.result()
        self._task = None
        self._polls += 1
        now = datetime.now(timezone.utc).timestamp()
        nxt = next_deadline(self._due.timestamp(), self._period.total_seconds(), now)
        self._due = self._next_awake = datetime.fromtimestamp(nxt, timezone.utc)
        return [batch]

    def _turn(self, max_rounds: int = 64) -> None:
        """Run the loop until it has nothing ready (I/O polled, never waited for)."""
        for _ in range(max_rounds):
            self._loop.call_soon(self._loop.stop)
            self._loop.run_forever()
            if self._task.done() or not self._loop._ready:     # noqa: SLF001 (asyncio has no public "idle")
                return

    def next_awake(self) -> datetime | None:
        return self._next_awake

    def snapshot(self) -> int:
        return self._polls

    def close(self) -> None:
        if not self._loop.is_closed():
            if self._task is not None and not self._task.done():
                self._task.cancel()
                self._loop.run_until_complete(asyncio.gather(self._task, return_exceptions=True))
            self._loop.run_until_complete(self._poller.close())
            self._loop.run_until_complete(asyncio.sleep(0))     # let the transport finish closing
            self._loop.close()


__all__ = ["ModbusSource"]
