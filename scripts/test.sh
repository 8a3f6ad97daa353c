#!/usr/bin/env bash
# The README's second command (and what CI runs): install pipetwin with its test extras into
# ./.venv and run the test suite. As root on Debian it also installs SuiteSparse so the CHOLMOD
# backend (scikit-sparse) is tested; without it the solvers use SciPy's SuperLU and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    if ! dpkg -s libsuitesparse-dev libopenblas0-pthread >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq libsuitesparse-dev libopenblas0-pthread >/dev/null
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
if [ -e /usr/include/suitesparse/cholmod.h ]; then
    .venv/bin/python -m pip install --quiet -e '.[fast]' || echo "scikit-sparse did not build; using SuperLU"
fi
exec .venv/bin/python -m pytest "$@"
