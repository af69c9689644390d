#!/usr/bin/env bash
# The landscape of docs/landscape/landscape.csv (60+ genotypes), one process at a time, resumable:
# rerun it after an interruption and it continues. Run from the repository root:
#   PY=.venv/bin/python bash docs/landscape/run_landscape60.sh
set -u
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
W=runs/landscape60
CSV=$W/landscape.csv
COMMON=(--csv "$CSV" --workdir "$W" --python "$PY" --steps 120 --crop 160 --nice 0 --val /work/shared/data/lol_val --val-every 2)
# search winners handed over by the search work (copied so that the docs keep them)
winners() {
  local args=()
  for f in docs/landscape/archs/*.json; do args+=(--arch "$f"); done
  echo "${args[@]}"
}
copy_winners() {
  local src=${WINNERS:-/work/wt-search/docs/search_winners}
  [ -d "$src" ] || return 0
  find "$src" -name '*.json' | sort | while read -r f; do
    rel=${f#"$src"/}; name=winner-$(echo "${rel%.json}" | tr '/' '-')
    grep -q '"iem"' "$f" && [ ! -e "docs/landscape/archs/$name.json" ] && cp "$f" "docs/landscape/archs/$name.json"
  done
}
OURS=(--setup exposure_denoise docs/landscape/recipe_exposure_denoise.yaml "$PWD")
REF=(--setup reference docs/landscape/recipe_reference.yaml "$PWD")
copy_winners
# every run is scored on the same 25 lol_val pairs (every 2nd in file-name order): CPU time
# 1. our objective (the shipped recipe)
"$PY" scripts/landscape.py run "${COMMON[@]}" "${OURS[@]}" --paper $(winners) --uniform --random 51 --seed 0
# 2. control: the paper genotype with the shipped recipe's init_nrm (denoise.pt)
"$PY" scripts/landscape.py run "${COMMON[@]}" --setup exposure_denoise_init docs/landscape/recipe_exposure_denoise_init.yaml "$PWD" --paper
# 3. winners that arrived meanwhile, our objective
copy_winners
"$PY" scripts/landscape.py run "${COMMON[@]}" "${OURS[@]}" --paper $(winners) --uniform --random 51 --seed 0
# 4. the authors' objective, the same genotypes
"$PY" scripts/landscape.py run "${COMMON[@]}" "${REF[@]}" --paper $(winners) --uniform --random 51 --seed 0
