#!/usr/bin/env bash
# The README's second command (and what CI runs): install pipetwin with its test extras into
# ./.venv and run the test suite. As root on Debian it also installs SuiteSparse so the CHOLMOD
# backend (scikit-sparse) is tested (without it the solvers use SciPy's SuperLU and say so), and
# chromium + chromium-driver for the dashboard's browser tests, and docker-compose (the tool alone)
# to validate docker/'s compose file.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    # SuiteSparse for CHOLMOD; chromium and its driver for the dashboard's browser tests
    need="libsuitesparse-dev libopenblas0-pthread chromium chromium-driver"
    if ! dpkg -s $need docker-compose >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
        # Compose's own validation of docker/docker-compose.yml (the tool only, not the engine)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null || true
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
if [ -e /usr/include/suitesparse/cholmod.h ]; then
    .venv/bin/python -m pip install --quiet -e '.[fast]' || echo "scikit-sparse did not build; using SuperLU"
fi
exec .venv/bin/python -m pytest "$@"
