#!/usr/bin/env bash
# On the GPU machine: world size 1 through the NCCL data-parallel path (--nproc 1) against the
# plain single-GPU run, same config and seed; every logged loss and the final checkpoint must match.
set -uo pipefail
OUT=${OUT:-/tmp/s6-out}
export NCCL_NVLS_ENABLE=0
cfg=${1:-configs/selective_copying_cpu.yaml}; n=${2:-30}
common=(device=cuda train.steps=$n train.log_every=1 eval.every=0 schedule.kind=constant schedule.warmup_steps=0
        checkpoint.every=0 --resume never)
rm -rf runs/dp_plain runs/dp_nccl
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/dp_plain >"$OUT/dp_plain.log" 2>&1 || { tail "$OUT/dp_plain.log"; exit 1; }
build-gpu/train --config "$cfg" "${common[@]}" run.dir=runs/dp_nccl --nproc 1 >"$OUT/dp_nccl.log" 2>&1 || { tail "$OUT/dp_nccl.log"; exit 1; }
python3 - "$n" <<'PY'
import json, sys, h5py, numpy as np
n = int(sys.argv[1])
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(f"runs/{d}/metrics.jsonl")) if "loss" in r and "split" not in r]
a, b = losses("dp_plain"), losses("dp_nccl")
print(f"world size 1 via NCCL vs plain: {len(a)} vs {len(b)} losses, identical: {a == b}")
fa, fb = (h5py.File(f"runs/{d}/checkpoints/step_{n:08d}.h5", "r") for d in ("dp_plain", "dp_nccl"))
names = []
fa.visit(lambda k: names.append(k) if isinstance(fa[k], h5py.Dataset) else None)
diff = [k for k in names if not np.array_equal(fa[k][()], fb[k][()])]
print(f"checkpoint datasets: {len(names)}, bitwise different: {len(diff)}")
sys.exit(0 if a == b and not diff else 1)
PY
