#!/usr/bin/env python3
"""Runs tapegrok's step benchmark and PyTorch's on the same device with the same thread count, one
after the other in one go, and prints ms/step side by side with the ratio PyTorch / tapegrok
(> 1: tapegrok is faster).

usage: compare_with_pytorch.py [--build build] [--device cpu] [--threads 2] [--repeats 10] [--out FILE.md]
The PyTorch side runs under /usr/bin/python3 (Debian's python3-torch) unless --python says otherwise."""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

PAIRS = [  # (tapegrok row, PyTorch row)
    ("standard Adam step", "standard Adam step (eager)"),
    ("standard Adam step", "standard Adam step (torch.compile)"),
    ("NeuralGrok step, lookahead meta (T 4, amortised)", "NeuralGrok step, official code (T 4, amortised)"),
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        ours_json, theirs_json = os.path.join(tmp, "ours.json"), os.path.join(tmp, "theirs.json")
        subprocess.run([os.path.join(args.build, "bench", "tapegrok_bench_steps"), "--device", args.device,
                        "--sections", "train", "--repeats", str(args.repeats), "--json", ours_json], check=True, env=env)
        subprocess.run([args.python, os.path.join(here, "pytorch_steps.py"), "--device", args.device, "--threads",
                        str(args.threads), "--repeats", str(args.repeats), "--json", theirs_json], check=True, env=env)
        ours = {r["name"]: r["ms"] for r in json.load(open(ours_json))}
        theirs_doc = json.load(open(theirs_json))
        theirs = {r["name"]: r for r in theirs_doc["rows"]}

    device = cpu_name() if args.device == "cpu" else args.device
    lines = [f"Device: {device}; {args.threads} threads; PyTorch {theirs_doc['torch']}.", "",
             "| step | tapegrok ms | PyTorch ms | PyTorch / tapegrok |", "|---|---|---|---|"]
    for ours_name, theirs_name in PAIRS:
        o = ours.get(ours_name)
        t = theirs.get(theirs_name, {})
        if o is None:
            continue
        if t.get("ms") is None:
            lines.append(f"| {theirs_name} | {o:.2f} | n/a ({t.get('note', 'not measured')}) | — |")
        else:
            lines.append(f"| {theirs_name} | {o:.2f} | {t['ms']:.2f} | {t['ms'] / o:.2f}x |")
    extra = [n for n in ours if n not in {p[0] for p in PAIRS}]
    if extra:
        lines += ["", "tapegrok only:", ""] + [f"- {n}: {ours[n]:.2f} ms" for n in extra]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
