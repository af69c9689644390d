#!/usr/bin/env bash
# The strategy comparison of docs/search.md: every strategy x seeds 0, 1, 2 searches with
# docs/search_winners/compare_search.yaml (the defaults of `ruas-nni search`, shortened), each winner
# and the paper genotype train with docs/search_winners/train_short.yaml (the default model's recipe
# without init_nrm, 150 steps of 160 crops) and are scored on every second lol_val pair (25 of the
# selection set, as the quick diagnostic of docs/objectives.md; never searched or trained on). Then
# scripts/search_comparison.py writes docs/search_comparison.csv.
# Run from the repository root with ../shared present; one process at a time, one thread each.
#
#   bash scripts/search_comparison.sh [RUNS] [TRAIN_YAML] [CSV] [WINNERS_DIR]
#
# Defaults: runs/comparison, docs/search_winners/train_short.yaml (the first comparison, trained
# with run G's recipe), docs/search_comparison.csv, docs/search_winners. The second comparison
# (train's defaults shortened, the Retinex bound in the search's objective) is
#   FULL=1 bash scripts/search_comparison.sh runs/comparison2 docs/search_winners/train_short_defaults.yaml \
#       docs/search_comparison_defaults.csv docs/search_winners/defaults
set -euo pipefail
export OMP_NUM_THREADS=1
R=${1:-runs/comparison}
TRAIN=${2:-docs/search_winners/train_short.yaml}
CSV=${3:-docs/search_comparison.csv}
WINNERS=${4:-docs/search_winners}
VAL=$R/lol_val25
mkdir -p "$R" "$VAL/low" "$VAL/high"
i=0
for f in $(ls ../shared/data/lol_val/low | sort); do
  if [ $((i % 2)) -eq 0 ]; then
    ln -sf "$(realpath ../shared/data/lol_val/low/$f)" "$VAL/low/$f"
    ln -sf "$(realpath ../shared/data/lol_val/high/$f)" "$VAL/high/$f"
  fi
  i=$((i + 1))
done
train_eval() {  # name arch [config val json]: train once, score once (both skipped when already done)
  local config=${3:-$TRAIN} val=${4:-$VAL} json=${5:-val25.json}
  [ -f "$R/$1/model.pt" ] || ruas-nni train --config "$config" --arch "$2" --out "$R/$1" --device cpu --threads 1 --quiet
  [ -f "$R/$1/$json" ] || ruas-nni evaluate --checkpoint "$R/$1/model.pt" --data "$val" --json "$R/$1/$json" --quiet
}
train_eval paper_short paper
# a full-length search copied to $R/default_s0 (e.g. the default search) is trained the same way
if [ -f "$R/default_s0/arch.json" ]; then train_eval default_s0_short "$R/default_s0/arch.json"; fi
for seed in 0 1 2; do
  for strategy in cooperative random separate joint darts; do
    name="cmp_${strategy}_s${seed}"
    [ -f "$R/$name/arch.json" ] || ruas-nni search --config docs/search_winners/compare_search.yaml \
        --data ../shared/data/unpaired/lol_low --strategy "$strategy" --seed "$seed" --out "$R/$name" --quiet
    train_eval "${name}_short" "$R/$name/arch.json"
  done
done
# FULL=1: also train every winner with train's defaults (examples/default_model.yaml, 400 steps of 256 crops)
# and score it on all 50 lol_val pairs (joint is left out: with nrm_period 1 it derives cooperative's genotypes)
if [ "${FULL:-0}" = 1 ]; then
  for seed in 0 1 2; do
    for strategy in cooperative separate darts random; do
      name="cmp_${strategy}_s${seed}"
      train_eval "${name}_full" "$R/$name/arch.json" examples/default_model.yaml ../shared/data/lol_val val50.json
    done
  done
fi
python scripts/search_comparison.py "$R" "$CSV" "$WINNERS"
