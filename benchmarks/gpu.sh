#!/usr/bin/env bash
# The GPU path measured in one prepared run (issue 13): at most 5 minutes on one CUDA GPU.
#
# Prints a table of
#   * `enhance` images/s at 600x400 and 3840x2160 in float32, float16 and with CUDA graphs
#     (benchmarks/gpu_enhance.py: the Enhancer as `ruas-nni enhance --device cuda` runs it, and the
#     folded network alone on an image already on the GPU);
#   * one cooperative search step (and one NNI first-order DARTS step) at 320x320
#     (benchmarks/search_step.py --device cuda);
#   * one training step of `ruas-nni train --device cuda` (from two runs of 5 and 25 steps);
#   * end to end, the default search and training recipes (`ruas-nni search` / `ruas-nni train`
#     with no settings but --data and --device cuda) on the built-in demo data.
# Every stage has its own time limit, cut further so that the whole run ends within --budget
# seconds (default 290); a stage that runs out says so in the table instead of a number.
#
# Usage: benchmarks/gpu.sh [--checkpoint PATH] [--out DIR] [--budget SECONDS]
#   PYTHON=... selects the interpreter (default: python3). Exit status: 0 measured, 2 bad
#   arguments, 3 no CUDA GPU (one line on stderr, nothing measured).
set -u -o pipefail

usage() { echo "usage: benchmarks/gpu.sh [--checkpoint PATH] [--out DIR] [--budget SECONDS]" >&2; }
die() { echo "gpu.sh: $1" >&2; exit "${2:-2}"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CHECKPOINT=""
OUT=""
BUDGET=290
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) [ $# -ge 2 ] || die "--checkpoint needs a PATH"; CHECKPOINT="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a DIR"; OUT="$2"; shift 2 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (usage: benchmarks/gpu.sh [--checkpoint PATH] [--out DIR] [--budget SECONDS])" ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) die "--budget must be a whole number of seconds, got '$BUDGET'" ;; esac
[ "$BUDGET" -ge 60 ] && [ "$BUDGET" -le 3600 ] || die "--budget must be 60-3600 seconds, got $BUDGET"
if [ -z "$CHECKPOINT" ]; then
  for candidate in "$ROOT/../shared/reference/ruas_official/lol.pt" "$ROOT/shared/reference/ruas_official/lol.pt"; do
    [ -f "$candidate" ] && CHECKPOINT="$candidate" && break
  done
elif [ ! -f "$CHECKPOINT" ]; then
  die "--checkpoint $CHECKPOINT: no such file"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' (set PYTHON=...)"
command -v timeout >/dev/null 2>&1 || die "needs coreutils' timeout"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
GPU="$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)" \
  || die "cannot import torch with $PYTHON" 2
[ -n "$GPU" ] || die "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False): nothing measured" 3

START=$(date +%s)
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/ruas-gpu.XXXXXX")}"
mkdir -p "$OUT" || die "--out $OUT: cannot create the folder"
LOG="$OUT/gpu.log"
: > "$LOG"
ROWS=()
row() { ROWS+=("$(printf '%-46s %s' "$1" "$2")"); echo "[$(( $(date +%s) - START )) s] $1: $2" >&2; }

# run LIMIT NAME COMMAND...: at most LIMIT seconds, never past the budget (10 s kept for the table).
run() {
  local limit="$1" name="$2"; shift 2
  local left=$(( BUDGET - 10 - ($(date +%s) - START) ))
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -lt 5 ]; then echo "skipped: out of time" > "$OUT/$name.status"; return 124; fi
  echo "== $name (limit ${limit}s): $*" >> "$LOG"
  local t0; t0=$(date +%s.%N)
  timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.out" 2>> "$LOG"
  local status=$?
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }' > "$OUT/$name.seconds"
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then echo "timed out after ${limit}s" > "$OUT/$name.status"
  elif [ $status -ne 0 ]; then echo "failed (exit $status, see $LOG)" > "$OUT/$name.status"
  else echo ok > "$OUT/$name.status"; fi
  return $status
}
seconds() { printf '%.1f s' "$(cat "$OUT/$1.seconds")"; }
outcome() { if [ "$(cat "$OUT/$1.status")" = ok ]; then seconds "$1"; else cat "$OUT/$1.status"; fi; }

