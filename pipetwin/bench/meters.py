"""Meter-end analytics on the field simulator: each meter fault injected at several houses of the
bundled network, plus a run with no fault, through the meter-end model; then the model's cost per
hour at 1e5 and 1e6 meters.

    pipetwin bench meters [--days 7] [--step-s 300] [--per-case 12] [--runs 2] [--seed 11] [--quick] [--no-scale]

Prints ``key=value`` lines: per case (``leak``, ``change``, ``theft``, ``stopped``, and
``leak_preexisting``: a house leaking from the start, before the model learns it) how many faulted
meters its check flagged, the median and worst delay from the fault's start (the warm-up's end for
a pre-existing leak) to the end of the hour that flagged it (the flow adds its meter lateness,
15 min by default), and how many of those meters each other check flagged too; false alarms per
1000 meter-days on the meters with no fault (every run, after the two-day warm-up); and
``scale_<n>_ms_per_hour`` with the model's state size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipetwin.flows.detectors.meter_end_model import FLAGS, HOUR_NS, MeterEndModel

# case -> (simulator fault, check that should flag it)
CASES = {"leak": ("behind_meter_leak", "leak"), "change": ("usage_change", "change"),
         "theft": ("theft", "theft"), "stopped": ("stopped", "stopped"),
         "leak_preexisting": ("behind_meter_leak", "leak")}   # leaking before the model starts learning
LEAK_SHARES = (0.15, 0.25, 0.5, 1.0)         # behind-the-meter leak, as a share of the house's mean use
CHANGE_FACTORS = (2.5, 1.8)
THEFT_FACTORS = (0.3, 0.1)


def network():
    from pipetwin.cli import load_network
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example

    model = load_network("schutterwald")
    return model, load_points(example("schutterwald") / "points.csv", model)


def plan(points, base_kg_s: np.ndarray, per_case: int, onset_s: float, rng: np.random.Generator) -> list[dict]:
    """Scenario events: ``per_case`` meters per case, distinct, each starting at its own hour of the
    day after ``onset_s`` (so onsets fall by day and by night)."""
    meter_ids = [points.ids[r] for r in np.flatnonzero(np.array(points.protocol) == "meter")]
    picks = rng.choice(len(meter_ids), size=per_case * len(CASES), replace=False)
    events = []
    for c, (case, (fault, _check)) in enumerate(CASES.items()):
        for j in range(per_case):
            pos = int(picks[c * per_case + j])
            at = 0.0 if case.endswith("_preexisting") else onset_s + float(rng.integers(0, 24)) * 3600.0 + 1800.0
            e = {"at": at, "kind": "meter", "meter": meter_ids[pos], "fault": fault,
                 "since_s": max(at, onset_s)}      # delays count from here (the warm-up's end at the latest)
            param = None
            if fault == "behind_meter_leak":
                param = LEAK_SHARES[j % len(LEAK_SHARES)]
                e["flow_kg_s"] = param * float(base_kg_s[pos])
            elif fault == "usage_change":
                e["factor"] = param = CHANGE_FACTORS[j % len(CHANGE_FACTORS)]
            elif fault == "theft":
                e["factor"] = param = THEFT_FACTORS[j % len(THEFT_FACTORS)]
            events.append({**e, "case": case, "pos": pos, "param": param})
    return events


def simulate_reads(model, points, events: list[dict], days: float, step_s: float, seed: int):
    """Hourly reads (hours x meters, kg) and each hour's end (ns) from the field simulator."""
    from datetime import datetime, timezone

    from pipetwin.connectors.simulator import Event, FieldSimulator, Scenario

    scenario = Scenario(datetime(2026, 1, 15, tzinfo=timezone.utc), sorted(
        (Event(e["at"], "meter", {k: v for k, v in e.items() if k not in ("at", "kind", "case", "pos", "param", "since_s")})
         for e in events), key=lambda ev: ev.at_s))
    sim = FieldSimulator(model, points, scenario, seed=seed)
    ends, reads = [], []
    for _ in range(int(round(days * 86400 / step_s))):
        step = sim.step(step_s)
        if step.meter_reads:
            ends.append(step.ts_ns + int(step_s * 1e9))
            reads.append(np.fromiter(step.meter_reads.values(), float, len(step.meter_reads)))
    return np.array(ends, np.int64), np.array(reads), scenario.start_ns


def run_model(model: MeterEndModel, ends: np.ndarray, reads: np.ndarray) -> dict[str, np.ndarray]:
    """Per check: the first hour index (row of ``reads``) each meter is flagged in, and the count
    of separate alarms (rising edges) per meter."""
    n = reads.shape[1]
    first = {f: np.full(n, -1, np.int64) for f in FLAGS}
    onsets = {f: np.zeros(n, np.int64) for f in FLAGS}
    prev = {f: np.zeros(n, bool) for f in FLAGS}
    for k, (end, x) in enumerate(zip(ends, reads)):
        model.update(int(end), x)
        flagged = model.flagged()
        for f in FLAGS:
            now = np.zeros(n, bool)
            now[flagged[f]] = True
            first[f][(first[f] < 0) & now] = k
            onsets[f] += now & ~prev[f]
            prev[f] = now
    return {"first": first, "onsets": onsets}


