"""NAB's scoring as re-implemented in pipetwin.bench.nab_score, on hand-made cases with known answers and against
a literal transcription of NAB's own sweep (nab/sweeper.py: calcSweepScore + calcScoreByThreshold)."""

import math

import numpy as np
import pytest
from tests.paths import SHARED

from pipetwin.bench.nab_score import (MAX_TP, LabelledFile, best_threshold, file_score, probation_length,
                                      scaled_sigmoid, score_corpus, threshold_curve)
from pipetwin.cli import main as cli_main

STANDARD = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}
LOW_FN = {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}
PROFILES = {"standard": STANDARD, "reward_low_FP_rate": {**STANDARD, "fpWeight": 0.22}, "reward_low_FN_rate": LOW_FN}
NAB = SHARED / "benchmarks" / "nab"


def one_file(n=1000, windows=((600, 699),)):
    return LabelledFile.build("f.csv", n, list(windows))


def spikes(n, at):
    s = np.zeros(n)
    s[list(at)] = 1.0
    return s


def test_scaled_sigmoid_matches_nab():
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert float(scaled_sigmoid(0.0)) == pytest.approx(0.0)
    assert float(scaled_sigmoid(3.0)) == -1.0
    assert probation_length(1000) == 150 and probation_length(20000) == 750


def test_detection_at_window_start_earns_the_full_reward():
    lf = one_file()
    r = best_threshold([lf], [spikes(1000, [600])], STANDARD)
    assert r.threshold == 1.0 and r.score == pytest.approx(1.0)
    assert file_score(lf, spikes(1000, [600]), LOW_FN, 1.0) == pytest.approx(1.0)


def test_later_detection_earns_less_and_only_the_earliest_counts():
    lf = one_file()
    mid = file_score(lf, spikes(1000, [650]), STANDARD, 1.0)
    assert mid == pytest.approx(float(scaled_sigmoid(-50 / 100)) / MAX_TP)
    assert 0.8 < mid < 0.9
    assert file_score(lf, spikes(1000, [650, 690, 699]), STANDARD, 1.0) == pytest.approx(mid)
    assert file_score(lf, spikes(1000, [610, 650]), STANDARD, 1.0) > mid


def test_false_positive_far_from_windows_costs_fp_weight_and_near_a_window_end_less():
    lf = one_file()
    assert file_score(lf, spikes(1000, [300]), STANDARD, 1.0) == pytest.approx(-1.0 - 0.11)   # missed window, one FP
    assert file_score(lf, spikes(1000, [600, 300]), STANDARD, 1.0) == pytest.approx(1.0 - 0.11)
    assert file_score(lf, spikes(1000, [600, 999]), STANDARD, 1.0) == pytest.approx(1.0 - 0.11 * 0.9999, abs=2e-3)
    just_after = file_score(lf, spikes(1000, [600, 702]), STANDARD, 1.0) - 1.0
    assert -0.11 * 0.5 < just_after < 0
    assert file_score(lf, spikes(1000, [100]), STANDARD, 1.0) == pytest.approx(-1.0)            # probation: ignored


def test_null_normalizes_to_zero_and_perfect_to_hundred():
    files = [one_file(), one_file(2000, ((800, 899), (1500, 1599))), one_file(1200, ())]
    null = [np.full(f.n, 0.5) for f in files]
    perfect = [spikes(f.n, [a for a, _ in f.windows]) for f in files]
    for name, res in score_corpus(files, null, PROFILES, 3).items():
        assert res.normalized == pytest.approx(0.0), name
        assert res.null == pytest.approx(-3 * PROFILES[name]["fnWeight"])
    for res in score_corpus(files, perfect, PROFILES, 3).values():
        assert res.normalized == pytest.approx(100.0)
    half = [spikes(f.n, [a for a, _ in f.windows][:1]) for f in files]      # 2 of 3 windows, earliest
    assert score_corpus(files, half, PROFILES, 3)["standard"].normalized == pytest.approx(100 * (2 - 1 + 3) / 6)


def nab_reference(files, scores, cost):
    """NAB's calcSweepScore + calcScoreByThreshold, transcribed literally (lists, a dict of window parts)."""
    rows = []
    max_tp = 2 / (1 + math.exp(-5)) - 1
    for lf, sc in zip(files, scores):
        windows = list(lf.windows)
        cur = None
        prev_right = prev_width = None
        prob = min(math.floor(0.15 * lf.n), 0.15 * 5000)
        for i in range(lf.n):
            if windows and i == windows[0][0]:
                cur = windows.pop(0)
                width = float(cur[1] - cur[0] + 1)
            if cur is not None:
                pos = -(cur[1] - i + 1) / width
                v = (2 / (1 + math.exp(5 * pos)) - 1) * cost["tpWeight"] / max_tp
                name = f"{lf.name}{id(lf)}|{cur[0]}"
            else:
                p = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
                v = (-1.0 if p >= 3.0 else 2 / (1 + math.exp(5 * p)) - 1) * cost["fpWeight"]
                name = None
            rows.append((sc[i], v, name if i >= prob else "probationary"))
            if cur is not None and i == cur[1]:
                prev_right, prev_width, cur = i, width, None
    rows = sorted([r for r in rows if r[2] != "probationary"], key=lambda r: r[0], reverse=True)
    parts = {"fp": 0.0}
    for r in rows:
        if r[2] is not None:
            parts[r[2]] = -cost["fnWeight"]
    out, thr = [], 1.1
    for s, v, name in rows:
        if s != thr:
            out.append((thr, sum(parts.values())))
            thr = s
        if name is None:
            parts["fp"] += v
        else:
            parts[name] = max(parts[name], v)
    out.append((thr, sum(parts.values())))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_curve_equals_nab_sweep(seed):
    rng = np.random.default_rng(seed)
    files = [one_file(), one_file(2000, ((800, 899), (1500, 1599))), one_file(1200, ()), one_file(600, ((500, 599),))]
    scores = [np.round(rng.random(f.n) ** 4, 3) for f in files]          # many ties, as real detectors give
    for cost in PROFILES.values():
        ours = [(r.threshold, r.score) for r in threshold_curve(files, scores, cost)]
        ref = nab_reference(files, scores, cost)
        assert len(ours) == len(ref)
        np.testing.assert_allclose(np.array(ours), np.array(ref), rtol=0, atol=1e-9)
        best = best_threshold(files, scores, cost)
        assert best.score == pytest.approx(max(s for _, s in ref))
        total = sum(file_score(f, s, cost, best.threshold) for f, s in zip(files, scores))
        assert total == pytest.approx(best.score)


def test_bench_nab_cli_on_two_files(capsys, tmp_path):
    if not (NAB / "data").is_dir():
        pytest.skip(f"NAB data {NAB} not found (the shared folder sits beside the repository)")
    out = tmp_path / "results.json"
    rc = cli_main(["bench", "nab", str(NAB), "--only", "realAdExchange/exchange-2", "--quiet", "--out", str(out)])
    assert rc == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines() if "=" in line)
    assert lines["files"] == "2"
    for key in ("standard", "low_fp", "low_fn"):
        assert -100.0 <= float(lines[key]) <= 100.0
    assert float(lines["standard"]) > 0.0, "the detector should beat the null detector on these files"
    assert out.exists() and '"reward_low_FN_rate"' in out.read_text()
