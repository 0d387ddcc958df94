#!/usr/bin/env bash
# On the GPU machine: the two paper runs of issue 6 side by side on one GPU, each time-boxed by
# train.max_minutes (then evaluated): selective copying (L 4096) and induction heads (train 256,
# evaluate 2^6..2^20). Running both at once shares the GPU (the induction step is latency-bound,
# the selective-copying step throughput-bound), so each is slower than alone.
# Usage: scripts/gpu_paper_runs.sh <minutes> [selective-copying overrides...]
set -uo pipefail
source scripts/gpu_build.sh
minutes=${1:-7}; shift || true
s6_gpu_build train || exit 1
start=$(date +%s)
build-gpu/train --config configs/selective_copying.yaml device=cuda run.dir=runs/selective_copying \
  train.max_minutes="$minutes" --resume never --overwrite optim.lr=1e-3 train.steps=1000000 eval.every=2000 \
  eval.num_examples=512 "$@" >"$OUT/selective_copying.log" 2>&1 &
sc=$!
build-gpu/train --config configs/induction_heads.yaml device=cuda run.dir=runs/induction_heads \
  train.max_minutes="$minutes" --resume never --overwrite train.steps=10000000 eval.every=0 \
  >"$OUT/induction_heads.log" 2>&1 &
ih=$!
wait $sc; echo "selective_copying: exit $? after $(( $(date +%s) - start )) s"
wait $ih; echo "induction_heads: exit $? after $(( $(date +%s) - start )) s"
for r in selective_copying induction_heads; do
  cp "runs/$r/metrics.jsonl" "$OUT/$r.metrics.jsonl" 2>/dev/null
  echo "== $r"; grep -E "^step|eval step|error|Error|stopping" "$OUT/$r.log" | tail -22
done
