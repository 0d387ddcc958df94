#!/usr/bin/env python3
"""Generation throughput: s6's build/generate beside Hugging Face transformers'
MambaForCausalLM.generate, in one sitting on one GPU, greedy, a prompt of --prompt-len random
tokens per sequence and exactly --new-tokens new ones, at each --batch.

usage (GPU machine, from the repository root, after scripts/gpu_build.sh or cmake --build build):
  python3 scripts/bench_generate.py --s6 runs/text_lm_130m --hf hf/text_lm_130m
  python3 scripts/bench_generate.py --s6-config configs/text_lm_130m.yaml --hf-random-130m

  --s6 PATH            a checkpoint or run directory for build/generate
  --s6-config FILE     or a randomly initialised model of that config (throughput does not depend
                       on the weights)
  --hf DIR             a transformers folder (config.json + model.safetensors), e.g. the same
                       weights exported from the s6 checkpoint
  --hf-random-130m     or a fresh MambaForCausalLM of the 130M shape (d_model 768, 24 layers,
                       vocab 50280, d_state 16, expand 2, conv 4)
Both sides run a warm-up generation first, then one timed generation per batch size; tokens/s =
batch x new tokens / wall time of the whole generate call (prefill included). The transformers
side reports whether its fast path (the mamba_ssm / causal_conv1d CUDA kernels) was available.
One JSON line per measurement on stdout, a table on stderr.
"""
import argparse
import json
import subprocess
import sys
import time


def run_s6(args, batch):
    cmd = [args.generate, "--bench", "--batch", str(batch), "--prompt-len", str(args.prompt_len),
           "--max-new-tokens", str(args.new_tokens), "--device", "cuda", "--precision", args.s6_precision]
    cmd += ["--checkpoint", args.s6] if args.s6 else ["--config", args.s6_config]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    r["stderr"] = out.stderr.strip().splitlines()[-1]
    return r


def hf_model(args):
    import torch
    from transformers import MambaConfig, MambaForCausalLM

    dtype = torch.bfloat16 if args.hf_dtype == "bf16" else torch.float32
    if args.hf:
        model = MambaForCausalLM.from_pretrained(args.hf, torch_dtype=dtype)
    else:
        cfg = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
                          conv_kernel=4, use_cache=True)
        torch.manual_seed(0)
        model = MambaForCausalLM(cfg).to(dtype)
    model = model.cuda().eval()
    model.generation_config.eos_token_id = None  # exactly new_tokens tokens every time
    model.generation_config.pad_token_id = 0
    return model


def run_hf(model, args, batch):
    import torch

    try:
        from transformers.models.mamba import modeling_mamba

        fast = bool(getattr(modeling_mamba, "is_fast_path_available", False))
    except Exception:  # noqa: BLE001 - only for the report
        fast = None
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt_len), generator=g).cuda()
    kw = dict(max_new_tokens=args.new_tokens, do_sample=False, use_cache=True)  # no eos: never stops early
    with torch.inference_mode():
        model.generate(ids, **kw)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    assert out.shape[1] == args.prompt_len + args.new_tokens, out.shape
    return {"impl": "transformers", "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "total_s": seconds, "tokens_per_s": batch * args.new_tokens / seconds, "fast_path": fast,
            "dtype": args.hf_dtype}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--s6")
    ap.add_argument("--s6-config")
    ap.add_argument("--hf")
    ap.add_argument("--hf-random-130m", action="store_true")
    ap.add_argument("--generate", default="build/generate")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--prompt-len", type=int, default=2048)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--s6-precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--hf-dtype", choices=["fp32", "bf16"], default="bf16")
    args = ap.parse_args()
    if bool(args.s6) == bool(args.s6_config):
        sys.exit("bench_generate: give one of --s6 and --s6-config")
    if bool(args.hf) == args.hf_random_130m:
        sys.exit("bench_generate: give one of --hf and --hf-random-130m")

    rows = []
    for b in args.batch:
        r = run_s6(args, b)
        print(json.dumps(r), flush=True)
        rows.append(r)
    model = hf_model(args)
    for b in args.batch:
        r = run_hf(model, args, b)
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(f"\n{'batch':>6} {'s6 tok/s':>12} {'HF tok/s':>12} {'s6 / HF':>8}", file=sys.stderr)
    for b in args.batch:
        s = next(r for r in rows if r["impl"] == "s6" and r["batch"] == b)
        h = next(r for r in rows if r["impl"] == "transformers" and r["batch"] == b)
        print(f"{b:>6} {s['tokens_per_s']:>12.1f} {h['tokens_per_s']:>12.1f} {s['tokens_per_s'] / h['tokens_per_s']:>8.2f}",
              file=sys.stderr)
    print(f"(prompt {args.prompt_len} random tokens, {args.new_tokens} new, greedy; transformers fast path: "
          f"{rows[-1]['fast_path']})", file=sys.stderr)


if __name__ == "__main__":
    main()
