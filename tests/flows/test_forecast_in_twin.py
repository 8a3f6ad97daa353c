"""The demand forecast inside the twin step, on the field simulator over two days at half-hour
ticks: the states carry it, it reaches the Redis summary and the wall's panel, it survives a
restart, and when the sensors go silent it keeps the zones' demand on the day's expected shape
instead of freezing it at the last multipliers."""

import json
import pickle

import numpy as np
import pytest

from pipetwin.connectors.points import load_points
from pipetwin.connectors.simulator import FieldSimulator
from pipetwin.data import example
from pipetwin.flows.contracts import Tick
from pipetwin.flows.steps.twin import TwinLogic, TwinUpdater
from pipetwin.twin.estimate.demand import make_zones
from pipetwin.twin.forecast import HOUR_NS, mape
from pipetwin.twin.io import read_network

STEP_S = 1800.0
TICKS = 96                 # two days
SILENT_FROM = 72           # the last 12 hours: no sensor reports


@pytest.fixture(scope="module")
def network():
    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model), make_zones(model, 4)


def run(network, forecast: bool, silent_from: int | None = None, snapshot_at: int | None = None):
    """Ticks from the simulator through ``TwinLogic``; returns the states, each tick's true zone
    demand, and the step's snapshot (pickled) at ``snapshot_at`` with the ticks after it."""
    model, points, zones = network
    sim = FieldSimulator(model, points, seed=3)
    logic = TwinLogic(TwinUpdater(model, points, zones=zones, forecast=forecast), None)
    member = zones >= 0
    states, truth, snap, ticks = [], [], None, []
    for k in range(TICKS):
        st = sim.step(STEP_S)
        values = st.scada.copy()
        quality = np.where(np.isfinite(values), 0, 2).astype(np.int8)
        if silent_from is not None and k >= silent_from:
            values[:], quality[:] = np.nan, 2
        tick = Tick("sim", st.ts_ns, values, quality, np.full(len(values), st.ts_ns))
        out, _ = logic.on_item(tick)
        states.append(out[0])
        truth.append(np.bincount(zones[member], weights=np.maximum(st.result.node_demand[member], 0.0), minlength=4))
        if snapshot_at is not None:
            if k == snapshot_at:
                snap = pickle.dumps(logic.snapshot())
            elif k > snapshot_at:
                ticks.append(tick)
    return states, np.array(truth), snap, ticks


@pytest.fixture(scope="module")
def with_forecast(network):
    return run(network, True, SILENT_FROM, snapshot_at=60)


def test_states_carry_the_zones_and_their_next_24_hours(with_forecast):
    states, truth, _, _ = with_forecast
    assert "forecast_kg_s" not in states[1].figures           # nothing learned in the first hour
    last = states[SILENT_FROM - 1].figures
    ahead = last["forecast_kg_s"]
    assert sorted(ahead) == ["inflow", "zone0", "zone1", "zone2", "zone3"]
    assert all(len(v) == 24 and all(x > 0 for x in v) for v in ahead.values())
    assert last["forecast_hour_ns"] == (states[SILENT_FROM - 1].ts_ns - 1) // HOUR_NS * HOUR_NS
    assert len(last["zone_demand_kg_s"]) == 4 and len(last["forecast_multipliers"]) == 4
    # the second day's current-hour forecast against the twin's own zone demand (what it learns);
    # the first day's hours are a warm-up (a flat level until every hour of the day is seen)
    day2 = range(50, SILENT_FROM)
    expected = np.array([states[k].figures["zone_forecast_kg_s"] for k in day2])
    seen = np.array([states[k].figures["zone_demand_kg_s"] for k in day2])
    assert mape(seen, expected) < 12.0           # the twin's zone split itself moves by several % a tick
    flat = np.full_like(seen, seen.mean(axis=0))
    assert mape(seen, expected) < 0.5 * mape(seen, flat)       # the day's shape, not just a level


def test_silent_sensors_leave_the_zones_on_the_forecast_not_frozen(network, with_forecast):
    states, truth, _, _ = with_forecast
    frozen, _, _, _ = run(network, False, SILENT_FROM)
    last12 = slice(SILENT_FROM, TICKS)

    def error(ss, part):
        est = np.array([s.figures["zone_demand_kg_s"] for s in ss[part]])
        return mape(truth[part], est)

    assert error(states, last12) < 10.0 and error(states, last12) < 0.5 * error(frozen, last12), \
        (error(states, last12), error(frozen, last12))
    # while the sensors report, they decide: the zones are no further from the truth than without it
    with_sensors = slice(50, SILENT_FROM)
    assert error(states, with_sensors) < error(frozen, with_sensors) + 1.0, \
        (error(states, with_sensors), error(frozen, with_sensors))


def test_a_restored_step_forecasts_the_same(network, with_forecast):
    states, _, snap, ticks = with_forecast
    model, points, zones = network
    logic = TwinLogic(TwinUpdater(model, points, zones=zones), pickle.loads(snap))
    for tick, original in zip(ticks, states[61:]):
        state = logic.on_item(tick)[0][0]
        assert state.figures.get("forecast_kg_s") == original.figures.get("forecast_kg_s")


def test_the_forecast_reaches_the_redis_summary_and_the_wall(with_forecast):
    from pipetwin.dashboards import wall
    from pipetwin.dashboards.forecast_figure import forecast_figure, forecast_table
    from pipetwin.dashboards.store import WallStore
    from pipetwin.flows.redis_embedded import connect, start_embedded_redis
    from pipetwin.flows.sinks.redis_sink import summary_json, write_state

    states, _, _, _ = with_forecast
    server = start_embedded_redis(port=0)
    try:
        r = connect(server.url)
        for s in states[:SILENT_FROM]:
            write_state(r, s)
        store = WallStore(server.url, "sim")
        summary = store.summary()
        assert summary["forecast_kg_s"] == json.loads(summary_json(states[SILENT_FROM - 1]))["forecast_kg_s"]
        assert len(summary_json(states[SILENT_FROM - 1])) < 2500          # the summary stays small
        _, history = store.recent(3600)
        fig = forecast_figure(history, summary)
        names = [t.name for t in fig.data]
        for z in range(4):
            assert f"zone {z}" in names and f"zone {z} next 24 h" in names
        nxt = next(t for t in fig.data if t.name == "zone 0 next 24 h")
        assert len(nxt.x) == 25 and list(nxt.y[:24]) == summary["forecast_kg_s"]["zone0"]
        twin = next(t for t in fig.data if t.name == "zone 0")
        assert len(twin.x) == SILENT_FROM and twin.y[-1] == summary["zone_demand_kg_s"][0]
        assert len(forecast_table(summary)) == 5 * 24
        rows = repr(wall.zone_rows(summary))
        assert "× expected" in rows and f"{summary['forecast_multipliers'][0]:.3f}" in rows
        empty = forecast_figure(history[:1], history[0])                   # the first hour: said so
        assert "starts once an hour" in empty.layout.title.text
    finally:
        server.close()
