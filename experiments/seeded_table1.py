#!/usr/bin/env python3
"""Table 1 with seeds: reads the report of the sweep experiments/sweeps/table1.toml (runs.csv, written by
`tapegrok sweep report`), prints the seeded table beside the paper's single numbers and our seed-0
numbers, and tests every ordering of two methods on a task that the paper's table states.

The test: an exact two-sided permutation test of the Mann-Whitney U statistic on steps to 95% test
accuracy. A seed that did not reach 95% within the budget is ranked after every seed that did (all runs
share the budget, so the order is known even though the step is not), and ties share ranks; the exact
null distribution comes from all C(n1 + n2, n1) relabellings of the pooled seeds, so ties and censoring
need no approximation. With 5 seeds per method the smallest possible p is 2/252 = 0.008. Also printed: a
bootstrap 90% interval of the difference of medians (10000 resamples of seeds within each method; a
resampled median past the budget makes the interval open).

usage: seeded_table1.py [--report experiments/results/table1-seeds/report] [--markdown OUT.md]"""

import argparse
import csv
import itertools
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reproduce_table1 import PAPER  # noqa: E402

# Our seed-0 numbers from before the seeded sweep (docs/results/table1.md, first table).
SEED0 = {
    "a+b": {"standard": 2190, "grokfast-ma": 1470, "grokfast-ema": 1620, "neuralgrok": 918, "normalise+clip": 918},
    "a-b": {"standard": 3280, "grokfast-ma": 2920, "grokfast-ema": 4370, "neuralgrok": 1566, "normalise+clip": 1539},
    "a*b": {"standard": 1680, "grokfast-ma": 2010, "grokfast-ema": 3100, "neuralgrok": 918},
    "a*a-b": {"standard": 3680, "grokfast-ma": 3630, "grokfast-ema": 2060, "neuralgrok": 1620},
}
METHODS = ["standard", "grokfast-ma", "grokfast-ema", "neuralgrok", "normalise+clip"]
TASKS = ["a+b", "a-b", "a*b", "a*a-b"]


def read_runs(report):
    runs = {}  # (task, method) -> steps to 95% of each seed (inf: not reached within the budget)
    with open(os.path.join(report, "runs.csv"), newline="") as f:
        for row in csv.DictReader(f):
            steps = float(row["steps_to_95"]) if row["reached_95"] == "1" else math.inf
            runs.setdefault((row["task"], row["method"]), []).append(steps)
    return runs


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1  # ties share the mean rank
        i = j + 1
    return r


def mann_whitney_exact(x, y):
    """Two-sided exact permutation p-value of the rank-sum of x against y (ties and inf allowed)."""
    pooled = x + y
    r = ranks(pooled)
    n1 = len(x)
    expected = n1 * (len(pooled) + 1) / 2
    observed = abs(sum(r[:n1]) - expected)
    splits = list(itertools.combinations(range(len(pooled)), n1))
    extreme = sum(1 for s in splits if abs(sum(r[i] for i in s) - expected) >= observed - 1e-9)
    return extreme / len(splits)


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def bootstrap_difference(x, y, resamples=10000, seed=0):
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        mx = median([rng.choice(x) for _ in x])
        my = median([rng.choice(y) for _ in y])
        if math.isinf(mx) or math.isinf(my):  # a median past the budget: the difference is unbounded
            diffs.append(0.0 if mx == my else (math.inf if math.isinf(mx) else -math.inf))
        else:
            diffs.append(mx - my)
    diffs.sort()
    return diffs[int(0.05 * resamples)], diffs[int(0.95 * resamples) - 1]


def cell_text(values, budget):
    values = sorted(values)
    reached = sum(math.isfinite(v) for v in values)

    def q(p):  # the inverse of the sample CDF, as the sweep report: the first value with F >= p
        v = values[max(0, math.ceil(p * len(values)) - 1)]
        return f"{v:.0f}" if math.isfinite(v) else f"> {budget}"

    return f"{q(0.5)} [{q(0.25)}, {q(0.75)}] ({reached}/{len(values)})"


def print_and_save(lines, markdown_path):
    text = "\n".join(lines) + "\n"
    print(text)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default="experiments/results/table1-seeds/report")
    parser.add_argument("--budget", type=int, default=6000, help="the sweep's steps per run")
    parser.add_argument("--markdown", help="also write the tables here")
    args = parser.parse_args()
    runs, budget = read_runs(args.report), args.budget

    lines = ["Steps to 95% test accuracy over seeds 0-4: median [25th, 75th percentile] (seeds that reached "
             f"95% / seeds run), budget {budget} steps; the paper's single number and our earlier seed-0 run "
             "below each.", "", "| task | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for task in TASKS:
        cells = []
        for m in METHODS:
            v = runs.get((task, m))
            paper = PAPER.get(task, {}).get(m)
            seed0 = SEED0.get(task, {}).get(m)
            text = cell_text(v, budget) if v else "—"
            cells.append(f"{text}<br>paper {paper if paper else '—'}, seed 0 {seed0 if seed0 else '—'}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")

    lines += ["", "The paper's orderings, tested (exact permutation test of the rank sums, two-sided; "
              "bootstrap 90% interval of the difference of medians in steps):", "",
              "| task | paper says | seeds say (medians) | p | difference of medians, 90% interval |",
              "|---|---|---|---|---|"]
    for task in TASKS:
        paper = PAPER[task]
        pairs = [((a, b) if paper[a] < paper[b] else (b, a)) for a, b in
                 itertools.combinations([m for m in METHODS if paper.get(m)], 2)]
        # Our own question: is NeuralGrok's amplifier worth more than its normalisation and clip?
        pairs.append(("neuralgrok", "normalise+clip"))
        for fast, slow in pairs:
            if (task, fast) not in runs or (task, slow) not in runs:
                continue
            x, y = runs[(task, fast)], runs[(task, slow)]
            p = mann_whitney_exact(x, y)
            lo, hi = bootstrap_difference(x, y)
            mx, my = median(x), median(y)
            seeds_say = f"{fast} {mx:.0f} vs {slow} {my:.0f}".replace("inf", f"> {budget}")
            claim = f"{fast} ({paper[fast]}) < {slow} ({paper[slow]})" if slow in paper else f"(ours) {fast} vs {slow}"
            lines.append(f"| {task} | {claim} | {seeds_say} | {p:.3f} | "
                         f"[{lo:.0f}, {hi:.0f}] |".replace("inf", "∞"))
    print_and_save(lines, args.markdown)


if __name__ == "__main__":
    main()
