#!/usr/bin/env bash
# make bench: runs every tests/bench/*_bench.py with the venv's python.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../../.venv/bin/python}
for bench in "$here"/*_bench.py; do
  echo "== $(basename "$bench")"
  "$python" "$bench"
done
