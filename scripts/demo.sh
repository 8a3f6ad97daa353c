#!/usr/bin/env bash
# The README's first command: install pipetwin into ./.venv (once) and run the main job on its
# bundled defaults. Today the main job solves the bundled Schutterwald gas network; extra
# arguments go to `pipetwin solve` (e.g. `bash scripts/demo.sh net3 --out out/`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/pipetwin solve "$@"
