"""The wall's forecast panel on the shared replay (a couple of minutes: no hour learned yet, so the
zones are drawn and the title says the forecast has not started), and its place in the wall's
layout and callbacks. The panel with a forecast: tests/flows/test_forecast_in_twin.py."""

from __future__ import annotations

import pytest

from pipetwin.dashboards import forecast_figure
from pipetwin.dashboards.context import WallContext
from pipetwin.dashboards.store import WallStore


@pytest.fixture(scope="module")
def ctx(wall_data):
    return WallContext(WallStore(wall_data["url"], wall_data["network"]), historian=wall_data["historian"])


def test_the_replay_draws_each_zone_and_says_the_forecast_has_not_started(ctx):
    summary = ctx.store.summary()
    assert len(summary["zone_demand_kg_s"]) == len(summary["zone_multipliers"]) == 4
    assert "forecast_kg_s" not in summary
    _, history = ctx.store.recent(forecast_figure.HISTORY_TICKS)
    fig = forecast_figure.forecast_figure(history, summary)
    zones = [t for t in fig.data if t.name and t.name.startswith("zone") and t.name[5:].isdigit()]
    assert len(zones) == 4 and all(len(t.x) == len(history) for t in zones)
    assert zones[0].y[-1] == summary["zone_demand_kg_s"][0]
    assert "starts once an hour" in fig.layout.title.text


def test_the_wall_layout_has_the_panel_and_its_callback(ctx, wall_data):
    from pipetwin.dashboards import wall
    from pipetwin.dashboards.app import create_app

    text = repr(wall.layout(ctx))
    assert "wall-forecast" in text and "wall-forecast-memo" in text
    app = create_app(wall_data["url"], wall_data["network"], historian=wall_data["historian"])
    assert any("wall-forecast.figure" in output for output in app.callback_map)
