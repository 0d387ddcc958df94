#!/usr/bin/env bash
# On the GPU machine: the CUDA scan tests, the scan bench and the training steps under each of
# several scan settings (env assignments, the scan plan overrides of README's "Environment
# variables": S6_SCAN_CHUNK=16|64, S6_SCAN_BWD_NS=4|8, S6_SCAN_SYNC_STAGE=1, S6_SCAN_FWD_BLOCKS /
# S6_SCAN_BWD_BLOCKS = target grid size; the kernel-level scan tests pass their own plans).
# Everything goes to $OUT/sweep.txt.
# Usage: scripts/gpu_scan_sweep.sh "<VAR=v ...>" ...   ("" = the defaults)
#   CASES="induction selective" (default) picks the training configs; "LM" adds the LM.
set -uo pipefail
source scripts/gpu_build.sh
s6_gpu_build || exit 1
log=$OUT/sweep.txt
for setting in "$@"; do
  echo "== settings: ${setting:-defaults}" | tee -a "$log"
  (
    for kv in $setting; do export "$kv"; done
    build-gpu/tests/s6_tests -tc='cuda scan*' >>"$log" 2>&1
    echo "scan tests rc $?: $(tail -3 "$log" | grep -E 'test cases')" | tee -a "$log"
    build-gpu/bench/bench --scan 2>&1 | grep -E '^\| [0-9]' | tee -a "$log"
    for only in ${CASES:-induction selective}; do
      build-gpu/bench/bench --train --case "$only" 2>&1 | grep -E '^\| [a-zA-Z]' | grep -v '^| config' | tee -a "$log"
    done
  )
done
