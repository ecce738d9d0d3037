#!/usr/bin/env bash
# Evaluates the zoo models for docs/results.md: every model under ℓ∞ 0.3, ℓ2 2, ℓ1 10 and
# spatial 30°/3px with `multirobust evaluate`, then tabulates the reports.
# Usage: N=1000 PRESET=standard [BEST=NAME] bash zoo/evaluate.sh [NAME ...]   (resumable;
# BEST also runs zoo/independent_check.py on that model)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
PRESET=${PRESET:-standard}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(standard pgd-linf pgd-l2 pgd-l1 max avg msd random)
    # Issue 16's models, once they are in the zoo.
    for extra in eat-ft max-ft max-apgd-ft; do
        [ -f "zoo/$extra.pt" ] && names+=("$extra")
    done
fi
for name in "${names[@]}"; do
    .venv/bin/multirobust evaluate --checkpoint "zoo/$name.pt" --dataset mnist \
        --threat linf:0.3 --threat l2:2 --threat l1:10 --threat spatial:30,3 \
        --n "$N" --preset "$PRESET" --no-curves --resume --quiet \
        --out "runs/zoo-eval/$PRESET-$N/$name"
done
.venv/bin/python zoo/results.py "runs/zoo-eval/$PRESET-$N"
# The independent check of issue 16 (reference AutoAttack cloned into an ignored folder,
# adv_lib's ℓ1 attacks) on one model's ℓ∞, ℓ2 and ℓ1 columns: BEST=NAME bash zoo/evaluate.sh
if [ -n "${BEST:-}" ]; then
    .venv/bin/python zoo/independent_check.py "zoo/$BEST.pt" --n "$N" \
        --ours "runs/zoo-eval/$PRESET-$N/$BEST/report.json" \
        --json "runs/zoo-eval/$PRESET-$N/$BEST/independent.json"
fi
