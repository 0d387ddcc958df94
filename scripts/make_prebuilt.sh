#!/usr/bin/env bash
# On the development machine: pack build-gpu/ (configured with -DCMAKE_CUDA_ARCHITECTURES=90 at
# /work/main) into .prebuilt/build-gpu.tar.xz for a GPU machine that lacks the -dev packages and
# cannot install them (no network): the programs, ctest's files, and the shared libraries
# they load that are neither glibc's nor CUDA's. scripts/gpu_build.sh unpacks it when a native
# configure fails. Carry `.prebuilt` in the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$PWD" = /work/main ] || { echo "make_prebuilt: the test binaries embed /work/main paths; run it there" >&2; exit 1; }
bins=(build-gpu/train build-gpu/generate build-gpu/export build-gpu/bench/bench build-gpu/tests/s6_tests)
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "make_prebuilt: $b missing: build build-gpu first" >&2; exit 1; }; done
stage=$(mktemp -d)
mkdir -p "$stage/build-gpu/lib"
# glibc, the compiler runtime and CUDA come from the GPU machine (newer or matched to its driver).
skip='/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so|/usr/local/cuda'
ldd "${bins[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | grep -Ev "$skip" |
  while read -r lib; do cp -L "$lib" "$stage/build-gpu/lib/"; done
find build-gpu -name 'CTestTestfile.cmake' -o -name '*_include-*.cmake' -o -name '*_tests-*.cmake' |
  while read -r f; do mkdir -p "$stage/$(dirname "$f")"; cp "$f" "$stage/$f"; done
for b in "${bins[@]}"; do mkdir -p "$stage/$(dirname "$b")"; cp "$b" "$stage/$b"; done
git rev-parse HEAD >"$stage/build-gpu/.prebuilt"
mkdir -p .prebuilt
tar -C "$stage" -cJf .prebuilt/build-gpu.tar.xz build-gpu
rm -rf "$stage"
echo "make_prebuilt: .prebuilt/build-gpu.tar.xz ($(du -h .prebuilt/build-gpu.tar.xz | cut -f1)) at $(git rev-parse --short HEAD)"
