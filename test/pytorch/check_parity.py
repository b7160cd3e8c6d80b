#!/usr/bin/env python3
"""PyTorch parity: for several model configurations, run `tapegrok dump-state` and check that the
reference PyTorch model, loaded with the same weights, gives the same logits, loss, gradient of every
parameter, Hessian-vector product (autograd.grad with create_graph=True), and losses over successive
Adam steps — within float32 tolerances.

usage: check_parity.py TAPEGROK_BINARY WORK_DIR
Exit code 77 (reported as skipped by ctest) when PyTorch is not installed."""

import os
import subprocess
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed for", sys.executable, "- skipping the parity test")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Transformer, load_safetensors  # noqa: E402

CONFIGS = [
    # (name, flags)
    ("default reference", ["--task", "a+b"]),
    ("default prenorm", ["--task", "a+b", "--block", "prenorm"]),
    ("3 layers, width 64, 8 heads, a-b", ["--task", "a-b", "--layers", "3", "--width", "64", "--heads", "8"]),
    ("1 layer, width 32, 2 heads, a*a-b", ["--task", "a*a-b", "--layers", "1", "--width", "32", "--heads", "2",
                                          "--block", "prenorm"]),
    ("4 layers, a*c+b*d-e mod 7", ["--task", "a*c+b*d-e", "--layers", "4", "--width", "48", "--heads", "3"]),
    ("pair layout, p=31", ["--task", "a*b", "--layout", "pair", "--modulus", "31", "--layers", "2", "--width", "64"]),
]


def rel(a, b):
    a = a.double()
    b = b.double()
    denominator = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denominator if denominator > 0 else diff


def flag(flags, name, default):
    return flags[flags.index(name) + 1] if name in flags else default


def check(binary, work, name, flags, adam_steps=10):
    out = os.path.join(work, "dump_" + "".join(c if c.isalnum() else "_" for c in name) + ".safetensors")
    cmd = [binary, "dump-state", *flags, "--batch", "64", "--adam-steps", str(adam_steps), "--hvp", "--out", out,
           "--device", "cpu"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    t, _ = load_safetensors(out)
    ids = t["inputs"].long()
    targets = t["targets"].long()
    vocab, width = t["token_embeddings.weight"].shape
    seq_len = t["position_embeddings.weight"].shape[0]
    layers = sum(1 for k in t if k.startswith("layers.") and k.endswith(".ln_1.weight"))
    heads = int(flag(flags, "--heads", "4"))
    variant = flag(flags, "--block", "reference")
    model = Transformer(vocab, seq_len, width, heads, layers, variant)
    params = {k: v for k, v in t.items() if k in dict(model.named_parameters())}
    missing = set(dict(model.named_parameters())) - set(params)
    assert not missing, f"{name}: parameters missing from the dump: {missing}"
    model.load_state_dict(params, strict=True)

    logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    loss.backward()
    errors = {"logits": rel(t["logits"], logits.detach()), "loss": rel(t["loss"], loss.detach().reshape(1))}
    worst_grad = max((rel(t["grad." + k], p.grad), k) for k, p in model.named_parameters())
    errors["grad (" + worst_grad[1] + ")"] = worst_grad[0]

    # Hessian-vector product by double backward: d<grad L, v>/d params.
    model.zero_grad()
    named = dict(model.named_parameters())
    names = list(named)
    loss = torch.nn.functional.cross_entropy(model(ids), targets)
    grads = torch.autograd.grad(loss, [named[k] for k in names], create_graph=True)
    hv = torch.autograd.grad(grads, [named[k] for k in names], grad_outputs=[t["hvp.v." + k] for k in names])
    worst_hvp = max((rel(t["hvp." + k], h), k) for k, h in zip(names, hv))
    errors["hvp (" + worst_hvp[1] + ")"] = worst_hvp[0]

    # Adam on the same batch from the same start.
    model.load_state_dict(params, strict=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8)
    losses = []
    for _ in range(adam_steps):
        opt.zero_grad()
        l = torch.nn.functional.cross_entropy(model(ids), targets)
        l.backward()
        losses.append(l.item())
        opt.step()
    errors["adam losses"] = rel(t["adam_loss"], torch.tensor(losses))

    limits = {"logits": 1e-5, "loss": 1e-5, "adam losses": 1e-5}
    ok = True
    for key, err in errors.items():
        limit = limits.get(key, 1e-5)
        status = "ok" if err < limit else "FAIL"
        ok = ok and err < limit
        print(f"  {name:38s} {key:40s} rel err {err:.2e}  (limit {limit:.0e}) {status}")
    return ok


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    print("PyTorch", torch.__version__)
    results = [check(binary, work, name, flags) for name, flags in CONFIGS]
    print("parity:", "all configurations agree" if all(results) else "MISMATCH")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
