"""One embedded Redis and one historian, filled by a short replay through the real flow, shared by
every dashboard test (the wall reads only what the flow wrote)."""

from __future__ import annotations

import pytest

from pipetwin.flows.contracts import Alert, Candidate

NETWORK = "wall"


@pytest.fixture(scope="session")
def wall_data(tmp_path_factory):
    from bytewax.testing import run_main

    from pipetwin.flows.redis_embedded import start_embedded_redis
    from pipetwin.flows.replay_flow import get_flow, write_simulated_history
    from pipetwin.flows.redis_embedded import connect
    from pipetwin.flows.sinks.redis_sink import write_alert

    root = tmp_path_factory.mktemp("wall")
    history = root / "history.parquet"
    write_simulated_history(history, seconds=150)
    server = start_embedded_redis(port=0)
    historian = root / "historian"
    run_main(get_flow(str(history), str(historian), NETWORK, redis_url=server.url))
    r = connect(server.url)
    summary = r.get(f"pipetwin:{NETWORK}:state:summary")
    assert summary is not None, "the replay wrote no state"
    # a leak alert with candidates, as the leak detector raises them, for the console
    import json
    ts = json.loads(summary)["ts_ns"]
    nodes = r.get(f"pipetwin:{NETWORK}:network:nodes")
    from pipetwin.flows.contracts import read_ipc
    t = read_ipc(nodes)
    ids, xs, ys = t["id"].to_pylist(), t["x"].to_pylist(), t["y"].to_pylist()
    leak = Alert(id=f"{NETWORK}:leak:zone-1:{ts}", kind="leak", severity="major", subject="zone-1",
                 network=NETWORK, opened_ns=ts, updated_ns=ts, message="leak of about 0.004 kg/s since 12:00",
                 evidence={"leak_flow_kg_s": 0.004, "cusum": [0.0, 0.5, 1.4, 3.1, 5.2]},
                 candidates=[Candidate(ids[i], 1.0 / (1 + k), xs[i], ys[i]) for k, i in enumerate((10, 40, 90))])
    write_alert(r, leak)
    yield {"url": server.url, "historian": str(historian), "network": NETWORK, "leak_id": leak.id,
           "redis": r, "ts_ns": ts}
    server.close()
