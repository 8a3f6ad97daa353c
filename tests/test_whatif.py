"""What-if studies: model changes, variant re-solves, study files, and the examples end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipetwin.cli import main
from pipetwin.data import example
from pipetwin.flows.studies.compare import Context, comparison_table, variants_table
from pipetwin.flows.studies.run import run_study, run_variants
from pipetwin.flows.studies.study import StudyError, customers_of, load_study
from pipetwin.flows.studies.variant import VariantInput, run_variant
from pipetwin.twin.carbon import FactorTable
from pipetwin.twin.changes import Change, ChangeError, apply_change, demand_transform
from pipetwin.twin.io import read_network
from pipetwin.twin.model import (LinkKind, LinkStatus, Medium, NetworkModel, NodeKind, make_demands, make_links,
                                 make_nodes, make_tanks)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def two_zone_network() -> NetworkModel:
    """A source feeding zone 0 (C1, C2) directly and zone 1 (C3, C4) only through valve V."""
    ids = ["S", "J", "C1", "C2", "K", "C3", "C4"]
    kind = [NodeKind.SOURCE, NodeKind.JUNCTION, NodeKind.CONSUMER, NodeKind.CONSUMER, NodeKind.JUNCTION,
            NodeKind.CONSUMER, NodeKind.CONSUMER]
    nodes = make_nodes(ids, kind, x=np.arange(7.0), fixed_pressure_pa=[2.0e5] + [np.nan] * 6)
    links = make_links(["P1", "P2", "P3", "V", "P4", "P5"],
                       [LinkKind.PIPE, LinkKind.PIPE, LinkKind.PIPE, LinkKind.VALVE, LinkKind.PIPE, LinkKind.PIPE],
                       [0, 1, 1, 1, 4, 4], [1, 2, 3, 4, 5, 6], [200.0, 50, 50, 0, 50, 50],
                       [0.1, 0.05, 0.05, 0.1, 0.05, 0.05], [1e-4] * 6)
    return NetworkModel("two-zones", Medium.NATURAL_GAS, nodes, links,
                        make_demands([2, 3, 5, 6], [2e-3, 2e-3, 3e-3, 3e-3]), make_tanks())


def variant(model, changes, demand_factor=None, ticks=6, zones=None, min_pa=1.95e5):
    t = 300.0 * np.arange(1, ticks + 1)
    factor = np.ones(ticks) if demand_factor is None else demand_factor
    demand = np.outer(factor, model.base_demand())
    zones = np.array([-1, -1, 0, 0, -1, 1, 1]) if zones is None else zones
    return VariantInput("v", model, changes, t, demand, zones, customers_of(model), min_pa)


def test_changes_copy_and_leave_the_original_alone():
    m = two_zone_network()
    shut = apply_change(m, Change("close", link="V"))
    assert shut.links.status[3] == LinkStatus.CLOSED and m.links.status[3] == LinkStatus.OPEN
    grown = apply_change(m, Change("add_pipe", link="N1", from_node="C2", to_node="C3", length_m=30.0,
                                   diameter_m=0.05))
    assert grown.n_links == m.n_links + 1 and m.n_links == 6
    leaky = apply_change(m, Change("leak", node="K", flow_kg_s=1e-3))
    scale, leak = demand_transform(m, leaky)
    assert np.all(scale == 1.0) and leak[4] == 1e-3 and leak.sum() == 1e-3
    with pytest.raises(ChangeError, match="'Q' is not in network"):
        apply_change(m, Change("close", link="Q"))
    with pytest.raises(ChangeError, match="not a pipe"):
        apply_change(m, Change("cut_pipe", link="V"))


def test_closing_the_only_valve_feeding_a_zone_cuts_off_its_customers():
    m = two_zone_network()
    r = run_variant(variant(m, [Change("close", link="V", at_s=900.0, until_s=1500.0)]))
    # ticks end at 300..1800 s: the valve is shut for the ticks ending at 900 and 1200 s
    assert r.unsupplied[:, 1].tolist() == [0, 0, 2, 2, 0, 0]
    assert r.unsupplied[:, 0].tolist() == [0] * 6          # zone 0 keeps its supply
    assert r.unsupplied[:, -1].tolist() == [0, 0, 2, 2, 0, 0]
    assert np.all(r.converged) and r.versions == 2
    assert np.isnan(r.min_pressure_pa[2, 1]) and np.isfinite(r.min_pressure_pa[2, 0])
    assert r.node_ticks_unsupplied.tolist() == [0, 0, 0, 0, 2, 2, 2]
    ctx = Context(m.nodes.ids, m.nodes.x, m.nodes.y, np.array([-1, -1, 0, 0, -1, 1, 1]), customers_of(m), 0, 300.0,
                  1.95e5, FactorTable(), {}, {})
    table = comparison_table([r], ctx).to_pylist()
    zone1 = next(row for row in table if row["zone"] == "zone 1")
    assert zone1["customers_unsupplied"] == 2
    assert zone1["customer_hours_unsupplied"] == pytest.approx(2 * 2 * 300 / 3600)
    totals = variants_table([r], ctx).to_pylist()[0]
    assert totals["gas_not_delivered_kg"] == pytest.approx(2 * 300 * 6e-3)


def test_more_demand_lowers_the_minimum_pressure():
    model = read_network(example("schutterwald"))
    zones = np.where(customers_of(model), 0, -1)
    factor = np.linspace(0.8, 1.2, 4)
    base = run_variant(variant(model, [], factor, ticks=4, zones=zones))
    cold = run_variant(variant(model, [Change("scale_demand", factor=1.2)], factor, ticks=4, zones=zones))
    assert np.all(cold.min_pressure_pa[:, -1] < base.min_pressure_pa[:, -1] - 100.0)
    assert np.all(cold.inflow_kg_s == pytest.approx(1.2 * base.inflow_kg_s, rel=1e-6))
    assert np.all(cold.line_pack_kg < base.line_pack_kg)


def test_a_leak_is_counted_as_gas_lost_only_while_supplied():
    m = two_zone_network()
    r = run_variant(variant(m, [Change("leak", node="C3", flow_kg_s=1e-3),
                                Change("close", link="V", at_s=1200.0)]))
    assert r.leak_kg_s.tolist() == pytest.approx([1e-3, 1e-3, 1e-3, 0.0, 0.0, 0.0])


SMALL = """
name: small
network: schutterwald
history:
  simulate: {{start: 7h, seconds: 1800, step_s: 300, seed: 5}}
