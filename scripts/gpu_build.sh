# Sourced by the GPU-machine scripts: configure and build build-gpu/ for sm_90 unless it is there.
# s6_gpu_build [target...]   (no target: everything)
# Sourcing also sets what every GPU script shares: $OUT (the device tool's output folder, or
# /tmp/s6-out elsewhere) and NCCL_NVLS_ENABLE=0 (the device README: NVLink multicast stays off).
OUT=${OUT:-/tmp/s6-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
s6_gpu_build() {
  local out=$OUT  # set when this file was sourced
  if [ ! -f build-gpu/build.ninja ]; then
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; return 1; }
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build build-gpu -j 16 "${targets[@]}" >"$out/build.log" 2>&1 ||
    { grep -E "error|Error" -A4 "$out/build.log" | head -80; return 1; }
}
