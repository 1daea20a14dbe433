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
  TORCH="torch==${DIFFORGE_TORCH:-2.13.0}"
  if ! "$PY" -m pip install --quiet "$TORCH"; then
    echo "setup.sh: could not install $TORCH with: $PY -m pip install $TORCH" >&2
    echo "setup.sh: pip installs torch from the package index it is configured for (pip config list; PIP_INDEX_URL)." >&2
    echo "setup.sh: install the CPU build of $TORCH into $VENV yourself (e.g. from a wheel file: $PY -m pip install ./torch-*.whl), then rerun scripts/setup.sh" >&2
    exit 1
  fi
  "$PY" -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
