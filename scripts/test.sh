#!/usr/bin/env bash
# The test command: set up (idempotent), lint, run the whole test suite. pytest's exit code is kept, so
# "no tests collected" (exit 5) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
venv/bin/ruff check src tests bench
venv/bin/ruff format --check src tests bench
venv/bin/python -m pytest -q -p no:cacheprovider --durations=15
