"""experiments/seeded_mod7.py (the mod-7 sweep's analysis): budgets from the report, censoring at the
common horizon, and its p-values on a synthetic report against SciPy's permutation test of the rank sum
on the values censored by hand."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")

EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments")
sys.path.insert(0, EXPERIMENTS)
import seeded_mod7 as sm  # noqa: E402


BUDGET = {"grokfast-ma": 6000, "neuralgrok": 3000, "neuralgrok-paper-amp": 3000}
# (layout, method) -> per seed (steps to 95% or None, last step, test accuracy at the end)
RUNS = {
    ("sequence", "grokfast-ma"): [(2587, 2587, 0.954), (2100, 2100, 0.951), (4100, 4100, 0.952)],
    ("interleaved", "grokfast-ma"): [(5278, 5278, 0.955), (2900, 2900, 0.950), (None, 6000, 0.41)],
    ("sequence", "neuralgrok"): [(None, 3000, 0.235), (None, 3000, 0.26), (None, 3000, 0.22)],
    ("interleaved", "neuralgrok"): [(None, 3000, 0.302), (None, 3000, 0.28), (None, 3000, 0.31)],
    ("sequence", "neuralgrok-paper-amp"): [(None, 3000, 0.218), (2950, 2950, 0.95), (None, 3000, 0.2)],
    ("interleaved", "neuralgrok-paper-amp"): [(None, 3000, 0.191), (None, 3000, 0.17), (None, 3000, 0.3)],
}


def gap(method, seed):
    """The synthetic runs' train - test accuracy at step 3000: NeuralGrok memorises, Grokfast-MA does not."""
    return (0.5 + 0.1 * seed) if method != "grokfast-ma" else 0.01 * (seed + 1)


def write_report(tmp_path, runs=RUNS, budget=BUDGET):
    report = tmp_path / "report"
    report.mkdir(parents=True)
    with open(report / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "layout", "method", "seed", "steps_to_95", "reached_95", "last_step", "budget",
                    "final_test_acc", "run_dir"])
        for (layout, method), seeds in runs.items():
            for seed, (steps, last, acc) in enumerate(seeds):
                run_dir = tmp_path / "runs" / layout / method / f"seed{seed}"
                run_dir.mkdir(parents=True)
                # An evaluation at or before step 3000 (the one read) and, for longer runs, one after it.
                evaluations = [(min(last, 3000), 0.2 + gap(method, seed), 0.2)]
                if last > 3000:
                    evaluations.append((last, 0.99, acc))
                (run_dir / "metrics.jsonl").write_text("".join(
                    json.dumps({"step": st, "train_acc": tr, "test_acc": te}) + "\n" for st, tr, te in evaluations))
                w.writerow([f"{layout}/{method}", layout, method, seed, steps if steps else last,
                            int(steps is not None), last, budget[method] if isinstance(budget, dict) else budget[seed],
                            acc, str(run_dir)])
    return report


def scipy_rank_sum_p(x, y):
    n1, n = len(x), len(x) + len(y)

    def statistic(a, b):
        r = scipy_stats.rankdata(np.concatenate([a, b]))
        return abs(r[: len(a)].sum() - n1 * (n + 1) / 2)

    return scipy_stats.permutation_test((np.array(x, dtype=float), np.array(y, dtype=float)), statistic,
                                        permutation_type="independent", n_resamples=np.inf,
                                        alternative="greater", vectorized=False).pvalue


def test_budgets_come_from_the_report(tmp_path):
    assert sm.budgets(sm.read_runs(write_report(tmp_path))) == BUDGET
    # Runs of one method with different budgets cannot share a censoring point: an error names them.
    mixed = {("sequence", "neuralgrok"): [(None, 3000, 0.2), (None, 4000, 0.2)]}
    with pytest.raises(ValueError, match="neuralgrok: runs with budgets 3000 and 4000"):
        sm.budgets(sm.read_runs(write_report(tmp_path / "mixed", mixed, [3000, 4000])))
    # A report written before runs.csv had budgets is refused with what to do.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "runs.csv").write_text("cell,layout,method,seed,steps_to_95,reached_95,last_step\n")
    with pytest.raises(ValueError, match="no budget column"):
        sm.read_runs(tmp_path / "old")


