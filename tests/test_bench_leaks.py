"""``pipetwin bench leaks`` on public scenarios of the shared leak set: the predictions file has the
form FORMAT.md gives and the shared scorer reads it (the scores are the benchmark's business)."""

import json
import subprocess
import sys

import pytest

from pipetwin.cli import main as cli_main
from tests.paths import SHARED

LEAKS = SHARED / "benchmarks" / "leaks" / "public"
SCORER = SHARED / "tools" / "score_leaks.py"


def run_bench(tmp_path, capsys, names):
    if not LEAKS.is_dir() or not SCORER.is_file():
        pytest.skip(f"benchmark data {LEAKS} not found (the shared folder sits beside the repository)")
    out = tmp_path / "predictions.json"
    assert cli_main(["bench", "leaks", str(LEAKS), "--out", str(out), "--only", *names]) == 0
    text = capsys.readouterr().out
    figures = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert figures["scenarios"] == str(len(names)) and float(figures["seconds"]) > 0
    pred = json.loads(out.read_text())
    assert sorted(pred) == sorted(names)
    for p in pred.values():
        assert isinstance(p["detected"], bool) and isinstance(p["candidates"], list)
        assert (p["detected_at"] is None) == (not p["detected"])
    scored = subprocess.run([sys.executable, str(SCORER), str(LEAKS), str(out), "--json", str(tmp_path / "s.json")],
                            capture_output=True, text=True, check=True)
    assert "score:" in scored.stdout
    return pred


def test_water_scenario(tmp_path, capsys):
    pred = run_bench(tmp_path, capsys, ["s09"])
    assert pred["s09"]["detected"] and len(pred["s09"]["candidates"]) == 10


@pytest.mark.slow
def test_gas_and_water_scenarios(tmp_path, capsys):
    pred = run_bench(tmp_path, capsys, ["s02", "s04"])
    assert pred["s04"]["detected"] and pred["s04"]["candidates"][0]
    assert not pred["s02"]["detected"]
