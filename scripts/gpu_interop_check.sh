#!/usr/bin/env bash
# On the GPU machine (torch, transformers and torchrun installed): the Hugging Face round trip
# (scripts/hf_roundtrip.py, fp32 logits s6 <-> transformers) and two CPU ranks under torchrun
# against --nproc 2 (scripts/torchrun_check.sh). Logs go to $OUT; exits non-zero if either fails.
set -uo pipefail
source scripts/gpu_build.sh
s6_gpu_build train export || exit 1
status=0
python3 scripts/hf_roundtrip.py --build-dir build-gpu 2>&1 | grep -v "fast path" | tee "$OUT/hf_roundtrip.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if command -v torchrun >/dev/null; then
  python3 -c "import torch; print('torch', torch.__version__)"
  scripts/torchrun_check.sh build-gpu torchrun 2>&1 | tee "$OUT/torchrun_check.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
  echo "torchrun not found: the torchrun check did not run"; status=1
fi
exit $status
