#!/usr/bin/env python3
"""The mod-7 task (a*c+b*d-e) with seeds: reads the report of experiments/sweeps/table1_mod7.toml (runs.csv,
written by `tapegrok sweep report`), prints each cell's spread and tests two questions:

1. The paper's ordering, NeuralGrok (1896 steps) before Grokfast-MA (8853), in each token order and with
   both orders pooled. The methods ran different budgets (Grokfast-MA 6000 steps, NeuralGrok 3000), so
   a Grokfast-MA run that reached 95% after step 3000 cannot be ordered against a NeuralGrok run that
   stopped at 3000. Both sides are therefore censored at the common horizon (the smaller budget): a run
   that had not reached 95% by then ranks after every run that had. With one shared horizon the order of
   every pair is known and the exact permutation test of seeded_table1.py applies unchanged.
2. Memorisation: the gap between train and test accuracy at that common horizon (each run's last
   evaluation at or before it), NeuralGrok against Grokfast-MA.
3. Whether the token order matters (ours, operands first, against the official code's, operators between
   operands): for Grokfast-MA on steps to 95% (both orders share the 6000-step budget); for the NeuralGrok
   variants, which do not reach 95%, on test accuracy at their last step (3000).

With 3 seeds against 3 the smallest possible two-sided p is 2/20 = 0.1, so no single-order comparison
can pass 0.05; pooling the two orders gives 6 against 6 (smallest p 2/924 = 0.002).

Each method's budget is runs.csv's `budget` column (the runs' --steps).

usage: seeded_mod7.py [--report experiments/results/table1-mod7-seeds/report] [--markdown OUT.md]"""

import argparse
import csv
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reproduce_table1 import PAPER  # noqa: E402
from seeded_table1 import bootstrap_difference, mann_whitney_exact, median, print_and_save  # noqa: E402

LAYOUTS = ["sequence", "interleaved"]
METHODS = ["grokfast-ma", "neuralgrok", "neuralgrok-paper-amp"]
NEURALGROK = ["neuralgrok", "neuralgrok-paper-amp"]


def read_runs(report):
    """(layout, method) -> list of runs, each {seed, steps_to_95 (inf if not reached), last_step, budget,
    test_acc}."""
    runs = {}
    path = os.path.join(report, "runs.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "budget" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no budget column: write the report again with `tapegrok sweep report`")
        for row in reader:
            reached = row["reached_95"] == "1"
            runs.setdefault((row["layout"], row["method"]), []).append({
                "seed": int(row["seed"]),
                "steps_to_95": float(row["steps_to_95"]) if reached else math.inf,
                "last_step": int(row["last_step"]),
                "budget": int(row["budget"]),
                "test_acc": float(row["final_test_acc"]),
                "run_dir": row["run_dir"],
            })
    return runs


def budgets(runs):
    """Each method's step budget; every run of a method must have the same."""
    out = {}
    for (_, method), cell in runs.items():
        for r in cell:
            if out.setdefault(method, r["budget"]) != r["budget"]:
                raise ValueError(f"{method}: runs with budgets {out[method]} and {r['budget']}")
    return out


def accuracies_at(run, horizon):
    """(train, test) accuracy of the run's last evaluation at or before the horizon, from its metrics.jsonl."""
    path = os.path.join(run["run_dir"], "metrics.jsonl")
    last = None
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "test_acc" in record and record["step"] <= horizon:
                last = (record["train_acc"], record["test_acc"])
    if last is None:
        raise ValueError(f"{path}: no evaluation at or before step {horizon}")
    return last


def censored_at(runs, horizon):
    """Steps to 95% with every run censored at the horizon: inf unless it reached 95% by then. A run that
    stopped earlier without reaching 95% cannot be ordered within the horizon, so it is an error."""
    out = []
    for r in runs:
        if math.isinf(r["steps_to_95"]) and r["last_step"] < horizon:
            raise ValueError(f"seed {r['seed']} stopped at step {r['last_step']} without reaching 95%, "
                             f"before the common horizon {horizon}")
        out.append(r["steps_to_95"] if r["steps_to_95"] <= horizon else math.inf)
    return out


def steps_text(values, budget):
    values = sorted(values)
    reached = sum(math.isfinite(v) for v in values)

    def q(p):  # the inverse of the sample CDF, as the sweep report
        v = values[max(0, math.ceil(p * len(values)) - 1)]
        return f"{v:.0f}" if math.isfinite(v) else f"> {budget}"

    return f"{q(0.5)} [{q(0.25)}, {q(0.75)}] ({reached}/{len(values)})"


def percent(v):
    return f"{100 * v:.1f}%"


