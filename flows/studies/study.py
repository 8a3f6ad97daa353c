"""The study file: which history to replay, on which network, and which variants to compare.

A study is YAML (docs/whatif.md has the full reference and examples/whatif-*.yaml run as is)::

    name: cold day
    network: schutterwald                 # bundled name, or a path relative to this file
    history:
      simulate: {seconds: 14400, step_s: 300, seed: 1}     # or one of:
      # historian: ../pipetwin-data/historian, date: 2026-01-15
      # readings: ../shared/benchmarks/leaks/public/s03/readings.parquet   (sensors.csv beside it)
    tick_s: 300
    zones: 4
    min_service_pressure_mbar_gauge: 950
    baseline: []
    scenarios:
      cold-day:
        description: a cold day, every customer 20 % up
        changes:
          - {kind: scale_demand, percent: 20}

Loading checks everything against the network before any replay starts, and every error names
the file, the scenario and the change (``StudyError``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from pipetwin.connectors.points import PointTable
from pipetwin.twin.carbon import FactorTable, factor_table_from_dict
from pipetwin.twin.changes import KINDS, Change, ChangeError, check_change
from pipetwin.twin.estimate.demand import make_zones
from pipetwin.twin.model import NetworkModel, NodeKind

ATMOSPHERE_PA = 101325.0              # gauge to absolute, as the point tables convert
SIMULATION_START = datetime(2026, 1, 15, tzinfo=timezone.utc)
TOP_KEYS = {"name", "description", "network", "points", "history", "tick_s", "zones", "max_age_s",
            "min_service_pressure_pa", "min_service_pressure_mbar_gauge", "factors", "classes", "baseline", "scenarios"}
CHANGE_KEYS = {"kind", "at", "until", "link", "pipe", "valve", "node", "nodes", "zone", "class", "factor", "percent",
               "flow_kg_s", "pressure_pa", "pressure_mbar_gauge", "id", "from", "to", "length_m", "diameter_m",
               "roughness_m"}
DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*min)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


class StudyError(ValueError):
    """A study file that cannot be run: names the file, the scenario and the change at fault."""


@dataclass
class HistorySpec:
    """Where the recorded day comes from: ``simulate`` (the bundled field simulator), ``historian``
    (one UTC day of a Parquet historian) or ``readings`` (a benchmark-style readings.parquet)."""

    kind: str
    path: Path | None = None
    day: date | None = None
    network: str = ""
    sensors: Path | None = None
    seconds: float = 0.0
    step_s: float = 0.0
    seed: int = 0
    start: datetime = SIMULATION_START


@dataclass
class Variant:
    name: str
    changes: list[Change]
    description: str = ""


@dataclass
class Study:
    name: str
    path: Path
    model: NetworkModel
    points_path: Path | None
    history: HistorySpec
    tick_s: float
    n_zones: int
    zones: np.ndarray                  # per node, -1 outside any zone (the flow's own zoning)
    min_service_pa: float              # absolute
    factors: FactorTable               # gas composition and GWP (pipetwin.twin.carbon)
    variants: list[Variant]            # the baseline first
    max_age_s: float
    description: str = ""
    classes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def customers(self) -> np.ndarray:
        return customers_of(self.model)


def customers_of(model: NetworkModel) -> np.ndarray:
    """Nodes that are customers: consumers, or any non-source node with a withdrawal."""
    return ((model.nodes.kind == NodeKind.CONSUMER) | (model.base_demand() > 0)) & (model.nodes.kind != NodeKind.SOURCE)


def parse_time(value, start: datetime, where: str) -> float:
    """Seconds from ``start``: a number (seconds), a duration ("2h", "90min", "1h30min", "45s") or an
    ISO time (UTC if it names no zone)."""
    if isinstance(value, bool):
        raise StudyError(f"{where}: time {value!r} is neither seconds, a duration nor an ISO time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        t = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return (t - start).total_seconds()
    text = str(value)
    m = DURATION.match(text)
    if m and any(m.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return 3600.0 * h + 60.0 * mi + s
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StudyError(f"{where}: time {value!r} is neither seconds, a duration (2h, 90min) "
                         "nor an ISO time") from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return (t - start).total_seconds()


def _number(doc: dict, key: str, where: str, default=None, positive: bool = True) -> float:
    v = doc.get(key, default)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise StudyError(f"{where}: {key} {v!r} is not a number") from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise StudyError(f"{where}: {key} {v!r} must be a positive number")
    return x


def _pressure(doc: dict, where: str) -> float:
    """An absolute pressure from ``pressure_pa`` or ``pressure_mbar_gauge``."""
    if ("pressure_pa" in doc) == ("pressure_mbar_gauge" in doc):
        raise StudyError(f"{where}: give one of pressure_pa (absolute) or pressure_mbar_gauge")
    if "pressure_pa" in doc:
        return _number(doc, "pressure_pa", where)
    return ATMOSPHERE_PA + 100.0 * _number(doc, "pressure_mbar_gauge", where, positive=False)


def _load_history(doc, base: Path, where: str) -> HistorySpec:
    if not isinstance(doc, dict):
        raise StudyError(f"{where}: history must be a mapping with simulate:, historian: or readings:")
    given = [k for k in ("simulate", "historian", "readings") if k in doc]
    if len(given) != 1:
        raise StudyError(f"{where}: history needs exactly one of simulate:, historian: or readings: (got {given})")
    kind = given[0]
    if kind == "simulate":
        sim = doc["simulate"] or {}
        if not isinstance(sim, dict):
            raise StudyError(f"{where}: history.simulate must be a mapping {{seconds, step_s, seed}}")
        unknown = set(sim) - {"seconds", "step_s", "seed", "start"}
        if unknown:
            raise StudyError(f"{where}: history.simulate: unknown key(s) {sorted(unknown)}")
        start = (parse_time(sim["start"], SIMULATION_START, f"{where}: history.simulate.start")
                 if "start" in sim else 0.0)
        seed = sim.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StudyError(f"{where}: history.simulate.seed {seed!r} must be an integer")
        return HistorySpec("simulate", seconds=_number(sim, "seconds", f"{where}: history.simulate", 3600),
                           step_s=_number(sim, "step_s", f"{where}: history.simulate", 60), seed=seed,
                           start=SIMULATION_START + timedelta(seconds=start))
    path = (base / str(doc[kind])).resolve()
    if not path.exists():
        raise StudyError(f"{where}: history {kind} {path} does not exist")
    if kind == "historian":
        if "date" not in doc:
            raise StudyError(f"{where}: a historian history needs date: YYYY-MM-DD (the UTC day to replay)")
        try:
            day = doc["date"] if isinstance(doc["date"], date) else date.fromisoformat(str(doc["date"]))
        except ValueError:
            raise StudyError(f"{where}: history date {doc['date']!r} is not YYYY-MM-DD") from None
        return HistorySpec("historian", path=path, day=day, network=str(doc.get("network", "")))
    sensors = (base / str(doc["sensors"])).resolve() if "sensors" in doc else path.parent / "sensors.csv"
    if not sensors.exists():
        raise StudyError(f"{where}: history sensors table {sensors} does not exist (point,element,quantity,unit)")
    return HistorySpec("readings", path=path, sensors=sensors)


def _load_classes(doc, base: Path, model: NetworkModel, where: str) -> dict[str, list[str]]:
    """Customer classes: a mapping class -> node ids, or a CSV file with columns node,class."""
    if doc is None:
        return {}
    if isinstance(doc, str):
        import csv

        path = (base / doc).resolve()
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise StudyError(f"{where}: classes file {path}: {exc}") from None
        out: dict[str, list[str]] = {}
        for n, r in enumerate(rows, start=2):
            if not r.get("node") or not r.get("class"):
                raise StudyError(f"{path}, line {n}: columns node and class must both be set")
            out.setdefault(r["class"], []).append(r["node"])
    elif isinstance(doc, dict):
        out = {str(k): [str(x) for x in (v or [])] for k, v in doc.items()}
    else:
        raise StudyError(f"{where}: classes must be a mapping class -> [node ids] or a CSV file (node,class)")
    index = model.node_index()
    for name, ids in out.items():
        missing = [i for i in ids if i not in index]
        if missing:
            raise StudyError(f"{where}: class {name!r}: node {missing[0]!r} is not in network {model.name!r}")
    return out


def _change(doc, model: NetworkModel, zones: np.ndarray, classes: dict, start: datetime, where: str) -> Change:
    if not isinstance(doc, dict):
        raise StudyError(f"{where}: a change is a mapping with kind: and its fields")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise StudyError(f"{where}: kind {kind!r} is not one of {KINDS}")
    where = f"{where} ({kind})"
    unknown = set(doc) - CHANGE_KEYS
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {sorted(unknown)}")
    at = parse_time(doc.get("at", 0), start, where)
    until = parse_time(doc["until"], start, where) if doc.get("until") is not None else math.inf
    link = str(doc.get("link", doc.get("pipe", doc.get("valve", ""))))
    fields: dict = {"kind": kind, "at_s": at, "until_s": until}
    if kind in ("close", "open", "cut_pipe"):
        fields["link"] = link
    elif kind == "setpoint":
        fields.update(link=link, pressure_pa=_pressure(doc, where))
    elif kind == "source_pressure":
        fields.update(node=str(doc.get("node", "")), pressure_pa=_pressure(doc, where))
    elif kind == "leak":
        fields.update(node=str(doc.get("node", "")), flow_kg_s=_number(doc, "flow_kg_s", where, default=None))
    elif kind == "scale_demand":
        if ("factor" in doc) == ("percent" in doc):
            raise StudyError(f"{where}: give one of factor (1.2) or percent (+20)")
        factor = (_number(doc, "factor", where, positive=False) if "factor" in doc
                  else 1.0 + _number(doc, "percent", where, positive=False) / 100.0)
        chosen = [k for k in ("zone", "nodes", "class") if k in doc]
        if len(chosen) > 1:
            raise StudyError(f"{where}: choose customers by one of zone, nodes or class (got {chosen})")
        nodes: tuple[str, ...] = ()
        label = "all customers"
        if chosen == ["zone"]:
            z = doc["zone"]
            n_zones = int(zones.max()) + 1
            if not isinstance(z, int) or isinstance(z, bool) or not 0 <= z < n_zones:
                raise StudyError(f"{where}: zone {z!r} must be an integer 0..{n_zones - 1}")
            nodes = tuple(model.nodes.ids[zones == z])
            label = f"zone {z}"
        elif chosen == ["nodes"]:
            if not isinstance(doc["nodes"], list) or not doc["nodes"]:
                raise StudyError(f"{where}: nodes must be a non-empty list of node ids")
            nodes = tuple(str(n) for n in doc["nodes"])
            label = f"{len(nodes)} nodes"
        elif chosen == ["class"]:
            if doc["class"] not in classes:
                raise StudyError(f"{where}: class {doc['class']!r} is not defined (classes: {sorted(classes)})")
            nodes = tuple(classes[doc["class"]])
            label = f"class {doc['class']}"
        fields.update(factor=factor, nodes=nodes, label=label)
    elif kind == "add_pipe":
        fields.update(link=str(doc.get("id", "")), from_node=str(doc.get("from", "")), to_node=str(doc.get("to", "")),
                      length_m=_number(doc, "length_m", where, default=None),
                      diameter_m=_number(doc, "diameter_m", where, default=None),
                      roughness_m=_number(doc, "roughness_m", where, default=1e-4))
    change = Change(**fields)
    try:
        check_change(model, change)
    except ChangeError as exc:
        raise StudyError(f"{where}: {exc}") from None
    return change


def _changes(doc, model, zones, classes, start, where) -> list[Change]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise StudyError(f"{where}: changes must be a list")
    return [_change(c, model, zones, classes, start, f"{where}, change {i}") for i, c in enumerate(doc, start=1)]


def load_study(path: str | Path) -> Study:
    """Read and check a study file (see the module docstring)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise StudyError(f"{path}: expected a mapping with history:, baseline: and scenarios:")
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    base = path.parent
    network = str(doc.get("network", "schutterwald"))
    try:
        model = read_network_named(network, base)
    except (OSError, ValueError) as exc:
        raise StudyError(f"{path}: network {network!r}: {exc}") from None
    if not model.is_gas:
        raise StudyError(f"{path}: network {network!r} is a water network; what-if studies measure gas networks "
                         "(line pack, methane)")
    points_path = (base / str(doc["points"])).resolve() if "points" in doc else None
    if points_path is not None and not points_path.exists():
        raise StudyError(f"{path}: points table {points_path} does not exist")
    history = _load_history(doc.get("history"), base, str(path))
    if history.kind in ("simulate", "historian") and points_path is None and model.name != "schutterwald":
        raise StudyError(f"{path}: points: is needed for network {model.name!r} (only the bundled schutterwald "
                         "has a point table of its own)")
    tick_s = _number(doc, "tick_s", str(path), 300)
    n_zones = int(_number(doc, "zones", str(path), 4))
    zones = make_zones(model, n_zones)
    if "min_service_pressure_pa" in doc and "min_service_pressure_mbar_gauge" in doc:
        raise StudyError(f"{path}: give one of min_service_pressure_pa or min_service_pressure_mbar_gauge")
    if "min_service_pressure_pa" in doc:
        min_pa = _number(doc, "min_service_pressure_pa", str(path))
    elif "min_service_pressure_mbar_gauge" in doc:
        min_pa = ATMOSPHERE_PA + 100.0 * _number(doc, "min_service_pressure_mbar_gauge", str(path), positive=False)
    else:   # as `pipetwin run` sets its pressure-limit detector: 50 mbar below the lowest source
        src = model.nodes.fixed_pressure_pa[model.nodes.kind == NodeKind.SOURCE]
        min_pa = float(np.nanmin(src)) - 5000.0
    factors = _load_factors(doc.get("factors"), base, str(path))
    classes = _load_classes(doc.get("classes"), base, model, str(path))
    start = history_start(history)
    variants = [Variant("baseline", _changes(doc.get("baseline"), model, zones, classes, start,
                                             f"{path}: baseline"), "the network as it is")]
    scenarios = doc.get("scenarios") or {}
    if not isinstance(scenarios, dict) or not scenarios:
        raise StudyError(f"{path}: scenarios must be a mapping name -> changes (at least one)")
    for name, body in scenarios.items():
        where = f"{path}: scenario {name!r}"
        if str(name) == "baseline":
            raise StudyError(f"{where}: the name 'baseline' is taken by the baseline")
        description = ""
        if isinstance(body, dict):
            extra = set(body) - {"description", "changes"}
            if extra:
                raise StudyError(f"{where}: unknown key(s) {sorted(extra)} (a scenario has description and changes)")
            description = str(body.get("description", ""))
            body = body.get("changes")
        changes = _changes(body, model, zones, classes, start, where)
        if not changes:
            raise StudyError(f"{where}: no changes")
        variants.append(Variant(str(name), changes, description))
    return Study(name=str(doc.get("name", path.stem)), path=path.resolve(), model=model, points_path=points_path,
                 history=history, tick_s=tick_s, n_zones=n_zones, zones=zones, min_service_pa=min_pa,
                 factors=factors,
                 variants=variants, max_age_s=_number(doc, "max_age_s", str(path), 2 * tick_s),
                 description=str(doc.get("description", "")), classes=classes)


