#!/usr/bin/env bash
# The test suite (fast tests; `scripts/test.sh -m slow` runs the slow ones). Lint and types first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test,bench
export MULTIROBUST_DATA="${MULTIROBUST_DATA:-$(cd .. && pwd)/shared/data}"
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
