#!/usr/bin/env bash
# The main job: train a small MNIST CNN, evaluate it (quick preset) under ℓ∞ 0.3, ℓ2 2, ℓ1 10 and
# spatial 30°/3 px and their union, and write runs/quickstart/report.json and report.html.
# Extra arguments go to `multirobust quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export MULTIROBUST_DATA="${MULTIROBUST_DATA:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/multirobust quickstart "$@"
