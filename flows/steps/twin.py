"""Twin update: each tick, fit the twin to the tick's pressures and flows (state estimation over
zone demand multipliers, warm-started from the last tick) and publish the state everywhere.

The multipliers' prior is the last tick's, drawn towards the demand forecast for the current hour
(``twin/forecast.py``, learned hour by hour from the twin's own zone demands and the measured
gate inflow) with a relaxation time ``forecast_tau_s`` (15 min): where the sensors see a zone
they decide, where they do not (or nothing arrives) the zone follows the day's expected shape
instead of freezing at its last value (docs/forecast.md). Each state carries the zones' demand, the current
hour's forecast and the next 24 hours' in its figures (so they reach Redis and the wall).

The multipliers and the forecasters are the step's recovery state: the solver's warm start is
rebuilt from them on the first tick after a restart, which costs one cold solve."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from bytewax.operators import StatefulLogic

from pipetwin.connectors.points import PointTable
from pipetwin.connectors.reading import GOOD, UNCERTAIN
from pipetwin.flows.contracts import Tick, TwinState
from pipetwin.flows.steps.balance import gate_flow_rows
from pipetwin.twin.estimate.demand import (FLOW, PRESSURE, Measurements, estimate_demand, make_zones,
                                           zone_demand)
from pipetwin.twin.forecast import HOUR_NS, HourlySeries
from pipetwin.twin.model import NetworkModel, NodeKind
from pipetwin.twin.solve.gas import GasSolver
from pipetwin.twin.solve.water import WaterSolver

# measurement uncertainty per quantity (1 sigma, SI) when the point table gives none: gas pressure
# 50 Pa (0.5 mbar), gas flow 1 %; water pressure 0.05 m of head, water flow 1 %
DEFAULT_SIGMA = {"pressure": 50.0, "flow_rel": 0.01, "flow_abs": 1e-5}
WATER_SIGMA = {"pressure": 0.05 * 9806.65, "flow_rel": 0.01, "flow_abs": 1e-5}


FORECAST_HOURS = 24


def _round(values: np.ndarray, digits: int = 4) -> list:
    """Values to ``digits`` significant digits as plain floats (NaN: None), so the summary stays small."""
    v = np.asarray(values, float).ravel()
    out = v.copy()
    nz = np.isfinite(v) & (v != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(v[nz]))))
    out[nz] = np.round(v[nz] * scale) / scale
    return [float(x) if np.isfinite(x) else None for x in out]


class TwinUpdater:
    def __init__(self, model: NetworkModel, points: PointTable, *, zones: np.ndarray | None = None,
                 n_zones: int = 4, sigma_theta: float = 0.5, uncertain_weight: float = 0.25,
                 forecast: bool = True, forecast_tau_s: float = 900.0, temperature_point: str | None = None):
        self.model, self.points = model, points
        self.zones = make_zones(model, n_zones) if zones is None else zones
        self.n_zones = int(self.zones.max()) + 1 if (self.zones >= 0).any() else 0
        self.solver = GasSolver(model) if model.is_gas else WaterSolver(model)
        self.sigma = DEFAULT_SIGMA if model.is_gas else WATER_SIGMA
        self.prior = model.base_demand()
        self.sigma_theta, self.uncertain_weight = sigma_theta, uncertain_weight
        self.theta = np.ones(self.n_zones)
        self.last = None
        q = np.array(points.quantity)
        self.sensor_rows = np.flatnonzero((q == "pressure") | (q == "flow"))
        self.kind = np.where(q[self.sensor_rows] == "pressure", PRESSURE, FLOW).astype(np.int8)
        self.element = points.element_index[self.sensor_rows]
        source = model.nodes.kind == NodeKind.SOURCE
        self.source_nodes = np.flatnonzero(source)
        # the demand forecast: each zone's demand (the twin's estimate), the measured gate inflow and
        # every large consumer with its own demand point, learned per hour
        member = self.zones >= 0
        self.zone_base = np.bincount(self.zones[member], weights=np.maximum(self.prior[member], 0.0),
                                     minlength=self.n_zones)
        self.gate_rows, self.gate_signs = gate_flow_rows(model, points)
        self.consumer_rows = np.array([r for r, (qq, proto) in enumerate(zip(points.quantity, points.protocol))
                                       if qq == "demand" and proto != "meter" and points.element_index[r] >= 0],
                                      np.int64)
        self.temperature_row = points.index()[temperature_point] if temperature_point else None
        self.forecast_tau_s = float(forecast_tau_s)
        names = [f"zone{z}" for z in range(self.n_zones)] + (["inflow"] if len(self.gate_rows) else []) + \
            [f"consumer:{points.ids[r]}" for r in self.consumer_rows]
        self.hourly = HourlySeries(names) if forecast else None
        self.ahead: np.ndarray | None = None       # (series, FORECAST_HOURS) from ``ahead_hour_ns``
        self.ahead_hour_ns: int | None = None
        self.ahead_figures: dict[str, list] = {}
        self.last_ts_ns: int | None = None

    def measurements(self, tick: Tick) -> tuple[Measurements, np.ndarray]:
        """The tick's usable sensor values (good or uncertain) with their sigmas, and which
        sensor rows they came from."""
        v = tick.values[self.sensor_rows]
        q = tick.quality[self.sensor_rows]
        use = np.isfinite(v) & ((q == GOOD) | (q == UNCERTAIN))
        sigma = np.where(self.kind == PRESSURE, self.sigma["pressure"],
                         np.maximum(self.sigma["flow_rel"] * np.abs(v), self.sigma["flow_abs"]))
        sigma = np.where(q == UNCERTAIN, sigma / np.sqrt(self.uncertain_weight), sigma)
        return Measurements(self.kind[use], self.element[use], v[use], sigma[use]), use

    def forecast_now(self, ts_ns: int) -> np.ndarray | None:
        """The next 24 hours per series from the hour of ``ts_ns`` (recomputed once per hour or
        when an hour is learned); None without a forecaster."""
        if self.hourly is None:
            return None
        hour = (int(ts_ns) - 1) // HOUR_NS * HOUR_NS
        if self.ahead is None or self.ahead_hour_ns != hour:
            self.ahead = self.hourly.forecast(hour, FORECAST_HOURS)
            self.ahead_hour_ns = hour
            # what the states carry, rounded once per forecast (3 digits: 0.1 %, below its error)
            self.ahead_figures = {n: _round(row, 3) for n, row in zip(self.hourly.names, self.ahead)}
        return self.ahead

    def prior_centre(self, ts_ns: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The multipliers' prior for this tick, the last tick's relaxed towards the current hour's
        forecast by 1 - exp(-dt / ``forecast_tau_s``) (an Ornstein-Uhlenbeck prior around the
        forecast: 0.1 % a tick at 1 s ticks), and the forecast multipliers themselves (None before
        the forecast is ready)."""
        ahead = self.forecast_now(ts_ns)
        if ahead is None or self.n_zones == 0:
            return self.theta, None
        now = ahead[:self.n_zones, 0]
        ok = np.isfinite(now) & (self.zone_base > 0)
        if not ok.any():
            return self.theta, None
        target = np.where(ok, now / np.where(self.zone_base > 0, self.zone_base, 1.0), self.theta)
        dt = (ts_ns - self.last_ts_ns) / 1e9 if self.last_ts_ns is not None else self.forecast_tau_s
        w = 1.0 - np.exp(-max(dt, 0.0) / self.forecast_tau_s) if self.forecast_tau_s > 0 else 1.0
        return self.theta + w * (target - self.theta), np.where(ok, target, np.nan)

    def learn(self, tick: Tick, demand: np.ndarray, dt_s: float) -> np.ndarray:
        """Fold this tick into the hourly series; returns each zone's demand now (kg/s)."""
        member = self.zones >= 0
        zone_now = np.bincount(self.zones[member], weights=np.maximum(demand[member], 0.0), minlength=self.n_zones)
        if self.hourly is None or dt_s <= 0:
            return zone_now
        values = [zone_now]
        if len(self.gate_rows):
            g = tick.values[self.gate_rows]
            good = np.isfinite(g).all() and (tick.quality[self.gate_rows] <= UNCERTAIN).all()
            values.append([float(np.dot(g, self.gate_signs)) if good else np.nan])
        if len(self.consumer_rows):
            c = tick.values[self.consumer_rows]
            values.append(np.where(tick.quality[self.consumer_rows] <= UNCERTAIN, c, np.nan))
        temp = None
        if self.temperature_row is not None and tick.quality[self.temperature_row] <= UNCERTAIN:
            temp = float(tick.values[self.temperature_row])
        if self.hourly.add(tick.ts_ns, np.concatenate([np.asarray(v, float) for v in values]), dt_s, temp):
            self.ahead = None             # an hour learned: forecast afresh
        return zone_now

    def update(self, tick: Tick) -> TwinState:
        t0 = time.perf_counter()
        m, use = self.measurements(tick)
        centre, expected = self.prior_centre(tick.ts_ns)
        if len(m) == 0:       # nothing measured: solve the prior (the last multipliers, towards the forecast)
            self.theta = centre
            demand = zone_demand(self.prior, self.zones, self.theta, None)
            result = self.solver.solve(demand, warm_start=self.last)
            chi2, iterations = 0.0, 0
        else:
            est = estimate_demand(self.solver, self.prior, self.zones, m, theta0=centre,
                                  sigma_theta=self.sigma_theta, warm_start=self.last)
            self.theta, result, demand, chi2, iterations = (est.multipliers, est.result, est.demand, est.chi2,
                                                            est.iterations)
        self.last = result
        measured = np.full(len(self.sensor_rows), np.nan)
        measured[use] = tick.values[self.sensor_rows][use]
        estimated = np.where(self.kind == PRESSURE, result.node_pressure_pa[np.where(self.kind == PRESSURE, self.element, 0)],
                             result.link_flow[np.where(self.kind == FLOW, self.element, 0)])
        inflow = float(-result.node_demand[self.source_nodes].sum())
        consumption = float(np.maximum(demand, 0).sum())
        model = self.model
        pack = {"line_pack_kg": self.solver.line_pack_kg(result.node_pressure_pa)} if model.is_gas else {}
        dt_s = (tick.ts_ns - self.last_ts_ns) / 1e9 if self.last_ts_ns is not None else 0.0
        self.last_ts_ns = tick.ts_ns
        zone_now = self.learn(tick, demand, min(dt_s, 3600.0))
        fc = self.forecast_figures(tick.ts_ns, zone_now, expected)
        return TwinState(
            network=tick.network, ts_ns=tick.ts_ns, node_ids=list(model.nodes.ids),
            node_pressure_pa=result.node_pressure_pa, node_demand=demand, unsupplied=result.unsupplied,
            link_ids=list(model.links.ids), link_flow=result.link_flow, link_velocity_m_s=result.link_velocity_m_s,
            sensor_ids=[self.points.ids[r] for r in self.sensor_rows], sensor_measured=measured,
            sensor_estimated=estimated, zone_multipliers=self.theta.copy(), converged=result.converged,
            iterations=int(iterations), chi2=float(chi2), solve_ms=(time.perf_counter() - t0) * 1e3,
            figures={"inflow_kg_s": inflow, "consumption_kg_s": consumption, "readings": tick.received,
                     "late_readings": tick.late, **pack, **fc, **tick.figures})

    def forecast_figures(self, ts_ns: int, zone_now: np.ndarray, expected: np.ndarray | None) -> dict:
        """What the state carries of the forecast (a few hundred bytes): the zones' demand now, the
        current hour's forecast per zone and its multipliers, and the next 24 hours per series from
        the current hour's start."""
        out = {"zone_demand_kg_s": _round(zone_now)}
        ahead = self.forecast_now(ts_ns)
        if ahead is None or not np.isfinite(ahead).any():
            return out
        out["zone_forecast_kg_s"] = _round(ahead[:self.n_zones, 0])
        if expected is not None:
            out["forecast_multipliers"] = _round(expected)
        out["forecast_hour_ns"] = int(self.ahead_hour_ns)
        out["forecast_kg_s"] = self.ahead_figures
        return out

    def snapshot(self) -> dict:
        snap = {"theta": self.theta.copy(), "last_ts_ns": self.last_ts_ns}
        if self.hourly is not None:
            snap["forecast"] = self.hourly.snapshot()
        return snap

    def restore(self, snap: dict) -> None:
        if len(snap["theta"]) == self.n_zones:
            self.theta = np.asarray(snap["theta"], float)
        self.last_ts_ns = snap.get("last_ts_ns")
        if self.hourly is not None and "forecast" in snap:
            self.hourly.restore(snap["forecast"])
            self.ahead = None


