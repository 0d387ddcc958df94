#!/usr/bin/env bash
# On the GPU machine: scripts/paper_sweep.py with the build made (or unpacked) first and, with
# S6_MPS=1, NVIDIA's Multi-Process Service running for the sweep's duration, so the runs' small
# kernels execute side by side instead of taking turns on the GPU (the daemon is a user-space
# process; it changes no GPU setting and is stopped when this script exits).
# Usage: [S6_MPS=1] scripts/gpu_paper_sweep.sh <paper_sweep.py arguments...>
set -uo pipefail
source scripts/gpu_build.sh
s6_gpu_build train || exit 1

if [ "${S6_MPS:-0}" = 1 ]; then
  if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/s6-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/s6-mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then
      trap 'echo quit | nvidia-cuda-mps-control' EXIT
      # A client that cannot reach the daemon could hang: prove one short run first.
      if timeout 90 build-gpu/train --config configs/induction_heads.yaml device=cuda train.steps=100 \
          'eval.lengths=[]' eval.num_examples=8 run.dir=/tmp/s6-mps-check --resume never >/tmp/s6-mps-check.log 2>&1; then
        echo "s6: MPS daemon started (a 100-step check run passed)"
      else
        echo "s6: a check run under MPS failed (tail below); running without MPS"; tail -5 /tmp/s6-mps-check.log
        echo quit | nvidia-cuda-mps-control; trap - EXIT
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      fi
    else
      echo "s6: MPS daemon did not start; running without it"
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
  else
    echo "s6: nvidia-cuda-mps-control not found; running without MPS"
  fi
fi
PYTHONUNBUFFERED=1 python3 scripts/paper_sweep.py --train build-gpu/train "$@"
