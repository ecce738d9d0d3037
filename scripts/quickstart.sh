#!/usr/bin/env bash
# The main job: train a small MNIST CNN for about a minute, attack it under ℓ∞ 0.3, ℓ2 2 and
# ℓ1 10, print clean and robust accuracy. Extra arguments go to `multirobust quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export MULTIROBUST_DATA="${MULTIROBUST_DATA:-$(cd .. && pwd)/shared/data}"
exec .venv/bin/multirobust quickstart "$@"
