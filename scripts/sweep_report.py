#!/usr/bin/env python3
"""Tables and plots of a sweep's results (scripts/paper_sweep.py writes <tag>_results.json).

Per setting and evaluation length: min / median / max accuracy over the seeds, and how many
seeds hold 100% at every evaluated length. With --plot, accuracy against length with one line
per seed (one panel per setting).

usage: scripts/sweep_report.py RESULTS.json [RESULTS.json ...] [--plot accuracy_vs_length.png]
"""
import argparse
import json
import statistics


def pct(x):
    return "100" if x == 1.0 else f"{100 * x:.1f}"


def length_label(n):
    n = int(n)
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def by_setting(records):
    out = {}
    for r in records:
        out.setdefault(r["setting"], []).append(r)
    return out


def summary_rows(records):
    """One row per setting: [(length, min, median, max)], seeds at 100% everywhere, seeds."""
    rows = []
    for name, runs in by_setting(records).items():
        lengths = sorted({int(k) for r in runs for k in r["eval"]})
        cols = []
        for n in lengths:
            accs = [r["eval"].get(str(n), 0.0) for r in runs]
            cols.append((n, min(accs), statistics.median(accs), max(accs)))
        perfect = sum(1 for r in runs if r["eval"] and all(a == 1.0 for a in r["eval"].values()))
        rows.append((name, runs[0]["overrides"], cols, perfect, len(runs)))
    return rows


def print_tables(meta, records):
    print(f"\n{meta.get('config')}: {meta.get('runs')} runs, train.steps {meta.get('steps')}, "
          f"training {meta.get('train_wall_s')} s, evaluation {meta.get('eval_wall_s')} s")
    for name, overrides, cols, perfect, seeds in summary_rows(records):
        print(f"\n## {name} ({overrides or 'config as shipped'}): {perfect}/{seeds} seeds at 100% "
              f"at every length")
        print("| length | " + " | ".join(length_label(n) for n, *_ in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for label, idx in (("min", 1), ("median", 2), ("max", 3)):
            print(f"| {label} | " + " | ".join(pct(c[idx]) for c in cols) + " |")
        per_seed = [r for r in records if r["setting"] == name]
        print("per seed (seed: accuracy at the longest length, final train loss, exit codes): " + ", ".join(
            f"{r['seed']}: {pct(r['eval'][max(r['eval'], key=int)]) if r['eval'] else '-'}"
            f" {r['final_train_loss'] if r['final_train_loss'] is None else format(r['final_train_loss'], '.2e')}"
            f" ({r['train_exit']},{r['eval_exit']})" for r in per_seed))


def plot(records, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = by_setting(records)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items()):
        for r in runs:
            lengths = sorted(int(k) for k in r["eval"])
            ax.plot(lengths, [100 * r["eval"][str(n)] for n in lengths], "o-", ms=3, alpha=0.8,
                    label=f"seed {r['seed']}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 102)
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--plot", default="")
    ap.add_argument("--title", default="accuracy against evaluation length, one line per seed")
    ap.add_argument("--only", default="", help="comma-separated settings to keep")
    args = ap.parse_args()
    records = []
    for path in args.results:
        with open(path) as f:
            data = json.load(f)
        print_tables(data["meta"], data["runs"])
        records += data["runs"]
    if args.only:
        keep = set(args.only.split(","))
        records = [r for r in records if r["setting"] in keep]
    if args.plot:
        plot(records, args.plot, args.title)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
