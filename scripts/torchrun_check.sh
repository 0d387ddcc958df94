#!/usr/bin/env bash
# torchrun with several ranks: two CPU ranks under torchrun (whose agent store holds MASTER_PORT)
# must train exactly as the built-in launcher's two ranks do (same losses, bitwise same checkpoint).
#   scripts/torchrun_check.sh [BUILD_DIR] [TORCHRUN]      (TORCHRUN default: torchrun)
# (--nproc_per_node, --no_python: the spellings every torchrun version accepts.) Needs torchrun on PATH or given; prints the two loss curves' last lines and PASS/FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
TORCHRUN=${2:-torchrun}
TMP=$(mktemp -d /tmp/s6_torchrun.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
ARGS=(--config configs/copying_cpu.yaml device=cpu train.steps=60 schedule.warmup_steps=0 train.log_every=10
      eval.every=0 eval.num_examples=128 checkpoint.every=0 --resume never)

echo "== torchrun --nproc_per_node 2 --no_python $BUILD/train ... device=cpu"
OMP_NUM_THREADS=1 $TORCHRUN --nproc_per_node 2 --no_python "$BUILD/train" "${ARGS[@]}" "run.dir=$TMP/torchrun" \
  2>&1 | tee "$TMP/torchrun.log" | grep -E "launch:|rendezvous|step 60/|finished|error" || true
echo "== $BUILD/train --nproc 2 ... device=cpu"
OMP_NUM_THREADS=1 "$BUILD/train" "${ARGS[@]}" "run.dir=$TMP/nproc" --nproc 2 2>&1 | tee "$TMP/nproc.log" |
  grep -E "step 60/|finished|error" || true

a="$TMP/torchrun/checkpoints/step_00000060.h5" b="$TMP/nproc/checkpoints/step_00000060.h5"
[ -f "$a" ] && [ -f "$b" ] || { echo "FAIL: a run did not finish (logs above)"; exit 1; }
# Losses as logged (every rank's mean), then the weights bit for bit (exported safetensors bytes).
"$BUILD/export" --checkpoint "$a" --out "$TMP/hf_torchrun" >/dev/null
"$BUILD/export" --checkpoint "$b" --out "$TMP/hf_nproc" >/dev/null
if diff <(grep -o '"loss": [^,]*' "$TMP/torchrun/metrics.jsonl") <(grep -o '"loss": [^,]*' "$TMP/nproc/metrics.jsonl") &&
   cmp "$TMP/hf_torchrun/model.safetensors" "$TMP/hf_nproc/model.safetensors"; then
  echo "PASS: torchrun's 2 ranks match --nproc 2 ($(grep -c '"loss"' "$TMP/nproc/metrics.jsonl") logged losses, weights bitwise)"
else
  echo "FAIL: torchrun's 2 ranks differ from --nproc 2"
  exit 1
fi
