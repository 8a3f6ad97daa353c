"""``pipetwin bench forecast``: MAPE of the hourly demand forecast (``twin/forecast.py``) on a
held-out day, beside a seasonal-naive baseline (same hour yesterday) and river's time-series
models (HoltWinters, SNARIMAX), each series learned from scratch on everything before that day.

Datasets:
- ``sim``: the field simulator (``connectors/simulator.FieldSimulator``) on the bundled
  Schutterwald network for ``--days`` days at ``--step-s``; series are each zone's true demand
  (``make_zones``, 4 zones), the measured gate inflow, and each zone's demand as the twin
  estimates it from the SCADA readings (``TwinUpdater``, the series the flow learns from);
- ``water`` and ``gas``: the shared leak sets (``shared/benchmarks/leaks/public``): the system
  input (water: both reservoir outlets plus the tank's net outflow; gas: the two pipes at the
  source), the metered consumers' total, and every metered consumer on its own (the median over
  consumers is reported: the per-large-consumer forecast). The water sets span 3 days (2 to learn
  from), the gas sets 2 days (1 day to learn from, so the day-ahead forecast is yesterday's shape).

Two scores per model: ``day_ahead`` (one forecast at the held-out day's start for its 24 hours,
the wall's forecast) and ``hour_ahead`` (each hour forecast from all hours before it, the twin's
prior). Prints ``key=value`` lines: ``<dataset>_<series>_<score>_mape_<model>`` in %, averaged
over scenarios and zones; ``<dataset>_hours_train``; ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from pipetwin.twin.forecast import HOUR_NS, DemandForecaster, SeasonalNaive, mape

MODELS = ("pipetwin", "naive", "river_hw", "river_snarimax")


class RiverForecaster:
    """river's HoltWinters or SNARIMAX behind the ``learn_one(hour_ns, value)``/``forecast``
    interface. river's models assume consecutive steps: a missing hour is filled with the model's
    own forecast for it. HoltWinters needs ``seasonality`` values to prime its components; before
    that (and while SNARIMAX has no history) the forecast is the mean so far."""

    def __init__(self, kind: str):
        from river import time_series

        self.kind = kind
        if kind == "river_hw":
            # multiplicative daily season; river needs a trend with a season, kept nearly still
            self.model = time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.3, seasonality=24, multiplicative=True)
        elif kind == "river_snarimax":
            # seasonal differencing at 24 h plus one AR and one MA term on either scale
            self.model = time_series.SNARIMAX(p=1, d=0, q=1, m=24, sp=1, sd=1, sq=1)
        else:
            raise ValueError(f"unknown river model {kind!r}")
        self.last: int | None = None
        self.n, self.total = 0, 0.0

    def learn_one(self, hour_ns: int, value: float, temperature_k: float | None = None) -> None:
        hour = int(hour_ns) // HOUR_NS
        if self.last is not None and hour > self.last + 1 and self.n > 24:
            for v in self._predict(hour - self.last - 1):
                self.model.learn_one(float(v))
        self.model.learn_one(float(value))
        self.last, self.n, self.total = hour, self.n + 1, self.total + float(value)

    def _predict(self, horizon: int) -> np.ndarray:
        if self.n < 25:
            return np.full(horizon, self.total / max(self.n, 1))
        out = np.asarray(self.model.forecast(horizon=horizon), float)
        return np.where(np.isfinite(out), out, self.total / self.n)

    def forecast(self, start_ns: int, horizon: int = 24, temperature_k: np.ndarray | None = None) -> np.ndarray:
        if self.last is None:
            return np.full(horizon, np.nan)
        ahead = int(start_ns) // HOUR_NS - self.last      # 1: the hour after the last learned
        return self._predict(ahead - 1 + horizon)[ahead - 1:]


def make_model(name: str):
    if name == "pipetwin":
        return DemandForecaster()
    if name == "naive":
        return SeasonalNaive(24)
    return RiverForecaster(name)


def score_series(hours_ns: np.ndarray, values: np.ndarray, models=MODELS, test_hours: int = 24) -> dict:
    """Every model on one hourly series: learn all hours before the last ``test_hours``, then
    ``day_ahead`` = MAPE of one forecast for those hours, ``hour_ahead`` = MAPE of each hour
    forecast from the hours before it (learning as it goes)."""
    hours_ns, values = np.asarray(hours_ns, np.int64), np.asarray(values, float)
    split = int(hours_ns[-1]) - (test_hours - 1) * HOUR_NS
    train, test = hours_ns < split, hours_ns >= split
    out = {}
    for name in models:
        m = make_model(name)
        for h, v in zip(hours_ns[train], values[train]):
            m.learn_one(int(h), float(v))
        day = m.forecast(split, test_hours)
        by_hour = {int(split + k * HOUR_NS): day[k] for k in range(test_hours)}
        hourly = []
        for h, v in zip(hours_ns[test], values[test]):
            hourly.append(m.forecast(int(h), 1)[0])
            m.learn_one(int(h), float(v))
        out[name] = {"day_ahead": mape(values[test], [by_hour[int(h)] for h in hours_ns[test]]),
                     "hour_ahead": mape(values[test], hourly)}
    return out


def hourly_means(ts_ns: np.ndarray, values: np.ndarray, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Samples (ns, value) averaged into the hours they fall in (keyed by the hour's start)."""
    ts_ns, values = np.asarray(ts_ns, np.int64), np.asarray(values, float)
    hour = ts_ns // HOUR_NS * HOUR_NS
    keys, inverse, counts = np.unique(hour, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=values, minlength=len(keys))
    keep = counts >= min_samples
    return keys[keep], (sums / counts)[keep]


