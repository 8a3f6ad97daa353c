"""What every page shares: the Redis store, the historian folder and the network geometry (built
once per published network, then reused by every callback of every browser).

With map tiles configured (dashboards/tiles.py) the wall's map draws ``map_geometry``: the same
network with its coordinates in web mercator metres. Every other page keeps ``geometry`` in the
network's own coordinates, which alerts and candidates are given in."""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from redis.exceptions import RedisError

from pipetwin.dashboards.figures import Geometry, contour_weights, geometry
from pipetwin.dashboards.store import WallStore
from pipetwin.dashboards.tiles import Tiles, TilesError, place, resolve_crs

log = logging.getLogger(__name__)

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
    tiles: Tiles | None = None            # map tiles under the wall's network (None: plain background)
    _geometry: Geometry | None = None
    _map_geometry: Geometry | None = None
    _map_from: Geometry | None = None     # the geometry ``_map_geometry`` was placed from
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

    def check_tiles(self) -> None:
        """At start-up: a tile configuration that cannot work raises ``TilesError`` now (no CRS
        for the published network, a CRS pyproj does not know, coordinates that do not fall on the
        earth in it), rather than a wall that quietly draws without tiles."""
        if self.tiles is None:
            return
        try:
            tables = self.store.network_tables()
        except RedisError:            # Redis not up yet: the network is checked when it arrives
            tables = None
        if tables is None:
            if self.tiles.crs:
                resolve_crs(self.tiles, None)
            return
        nodes = tables["nodes"]
        place(nodes["x"].to_numpy(zero_copy_only=False), nodes["y"].to_numpy(zero_copy_only=False),
              resolve_crs(self.tiles, tables["meta"].get("crs")))

    def map_geometry(self) -> Geometry | None:
        """The wall map's geometry: ``geometry`` itself on the plain background; with tiles, its
        coordinates moved once into web mercator metres (the tiles' plane) and ``tiles`` set. A
        network published without a CRS is drawn plain, and the log says why."""
        geom = self.geometry()
        if geom is None or self.tiles is None:
            return geom
        with self._lock:
            if self._map_from is not geom:
                meta = (self.store.network_tables() or {}).get("meta", {})
                self._map_geometry, self._map_from = placed(geom, self.tiles, meta.get("crs")), geom
            return self._map_geometry


def placed(geom: Geometry, tiles: Tiles, network_crs: str | None) -> Geometry:
    """``geom`` in web mercator metres, with its isobars' grid worked out again in that plane
    (the plain ``geom`` if the network cannot be placed: the error is logged)."""
    try:
        x, y = place(geom.x, geom.y, resolve_crs(tiles, network_crs))
    except TilesError as exc:
        log.error("the wall draws the network without tiles: %s", exc)
        return geom
    return dataclasses.replace(geom, x=x, y=y, tiles=tiles, **contour_weights(x, y))
