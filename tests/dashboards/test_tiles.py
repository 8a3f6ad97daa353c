"""Map tiles under the wall: the coordinate transform against documented formulas and parameters,
the tile arithmetic against the slippy-map convention, the configuration's errors, and that a wall
without tiles names no other server. The store tests read the real replay the other dashboard
tests read (conftest.py)."""

from __future__ import annotations

import doctest
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from pipetwin.dashboards import tiles as tiles_module
from pipetwin.dashboards.tiles import (WORLD_M, Tiles, TilesError, check_crs, crs_code, resolve_crs, tile_layer,
                                       to_lonlat, web_mercator)

# --------------------------------------------------------------------------- an independent reference
# EPSG Guidance Note 7-2 (IOGP Publication 373-7-2), section 3.5.3.1: Transverse Mercator, the JHS
# formulas, reverse case; section 4.1.1: geographic and geocentric coordinates; section 4.4.3.1: the
# seven-parameter Helmert, position vector convention. Written out here from the note, not taken from
# pyproj, so the test checks pyproj's answer (and our use of it) rather than repeating it.

BESSEL = (6377397.155, 299.1528128)              # DHDN's ellipsoid, EPSG:7004
WGS84 = (6378137.0, 298.257223563)               # EPSG:7030
AIRY = (6377563.396, 299.3249646)                # OSGB36's ellipsoid, EPSG:7001 (the note's worked example)
# "DHDN to WGS 84 (2)", EPSG:1777 (former West Germany, 3 m): tx, ty, tz (m), rx, ry, rz (arc-seconds), ds (ppm)
DHDN_TO_WGS84_2 = (598.1, 73.7, 418.2, 0.202, 0.045, -2.455, 6.7)


def tm_reverse(easting, northing, ellipsoid, lat0_deg, lon0_deg, k0, fe, fn):
    a, inv_f = ellipsoid
    f = 1.0 / inv_f
    e = math.sqrt(f * (2.0 - f))
    n = f / (2.0 - f)
    b = a / (1.0 + n) * (1.0 + n ** 2 / 4.0 + n ** 4 / 64.0)
    h = (n / 2 - 2 / 3 * n ** 2 + 5 / 16 * n ** 3 + 41 / 180 * n ** 4, 13 / 48 * n ** 2 - 3 / 5 * n ** 3
         + 557 / 1440 * n ** 4, 61 / 240 * n ** 3 - 103 / 140 * n ** 4, 49561 / 161280 * n ** 4)
    phi0 = math.radians(lat0_deg)
    q0 = math.asinh(math.tan(phi0)) - e * math.atanh(e * math.sin(phi0))
    beta0 = math.atan(math.sinh(q0))
    m0 = b * (beta0 + sum(h[i] * math.sin(2 * (i + 1) * beta0) for i in range(4)))
    hr = (n / 2 - 2 / 3 * n ** 2 + 37 / 96 * n ** 3 - 1 / 360 * n ** 4, 1 / 48 * n ** 2 + 1 / 15 * n ** 3
          - 437 / 1440 * n ** 4, 17 / 480 * n ** 3 - 37 / 840 * n ** 4, 4397 / 161280 * n ** 4)
    eta_ = (easting - fe) / (b * k0)
    xi_ = ((northing - fn) + k0 * m0) / (b * k0)
    xi = xi_ - sum(hr[i] * math.sin(2 * (i + 1) * xi_) * math.cosh(2 * (i + 1) * eta_) for i in range(4))
    eta = eta_ - sum(hr[i] * math.cos(2 * (i + 1) * xi_) * math.sinh(2 * (i + 1) * eta_) for i in range(4))
    beta = math.asin(math.sin(xi) / math.cosh(eta))
    q_ = math.asinh(math.tan(beta))
    q = q_
    for _ in range(30):
        q = q_ + e * math.atanh(e * math.tanh(q))
    return math.degrees(math.radians(lon0_deg) + math.asin(math.tanh(eta) / math.cos(beta))), \
        math.degrees(math.atan(math.sinh(q)))


def geocentric(lon_deg, lat_deg, ellipsoid):
    a, inv_f = ellipsoid
    e2 = (2.0 - 1.0 / inv_f) / inv_f
    phi, lam = math.radians(lat_deg), math.radians(lon_deg)
    nu = a / math.sqrt(1.0 - e2 * math.sin(phi) ** 2)
    return nu * math.cos(phi) * math.cos(lam), nu * math.cos(phi) * math.sin(lam), (1.0 - e2) * nu * math.sin(phi)


