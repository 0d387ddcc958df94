#!/usr/bin/env bash
# On the GPU machine: several runs of one config side by side on one GPU, each time-boxed by
# train.max_minutes, for hyper-parameter sweeps (compare accuracy against steps: the runs share the
# GPU, so their ms/step is not the solo figure; take that from `bench --train`).
# Usage: scripts/gpu_parallel_runs.sh <config> <minutes> "<overrides of run 1>" "<overrides of run 2>" ...
set -uo pipefail
source scripts/gpu_build.sh
config=$1; minutes=$2; shift 2
name=$(basename "$config" .yaml)
s6_gpu_build train || exit 1
start=$(date +%s)
pids=(); i=0
for overrides in "$@"; do
  i=$((i + 1))
  # shellcheck disable=SC2086  # each argument is a space-separated list of key=value overrides
  build-gpu/train --config "$config" device=cuda run.dir="runs/${name}_$i" \
    train.max_minutes="$minutes" --resume never --overwrite $overrides >"$OUT/${name}_$i.log" 2>&1 &
  pids+=($!)
done
i=0
for overrides in "$@"; do
  wait "${pids[$i]}"; rc=$?; i=$((i + 1))
  echo "== run $i ($overrides): exit $rc after $(( $(date +%s) - start )) s"
  cp "runs/${name}_$i/metrics.jsonl" "$OUT/${name}_$i.metrics.jsonl" 2>/dev/null
  grep -E "eval step|error|Error|stopping" "$OUT/${name}_$i.log" | tail -8
  grep -E "^step" "$OUT/${name}_$i.log" | tail -1
done