tick_s: 300
min_service_pressure_mbar_gauge: 950
scenarios:
  shut:
    changes:
      - {{kind: close, link: pipe_K1203_K1204_1, at: 10min}}
  {extra}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_results_are_identical_between_two_runs(tmp_path):
    study = load_study(write(tmp_path, SMALL.format(extra="hot: [{kind: scale_demand, percent: 20}]")))
    one = run_study(study, tmp_path / "one", processes=1)
    two = run_study(study, tmp_path / "two", processes=1)
    for name in ("variants", "comparison", "ticks", "zone_ticks", "nodes"):
        assert one.tables[name].equals(two.tables[name]), name
        assert pq.read_table(tmp_path / "one" / f"{name}.parquet").equals(one.tables[name])
    rows = {r["variant"]: r for r in one.tables["variants"].to_pylist()}
    assert rows["shut"]["customers_unsupplied"] == 109
    # the baseline variant re-solves the flow's estimated demands on the unchanged network: the same state
    assert one.meta["baseline_replay"]["max_abs_min_pressure_difference_pa"] < 1.0
    assert rows["hot"]["min_pressure_pa"] < rows["baseline"]["min_pressure_pa"]
    html = (tmp_path / "one" / "report.html").read_text()
    assert "plotly" in html and "<script src=\"http" not in html


