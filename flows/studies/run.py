"""``pipetwin whatif``: run a study end to end and write its comparison.

1. The history (simulated, a historian day, or a readings file) becomes one readings file.
2. The baseline replay runs it through the product's flow (``build_flow``) once: the twin's
   estimated demand at every tick.
3. Every variant (the baseline's own changes first, then each scenario) re-solves those demands
   on its changed network, one process per variant as cores allow (``processes``).
4. The tables (Parquet and CSV), ``study.json`` and ``report.html`` go to ``out``.

Output files and their columns are in docs/whatif.md; the dashboard reads ``study.json`` and
the Parquet tables.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipetwin.flows.studies.compare import (Context, comparison_table, nodes_table, ticks_table, variants_table,
                                            zone_ticks_table)
from pipetwin.flows.studies.study import Study, customers_of, history_start, load_points_for
from pipetwin.flows.studies.variant import VariantInput, VariantResult, run_variant

SCHEMA = "pipetwin.whatif/1"
TABLES = ("variants", "comparison", "ticks", "zone_ticks", "nodes")


@dataclass
class StudyOutcome:
    meta: dict
    tables: dict[str, pa.Table]
    results: list[VariantResult]


def variant_inputs(study: Study, t_s: np.ndarray, demand: np.ndarray) -> list[VariantInput]:
    customers = customers_of(study.model)
    return [VariantInput(v.name, study.model, v.changes, t_s, demand, study.zones, customers, study.min_service_pa)
            for v in study.variants]


def run_variants(inputs: list[VariantInput], processes: int,
                 done: Callable[[VariantResult], None] | None = None) -> list[VariantResult]:
    """Every variant, in ``processes`` worker processes (1: in this process), results in input order."""
    results: dict[str, VariantResult] = {}
    if processes <= 1 or len(inputs) <= 1:
        with kernel_threads(1):
            for v in inputs:
                results[v.name] = run_variant(v)
                if done:
                    done(results[v.name])
    else:
        # spawn, not fork: the baseline replay leaves bytewax's runtime threads in this process.
        # The solver's kernels are threaded (numba prange); with one process per core, more threads
        # per process only fight over the cores, so each worker gets its share of them.
        workers = min(processes, len(inputs))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_limit_threads,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(run_variant, v) for v in inputs]
            for f in as_completed(futures):
                r = f.result()
                results[r.name] = r
                if done:
                    done(r)
    return [results[v.name] for v in inputs]


def _limit_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


@contextmanager
def kernel_threads(threads: int):
    """Run the solver's threaded kernels (numba prange) on ``threads`` threads, then restore.
    A study's solves are many small ones (a few thousand pipes each): measured on the shared
    2-core machine under load, the baseline replay of the valve-closure example took 52-68 s
    with 2 threads and 4.6-5.1 s with 1, so the study runs its in-process work on one."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _largest_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else None


def default_processes() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_study(study: Study, out: str | Path, *, processes: int | None = None,
              stage: Callable[[str], None] | None = None,
              variant_done: Callable[[VariantResult], None] | None = None) -> StudyOutcome:
    """Run ``study`` and write its outputs under ``out``. ``stage`` hears each step's name,
    ``variant_done`` each finished variant (progress display)."""
    from pipetwin.flows.studies.baseline import replay_baseline
    from pipetwin.flows.studies.history import prepare_history
    from pipetwin.flows.studies.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = stage or (lambda _s: None)
    t0 = time.perf_counter()
    say("history")
    points = load_points_for(study)
    with kernel_threads(1):
        readings = prepare_history(study.history, study.model, points, out)
    t_history = time.perf_counter() - t0
    say("baseline replay through the flow")
    historian = out / "historian"
    if historian.exists():     # a rerun into the same folder: the replay's historian starts empty
        import shutil

        shutil.rmtree(historian)
    with kernel_threads(1):
        base = replay_baseline(readings, study.model, points, historian, tick_s=study.tick_s,
                               n_zones=study.n_zones, max_age_s=study.max_age_s)
    start = history_start(study.history)
    start_ns = int(start.timestamp() * 1e9)
    t_s = (base.ts_ns - start_ns) / 1e9
    say("variants")
    t1 = time.perf_counter()
    results = run_variants(variant_inputs(study, t_s, base.demand), processes or default_processes(), variant_done)
    t_variants = time.perf_counter() - t1
    model = study.model
    ctx = Context(node_ids=model.nodes.ids, x=model.nodes.x, y=model.nodes.y, zones=study.zones,
                  customers=customers_of(model), start_ns=start_ns, tick_s=study.tick_s,
                  min_service_pa=study.min_service_pa, factors=study.factors,
                  descriptions={v.name: v.description for v in study.variants},
                  changes={v.name: [c.describe() for c in v.changes] for v in study.variants})
    tables = {"variants": variants_table(results, ctx), "comparison": comparison_table(results, ctx),
              "ticks": ticks_table(results, ctx), "zone_ticks": zone_ticks_table(results, ctx),
              "nodes": nodes_table(results, ctx)}
    say("writing")
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet")
        pacsv.write_csv(table, out / f"{name}.csv")
    history = (f"simulated {study.history.seconds:g} s at {study.history.step_s:g} s (seed {study.history.seed})"
               if study.history.kind == "simulate" else
               f"historian {study.history.path} {study.history.day}" if study.history.kind == "historian"
               else f"readings {study.history.path}")
    meta = {
        "schema": SCHEMA, "study": study.name, "description": study.description, "study_file": str(study.path),
        "network": model.name, "nodes": model.n_nodes, "links": model.n_links, "history": history,
        "readings_file": str(readings), "historian": str(historian), "start": start.isoformat(),
        "tick_s": study.tick_s, "ticks": int(len(t_s)), "zones": ctx.zone_names,
        "min_service_pressure_pa": study.min_service_pa,
        "methane_mass_fraction": study.factors.composition.methane_mass_fraction,
        "composition": study.factors.composition.name, "gwp100_methane": study.factors.gwp100_ch4,
        **study.factors.stamp(),
        "variants": [{"name": v.name, "description": v.description, "changes": ctx.changes[v.name]}
                     for v in study.variants],
        "baseline_replay": {"ticks_not_converged": int((~base.converged).sum()),
                            "mean_chi2": float(np.mean(base.chi2)),
                            # the baseline variant re-solves the replay's own demands on the same network,
                            # so its lowest pressures must be the twin's: a check on the whole chain
                            "max_abs_min_pressure_difference_pa": _largest_difference(
                                base.min_customer_pa, results[0].min_pressure_pa[:, -1])},
        "tables": {name: f"{name}.parquet" for name in TABLES},
        "timing_s": {"history": t_history, "baseline_replay": base.seconds, "variants_wall": t_variants,
                     "per_variant": {r.name: r.seconds for r in results}},
    }
    (out / "study.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    write_report(out / "report.html", meta, tables["ticks"], tables["comparison"], tables["variants"])
    return StudyOutcome(meta, tables, results)
