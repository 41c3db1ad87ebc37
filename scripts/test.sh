#!/usr/bin/env bash
# Set up and run the checks and tests: ruff, mypy and pytest (everything but GPU tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
mypy
python -m pytest -m "not gpu" --durations=20 "$@"
