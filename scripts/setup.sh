# Shared set-up for train.sh and test.sh (sourced): install missing Debian/Ubuntu packages,
# then configure and build Release into build/. CUDA code is compiled when nvcc exists.

S6_PACKAGES=(cmake ninja-build g++ pkg-config libhdf5-dev libyaml-cpp-dev libfmt-dev doctest-dev
             libopenblas-dev nlohmann-json3-dev)

# train.sh also wants the plotting dependency (scripts/plot_metrics.py).
S6_TRAIN_PACKAGES=(python3-matplotlib)

s6_missing_packages() {
  local missing=()
  for p in "${S6_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

s6_install_packages() {
  local missing
  missing=$(s6_missing_packages "$@")
  [ -z "$missing" ] && return 0
  echo "s6: installing missing packages: $missing"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "s6: cannot install ($missing): not root and no sudo. Install them with apt-get and re-run." >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "s6: apt-get not found; install the equivalents of: $missing" >&2
    return 1
  fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing; } \
      >/tmp/s6-apt.log 2>&1; then
    echo "s6: apt-get could not install: $missing (log: /tmp/s6-apt.log). Install them and re-run." >&2
    return 1
  fi
}

s6_build() {
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  local generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  if [ ! -f build/CMakeCache.txt ]; then
    cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${S6_CMAKE_ARGS:-} >.s6-configure.log 2>&1 \
      || { cat .s6-configure.log >&2; echo "s6: cmake configure failed (log above)" >&2; return 1; }
  fi
  cmake --build build -j "$(nproc)"
}

# s6_setup [extra packages...]
s6_setup() {
  s6_install_packages "$@" && s6_build
}
