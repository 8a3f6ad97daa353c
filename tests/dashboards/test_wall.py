"""The wall's pieces against a real embedded Redis filled by a short replay through the flow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipetwin.dashboards import console, drilldown, figures, history, quality, wall
from pipetwin.dashboards.context import WallContext
from pipetwin.dashboards.store import WallStore


@pytest.fixture(scope="module")
def ctx(wall_data):
    return WallContext(WallStore(wall_data["url"], wall_data["network"]), historian=wall_data["historian"])


def test_the_store_reads_what_the_flow_wrote(ctx, wall_data):
    from pipetwin.flows.sinks.redis_sink import read_network, read_state

    ours, theirs = ctx.store.state(), read_state(wall_data["redis"], wall_data["network"])
    assert ours["summary"] == theirs["summary"]
    for t in ("nodes", "links", "sensors"):
        assert ours[t].equals(theirs[t])
    net = read_network(wall_data["redis"], wall_data["network"])
    assert ctx.store.network_tables()["nodes"].equals(net["nodes"])
    last_id, recent = ctx.store.recent(50)
    assert 0 < len(recent) <= 50 and recent[-1]["ts_ns"] == ours["summary"]["ts_ns"]
    assert ctx.store.after(last_id) == (last_id, [])


def test_map_draws_every_pipe_once_with_isobars_and_sensors(ctx):
    geom, state = ctx.geometry(), ctx.store.state()
    fig, _ = figures.map_figure(geom, state, "pressure")
    data = fig["data"]
    segments = set()
    for t in range(figures.T_PIPES, figures.T_UNSUPPLIED + 1):      # polylines back into links
        xs, ys = data[t]["x"], data[t]["y"]
        for i in range(1, len(xs)):
            if xs[i] is not None and xs[i - 1] is not None:
                segments.add(frozenset([(xs[i - 1], ys[i - 1]), (xs[i], ys[i])]))
    x, y = np.round(geom.x, 2).tolist(), np.round(geom.y, 2).tolist()     # as the figure rounds them
    expected = {frozenset([(x[a], y[a]), (x[b], y[b])]) for a, b in zip(geom.fr[geom.drawn], geom.to[geom.drawn])}
    assert segments == expected and len(geom.drawn) >= 0.5 * len(geom.link_ids)
    assert len(set(geom.drawn.tolist())) == len(geom.drawn)
    skipped = np.setdiff1d(np.arange(len(geom.link_ids)), geom.drawn)   # only short services to a leaf
    degree = np.bincount(np.concatenate([geom.fr, geom.to]))
    assert ((degree[geom.fr[skipped]] == 1) | (degree[geom.to[skipped]] == 1)).all()
    colours = np.array([np.nan if c is None else c for c in data[figures.T_NODES]["marker"]["color"]], float)
    supplied = ~state["nodes"]["unsupplied"].to_numpy(zero_copy_only=False)
    assert np.isfinite(colours).sum() == supplied.sum()
    p = units_of(state)(state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False))
    assert np.allclose(colours[supplied], p[supplied], atol=0.06)          # packed at 0.1 mbar
    assert data[figures.T_CONTOUR]["visible"]             # the isobars are on by default
    z = np.array(data[figures.T_CONTOUR]["z"], float)
    inside = z[np.isfinite(z)]
    assert len(inside) > 0.3 * z.size and p.min() - 0.01 <= inside.min() and inside.max() <= p.max() + 0.01
    assert len(data[figures.T_SENSORS]["x"]) == np.isin(geom.point_quantity, ["pressure", "flow"]).sum()


def units_of(state):
    return figures.pressure_units("natural_gas", state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False))


def test_a_frame_is_compact_and_moves_only_the_affected_pipes(ctx):
    import pyarrow as pa

    geom, state = ctx.geometry(), ctx.store.state()
    frame = figures.map_frame(geom, state, "pressure", True)
    assert len(json.dumps(frame)) < 0.25 * len(json.dumps(figures.map_figure(geom, state)[0]))
    lo, hi = frame["range"]
    p = state["nodes"]["pressure_pa"].to_numpy(zero_copy_only=False).copy()
    i = int(np.argmax(np.where(np.isin(np.arange(len(p)), geom.fr[geom.drawn]), p, -np.inf)))
    p[i] = lo + 0.01 * (hi - lo)                          # one node drops to the bottom class
    moved = figures.map_frame(geom, {**state, "nodes": state["nodes"].set_column(1, "pressure_pa", pa.array(p))},
                              "pressure", True)
    changed = {int(geom.drawn[k]) for k, (a, b) in enumerate(zip(frame["cls"], moved["cls"])) if a != b}
    touching = set(np.flatnonzero((geom.fr == i) | (geom.to == i)).tolist())
    assert changed and changed <= touching


def test_pack_round_trips_at_display_resolution():
    v = np.array([973.46, np.nan, 980.01, 1012.5])
    out = figures.unpack(figures.pack(v, 0.1))
    assert out[1] is None and np.allclose([out[0], out[2], out[3]], v[[0, 2, 3]], atol=0.05)


def test_kpis_show_the_headline_figures(ctx):
    state = ctx.store.state()
    text = json.dumps(wall.kpi_tiles(state["summary"], ctx.store.open_alerts(), "natural_gas", 10).__repr__())
    for label in ("inflow", "line pack", "min pressure", "open alerts", "sensors reporting"):
        assert label in text
    assert "mbar(g)" in text


def test_console_lists_and_acknowledges_like_the_cli(ctx, wall_data):
    from pipetwin.flows.sinks.redis_sink import get_alert

    alerts = console.alert_list(ctx, history=False)
    assert wall_data["leak_id"] in [a["id"] for a in alerts]
    leak = ctx.store.alert(wall_data["leak_id"])
    fig = console.candidates_figure(ctx, leak)
    assert list(fig.data[-1].text)[0].startswith("1. ")
    # an acknowledgement from the console reads back through the flow's own reader
    other = next(a for a in alerts if a["id"] != wall_data["leak_id"]) if len(alerts) > 1 else None
    if other is not None:
        stored = ctx.store.operator_action(other["id"], "acknowledged", "tester", "on it")
        flow_view = get_alert(wall_data["redis"], wall_data["network"], other["id"])
        assert flow_view.status == "acknowledged" and flow_view.revision == stored["revision"]
        assert flow_view.evidence["acknowledged_by"] == "tester"
    with pytest.raises(KeyError):
        ctx.store.operator_action("no-such-alert", "cleared", "tester")


def test_history_series_and_statistics(ctx, wall_data):
    table = history.series(wall_data["historian"], wall_data["network"], "PT-002", "day", ctx.now())
    assert table.num_rows > 50
    stats = history.statistics(table)
    assert stats["measured"]["min"] <= stats["measured"]["mean"] <= stats["measured"]["max"]
    assert stats["estimated"]["count"] >= stats["measured"]["count"]   # a dropout leaves estimates only
    what = drilldown.resolve(ctx, "PT-002")
    assert what["kind"] == "sensor" and what["sensors"] == ["PT-002"]
    assert drilldown.resolve(ctx, "not-an-element") is None


def test_quality_counts_completeness_and_quarantine(ctx):
    rows, text = quality.table_rows(ctx, "last hour")
    by_point = {r["point"]: r for r in rows}
    assert by_point["PT-002"]["received"] < by_point["PT-001"]["received"]    # the dropout
    assert sum(r["quarantined"] for r in rows) >= 1                          # the out-of-range reading
    assert "points" in text


def test_alert_console_filters_offer_every_kind_the_detectors_raise():
    """The console's kind filter lists what flows/detectors can raise (read from their source, as
    the wall may not import the flow)."""
    import re
    from pathlib import Path

    from pipetwin.dashboards.console import ALERT_KINDS

    root = Path(__file__).resolve().parents[2] / "flows" / "detectors"
    text = "\n".join(p.read_text() for p in root.glob("*.py"))
    raised = set(re.findall(r'Finding\(\s*"([a-z_]+)"', text))
    from pipetwin.flows.detectors.meter_end import KIND     # meter-end kinds come from a table
    raised |= set(KIND.values())
    assert raised and raised <= set(ALERT_KINDS), sorted(raised - set(ALERT_KINDS))


def test_zone_table_shows_each_zones_unaccounted_gas():
    from pipetwin.dashboards.wall import zone_rows

    table = zone_rows({"zone_multipliers": [1.0, 1.2], "forecast_multipliers": [0.98, None],
                       "zone_ufg_kg": [0.4, 61.5], "zone_ufg_pct": [0.2, 16.7]})
    rows = [[td.children for td in tr.children] for tr in table.children[1:]]
    assert rows == [["0", "1.000", "0.980", "0.4 kg · +0.2 %"], ["1", "1.200", "–", "61.5 kg · +16.7 %"]]
    before_first_hour = zone_rows({"zone_multipliers": [1.0]})
    assert [td.children for td in before_first_hour.children[1].children][-1] == "–"
