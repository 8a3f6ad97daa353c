"""The ``pipetwin`` command: one subcommand per job. Figures print as ``key=value`` lines so scripts
can read them; tables are for people."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from pipetwin.twin.model import NetworkFileError, NetworkModel


def load_network(name: str, scenario: str | None = None) -> NetworkModel:
    """A network file or folder, or the name of a bundled example (net1, net3, schutterwald)."""
    from pipetwin.data import DATA_DIR, example
    from pipetwin.twin.io import read_network

    path = Path(name)
    if not path.exists() and name.lower() in ("net1", "net3", "schutterwald"):
        path = example(name)
    elif not path.exists() and (DATA_DIR / name).exists():
        path = DATA_DIR / name
    options = {"scenario": scenario} if scenario else {}
    return read_network(path, **options)


def solve_model(model: NetworkModel, time_s: float = 0.0, friction: str | None = None):
    if model.is_gas:
        from pipetwin.twin.solve.gas import GasOptions, solve_gas

        return solve_gas(model, options=GasOptions(friction=friction))
    from pipetwin.twin.solve.water import solve_water

    return solve_water(model, time_s)


def write_solution(model: NetworkModel, result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "node_pressure.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "pressure_pa"])
        for nid, p in zip(model.nodes.ids, result.node_pressure_pa):
            w.writerow([nid, repr(float(p))])
    with open(out / "pipe_flow.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "flow"])
        for lid, q in zip(model.links.ids, result.link_flow):
            w.writerow([lid, repr(float(q))])


def cmd_solve(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    t0 = time.perf_counter()
    model = load_network(args.network, args.scenario)
    t_read = time.perf_counter() - t0
    result = solve_model(model, args.time, args.friction)
    unit = "kg/s" if model.is_gas else "m3/s"
    supplied = ~result.unsupplied
    p = result.node_pressure_pa[supplied]
    table = Table(title=f"{model.name}: steady state ({model.medium.name.lower()})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in model.summary().items():
        if key not in ("name", "medium"):
            table.add_row(key, str(value))
    table.add_row("converged", str(result.converged))
    if len(p):
        table.add_row("min pressure", f"{p.min():,.1f} Pa")
        table.add_row("max pressure", f"{p.max():,.1f} Pa")
    table.add_row("total demand", f"{result.node_demand[result.node_demand > 0].sum():.6g} {unit}")
    table.add_row("unsupplied nodes", str(int(result.unsupplied.sum())))
    console.print(table)
    if args.out:
        write_solution(model, result, Path(args.out))
        console.print(f"wrote {Path(args.out) / 'node_pressure.csv'} and {Path(args.out) / 'pipe_flow.csv'}")
    print(f"network={model.name}")
    print(f"nodes={model.n_nodes}")
    print(f"links={model.n_links}")
    print(f"converged={str(result.converged).lower()}")
    print(f"iterations={result.iterations}")
    print(f"residual={result.residual:.3e}")
    print(f"read_ms={t_read * 1e3:.1f}")
    print(f"solve_ms={result.elapsed_s * 1e3:.1f}")
    print(f"unsupplied={int(result.unsupplied.sum())}")
    return 0 if result.converged else 2


def cmd_export(args: argparse.Namespace) -> int:
    model = load_network(args.network, args.scenario)
    out = Path(args.out)
    if args.to == "tabular":
        from pipetwin.twin.io.tabular import write_tabular

        write_tabular(model, out)
    elif args.to == "geojson":
        from pipetwin.twin.io.geojson import write_geojson

        write_geojson(model, out)
    elif args.to == "inp":
        from pipetwin.twin.io.epanet_inp import write_inp

        write_inp(model, out)
    print(f"wrote={out}")
    return 0


def load_site(args: argparse.Namespace):
    """The network and its point table (the bundled one for schutterwald), or (None, None) after
    printing an error that names the file and the row."""
    from pipetwin.connectors.points import PointTableError, load_points
    from pipetwin.data import example

    model = load_network(args.network)
    points_path = args.points or (example("schutterwald") / "points.csv" if args.network == "schutterwald" else None)
    if points_path is None:
        raise SystemExit("error: --points POINTS is needed for a network other than the bundled schutterwald")
    try:
        return model, load_points(points_path, model)
    except PointTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, None


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipetwin.connectors.simulator import ScenarioError, load_scenario
    from pipetwin.connectors.simulator_run import simulate

    model, points = load_site(args)
    if model is None:
        return 1
    try:
        scenario = load_scenario(args.scenario, model, points)
        if args.start:
            scenario.start = _start_time(args.start)
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    speed = float("inf") if args.speed in ("max", "inf") else float(args.speed)
    kafka = None
    if args.kafka:
        from pipetwin.connectors.kafka import bootstrap_servers, check_topic
        from pipetwin.connectors.simulator_run import KafkaTarget

        try:
            kafka = KafkaTarget(",".join(bootstrap_servers(args.kafka)), check_topic(args.kafka_topic),
                                args.kafka_partitions, args.kafka_zones)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    stats = simulate(model, points, scenario, duration_s=args.duration, step_s=args.step, speed=speed,
                     seed=args.seed, opcua_port=None if args.no_opcua else args.opcua_port,
                     modbus_port=None if args.no_modbus else args.modbus_port, meter_dir=args.meter_dir,
                     redis_url=args.redis_url, progress=not args.quiet, kafka=kafka)
    print(f"steps={stats.steps}")
    print(f"sim_seconds={stats.sim_seconds:.0f}")
    print(f"wall_seconds={stats.wall_seconds:.1f}")
    print(f"meter_files={stats.meter_files}")
    print(f"meter_reads={stats.meter_reads}")
    print(f"outages={stats.outages}")
    print(f"not_converged={stats.not_converged}")
    if kafka is not None:
        print(f"kafka_batches={stats.kafka_batches}")
        print(f"kafka_rows={stats.kafka_rows}")
    return 0


def _start_time(text: str):
    """'now' (to the second) or an ISO time (UTC unless it says otherwise)."""
    from datetime import datetime, timezone

    if text == "now":
        return datetime.now(timezone.utc).replace(microsecond=0)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def cmd_run(args: argparse.Namespace) -> int:
    from pipetwin.flows.run import RunOptions, StartupError, run

    model, points = load_site(args)
    if model is None:
        return 1
    try:
        options = RunOptions(duration_s=args.duration, redis_url=args.redis_url, historian=args.historian,
                             opcua_port=args.opcua_port, modbus_port=args.modbus_port,
                             simulator=not args.no_simulator, scenario=args.scenario, progress=not args.quiet,
                             dashboard=not args.no_dashboard, dashboard_port=args.dashboard_port,
                             dashboard_args=tile_args(args),
                             kafka=args.kafka or None, kafka_topics=tuple(args.kafka_topic or ["pipetwin.readings"]),
                             kafka_partitions=args.kafka_partitions, kafka_zones=args.kafka_zones,
                             kafka_from_start=args.kafka_from_start, workers=args.workers,
                             addresses=tuple((args.addresses or "").split(";")), process_id=args.process_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = run(model, points, options)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key in ("ts_ns", "converged", "sensors_reporting", "min_pressure_pa", "inflow_kg_s", "chi2", "solve_ms",
                "kafka_errors"):
        if key in summary:
            print(f"{key}={summary[key]}")
    return 0


def _kafka_arguments(p: argparse.ArgumentParser, reads: bool, kafka_help: str | None = None,
                     required: bool = False) -> None:
    """--kafka options: ``run`` reads readings from the topics, ``simulate`` and ``publish`` publish
    them there."""
    g = p.add_argument_group("Kafka (readings in topics partitioned by zone; docs/deployment.md)")
    g.add_argument("--kafka", metavar="BOOTSTRAP", required=required,
                   help=kafka_help or (("read the readings from Kafka at host:port[,host:port] instead of the field's "
                                        "servers (the bundled simulator publishes there)") if reads else
                                       "also publish every reading to Kafka at host:port[,host:port], keyed by zone"))
    if reads:
        p.add_argument("--workers", type=int, default=1,
                       help="bytewax workers in this process (Kafka partitions are shared among them)")
        p.add_argument("--addresses", metavar="HOST:PORT;HOST:PORT",
                       help="run as one process of a bytewax cluster: every process's address, the same list "
                            "on each (needs --kafka and --redis-url; the simulator, wall and ledger run on process 0)")
        p.add_argument("--process-id", type=int, default=None, help="this process's index in --addresses")
        g.add_argument("--kafka-topic", action="append", metavar="TOPIC",
                       help="topic to read (repeat for several; default pipetwin.readings)")
        g.add_argument("--kafka-from-start", action="store_true",
                       help="read the topics from their start (default: what arrives from now on)")
    else:
        g.add_argument("--kafka-topic", default="pipetwin.readings", metavar="TOPIC")
    g.add_argument("--kafka-partitions", type=int, default=8, help="partitions of a topic that has to be made")
    g.add_argument("--kafka-zones", type=int, default=4, help="zones the points are keyed by (k-means)")


def cmd_publish(args: argparse.Namespace) -> int:
    from pipetwin.flows.publish import publish
    from pipetwin.flows.run import RunOptions

    model, points = load_site(args)
    if model is None:
        return 1
    try:
        options = RunOptions(duration_s=args.duration, opcua_port=args.opcua_port, modbus_port=args.modbus_port,
                             meter_inbox=args.meter_dir, simulator=False, kafka=args.kafka,
                             kafka_topics=(args.kafka_topic,), kafka_partitions=args.kafka_partitions,
                             kafka_zones=args.kafka_zones)
        stats = publish(model, points, options)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key in ("rows", "messages", "delivered", "failed"):
        print(f"{key}={getattr(stats, key)}")
    return 0 if stats.failed == 0 else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    from pipetwin.flows.subscribers.tail import acknowledge, clear, tail
    from pipetwin.flows.subscribers.webhook import run_webhook

    if args.action == "tail":
        try:
            tail(args.redis_url, args.network, group=args.group or "tail", from_start=args.from_start)
        except KeyboardInterrupt:
            pass
        return 0
    if args.action in ("ack", "clear"):
        if not args.target:
            raise SystemExit(f"error: pipetwin alerts {args.action} needs an alert id")
        fn = acknowledge if args.action == "ack" else clear
        try:
            alert = fn(args.redis_url, args.network, args.target, by=args.by)
        except (KeyError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"alert={alert.id}")
        print(f"status={alert.status}")
        print(f"revision={alert.revision}")
        return 0
    if not args.target:
        raise SystemExit("error: pipetwin alerts webhook needs the target URL")
    try:
        stats = run_webhook(args.redis_url, args.network, args.target, group=args.group or "webhook")
    except KeyboardInterrupt:
        return 0
    print(f"delivered={stats.delivered}")
    print(f"retried={stats.retried}")
    print(f"dead={stats.dead}")
    return 0


BENCH_MODULES = {"nab": "pipetwin.bench.nab", "leaks": "pipetwin.bench.leaks", "meters": "pipetwin.bench.meters",
                 "forecast": "pipetwin.bench.forecast"}


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what in BENCH_MODULES:
        import importlib

        return int(importlib.import_module(BENCH_MODULES[args.what]).main(args.rest) or 0)
    opts = argparse.ArgumentParser(prog=f"pipetwin bench {args.what}")
    opts.add_argument("--quick", action="store_true", help="fewer repetitions, skip the 100k-node case")
    opts.add_argument("--shared", default=None, help="path of the shared benchmarks folder")
    if args.what == "flow":
        opts.add_argument("--only", choices=["throughput", "ticks", "latency"], help="one part of the benchmark")
    o = opts.parse_args(args.rest)
    if args.what == "solver":
        from pipetwin.bench.solver import main as bench_solver

        return bench_solver(quick=o.quick, shared=o.shared)
    if args.what == "flow":
        from pipetwin.bench.flow import main as bench_flow

        return bench_flow(quick=o.quick, shared=o.shared, only=o.only)
    raise SystemExit(f"unknown benchmark {args.what!r}")


def cmd_isolate(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from pipetwin.twin.isolation import plan_isolation

    model = load_network(args.network)
    try:
        plan = plan_isolation(model, args.pipe_id, repair_hours=args.repair_hours,
                              min_pressure_gauge_pa=args.min_pressure, solve=not args.no_solve)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    console = Console(stderr=True)
    table = Table(title=f"{model.name}: isolating {plan.pipe} ({plan.convention})")
    table.add_column("figure")
    table.add_column("value")

    def some(items: list[str], k: int = 8) -> str:
        return ", ".join(items[:k]) + (f" ... (+{len(items) - k})" if len(items) > k else "") if items else "-"

    table.add_row("convention", plan.note)
    table.add_row("valves to close", some(plan.valves_to_close))
    table.add_row("of which feeding", some(plan.valves_feeding))
    table.add_row("already closed", some(plan.valves_already_closed))
    if plan.squeeze_points:
        table.add_row("squeeze-off at", some(plan.squeeze_points))
    table.add_row("section", f"{len(plan.section_links)} links, {len(plan.section_nodes)} nodes, "
                             f"{plan.section_length_m:,.1f} m")
    table.add_row("sources shut in", some(plan.sources_shut_in))
    table.add_row("customers cut off directly", f"{len(plan.customers_direct)}: {some(plan.customers_direct)}")
    table.add_row("customers unsupplied downstream",
                  f"{len(plan.customers_downstream)}: {some(plan.customers_downstream)}")
    table.add_row("supply lost", f"{plan.supply_lost:.6g} {plan.supply_unit.replace('_', '/')}")
    table.add_row("duration impact", f"{plan.customer_hours:,.1f} customer-hours over {plan.repair_hours:g} h, "
                                     f"{plan.undelivered:,.4g} {plan.undelivered_unit} not delivered")
    if plan.pressure is not None:
        pc = plan.pressure
        table.add_row("re-solve", f"converged={pc.converged} ({pc.message})")
        if pc.lowest_node is not None:
            table.add_row("lowest pressure", f"{pc.lowest_gauge_pa:,.1f} Pa gauge at {pc.lowest_node}")
        table.add_row(f"below {pc.min_pressure_gauge_pa:,.0f} Pa gauge",
                      f"{len(pc.below_min)} ({len(pc.newly_below_min)} new): {some(pc.below_min)}")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(plan.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {args.json}")
    for key, value in plan.figures().items():
        print(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from pipetwin.flows.audit.ledger import Ledger, LedgerError, verify

    if args.action == "verify":
        result = verify(args.ledger, historian=args.historian, expect_head=args.expect_head)
        for problem in result.file_problems:
            print(f"problem: {problem}", file=sys.stderr)
        if result.problem:
            print(f"error: {args.ledger}: {result.problem}", file=sys.stderr)
        for key, value in result.figures().items():
            print(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
        return 0 if result.ok else 1
    if args.action == "record":
        from pipetwin.flows.subscribers.audit import record

        if not args.redis_url:
            raise SystemExit("error: pipetwin audit record needs --redis-url (the Redis `pipetwin run` printed)")
        try:
            n = record(args.redis_url, args.network, args.ledger, historian=args.historian)
        except KeyboardInterrupt:
            n = None
        if n is not None:
            print(f"recorded={n}")
        print(f"head={Ledger(args.ledger).head()}")
        return 0
    ledger = Ledger(args.ledger)
    try:
        if args.action == "anchor":
            if not args.historian:
                raise SystemExit("error: pipetwin audit anchor needs LEDGER HISTORIAN")
            entry = ledger.anchor(args.historian)
            print(f"seq={entry['seq']}")
            print(f"new_files={len(entry['payload']['files'])}")
            print(f"changed_files={len(entry['payload']['changed'])}")
            print(f"file_count={entry['payload']['file_count']}")
            print(f"digest={entry['payload']['digest']}")
        else:
            removed = ledger.prune(retention_days=args.retention_days, signed_off_by=args.by, archive=args.archive)
            print(f"pruned={removed}")
        print(f"head={ledger.head()}")
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pipetwin.flows.studies.run import default_processes, run_study
    from pipetwin.flows.studies.study import StudyError, load_study

    try:
        study = load_study(args.study)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out or f"whatif-{Path(args.study).stem}")
    processes = args.processes or default_processes()
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=args.quiet) as progress:
        stages = progress.add_task("study", total=4)
        variants = progress.add_task("variants", total=len(study.variants))
        outcome = run_study(study, out, processes=processes,
                            stage=lambda s: progress.update(stages, description=s, advance=1),
                            variant_done=lambda r: progress.update(variants, advance=1,
                                                                   description=f"variant {r.name} done"))
    meta = outcome.meta
    print(f"study={meta['study']}")
    print(f"out={out.resolve()}")
    print(f"variants={len(outcome.results)}")
    print(f"ticks={meta['ticks']}")
    print(f"processes={processes}")
    print(f"baseline_replay_s={meta['timing_s']['baseline_replay']:.2f}")
    print(f"variants_wall_s={meta['timing_s']['variants_wall']:.2f}")
    for r in outcome.results:
        print(f"seconds_per_variant[{r.name}]={r.seconds:.2f}")
    for row in outcome.tables["variants"].to_pylist():
        name = row["variant"]
        print(f"min_pressure_pa[{name}]={row['min_pressure_pa']:.1f}")
        print(f"customer_hours_below_min[{name}]={row['customer_hours_below_min']:.2f}")
        print(f"customer_hours_unsupplied[{name}]={row['customer_hours_unsupplied']:.2f}")
        print(f"gas_lost_kg[{name}]={row['gas_lost_kg']:.3f}")
        print(f"methane_released_kg[{name}]={row['methane_released_kg']:.3f}")
    print(f"report={(out / 'report.html').resolve()}")
    record_in_ledger(args.ledger, "study", {"study": meta["study"], "out": str(out.resolve()),
                                            "variants": outcome.tables["variants"].to_pylist(),
                                            "files": {p.name: file_sha256(p) for p in sorted(out.glob("*.*"))
                                                      if p.is_file()}})
    return 0


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_in_ledger(ledger: str | None, kind: str, payload: dict) -> None:
    """Study results and reports go into the audit ledger with their files' hashes, so a figure
    handed to a regulator can be traced and checked later (docs/audit.md)."""
    if not ledger:
        return
    from pipetwin.flows.audit.ledger import Ledger

    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    entry = Ledger(ledger).append(kind, payload)
    print(f"ledger_seq={entry['seq']}")


def add_tile_options(p: argparse.ArgumentParser) -> None:
    """Map tiles under the wall's network (docs/dashboard.md "Map tiles"); none by default."""
    p.add_argument("--tiles", default=None, metavar="URL_TEMPLATE",
                   help="XYZ raster tiles under the map, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png "
                        "(default: a plain background, no tile requests)")
    p.add_argument("--tiles-attribution", default="", help="the tiles' credit line, shown on the map")
    p.add_argument("--tiles-max-zoom", type=int, default=19, help="the deepest zoom the tile server has")
    p.add_argument("--crs", default=None, metavar="EPSG:NNNN",
                   help="CRS of the network's coordinates (default: the crs of its network.json)")


