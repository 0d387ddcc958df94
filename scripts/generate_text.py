#!/usr/bin/env python3
"""build/generate for a tokens-task model, in text: encodes the prompt with a local tokenizer.json,
runs build/generate --ids, and decodes what it prints (build/generate itself speaks token ids
outside the bytes task).

usage: scripts/generate_text.py --tokenizer tokenizer.json --checkpoint RUN_OR_FILE --prompt TEXT
                                [any other build/generate option, e.g. --max-new-tokens 200 --top-k 40]
"""
import argparse
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--prompt", required=True, action="append", help="repeat for a batch")
    ap.add_argument("--generate", default="build/generate")
    args, rest = ap.parse_known_args()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    cmd = [args.generate] + rest
    for p in args.prompt:
        cmd += ["--ids", " ".join(map(str, tok.encode(p, add_special_tokens=False).ids))]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (timing) passes through
    for line in out.stdout.splitlines():
        ids = line.split()
        if ids and all(w.isdigit() for w in ids):
            print(tok.decode([int(w) for w in ids], skip_special_tokens=False))
        else:
            print(line)
    sys.exit(out.returncode)


if __name__ == "__main__":
    main()
