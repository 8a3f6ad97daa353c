"""A leak scenario (shared/benchmarks/FORMAT.md, leaks/) read into arrays, and the no-leak twin
run along its recording: one steady solve per time step with the demand the twin knows (water:
the .inp base demands x patterns from the scenario's pattern start; gas: nodes.csv demand x the
daily profile), boundary conditions taken from the measurements where SCADA has them (the tank's
level integrated from its measured in- and outflow, the pump's on/off state from its flow). The
twin never sees the leak, so what it does not explain is what the leak detector looks at.

Each step yields a ``TwinState`` (the flow's contract), so the detectors run here exactly as they
run inside the flow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from pipetwin.flows.contracts import TwinState
from pipetwin.twin.io import read_network
from pipetwin.twin.model import LinkKind, LinkStatus, NetworkModel, NodeKind
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.water import prepare, solve_water

PRESSURE, FLOW = 0, 1


@dataclass
class Scenario:
    name: str
    meta: dict
    model: NetworkModel
    start_ns: int
    step_s: float
    point_ids: list[str]          # pressure and flow sensors (SCADA), in sensors.csv order
    kind: np.ndarray              # PRESSURE / FLOW per point
    element: np.ndarray           # node (pressure) or link (flow) index per point
    values: np.ndarray            # (ticks, points) SI, NaN where missing
    meter_nodes: np.ndarray       # node index per AMR consumer
    meter_hours_ns: np.ndarray    # hour ends
    meter_values: np.ndarray      # (hours, meters) hourly mean demand, NaN where missing


def find_benchmarks_root(set_dir: Path) -> Path:
    """The first ancestor of ``set_dir`` that holds networks/ (as the shared scorer finds it)."""
    for cur in [set_dir.resolve(), *set_dir.resolve().parents]:
        if (cur / "networks").is_dir():
            return cur
    raise SystemExit(f"{set_dir}: no ancestor folder holds networks/; pass --benchmarks-root")


def read_scenario(folder: Path, root: Path, models: dict | None = None) -> Scenario:
    """Read meta.json, sensors.csv and readings.parquet of one scenario; bad input names the file."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{meta_path}: cannot read: {exc}") from None
    for key in ("network", "start", "step_s", "duration_s"):
        if key not in meta:
            raise SystemExit(f"{meta_path}: no {key!r}")
    models = {} if models is None else models
    net_path = root / meta["network"]
    if str(net_path) not in models:
        models[str(net_path)] = read_network(net_path)
    model = models[str(net_path)].copy()
    if not model.is_gas:
        model.times.pattern_start_s = float(meta.get("demand_model", {}).get("pattern_start_s", 0.0))
    sensors = pd.read_csv(folder / "sensors.csv", dtype=str)
    missing = {"point", "element", "quantity"} - set(sensors.columns)
    if missing:
        raise SystemExit(f"{folder / 'sensors.csv'}: missing columns {sorted(missing)}")
    nodes, links = model.node_index(), model.link_index()
    scada = sensors[sensors.quantity.isin(["pressure", "flow"])]
    kind, element = [], []
    for line, (pid, el, q) in enumerate(zip(scada.point, scada.element, scada.quantity), start=2):
        table = nodes if q == "pressure" else links
        if el not in table:
            raise SystemExit(f"{folder / 'sensors.csv'} line {line}: point {pid}: {q} element {el!r} is not in "
                             f"{meta['network']}")
        kind.append(PRESSURE if q == "pressure" else FLOW)
        element.append(table[el])
    meters = sensors[sensors.quantity == "demand"]
    for pid, el in zip(meters.point, meters.element):
        if el not in nodes:
            raise SystemExit(f"{folder / 'sensors.csv'}: meter {pid}: node {el!r} is not in {meta['network']}")
    readings = pd.read_parquet(folder / "readings.parquet", columns=["ts", "point", "value"])
    start_ns = pd.Timestamp(meta["start"]).value
    step_s = float(meta["step_s"])
    n_ticks = int(meta["duration_s"] // step_s)
    ts = readings.ts.astype("int64").to_numpy() if str(readings.ts.dtype).startswith("datetime64[ns") else \
        pd.to_datetime(readings.ts, utc=True).astype("int64").to_numpy()
    values = np.full((n_ticks, len(scada)), np.nan)
    col = {p: c for c, p in enumerate(scada.point)}
    pcol = readings.point.map(col).to_numpy()
    k = np.rint((ts - start_ns) / (step_s * 1e9)).astype(np.int64)
    ok = ~pd.isna(pcol) & (k >= 0) & (k < n_ticks)
    values[k[ok], pcol[ok].astype(np.int64)] = readings.value.to_numpy()[ok]
    mcol = {p: c for c, p in enumerate(meters.point)}
    mc = readings.point.map(mcol).to_numpy()
    mok = ~pd.isna(mc)
    hours = np.unique(ts[mok])
    mvals = np.full((len(hours), len(meters)), np.nan)
    mvals[np.searchsorted(hours, ts[mok]), mc[mok].astype(np.int64)] = readings.value.to_numpy()[mok]
    return Scenario(folder.name, meta, model, start_ns, step_s, list(scada.point), np.array(kind, np.int8),
                    np.array(element, np.int64), values, np.array([nodes[e] for e in meters.element], np.int64),
                    hours, mvals)


def profile_factor(meta: dict, seconds_of_day: float) -> float:
    """The gas daily profile (meta.json demand_model.daily_profile), linear between hours, periodic."""
    prof = meta["demand_model"]["daily_profile"]
    hours = np.asarray(prof["hours"], float)
    vals = np.asarray(prof["values"], float)
    return float(np.interp(seconds_of_day / 3600.0, np.append(hours, 24.0), np.append(vals, vals[0])))


def twin_states(sc: Scenario) -> Iterator[tuple[TwinState, object]]:
    """The no-leak twin along the recording: (TwinState, SolveResult) per time step."""
    model = sc.model
    node_ids, link_ids = list(model.nodes.ids), list(model.links.ids)
    sensor_kind, sensor_el = sc.kind, sc.element
    if model.is_gas:
        solver = GasSolver(model)
        base = model.base_demand()
    else:
        net = prepare(model)
        tanks = model.tanks
        tank_node = tanks.node.astype(np.int64)
        area = np.pi * tanks.diameter_m ** 2 / 4.0
        level = tanks.init_level_m.astype(float).copy()
        # measured flows in and out of each tank: +1 into the tank
        tank_flows = []
        for t, tn in enumerate(tank_node):
            for c in np.flatnonzero(sensor_kind == FLOW):
                e = sensor_el[c]
                if model.links.to_node[e] == tn:
                    tank_flows.append((t, c, 1.0))
                elif model.links.from_node[e] == tn:
                    tank_flows.append((t, c, -1.0))
        pumps = [(c, sensor_el[c]) for c in np.flatnonzero(sensor_kind == FLOW)
                 if model.links.kind[sensor_el[c]] == LinkKind.PUMP]
    last = None
    day_s = 86400.0
    start_s = (sc.start_ns // 1_000_000_000) % 86400
    for k in range(sc.values.shape[0]):
        t = k * sc.step_s
        y = sc.values[k]
        if model.is_gas:
            demand = base * profile_factor(sc.meta, (start_s + t) % day_s)
            result = solver.solve(demand, warm_start=last)
        else:
            demand = model.node_demand(t)
            status = model.links.status.copy()
            for c, e in pumps:
                if np.isfinite(y[c]):
                    status[e] = LinkStatus.OPEN if y[c] > 1e-5 else LinkStatus.CLOSED
            tank_head = model.nodes.elevation_m[tank_node] + level
            result = solve_water(model, t, demand=demand, tank_head=tank_head, status=status, warm_start=last,
                                 options={"controls": False}, prepared=net)
            net_in = np.zeros(len(tank_node))
            for tix, c, sign in tank_flows:
                if np.isfinite(y[c]):
                    net_in[tix] += sign * y[c]
            level = np.clip(level + net_in * sc.step_s / area, tanks.min_level_m, tanks.max_level_m)
        last = result
        est = np.where(sensor_kind == PRESSURE,
                       result.node_pressure_pa[np.where(sensor_kind == PRESSURE, sensor_el, 0)],
                       result.link_flow[np.where(sensor_kind == FLOW, sensor_el, 0)])
        source = model.nodes.kind == NodeKind.SOURCE
        state = TwinState(
            network=sc.name, ts_ns=int(sc.start_ns + t * 1e9), node_ids=node_ids,
            node_pressure_pa=result.node_pressure_pa, node_demand=demand, unsupplied=result.unsupplied,
            link_ids=link_ids, link_flow=result.link_flow, link_velocity_m_s=result.link_velocity_m_s,
            sensor_ids=sc.point_ids, sensor_measured=y.copy(), sensor_estimated=est,
            zone_multipliers=np.ones(1), converged=result.converged, iterations=int(result.iterations),
            chi2=0.0, solve_ms=result.elapsed_s * 1e3,
            figures={"inflow": float(-result.node_demand[source].sum()),
                     "consumption": float(np.maximum(demand, 0).sum())})
        yield state, result
