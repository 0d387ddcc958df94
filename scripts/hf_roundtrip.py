#!/usr/bin/env python3
"""Hugging Face round trip: s6 and transformers must give the same logits on the same tokens.

(a) trains a tiny s6 model on the CPU, exports it (build/export), loads the folder with
    transformers' MambaForCausalLM and compares its logits with s6's own (build/export --logits);
    and, where mamba_ssm and a GPU are present, in mamba_ssm's MambaLMHeadModel too;
(b) builds a random MambaForCausalLM in transformers (every parameter perturbed, so no norm weight
    is 1 and no bias 0), saves it with save_pretrained, and compares s6's logits on the folder.
Both in float32; a check passes when max|s6 - transformers| / max|transformers| < --tolerance.
Prints a table and exits 1 when a check fails (2 when a program or package is missing).

    python3 scripts/hf_roundtrip.py --build-dir build-gpu
    python3 scripts/hf_roundtrip.py --build-dir build --s6-only   # no torch: the s6 side alone

Needs torch, transformers and safetensors (the GPU machine has them); --s6-only needs none.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub: everything here is local
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = [[1, 5, 9, 2, 0, 3, 7, 7, 4, 8, 6, 1, 2, 3, 9, 9, 5], [8, 8, 1, 0, 2, 6, 4, 9, 3, 5, 7, 1, 1, 4, 0, 2, 6]]


def run(cmd):
    p = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout)
        sys.exit(f"hf_roundtrip: {' '.join(cmd)} exited {p.returncode}")
    return p.stdout


def s6_logits(build, model_path, tokens, tmp):
    """s6's float32 CPU logits of a model source (HF folder, run dir or .h5), as a flat list."""
    out = os.path.join(tmp, "logits.json")
    ids = ";".join(",".join(str(t) for t in row) for row in tokens)
    run([os.path.join(build, "export"), "--logits", model_path, "--ids", ids, "--out", out])
    with open(out) as f:
        d = json.load(f)
    return d["shape"], d["logits"]


def compare(a, b):
    """(max |a - b|, max |a - b| / max |b|) over flat lists of the same length."""
    if len(a) != len(b):
        sys.exit(f"hf_roundtrip: {len(a)} logits against {len(b)}: the shapes differ")
    diff = max(abs(x - y) for x, y in zip(a, b))
    scale = max(abs(y) for y in b) or 1.0
    return diff, diff / scale


def train_and_export(build, tmp):
    run_dir, hf_dir = os.path.join(tmp, "run"), os.path.join(tmp, "s6_export")
    run([os.path.join(build, "train"), "--config", "configs/copying_cpu.yaml", "device=cpu", "train.steps=30",
         "schedule.warmup_steps=0", "eval.every=0", "eval.num_examples=128", "train.log_every=10",
         f"run.dir={run_dir}", "--resume", "never"])
    run([os.path.join(build, "export"), "--checkpoint", run_dir, "--out", hf_dir])
    return run_dir, hf_dir


def torch_logits(model, tokens, device):
    import torch
    model = model.to(device).eval()
    with torch.no_grad():
        out = model(torch.tensor(tokens, device=device), use_cache=False).logits
    return list(out.shape), out.float().cpu().reshape(-1).tolist()


