#!/usr/bin/env python3
"""Smoke test of bench/compare_with_pytorch.py at the tiny sizes: both sides run, every paired row
gets a number on both sides (torch.compile's rows excepted where this PyTorch has none, which must
say why), each ratio is the ratio of the two medians printed beside it, and a failed side gives its
rows 'n/a' with the reason instead of ending the comparison.

usage: check_benchmark_comparison.py TAPEGROK_BINARY WORK_DIR      (exit 77 = skipped without PyTorch)"""

import os
import re
import subprocess
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed for", sys.executable, "- skipping the benchmark comparison smoke test")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "..", "bench", "compare_with_pytorch.py")
sys.path.insert(0, os.path.dirname(COMPARE))
from compare_with_pytorch import PAIRS  # noqa: E402


def table_rows(text):
    """The comparison table's rows: label -> (tapegrok cell, PyTorch cell, ratio)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("step", "---"):
            rows[cells[0]] = cells[1], cells[2], cells[3]
    return rows


def median_of(cell):
    m = re.match(r"^(\d+\.\d+)", cell)
    return float(m.group(1)) if m else None


def run(build, work, python, name):
    out = os.path.join(work, name + ".md")
    result = subprocess.run([sys.executable, COMPARE, "--build", build, "--tiny", "--repeats", "2", "--rounds", "2",
                             "--python", python, "--out", out], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:])
        raise SystemExit(f"compare_with_pytorch.py exited {result.returncode}")
    with open(out) as f:
        return f.read()


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    build, work = os.path.dirname(os.path.abspath(sys.argv[1])), sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = []

    text = run(build, work, sys.executable, "compare")
    rows = table_rows(text)
    has_compile = hasattr(torch, "compile")
    for label, _, theirs_name in PAIRS:
        if label not in rows:
            failures.append(f"no row '{label}'")
            continue
        ours, theirs, ratio = rows[label]
        o, t = median_of(ours), median_of(theirs)
        if o is None:
            failures.append(f"'{label}': tapegrok cell '{ours}' is not a number")
        if t is None and not ("torch.compile" in theirs_name and not has_compile and "no torch.compile" in theirs):
            failures.append(f"'{label}': PyTorch cell '{theirs}' is not a number (nor an explained n/a)")
        if o is not None and t is not None:
            # The cells are rounded to 0.01 ms, the ratio is of the unrounded medians.
            low, high = (t - 0.005) / (o + 0.005), (t + 0.005) / max(o - 0.005, 1e-9)
            if not low - 0.005 <= float(ratio.rstrip("x")) <= high + 0.005:
                failures.append(f"'{label}': ratio {ratio}, but the medians give {t / o:.2f}x")
    print(f"PyTorch {torch.__version__}: {len(rows)} rows, {len(failures)} problem(s)")

    # A PyTorch side that cannot run: every PyTorch cell says why, and tapegrok's still have numbers.
    broken = run(build, work, "/nonexistent/python", "broken")
    for label, (ours, theirs, _) in table_rows(broken).items():
        if median_of(ours) is None or not theirs.startswith("n/a (pytorch_steps.py did not start"):
            failures.append(f"with no PyTorch: '{label}' reads '{ours}' | '{theirs}'")

    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
