#!/usr/bin/env python3
"""Bitwise comparison of two training runs: every logged training loss in metrics.jsonl and every
dataset of their step-N checkpoints. Exit 0 when both match. Used by the GPU check scripts.

usage: scripts/compare_runs.py RUN_A RUN_B STEP [--label TEXT]   (needs h5py and numpy)"""
import argparse
import json
import sys

import h5py
import numpy as np


def losses(run):
    with open(f"{run}/metrics.jsonl") as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r and "split" not in r]


def datasets(f):
    names = []
    f.visit(lambda k: names.append(k) if isinstance(f[k], h5py.Dataset) else None)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("step", type=int)
    ap.add_argument("--label", default="runs")
    args = ap.parse_args()
    a, b = losses(args.run_a), losses(args.run_b)
    print(f"{args.label}: {len(a)} vs {len(b)} losses, identical: {a == b}")
    name = f"checkpoints/step_{args.step:08d}.h5"
    with h5py.File(f"{args.run_a}/{name}", "r") as fa, h5py.File(f"{args.run_b}/{name}", "r") as fb:
        names = datasets(fa)
        diff = [k for k in names if k not in fb or not np.array_equal(fa[k][()], fb[k][()])]
    print(f"checkpoint datasets: {len(names)}, bitwise different: {len(diff)} {diff[:5]}")
    sys.exit(0 if a == b and not diff else 1)


if __name__ == "__main__":
    main()
