"""Write the bundled Schutterwald point table (pipetwin/data/schutterwald/points.csv): a gate
station (inlet pressure, outlet flow, temperature), district pressure sensors spread over the
grid (half on Modbus RTUs, half on OPC-UA), flow meters on the main pipes out of the gate, and
an hourly smart meter at every house. Deterministic: run it again and the file is the same."""

import csv
from pathlib import Path

import numpy as np

from pipetwin.data import example
from pipetwin.twin.io import read_network
from pipetwin.twin.model import NodeKind

OUT = Path(__file__).resolve().parents[1] / "pipetwin" / "data" / "schutterwald" / "points.csv"


def main() -> None:
    model = read_network(example("schutterwald"))
    nodes, links = model.nodes, model.links
    source = int(np.flatnonzero(nodes.kind == NodeKind.SOURCE)[0])
    out_links = np.flatnonzero((links.from_node == source) | (links.to_node == source))
    rows = [
        ["GS-PT-IN", "opcua", "ns=2;s=GS-PT-IN", nodes.ids[source], "pressure", "mbar", "gauge", 0, 2000, 1, 1],
        ["GS-TT-01", "opcua", "ns=2;s=GS-TT-01", nodes.ids[source], "temperature", "degC", "", -20, 40, 1, 0.1],
    ]
    for k, j in enumerate(out_links):
        rows.append([f"GS-FT-{k + 1:02d}", "opcua", f"ns=2;s=GS-FT-{k + 1:02d}", links.ids[j], "flow", "m3/h", "",
                     -50, 2000, 1, 0.5])
    # district pressure sensors: the junction nearest each cell of an 8 x 8 grid over the network
    junctions = np.flatnonzero(nodes.kind == NodeKind.JUNCTION)
    xs, ys = nodes.x[junctions], nodes.y[junctions]
    chosen: list[int] = []
    for gx in np.linspace(xs.min(), xs.max(), 9)[:-1] + (xs.max() - xs.min()) / 16:
        for gy in np.linspace(ys.min(), ys.max(), 9)[:-1] + (ys.max() - ys.min()) / 16:
            i = int(junctions[np.argmin(np.hypot(xs - gx, ys - gy))])
            if i not in chosen:
                chosen.append(i)
    register = 0
    for k, i in enumerate(chosen):
        pid = f"PT-{k + 1:03d}"
        if k % 2 == 0:
            rows.append([pid, "modbus", f"1/{register}/float32", nodes.ids[i], "pressure", "mbar", "gauge", 0, 2000,
                         1, 0.5])
            register += 2
        else:
            rows.append([pid, "opcua", f"ns=2;s={pid}", nodes.ids[i], "pressure", "mbar", "gauge", 0, 2000, 1, 0.5])
    for i in np.flatnonzero(nodes.kind == NodeKind.CONSUMER):
        rows.append([f"M-{nodes.ids[i]}", "meter", f"M-{nodes.ids[i]}", nodes.ids[i], "volume", "m3", "", 0, 50,
                     3600, ""])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "protocol", "address", "element", "quantity", "unit", "reference", "min", "max",
                    "period_s", "deadband"])
        w.writerows(rows)
    scada = sum(1 for r in rows if r[1] != "meter")
    print(f"points={len(rows)} scada={scada} meters={len(rows) - scada} file={OUT}")


if __name__ == "__main__":
    main()