def read_network_named(name: str, base: Path) -> NetworkModel:
    """A bundled example by name (schutterwald, net1, net3), else a file or folder relative to ``base``."""
    from pipetwin.data import example
    from pipetwin.twin.io import read_network

    path = base / name
    if not path.exists() and name.lower() in ("schutterwald", "net1", "net3"):
        path = example(name)
    if not path.exists():
        raise ValueError(f"no such file or folder {path}, and not a bundled example (schutterwald, net1, net3)")
    return read_network(path)


def _load_factors(value, base: Path, where: str) -> FactorTable:
    """The carbon module's factor table (composition, GWP): a YAML file, or its defaults."""
    if value is None:
        return FactorTable()
    import yaml

    path = (base / str(value)).resolve()
    try:
        return factor_table_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise StudyError(f"{where}: factors {path}: {exc}") from None


def history_start(spec: HistorySpec) -> datetime:
    """The study's time zero: the simulation start, the historian day's midnight (UTC), or the
    first timestamp of a readings file."""
    if spec.kind == "simulate":
        return spec.start
    if spec.kind == "historian":
        return datetime(spec.day.year, spec.day.month, spec.day.day, tzinfo=timezone.utc)
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ts = pq.read_table(spec.path, columns=["ts"])["ts"]
    if len(ts) == 0:
        raise StudyError(f"{spec.path}: the readings file is empty")
    first = pc.min(pc.cast(ts, pa.int64())).as_py()
    return datetime.fromtimestamp(first / 1e9, tz=timezone.utc)