def test_variants_in_worker_processes_match_one_process():
    m = two_zone_network()
    inputs = [variant(m, []), variant(m, [Change("close", link="V", at_s=900.0)]),
              variant(m, [Change("scale_demand", factor=1.3)])]
    for i, v in enumerate(inputs):
        v.name = f"v{i}"
    here = run_variants(inputs, 1)
    there = run_variants(inputs, 2)
    for a, b in zip(here, there):
        assert a.name == b.name
        for field in ("min_pressure_pa", "below_min", "unsupplied", "line_pack_kg", "node_min_pressure_pa"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("extra, message", [
    ("bad: [{kind: explode, link: pipe_K1203_K1204_1}]", "scenario 'bad', change 1: kind 'explode' is not one of"),
    ("bad: [{kind: close, link: nope}]", "scenario 'bad', change 1 (close): link 'nope' is not in network"),
    ("bad: [{kind: open, link: pipe_K1203_K1204_1}, {kind: leak, node: K1204, flow_kg_s: -1}]",
     "scenario 'bad', change 2 (leak): flow_kg_s -1 must be a positive number"),
    ("bad: [{kind: scale_demand, zone: 9, factor: 1.2}]", "scenario 'bad', change 1 (scale_demand): zone 9 must be"),
    ("bad: [{kind: scale_demand, percent: 20, factor: 1.2}]", "give one of factor (1.2) or percent"),
    ("bad: [{kind: close, link: pipe_K1203_K1204_1, at: tomorrow}]", "time 'tomorrow' is neither"),
    ("bad: [{kind: close, link: pipe_K1203_K1204_1, at: 2h, until: 1h}]", "'until' (3600 s) must come after"),
    ("bad: [{kind: setpoint, link: pipe_K1203_K1204_1, pressure_pa: 2e5}]", "only regulators"),
    ("bad: [{kind: cut_pipe, lnk: pipe_K1203_K1204_1}]", "unknown key(s) ['lnk']"),
    ("bad: [{kind: add_pipe, id: new, from: K1204, to: K1204, length_m: 5, diameter_m: 0.1}]", "to itself"),
    ("baseline: []", "the name 'baseline' is taken"),
])
def test_bad_study_files_name_the_file_scenario_and_change(tmp_path, extra, message):
    path = write(tmp_path, SMALL.format(extra=extra))
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("scenarios: {a: [{kind: close, link: x}]}", "history must be a mapping"),
    ("history: {simulate: {seconds: 60}, readings: r.parquet}\nscenarios: {}", "exactly one of"),
    ("history: {readings: missing.parquet}\nscenarios: {}", "does not exist"),
    ("history: {simulate: {}}\nscenarios: {}", "scenarios must be a mapping"),
    ("histroy: {}", "unknown key(s) ['histroy']"),
    ("- a list", "expected a mapping"),
])
def test_bad_study_structure(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(StudyError, match=None) as err:
        load_study(path)
    assert message in str(err.value)


def test_cli_reports_a_bad_study_in_one_line(tmp_path, capsys):
    path = write(tmp_path, SMALL.format(extra="bad: [{kind: close, link: nope}]"))
    assert main(["whatif", str(path), "--out", str(tmp_path / "out"), "--quiet", "--ledger", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and len(err.splitlines()) == 1


def _figures(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.slow
def test_example_cold_day_runs(tmp_path, capsys):
    assert main(["whatif", str(EXAMPLES / "whatif-cold-day.yaml"), "--out", str(tmp_path), "--quiet",
                 "--processes", "2", "--ledger", ""]) == 0
    f = _figures(capsys.readouterr().out)
    assert f["variants"] == "5" and f["ticks"] == "36"
    assert float(f["min_pressure_pa[cold-day]"]) < float(f["min_pressure_pa[baseline]"])
    assert float(f["customer_hours_below_min[cold-day]"]) > float(f["customer_hours_below_min[baseline]"])
    assert float(f["min_pressure_pa[cold-day-reinforced]"]) > float(f["min_pressure_pa[cold-day]"]) + 1000.0
    assert (tmp_path / "report.html").stat().st_size > 1_000_000     # plotly.js inlined


def test_example_valve_closure_runs(tmp_path, capsys):
    ledger = tmp_path / "audit" / "ledger.jsonl"
    assert main(["whatif", str(EXAMPLES / "whatif-valve-closure.yaml"), "--out", str(tmp_path), "--quiet",
                 "--processes", "1", "--ledger", str(ledger)]) == 0
    f = _figures(capsys.readouterr().out)
    from pipetwin.flows.audit.ledger import Ledger, verify
    entry = list(Ledger(ledger).entries())[-1]           # the study's result, with its files' hashes
    assert entry["kind"] == "study" and "study.json" in entry["payload"]["files"] and verify(ledger).ok
    assert float(f["customer_hours_unsupplied[planned-closure]"]) == pytest.approx(109.0)
    assert float(f["customer_hours_unsupplied[baseline]"]) == 0.0
    assert float(f["gas_lost_kg[burst-then-closure]"]) == pytest.approx(0.005 * 1800)
    fraction = json.loads((tmp_path / "study.json").read_text())["methane_mass_fraction"]
    assert 0.5 < fraction <= 1.0
    assert math.isclose(float(f["methane_released_kg[burst-then-closure]"]), fraction * 0.005 * 1800, abs_tol=1e-3)
    rows = {r["variant"]: r for r in pq.read_table(tmp_path / "variants.parquet").to_pylist()}
    assert rows["burst-then-closure"]["methane_released_kg"] == pytest.approx(fraction * 0.005 * 1800, rel=1e-12)


def test_a_historian_day_is_replayed(tmp_path):
    from datetime import datetime, timezone

    from pipetwin.connectors.points import load_points
    from pipetwin.flows.sinks.historian import Historian
    from pipetwin.flows.studies.history import simulate_readings

    model = read_network(example("schutterwald"))
    points = load_points(example("schutterwald") / "points.csv", model)
    start = datetime(2026, 1, 15, 7, tzinfo=timezone.utc)
    with Historian(tmp_path / "hist", network="schutterwald") as hist:
        hist.write_readings(simulate_readings(model, points, 1500.0, 300.0, 2, start))
    path = write(tmp_path, """
network: schutterwald
history: {historian: hist, date: 2026-01-15}
scenarios:
  shut: [{kind: close, link: pipe_K1203_K1204_1, at: "2026-01-15T07:10:00Z"}]
""")
    study = load_study(path)
    assert study.history.kind == "historian"
    outcome = run_study(study, tmp_path / "out", processes=1)
    ticks = outcome.tables["ticks"].to_pylist()
    assert {t["variant"] for t in ticks} == {"baseline", "shut"}
    shut = [t for t in ticks if t["variant"] == "shut"]
    # ticks end at 07:05 ... 07:25: the closure at 07:10 shows from the second tick on
    assert [t["customers_unsupplied"] for t in shut] == [0] + [109] * (len(shut) - 1)


def test_a_benchmark_readings_file_is_accepted(tmp_path):
    from tests.paths import SHARED

    readings = SHARED / "benchmarks" / "leaks" / "public" / "s03" / "readings.parquet"
    if not readings.exists():
        pytest.skip(f"benchmark data {readings} not found")
    path = write(tmp_path, f"""
network: schutterwald
history: {{readings: {readings}}}
scenarios:
  leak: [{{kind: leak, node: K1204, flow_kg_s: 0.001, at: "2026-01-01T00:00:00Z"}}]
""")
    study = load_study(path)
    from pipetwin.flows.studies.study import load_points_for

    points = load_points_for(study)
    assert study.history.kind == "readings" and len(points) > 10
    assert set(points.quantity) <= {"pressure", "flow", "demand"}
    assert (points.element_index >= 0).all()
