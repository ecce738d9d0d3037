#!/usr/bin/env bash
# Evaluates the zoo models for docs/results.md: every model under ℓ∞ 0.3, ℓ2 2, ℓ1 10 and
# spatial 30°/3px with `multirobust evaluate`, then tabulates the reports.
# Usage: N=1000 PRESET=standard bash zoo/evaluate.sh [NAME ...]   (resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
PRESET=${PRESET:-standard}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(standard pgd-linf pgd-l2 pgd-l1 max avg msd random)
for name in "${names[@]}"; do
    .venv/bin/multirobust evaluate --checkpoint "zoo/$name.pt" --dataset mnist \
        --threat linf:0.3 --threat l2:2 --threat l1:10 --threat spatial:30,3 \
        --n "$N" --preset "$PRESET" --no-curves --resume --quiet \
        --out "runs/zoo-eval/$PRESET-$N/$name"
done
.venv/bin/python zoo/results.py "runs/zoo-eval/$PRESET-$N"
