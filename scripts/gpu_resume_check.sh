#!/usr/bin/env bash
# On the GPU machine: the checkpoint issue's bit-exact test with device=cuda. Trains N steps
# straight, and N/2 + resume to N, then compares every logged loss and every checkpoint dataset.
# The schedule is constant: a cosine one depends on train.steps, which the two halves change.
set -uo pipefail
source scripts/gpu_build.sh
s6_gpu_build train || exit 1
cfg=${1:-configs/selective_copying_cpu.yaml}; n=${2:-40}
common=(device=cuda checkpoint.every=10 train.log_every=1 eval.every=0 schedule.kind=constant schedule.warmup_steps=5 --resume auto)
rm -rf runs/resume_a runs/resume_b
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_a train.steps=$n >"$OUT/resume_a.log" 2>&1 || exit 1
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_b train.steps=$((n / 2)) >"$OUT/resume_b1.log" 2>&1 || exit 1
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_b train.steps=$n >"$OUT/resume_b2.log" 2>&1 || exit 1
python3 scripts/compare_runs.py runs/resume_a runs/resume_b "$n" --label "resume"
