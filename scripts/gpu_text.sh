#!/usr/bin/env bash
# On the GPU machine, issue 22's measurements: (1) token shards from local text with a byte-level
# BPE trained on that text (nothing downloaded), (2) configs/text_lm_130m.yaml (validation loss
# curve, tokens/s, MFU), (3) a generated sample, (4) generation throughput at batch 1 and 64 with
# 2048-token prompts and 128 new tokens beside transformers' MambaForCausalLM.generate.
# Usage: scripts/gpu_text.sh [max minutes of training (15)] [text glob ('/usr/lib/python3.*/**/*.py')]
# S6_GEN_BENCH=0 skips (4) (it does not depend on the weights: bench_generate.py --s6-config runs
# it on a fresh model of the same config).
# Outputs in $OUT: prepare.log, text_lm_130m.log, metrics.jsonl, training.png, sample.txt,
# bench_generate.jsonl / .txt.
set -uo pipefail
source scripts/gpu_build.sh
minutes=${1:-15}
glob=${2:-'/usr/lib/python3.*/**/*.py'}
s6_gpu_build train generate || exit 1
if [ ! -f data/text/text_train_000000.bin ]; then
  python3 scripts/prepare_tokens.py --train-tokenizer 16384 --tokenizer data/text/bpe.json --out data/text \
    --prefix text --val-fraction 0.01 "$glob" >"$OUT/prepare.log" 2>&1 || { tail -5 "$OUT/prepare.log"; exit 1; }
fi
tail -4 "$OUT/prepare.log"
build-gpu/train --config configs/text_lm_130m.yaml run.dir=runs/text_lm_130m train.max_minutes="$minutes" \
  --resume never >"$OUT/text_lm_130m.log" 2>&1
echo "train: exit $?"
grep -E "eval step|trained steps|error" "$OUT/text_lm_130m.log" | tail -12
cp runs/text_lm_130m/metrics.jsonl "$OUT/metrics.jsonl"
/usr/bin/python3 scripts/plot_metrics.py runs/text_lm_130m --out "$OUT" || true
# MFU of training: 6 x parameters x tokens/s over the H200's dense bf16 peak (989 TFLOP/s).
python3 - "$OUT/metrics.jsonl" "$OUT/text_lm_130m.log" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
params = int(re.search(r"parameters\s+(\d+)", open(sys.argv[2]).read()).group(1))
tps = sorted(r["tokens_per_s"] for r in rows[2:])[len(rows[2:]) // 2]  # median, past the warm-up lines
print(f"training: median {tps:.0f} tokens/s, {params} parameters, MFU {6 * params * tps / 989e12:.1%}")
PY
python3 scripts/generate_text.py --generate build-gpu/generate --tokenizer data/text/bpe.json \
  --checkpoint runs/text_lm_130m --prompt "def main(" --max-new-tokens 200 --temperature 0.8 --top-k 40 \
  --seed 1 >"$OUT/sample.txt" && cat "$OUT/sample.txt"
[ "${S6_GEN_BENCH:-1}" = 0 ] && exit 0
python3 scripts/bench_generate.py --generate build-gpu/generate --s6 runs/text_lm_130m --hf-random-130m \
  >"$OUT/bench_generate.jsonl" 2>"$OUT/bench_generate.txt"
echo "bench_generate: exit $?"
cat "$OUT/bench_generate.txt"
