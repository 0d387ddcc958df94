#!/usr/bin/env bash
# CPU training speed alone and beside a competing busy process, per OpenMP wait setting: the
# measurement behind train's OpenMP defaults (docs/performance.md, "A shared CPU").
#   scripts/cpu_share_bench.sh [BUILD_DIR] [STEPS]
# Each setting runs configs/copying_cpu.yaml for STEPS steps (default 80) on the CPU, once alone
# and once beside `nproc` busy-looping shell processes; it prints the mean ms/step of the logged
# steps after the first 20 (from metrics.jsonl) and the load average before each run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
STEPS=${2:-80}
CORES=$(nproc)
TMP=$(mktemp -d /tmp/s6_cpu_share.XXXXXX)
COMPETITORS=()
stop_competitors() {
  for pid in "${COMPETITORS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  COMPETITORS=()
}
trap 'stop_competitors; rm -rf "$TMP"' EXIT

mean_ms() {  # mean "ms" of metrics lines with step > 20
  python3 - "$1" <<'EOF'
import json, sys
ms = [r["ms"] for r in map(json.loads, open(sys.argv[1])) if "ms" in r and r["step"] > 20]
print(f"{sum(ms) / len(ms):.1f}" if ms else "n/a")
EOF
}

# name | environment (S6_OMP_DEFAULTS=0: train leaves OpenMP's own defaults alone)
SETTINGS=(
  "libgomp defaults|S6_OMP_DEFAULTS=0"
  "OMP_WAIT_POLICY=passive|OMP_WAIT_POLICY=passive"
  "GOMP_SPINCOUNT=10000|GOMP_SPINCOUNT=10000"
  "OMP_NUM_THREADS=1|OMP_NUM_THREADS=1 S6_OMP_DEFAULTS=0"
  "train's defaults|"
)
printf "%-26s %-22s %12s %16s\n" "setting" "competitor" "ms/step" "load before"
for entry in "${SETTINGS[@]}"; do
  name=${entry%%|*}
  envs=${entry#*|}
  for competitor in none busy; do
    if [ "$competitor" = busy ]; then
      for _ in $(seq "$CORES"); do sh -c 'while :; do :; done' & COMPETITORS+=($!); done
      sleep 1
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    dir="$TMP/run"
    rm -rf "$dir"
    env $envs "$BUILD/train" --config configs/copying_cpu.yaml device=cpu "train.steps=$STEPS" \
      schedule.warmup_steps=0 train.log_every=10 eval.every=0 eval.num_examples=128 \
      checkpoint.every=0 "run.dir=$dir" --resume never > "$TMP/log.txt" 2>&1 ||
      { cat "$TMP/log.txt"; exit 1; }
    stop_competitors
    label=$([ "$competitor" = busy ] && echo "$CORES busy loops" || echo "none")
    printf "%-26s %-22s %12s %16s\n" "$name" "$label" "$(mean_ms "$dir/metrics.jsonl")" "$load"
  done
done
