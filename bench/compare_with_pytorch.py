#!/usr/bin/env python3
"""Runs tapegrok's step benchmark (tapegrok_bench_steps) and PyTorch's (pytorch_steps.py) on the same
device with the same thread count, the same model and data sizes and the same --sections (train: the
training steps; second-order: gradient, Hessian-vector product, unrolled hypergradients), and prints
ms/step side by side with the ratio PyTorch / tapegrok (> 1: tapegrok is faster). The two sides run
alternately, --rounds times each (ours, theirs, ours, theirs, ...), so a slow spell of the
machine hits both; each cell is the median over the rounds of that round's median of --repeats steps,
with the range over the rounds in brackets, and the ratio is that of the two medians. A row one side
did not measure (no torch.compile, a failed run, ...) still gets its line, with 'n/a' and the reason.

Where tapegrok's row carries gemm_gflop (GFLOP its step spends in matrix products) and
gemm_ceiling_gflops (the GFLOP/s of a 1024^3 f32 product measured in the same process), two more
columns give the GEMM floor (gemm_gflop / gemm_ceiling_gflops, in ms: the step's time if it did only
its products at that rate) and tapegrok / floor; '—' where the row lacks them.

With --time-to-95 it also times a whole NeuralGrok run on a+b mod 97 on both sides until the test
accuracy reaches 95% (tapegrok: `tapegrok train --preset official --cuda-graph`; PyTorch: the official
code's loop, pytorch_steps.py --time-to-95), at most --max-steps steps each, once, and prints the wall
times.

usage: compare_with_pytorch.py [--build build] [--device cpu] [--threads 2] [--repeats 10] [--rounds 3] [--tiny]
                               [--python PYTHON] [--out FILE.md] [--sections train,second-order]
                               [--time-to-95 [--max-steps 20000]]
--tiny: both sides use 1 layer, width 32, batch 64, amplifier (8, 8) (a smoke run, well under a minute).
The PyTorch side runs under /usr/bin/python3 (Debian's python3-torch, 1.13: no torch.compile) unless
--python says otherwise. For PyTorch 2.x from PyPI, scripts/pytorch2-venv creates .venv-torch2; then
  python3 bench/compare_with_pytorch.py --python .venv-torch2/bin/python --rounds 5 --out docs/results/...
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# (what the row measures, tapegrok row, PyTorch row) per --sections name; bench/README.md describes each.
TRAIN_PAIRS = [
    ("plain Adam step (PyTorch eager)", "standard Adam step", "standard Adam step (eager)"),
    ("plain Adam step (PyTorch torch.compile)", "standard Adam step", "standard Adam step (torch.compile)"),
    ("plain Adam step, tapegrok --cuda-graph (PyTorch eager)", "standard Adam step, --cuda-graph",
     "standard Adam step (eager)"),
    ("plain Adam step, tapegrok --cuda-graph (PyTorch torch.compile)", "standard Adam step, --cuda-graph",
     "standard Adam step (torch.compile)"),
    ("Grokfast-EMA step", "Grokfast-EMA step", "Grokfast-EMA step"),
    ("NeuralGrok inner step (amplifier, clip, Adam; no meta step)", "NeuralGrok inner step", "NeuralGrok inner step"),
    ("NeuralGrok lookahead meta step alone (PyTorch: official code, deepcopy)",
     "NeuralGrok lookahead meta step alone", "NeuralGrok lookahead meta step alone, official code (deepcopy)"),
    ("NeuralGrok lookahead meta step alone (PyTorch: functional_call, no deepcopy)",
     "NeuralGrok lookahead meta step alone", "NeuralGrok lookahead meta step alone, functional (no deepcopy)"),
    ("NeuralGrok step, T 4 amortised (tapegrok lookahead meta; PyTorch official code)",
     "NeuralGrok step, lookahead meta (T 4, amortised)", "NeuralGrok step, official code (T 4, amortised)"),
    ("NeuralGrok step, T 4 amortised (tapegrok --cuda-graph; PyTorch official code)",
     "NeuralGrok step, lookahead (T 4), --cuda-graph", "NeuralGrok step, official code (T 4, amortised)"),
]
# The same construction on both sides (reverse-over-reverse).
SECOND_ORDER_PAIRS = [
    ("gradient (forward + backward)", "gradient (forward + backward)", "gradient (forward + backward)"),
    ("Hessian-vector product", "Hessian-vector product", "Hessian-vector product"),
    ("hypergradient through 1 unrolled SGD step", "hypergradient through 1 unrolled SGD step",
     "hypergradient through 1 unrolled SGD step"),
    ("hypergradient through 4 unrolled SGD steps", "hypergradient through 4 unrolled SGD steps",
     "hypergradient through 4 unrolled SGD steps"),
]
PAIRS = TRAIN_PAIRS + SECOND_ORDER_PAIRS
TINY_FLAGS = ["--layers", "1", "--width", "32", "--batch-size", "64", "--amp-hidden", "8,8"]


def time_to_95_lines(args, env, tmp):
    """Both sides' NeuralGrok run on a+b mod 97 to 95% test accuracy: a small table of wall times."""
    run_dir = os.path.join(tmp, "run")
    cmd = [os.path.join(args.build, "tapegrok"), "train", "--task", "a+b", "--preset", "official", "--cuda-graph",
           "--device", args.device, "--stop-at-test-acc", "0.95", "--steps", str(args.max_steps), "--run-dir",
           run_dir, "--no-progress", *(TINY_FLAGS if args.tiny else [])]
    ours, ours_note, ours_reached = None, "", False
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            s = json.load(f)
        ours = s["wall_seconds"]
        ours_reached = s["first_test_95"] >= 0
        ours_note = f"{s['step']} steps" + ("" if ours_reached else ", 95% not reached")
    except (OSError, KeyError, json.JSONDecodeError):
        ours_note = f"failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-200:]}"
    theirs_json = os.path.join(tmp, "theirs95.json")
    theirs_doc, failure = run_side(
        "pytorch_steps.py --time-to-95",
        [args.python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_steps.py"), "--device",
         args.device, "--threads", str(args.threads), "--time-to-95", "--max-steps", str(args.max_steps), "--json",
         theirs_json, *(["--tiny"] if args.tiny else [])], theirs_json, env)
    row = ((theirs_doc or {}).get("rows") or [{}])[0]
    theirs, theirs_note = row.get("seconds"), failure or row.get("note", "")
    # A ratio only when both runs got there (unfinished runs' times compare nothing).
    ratio = f"{theirs / ours:.2f}x" if ours and theirs and ours_reached and row.get("reached") else "—"
    fmt_s = lambda v: "n/a" if v is None else f"{v:.1f} s"  # noqa: E731
    return ["", "Whole run: NeuralGrok (official settings) on a+b mod 97 until 95% test accuracy, evaluation "
            "included (the two sides split the data with their own seeds, so their step counts differ).", "",
            "| run | tapegrok | PyTorch | PyTorch / tapegrok |", "|---|---|---|---|",
            f"| wall time to 95% test accuracy | {fmt_s(ours)} ({ours_note}) | {fmt_s(theirs)} ({theirs_note}) | "
            f"{ratio} |"]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def other_runnable(samples=10, interval=0.05):
    """How many other tasks were runnable at the quietest of a few instants (/proc/loadavg's running count,
    less this process). Unlike the load average it does not remember the benchmark's own previous round."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(interval)
    return max(0, min(counts))


def run_side(label, command, json_path, env):
    """Runs one benchmark; returns (its JSON, None) or (None, why there is none)."""
    try:
        rc = subprocess.run(command, env=env, check=False).returncode
    except OSError as e:
        return None, f"{label} did not start: {e.strerror}"
    if rc != 0:
        return None, f"{label} failed (exit {rc})"
    try:
        with open(json_path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"{label} wrote no readable JSON: {e}"


class Side:
    """One side's results over the rounds: each round's rows by name, or why that round has none."""

    def __init__(self, label):
        self.label, self.rounds, self.doc = label, [], None

    def add(self, rows, failure):
        self.rounds.append(({r["name"]: r for r in rows}, failure))

    def names(self):
        return list(dict.fromkeys(n for rows, _ in self.rounds for n in rows))

    def samples(self, name):
        """The row's ms in each round that measured it."""
        return [rows[name]["ms"] for rows, _ in self.rounds if rows.get(name, {}).get("ms") is not None]

    def first(self, key):
        return next((r[key] for rows, _ in self.rounds for r in rows.values() if r.get(key)), None)

    def cell(self, name):
        """(text, median ms or None) for one table cell."""
        ms = self.samples(name)
        if not ms:  # why not, as the last round says: its failure, the row's note, or no such row
            rows, failure = self.rounds[-1]
            if failure:
                return f"n/a ({failure})", None
            if name in rows:
                return f"n/a ({rows[name].get('note') or 'not measured'})", None
            return f"n/a (no row '{name}' from {self.label})", None
        med = statistics.median(ms)
        text = f"{med:.2f}" if len(ms) == 1 else f"{med:.2f} [{min(ms):.2f}–{max(ms):.2f}]"
        if len(ms) < len(self.rounds):
            text += f" ({len(ms)} of {len(self.rounds)} rounds)"
        return text, med

    def gemm_floor(self, name):
        """Median over the rounds of the row's GEMM floor in ms, or None where the row lacks the fields."""
        floors = []
        for rows, _ in self.rounds:
            r = rows.get(name, {})
            gflop, rate = r.get("gemm_gflop"), r.get("gemm_ceiling_gflops")
            if gflop is not None and rate:  # the ceiling differs per process, so per round
                floors.append(1e3 * gflop / rate)
        return statistics.median(floors) if floors else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternate the two sides this many times each")
    ap.add_argument("--python", default="/usr/bin/python3", help="the interpreter with the PyTorch to compare")
    ap.add_argument("--tiny", action="store_true", help="1 layer, width 32, batch 64, amplifier (8, 8) on both sides")
    ap.add_argument("--out", default="")
    ap.add_argument("--time-to-95", action="store_true", help="also time a whole NeuralGrok run to 95%% on both sides")
    ap.add_argument("--max-steps", type=int, default=20000, help="with --time-to-95: the step budget of each run")
    ap.add_argument("--sections", default="train,second-order",
                    help="the steps (train), the second-order rows (second-order), or both, on both sides")
    args = ap.parse_args()
    args.rounds = max(1, args.rounds)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    tiny = ["--tiny"] if args.tiny else []
    ours, theirs = Side("tapegrok_bench_steps"), Side("pytorch_steps.py")
    # Other work skews both sides (PyTorch's most): the load average before the first round (nothing of
    # ours has run yet), and tasks runnable beside us before each round.
    load, busy = os.getloadavg()[0], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            busy = max(busy, other_runnable())
            # A fresh file each round, so a failed run cannot pass off the previous round's results.
            ours_json, theirs_json = os.path.join(tmp, f"ours{i}.json"), os.path.join(tmp, f"theirs{i}.json")
            print(f"== round {i + 1}/{args.rounds}: tapegrok", flush=True)
            doc, failure = run_side(
                "tapegrok_bench_steps",
                [os.path.join(args.build, "bench", "tapegrok_bench_steps"), "--device", args.device, "--sections",
                 args.sections, "--repeats", str(args.repeats), "--json", ours_json, *tiny], ours_json, env)
            ours.add(doc or [], failure)
            print(f"== round {i + 1}/{args.rounds}: PyTorch", flush=True)
            doc, failure = run_side(
                "pytorch_steps.py",
                [args.python, os.path.join(here, "pytorch_steps.py"), "--device", args.device, "--threads",
                 str(args.threads), "--repeats", str(args.repeats), "--sections", args.sections, "--json", theirs_json,
                 *tiny], theirs_json, env)
            theirs.add((doc or {}).get("rows", []), failure)
            theirs.doc = theirs.doc or doc
        whole_run = time_to_95_lines(args, env, tmp) if args.time_to_95 else []

    doc = theirs.doc or {}
    ours_config, theirs_config = ours.first("config"), doc.get("config")
    torch_python = doc.get("python")  # sys.executable as PyTorch's side saw it (a venv's, not the link target)
    python = args.python + (f" ({torch_python})" if torch_python and torch_python != args.python else "")
    lines = [f"CPU: {cpu_name()}" + ("" if args.device == "cpu" else f"; device: {args.device}"),
             f"Threads: {args.threads} (PyTorch reports {doc.get('threads', 'n/a')}); "
             f"PyTorch {doc.get('torch', '(no result)')} under {python}.",
             f"Model and data: {ours_config or theirs_config or 'unknown'}.",
             f"Each cell: median over {args.rounds} round(s), the two sides alternating, of each round's median of "
             f"{args.repeats} timed steps, [min–max over the rounds]; the ratio is of the medians."]
    if load >= 0.5 or busy > 0:
        lines.append(f"NOTE: other processes competed for the {os.cpu_count()} CPUs (load average {load:.1f} before the "
                     f"first round; {busy} other task(s) runnable before a round), so these timings are unreliable "
                     "(multi-threaded PyTorch suffers most; --threads 1 is less affected).")
    if ours_config and theirs_config and ours_config != theirs_config:
        lines.append(f"WARNING: the two sides ran different sizes (PyTorch: {theirs_config}).")
    lines += ["", "| step | tapegrok ms (median [min–max]) | PyTorch ms (median [min–max]) | PyTorch / tapegrok "
              "| GEMM floor ms | tapegrok / floor |", "|---|---|---|---|---|---|"]
    pairs = ((TRAIN_PAIRS if "train" in args.sections else [])
             + (SECOND_ORDER_PAIRS if "second-order" in args.sections else []))
    for label, ours_name, theirs_name in pairs:
        o_text, o = ours.cell(ours_name)
        t_text, t = theirs.cell(theirs_name)
        ratio = f"{t / o:.2f}x" if o and t else "—"
        floor = ours.gemm_floor(ours_name)
        floor_text = "—" if floor is None else f"{floor:.3f}"
        over_floor = f"{o / floor:.1f}x" if o and floor else "—"
        lines.append(f"| {label} | {o_text} | {t_text} | {ratio} | {floor_text} | {over_floor} |")
    paired_ours, paired_theirs = {p[1] for p in PAIRS}, {p[2] for p in PAIRS}
    for title, side, paired in (("tapegrok only:", ours, paired_ours), ("PyTorch only:", theirs, paired_theirs)):
        extra = [n for n in side.names() if n not in paired]
        if extra:
            lines += ["", title, ""]
            for n in extra:
                text, ms = side.cell(n)
                lines.append(f"- {n}: {text}" + (" ms" if ms is not None else ""))
    lines += whole_run
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