echo "GPU: $GPU; budget ${BUDGET}s; results in $OUT" >&2

# 1. enhance images/s.
CKPT_ARGS=(); [ -n "$CHECKPOINT" ] && CKPT_ARGS=(--checkpoint "$CHECKPOINT")
if run 80 enhance "$PYTHON" "$ROOT/benchmarks/gpu_enhance.py" "${CKPT_ARGS[@]}" --seconds 2; then
  while IFS= read -r line; do
    row "enhance $(echo "$line" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r["size"], r["mode"], "batch", r["batch"])')" \
        "$(echo "$line" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); e=r["enhancer_images_per_s"]; print((f"Enhancer {e} img/s, " if e else "") + f"network {r[\"network_images_per_s\"]} img/s, peak {r[\"peak_gpu_mb\"]} MB")')"
  done < <(grep '^{' "$OUT/enhance.out")
else
  row "enhance images/s" "$(cat "$OUT/enhance.status")"
fi

# 2. demo data for the training and search runs (synthesised on the CPU, a few seconds).
run 40 demo-data "$PYTHON" -c "import sys; from ruas_nni.training.demo_data import make_demo_data; print(make_demo_data(sys.argv[1]).train)" "$OUT/data"
TRAIN_DATA="$OUT/data/train"

# 3. one cooperative search step (and one DARTS step), 320x320 crops.
if run 60 search-step "$PYTHON" "$ROOT/benchmarks/search_step.py" --device cuda --rounds 1 --batches 11 --json "$OUT/search_step.json"; then
  row "cooperative search step, amortised (320x320)" "$("$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(f"{r[\"cooperative_amortised_s\"]*1000:.0f} ms (IEM {r[\"cooperative_iem_step_s\"]*1000:.0f} ms, IEM+NRM {r[\"cooperative_iem_nrm_step_s\"]*1000:.0f} ms; DARTS 1st order {r[\"darts_first_order_s\"]*1000:.0f} ms)")' "$OUT/search_step.json")"
else
  row "cooperative search step (320x320)" "$(cat "$OUT/search-step.status")"
fi

# 4. one training step: (time of 25 steps - time of 5 steps) / 20, start-up cancels out.
run 35 train-5 "$PYTHON" -m ruas_nni train --device cuda --data "$TRAIN_DATA" --steps 5 --out "$OUT/train5" --quiet
run 45 train-25 "$PYTHON" -m ruas_nni train --device cuda --data "$TRAIN_DATA" --steps 25 --out "$OUT/train25" --quiet
if [ "$(cat "$OUT/train-5.status")" = ok ] && [ "$(cat "$OUT/train-25.status")" = ok ]; then
  row "training step (paper genotype, 320x320 crops)" \
      "$("$PYTHON" -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{(b-a)/20*1000:.0f} ms (5 steps {a:.1f} s, 25 steps {b:.1f} s, start-up included)")' "$(cat "$OUT/train-5.seconds")" "$(cat "$OUT/train-25.seconds")")"
else
  row "training step" "5 steps: $(outcome train-5); 25 steps: $(outcome train-25)"
fi

# 5. the default recipes end to end on the demo data.
run 60 search-default "$PYTHON" -m ruas_nni search --device cuda --data "$TRAIN_DATA" --out "$OUT/search" --quiet
row "default search recipe, end to end (demo data)" "$(outcome search-default)"
run 60 train-default "$PYTHON" -m ruas_nni train --device cuda --data "$TRAIN_DATA" --out "$OUT/train" --quiet
row "default training recipe, end to end (demo data)" "$(outcome train-default)"

echo
echo "RUAS on $GPU ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - START )) s in all; logs: $LOG)"
printf '%s\n' "${ROWS[@]}"
