"""``pipetwin bench flow --quick`` runs end to end and prints its three kinds of figures (the
figures themselves are the benchmark's business, not the test's: the machine is shared)."""

import re

from pipetwin.bench.flow import main


def _figures(text: str, case: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if line.startswith(f"case={case} "))
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_quick_flow_benchmark_prints_every_figure(capsys):
    assert main(quick=True) == 0
    out = capsys.readouterr().out
    throughput = _figures(out, "throughput")
    assert float(throughput["readings_per_s"]) > 0 and int(throughput["quarantined"]) == 0
    assert int(throughput["historian_rows"]) == int(throughput["readings"])
    gas = _figures(out, "tick_schutterwald")
    assert float(gas["tick_ms"]) > 0 and gas["converged"] == "true" and gas["scada_points"] == "52"
    latency = _figures(out, "latency")
    assert "error" not in latency, latency
    assert float(latency["latency_p99_ms"]) > 0 and int(latency["points"]) == 300
    assert int(latency["changes_never_seen"]) == 0
