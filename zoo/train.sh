#!/usr/bin/env bash
# Trains the model zoo: every model in zoo/ was made by exactly these commands (see
# docs/results.md for the evaluation of each). Run from the repository root after
# `bash scripts/setup-venv.sh`; MULTIROBUST_DATA must point at the MNIST files.
# Usage: bash zoo/train.sh [NAME ...]   (default: every zoo model; each run resumes if
# interrupted; NAME may also be a config of zoo/configs/, e.g. eat-ft)
set -euo pipefail
cd "$(dirname "$0")/.."
MR=".venv/bin/multirobust"
COMMON=(--dataset mnist --arch small_cnn --limit 30000 --epochs 4 --eps-warmup 1.5 --steps 10 --batch-size 128
        --optimiser adam --lr 1e-3 --schedule piecewise --eval-n 500 --eval-steps 10 --seed 0 --quiet)

train() {  # NAME METHOD THREAT...
    local name=$1 method=$2; shift 2
    local threats=()
    for t in "$@"; do threats+=(--threat "$t"); done
    local extra=()
    [ "$method" = standard ] && extra=(--eps-warmup 0)
    "$MR" train "${COMMON[@]}" "${extra[@]}" --method "$method" "${threats[@]}" \
        --out "runs/zoo/$name" --resume
    cp "runs/zoo/$name/model.pt" "zoo/$name.pt"
}

declare -A RUNS=(
    [standard]="standard linf:0.3"
    [pgd-linf]="pgd linf:0.3"
    [pgd-l2]="pgd l2:2"
    [pgd-l1]="pgd l1:10"
    [max]="max linf:0.3 l2:2 l1:10"
    [avg]="avg linf:0.3 l2:2 l1:10"
    [msd]="msd linf:0.3 l2:2 l1:10"
    [random]="random linf:0.3 l2:2 l1:10"
)
ORDER=(standard pgd-linf pgd-l2 pgd-l1 max avg msd random)

# Issue 16: runs described by a TOML file in zoo/configs/ (every setting, including the
# starting checkpoint of a fine-tuning run), trained niced on one thread and resumable;
# zoo/fit_snapshots.py keeps every epoch's weights in runs/zoo/NAME/epoch-N.pt. These are
# candidates: they stay under runs/ unless listed in ZOO_CONFIGS (models that won their
# side-by-side comparison, docs/training.md).
CANDIDATES=(eat-ft max-ft max-apgd-ft eat-ft-l1 eat)
ZOO_CONFIGS=()
fit_config() {  # NAME
    local name=$1
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} nice -n "${NICE:-15}" .venv/bin/python \
        zoo/fit_snapshots.py "zoo/configs/$name.toml" --out "runs/zoo/$name" --resume --quiet
    for keep in "${ZOO_CONFIGS[@]}"; do
        [ "$keep" = "$name" ] && cp "runs/zoo/$name/model.pt" "zoo/$name.pt"
    done
    return 0
}

names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}" "${ZOO_CONFIGS[@]}")
for name in "${names[@]}"; do
    if [ -n "${RUNS[$name]:-}" ]; then
        # shellcheck disable=SC2086
        train "$name" ${RUNS[$name]}
    elif [ -f "zoo/configs/$name.toml" ]; then
        fit_config "$name"
    else
        echo "unknown zoo model: $name (known: ${ORDER[*]} ${CANDIDATES[*]})" >&2
        exit 2
    fi
done
