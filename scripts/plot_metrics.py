#!/usr/bin/python3
"""Turn a run's metrics.jsonl into PNG charts: training curves (with validation perplexity, or
bits per byte, for the tokens and bytes tasks) and, when the run evaluated several lengths,
accuracy versus evaluation length at the last evaluation.

usage: scripts/plot_metrics.py RUN_DIR_OR_METRICS_JSONL [--out DIR] [--title TEXT]
Needs matplotlib for the system Python (Debian: python3-matplotlib; ./train.sh installs it),
hence /usr/bin/python3 rather than whatever python3 comes first on PATH."""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    train, evals = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("split") == "eval":
                evals.append(r)
            elif "loss" in r:
                train.append(r)
    return path, train, evals


def plot_language_model(ax, evals):
    """The tokens/bytes tasks' evaluation figures: bits per byte (bytes) or perplexity."""
    key = "bits_per_byte" if any("bits_per_byte" in r for r in evals) else "perplexity"
    for length in sorted({r["length"] for r in evals}):
        rows = [r for r in evals if r["length"] == length and key in r]
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o--", label=f"eval L={length}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per byte" if key == "bits_per_byte" else "validation perplexity")
    if key == "perplexity":
        ax.set_yscale("log")


def plot_training(train, evals, title, out):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss"] for r in train], label="train")
    ax_acc.plot(steps, [100 * (r["accuracy"] or 0) for r in train], label="train")
    train_len = None
    for length in sorted({r["length"] for r in evals}):
        rows = [r for r in evals if r["length"] == length]
        if len(rows) > 1 or train_len is None:
            ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], "o--", label=f"eval L={length}")
            ax_acc.plot([r["step"] for r in rows], [100 * r["accuracy"] for r in rows], "o--",
                        label=f"eval L={length}")
            train_len = length
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (scored positions)")
    ax_loss.set_yscale("log")
    if any("perplexity" in r for r in evals):  # a language model: its own figures instead of accuracy
        ax_acc.clear()
        plot_language_model(ax_acc, evals)
    else:
        ax_acc.set_xlabel("step")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_ylim(0, 101)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_lengths(evals, title, out):
    last = max(r["step"] for r in evals)
    rows = sorted((r for r in evals if r["step"] == last), key=lambda r: r["length"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["length"] for r in rows], [100 * r["accuracy"] for r in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}: accuracy vs length at step {last}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", default=None, help="output folder (default: the run folder)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    path, train, evals = load(args.run)
    if not train:
        sys.exit(f"{path}: no training records")
    out = args.out or os.path.dirname(os.path.abspath(path))
    os.makedirs(out, exist_ok=True)
    title = args.title or os.path.basename(os.path.dirname(os.path.abspath(path)))
    written = [os.path.join(out, "training.png")]
    plot_training(train, evals, title, written[0])
    if len({r["length"] for r in evals}) > 1:
        written.append(os.path.join(out, "accuracy_vs_length.png"))
        plot_lengths(evals, title, written[1])
    print("\n".join(written))


if __name__ == "__main__":
    main()
