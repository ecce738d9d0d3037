#!/usr/bin/env bash
# Create .venv (if missing) and install multirobust with torch pinned to the CPU build 2.13.0,
# so that no CUDA packages are pulled. Usage: scripts/setup-venv.sh [extras], e.g. "test,bench".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
if [[ -n "$extras" ]]; then
  .venv/bin/python -m pip install -q -e ".[${extras}]"
else
  .venv/bin/python -m pip install -q -e .
fi
if [[ ",$extras," == *",bench,"* ]]; then
  .venv/bin/python -m pip install -q --no-deps "torchattacks==3.5.1"
fi
