"""A drop folder of head-end export files, polled for new finished files, and the bytewax source
over one or more such folders (one partition per folder).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pipetwin.connectors.meter_common import ErrorList, FeedStats, RowError
from pipetwin.connectors.meter_files import read_meter_file
from pipetwin.connectors.meter_rows import Converted, MeterIndex
from pipetwin.connectors.points import PointTable

log = logging.getLogger(__name__)


def split_batch(batch: pa.RecordBatch, rows: int) -> list[pa.RecordBatch]:
    """Slices of at most ``rows`` rows (zero-copy)."""
    return [batch.slice(i, rows) for i in range(0, batch.num_rows, rows)] if batch.num_rows else []


# ----------------------------------------------------------------------------- folder watcher


FileKey = tuple[str, int, int]       # (name, size, mtime_ns)


class MeterFolderWatcher:
    """Poll a drop folder for head-end exports and turn each new, finished file into Readings.

    A file is read once its (size, mtime) has not changed for ``settle_s`` over two polls, so a file
    still being copied in is left alone; names starting with ``.`` or ending ``.part``/``.tmp`` are
    ignored (write-then-rename is the safe way to drop a file). After reading, the file is moved to
    ``processed/`` (``after="move"``) or left in place (``after="keep"``); either way its key
    (name, size, mtime) is remembered, and that list is the snapshot, so a restart does not re-read.
    A file that cannot be parsed at all goes to ``failed/``. Row errors of a file are written
    beside it as ``<name>.errors.csv`` in ``errors/`` and kept in ``self.errors``.
    """

    PATTERNS = (".csv", ".csv.gz", ".parquet", ".pq")

    def __init__(self, points: PointTable, folder: str | Path, *, settle_s: float = 2.0, after: str = "move",
                 batch_rows: int = 262_144, clock: Callable[[], float] = time.monotonic,
                 resume_state: list[FileKey] | None = None, source: str | None = None):
        if after not in ("move", "keep"):
            raise ValueError("after is 'move' or 'keep'")
        self.points, self.folder, self.settle_s, self.after = points, Path(folder), settle_s, after
        self.batch_rows, self.clock = batch_rows, clock
        self.source = source or f"meters:folder:{self.folder.name}"
        self.index = MeterIndex(points)
        self.processed: set[FileKey] = set(map(tuple, resume_state or []))
        self.pending: dict[str, tuple[int, int, float]] = {}
        self.stats = FeedStats()
        self.errors = ErrorList()
        self._requeue = self._uncommitted_moves() if resume_state is not None else []

    # -- snapshot
    def snapshot(self) -> list[FileKey]:
        """Keys of the processed files still in the folder or in ``processed/`` (bounded by what
        the operator keeps on disk)."""
        return sorted(self.processed)

    def _uncommitted_moves(self) -> list[Path]:
        """Files moved to processed/ whose key is not in the resumed snapshot: moved after the
        last committed snapshot, so their readings may be lost downstream: read them again."""
        done = self.folder / "processed"
        return [p for p in sorted(done.iterdir()) if self._wanted(p) and _key(p) not in self.processed] \
            if done.is_dir() else []

    # -- polling
    def poll(self) -> list[pa.RecordBatch]:
        """Read every file that is new and has settled; the Reading batches of all of them."""
        out: list[pa.RecordBatch] = []
        for path in self._requeue:
            out.extend(self._process(path, move=False))
        self._requeue = []
        for path in self._ready():
            out.extend(self._process(path, move=self.after == "move"))
        self._prune()
        return out

    def _wanted(self, p: Path) -> bool:
        name = p.name.lower()
        return p.is_file() and not name.startswith(".") and name.endswith(self.PATTERNS)

    def _ready(self) -> list[Path]:
        now = self.clock()
        ready = []
        for p in sorted(self.folder.iterdir()):
            if not self._wanted(p):
                continue
            key = _key(p)
            if key in self.processed:
                continue
            seen = self.pending.get(p.name)
            if seen is not None and seen[:2] == key[1:] and now - seen[2] >= self.settle_s:
                ready.append(p)
                del self.pending[p.name]
            elif seen is None or seen[:2] != key[1:]:
                self.pending[p.name] = (key[1], key[2], now)
        return ready

    def _process(self, path: Path, move: bool) -> list[pa.RecordBatch]:
        key = _key(path)
        try:
            conv = read_meter_file(path, self.index, self.source)
        except Exception as exc:    # any parse failure of a whole file: keep it, do not loop on it
            self._fail(path, key, exc)
            return []
        self._count(conv)
        if conv.errors:
            self.errors.extend_bounded(conv.errors)
            self._write_errors(path.name, conv.errors)
        if move:
            _move(path, self.folder / "processed")
        self.processed.add(key)
        return split_batch(conv.batch, self.batch_rows)

    def _fail(self, path: Path, key: FileKey, exc: Exception) -> None:
        log.error("meter file %s cannot be read: %s", path, exc)
        self.stats.unreadable_files += 1
        err = RowError(str(path), None, "", None, f"file cannot be read: {exc}")
        self.errors.extend_bounded([err])
        self._write_errors(path.name, [err])
        _move(path, self.folder / "failed")

    def _count(self, conv: Converted) -> None:
        s = self.stats
        s.files += 1
        s.rows += conv.rows
        s.readings += conv.batch.num_rows
        s.bad_values += conv.bad_values
        s.unknown_meters += conv.unknown_meters
        s.bad_timestamps += conv.bad_timestamps
        if conv.unknown_meters or conv.bad_timestamps or conv.bad_values:
            log.warning("%s: %d unknown meters and %d bad times (to errors/), %d bad values (bad readings)",
                        self.folder, conv.unknown_meters, conv.bad_timestamps, conv.bad_values)

    def _write_errors(self, name: str, errors: list[RowError]) -> None:
        folder = self.folder / "errors"
        folder.mkdir(exist_ok=True)
        table = pa.table({k: [str(getattr(e, k)) if getattr(e, k) is not None else None for e in errors]
                          for k in ("where", "row", "column", "meter_id", "problem")})
        pacsv.write_csv(table, folder / f"{name}.errors.csv")

    def _prune(self) -> None:
        """Forget processed keys whose file is gone from both the folder and processed/."""
        present = {k for d in (self.folder, self.folder / "processed") if d.is_dir()
                   for k in (_key(p) for p in d.iterdir() if self._wanted(p))}
        self.processed &= present


def _key(p: Path) -> FileKey:
    st = p.stat()
    return (p.name, st.st_size, st.st_mtime_ns)


def _move(path: Path, folder: Path) -> Path:
    """Move keeping the name (and mtime, so the key stays the same); never overwrite."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists():
        raise FileExistsError(f"{target} exists: a file of that name was already processed")
    return Path(shutil.move(str(path), str(target)))


