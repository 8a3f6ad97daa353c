"""The pipetwin command as a user runs it: in a subprocess, reading what it prints."""

import csv
import subprocess
import sys

import pytest

from pipetwin.cli import build_parser


def run(*args):
    return subprocess.run([sys.executable, "-m", "pipetwin.cli", *args], capture_output=True, text=True,
                          timeout=300)


def figures(stdout):
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line and " " not in line)


@pytest.mark.parametrize("network,nodes", [("schutterwald", 2559), ("net1", 11), ("net3", 97)])
def test_solve_bundled_examples(tmp_path, network, nodes):
    out = tmp_path / "out"
    res = run("solve", network, "--out", str(out))
    assert res.returncode == 0, res.stderr
    f = figures(res.stdout)
    assert f["converged"] == "true" and int(f["nodes"]) == nodes and int(f["iterations"]) > 0
    with open(out / "node_pressure.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == nodes and set(rows[0]) == {"id", "pressure_pa"}
    with open(out / "pipe_flow.csv") as fh:
        assert set(next(csv.DictReader(fh))) == {"id", "flow"}


def test_solve_gaslib_with_scenario(networks_dir):
    folder = networks_dir / "gaslib" / "GasLib-134"
    res = run("solve", str(folder / "GasLib-134-v2.net"), "--scenario",
              str(folder / "Nominations-134-v2" / "2011-11-01.scn"))
    assert res.returncode == 0, res.stderr
    assert figures(res.stdout)["converged"] == "true"


def test_bad_network_gives_a_clean_error(tmp_path):
    bad = tmp_path / "bad.inp"
    bad.write_text("[JUNCTIONS]\nJ1 not-a-number\n[END]\n")
    res = run("solve", str(bad))
    assert res.returncode == 1
    assert "bad.inp" in res.stderr and "line 2" in res.stderr
    assert "Traceback" not in res.stderr


def test_export_round_trip(tmp_path):
    res = run("export", "schutterwald", str(tmp_path / "geo.geojson"), "--to", "geojson")
    assert res.returncode == 0, res.stderr
    assert figures(run("solve", str(tmp_path / "geo.geojson")).stdout)["converged"] == "true"
    res = run("export", "net1", str(tmp_path / "net1.inp"), "--to", "inp")
    assert res.returncode == 0, res.stderr
    assert run("solve", str(tmp_path / "net1.inp")).returncode == 0


def test_every_subcommand_has_help():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name in subs:
        res = run(name, "--help")
        assert res.returncode == 0 and "usage: pipetwin " + name in res.stdout


def test_run_main_job_briefly(tmp_path):
    """The README's main job, shortened: simulator, embedded Redis, the flow and the wall, URLs on
    their own lines."""
    from pipetwin.connectors.opcua_server import free_port

    res = subprocess.run([sys.executable, "-m", "pipetwin.cli", "run", "--duration", "8", "--quiet",
                          "--opcua-port", str(free_port()), "--modbus-port", str(free_port()),
                          "--dashboard-port", str(free_port()), "--historian", str(tmp_path / "historian")],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert any(line.startswith("redis://127.0.0.1:") for line in lines)
    assert any(line.startswith("opc.tcp://127.0.0.1:") for line in lines)
    assert any(line.startswith("modbus 127.0.0.1:") for line in lines)
    assert any(line.startswith("http://127.0.0.1:") for line in lines)
    f = figures(res.stdout)
    assert f["converged"] == "True" and int(f["sensors_reporting"]) >= 40
    assert list((tmp_path / "historian" / "ticks").rglob("*.parquet"))
    from pipetwin.flows.audit.ledger import verify
    ledger = tmp_path / "pipetwin-data" / "audit" / "ledger.jsonl"
    assert any(line == f"ledger {ledger}" for line in lines)
    assert verify(ledger, historian=tmp_path / "historian").ok      # the stop-time anchor at least
