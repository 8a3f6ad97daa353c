"""``pipetwin bench forecast`` end to end on a short simulator run and two shared scenarios: every
model is scored on every series group, as key=value lines of numbers."""

import math

import pytest

from pipetwin.bench.forecast import MODELS, RiverForecaster, score_series
from pipetwin.cli import main as cli_main
from pipetwin.twin.forecast import HOUR_NS
from tests.paths import SHARED

LEAKS = SHARED / "benchmarks" / "leaks" / "public"


def figures(capsys) -> dict:
    text = capsys.readouterr().out
    return {k: float(v) for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line)}


def test_simulator_part(capsys):
    assert cli_main(["bench", "forecast", "--only", "sim", "--days", "2", "--step-s", "3600"]) == 0
    f = figures(capsys)
    for group in ("sim_zone", "sim_twin_zone", "sim_inflow"):
        for model in MODELS:
            for score in ("day_ahead", "hour_ahead"):
                value = f[f"{group}_{score}_mape_{model}"]
                assert math.isfinite(value) and value >= 0
    assert f["sim_hours_train"] == 24 and f["seconds"] > 0
    assert f["sim_zone_day_ahead_mape_pipetwin"] < 5.0


def test_shared_sets_part(capsys):
    if not LEAKS.is_dir():
        pytest.skip(f"benchmark data {LEAKS} not found (the shared folder sits beside the repository)")
    assert cli_main(["bench", "forecast", "--only", "sets", "--leaks", str(LEAKS), "--scenarios", "s03", "s11"]) == 0
    f = figures(capsys)
    assert f["water_scenarios"] == 1 and f["gas_scenarios"] == 1
    assert f["water_hours_train"] == 48 and f["gas_hours_train"] == 24
    for medium in ("water", "gas"):
        for series in ("inflow", "demand", "consumer"):
            assert math.isfinite(f[f"{medium}_{series}_day_ahead_mape_pipetwin"])


def test_river_models_are_primed_then_forecast_the_season():
    import numpy as np

    shape = 1.0 + 0.5 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    hours = np.arange(24 * 6) * HOUR_NS
    values = np.tile(shape, 6)
    scores = score_series(hours, values)
    for model in MODELS:
        assert scores[model]["day_ahead"] < 5.0, (model, scores[model])
    m = RiverForecaster("river_hw")
    m.learn_one(0, 1.0)
    assert m.forecast(HOUR_NS, 3).tolist() == [1.0, 1.0, 1.0]          # not primed: the mean so far
