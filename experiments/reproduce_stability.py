#!/usr/bin/env python3
"""StableMax cross-entropy and ⊥Grad on NeuralGrok's Table 1 tasks, without weight decay (the setting of
"Grokking at the Edge of Numerical Stability"; docs/methods.md, sections 6, 7 and 9), beside standard
training without weight decay. Every run is resumable: a finished run is skipped, an interrupted one
resumes from its checkpoint. Writes docs/results/stability.md's table and one plot per task.

    python3 experiments/reproduce_stability.py --tasks a+b,a-b,a*b,a*a-b --budget 6000
"""
import argparse
import json
import os
import subprocess
import sys

METHODS = {  # name: (label, flags); all without weight decay
    "standard-wd0": ("standard (no weight decay)", ["--weight-decay", "0"]),
    "stablemax": ("StableMax CE", ["--loss", "stablemax", "--weight-decay", "0"]),
    "perp-grad": ("⊥Grad", ["--method", "perp-grad", "--weight-decay", "0"]),
}


def run_dir(args, task, method):
    return os.path.join(args.runs, task.replace("*", "x").replace("+", "p").replace("-", "m"), method)


def run_one(args, task, method):
    d = run_dir(args, task, method)
    if os.path.exists(os.path.join(d, "summary.json")):
        print(f"[done]    {task:6s} {method}", flush=True)
        return
    checkpoint = os.path.join(d, "checkpoint.safetensors")
    if os.path.exists(checkpoint):
        cmd = [args.binary, "train", "--resume", checkpoint, "--no-progress"]
    else:
        cmd = [args.binary, "train", "--task", task, "--seed", str(args.seed), "--device", "cpu", "--steps",
               str(args.budget), "--stop-at-test-acc", "0.95", "--checkpoint-every", "500", "--run-dir", d,
               "--no-progress"] + METHODS[method][1]
    print(("[resume]  " if os.path.exists(checkpoint) else "[run]     ") + " ".join(cmd), flush=True)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "log.txt"), "a") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            print(f"          failed; see {d}/log.txt", flush=True)


def summary(args, task, method):
    try:
        with open(os.path.join(run_dir(args, task, method), "summary.json")) as f:
            return json.load(f)
    except OSError:
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="a+b,a-b,a*b,a*a-b")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--budget", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/stability")
    p.add_argument("--binary", default="build/tapegrok")
    p.add_argument("--report-only", action="store_true", help="start no run; tabulate the finished ones")
    args = p.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"reproduce_stability.py: unknown method(s) {unknown} (expected {', '.join(METHODS)})")
    if not args.report_only:
        for t in tasks:
            for m in methods:
                run_one(args, t, m)

    lines = ["| task | " + " | ".join(METHODS[m][0] for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for t in tasks:
        row = []
        for m in methods:
            s = summary(args, t, m)
            if s is None:
                row.append("—")
            elif s["first_test_95"] >= 0:
                row.append(f"{s['first_test_95']} ({s['wall_seconds']:.0f} s)")
            else:
                row.append(f"> {s['step']} (test {100 * s['last_test_acc']:.1f}%, train {100 * s['last_train_acc']:.1f}%)")
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    print("\n".join(lines))

    plot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.py")
    for t in tasks:
        done = [m for m in methods if os.path.exists(os.path.join(run_dir(args, t, m), "metrics.jsonl"))]
        if done:
            name = t.replace("*", "x").replace("+", "p").replace("-", "m")
            subprocess.run([sys.executable, plot, *[run_dir(args, t, m) for m in done], "--labels",
                            ",".join(METHODS[m][0] for m in done), "--title", f"{t} mod 97, no weight decay",
                            "--out", os.path.join("docs", "results", f"stability_{name}.png")], check=False)


if __name__ == "__main__":
    main()
