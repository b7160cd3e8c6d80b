#!/usr/bin/env python3
"""Turns tapegrok metrics files into figures like the grokking papers': accuracy and loss against
optimisation steps on a log-scaled x axis, train (dashed) and test (solid), several runs in one figure.

usage: plot.py RUN [RUN ...] --out FIGURE.png [--labels A,B,...] [--title TEXT] [--extra KEY,...]
A RUN is a run directory (holding metrics.jsonl) or a metrics.jsonl file. --extra adds one panel per
metrics key (e.g. age_raw) against steps."""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(run):
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"plot.py: {path}:{number}: not JSON ({e})")
    if not records:
        sys.exit(f"plot.py: {path} holds no metrics")
    # A resumed run appends; keep the last record for each step.
    by_step = {r["step"]: r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def label_of(run):
    run = run.rstrip("/")
    return os.path.basename(os.path.dirname(run)) if run.endswith("metrics.jsonl") else os.path.basename(run)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--labels", default="")
    parser.add_argument("--title", default="")
    parser.add_argument("--extra", default="", help="comma-separated extra metrics keys, one panel each")
    args = parser.parse_args()

    labels = args.labels.split(",") if args.labels else [label_of(r) for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit("plot.py: --labels needs one label per run")
    extra = [k for k in args.extra.split(",") if k]
    panels = 2 + len(extra)
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    for i, (run, label) in enumerate(zip(args.runs, labels)):
        rec = load(run)
        steps = [r["step"] for r in rec]
        color = colors[i % len(colors)]
        axes[0].plot(steps, [100 * r["train_acc"] for r in rec], "--", color=color, alpha=0.8, label=f"{label} train")
        axes[0].plot(steps, [100 * r["test_acc"] for r in rec], "-", color=color, label=f"{label} test")
        axes[1].plot(steps, [r["train_loss"] for r in rec], "--", color=color, alpha=0.8, label=f"{label} train")
        axes[1].plot(steps, [r["test_loss"] for r in rec], "-", color=color, label=f"{label} test")
        for k, key in enumerate(extra):
            points = [(r["step"], r[key]) for r in rec if key in r]
            if points:
                axes[2 + k].plot(*zip(*points), "-", color=color, label=label)

    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(-2, 102)
    axes[1].set_ylabel("cross-entropy loss")
    axes[1].set_yscale("log")
    for k, key in enumerate(extra):
        axes[2 + k].set_ylabel(key)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("optimisation steps")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