# ----------------------------------------------------------------------------- bytewax source


class _FolderPartition(StatefulSourcePartition[pa.RecordBatch, list]):
    def __init__(self, watcher: MeterFolderWatcher, interval_s: float, run_for_s: float | None):
        self.watcher, self.interval_s = watcher, interval_s
        self._awake = datetime.now(timezone.utc)
        self._deadline = None if run_for_s is None else time.monotonic() + run_for_s

    def next_batch(self) -> list[pa.RecordBatch]:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            last = self.watcher.poll()           # what arrived in the last moments still counts
            if last:
                self._deadline = time.monotonic()
                return last
            raise StopIteration
        self._awake = datetime.now(timezone.utc) + timedelta(seconds=self.interval_s)
        return self.watcher.poll()

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> list:
        return self.watcher.snapshot()


class MeterFolderSource(FixedPartitionedSource[pa.RecordBatch, list]):
    """bytewax source: one partition per drop folder; snapshot = the processed-file keys, so a
    restart does not re-read (and re-reads files moved after the last committed snapshot)."""

    def __init__(self, points: PointTable, folders: list[str | Path], *, poll_interval_s: float = 5.0,
                 run_for_s: float | None = None, **watcher_options):
        self.points, self.folders = points, [str(Path(f)) for f in folders]
        self.poll_interval_s, self.watcher_options = poll_interval_s, watcher_options
        self.run_for_s = run_for_s      # None: watch for ever; else end the stream after this long

    def list_parts(self) -> list[str]:
        return list(self.folders)

    def build_part(self, step_id: str, for_part: str, resume_state: list | None) -> _FolderPartition:
        watcher = MeterFolderWatcher(self.points, for_part, resume_state=resume_state, **self.watcher_options)
        return _FolderPartition(watcher, self.poll_interval_s, self.run_for_s)


__all__ = ["MeterFolderWatcher", "MeterFolderSource", "split_batch"]