def geographic(x, y, z, ellipsoid):
    a, inv_f = ellipsoid
    e2 = (2.0 - 1.0 / inv_f) / inv_f
    p = math.hypot(x, y)
    phi = math.atan2(z, p * (1.0 - e2))
    for _ in range(30):
        nu = a / math.sqrt(1.0 - e2 * math.sin(phi) ** 2)
        phi = math.atan2(z, p * (1.0 - e2 * nu / (nu + p / math.cos(phi) - nu)))
    return math.degrees(math.atan2(y, x)), math.degrees(phi)


def helmert_position_vector(x, y, z, tx, ty, tz, rx, ry, rz, ds):
    arcsec = math.pi / (180.0 * 3600.0)
    rx, ry, rz, m = rx * arcsec, ry * arcsec, rz * arcsec, 1.0 + ds * 1e-6
    return (m * (x - rz * y + ry * z) + tx, m * (rz * x + y - rx * z) + ty, m * (-ry * x + rx * y + z) + tz)


def gk3_to_wgs84(easting, northing):
    """EPSG:31467 (DHDN / 3-degree Gauss-Kruger zone 3: TM, lon0 9 E, k0 1, FE 3,500,000 m) to WGS 84."""
    lon, lat = tm_reverse(easting, northing, BESSEL, 0.0, 9.0, 1.0, 3_500_000.0, 0.0)
    return geographic(*helmert_position_vector(*geocentric(lon, lat, BESSEL), *DHDN_TO_WGS84_2), WGS84)


def test_the_reference_reproduces_the_guidance_notes_worked_example():
    # GN 7-2's Transverse Mercator example (OSGB 1936 / British National Grid): E 577274.99 m,
    # N 69740.50 m is 50 deg 30' N, 0 deg 30' E; the metres are rounded to 1 cm (~1e-7 deg)
    lon, lat = tm_reverse(577274.99, 69740.50, AIRY, 49.0, -2.0, 0.9996012717, 400_000.0, -100_000.0)
    assert lon == pytest.approx(0.5, abs=1e-6) and lat == pytest.approx(50.5, abs=1e-6)


def test_a_gauss_kruger_point_becomes_lon_lat_within_a_micro_degree():
    # junction K1030 of the bundled Schutterwald network (its network.json: crs EPSG:31467)
    e, n = 3417460.371, 5369562.073
    ref_lon, ref_lat = gk3_to_wgs84(e, n)
    assert 7.8 < ref_lon < 8.0 and 48.4 < ref_lat < 48.5          # Schutterwald, by Offenburg
    lon, lat = to_lonlat(np.array([e]), np.array([n]), "EPSG:31467")
    assert abs(lon[0] - ref_lon) < 1e-6 and abs(lat[0] - ref_lat) < 1e-6


def test_lon_lat_passes_through_and_web_mercator_spans_the_documented_world():
    lon, lat = np.array([7.883, -122.4]), np.array([48.458, 37.77])
    out_lon, out_lat = to_lonlat(lon, lat, "EPSG:4326")
    assert np.array_equal(out_lon, lon) and np.array_equal(out_lat, lat)
    # EPSG:3857's world: +-20037508.34 m both ways, at lon +-180 and lat +-85.0511287798
    x, y = web_mercator(np.array([180.0, -180.0, 0.0]), np.array([85.0511287798, 0.0, -85.0511287798]))
    assert x[0] == pytest.approx(20037508.34, abs=0.01) and x[1] == pytest.approx(-20037508.34, abs=0.01)
    assert y[0] == pytest.approx(20037508.34, abs=0.01) and y[2] == pytest.approx(-20037508.34, abs=0.01)
    assert WORLD_M == pytest.approx(2 * 20037508.342789244)


def test_tiles_are_the_slippy_map_tiles_of_the_view():
    """The OpenStreetMap wiki's tile numbers (Slippy map tilenames: x = (lon+180)/360 * 2^z,
    y = (1 - asinh(tan(lat))/pi)/2 * 2^z) for the corners of Schutterwald, and tiles shown at
    between 181 and 362 pixels (the zoom level nearest their own 256)."""
    failed, _ = doctest.testmod(tiles_module)
    assert failed == 0
    lon, lat = np.array([7.86, 7.91]), np.array([48.44, 48.48])
    x, y = web_mercator(lon, lat)
    for width_px in (800, 1500, 3000):
        key, images = tile_layer((x[0], x[1]), (y[0], y[1]), width_px, "/t/{z}/{x}/{y}.png")
        z = int(key.split(":")[0])
        shown_px = width_px * (WORLD_M / 2 ** z) / (x[1] - x[0])
        assert 181 <= shown_px <= 362
        tx = np.floor((lon + 180) / 360 * 2 ** z).astype(int)
        ty = np.floor((1 - np.arcsinh(np.tan(np.radians(lat))) / math.pi) / 2 * 2 ** z).astype(int)
        expected = {f"/t/{z}/{i}/{j}.png" for i in range(tx[0], tx[1] + 1) for j in range(ty[1], ty[0] + 1)}
        assert {im["source"] for im in images} == expected
        assert all(im["layer"] == "below" and im["xref"] == "x" for im in images)


