"""The field simulator as the flow will meet it: real OPC-UA and Modbus servers on loopback, read
back through pipetwin's own clients, and meter files a watcher can pick up."""

import asyncio

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipetwin.connectors.modbus import ModbusPoller
from pipetwin.connectors.opcua import OpcUaSubscriber
from pipetwin.connectors.opcua_server import free_port
from pipetwin.connectors.points import load_points
from pipetwin.connectors.simulator import FieldSimulator, load_scenario
from pipetwin.connectors.simulator_run import SimulatorRun
from pipetwin.data import example
from pipetwin.twin.io import read_network


@pytest.fixture(scope="module")
def network():
    model = read_network(example("schutterwald"))
    return model, load_points(example("schutterwald") / "points.csv", model)


async def test_served_values_reach_the_clients(network, tmp_path):
    model, points = network
    sim = FieldSimulator(model, points, seed=7)
    said = []
    run = SimulatorRun(sim, step_s=1.0, speed=float("inf"), opcua_port=free_port(), modbus_port=free_port(),
                       meter_dir=tmp_path / "meters", say=said.append)
    await run.start()
    try:
        step = sim.step(1.0)
        await run.publish(step)
        assert any(s.startswith("opc.tcp://127.0.0.1:") for s in said)
        assert any(s.startswith("modbus 127.0.0.1:") for s in said)
        # Modbus: every Modbus point, in SI, equal to what the simulator measured
        modbus_port = int(run.stats.endpoints["modbus"].rsplit(":", 1)[1])
        async with ModbusPoller(points, "127.0.0.1", modbus_port) as poller:
            batch = await poller.poll_once()
        idx = points.index()
        got = dict(zip(batch.column("point").to_pylist(), batch.column("value").to_pylist()))
        for pid, value in got.items():
            assert value == pytest.approx(step.scada[idx[pid]], rel=1e-6)   # float32 registers
        assert len(got) == len(run.modbus_rows)
        # OPC-UA: the subscription delivers every OPC-UA point
        sub = OpcUaSubscriber(points, run.stats.endpoints["opcua"], sampling_interval_ms=100, deadband=0)
        seen = {}
        async with sub:
            async def collect():
                async for b in sub.batches():
                    for p, v in zip(b.column("point").to_pylist(), b.column("value").to_pylist()):
                        seen[p] = v
                    if len(seen) == len(run.opcua_rows):
                        return
            await asyncio.wait_for(collect(), timeout=20)
        for pid, value in seen.items():
            assert value == pytest.approx(step.scada[idx[pid]], rel=1e-9)
    finally:
        await run.stop()


async def test_meter_files_and_outages(network, tmp_path):
    model, points = network
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text("events:\n  - {at: 5, kind: outage, server: modbus, duration_s: 3}\n")
    sim = FieldSimulator(model, points, load_scenario(scenario_file, model, points), seed=1)
    sim.meter_period_s = sim._next_meter_s = 10.0
    run = SimulatorRun(sim, step_s=1.0, speed=float("inf"), opcua_port=None, modbus_port=free_port(),
                       meter_dir=tmp_path / "meters", say=lambda s: None)
    stats = await run.run(20)
    assert stats.steps == 20 and stats.outages == 1 and stats.not_converged == 0
    files = sorted((tmp_path / "meters").glob("meters-*.parquet"))
    assert len(files) == 2 and not list((tmp_path / "meters").glob(".*"))
    table = pq.read_table(files[0])
    assert table.column_names == ["meter_id", "interval_start", "interval_end", "value", "unit"]
    assert table.num_rows == 1506 and np.all(np.asarray(table["value"]) >= 0)
