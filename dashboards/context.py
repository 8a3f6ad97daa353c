"""What every page shares: the Redis store, the historian folder and the network geometry (built
once per published network, then reused by every callback of every browser)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipetwin.dashboards.figures import Geometry, geometry
from pipetwin.dashboards.store import WallStore

GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2},
                "scrollZoom": True}


@dataclass
class WallContext:
    store: WallStore
    historian: str | None = None
    poll_ms: int = 500
    studies_dir: str | None = None        # folder of `pipetwin whatif --out` folders (/studies)
    reports_dir: str | None = None        # folder of `pipetwin carbon --out` folders (/carbon)
    network_file: str | None = None       # network the isolation page plans on (/isolation)
    _geometry: Geometry | None = None
    _written_ns: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def network(self) -> str:
        return self.store.network

    def now(self) -> datetime:
        """The latest tick's time: history windows end there, so a replayed day reads the same
        as a live one (and a stalled flow shows its last hour, not an empty one)."""
        ts = self.store.latest_ts()
        return datetime.fromtimestamp(ts / 1e9, tz=timezone.utc) if ts else datetime.now(timezone.utc)

    def geometry(self) -> Geometry | None:
        """None until the flow has published the network."""
        with self._lock:
            tables = self.store.network_tables()
            if tables is None:
                return None
            written = tables["meta"].get("written_ns")
            if self._geometry is None or written != self._written_ns:
                self._geometry, self._written_ns = geometry(tables), written
            return self._geometry
