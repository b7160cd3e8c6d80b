"""`tapegrok analyze` end to end on a tiny a+b run with kept checkpoints: the command writes the spectra,
the progress measures at every kept step, and key frequencies that are frequencies of Z_p; and the
progress measures' plain losses equal the losses the model's own evaluation reports."""

import csv
import json
import os
import subprocess

import tapegrok as tg

BINARY = os.environ.get("TAPEGROK_BINARY", os.path.join(os.path.dirname(__file__), "../../build/tapegrok"))


def test_analyze_a_run_with_kept_checkpoints(tmp_path):
    run = tg.train(task="a+b", modulus=11, width=16, heads=2, layers=1, batch_size=16, eval_every=8, lr=3e-3,
                   steps=24, checkpoint_every=8, keep_checkpoints=True, device="cpu", run_dir=str(tmp_path / "run"))
    result = subprocess.run([BINARY, "analyze", run.run_dir], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    out = os.path.join(run.run_dir, "analysis")
    for name in ("analysis.json", "logit_spectrum.png", "embedding_spectrum.png", "neurons_layer0.png",
                 "progress_measures.csv", "progress_measures.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    summary = json.load(open(os.path.join(out, "analysis.json")))
    assert summary["step"] == 24 and summary["modulus"] == 11
    assert summary["key_frequencies"] and all(1 <= k <= 5 for k in summary["key_frequencies"])
    rows = list(csv.DictReader(open(os.path.join(out, "progress_measures.csv"))))
    assert [int(r["step"]) for r in rows] == [8, 16, 24]
    final = run.load().evaluate("test")
    assert abs(float(rows[-1]["test_loss"]) - final["loss"]) < 1e-5
    assert float(rows[-1]["test_acc"]) == final["accuracy"]


def test_analyze_refuses_tasks_it_does_not_cover(tmp_path):
    run = tg.train(task="a*a-b", modulus=11, width=16, heads=2, layers=1, batch_size=16, steps=2, device="cpu",
                   run_dir=str(tmp_path / "run"))
    result = subprocess.run([BINARY, "analyze", run.run_dir], capture_output=True, text=True)
    assert result.returncode == 1 and "a+b, a-b and a*b" in result.stderr