def mamba_ssm_check(hf_dir, ref):
    """s6's export in mamba_ssm's MambaLMHeadModel (config: the "mamba_ssm" entry), or None."""
    import torch
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"mamba_ssm check skipped: {e}")
        return None
    if not torch.cuda.is_available():
        print("mamba_ssm check skipped: its kernels need a CUDA device")
        return None
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)["mamba_ssm"]
    model = MambaLMHeadModel(SsmConfig(**cfg), device="cuda", dtype=torch.float32)
    weights = load_file(os.path.join(hf_dir, "model.safetensors"))
    weights = {("backbone.embedding.weight" if k == "backbone.embeddings.weight" else k): v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg["tie_embeddings"])]
    if missing or unexpected:
        print(f"hf_roundtrip: mamba_ssm key problems: missing {missing}, unexpected {unexpected}")
        sys.exit(1)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(TOKENS, device="cuda")).logits
    return ("s6 export -> mamba_ssm (cuda)", list(logits.shape), *compare(ref, logits.float().cpu().reshape(-1).tolist()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default="build", help="s6 build folder holding train and export")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max relative error allowed")
    ap.add_argument("--torch-device", default="cpu", help="where transformers runs (cpu: its exact float32 "
                    "sequential path; cuda: its kernels if mamba_ssm is installed)")
    ap.add_argument("--s6-only", action="store_true", help="skip transformers: check s6's export -> import alone")
    ap.add_argument("--keep", help="keep the folders here instead of a temporary directory")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    for prog in ("train", "export"):
        if not os.access(os.path.join(build, prog), os.X_OK):
            print(f"hf_roundtrip: {build}/{prog} not found: build s6 first (cmake --build {args.build_dir})")
            return 2
    tmp = args.keep or tempfile.mkdtemp(prefix="s6_hf_")
    os.makedirs(tmp, exist_ok=True)
    rows = []  # (check, shape, max abs diff, relative error)

    run_dir, hf_dir = train_and_export(build, tmp)
    shape, ref = s6_logits(build, run_dir, TOKENS, tmp)
    _, back = s6_logits(build, hf_dir, TOKENS, tmp)
    rows.append(("s6 checkpoint -> export -> s6 import", shape, *compare(back, ref)))

    if not args.s6_only:
        try:
            import torch
            from transformers import MambaConfig, MambaForCausalLM
        except ImportError as e:
            print(f"hf_roundtrip: {e}; install torch and transformers, or pass --s6-only")
            return 2
        import transformers
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, on {args.torch_device}")
        torch.manual_seed(0)
        # (a) s6's export in transformers.
        # No dtype argument (its name changed across versions): config.json says float32.
        model, info = MambaForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
        model = model.float()
        missing = [k for k in info["missing_keys"] if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
        # (transformers 4 reports lists, transformers 5 sets)
        problems = missing + list(info["unexpected_keys"]) + [str(k) for k in info.get("mismatched_keys", [])]
        if problems:
            print(f"hf_roundtrip: transformers loaded {hf_dir} with key problems: {problems}")
            return 1
        hf_shape, hf = torch_logits(model, TOKENS, args.torch_device)
        assert hf_shape == shape, f"logits shapes differ: transformers {hf_shape}, s6 {shape}"
        rows.append(("s6 export -> transformers", shape, *compare(ref, hf)))

        # (a') the same export through mamba_ssm, when it is installed (its kernels need CUDA).
        row = mamba_ssm_check(hf_dir, ref)
        if row:
            rows.append(row)

        # (b) a random transformers model in s6, tied and untied (with biases).
        for tied in (True, False):
            cfg = MambaConfig(vocab_size=24, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                              conv_kernel=4, use_bias=not tied, use_conv_bias=True, time_step_rank=3,
                              layer_norm_epsilon=1e-5, tie_word_embeddings=tied)
            model = MambaForCausalLM(cfg).float()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            folder = os.path.join(tmp, f"transformers_{'tied' if tied else 'untied'}")
            try:
                model.save_pretrained(folder, safe_serialization=True)
            except TypeError:  # versions where safetensors is the only format take no such argument
                model.save_pretrained(folder)
            hf_shape, hf = torch_logits(model, TOKENS, args.torch_device)
            s6_shape, mine = s6_logits(build, folder, TOKENS, tmp)
            assert hf_shape == s6_shape, f"logits shapes differ: transformers {hf_shape}, s6 {s6_shape}"
            rows.append((f"transformers random ({'tied' if tied else 'untied, biases'}) -> s6", s6_shape,
                         *compare(mine, hf)))

    print(f"{'check':<44} {'logits':<14} {'max abs diff':>13} {'rel error':>10}  result")
    failed = 0
    for name, shape, diff, rel in rows:
        ok = rel < args.tolerance
        failed += not ok
        print(f"{name:<44} {'x'.join(map(str, shape)):<14} {diff:>13.3e} {rel:>10.3e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(rows) - failed} passed, {failed} failed (tolerance {args.tolerance:g})")
    if failed or args.keep:
        print(f"folders kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
