"""The bytewax source over OPC-UA servers: ``OpcUaSource``, one partition per server.

Each partition runs an ``OpcUaSubscriber`` (``opcua.py``) on its own event loop in a background
thread, because bytewax partitions are synchronous and ``next_batch`` must not block; batches cross
over through a thread-safe queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.opcua import OpcUaSubscriber
from pipetwin.connectors.points import PointTable


class _SubscriberThread:
    """An ``OpcUaSubscriber`` on its own event loop in a daemon thread; batches cross over
    through a thread-safe queue, so the bytewax worker never waits on the network."""

    def __init__(self, subscriber: OpcUaSubscriber):
        self.subscriber = subscriber
        self.out: queue.Queue = queue.Queue()
        self.done = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"opcua {subscriber.url}")
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._pump())
        finally:
            self._loop.close()
            self.done.set()

    async def _pump(self) -> None:
        async for batch in self.subscriber.batches():
            self.out.put(batch)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.done.is_set():
            asyncio.run_coroutine_threadsafe(self.subscriber.stop(), self._loop)
        self._thread.join(timeout)


class _OpcUaPartition(StatefulSourcePartition[pa.RecordBatch, None]):
    """One server. Live data has no position to resume from: the snapshot is None and a
    resumed flow simply subscribes again (the server sends current values first)."""

    def __init__(self, subscriber: OpcUaSubscriber, run_for: timedelta | None, poll: timedelta):
        self._worker = _SubscriberThread(subscriber)
        self._deadline = None if run_for is None else time.monotonic() + run_for.total_seconds()
        self._poll = poll
        self._idle = False

    def next_batch(self) -> list[pa.RecordBatch]:
        batches = self._take()
        if self._deadline is not None and time.monotonic() >= self._deadline and not batches:
            raise StopIteration
        if self._worker.done.is_set() and not batches and self._worker.out.empty():
            err = self._worker.subscriber.error
            if err is not None:
                raise err
            raise StopIteration
        self._idle = not batches
        return batches

    def _take(self) -> list[pa.RecordBatch]:
        batches = []
        while True:
            try:
                batches.append(self._worker.out.get_nowait())
            except queue.Empty:
                return batches

    def next_awake(self) -> datetime | None:
        return datetime.now(timezone.utc) + self._poll if self._idle else None

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._worker.stop()


class OpcUaSource(FixedPartitionedSource[pa.RecordBatch, None]):
    """bytewax input: Reading batches from one or more OPC-UA servers, one partition each.

    ``servers`` maps endpoint URL to the point table served there; ``options`` go to each
    ``OpcUaSubscriber``. ``run_for`` ends the stream after that long (tests, soak runs);
    without it the source runs until the flow is stopped.
    """

    def __init__(self, servers: Mapping[str, PointTable], *, run_for: timedelta | None = None,
                 poll: timedelta = timedelta(milliseconds=20), **options: Any):
        self.servers = dict(servers)
        self.run_for = run_for
        self.poll = poll
        self.options = options

    def list_parts(self) -> list[str]:
        return list(self.servers)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OpcUaPartition:
        subscriber = OpcUaSubscriber(self.servers[for_part], for_part, **self.options)
        return _OpcUaPartition(subscriber, self.run_for, self.poll)


__all__ = ["OpcUaSource"]
