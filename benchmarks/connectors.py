"""All connector benchmarks in one run, printing their key=value figures in sequence:
Modbus decode and polling, OPC-UA notifications, the quality gate, and meter-file loading.

    python benchmarks/connectors.py [--quick]

Each part is its own script beside this one (connectors_modbus.py, connectors_opcua.py,
connectors_quality.py, connectors_meters.py) and can run alone with more options."""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _part(name: str, *args: str) -> int:
    """Each part in its own process (the OPC-UA part spawns its server process by module name)."""
    print(f"part={name}", flush=True)
    return subprocess.run([sys.executable, str(HERE / f"connectors_{name}.py"), *args]).returncode


def main(quick: bool = False) -> int:
    codes = [
        _part("modbus", *(["--quick"] if quick else [])),
        _part("opcua", "--points", "500" if quick else "1000,5000", "--seconds", "3" if quick else "10"),
        _part("quality", *(["--quick"] if quick else [])),
        _part("meters", "--meters", "20000" if quick else "1000000"),
    ]
    return max(codes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or so")
    sys.exit(main(parser.parse_args().quick))
