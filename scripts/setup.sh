#!/usr/bin/env bash
# Set up a virtual environment with cinecloud and its dependencies, and build the
# tiny test model. Safe to run again: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${CINECLOUD_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp="$VENV/.cinecloud-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # torch is pinned first: this exact build is on the machine; a looser pin
  # would pull a multi-GB CUDA build.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

export HF_HUB_OFFLINE=1
if [ ! -f models/tiny-wan/model_index.json ]; then
  python scripts/make_tiny_wan.py >/dev/null
fi
