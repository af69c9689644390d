#!/usr/bin/env bash
# Rebuild the project's default model (ruas_nni/pretrained/default.pt) from scratch; see docs/training.md.
# Run from the repository root, with ../shared present and the virtual environment active.
# One thread per process: on two busy shared cores this is several times faster than torch's default,
# and the results are bit-identical only for the same thread count.
set -euo pipefail
export OMP_NUM_THREADS=1

# 1. The cooperative search (paper Algorithm 1) on the three darkest unpaired folders (~19 min).
ruas-nni search --data ../shared/data/unpaired/zerodce_real --data ../shared/data/unpaired/lime --data ../shared/data/unpaired/sci_medium --strategy cooperative --epochs 20 --crop 160 --seed 0 --out runs/default/search --device cpu

# 2. Train the searched winner (reference recipe; the authors' denoise.pt does not fit its NRM) ...
ruas-nni train --arch runs/default/search/arch.json --data ../shared/data/unpaired/zerodce_real --data ../shared/data/unpaired/lime --data ../shared/data/unpaired/sci_medium --steps 800 --crop 320 --seed 0 --out runs/default/train_searched --device cpu --threads 1

# 3. ... and the paper genotype with the tuned recipe (examples/default_model.yaml).
ruas-nni train --config examples/default_model.yaml --out runs/default/train_paper --device cpu --threads 1

# 4. Score both on LOL eval15 and package the better one (here: the paper genotype) with its metadata.
python scripts/make_default_model.py --model runs/default/train_paper/model.pt --eval ../shared/data/lol_eval15 --search runs/default/search/arch.json --compare searched_genotype=runs/default/train_searched/model.pt --note "paper genotype: the searched genotype scored lower and has more than 5000 parameters"