def test_censoring_at_the_horizon():
    runs = [{"seed": 0, "steps_to_95": 2999.0, "last_step": 2999, "test_acc": 0.95},
            {"seed": 1, "steps_to_95": 3000.0, "last_step": 3000, "test_acc": 0.95},
            {"seed": 2, "steps_to_95": 3001.0, "last_step": 3001, "test_acc": 0.95},
            {"seed": 3, "steps_to_95": math.inf, "last_step": 6000, "test_acc": 0.3}]
    assert sm.censored_at(runs, 3000) == [2999.0, 3000.0, math.inf, math.inf]
    # A run that stopped before the horizon without reaching 95% cannot be ordered within it.
    with pytest.raises(ValueError, match="seed 4 stopped at step 1200"):
        sm.censored_at([{"seed": 4, "steps_to_95": math.inf, "last_step": 1200, "test_acc": 0.2}], 3000)


def test_report_p_values_match_scipy_on_hand_censored_values(tmp_path):
    report = write_report(tmp_path)
    out = tmp_path / "mod7.md"
    subprocess.run([sys.executable, os.path.join(EXPERIMENTS, "seeded_mod7.py"), "--report", str(report),
                    "--markdown", str(out)], check=True)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith(("| paper:", "| token order,", "| train - test"))}

    def p_of(question):
        return float(rows[question][2])

    inf = math.inf
    # Censored by hand at step 3000: Grokfast-MA's 4100, 5278 and its unreached seed become inf.
    ma_seq, ma_int = [2587, 2100, inf], [inf, 2900, inf]
    ng = {"sequence": [inf, inf, inf], "interleaved": [inf, inf, inf]}
    amp = {"sequence": [inf, 2950, inf], "interleaved": [inf, inf, inf]}
    expected = {
        "paper: neuralgrok < grokfast-ma (sequence)": (ng["sequence"], ma_seq),
        "paper: neuralgrok < grokfast-ma (interleaved)": (ng["interleaved"], ma_int),
        "paper: neuralgrok < grokfast-ma (both orders)": (ng["sequence"] + ng["interleaved"], ma_seq + ma_int),
        "paper: neuralgrok-paper-amp < grokfast-ma (both orders)": (amp["sequence"] + amp["interleaved"],
                                                                    ma_seq + ma_int),
        # Grokfast-MA's token orders share the 6000-step budget: no censoring beyond it.
        "token order, grokfast-ma (steps to 95%)": ([2587, 2100, 4100], [5278, 2900, inf]),
        "token order, neuralgrok (test accuracy at the end)": ([0.235, 0.26, 0.22], [0.302, 0.28, 0.31]),
        # Train - test accuracy at step 3000, read from each run's metrics.jsonl (later evaluations ignored).
        "train - test accuracy at step 3000, neuralgrok vs grokfast-ma (both orders)":
            ([gap("neuralgrok", s) for s in range(3)] * 2, [gap("grokfast-ma", s) for s in range(3)] * 2),
    }
    for question, (x, y) in expected.items():
        assert p_of(question) == pytest.approx(round(scipy_rank_sum_p(x, y), 3), abs=1e-9), question
    # Complete separation of 3 seeds against 3 gives the smallest p a two-sided test can: 2/20.
    assert p_of("token order, neuralgrok (test accuracy at the end)") == pytest.approx(0.1)
    assert "| sequence | grokfast-ma | 6000 | 2587 [2100, 4100] (3/3) |" in out.read_text()
    assert "| interleaved | grokfast-ma | 6000 | 5278 [2900, > 6000] (2/3) |" in out.read_text()
    # Accuracies at step 3000 come from the evaluation at or before it, not the run's last (step 5278, 6000).
    assert "| interleaved | grokfast-ma | 6000 | 5278 [2900, > 6000] (2/3) | 95.0% [41.0%, 95.5%] | 22.0% / 20.0% |" \
        in out.read_text()
