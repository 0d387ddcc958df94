#!/usr/bin/env bash
# Install what is missing, build Release into build/, then run every test through ctest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
s6_setup
ctest --test-dir build --output-on-failure -j "$(nproc)"
