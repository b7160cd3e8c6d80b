#!/usr/bin/env python3
"""Runs tapegrok's step benchmark (tapegrok_bench_steps --sections train) and PyTorch's
(pytorch_steps.py) on the same device with the same thread count and the same model and data sizes,
one after the other, and prints ms/step side by side with the ratio PyTorch / tapegrok (> 1: tapegrok
is faster). A row one side did not measure (no torch.compile, a failed run, ...) still gets its line,
with 'n/a' and the reason.

usage: compare_with_pytorch.py [--build build] [--device cpu] [--threads 2] [--repeats 10] [--tiny] [--out FILE.md]
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
    ("Grokfast-EMA step", "Grokfast-EMA step", "Grokfast-EMA step"),
    ("NeuralGrok inner step (amplifier, clip, Adam; no meta step)", "NeuralGrok inner step", "NeuralGrok inner step"),
    ("NeuralGrok lookahead meta step alone (PyTorch: official code, deepcopy)",
     "NeuralGrok lookahead meta step alone", "NeuralGrok lookahead meta step alone, official code (deepcopy)"),
    ("NeuralGrok lookahead meta step alone (PyTorch: functional_call, no deepcopy)",
     "NeuralGrok lookahead meta step alone", "NeuralGrok lookahead meta step alone, functional (no deepcopy)"),
    ("NeuralGrok step, T 4 amortised (tapegrok lookahead meta; PyTorch official code)",
     "NeuralGrok step, lookahead meta (T 4, amortised)", "NeuralGrok step, official code (T 4, amortised)"),
]


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
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
