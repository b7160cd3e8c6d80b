#!/usr/bin/env python3
"""Runs tapegrok's step benchmark (tapegrok_bench_steps --sections train) and PyTorch's
(pytorch_steps.py) on the same device with the same thread count and the same model and data sizes,
one after the other, and prints ms/step side by side with the ratio PyTorch / tapegrok (> 1: tapegrok
is faster). A row one side did not measure (no torch.compile, a failed run, ...) still gets its line,
with 'n/a' and the reason.

With --time-to-95 it also times a whole NeuralGrok run on a+b mod 97 on both sides until the test
accuracy reaches 95% (tapegrok: `tapegrok train --preset official --cuda-graph`; PyTorch: the official
code's loop, pytorch_steps.py --time-to-95), at most --max-steps steps each, and prints the wall times.

usage: compare_with_pytorch.py [--build build] [--device cpu] [--threads 2] [--repeats 10] [--tiny] [--out FILE.md]
                               [--time-to-95 [--max-steps 20000]]
--tiny: both sides use 1 layer, width 32, batch 64, amplifier (8, 8) (a smoke run, well under a minute).
The PyTorch side runs under /usr/bin/python3 (Debian's python3-torch) unless --python says otherwise."""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

# (what the row measures, tapegrok row, PyTorch row); bench/README.md describes each.
PAIRS = [
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


def cell(rows, name, failure, side):
    """(text, ms or None) for one side of one table row."""
    if failure:
        return f"n/a ({failure})", None
    row = rows.get(name)
    if row is None:
        return f"n/a (no row '{name}' from {side})", None
    if row.get("ms") is None:
        return f"n/a ({row.get('note') or 'not measured'})", None
    return f"{row['ms']:.2f}", row["ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--tiny", action="store_true", help="1 layer, width 32, batch 64, amplifier (8, 8) on both sides")
    ap.add_argument("--out", default="")
    ap.add_argument("--time-to-95", action="store_true", help="also time a whole NeuralGrok run to 95%% on both sides")
    ap.add_argument("--max-steps", type=int, default=20000, help="with --time-to-95: the step budget of each run")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    load_before = os.getloadavg()[0]  # other work competing for the cores skews both sides (PyTorch's most)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    tiny = ["--tiny"] if args.tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        ours_json, theirs_json = os.path.join(tmp, "ours.json"), os.path.join(tmp, "theirs.json")
        ours_doc, ours_failure = run_side(
            "tapegrok_bench_steps",
            [os.path.join(args.build, "bench", "tapegrok_bench_steps"), "--device", args.device, "--sections", "train",
             "--repeats", str(args.repeats), "--json", ours_json, *tiny], ours_json, env)
        theirs_doc, theirs_failure = run_side(
            "pytorch_steps.py",
            [args.python, os.path.join(here, "pytorch_steps.py"), "--device", args.device, "--threads",
             str(args.threads), "--repeats", str(args.repeats), "--json", theirs_json, *tiny], theirs_json, env)
        whole_run = time_to_95_lines(args, env, tmp) if args.time_to_95 else []
    ours = {r["name"]: r for r in (ours_doc or [])}
    theirs = {r["name"]: r for r in (theirs_doc or {}).get("rows", [])}

    device = cpu_name() if args.device == "cpu" else args.device
    torch_version = (theirs_doc or {}).get("torch", "(no result)")
    ours_config = next((r.get("config") for r in ours.values() if r.get("config")), None)
    theirs_config = (theirs_doc or {}).get("config")
    lines = [f"Device: {device}; {args.threads} threads; PyTorch {torch_version}.",
             f"Model and data: {ours_config or theirs_config or 'unknown'}."]
    if load_before >= 0.5:
        lines.append(f"NOTE: the load average was {load_before:.1f} on {os.cpu_count()} CPUs before the run: other "
                     "processes compete for the cores, so these timings are unreliable (multi-threaded PyTorch "
                     "suffers most; --threads 1 is less affected).")
    if ours_config and theirs_config and ours_config != theirs_config:
        lines.append(f"WARNING: the two sides ran different sizes (PyTorch: {theirs_config}).")
    lines += ["", "| step | tapegrok ms | PyTorch ms | PyTorch / tapegrok |", "|---|---|---|---|"]
    for label, ours_name, theirs_name in PAIRS:
        o_text, o = cell(ours, ours_name, ours_failure, "tapegrok_bench_steps")
        t_text, t = cell(theirs, theirs_name, theirs_failure, "pytorch_steps.py")
        ratio = f"{t / o:.2f}x" if o and t else "—"
        lines.append(f"| {label} | {o_text} | {t_text} | {ratio} |")
    paired_ours, paired_theirs = {p[1] for p in PAIRS}, {p[2] for p in PAIRS}
    extra_ours = [n for n in ours if n not in paired_ours]
    extra_theirs = [n for n in theirs if n not in paired_theirs]
    if extra_ours:
        lines += ["", "tapegrok only:", ""] + [f"- {n}: {ours[n]['ms']:.2f} ms" for n in extra_ours]
    if extra_theirs:
        lines += ["", "PyTorch only:", ""] + [
            f"- {n}: {'n/a' if theirs[n].get('ms') is None else format(theirs[n]['ms'], '.2f') + ' ms'}"
            for n in extra_theirs]
    lines += whole_run
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
