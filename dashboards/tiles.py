"""Map tiles under the wall's network: optional, and off by default.

By default the wall draws the network on a plain background and the page asks nothing of any
server but its own, so it runs in a control room without internet. A utility that has a tile
server (or accepts a public one) names an XYZ raster template (``pipetwin dashboard --tiles
https://tiles.example/{z}/{x}/{y}.png``); the network's coordinates are then moved once into web
mercator metres (EPSG:3857, the tiles' own projection) and the wall's plot keeps its plain x/y
axes: the tiles are layout images under the traces, chosen for the visible area and zoom by the
browser (assets/wall.js ``tileLayer``, the same arithmetic as ``tile_layer`` here). The plot
itself stays as it is (WebGL lines, isobars, station symbols), which a map subplot would not
allow (no contour traces, only maki symbols, fonts fetched from the internet for any text).

Tiles need to know where the network is: its coordinates' CRS comes from ``--crs`` or from the
``crs`` field of its network.json (published with the network). Plain x/y (EPANET files, schematic
networks) cannot be placed on tiles, and the wall says so at start-up rather than drawing a
network in the Gulf of Guinea.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

EARTH_RADIUS_M = 6378137.0                  # the web mercator sphere (EPSG:3857)
WORLD_M = 2.0 * math.pi * EARTH_RADIUS_M    # width of the tiles' world in web mercator metres
TILE_PX = 256
MAX_LAT_DEG = 85.05112878                   # web mercator's edge: the tiles' world is square
LONLAT = {"EPSG:4326", "OGC:CRS84", "WGS84", "CRS84"}
MAX_TILES = 400                             # a view never asks for more than this many tiles


class TilesError(ValueError):
    """A tile configuration that cannot work, with what to change."""


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Where the tiles come from and what the network's coordinates mean.

    ``crs`` None: the network's own (its network.json ``crs``). ``max_zoom``: the deepest level
    the server has (19 for OpenStreetMap; a utility's server often stops earlier)."""
    template: str
    attribution: str = ""
    crs: str | None = None
    max_zoom: int = 19

    def __post_init__(self):
        check_template(self.template)
        if not 0 <= int(self.max_zoom) <= 24:
            raise TilesError(f"tile max zoom {self.max_zoom} is outside 0-24")


def check_template(template: str) -> str:
    """An XYZ template: http(s) or a path on the wall's own host, with {z}, {x} and {y}."""
    missing = [p for p in ("{z}", "{x}", "{y}") if p not in template]
    if missing:
        raise TilesError(f"tile URL {template!r} lacks {', '.join(missing)}: an XYZ template looks like "
                         "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
    if not re.match(r"^(https?://[^/\s]+|/)", template):
        raise TilesError(f"tile URL {template!r} is neither http(s):// nor a path on this server (/...)")
    return template


def crs_code(text: str | None) -> str | None:
    """The CRS a network.json ``crs`` field names: ``"EPSG:31467 (DHDN / 3-degree Gauss-Kruger zone
    3)"`` gives ``"EPSG:31467"``; empty or ``"none (schematic coordinates)"`` gives None; anything
    else (a PROJ string, WKT) is passed on as it is, for pyproj to accept or refuse.

    >>> crs_code("EPSG:31467 (DHDN / 3-degree Gauss-Kruger zone 3), as in pandapipes junction_geodata")
    'EPSG:31467'
    >>> crs_code("none (local metres)") is None
    True
    """
    text = (text or "").strip()
    if not text or re.match(r"^(none|unknown|local|schematic)\b", text, re.IGNORECASE):
        return None
    m = re.match(r"^([A-Za-z]+:\s*[0-9A-Za-z.]+)(?=$|[\s,(;])", text)
    return re.sub(r"\s+", "", m.group(1)).upper() if m else text


def resolve_crs(tiles: Tiles, network_crs: str | None) -> str:
    """The CRS to place the network with: ``--crs`` first, else the network's own; an error
    naming the problem when there is none (plain x/y cannot be placed on tiles)."""
    crs = crs_code(tiles.crs) if tiles.crs else crs_code(network_crs)
    if crs is None:
        said = (f" (--crs {tiles.crs!r} names none)" if tiles.crs else
                f" (its network.json says crs {network_crs!r})" if network_crs else " (its network.json has no crs)")
        raise TilesError("map tiles need the network's coordinate reference system, and this network has none"
                         f"{said}: plain x/y cannot be placed on tiles. Pass --crs EPSG:NNNN naming the CRS of the "
                         "node coordinates, or leave out --tiles for the plain background.")
    check_crs(crs)
    return crs


def check_crs(crs: str) -> None:
    if crs.upper() in LONLAT:
        return
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError as exc:
        raise TilesError(f"--crs {crs!r} is not a coordinate reference system pyproj knows ({exc})") from None


def to_lonlat(x: np.ndarray, y: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``crs`` as WGS84 longitude and latitude in degrees (EPSG:4326, lon first).
    Lon/lat passes through; anything else goes through pyproj (imported only here, so a wall
    without tiles never loads it), with the transformation PROJ judges best for the area."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if crs.upper() in LONLAT:
        lon, lat = x.copy(), y.copy()
    else:
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= MAX_LAT_DEG))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TilesError(f"{int(bad.sum())} node coordinates do not fall on the earth in {crs} (e.g. x={x[i]:.6g}, "
                         f"y={y[i]:.6g}): is the CRS right?")
    return lon, lat