def test_a_tall_view_asks_for_a_bounded_number_of_tiles():
    _, images = tile_layer((0.0, 1000.0), (-WORLD_M / 2, WORLD_M / 2), 1000, "/t/{z}/{x}/{y}.png")
    assert 0 < len(images) <= tiles_module.MAX_TILES


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("template, problem", [
    ("https://tile.example/{z}/{x}.png", "lacks {y}"),
    ("tile.openstreetmap.org/{z}/{x}/{y}.png", "neither http"),
    ("ftp://tiles.example/{z}/{x}/{y}.png", "neither http"),
])
def test_a_tile_template_that_cannot_work_is_refused(template, problem):
    with pytest.raises(TilesError, match=problem):
        Tiles(template)


def test_tile_configuration_accepts_a_utility_server_and_refuses_a_silly_zoom():
    assert Tiles("http://gis.utility.local:8080/osm/{z}/{x}/{y}.png").max_zoom == 19
    assert Tiles("/tiles/{z}/{x}/{y}.png", max_zoom=17).max_zoom == 17
    with pytest.raises(TilesError, match="max zoom"):
        Tiles("/tiles/{z}/{x}/{y}.png", max_zoom=30)


def test_the_crs_comes_from_the_option_or_the_network_json():
    assert crs_code("EPSG:31467 (DHDN / 3-degree Gauss-Kruger zone 3), as in pandapipes junction_geodata") == \
        "EPSG:31467"
    assert crs_code("epsg: 25832") == "EPSG:25832"
    assert crs_code("none (schematic coordinates)") is None and crs_code("") is None and crs_code(None) is None
    t = Tiles("/t/{z}/{x}/{y}.png")
    assert resolve_crs(t, "EPSG:31467 (DHDN / 3-degree Gauss-Kruger zone 3)") == "EPSG:31467"
    assert resolve_crs(Tiles("/t/{z}/{x}/{y}.png", crs="EPSG:25832"), "EPSG:31467") == "EPSG:25832"


@pytest.mark.parametrize("option, network_crs", [(None, None), (None, "none (local metres)"), ("none", None)])
def test_tiles_without_a_crs_are_refused_naming_the_problem(option, network_crs):
    with pytest.raises(TilesError, match="plain x/y cannot be placed on tiles.*--crs EPSG:NNNN"):
        resolve_crs(Tiles("/t/{z}/{x}/{y}.png", crs=option), network_crs)


def test_an_unknown_crs_and_coordinates_off_the_earth_are_refused():
    with pytest.raises(TilesError, match="not a coordinate reference system"):
        check_crs("EPSG:999999")
    with pytest.raises(TilesError, match="do not fall on the earth"):        # Gauss-Kruger metres said to be lon/lat
        to_lonlat(np.array([3417460.0]), np.array([5369562.0]), "EPSG:4326")


def test_the_cli_refuses_tiles_it_cannot_place(capsys):
    from pipetwin.cli import main

    rc = main(["dashboard", "--redis-url", "redis://127.0.0.1:9", "--port", "0", "--tiles", "https://t/{z}/{x}.png"])
    assert rc == 2 and "lacks {y}" in capsys.readouterr().err
    rc = main(["dashboard", "--redis-url", "redis://127.0.0.1:9", "--port", "0", "--tiles",
               "https://t/{z}/{x}/{y}.png", "--crs", "EPSG:999999"])
    assert rc == 2 and "EPSG:999999" in capsys.readouterr().err


def test_pipetwin_run_passes_the_tile_options_to_the_dashboard():
    from pipetwin.cli import build_parser, tile_args

    args = build_parser().parse_args(["run", "--tiles", "http://gis.local/{z}/{x}/{y}.png", "--crs", "EPSG:31467",
                                      "--tiles-attribution", "(c) utility"])
    forwarded = build_parser().parse_args(["dashboard", "--redis-url", "redis://x", *tile_args(args)])
    assert (forwarded.tiles, forwarded.crs, forwarded.tiles_attribution, forwarded.tiles_max_zoom) == \
        ("http://gis.local/{z}/{x}/{y}.png", "EPSG:31467", "(c) utility", 19)
    assert tile_args(build_parser().parse_args(["run"])) == ()


