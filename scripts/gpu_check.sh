#!/usr/bin/env bash
# On the GPU machine (device tool): build with CUDA for sm_90 into build-gpu/, run the whole ctest
# suite (GPU tests included) and, unless NO_BENCH=1, the benchmark (`bench --all`: the scan table,
# then the training steps, fp32 and bf16). Full logs go to $OUT.
# Usage: scripts/gpu_check.sh [ctest -R regex]
#   The tests that touch the GPU alone (the rest is CPU-only and runs in CI): "cuda|mixed|argmax|
#   accuracy|linear|cross_entropy". S6_PREBUILT=1 (with `.prebuilt` carried) skips the build.
set -uo pipefail
source scripts/gpu_build.sh
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
s6_gpu_build || exit 1
filter=()
[ $# -ge 1 ] && filter=(-R "$1")
# ctest runs 4 tests at once; the CPU trainer tests each spawn `train`, whose OpenMP would take all
# 16 cores per process (42-66 s per test seen that way on the H200 machine).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
timeout "${CTEST_TIMEOUT:-400}" ctest --test-dir build-gpu --output-on-failure -j 4 "${filter[@]}" >"$OUT/ctest.log" 2>&1
rc=$?
grep -E "Failed|\*\*\*|tests passed|tests failed|Skipped" "$OUT/ctest.log" | tail -30
if [ -z "${NO_BENCH:-}" ] && [ -x build-gpu/bench/bench ]; then
  build-gpu/bench/bench --all 2>&1 | tee "$OUT/bench.txt"
fi
exit $rc
