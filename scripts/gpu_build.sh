# Sourced by the GPU-machine scripts: configure and build build-gpu/ for sm_90 unless it is there.
# s6_gpu_build [target...]   (no target: everything)
# Sourcing also sets what every GPU script shares: $OUT (the device tool's output folder, or
# /tmp/s6-out elsewhere) and NCCL_NVLS_ENABLE=0 (the device README: NVLink multicast stays off).
OUT=${OUT:-/tmp/s6-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
# A GPU machine without the -dev packages (and no network to install them) can run the build that
# scripts/make_prebuilt.sh packed on the development machine, when the call carries `.prebuilt`:
# used when a native configure fails, or straight away with S6_PREBUILT=1 (saves the device the
# build; the bundle must be packed from the same commit as the tree that travels).
s6_use_prebuilt() {
  [ -f .prebuilt/build-gpu.tar.xz ] || return 1
  rm -rf build-gpu && tar -xJf .prebuilt/build-gpu.tar.xz || return 1
  echo "s6: using the prebuilt build-gpu/ of commit $(cat build-gpu/.prebuilt) (no native configure)"
  s6_prebuilt_env
}
s6_prebuilt_env() {
  # The test binaries embed /work/main paths (the train binary, the configs).
  if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
  [ "$(readlink -f /work/main)" = "$(readlink -f "$PWD")" ] ||
    { echo "s6: /work/main is another tree; the prebuilt tests cannot run here" >&2; return 1; }
  local dirs="$PWD/build-gpu/lib"
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    local found
    found=$(find /usr/local/cuda*/ /usr/lib /opt -name "$lib" 2>/dev/null | head -1)
    [ -n "$found" ] && dirs="$dirs:$(dirname "$found")"
  done
  export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldd build-gpu/train | grep "not found" && return 1
  return 0
}
s6_gpu_build() {
  local out=$OUT  # set when this file was sourced
  if [ -f build-gpu/.prebuilt ]; then s6_prebuilt_env; return; fi
  if [ -n "${S6_PREBUILT:-}" ]; then s6_use_prebuilt; return; fi
  if [ ! -f build-gpu/build.ninja ]; then
    if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        >"$out/configure.log" 2>&1; then
      tail -15 "$out/configure.log"
      s6_use_prebuilt && return 0
      return 1
    fi
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build build-gpu -j 16 "${targets[@]}" >"$out/build.log" 2>&1 ||
    { grep -E "error|Error" -A4 "$out/build.log" | head -80; return 1; }
}
