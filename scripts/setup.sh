#!/usr/bin/env bash
# Create ./venv and install bokehdepth with every extra, offline-safe: torch is pinned to the CPU wheel
# through constraints.txt (without the pin pip would pull a CUDA build of several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x venv/bin/python ] || "$PY" -m venv venv
venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[flux,train,app,dev]"