def load_points_for(study: Study) -> PointTable:
    """The point table the replay reads its history with."""
    from pipetwin.connectors.points import load_points
    from pipetwin.data import example

    if study.history.kind == "readings":
        return sensors_points(study.history.sensors, study.model)
    path = study.points_path or example("schutterwald") / "points.csv"
    return load_points(path, study.model)


def sensors_points(path: Path, model: NetworkModel) -> PointTable:
    """A benchmark ``sensors.csv`` (point,element,quantity,unit; values already SI) as a point table."""
    import csv

    from pipetwin.connectors.points import QUANTITIES, points_from_columns

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    nodes, links = model.node_index(), model.link_index()
    ids, quantities, elements, index = [], [], [], []
    for n, r in enumerate(rows, start=2):
        q = (r.get("quantity") or "").lower()
        if q not in QUANTITIES:
            raise StudyError(f"{path}, line {n}: quantity {q!r} is not one of {sorted(QUANTITIES)}")
        table = nodes if QUANTITIES[q][1] else links
        if r.get("element") not in table:
            raise StudyError(f"{path}, line {n}: element {r.get('element')!r} is not in network {model.name!r}")
        ids.append(r["point"])
        quantities.append(q)
        elements.append(r["element"])
        index.append(table[r["element"]])
    points = points_from_columns(ids, quantities, period_s=3600.0)
    points.element = elements
    points.element_index = np.asarray(index, np.int64)
    points.site = path.parent.name
    return points
