#!/usr/bin/env bash
# The landscape of docs/landscape/landscape.csv, one process at a time, resumable: rerun it after an
# interruption and it continues where it stopped (rows already in the CSV are skipped).
# Run from the repository root:   PY=.venv/bin/python bash docs/landscape/run_landscape60.sh
# Every genotype: 120 steps of 160-pixel crops on ../shared/data/unpaired/lol_low, seed 0, one thread;
# every run is scored on the same 25 lol_val pairs (every 2nd in file-name order; CPU time).
set -u
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
W=runs/landscape60
CSV=$W/landscape.csv
COMMON=(--csv "$CSV" --workdir "$W" --python "$PY" --steps 120 --crop 160 --nice 0 --val ../shared/data/lol_val
        --val-every 2)
OURS=(--setup exposure_denoise docs/landscape/recipe_exposure_denoise.yaml "$PWD")
REF=(--setup reference docs/landscape/recipe_reference.yaml "$PWD")
# search winners handed over by the search work: copied into docs/landscape/archs/ (the docs keep them)
copy_winners() {
  local src=${WINNERS:-../wt-search/docs/search_winners}
  [ -d "$src" ] || return 0
  find "$src" -name '*.json' | sort | while read -r f; do
    rel=${f#"$src"/}; name=winner-$(echo "${rel%.json}" | tr '/' '-')
    [ -e "docs/landscape/archs/$name.json" ] && continue
    # a genotype already there (e.g. two strategies found the same one) is trained once
    "$PY" -c 'import json, sys, glob
g = lambda p: (json.load(open(p)).get("iem"), json.load(open(p)).get("nrm"))
new = g(sys.argv[1])
sys.exit(new[0] is None or any(g(q) == new for q in glob.glob("docs/landscape/archs/*.json")))' "$f" \
      && cp "$f" "docs/landscape/archs/$name.json"
  done
}
archs() { for f in docs/landscape/archs/coop_budget_s0.json docs/landscape/archs/winner-*.json; do
            [ -e "$f" ] && printf -- '--arch %s ' "$f"; done; }
# 1. our objective (the shipped recipe, no init_nrm): paper, the first pass's searched genotype,
#    7 structured (one operation everywhere), random (seed 0); 51 random were planned (60 genotypes),
#    cut to 33 when the shared cores (load 4-5) made a row take ~100 s, to leave time for step 3
"$PY" scripts/landscape.py run "${COMMON[@]}" "${OURS[@]}" --paper --arch docs/landscape/archs/coop_budget_s0.json \
    --uniform --random "${RANDOM_OURS:-33}" --seed 0
# 2. search winners (whatever ../wt-search/docs/search_winners held by then), our objective
copy_winners
# shellcheck disable=SC2046
"$PY" scripts/landscape.py run "${COMMON[@]}" "${OURS[@]}" $(archs)
# 3. the authors' objective: paper, searched, random first (the structured 3x3 ones are the slowest)
# shellcheck disable=SC2046
"$PY" scripts/landscape.py run "${COMMON[@]}" "${REF[@]}" --paper $(archs) --random "${RANDOM_OURS:-33}" --seed 0
# 4. control: the paper genotype with the shipped recipe's init_nrm (denoise.pt)
"$PY" scripts/landscape.py run "${COMMON[@]}" --setup exposure_denoise_init docs/landscape/recipe_exposure_denoise_init.yaml \
    "$PWD" --paper
# 5. the authors' objective, structured genotypes
"$PY" scripts/landscape.py run "${COMMON[@]}" "${REF[@]}" --uniform
# 6. more random genotypes, both objectives (the 60 planned): RANDOM_OURS=51 bash docs/landscape/run_landscape60.sh
