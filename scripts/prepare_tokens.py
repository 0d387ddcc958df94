#!/usr/bin/env python3
"""Tokenize text files into llm.c-layout token shards for s6's `tokens` task.

usage: scripts/prepare_tokens.py --tokenizer tokenizer.json --out DIR INPUT [INPUT ...]

Each INPUT is a file or a glob ('**' allowed). A document is one file (or, with --lines, one
non-empty line); every document starts with the end-of-text token, as llm.c's shards do, so
windows that cross documents see the boundary. The last --val-fraction of the documents go to
DIR/<prefix>_val_000000.bin, the rest to DIR/<prefix>_train_NNNNNN.bin, --shard-tokens per shard.

Shard layout (llm.c): a header of 256 little-endian int32 (magic 20240520, version 1 for uint16
tokens or 2 for uint32, token count at [2]), then the tokens. uint16 when every id fits (vocabulary
<= 65536), else uint32.

The tokenizer is a local Hugging Face `tokenizers` file (pip install tokenizers); nothing is
downloaded. With --train-tokenizer V, a byte-level BPE of V ids is first trained on the inputs
and saved as --tokenizer (for machines without a tokenizer.json; <|endoftext|> = 0). The released Mamba models (state-spaces/mamba-130m ... 2.8b) use the GPT-NeoX-20B
tokenizer: its tokenizer.json (from EleutherAI/gpt-neox-20b, fetched once by you) has 50277
ids with <|endoftext|> = 0; set task.vocab_size: 50280 (padded to a multiple of 8) and
  data.train_glob: DIR/<prefix>_train_*.bin
  data.val_glob:   DIR/<prefix>_val_*.bin
"""
import argparse
import glob
import os
import struct
import sys

MAGIC = 20240520
HEADER_INTS = 256


def progress(total, unit):
    """tqdm when it is installed, else a plain line every few percent."""
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit=unit)
    except ImportError:
        class Plain:
            def __init__(self):
                self.n, self.shown = 0, -1

            def update(self, k):
                self.n += k
                pct = 100 * self.n // max(total, 1)
                if pct // 5 != self.shown // 5 or self.n == total:
                    self.shown = pct
                    print(f"  {self.n}/{total} {unit} ({pct}%)", file=sys.stderr, flush=True)

            def close(self):
                pass

        return Plain()


def write_shard(path, tokens, dtype):
    version = 1 if dtype == "uint16" else 2
    header = [0] * HEADER_INTS
    header[0], header[1], header[2] = MAGIC, version, len(tokens)
    fmt = "H" if dtype == "uint16" else "I"
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", *header))
        try:
            import array

            a = array.array(fmt, tokens)
            if sys.byteorder != "little":
                a.byteswap()
            f.write(a.tobytes())
        except OverflowError:
            sys.exit(f"prepare_tokens: a token id does not fit {dtype}; use --dtype uint32")
    os.replace(path + ".tmp", path)  # a shard is either whole or absent
    print(f"wrote {path}: {len(tokens)} tokens ({dtype})", file=sys.stderr)


def documents(inputs, by_lines):
    paths = []
    for pattern in inputs:
        found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            sys.exit(f"prepare_tokens: input '{pattern}' matches no file")
        paths.extend(found)
    docs = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if by_lines:
            docs.extend(line for line in text.splitlines() if line.strip())
        elif text:
            docs.append(text)
    return paths, docs


def train_tokenizer(docs, vocab_size, path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=True)
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tok.save(path)
    print(f"trained a byte-level BPE of {tok.get_vocab_size()} ids -> {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="text files or globs")
    ap.add_argument("--tokenizer", required=True, help="a local tokenizer.json (Hugging Face tokenizers)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--prefix", default="data", help="shard name prefix (default: data)")
    ap.add_argument("--lines", action="store_true", help="every non-empty line is a document")
    ap.add_argument("--val-fraction", type=float, default=0.01, help="documents held out (default 0.01)")
    ap.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per training shard")
    ap.add_argument("--eot", default="<|endoftext|>", help="token that starts every document ('' = none)")
    ap.add_argument("--dtype", choices=["auto", "uint16", "uint32"], default="auto")
    ap.add_argument("--batch", type=int, default=256, help="documents per encode_batch call")
    ap.add_argument("--train-tokenizer", type=int, default=0, metavar="V",
                    help="first train a byte-level BPE of V ids on the inputs and save it as --tokenizer")
    args = ap.parse_args()

    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("prepare_tokens: needs the Hugging Face tokenizers package (pip install tokenizers)")
    paths, docs = documents(args.inputs, args.lines)
    if not docs:
        sys.exit("prepare_tokens: the inputs hold no text")
    if args.train_tokenizer:
        train_tokenizer(docs, args.train_tokenizer, args.tokenizer)
    if not os.path.isfile(args.tokenizer):
        sys.exit(f"prepare_tokens: --tokenizer {args.tokenizer}: no such file (a local tokenizer.json)")
    tok = Tokenizer.from_file(args.tokenizer)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    dtype = args.dtype if args.dtype != "auto" else ("uint16" if vocab <= 65536 else "uint32")
    eot = None
    if args.eot:
        eot = tok.token_to_id(args.eot)
        if eot is None:
            sys.exit(f"prepare_tokens: --eot '{args.eot}' is not in the tokenizer's vocabulary (pass --eot '' for none)")
    if not 0 <= args.val_fraction < 1:
        sys.exit("prepare_tokens: --val-fraction must be in [0, 1)")

    n_val = int(round(len(docs) * args.val_fraction))
    if args.val_fraction > 0 and n_val == 0 and len(docs) > 1:
        n_val = 1
    if n_val == len(docs):
        n_val = len(docs) - 1
    print(f"{len(paths)} file(s), {len(docs)} document(s); vocabulary {vocab}, {dtype} shards; "
          f"{n_val} document(s) for validation", file=sys.stderr)
    if n_val == 0:
        print("note: no validation shard; set data.val_fraction in the config instead", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    bar = progress(len(docs), "docs")
    split_at = len(docs) - n_val
    buffers = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}

    def flush(split, final=False):
        buf = buffers[split]
        while len(buf) >= args.shard_tokens or (final and buf):
            take = buf[: args.shard_tokens] if split == "train" else buf  # one validation shard
            write_shard(os.path.join(args.out, f"{args.prefix}_{split}_{counts[split]:06d}.bin"), take, dtype)
            counts[split] += 1
            del buf[: len(take)]

    for start in range(0, len(docs), args.batch):
        chunk = docs[start : start + args.batch]
        for i, enc in enumerate(tok.encode_batch(chunk, add_special_tokens=False)):
            split = "train" if start + i < split_at else "val"
            if eot is not None:
                buffers[split].append(eot)
            buffers[split].extend(enc.ids)
        flush("train")
        bar.update(len(chunk))
    bar.close()
    flush("train", final=True)
    flush("val", final=True)


if __name__ == "__main__":
    main()
