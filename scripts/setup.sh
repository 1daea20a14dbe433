#!/usr/bin/env bash
# Create ./.venv with difforge and its test dependencies (idempotent; a fresh machine needs only python3).
# torch is pinned to the CPU build 2.13.0: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DIFFORGE_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.difforge-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "torch==${DIFFORGE_TORCH:-2.13.0}"
  "$PY" -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
