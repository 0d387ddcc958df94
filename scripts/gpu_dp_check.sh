#!/usr/bin/env bash
# On the GPU machine: world size 1 through the NCCL data-parallel path (--nproc 1) against the
# plain single-GPU run, same config and seed; every logged loss and the final checkpoint must match.
# Then the same through torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*), if installed.
set -uo pipefail
source scripts/gpu_build.sh
s6_gpu_build train || exit 1
# Further arguments are config overrides for every run, e.g. dist.bucket_mb=0.02 for many buckets.
cfg=${1:-configs/selective_copying_cpu.yaml}; n=${2:-30}
common=(device=cuda train.steps=$n train.log_every=1 eval.every=0 schedule.kind=constant schedule.warmup_steps=0
        checkpoint.every=0 --resume never --overwrite "${@:3}")
rm -rf runs/dp_plain runs/dp_nccl
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/dp_plain >"$OUT/dp_plain.log" 2>&1 || { tail "$OUT/dp_plain.log"; exit 1; }
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/dp_nccl --nproc 1 >"$OUT/dp_nccl.log" 2>&1 || { tail "$OUT/dp_nccl.log"; exit 1; }
python3 scripts/compare_runs.py runs/dp_plain runs/dp_nccl "$n" --label "world size 1 via NCCL vs plain"
if command -v torchrun >/dev/null; then
  rm -rf runs/dp_torchrun
  torchrun --nproc-per-node 1 --master-port 29517 --no-python build-gpu/train --config "$cfg" "${common[@]}" \
    run.dir=runs/dp_torchrun >"$OUT/dp_torchrun.log" 2>&1 || { tail "$OUT/dp_torchrun.log"; exit 1; }
  python3 scripts/compare_runs.py runs/dp_plain runs/dp_torchrun "$n" --label "torchrun --nproc-per-node 1 vs plain"
fi
