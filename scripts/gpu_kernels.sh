#!/usr/bin/env bash
# On the GPU machine: every kernel of a few eager training steps under ncu (duration per launch),
# summed per kernel name: what the GPU itself spends per step, without launch or host overhead.
# Usage: scripts/gpu_kernels.sh <config> <steps> [key=value ...]
set -uo pipefail
source scripts/gpu_build.sh
config=$1; steps=$2; shift 2
name=$(basename "$config" .yaml)
s6_gpu_build train || exit 1
ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  build-gpu/train --config "$config" device=cuda train.steps="$steps" train.log_every="$steps" eval.every=0 \
  eval.num_examples=8 'eval.lengths=[]' checkpoint.every=0 schedule.warmup_steps=0 train.cuda_graph=off \
  --resume never --overwrite run.dir="runs/kernels-$name" "$@" >"$OUT/$name.ncu.csv" 2>"$OUT/$name.ncu.err"
python3 - "$OUT/$name.ncu.csv" "$steps" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, body = rows[0], rows[1:]
name_i, val_i, unit_i = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
total = collections.defaultdict(float); count = collections.Counter()
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
for r in body:
    k = r[name_i].replace("(anonymous namespace)::", "").replace("<unnamed>::", "").split("(")[0][:60]
    total[k] += float(r[val_i].replace(",", "")) * scale.get(r[unit_i], 1.0); count[k] += 1
steps = int(sys.argv[2]); all_us = sum(total.values())
print(f"{len(body)} kernel launches over {steps} steps (+ final eval): {all_us/1e3:.2f} ms GPU time")
print(f"{'kernel':<62}{'launches':>9}{'total us':>11}{'mean us':>9}")
for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:25]:
    print(f"{k:<62}{count[k]:>9}{v:>11.1f}{v/count[k]:>9.2f}")
PY
