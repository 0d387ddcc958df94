# Sourced by the GPU-machine scripts: configure and build build-gpu/ for sm_90 unless it is there.
# s6_gpu_build [target...]   (no target: everything)
s6_gpu_build() {
  local out=${OUT:-/tmp/s6-out}
  mkdir -p "$out"
  if [ ! -f build-gpu/build.ninja ]; then
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; return 1; }
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build build-gpu -j 16 "${targets[@]}" >"$out/build.log" 2>&1 ||
    { grep -E "error|Error" -A4 "$out/build.log" | head -80; return 1; }
}
