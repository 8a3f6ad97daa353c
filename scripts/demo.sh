#!/usr/bin/env bash
# The README's first command: install pipetwin into ./.venv (once) and run the main job on its
# embedded defaults: the bundled field simulator (real OPC-UA and Modbus servers on loopback), an
# embedded Redis and the flow, with live figures, until Ctrl-C. Extra arguments go to
# `pipetwin run` (e.g. `bash scripts/demo.sh --duration 60`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/pipetwin run "$@"
