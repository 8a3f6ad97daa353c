"""The quarantine sink: quarantined readings (``QualityGate`` output, with ``reason`` and
``detail``) appended to Parquet files partitioned by the reading's UTC day,
``<folder>/date=YYYY-MM-DD/part-<writer>-<n>.parquet``, which ``pyarrow.dataset`` reads as one
table (hive partitioning).

Rows are buffered per day and each ``flush`` writes one new file per day, so every file on disk
is complete (a Parquet file is unreadable until its footer is written) and a crash loses at most
the unflushed buffer. File names carry a random writer id, so several workers can share a folder.
Partitioning is by the reading's ``ts`` rather than the wall clock, so a replayed day lands in the
same place as the live one.

>>> import tempfile, pyarrow.dataset as ds
>>> from pipetwin.connectors.points import points_from_columns
>>> from pipetwin.connectors.quality import QualityGate
>>> from pipetwin.connectors.reading import readings_batch
>>> gate = QualityGate(points_from_columns(["P"], "pressure", max_si=5.0e5), clock=lambda: 0)
>>> bad = gate.process(readings_batch(["P", "Q"], [0, 0], [9.0e5, 1.0], 0, "t")).quarantined
>>> with tempfile.TemporaryDirectory() as folder:
...     with QuarantineWriter(folder) as writer:
...         writer.write(bad)
...     ds.dataset(folder, partitioning="hive").to_table().column("reason").to_pylist(), writer.rows_written
(['out_of_range', 'unknown_point'], 2)
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_NS = 86400 * 1_000_000_000


class QuarantineWriter:
    """Appends quarantined batches under ``folder``; ``flush`` when ``max_buffered_rows`` are
    waiting or on ``flush()``/``close()``. ``rows_written`` counts rows on disk, ``rows_buffered``
    rows still in memory."""

    def __init__(self, folder: str | Path, *, max_buffered_rows: int = 100_000, compression: str = "zstd"):
        self.folder = Path(folder)
        self.max_buffered_rows, self.compression = max_buffered_rows, compression
        self._writer_id = uuid.uuid4().hex[:12]
        self._buffer: dict[int, list[pa.RecordBatch]] = {}
        self._files = 0
        self.rows_written = 0
        self.rows_buffered = 0
        self.closed = False

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Buffer one batch (or table), split by UTC day of ``ts``."""
        if self.closed:
            raise ValueError("QuarantineWriter: write after close")
        if isinstance(batch, pa.Table):
            for part in batch.to_batches():
                self.write(part)
            return
        if batch.num_rows == 0:
            return
        days = batch.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) // DAY_NS
        unique = np.unique(days)
        for day in unique:
            part = batch if len(unique) == 1 else batch.filter(pa.array(days == day))
            self._buffer.setdefault(int(day), []).append(part)
        self.rows_buffered += batch.num_rows
        if self.rows_buffered >= self.max_buffered_rows:
            self.flush()

    def flush(self) -> None:
        """Write one new file per buffered day."""
        for day, parts in sorted(self._buffer.items()):
            folder = self.folder / f"date={_day_text(day)}"
            folder.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_batches(parts)
            path = folder / f"part-{self._writer_id}-{self._files:06d}.parquet"
            tmp = folder / f".{path.name}.tmp"      # dot files are ignored by pyarrow.dataset
            pq.write_table(table, tmp, compression=self.compression)
            tmp.replace(path)          # readers never see a half-written file
            self._files += 1
            self.rows_written += table.num_rows
        self._buffer.clear()
        self.rows_buffered = 0

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _day_text(day: int) -> str:
    """Days since the epoch as YYYY-MM-DD."""
    return str(np.datetime64(day, "D"))