def scale(n: int, hours: int, seed: int = 0) -> tuple[float, int]:
    """Mean milliseconds per hourly update over ``n`` synthetic meters (profile x noise, 2 % of
    reads missing), and the state's size in bytes."""
    from pipetwin.connectors.simulator import WINTER_PROFILE

    rng = np.random.default_rng(seed)
    expected = rng.lognormal(np.log(0.2), 0.5, n)
    classes = np.digitize(expected, np.quantile(expected, [0.25, 0.5, 0.75]))
    model = MeterEndModel(expected, classes)
    times = []
    for h in range(hours):
        x = expected * WINTER_PROFILE[h % 24] * rng.lognormal(0.0, 0.1, n)
        x[rng.random(n) < 0.02] = np.nan
        t0 = time.perf_counter()
        model.update((h + 1) * HOUR_NS, x)
        model.flagged()
        times.append(time.perf_counter() - t0)
    size = sum(v.nbytes for v in model.state.values())
    return 1e3 * float(np.mean(times[1:])), size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipetwin bench meters", description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--step-s", type=float, default=300.0)
    p.add_argument("--per-case", type=int, default=12, help="faulted meters per case and run")
    p.add_argument("--runs", type=int, default=2, help="fault runs (seeds seed, seed+1, ...), plus one control run")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--quick", action="store_true", help="4 days, 4 meters per case, one fault run, scale 1e5 only")
    p.add_argument("--no-scale", action="store_true", help="skip the 1e5/1e6-meter timing")
    a = p.parse_args(argv)
    days, per_case, n_runs = (4.0, 4, 1) if a.quick else (a.days, a.per_case, a.runs)
    from pipetwin.flows.detectors.meter_end import meter_classes

    net, points = network()
    rows = np.flatnonzero(np.array(points.protocol) == "meter")
    base = net.base_demand()[points.element_index[rows]]
    classes = meter_classes(net, points)
    warmup_days = 2.0
    t0 = time.perf_counter()
    runs = []
    plans = [(plan(points, base, per_case, warmup_days * 86400, np.random.default_rng(a.seed + r)), a.seed + r)
             for r in range(n_runs)] + [([], a.seed + 1000)]
    for evs, seed in plans:
        ends, reads, start_ns = simulate_reads(net, points, evs, days, a.step_s, seed)
        runs.append((evs, ends, start_ns, run_model(MeterEndModel(base * 3600.0, classes), ends, reads)))
    print(f"meters={len(rows)}")
    print(f"days={days:g}")
    print(f"step_s={a.step_s:g}")
    print(f"runs={n_runs}+1")
    print(f"simulate_and_detect_s={time.perf_counter() - t0:.1f}")
    for case, (_fault, check) in CASES.items():
        delays, total, others, by_param = [], 0, {f: 0 for f in FLAGS if f != check}, {}
        for evs, ends, start_ns, res in runs:
            for e in (e for e in evs if e["case"] == case):
                total += 1
                k = res["first"][check][e["pos"]]
                hit = by_param.setdefault(e["param"], [0, 0])
                hit[1] += 1
                if k >= 0:
                    hit[0] += 1
                    delays.append((ends[k] - start_ns) / HOUR_NS - e["since_s"] / 3600.0)
                for f in others:
                    others[f] += int(res["onsets"][f][e["pos"]] > 0)
        print(f"{case}_detected={len(delays)}/{total}")
        print(f"{case}_delay_h_median={np.median(delays):.1f}" if delays else f"{case}_delay_h_median=nan")
        print(f"{case}_delay_h_max={np.max(delays):.1f}" if delays else f"{case}_delay_h_max=nan")
        for f, count in others.items():
            print(f"{case}_also_flagged_{f}={count}/{total}")
        name = {"leak": "share_of_mean_use", "leak_preexisting": "share_of_mean_use", "change": "factor",
                "theft": "factor"}.get(case)
        for param, (hit, n) in sorted(by_param.items(), key=lambda kv: kv[0] or 0):
            if name:
                print(f"{case}_detected_{name}_{param:g}={hit}/{n}")
    # false alarms: meters without a fault, hours after the warm-up
    alarms, meter_days = {f: 0 for f in FLAGS}, 0.0
    for evs, _ends, _start_ns, res in runs:
        normal = np.ones(len(rows), bool)
        normal[[e["pos"] for e in evs]] = False
        meter_days += normal.sum() * max(days - warmup_days, 0.0)
        for f in FLAGS:
            alarms[f] += int(res["onsets"][f][normal].sum())
    for f in FLAGS:
        print(f"false_alarms_{f}_per_1000_meter_days={1000 * alarms[f] / meter_days:.3f}")
    print(f"false_alarms_per_1000_meter_days={1000 * sum(alarms.values()) / meter_days:.3f}")
    print(f"normal_meter_days={meter_days:.0f}")
    if not a.no_scale:
        for n in ((100_000,) if a.quick else (100_000, 1_000_000)):
            ms, size = scale(n, 30 if n <= 100_000 else 12)
            print(f"scale_{n}_ms_per_hour={ms:.1f}")
            print(f"scale_{n}_state_mb={size / 1e6:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