class TwinLogic(StatefulLogic):
    def __init__(self, updater: TwinUpdater, resume: dict | None):
        self.updater = updater
        if resume is not None:
            updater.restore(resume)

    def on_item(self, tick: Tick):
        return [self.updater.update(tick)], StatefulLogic.RETAIN

    def snapshot(self) -> dict:
        return self.updater.snapshot()


class PriorTwin:
    """The no-leak twin on the demand model alone, beside the fitted one (docs/leaks.md).

    The fitted twin (``TwinUpdater``) moves its zone multipliers every tick to match the gate
    flows and pressures, so a leak is fitted as extra demand and leaves almost no residual. This
    twin never fits: its demand is the network's base demand times the daily load ``profile``
    (``len(profile)`` equal steps over the UTC day, linear between them, periodic), the demand
    model an operator plans with. What the field shows beyond it (a leak, and the demand model's
    own error, which the leak detector learns on its baseline) stays in its residuals.

    It is solved every ``every_s`` at the middle of that interval (the profile moves slowly; one
    warm solve per interval, not per tick) and held in between."""

    def __init__(self, model: NetworkModel, points: PointTable, profile: np.ndarray, *, every_s: float = 60.0):
        profile = np.asarray(profile, float)
        if profile.ndim != 1 or len(profile) < 1 or not np.isfinite(profile).all() or (profile < 0).any():
            raise ValueError(f"daily load profile must be finite non-negative values over the day, got {profile!r}")
        if every_s <= 0:
            raise ValueError(f"PriorTwin every_s must be > 0, got {every_s}")
        self.model, self.profile, self.every_s = model, profile, float(every_s)
        self.solver = GasSolver(model) if model.is_gas else WaterSolver(model)
        self.base = model.base_demand()
        q = np.array(points.quantity)
        rows = np.flatnonzero((q == "pressure") | (q == "flow"))
        self.kind = np.where(q[rows] == "pressure", PRESSURE, FLOW).astype(np.int8)
        self.element = points.element_index[rows]
        self.last = None          # the last solve (warm start)
        self.until_ns: int | None = None
        self.demand = None

    def factor(self, ts_ns: int) -> float:
        """The profile at ``ts_ns`` (UTC time of day)."""
        n = len(self.profile)
        x = (ts_ns / 1e9 % 86400.0) / 86400.0 * n
        i = int(x) % n
        w = x - int(x)
        return float((1.0 - w) * self.profile[i] + w * self.profile[(i + 1) % n])

    def state(self, fitted: TwinState) -> TwinState:
        """``fitted`` with every estimate replaced by the demand-model twin's (measurements kept)."""
        if self.until_ns is None or fitted.ts_ns >= self.until_ns or self.last is None:
            every_ns = int(self.every_s * 1e9)
            start = fitted.ts_ns - fitted.ts_ns % every_ns
            self.demand = self.base * self.factor(start + every_ns // 2)
            result = self.solver.solve(self.demand, warm_start=self.last)
            if not result.converged:
                result = self.solver.solve(self.demand)
            self.last, self.until_ns = result, start + every_ns
        r = self.last
        est = np.where(self.kind == PRESSURE, r.node_pressure_pa[np.where(self.kind == PRESSURE, self.element, 0)],
                       r.link_flow[np.where(self.kind == FLOW, self.element, 0)])
        return replace(fitted, node_pressure_pa=r.node_pressure_pa, node_demand=self.demand, unsupplied=r.unsupplied,
                       link_flow=r.link_flow, link_velocity_m_s=r.link_velocity_m_s, sensor_estimated=est,
                       zone_multipliers=np.ones(1), converged=r.converged, iterations=int(r.iterations),
                       chi2=0.0, figures={})
