#!/usr/bin/env python3
"""Draws a sweep report's accuracy curves (written by `tapegrok sweep report`, which calls this): test
accuracy (solid) and train accuracy (dashed) against steps on a log-scaled x axis, the median over seeds
with its 25-75% band. With two or more axes there is one figure per value of the first axis (e.g. per
task) with one curve per remaining cell (e.g. per method); with one axis, one figure.

usage: plot_sweep.py REPORT_DIR   (reads report.json and curves.csv, writes curves_<label>.png there)"""

import csv
import json
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report = sys.argv[1]
    try:
        with open(os.path.join(report, "report.json")) as f:
            meta = json.load(f)
        with open(os.path.join(report, "curves.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_sweep.py: {e}")
    curves = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key in ("step", "test_acc_median", "test_acc_q25", "test_acc_q75", "train_acc_median"):
            curves[row["cell"]][key].append(float(row[key]))

    # Figure -> the cells in it, in the report's order.
    figures = defaultdict(list)
    for cell in meta["cells"]:
        parts = cell.split("/")
        figure = parts[0] if len(meta["axes"]) >= 2 else meta["name"]
        figures[figure].append((cell, "/".join(parts[1:]) if len(meta["axes"]) >= 2 else cell))

    for figure, cells in figures.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, (cell, label) in enumerate(cells):
            c = curves.get(cell)
            if not c:
                continue
            color = f"C{i % 10}"
            steps = c["step"]
            ax.plot(steps, c["test_acc_median"], color=color, label=label or cell)
            ax.fill_between(steps, c["test_acc_q25"], c["test_acc_q75"], color=color, alpha=0.2, linewidth=0)
            ax.plot(steps, c["train_acc_median"], color=color, linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("optimisation steps")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        title = f"{meta['name']}: {figure}" if len(meta["axes"]) >= 2 else meta["name"]
        ax.set_title(f"{title} (test solid, train dashed; median and 25-75% over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = re.sub(r"[^A-Za-z0-9._+=-]", "_", figure.replace("*", "x"))
        out = os.path.join(report, f"curves_{name}.png")
        fig.savefig(out, dpi=120)
        plt.close(fig)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