def web_mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (degrees) as web mercator metres (EPSG:3857 on its sphere)."""
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    return (EARTH_RADIUS_M * np.radians(lon),
            EARTH_RADIUS_M * np.log(np.tan(np.pi / 4.0 + np.radians(np.clip(lat, -MAX_LAT_DEG, MAX_LAT_DEG)) / 2.0)))


def place(x: np.ndarray, y: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates in ``crs`` as web mercator metres, the plane the tiles are drawn in."""
    return web_mercator(*to_lonlat(x, y, crs))


def tile_layer(x_range, y_range, width_px: float, template: str, max_zoom: int = 19) -> tuple[str, list[dict]]:
    """The tiles that cover a view (web mercator metres, ``width_px`` wide on screen) at the zoom
    whose tiles show closest to their own size, as plotly layout images under the traces, and a
    key that changes only when the set of tiles does. assets/wall.js ``tileLayer`` is the same.

    >>> key, images = tile_layer((0.05 * WORLD_M, 0.45 * WORLD_M), (-0.2 * WORLD_M, 0.2 * WORLD_M), 512,
    ...                          "/t/{z}/{x}/{y}.png")
    >>> key, [im["source"] for im in images]
    ('2:2-3:1-2', ['/t/2/2/1.png', '/t/2/3/1.png', '/t/2/2/2.png', '/t/2/3/2.png'])
    """
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    span = max(x1 - x0, 1e-3)
    z = int(min(max(round(math.log2(max(width_px, 1.0) * WORLD_M / (TILE_PX * span))), 0), max_zoom))
    while True:
        size = WORLD_M / 2 ** z
        n = 2 ** z
        tx0, tx1 = (min(max(int(math.floor((v + WORLD_M / 2) / size)), 0), n - 1) for v in (x0, x1))
        ty0, ty1 = (min(max(int(math.floor((WORLD_M / 2 - v) / size)), 0), n - 1) for v in (y1, y0))
        if (tx1 - tx0 + 1) * (ty1 - ty0 + 1) <= MAX_TILES or z == 0:
            break
        z -= 1                                   # a very tall view: fewer, larger tiles
    images = [{"source": template.replace("{z}", str(z)).replace("{x}", str(tx)).replace("{y}", str(ty)),
               "xref": "x", "yref": "y", "x": -WORLD_M / 2 + tx * size, "y": WORLD_M / 2 - ty * size,
               "sizex": size, "sizey": size, "xanchor": "left", "yanchor": "top", "sizing": "stretch",
               "layer": "below"}
              for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
    return f"{z}:{tx0}-{tx1}:{ty0}-{ty1}", images
