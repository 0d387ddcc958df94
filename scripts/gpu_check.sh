#!/usr/bin/env bash
# On the GPU machine (device tool): build with CUDA for sm_90 into build-gpu/, run the whole ctest
# suite (GPU tests included) and, unless NO_BENCH=1, the benchmark. Full logs go to $OUT.
# Usage: scripts/gpu_check.sh [ctest -R regex]
set -uo pipefail
OUT=${OUT:-/tmp/s6-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    >"$OUT/configure.log" 2>&1; then
  tail -40 "$OUT/configure.log"; exit 1
fi
if ! cmake --build build-gpu -j 16 >"$OUT/build.log" 2>&1; then
  grep -E "error|Error" -A4 "$OUT/build.log" | head -80; exit 1
fi
filter=()
[ $# -ge 1 ] && filter=(-R "$1")
ctest --test-dir build-gpu --output-on-failure -j 4 "${filter[@]}" >"$OUT/ctest.log" 2>&1
rc=$?
grep -E "Failed|\*\*\*|tests passed|tests failed|Skipped" "$OUT/ctest.log" | tail -30
if [ -z "${NO_BENCH:-}" ] && [ -x build-gpu/bench/bench ]; then
  build-gpu/bench/bench 2>&1 | tee "$OUT/bench.txt"
fi
exit $rc
