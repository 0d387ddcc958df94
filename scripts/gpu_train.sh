#!/usr/bin/env bash
# On the GPU machine: the paper's synthetic runs within a time box each (train.max_minutes stops
# them gracefully), then the final evaluation. Expects build-gpu/ from scripts/gpu_check.sh.
# Usage: scripts/gpu_train.sh <config> <minutes> [key=value ...]
set -uo pipefail
OUT=${OUT:-/tmp/s6-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
config=$1; minutes=$2; shift 2
name=$(basename "$config" .yaml)
if [ ! -x build-gpu/train ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/configure.log" 2>&1 &&
    cmake --build build-gpu -j 16 --target train >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
start=$(date +%s)
build-gpu/train --config "$config" device=cuda run.dir="runs/$name" train.max_minutes="$minutes" \
  --resume never "$@" >"$OUT/$name.log" 2>&1
rc=$?
echo "$name: exit $rc after $(( $(date +%s) - start )) s"
cp "runs/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
grep -E "^step|eval step|error|Error" "$OUT/$name.log" | tail -25
exit $rc
