#!/usr/bin/env bash
# On the GPU machine: where a training step's time goes. Runs <steps> steps twice: plainly (the
# ms/step to trust) and with S6_PROFILE=1 (a synchronized per-op table: proportions only).
# Usage: scripts/gpu_profile.sh <config> <steps> [key=value ...]
set -uo pipefail
source scripts/gpu_build.sh
config=$1; steps=$2; shift 2
name=$(basename "$config" .yaml)
s6_gpu_build train || exit 1
common=(--config "$config" device=cuda train.steps="$steps" train.log_every=$((steps / 2)) eval.every=0
        eval.num_examples=64 eval.lengths=[] checkpoint.every=0 schedule.warmup_steps=0 --resume never --overwrite "$@")
build-gpu/train "${common[@]}" run.dir="runs/prof-$name-plain" >"$OUT/$name.plain.log" 2>&1
echo "== $name plain: $(grep -E '^step' "$OUT/$name.plain.log" | tail -1)"
S6_PROFILE=1 build-gpu/train "${common[@]}" run.dir="runs/prof-$name" >"$OUT/$name.profile.log" 2>&1
sed -n '/S6_PROFILE/,/eval step/p' "$OUT/$name.profile.log" | head -30
