#!/usr/bin/env python3
"""Figures of docs/results/fourier.md from `tapegrok analyze` of the runs of experiments/sweeps/fourier_apb.toml:
the progress measures of the three runs side by side, and their logit and embedding spectra.

usage: fourier_page.py [--runs runs/fourier-apb] [--out docs/results]"""

import argparse
import csv
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RUNS = [("standard", "standard"), ("neuralgrok", "NeuralGrok (official)"),
        ("normalise+clip", "normalisation + clip")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/fourier-apb")
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    spectra = {}
    for ax, (name, label) in zip(axes, RUNS):
        folder = os.path.join(args.runs, name, "seed0", "analysis")
        with open(os.path.join(folder, "progress_measures.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        spectra[label] = json.load(open(os.path.join(folder, "analysis.json")))
        step = [int(r["step"]) for r in rows]
        for key, color in (("restricted_loss", "C0"), ("excluded_loss", "C1"), ("train_loss", "C2"),
                           ("test_loss", "C3")):
            ax.plot(step, [float(r[key]) for r in rows], color=color, label=key.replace("_", " "))
        twin = ax.twinx()
        twin.plot(step, [float(r["test_acc"]) for r in rows], "k--", label="test accuracy")
        twin.set_ylim(0, 1.02)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{label}: keys {spectra[label]['key_frequencies']}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("a+b mod 97, seed 0: progress measures (restricted loss on test, excluded loss on train)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fourier_progress_apb.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.28
    for i, (label, s) in enumerate(spectra.items()):
        share = np.array(s["embedding_norm_share"][1:])
        share = share / share.sum()
        ax.bar(np.arange(1, len(share) + 1) + (i - 1) * width, share, width=width, color=f"C{i}",
               label=f"{label} (keys {s['key_frequencies']})")
    ax.set_xlabel("frequency k of Z_97")
    ax.set_ylabel("share of the token embedding's norm")
    ax.legend(fontsize=8)
    ax.set_title("token embedding spectra of the final models (constant left out)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "fourier_embedding_apb.png"), dpi=110)
    print("wrote", os.path.join(args.out, "fourier_progress_apb.png"), os.path.join(args.out, "fourier_embedding_apb.png"))


if __name__ == "__main__":
    main()
