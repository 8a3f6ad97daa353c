"""Carbon accounting: hand-computed cases for the composition, methane and combustion figures, and
a report built from a small historian written here."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from pipetwin.cli import main
from pipetwin.connectors.reading import readings_batch
from pipetwin.flows.contracts import Alert, TwinState
from pipetwin.flows.reports_carbon import build_report, load_factors, period_label, period_start, split, write_report
from pipetwin.flows.sinks.historian import Historian
from pipetwin.twin.carbon import (FactorTable, GasComposition, combustion_co2, factor_table_from_dict,
                                  methane_released)

R = 8.314462618
M_CH4, M_N2, M_CO2 = 16.043e-3, 28.014e-3, 44.010e-3
PURE = GasComposition({"methane": 1.0}, name="methane")


def test_pure_methane_1000_m3_at_normal_conditions():
    table = FactorTable(composition=PURE)
    kg = 1000.0 * 101325.0 * M_CH4 / (R * 273.15)            # 715.76 kg
    r = methane_released(table, volume_m3=1000.0)
    assert r["gas_kg"] == pytest.approx(kg, rel=1e-12) and kg == pytest.approx(715.76, abs=0.01)
    assert r["ch4_kg"] == pytest.approx(kg, rel=1e-12)
    assert r["co2e_kg"] == pytest.approx(kg * 29.8, rel=1e-12)        # 21,329.6 kg CO2e
    assert r["factors_version"] == table.version and r["factors_date"] == table.date
    # a configured GWP (e.g. GWP20 82.5) scales it
    assert methane_released(FactorTable(composition=PURE, gwp100_ch4=82.5), mass_kg=1.0)["co2e_kg"] == 82.5


def test_one_terajoule_is_56_1_t_co2():
    r = combustion_co2(FactorTable(), energy_net_j=1e12)
    assert r["co2_kg"] == pytest.approx(56_100.0)
    assert r["energy_net_tj"] == pytest.approx(1.0)


def test_volume_at_stated_conditions_and_mixture_fractions():
    mix = GasComposition({"methane": 0.9, "nitrogen": 0.08, "carbon_dioxide": 0.02})
    m = 0.9 * M_CH4 + 0.08 * M_N2 + 0.02 * M_CO2
    assert mix.molar_mass_kg_mol == pytest.approx(m)
    assert mix.methane_mass_fraction == pytest.approx(0.9 * M_CH4 / m)
    assert mix.co2_mass_fraction == pytest.approx(0.02 * M_CO2 / m)
    table = FactorTable(composition=mix)
    r = methane_released(table, volume_m3=100.0, pressure_pa=5e5, temperature_k=288.15)
    gas = 100.0 * 5e5 * m / (R * 288.15)
    assert r["gas_kg"] == pytest.approx(gas)
    assert r["co2e_kg"] == pytest.approx(gas * 0.9 * M_CH4 / m * 29.8 + gas * 0.02 * M_CO2 / m)


def test_combustion_of_pure_methane_by_hand():
    table = FactorTable(composition=PURE, tariffs={"default": 0.10, "industry": 0.05})
    mol = 1000.0 * 101325.0 / (R * 273.15)                    # 1000 m3 normal
    r = combustion_co2(table, volume_m3=1000.0)
    assert r["energy_net_j"] == pytest.approx(mol * 802.69e3)
    assert r["energy_gross_kwh"] == pytest.approx(mol * 891.56e3 / 3.6e6)
    assert r["co2_kg"] == pytest.approx(mol * 802.69e3 / 1e12 * 56_100.0)    # about 2,009 kg
    assert r["cost"] == pytest.approx(r["energy_gross_kwh"] * 0.10)
    assert combustion_co2(table, volume_m3=1000.0, customer_class="industry")["cost"] == pytest.approx(
        r["energy_gross_kwh"] * 0.05)
    assert combustion_co2(FactorTable(), mass_kg=1.0)["cost"] is None        # no tariff configured
    assert PURE.carbon_co2_kg_per_kg == pytest.approx(M_CO2 / M_CH4)
    # a billing calorific value overrides the composition's
    billed = FactorTable(composition=PURE, net_cv_j_m3=36e6)
    assert combustion_co2(billed, volume_m3=1.0)["energy_net_j"] == pytest.approx(36e6)


def test_bad_compositions_and_tables_are_named():
    with pytest.raises(ValueError, match="unknown component"):
        GasComposition({"methane": 0.9, "unobtainium": 0.1})
    with pytest.raises(ValueError, match="sum to 0.9"):
        GasComposition({"methane": 0.9})
    with pytest.raises(ValueError, match="'version' is required"):
        factor_table_from_dict({"date": "2026-01-01", "source": "x"})
    with pytest.raises(ValueError, match="unknown key"):
        factor_table_from_dict({"version": "1", "date": "d", "source": "s", "gwp": 28})
    t = factor_table_from_dict({"version": 2, "date": "2026-01-01", "source": "utility", "gwp100_ch4": 27.0,
                                "composition": {"mole_fractions": {"methane": 1.0}, "name": "pure"},
                                "tariffs": {"default": 0.1}})
    assert t.version == "2" and t.composition.name == "pure" and t.tariffs == {"default": 0.1}


def test_periods():
    ns = lambda s: int(datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp()) * 10**9  # noqa: E731
    t = ns("2024-02-29T13:00:00")                 # a Thursday in a leap February
    assert period_label(period_start(t, "day"), "day") == "2024-02-29"
    assert period_start(t, "week") == ns("2024-02-26T00:00:00")
    assert period_label(period_start(t, "week"), "week") == "2024-W09"
    assert period_start(t, "month") == ns("2024-02-01T00:00:00")
    assert period_label(period_start(t, "year"), "year") == "2024"
    pieces = split(ns("2024-02-29T18:00:00"), ns("2024-03-01T06:00:00"), "month")
    assert [(b - a) // 3_600_000_000_000 for _, a, b in pieces] == [6, 6]


# -- a report from a small historian ---------------------------------------------------------------

DAY = 86_400 * 10**9
T0 = int(datetime(2024, 2, 28, tzinfo=timezone.utc).timestamp()) * 10**9     # Wednesday 28 Feb 2024
TICK = 300 * 10**9
GAP = (T0 + DAY + 6 * 3600 * 10**9, T0 + DAY + 12 * 3600 * 10**9)            # the flow was down on day 2


def state(ts: int, consumption: float) -> TwinState:
    z = np.zeros(1)
    return TwinState(network="north", ts_ns=ts, node_ids=["n"], node_pressure_pa=z + 2e5, node_demand=z,
                     unsupplied=np.zeros(1, bool), link_ids=["l"], link_flow=z, link_velocity_m_s=z,
                     sensor_ids=["P1"], sensor_measured=z + 2e5, sensor_estimated=z + 2e5, zone_multipliers=z + 1,
                     converged=True, iterations=3, chi2=0.1, solve_ms=1.0,
                     figures={"consumption_kg_s": consumption, "inflow_kg_s": consumption})


def alert(aid, rev, ts, status="open", opened=None, cleared=None, **evidence) -> Alert:
    return Alert(id=aid, kind="leak", severity="major", subject="n", network="north", opened_ns=opened or ts,
                 updated_ns=ts, status=status, evidence=evidence, cleared_ns=cleared, revision=rev)


@pytest.fixture
def historian(tmp_path):
    root = tmp_path / "hist"
    with Historian(root, network="north", fsync=False) as hist:
        for ts in range(T0 + TICK, T0 + 3 * DAY + 1, TICK):
            if not (GAP[0] < ts <= GAP[1]):
                hist.write_state(state(ts, 0.01))
        h = 3600 * 10**9
        opened = T0 + 12 * h
        # as flows/detectors/leak.py writes them: estimated flow (kg/s) and estimated start
        start = opened - h
        hist.write_alert(alert("leak-1", 0, opened, estimated_flow=0.002, start_ns=start))
        hist.write_alert(alert("leak-1", 1, T0 + DAY, opened=opened, estimated_flow=0.004, start_ns=start))
        hist.write_alert(alert("leak-1", 2, T0 + DAY + 6 * h, status="cleared", opened=opened,
                               cleared=T0 + DAY + 6 * h, estimated_flow=0.004, start_ns=start))
        hist.write_alert(alert("leak-2", 0, T0 + 3 * DAY - 2 * h, leak_flow_m3_s=0.001))      # still open
        hist.write_alert(alert("vent-1", 0, T0 + 2 * DAY + 3 * h, vented_m3=100.0))
        ts = [T0 + k * h for k in range(1, 73) for _ in range(3)]
        points = ["M-1", "M-2", "M-3"] * 72
        quality = [2 if (i == 0) else 0 for i in range(len(ts))]                             # one bad read
        hist.write_readings(readings_batch(points, ts, [0.5] * len(ts), quality, "meters:file:x.csv"))
        hist.write_readings(readings_batch(["P1"] * 3, [T0 + h, T0 + 2 * h, T0 + 3 * h], [2e5] * 3, 0, "opcua"))
    return root


def by(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def test_report_by_day_from_the_historian(historian, tmp_path):
    table = FactorTable(tariffs={"default": 0.1})
    report = build_report(historian, "day", table)
    w = table.composition.methane_mass_fraction
    # gas burnt (twin estimate): 0.01 kg/s over each day the ticks cover
    twin = by(report.combustion, basis="twin estimate")
    assert [r["period"] for r in twin] == ["2024-02-28", "2024-02-29", "2024-03-01"]
    assert twin[0]["gas_kg"] == pytest.approx(864.0) and twin[0]["coverage_s"] == pytest.approx(86_400)
    covered = 86_400 - 72 * 300 - 300 + 900          # 6 h missing; the tick after the gap counts 3 ticks
    assert twin[1]["coverage_s"] == pytest.approx(covered) and twin[1]["gas_kg"] == pytest.approx(0.01 * covered)
    assert twin[0]["co2_kg"] == pytest.approx(combustion_co2(table, mass_kg=864.0)["co2_kg"])
    assert twin[0]["cost"] == pytest.approx(combustion_co2(table, mass_kg=864.0)["energy_gross_kwh"] * 0.1)
    assert twin[0]["records"] == 288 and twin[1]["records"] == 288 - 72
    assert all(f.startswith("ticks/network=north/date=") for f in twin[0]["source_files"].split(";"))
    # meters: 3 x 0.5 kg per hour, one bad read skipped, the SCADA point ignored
    metered = by(report.combustion, basis="meters")
    assert [r["gas_kg"] for r in metered] == pytest.approx([3 * 24 * 0.5 - 0.5, 36.0, 36.0])
    assert metered[0]["records"] == 3 * 24 - 1
    # released: leak-1 13 h at 2 g/s on day 1 (from its estimated start), 6 h at 4 g/s on day 2; leak-2 from 22:00 to the last tick;
    # vent-1 100 m3 on day 3
    rows = {r["period"]: r for r in report.methane}
    assert rows["2024-02-28"]["gas_released_kg"] == pytest.approx(0.002 * 13 * 3600)
    assert rows["2024-02-29"]["gas_released_kg"] == pytest.approx(0.004 * 6 * 3600)
    leak2 = 0.001 * table.normal_density_kg_m3 * 2 * 3600
    vent = 100.0 * table.normal_density_kg_m3
    assert rows["2024-03-01"]["gas_released_kg"] == pytest.approx(leak2 + vent)
    assert rows["2024-03-01"]["events"] == "leak-2;vent-1"
    assert rows["2024-02-28"]["ch4_kg"] == pytest.approx(0.002 * 13 * 3600 * w)
    assert rows["2024-02-28"]["co2e_kg"] == pytest.approx(
        methane_released(table, mass_kg=0.002 * 13 * 3600)["co2e_kg"])
    # the summary adds them up and states the factors
    s = {r["period"]: r for r in report.summary}
    assert s["2024-02-28"]["total_co2e_kg"] == pytest.approx(twin[0]["co2_kg"] + rows["2024-02-28"]["co2e_kg"])
    assert s["2024-02-29"]["coverage_pct"] == pytest.approx(100 * covered / 86_400)
    assert s["2024-02-28"]["factors_version"] == table.version
    # files on disk
    out = tmp_path / "out"
    outputs = write_report(report, out)
    assert set(outputs) == {"carbon_day_summary.csv", "carbon_day_combustion.csv", "carbon_day_methane.csv",
                            "carbon_sources.csv", "carbon_factors.json", "carbon_day.html"}
    with open(out / "carbon_sources.csv") as fh:
        sources = list(csv.DictReader(fh))
    assert {r["path"].split("/")[0] for r in sources} == {"ticks", "readings", "alerts"}
    for r in sources:
        assert hashlib.sha256((historian / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    page = (out / "carbon_day.html").read_text()
    assert len(page) > 1_000_000 and page.count("<script") >= 3 and "<script src=" not in page   # offline
    assert "56,100 kg CO2/TJ" in page and table.version in page and "Traceability" in page
    assert json.loads((out / "carbon_factors.json").read_text())["gwp100_ch4"] == 29.8
    payload = report.ledger_payload()
    assert payload["outputs"] == outputs and len(payload["sources"]) == len(sources)


def test_report_by_month_week_year_and_classes(historian, tmp_path, capsys):
    classes = tmp_path / "classes.csv"
    classes.write_text("point,class\nM-1,household\nM-2,household\nM-3,commercial\n")
    month = build_report(historian, "month", classes={"M-1": "household", "M-2": "household", "M-3": "commercial"})
    twin = by(month.combustion, basis="twin estimate")
    assert [r["period"] for r in twin] == ["2024-02", "2024-03"]
    assert sum(r["gas_kg"] for r in twin) == pytest.approx(864.0 * 2 + 0.01 * (86_400 - 72 * 300 - 300 + 900))
    homes = by(month.combustion, basis="meters", customer_class="household")
    assert sum(r["gas_kg"] for r in homes) == pytest.approx(2 * 72 * 0.5 - 0.5)
    week = build_report(historian, "week")
    assert {r["period"] for r in week.summary} == {"2024-W09"}
    year = build_report(historian, "year", start_ns=T0 + DAY, end_ns=T0 + 2 * DAY)
    twin = by(year.combustion, basis="twin estimate")
    assert len(twin) == 1 and twin[0]["gas_kg"] == pytest.approx(0.01 * (86_400 - 72 * 300 - 300 + 900))
    # the midnight tick that closes the day is filed under the next date
    assert {f.split("/")[2] for f in twin[0]["source_files"].split(";")} == {"date=2024-02-29", "date=2024-03-01"}
    assert not any("date=2024-03-02" in s.path for s in year.sources)
    # the CLI
    factors = tmp_path / "factors.yaml"
    factors.write_text("version: utility-7\ndate: 2026-10-01\nsource: utility lab, monthly average\n"
                       "gwp100_ch4: 29.8\ntariffs: {default: 0.11}\n"
                       "composition: {name: lab, mole_fractions: {methane: 0.95, ethane: 0.03, nitrogen: 0.02}}\n")
    assert load_factors(factors).version == "utility-7"
    out = tmp_path / "cli"
    ledger = tmp_path / "ledger.jsonl"
    assert main(["carbon", str(historian), "--period", "month", "--out", str(out), "--factors", str(factors),
                 "--classes", str(classes), "--ledger", str(ledger)]) == 0
    from pipetwin.flows.audit.ledger import Ledger
    assert [e["kind"] for e in Ledger(ledger).entries()] == ["report"]
    assert (out / "carbon_month.html").exists()
    capsys.readouterr()
    assert main(["carbon", str(historian), "--period", "day", "--out", str(out), "--start", "2024-02-29",
                 "--end", "2024-03-01", "--ledger", ""]) == 0
    printed = dict(x.split("=", 1) for x in capsys.readouterr().out.splitlines())
    assert printed["rows"] == "1" and float(printed["gas_released_kg"]) == pytest.approx(0.004 * 6 * 3600)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndate: x\n")
    assert main(["carbon", str(historian), "--period", "day", "--out", str(out), "--factors", str(bad),
                 "--ledger", ""]) == 1


def test_empty_historian_gives_an_empty_report(tmp_path):
    report = build_report(tmp_path / "nothing", "day")
    assert report.summary == [] and report.sources == []
    write_report(report, tmp_path / "out")
    assert (tmp_path / "out" / "carbon_day.html").exists()