def tile_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The tile options as `pipetwin dashboard` arguments (`pipetwin run` starts it)."""
    if not args.tiles:
        return ()
    out = ("--tiles", args.tiles, "--tiles-attribution", args.tiles_attribution,
           "--tiles-max-zoom", str(args.tiles_max_zoom))
    return out + (("--crs", args.crs) if args.crs else ())


def cmd_dashboard(args: argparse.Namespace) -> int:
    import logging

    from pipetwin.dashboards.serve import WallServer

    from pipetwin.dashboards.tiles import Tiles, TilesError

    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request is noise on a wall
    try:
        tiles = Tiles(args.tiles, args.tiles_attribution, args.crs, args.tiles_max_zoom) if args.tiles else None
        server = WallServer(args.redis_url, args.network, args.historian, host=args.host, port=args.port,
                            poll_ms=args.poll_ms, studies_dir=args.studies, reports_dir=args.reports,
                            network_file=args.network_file, tiles=tiles)
    except TilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_carbon(args: argparse.Namespace) -> int:
    from pipetwin.flows.reports_carbon import build_report, load_classes, load_factors, parse_time, write_report

    try:
        factors = load_factors(args.factors) if args.factors else None
        classes = load_classes(args.classes) if args.classes else None
        report = build_report(args.historian, args.period, factors, network=args.network,
                              start_ns=parse_time(args.start), end_ns=parse_time(args.end), classes=classes)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outputs = write_report(report, args.out)
    print(f"period={args.period}")
    print(f"rows={len(report.summary)}")
    print(f"historian_files={len(report.sources)}")
    for key, value in report.totals().items():
        print(f"{key}={value:.6g}")
    print(f"factors_version={report.factors.version}")
    print(f"report={(Path(args.out) / f'carbon_{args.period}.html').resolve()}")
    print(f"outputs={len(outputs)}")
    record_in_ledger(args.ledger, "report", report.ledger_payload())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipetwin", description="pipetwin: a digital twin of a gas or water network.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve a network's steady state and print a summary",
                       description="Solve a network's steady state (gas or water) and print a summary. "
                                   "NETWORK is an EPANET .inp, a GasLib .net, a tabular folder "
                                   "(network.json + nodes.csv + pipes.csv) or a bundled example: "
                                   "schutterwald, net1, net3.")
    p.add_argument("network", nargs="?", default="schutterwald")
    p.add_argument("--out", help="folder for node_pressure.csv and pipe_flow.csv")
    p.add_argument("--scenario", help="GasLib nomination (.scn) for a .net network")
    p.add_argument("--time", type=float, default=0.0, help="water: simulation time in seconds (patterns)")
    p.add_argument("--friction", help="gas friction law (colebrook, nikuradse, swamee-jain, weymouth, "
                                      "panhandle-a, panhandle-b); default: the network's own")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("export", help="write a network in another format",
                       description="Write a network as tabular CSV, GeoJSON or EPANET .inp.")
    p.add_argument("network")
    p.add_argument("out")
    p.add_argument("--to", choices=["tabular", "geojson", "inp"], required=True)
    p.add_argument("--scenario", help="GasLib nomination (.scn) for a .net network")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="the main job: simulator, embedded Redis and the flow, live figures",
                       description="Run the twin. With no arguments: the bundled field simulator (real OPC-UA "
                                   "and Modbus servers on loopback), an embedded Redis and the flow (quality gate, "
                                   "ticks, state estimation, detectors, alerts) writing to Redis and a Parquet "
                                   "historian, and the monitoring wall. Prints the Redis URL, the servers' endpoints and the wall's "
                                   "http://127.0.0.1:PORT on lines of their own.")
    p.add_argument("network", nargs="?", default="schutterwald")
    p.add_argument("--points", help="point table (YAML or CSV); default: the bundled one for schutterwald")
    p.add_argument("--scenario", help="simulator scenario YAML (leaks, valve closures, sensor faults, outages, meter faults)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--redis-url", help="use this Redis instead of the embedded one")
    p.add_argument("--historian", default="pipetwin-data/historian", help="Parquet historian folder")
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--no-simulator", action="store_true", help="read servers that are already running")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the monitoring wall")
    p.add_argument("--dashboard-port", type=int, default=8050, help="the wall's port (taken: a free one)")
    add_tile_options(p)
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    _kafka_arguments(p, reads=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("alerts", help="follow, acknowledge or clear alerts; forward them to a webhook",
                       description="tail: print alerts as they open, update and clear (a consumer group: "
                                   "at-least-once, acknowledged after printing). ack/clear ALERT_ID: an operator "
                                   "action, recorded as a new revision. webhook URL: POST every alert as JSON, "
                                   "with retries and a dead-letter stream.")
    p.add_argument("action", choices=["tail", "ack", "clear", "webhook"])
    p.add_argument("target", nargs="?", help="the alert id (ack, clear) or the URL (webhook)")
    p.add_argument("--redis-url", required=True, help="the Redis that `pipetwin run` printed")
    p.add_argument("--network", default="schutterwald")
    p.add_argument("--group", default=None, help="consumer group (default: tail / webhook)")
    p.add_argument("--from-start", action="store_true", help="tail: replay the stream from its start")
    p.add_argument("--by", default="operator", help="ack/clear: who acts")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("publish", help="edge gateway: read the field and publish its readings to Kafka by zone",
                       description="Read the field as `pipetwin run` does (OPC-UA subscription, Modbus polls, "
                                   "meter export files) and publish every Reading batch to a Kafka topic keyed by "
                                   "zone, for flows on other machines (`pipetwin run --kafka`). Prints rows, "
                                   "messages, delivered and failed at the end; exits 1 if a delivery failed.")
    p.add_argument("network", nargs="?", default="schutterwald")
    p.add_argument("--points", help="point table (YAML or CSV); default: the bundled one for schutterwald")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--meter-dir", default="pipetwin-data/meter-inbox", help="folder of meter export files")
    _kafka_arguments(p, reads=False, required=True,
                     kafka_help="publish to Kafka at host:port[,host:port], keyed by zone")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("simulate", help="run the field simulator: OPC-UA and Modbus servers, meter files",
                       description="A live gas network for demos, tests and what-if: solves the network every "
                                   "step with daily demand profiles and noise, serves the SCADA points from a "
                                   "real OPC-UA server and a real Modbus TCP server, and writes smart-meter "
                                   "interval files. Prints its endpoints on lines of their own.")
    p.add_argument("network", nargs="?", default="schutterwald")
    p.add_argument("--points", help="point table (YAML or CSV); default: the bundled one for schutterwald")
    p.add_argument("--scenario", help="scenario YAML: leaks, valve closures, sensor faults, outages, meter faults")
    p.add_argument("--duration", type=float, default=None, help="simulated seconds (default: until Ctrl-C)")
    p.add_argument("--step", type=float, default=1.0, help="seconds per step (default 1)")
    p.add_argument("--speed", default="1", help="times real time, or 'max' (default 1)")
    p.add_argument("--start", help="the field's clock at the first step: 'now' (a live field, as a flow on "
                                   "another machine expects) or an ISO time; default the scenario's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--no-opcua", action="store_true")
    p.add_argument("--no-modbus", action="store_true")
    p.add_argument("--meter-dir", help="folder for hourly meter export files (Parquet)")
    p.add_argument("--redis-url", help="also push meter reads to a Redis Stream at this URL")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    _kafka_arguments(p, reads=False)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("dashboard", help="serve the monitoring wall and alert console (reads Redis)",
                       description="The monitoring wall (network map, headline figures, open alerts, the last "
                                   "hour), the alert console (filters, evidence, acknowledge/clear), drill-down "
                                   "and data quality, on live Redis state. Prints its http://127.0.0.1:PORT URL "
                                   "on a line of its own. `pipetwin run` starts it too.")
    p.add_argument("--redis-url", required=True, help="the Redis that `pipetwin run` printed")
    p.add_argument("--network", default="schutterwald")
    p.add_argument("--historian", default=None, help="Parquet historian folder (drill-down, data quality)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050, help="0: a free port")
    p.add_argument("--poll-ms", type=int, default=500, help="how often the wall asks Redis for a new tick")
    p.add_argument("--studies", default=None, help="folder of `pipetwin whatif --out` folders (the what-if page)")
    p.add_argument("--reports", default=None, help="folder of `pipetwin carbon --out` folders (the carbon page)")
    p.add_argument("--network-file", default=None,
                   help="network file, folder or bundled example the isolation page plans on (e.g. schutterwald)")
    add_tile_options(p)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("bench", help="run a benchmark and print key=value figures",
                       description="Benchmarks: 'solver' times pipetwin against EPANET (through wntr) and "
                                   "pandapipes in one process; 'flow' measures readings/s through the gate, ticks "
                                   "and historian, the twin's tick cost, and end-to-end latency to Redis; 'nab' "
                                   "scores the anomaly detector on the Numenta Anomaly Benchmark; 'leaks' runs "
                                   "leak detection and localization over a scenario set. See `pipetwin bench WHAT "
                                   "--help` for nab and leaks.")
    p.add_argument("what", choices=["solver", "flow", *BENCH_MODULES])
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="the benchmark's own options (solver, flow: --quick, --shared DIR)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("isolate", help="isolation plan for a burst or planned work on a pipe",
                       description="Find the isolation valves to close around PIPE_ID (its valve segment), the "
                                   "isolated section, the customers cut off directly and downstream, the supply "
                                   "lost and customer-hours, and re-solve the rest of the network against a "
                                   "minimum service pressure. A network without isolation valves is squeezed "
                                   "off at the pipe's ends (the section is the pipe itself).")
    p.add_argument("network")
    p.add_argument("pipe_id")
    p.add_argument("--repair-hours", type=float, default=8.0, help="outage per customer, hours (default 8)")
    p.add_argument("--min-pressure", type=float, default=None,
                   help="minimum service pressure, Pa gauge (default 2000 gas, 196133 = 20 m water)")
    p.add_argument("--no-solve", action="store_true", help="graph analysis only, no pressure check")
    p.add_argument("--json", help="write the whole plan as JSON here")
    p.set_defaults(func=cmd_isolate)

    p = sub.add_parser("audit", help="verify, anchor or prune the tamper-evident audit ledger",
                       description="verify LEDGER [HISTORIAN]: check the hash chain (any edited, removed, "
                                   "inserted or reordered entry is named by line) and every anchored historian "
                                   "file. anchor LEDGER HISTORIAN: record the hashes of the historian's Parquet "
                                   "files. prune LEDGER --by NAME: drop entries past the retention period behind "
                                   "a signed-off checkpoint. record LEDGER [HISTORIAN] --redis-url URL: follow "
                                   "the alerts stream (consumer group 'audit') and append every alert revision "
                                   "and operator action, anchoring the historian hourly (`pipetwin run` does this "
                                   "itself). docs/audit.md has the format.")
    p.add_argument("action", choices=["verify", "anchor", "prune", "record"])
    p.add_argument("ledger")
    p.add_argument("historian", nargs="?", help="historian folder (anchor; verify checks its files too)")
    p.add_argument("--expect-head", help="verify: a head hash published earlier must still be in the chain")
    p.add_argument("--retention-days", type=float, default=1827.0, help="prune: keep this many days (default 5 y)")
    p.add_argument("--by", default="", help="prune: who signs the pruning off (required)")
    p.add_argument("--archive", help="prune: append the removed lines to this file")
    p.add_argument("--redis-url", help="record: the Redis that `pipetwin run` printed")
    p.add_argument("--network", default="schutterwald", help="record: whose alerts")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("carbon", help="methane and CO2 report from the historian (CSV and HTML)",
                       description="Methane released (leak and vent alerts) and CO2 from combustion of delivered "
                                   "gas (the twin's consumption per zone, meter reads per customer class), by day, "
                                   "week, month or year, with the factors stated and every figure traced to the "
                                   "historian files it came from. docs/carbon.md has the method.")
    p.add_argument("historian")
    p.add_argument("--period", choices=["day", "week", "month", "year"], default="month")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--factors", help="factor table YAML (default: the bundled IPCC factors, typical H-gas)")
    p.add_argument("--classes", help="CSV point,class: customer class of each meter point")
    p.add_argument("--network", help="one network (zone) only")
    p.add_argument("--start", help="first instant, ISO UTC (inclusive)")
    p.add_argument("--end", help="last instant, ISO UTC (exclusive)")
    p.add_argument("--ledger", default="pipetwin-data/audit/ledger.jsonl",
                   help="audit ledger to record the result in (default: the one `pipetwin run` keeps; '' for none)")
    p.set_defaults(func=cmd_carbon)

    p = sub.add_parser("whatif", help="replay a day through the flow for each variant of a study and compare",
                       description="Run a what-if study (YAML, see docs/whatif.md and examples/whatif-*.yaml): "
                                   "the history is replayed through the flow once to estimate demands, then every "
                                   "variant re-solves them on its changed network. Writes Parquet/CSV tables, "
                                   "study.json and a self-contained report.html to --out.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--out", help="output folder (default: whatif-<study file name>)")
    p.add_argument("--processes", type=int, default=None, help="worker processes for the variants "
                                                               "(default: the cores, at most 8; 1: in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--ledger", default="pipetwin-data/audit/ledger.jsonl",
                   help="audit ledger to record the result in (default: the one `pipetwin run` keeps; '' for none)")
    p.set_defaults(func=cmd_whatif)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NetworkFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
