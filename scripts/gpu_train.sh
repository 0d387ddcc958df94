#!/usr/bin/env bash
# On the GPU machine: the paper's synthetic runs within a time box each (train.max_minutes stops
# them gracefully), then the final evaluation. Builds build-gpu/ first if needed.
# Usage: scripts/gpu_train.sh <config> <minutes> [key=value ...]
set -uo pipefail
source scripts/gpu_build.sh
config=$1; minutes=$2; shift 2
name=$(basename "$config" .yaml)
s6_gpu_build train || exit 1
start=$(date +%s)
build-gpu/train --config "$config" device=cuda run.dir="runs/$name" train.max_minutes="$minutes" \
  --resume never --overwrite "$@" >"$OUT/$name.log" 2>&1
rc=$?
echo "$name: exit $rc after $(( $(date +%s) - start )) s"
cp "runs/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
grep -E "^step|eval step|error|Error" "$OUT/$name.log" | tail -25
exit $rc
