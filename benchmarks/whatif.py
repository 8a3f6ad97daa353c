"""What-if study speed: a day of 5-minute ticks (288) on a ~3,000-node synthetic city gas grid.

    python benchmarks/whatif.py [--blocks 15] [--ticks 288] [--processes 2] [--quick]

Issue 7's target: a day of 5-minute ticks on a 3,000-node network replays in under 60 s per
variant. The study is built the way a planner's would be: the field simulator records the day
(pressure sensors spread over the grid, flow meters at the gate stations), the baseline replay
runs it through the flow (state estimation every tick), and four variants (baseline, a cold day
+20 %, a main street shut for two hours, a leak) re-solve the estimated demands. Prints
``key=value`` figures: the one-off baseline replay, the wall time of all variants, and each
variant's own seconds.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def build(blocks: int, ticks: int, out: Path):
    from pipetwin.bench.synthetic import city
    from pipetwin.connectors.points import points_from_columns
    from pipetwin.flows.studies.history import simulate_readings
    from pipetwin.flows.studies.study import SIMULATION_START, HistorySpec, Study, Variant, customers_of
    from pipetwin.twin.carbon import FactorTable
    from pipetwin.twin.changes import Change
    from pipetwin.twin.estimate.demand import make_zones
    from pipetwin.twin.model import LinkKind, NodeKind

    model = city(blocks=blocks, sections=4, seed=1)
    rng = np.random.default_rng(1)
    junctions = np.flatnonzero(model.nodes.kind == NodeKind.JUNCTION)
    sensed = np.sort(rng.choice(junctions, 30, replace=False))
    sources = set(np.flatnonzero(model.nodes.kind == NodeKind.SOURCE).tolist())
    gate_pipes = [k for k in range(model.n_links) if int(model.links.from_node[k]) in sources
                  or int(model.links.to_node[k]) in sources]
    rows = [(f"PT-{model.nodes.ids[i]}", model.nodes.ids[i], "pressure", "Pa") for i in sensed]
    rows += [(f"FT-{model.links.ids[k]}", model.links.ids[k], "flow", "kg/s") for k in gate_pipes]
    sensors = out / "sensors.csv"
    with open(sensors, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["point", "element", "quantity", "unit"])
        w.writerows(rows)
    points = points_from_columns([r[0] for r in rows], [r[2] for r in rows])
    points.element = [r[1] for r in rows]
    points.element_index = np.array([i for i in sensed] + gate_pipes, np.int64)
    readings = out / "readings.parquet"
    pq.write_table(simulate_readings(model, points, ticks * 300.0, 300.0, 1, SIMULATION_START), readings)
    # a main (0.1 m or more) near the middle of the grid, shut 10:00-12:00
    mains = np.flatnonzero((model.links.kind == LinkKind.PIPE) & (model.links.diameter_m >= 0.1))
    centre = np.array([model.nodes.x.mean(), model.nodes.y.mean()])
    mid = np.column_stack([model.nodes.x[model.links.from_node[mains]], model.nodes.y[model.links.from_node[mains]]])
    main = model.links.ids[mains[np.argmin(((mid - centre) ** 2).sum(1))]]
    leak_node = model.nodes.ids[junctions[len(junctions) // 3]]
    variants = [Variant("baseline", []),
                Variant("cold-day", [Change("scale_demand", factor=1.2)]),
                Variant("main-shut", [Change("close", link=main, at_s=36000.0, until_s=43200.0)]),
                Variant("leak", [Change("leak", node=leak_node, flow_kg_s=0.01, at_s=21600.0)])]
    zones = make_zones(model, 4)
    src = model.nodes.fixed_pressure_pa[list(sources)]
    study = Study(name="bench", path=out / "bench.yaml", model=model, points_path=None,
                  history=HistorySpec("readings", path=readings, sensors=sensors), tick_s=300.0, n_zones=4,
                  zones=zones, min_service_pa=float(src.min()) - 20000.0, factors=FactorTable(), variants=variants,
                  max_age_s=600.0)
    return study, int(customers_of(model).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15, help="city street blocks per side (15: ~2,900 nodes)")
    parser.add_argument("--ticks", type=int, default=288, help="5-minute ticks (288: a day)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a quarter of the day")
    args = parser.parse_args(argv)
    from pipetwin.flows.studies.run import run_study

    ticks = max(args.ticks // 4, 1) if args.quick else args.ticks
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        study, customers = build(args.blocks, ticks, out)
        t_build = time.perf_counter() - t0
        t1 = time.perf_counter()
        outcome = run_study(study, out / "study", processes=args.processes)
        total = time.perf_counter() - t1
    meta = outcome.meta
    timing = meta["timing_s"]
    print(f"nodes={study.model.n_nodes}")
    print(f"links={study.model.n_links}")
    print(f"customers={customers}")
    print(f"ticks={meta['ticks']}")
    print(f"variants={len(outcome.results)}")
    print(f"processes={args.processes}")
    print(f"simulate_history_s={t_build:.2f}")
    print(f"baseline_replay_s={timing['baseline_replay']:.2f}")
    print(f"variants_wall_s={timing['variants_wall']:.2f}")
    for r in outcome.results:
        print(f"seconds_per_variant[{r.name}]={r.seconds:.2f}")
        print(f"ticks_not_converged[{r.name}]={int((~r.converged).sum())}")
    worst = max(r.seconds for r in outcome.results)
    print(f"max_seconds_per_variant={worst:.2f}")
    print(f"replay_plus_worst_variant_s={timing['baseline_replay'] + worst:.2f}")
    print(f"study_total_s={total:.2f}")
    print(f"baseline_vs_flow_max_pa={meta['baseline_replay']['max_abs_min_pressure_difference_pa']}")
    print("target_seconds_per_variant=60")
    return 0


if __name__ == "__main__":
    sys.exit(main())
