"""`tapegrok analyze`: the Fourier analysis (tapegrok.analysis) of a run of a modular-arithmetic task.

    tapegrok analyze RUN_DIR [--out DIR]        (or: python3 -m tapegrok.analyze RUN_DIR ...)

From the run's final checkpoint: the key frequencies, read from the spectrum of the logits' a+b
directions (the frequencies the whole model's readout uses; an embedding trained with mild weight decay
spreads its norm over every frequency, so its own spectrum need not single them out), the share of that
spectrum they hold, the token embedding's spectrum over the p residues (with its Gini coefficient, a
measure of sparsity) and each layer's MLP neurons at the answer position. With kept checkpoints (`train
--keep-checkpoints`): Nanda et al.'s progress measures at every kept step, using the final model's key
frequencies throughout: restricted loss (logits reduced to the
key frequencies' a+b directions) on the test split, excluded loss (those directions removed) on the
training split, and the plain train and test losses and test accuracy.

Writes into DIR (default RUN_DIR/analysis): analysis.json, logit_spectrum.png, embedding_spectrum.png,
neurons_layer<i>.png, and with
kept checkpoints progress_measures.csv and progress_measures.png. A CHECKPOINT file instead of a run
directory gives the spectra of that checkpoint alone."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
from typing import Dict, List

import numpy as np

from . import Error, load
from . import analysis as fa

BINARY_TASKS = ("a+b", "a-b", "a*b")


def _grids(model):
    data = model.dataset
    if data["task"] not in BINARY_TASKS:
        raise Error(f"analyze: the Fourier analysis covers a+b, a-b and a*b; this run's task is {data['task']}")
    p = int(data["modulus"])
    a, b = fa.operands(data["inputs"], data["layout"])
    return data, p, a, b


def spectra(model) -> dict:
    """The embedding's and each MLP layer's spectrum and key frequencies, for one model."""
    data, p, a, b = _grids(model)
    logits = fa.logit_spectrum(fa.to_grid(a, b, model.forward(data["inputs"]), p), p, task=data["task"])
    embedding = fa.embedding_spectrum(model.parameters["token_embeddings.weight"], p)
    out = {"step": model.step, "task": data["task"], "modulus": p, "logits": logits, "embedding": embedding,
           "key_frequencies": fa.key_frequencies(logits), "neurons": {}}
    for name, acts in model.mlp_activations(data["inputs"]).items():
        out["neurons"][name] = fa.neuron_spectrum(fa.to_grid(a, b, acts, p), p)
    return out


def progress_measures(checkpoints: List[str], key_freqs) -> Dict[str, List[float]]:
    """Per kept checkpoint: step, restricted/excluded/train/test loss and test accuracy."""
    rows: Dict[str, List[float]] = {k: [] for k in
                                    ("step", "restricted_loss", "excluded_loss", "train_loss", "test_loss", "test_acc")}
    for path in checkpoints:
        model = load(path)
        data, p, a, b = _grids(model)
        logits = fa.to_grid(a, b, model.forward(data["inputs"]), p)
        labels = fa.to_grid(a, b, data["targets"], p)
        train = np.stack([a[data["train"]], b[data["train"]]], axis=1)
        test = np.stack([a[data["test"]], b[data["test"]]], axis=1)
        rows["step"].append(model.step)
        rows["restricted_loss"].append(fa.restricted_loss(logits, labels, key_freqs, p, examples=test,
                                                          task=data["task"]))
        rows["excluded_loss"].append(fa.excluded_loss(logits, labels, key_freqs, p, examples=train, task=data["task"]))
        rows["train_loss"].append(fa.full_loss(logits, labels, p, examples=train))
        rows["test_loss"].append(fa.full_loss(logits, labels, p, examples=test))
        rows["test_acc"].append(model.evaluate("test")["accuracy"])
    return rows


def kept_checkpoints(run_dir: str) -> List[str]:
    def step(path):
        return int(re.search(r"checkpoint_step(\d+)\.safetensors$", path).group(1))

    return sorted(glob.glob(os.path.join(run_dir, "checkpoint_step*.safetensors")), key=step)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tapegrok analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (or one checkpoint .safetensors file)")
    parser.add_argument("--out", help="where the results go (default RUN/analysis)")
    args = parser.parse_args(argv)
    try:
        if os.path.isdir(args.run):
            final = os.path.join(args.run, "checkpoint.safetensors")
            out = args.out or os.path.join(args.run, "analysis")
        else:
            final = args.run
            out = args.out or os.path.join(os.path.dirname(args.run) or ".", "analysis")
        os.makedirs(out, exist_ok=True)
        s = spectra(load(final))
        keys = s["key_frequencies"]
        summary = {"checkpoint": final, "step": s["step"], "task": s["task"], "modulus": s["modulus"],
                   "key_frequencies": [int(k) for k in keys.freqs], "key_share_of_logits": float(keys.fraction),
                   "embedding_gini": float(fa.gini(s["embedding"])),
                   # the keys' share of the embedding's non-constant norm (as key_frequencies counts shares)
                   "embedding_share_of_keys": float(s["embedding"].power[keys.freqs].sum()
                                                    / max(1e-300, s["embedding"].power[1:].sum())),
                   "embedding_norm_share": [float(x) for x in s["embedding"].fraction], "neurons": {}}
        title = f"{s['task']} mod {s['modulus']}, step {s['step']}"
        fa.plot_spectrum(s["logits"], os.path.join(out, "logit_spectrum.png"), title=f"logits (a+b directions): {title}")
        fa.plot_spectrum(s["embedding"], os.path.join(out, "embedding_spectrum.png"), title=f"token embedding: {title}",
                         key_freqs=keys.freqs)
        for i, (name, spectrum) in enumerate(s["neurons"].items()):
            nkeys = fa.key_frequencies(spectrum)
            summary["neurons"][name] = {"key_frequencies": [int(k) for k in nkeys.freqs],
                                        "key_share": float(nkeys.fraction)}
            fa.plot_spectrum(spectrum, os.path.join(out, f"neurons_layer{i}.png"), title=f"{name} neurons: {title}")
        print(f"{title}: key frequencies {summary['key_frequencies']} hold "
              f"{100 * summary['key_share_of_logits']:.1f}% of the logits' a+b spectrum and "
              f"{100 * summary['embedding_share_of_keys']:.1f}% of the embedding's (Gini {summary['embedding_gini']:.3f})")
        for name, n in summary["neurons"].items():
            print(f"  {name}: key frequencies {n['key_frequencies']} hold {100 * n['key_share']:.1f}%")

        checkpoints = kept_checkpoints(args.run) if os.path.isdir(args.run) else []
        if checkpoints:
            rows = progress_measures(checkpoints, keys.freqs)
            with open(os.path.join(out, "progress_measures.csv"), "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(list(rows))
                writer.writerows(zip(*rows.values()))
            fa.plot_progress_measures(rows["step"], {k: rows[k] for k in
                                                     ("restricted_loss", "excluded_loss", "train_loss", "test_loss")},
                                      os.path.join(out, "progress_measures.png"), test_accuracy=rows["test_acc"],
                                      title=f"{s['task']} mod {s['modulus']}: progress measures "
                                            f"(key frequencies {summary['key_frequencies']})")
            summary["progress_measures"] = rows
            print(f"progress measures at {len(checkpoints)} kept checkpoints -> {out}/progress_measures.png")
        with open(os.path.join(out, "analysis.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"results in {out}/")
    except (Error, OSError, ValueError) as e:
        print(f"tapegrok analyze: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
