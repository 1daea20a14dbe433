#!/usr/bin/env bash
# Set everything up, then train a small conditional model on the built-in defect dataset and
# sample a grid per class (about 10 minutes on a 2-core CPU). Extra arguments go to `difforge demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/difforge demo "$@"