# --------------------------------------------------------------------------- the wall, against the replay


def test_the_plain_wall_names_no_other_server_and_loads_no_pyproj(wall_data):
    """The default map: no layout images, no map layers, no URL anywhere in the figure, and
    pyproj never imported (a fresh interpreter, as `pipetwin dashboard` is)."""
    code = f"""
import json, sys
from pipetwin.dashboards.context import WallContext
from pipetwin.dashboards.store import WallStore
from pipetwin.dashboards.figures import map_figure
ctx = WallContext(WallStore({wall_data['url']!r}, {wall_data['network']!r}))
ctx.check_tiles()
fig, _ = map_figure(ctx.map_geometry(), ctx.store.state())
print(json.dumps({{"fig": json.dumps(fig, default=str), "pyproj": "pyproj" in sys.modules}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    timeout=120).stdout.strip().splitlines()[-1])
    fig = json.loads(out["fig"])
    assert not out["pyproj"]
    assert "images" not in fig["layout"] and "map" not in fig["layout"] and "mapbox" not in fig["layout"]
    assert "tiles" not in fig["meta"]
    assert "http" not in out["fig"] and "//" not in out["fig"]
    assert len(fig["data"][1]["x"]) > 0           # the map itself is there


def test_with_tiles_the_wall_map_sits_in_web_mercator_and_other_pages_keep_the_networks_coordinates(wall_data):
    from pipetwin.dashboards.context import WallContext
    from pipetwin.dashboards.figures import apply_frame, geometry_arrays, map_figure, map_frame
    from pipetwin.dashboards.store import WallStore

    template = "http://127.0.0.1:1/tiles/{z}/{x}/{y}.png"
    ctx = WallContext(WallStore(wall_data["url"], wall_data["network"]), tiles=Tiles(template, "(c) test"))
    ctx.check_tiles()                                  # the published network.json names EPSG:31467
    plain, geom = ctx.geometry(), ctx.map_geometry()
    assert geom.tiles is not None and plain.tiles is None
    assert 3.4e6 < plain.x.min() < 3.43e6              # Gauss-Kruger metres, for drill-down and candidates
    i = int(np.flatnonzero(plain.node_ids == "K1030")[0])
    lon, lat = gk3_to_wgs84(plain.x[i], plain.y[i])
    ref_x, ref_y = web_mercator(np.array([lon]), np.array([lat]))
    assert abs(geom.x[i] - ref_x[0]) < 0.2 and abs(geom.y[i] - ref_y[0]) < 0.2   # metres
    assert ctx.map_geometry() is geom                  # placed once
    state = ctx.store.state()
    fig, _ = map_figure(geom, None)
    assert fig["meta"]["tiles"]["template"] == template and fig["meta"]["tiles"]["max_zoom"] == 19
    zxy = [re.fullmatch(r"http://127\.0\.0\.1:1/tiles/(\d+)/(\d+)/(\d+)\.png", im["source"])
           for im in fig["layout"]["images"]]
    assert zxy and all(zxy) and len({m.group(1) for m in zxy}) == 1
    assert 13 <= int(zxy[0].group(1)) <= 17          # a few kilometres across a wall
    assert fig["layout"]["annotations"][0]["text"] == "(c) test"
    drawn = apply_frame(fig, map_frame(geom, state, "pressure", True), geometry_arrays(geom))
    xs = [v for t in drawn["data"][1:10] for v in t["x"] if v is not None]
    assert xs and min(xs) >= geom.x.min() - 1 and max(xs) <= geom.x.max() + 1
    assert drawn["data"][0]["visible"]                  # isobars drawn in the tiles' plane too


def test_a_network_without_crs_fails_the_start_with_tiles(wall_data):
    from pipetwin.connectors.points import load_points
    from pipetwin.dashboards.app import create_app
    from pipetwin.data import example
    from pipetwin.flows.sinks.redis_sink import write_network
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    model.name, model.crs = "plain-xy", ""
    write_network(wall_data["redis"], model, load_points(example("schutterwald") / "points.csv", model))
    with pytest.raises(TilesError, match="has no crs.*plain x/y cannot be placed"):
        create_app(wall_data["url"], "plain-xy", tiles=Tiles("/t/{z}/{x}/{y}.png"))
    app = create_app(wall_data["url"], "plain-xy", tiles=Tiles("/t/{z}/{x}/{y}.png", crs="EPSG:31467"))
    assert app.wall_context.map_geometry().tiles is not None
    create_app(wall_data["url"], "plain-xy")           # and without tiles it starts as ever