def comparison_row(question, a_label, x, b_label, y, unit, horizon=None):
    """One table row: the medians, the exact two-sided p and the bootstrap 90% interval of x - y. Steps
    past the horizon (inf) print as "> horizon"; an interval bound is open (±∞) where a resampled median
    lies past it."""
    p = mann_whitney_exact(x, y)
    lo, hi = bootstrap_difference(x, y)
    if unit == "%":
        medians = f"{a_label} {percent(median(x))} vs {b_label} {percent(median(y))}"
        interval = f"[{100 * lo:+.1f}, {100 * hi:+.1f}] points"
    else:
        def steps(v):
            return f"{v:.0f}" if math.isfinite(v) else f"> {horizon}"
        medians = f"{a_label} {steps(median(x))} vs {b_label} {steps(median(y))}"
        interval = f"[{lo:.0f}, {hi:.0f}] steps".replace("inf", "∞")
    return f"| {question} | {medians} | {p:.3f} | {interval} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default="experiments/results/table1-mod7-seeds/report")
    parser.add_argument("--markdown", help="also write the tables here")
    args = parser.parse_args()
    runs = read_runs(args.report)
    budget = budgets(runs)
    paper = PAPER["a*c+b*d-e"]

    horizon = min(budget[m] for m in METHODS if m in budget)
    at = {(lay, m): [accuracies_at(r, horizon) for r in cell] for (lay, m), cell in runs.items()}
    lines = ["Steps to 95% test accuracy over the seeds: median [25th, 75th percentile] (seeds that reached "
             "95% / seeds run); test accuracy at the last step, and train / test accuracy at step "
             f"{horizon} (the last evaluation at or before it): medians [lowest, highest]. Chance is 14.3%.",
             "", f"| token order | method | budget | steps to 95% | test accuracy at the end | train / test at "
             f"{horizon} | paper |", "|---|---|---|---|---|---|---|"]
    for layout in LAYOUTS:
        for m in METHODS:
            cell = runs.get((layout, m))
            if not cell:
                continue
            acc = sorted(r["test_acc"] for r in cell)
            steps = [r["steps_to_95"] for r in cell]
            reference = paper.get("neuralgrok" if m in NEURALGROK else m)
            train_h, test_h = [a[0] for a in at[(layout, m)]], [a[1] for a in at[(layout, m)]]
            lines.append(f"| {layout} | {m} | {budget[m]} | {steps_text(steps, budget[m])} | "
                         f"{percent(median(acc))} [{percent(acc[0])}, {percent(acc[-1])}] | "
                         f"{percent(median(train_h))} / {percent(median(test_h))} | "
                         f"{reference if reference else '—'} |")

    lines += ["", f"Tests (exact permutation test of the rank sums, two-sided; bootstrap 90% interval of the "
              f"difference of medians). The paper's ordering is tested on steps to 95% censored at step "
              f"{horizon}, the budget both methods ran:", "",
              "| question | medians | p | difference of medians, 90% interval |", "|---|---|---|---|"]
    for ng in NEURALGROK:
        for layouts, name in [([lay], lay) for lay in LAYOUTS] + [(LAYOUTS, "both orders")]:
            x = [v for lay in layouts for v in censored_at(runs.get((lay, ng), []), horizon)]
            y = [v for lay in layouts for v in censored_at(runs.get((lay, "grokfast-ma"), []), horizon)]
            if x and y:
                lines.append(comparison_row(f"paper: {ng} < grokfast-ma ({name})", ng, x, "grokfast-ma", y,
                                            "steps", horizon))
    for ng in NEURALGROK:
        for layouts, name in [([lay], lay) for lay in LAYOUTS] + [(LAYOUTS, "both orders")]:
            x = [tr - te for lay in layouts for tr, te in at.get((lay, ng), [])]
            y = [tr - te for lay in layouts for tr, te in at.get((lay, "grokfast-ma"), [])]
            if x and y:
                lines.append(comparison_row(f"train - test accuracy at step {horizon}, {ng} vs grokfast-ma ({name})",
                                            ng, x, "grokfast-ma", y, "%"))
    seq, inter = runs.get(("sequence", "grokfast-ma")), runs.get(("interleaved", "grokfast-ma"))
    if seq and inter:
        lines.append(comparison_row("token order, grokfast-ma (steps to 95%)", "sequence",
                                    [r["steps_to_95"] for r in seq], "interleaved",
                                    [r["steps_to_95"] for r in inter], "steps", budget["grokfast-ma"]))
    for ng in NEURALGROK:
        seq, inter = runs.get(("sequence", ng)), runs.get(("interleaved", ng))
        if seq and inter:
            lines.append(comparison_row(f"token order, {ng} (test accuracy at the end)", "sequence",
                                        [r["test_acc"] for r in seq], "interleaved",
                                        [r["test_acc"] for r in inter], "%"))
    print_and_save(lines, args.markdown)


if __name__ == "__main__":
    main()
