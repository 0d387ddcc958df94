#!/usr/bin/env bash
# On the GPU machine: the checkpoint issue's bit-exact test with device=cuda. Trains N steps
# straight, and N/2 + resume to N, then compares every logged loss and every checkpoint dataset.
# The schedule is constant: a cosine one depends on train.steps, which the two halves change.
set -uo pipefail
OUT=${OUT:-/tmp/s6-out}
cfg=${1:-configs/selective_copying_cpu.yaml}; n=${2:-40}
common=(device=cuda checkpoint.every=10 train.log_every=1 eval.every=0 schedule.kind=constant schedule.warmup_steps=5 --resume auto)
rm -rf runs/resume_a runs/resume_b
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_a train.steps=$n >"$OUT/resume_a.log" 2>&1 || exit 1
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_b train.steps=$((n / 2)) >"$OUT/resume_b1.log" 2>&1 || exit 1
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/resume_b train.steps=$n >"$OUT/resume_b2.log" 2>&1 || exit 1
python3 - "$n" <<'PY'
import json, sys, h5py, numpy as np
n = int(sys.argv[1])
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(f"runs/{d}/metrics.jsonl")) if "loss" in r and "split" not in r]
a, b = losses("resume_a"), losses("resume_b")
print(f"losses: {len(a)} vs {len(b)} lines, identical: {a == b}")
fa, fb = (h5py.File(f"runs/{d}/checkpoints/step_{n:08d}.h5", "r") for d in ("resume_a", "resume_b"))
names = []
fa.visit(lambda k: names.append(k) if isinstance(fa[k], h5py.Dataset) else None)
diff = [k for k in names if not np.array_equal(fa[k][()], fb[k][()])]
print(f"checkpoint datasets: {len(names)}, bitwise different: {len(diff)} {diff[:5]}")
print("first weights by name:", fa["model/backbone.layers.0.mixer.A_log"].shape)
sys.exit(0 if a == b and not diff else 1)
PY