# ------------------------------------------------------------------------------------- datasets


def simulator_series(days: float, step_s: float, seed: int = 0, twin: bool = True, say=print) -> dict:
    """The field simulator on the bundled network: ``{series: (hours_ns, values)}`` for each zone's
    true demand, the measured gate inflow and (``twin``) each zone's demand as the twin estimates
    it from the readings."""
    from pipetwin.connectors.points import load_points
    from pipetwin.connectors.simulator import FieldSimulator
    from pipetwin.data import example
    from pipetwin.flows.contracts import Tick
    from pipetwin.flows.steps.balance import gate_flow_rows
    from pipetwin.flows.steps.twin import TwinUpdater
    from pipetwin.twin.estimate.demand import make_zones
    from pipetwin.twin.io import read_network

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    zones = make_zones(model, 4)
    n_zones = int(zones.max()) + 1
    member = zones >= 0
    sim = FieldSimulator(model, points, seed=seed)
    rows, signs = gate_flow_rows(model, points)
    updater = TwinUpdater(model, points, zones=zones, forecast=False) if twin else None
    steps = int(round(days * 86400.0 / step_s))
    ts, true_z, twin_z, inflow = [], [], [], []
    t0 = time.perf_counter()
    for k in range(steps):
        st = sim.step(step_s)
        ts.append(st.ts_ns)
        d = np.maximum(st.result.node_demand, 0.0)
        true_z.append(np.bincount(zones[member], weights=d[member], minlength=n_zones))
        inflow.append(float(np.dot(st.scada[rows], signs)))
        if updater is not None:
            q = np.where(np.isfinite(st.scada), 0, 2).astype(np.int8)
            state = updater.update(Tick("sim", st.ts_ns, st.scada, q, np.full(len(q), st.ts_ns)))
            dz = np.maximum(state.node_demand, 0.0)
            twin_z.append(np.bincount(zones[member], weights=dz[member], minlength=n_zones))
        if k and k % 200 == 0:
            say(f"simulator: {k}/{steps} steps, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ts = np.array(ts)
    out = {}
    per_hour = max(1, int(3600 // step_s))
    for z in range(n_zones):
        out[f"zone{z}"] = hourly_means(ts, np.array(true_z)[:, z], per_hour)
        if twin_z:
            out[f"twin_zone{z}"] = hourly_means(ts, np.array(twin_z)[:, z], per_hour)
    out["inflow"] = hourly_means(ts, np.array(inflow), per_hour)
    return out


def scenario_series(folder: Path) -> tuple[str, dict]:
    """One shared leak scenario: its medium and ``{series: (hours_ns, values)}`` for the system
    input, the metered total and each metered consumer (``consumer:<point>``)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = json.loads((folder / "meta.json").read_text())
    sensors = [line.split(",") for line in (folder / "sensors.csv").read_text().splitlines()[1:] if line]
    quantity = {s[0]: s[2] for s in sensors}
    element = {s[0]: s[1] for s in sensors}
    table = pq.read_table(folder / "readings.parquet")
    ts = pc.cast(table["ts"], "int64").to_numpy()
    if table["ts"].type.unit != "ns":
        ts = ts * {"s": 10**9, "ms": 10**6, "us": 10**3}[table["ts"].type.unit]
    point = np.array(table["point"].to_pylist())
    value = table["value"].to_numpy()
    water = meta.get("medium") == "water"
    out = {}
    # system input: water = reservoir outlets + the tank's outflow - the pump filling it; gas = the source pipes
    sign = {}
    for p, q in quantity.items():
        if q == "flow":
            sign[p] = -1.0 if (water and element[p].upper().startswith("PUMP")) else 1.0
    flows = {p: dict(zip(ts[point == p].tolist(), value[point == p].tolist())) for p in sign}
    common = sorted(set.intersection(*(set(f) for f in flows.values())))
    total = np.zeros(len(common))
    for p, f in flows.items():
        total += sign[p] * np.array([f[c] for c in common])
    out["inflow"] = hourly_means(np.array(common), total, int(3600 // meta["step_s"]))
    # meters: hourly means stamped at the hour's end
    demand_points = [p for p, q in quantity.items() if q == "demand"]
    per = {}
    for p in demand_points:
        sel = point == p
        per[p] = dict(zip((ts[sel] - HOUR_NS).tolist(), value[sel].tolist()))
    hours = sorted(set.intersection(*(set(d) for d in per.values()))) if per else []
    if hours:
        out["demand"] = (np.array(hours), np.array([sum(per[p][h] for p in demand_points) for h in hours]))
        for p in demand_points:
            out[f"consumer:{p}"] = (np.array(hours), np.array([per[p][h] for h in hours]))
    return ("water" if water else "gas"), out


# ------------------------------------------------------------------------------------- reporting


def aggregate(results: dict[str, list[dict]]) -> dict[str, float]:
    """``{series group: [score_series results]}`` -> flat ``<group>_<score>_mape_<model>`` means
    (``consumer`` groups: medians over consumers)."""
    flat = {}
    for group, runs in results.items():
        reduce = np.nanmedian if group.endswith("consumer") else np.nanmean
        for model in MODELS:
            for score in ("day_ahead", "hour_ahead"):
                vals = [r[model][score] for r in runs if model in r]
                if vals:
                    flat[f"{group}_{score}_mape_{model}"] = float(reduce(vals))
    return flat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipetwin bench forecast", description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=8.0, help="simulated days (the last one is held out)")
    p.add_argument("--step-s", type=float, default=900.0, help="simulator step (s)")
    p.add_argument("--no-twin", action="store_true", help="skip the twin's estimate in the simulator run (faster)")
    p.add_argument("--leaks", default=None, help="the shared leak sets (default: shared/benchmarks/leaks/public)")
    p.add_argument("--only", choices=["sim", "sets"], default=None, help="one part only")
    p.add_argument("--scenarios", nargs="*", default=None, help="scenario names of the shared sets (default: all)")
    o = p.parse_args(argv)
    t0 = time.perf_counter()
    figures: dict[str, float | int] = {}
    say = print
    if o.only in (None, "sim"):
        series = simulator_series(o.days, o.step_s, twin=not o.no_twin, say=say)
        groups = {"sim_zone": [], "sim_twin_zone": [], "sim_inflow": []}
        for name, (h, v) in series.items():
            group = "sim_inflow" if name == "inflow" else ("sim_twin_zone" if name.startswith("twin_") else "sim_zone")
            groups[group].append(score_series(h, v))
        figures.update(aggregate({g: r for g, r in groups.items() if r}))
        figures["sim_hours_train"] = int(len(series["inflow"][0]) - 24)
    if o.only in (None, "sets"):
        root = Path(o.leaks) if o.leaks else Path(__file__).resolve().parents[2] / ".." / "shared" / "benchmarks" / "leaks" / "public"
        if not root.is_dir():
            say(f"no shared leak sets at {root}: skipping them", file=sys.stderr)
        else:
            groups: dict[str, list] = {}
            hours_train: dict[str, list] = {}
            for folder in sorted(d for d in root.iterdir() if (d / "meta.json").is_file()):
                if o.scenarios and folder.name not in o.scenarios:
                    continue
                medium, series = scenario_series(folder)
                for name, (h, v) in series.items():
                    if len(h) < 48:
                        continue
                    group = f"{medium}_consumer" if name.startswith("consumer:") else f"{medium}_{name}"
                    groups.setdefault(group, []).append(score_series(h, v))
                hours_train.setdefault(medium, []).append(len(series["inflow"][0]) - 24)
                say(f"{folder.name}: {medium}, {len(series)} series", file=sys.stderr)
            figures.update(aggregate(groups))
            for medium, n in hours_train.items():
                figures[f"{medium}_scenarios"] = len(n)
                figures[f"{medium}_hours_train"] = int(min(n))
    figures["seconds"] = time.perf_counter() - t0
    for key, value in figures.items():
        print(f"{key}={value:.3f}" if isinstance(value, float) and math.isfinite(value) else f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
