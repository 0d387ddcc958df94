#!/usr/bin/env python3
"""Run many trainings of one config side by side on one GPU (settings x seeds), then evaluate them.

The synthetic tasks' steps are launch-bound, so several runs share one GPU well. A sweep:
  1. (--budget-s) a short probe of every run at once measures ms/step under that load and sets
     train.steps so the sweep's training fits the budget (capped by --max-steps, rounded to 1024);
  2. trains every run (final evaluation only at --train-eval-lengths, cheap);
  3. evaluates each finished run at --eval-lengths, --eval-parallel runs at a time (a long
     evaluation is throughput-bound: running more at once only adds memory);
  4. writes <out>/<tag>_results.json (one record per run) and prints sweep_report's tables.
Every run is a plain `train --config ... key=value` command, printed in the log, so any one of
them can be repeated alone. Bit-exact kernels make a run's result independent of the sharing.

usage: scripts/paper_sweep.py --train build-gpu/train --config configs/induction_heads.yaml \
         --seeds 1-8 --setting 'paper=optim.grad_clip=0' --setting 'decay=schedule.kind=cosine' \
         --budget-s 360 --out $OUT --tag induction
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep_report  # noqa: E402


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def parse_setting(text):
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--setting '{text}': expected NAME=key=value [key=value ...]")
    return name, shlex.split(overrides)


def run_dir(args, name, seed, phase="runs"):
    return os.path.join(args.work, phase, f"{name}_s{seed}")


def command(args, overrides, seed, rdir, extra):
    return ([args.train, "--config", args.config, f"device={args.device}", f"seed={seed}", f"run.dir={rdir}",
             "checkpoint.every=0", "checkpoint.keep_last=1", "eval.every=0"] + args.common + overrides + extra)


def launch(cmds, logs):
    procs = []
    for cmd, log in zip(cmds, logs):
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        procs.append(subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT))
    return procs


def read_metrics(rdir):
    path = os.path.join(rdir, "metrics.jsonl")
    train, evals = [], {}
    if not os.path.exists(path):
        return train, evals
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("split") == "eval":
                evals[r["length"]] = r  # the newest record per length wins
            elif "loss" in r:
                train.append(r)
    return train, evals


def wait_all(procs, dirs, label, poll_s=30):
    start = time.time()
    while any(p.poll() is None for p in procs):
        time.sleep(min(poll_s, 5) if time.time() - start < 10 else poll_s)
        trains = [read_metrics(d)[0] for d in dirs]
        steps = [t[-1]["step"] if t else 0 for t in trains]
        alive = sum(p.poll() is None for p in procs)
        print(f"[{label}] {time.time() - start:6.0f} s  running {alive}/{len(procs)}  "
              f"steps min {min(steps)} max {max(steps)}", flush=True)
    return [p.returncode for p in procs], time.time() - start


def probe(args, runs):
    """Per-step ms with every run training at once (the sweep's own load)."""
    steps = args.probe_steps
    dirs = [run_dir(args, n, s, "probe") for n, _, s in runs]
    cmds = [command(args, ov, s, d, [f"train.steps={steps}", f"train.log_every={steps // 2}",
                                     "eval.lengths=[]", "eval.num_examples=8", "--resume", "never", "--overwrite"])
            for (n, ov, s), d in zip(runs, dirs)]
    rcs, wall = wait_all(launch(cmds, [os.path.join(d, "log.txt") for d in dirs]), dirs, "probe", 5)
    ms = [read_metrics(d)[0][-1]["ms"] for d, rc in zip(dirs, rcs) if rc == 0 and read_metrics(d)[0]]
    if not ms:
        raise SystemExit(f"probe: no run finished (exit codes {rcs}); logs under {args.work}/probe")
    per_step = statistics.median(ms)
    print(f"probe: {len(runs)} runs at once, {per_step:.3f} ms/step each (median; wall {wall:.0f} s)")
    return per_step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="build-gpu/train")
    ap.add_argument("--config", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seeds", default="1-8")
    ap.add_argument("--setting", action="append", required=True, help="NAME=key=value [key=value ...]")
    ap.add_argument("--common", default="", help="overrides applied to every run")
    ap.add_argument("--steps", type=int, default=0, help="train.steps (0: the config's, or --budget-s)")
    ap.add_argument("--budget-s", type=float, default=0, help="fit the training into this many seconds")
    ap.add_argument("--max-steps", type=int, default=204800)
    ap.add_argument("--probe-steps", type=int, default=2000)
    ap.add_argument("--probe-only", action="store_true", help="measure ms/step under the load and stop")
    ap.add_argument("--step-multiple", type=int, default=1024, help="round the budgeted steps down to this")
    ap.add_argument("--train-eval-lengths", default="[]", help="final evaluation while training")
    ap.add_argument("--eval-lengths", default="", help="evaluated afterwards, e.g. [64,128,...]")
    ap.add_argument("--eval-examples", type=int, default=256)
    ap.add_argument("--eval-parallel", type=int, default=6)
    ap.add_argument("--work", default="runs/sweep")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--tag", default="sweep")
    args = ap.parse_args()
    args.common = shlex.split(args.common)

    settings = [parse_setting(s) for s in args.setting]
    runs = [(name, ov, seed) for name, ov in settings for seed in parse_seeds(args.seeds)]
    steps = args.steps
    per_step = None
    if args.budget_s:
        per_step = probe(args, runs)
        if args.probe_only:
            return
        steps = min(args.max_steps, int(args.budget_s * 1000 / per_step) // args.step_multiple * args.step_multiple)
        if steps <= 0:
            raise SystemExit(f"sweep: {args.budget_s} s at {per_step:.3f} ms/step is not even "
                             f"{args.step_multiple} steps; raise --budget-s or run fewer settings/seeds")
        print(f"sweep: train.steps = {steps} for each of {len(runs)} runs", flush=True)
    step_arg = [f"train.steps={steps}"] if steps else []

    dirs = [run_dir(args, n, s) for n, _, s in runs]
    cmds = [command(args, ov, s, d, step_arg + [f"eval.lengths={args.train_eval_lengths}", "--resume", "never", "--overwrite"])
            for (n, ov, s), d in zip(runs, dirs)]
    train_rcs, train_wall = wait_all(launch(cmds, [os.path.join(d, "train_log.txt") for d in dirs]), dirs, "train")
    print(f"training: {train_wall:.0f} s, exit codes {train_rcs}", flush=True)

    eval_rcs = [None] * len(runs)
    eval_wall = 0.0
    if args.eval_lengths:
        start = time.time()
        pending = [i for i, rc in enumerate(train_rcs) if rc == 0]
        active = {}
        while pending or active:
            while pending and len(active) < args.eval_parallel:
                i = pending.pop(0)
                n, ov, s = runs[i]
                cmd = command(args, ov, s, dirs[i], step_arg + [f"eval.lengths={args.eval_lengths}",
                                                                 f"eval.num_examples={args.eval_examples}",
                                                                 "--resume", "auto"])
                active[i] = launch([cmd], [os.path.join(dirs[i], "eval_log.txt")])[0]
            time.sleep(2)
            for i, p in list(active.items()):
                if p.poll() is not None:
                    eval_rcs[i] = p.returncode
                    del active[i]
        eval_wall = time.time() - start
        print(f"evaluation: {eval_wall:.0f} s, exit codes {eval_rcs}", flush=True)

    records = []
    for (name, ov, seed), d, trc, erc in zip(runs, dirs, train_rcs, eval_rcs):
        train, evals = read_metrics(d)
        records.append({
            "setting": name, "overrides": " ".join(args.common + ov), "seed": seed, "steps": steps,
            "train_exit": trc, "eval_exit": erc, "final_train_loss": train[-1]["loss"] if train else None,
            "final_step": train[-1]["step"] if train else 0,
            "eval": {str(k): v["accuracy"] for k, v in sorted(evals.items())},
            "eval_examples": args.eval_examples if args.eval_lengths else None,
        })
    meta = {"config": args.config, "runs": len(runs), "steps": steps, "probe_ms_per_step": per_step,
            "train_wall_s": round(train_wall, 1), "eval_wall_s": round(eval_wall, 1),
            "common": " ".join(args.common)}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.tag}_results.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "runs": records}, f, indent=1)
    print(f"wrote {path}")
    sweep_report.print_tables(meta, records)


if __name__ == "__main__":
    main()
