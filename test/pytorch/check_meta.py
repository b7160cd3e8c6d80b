#!/usr/bin/env python3
"""NeuralGrok meta-gradient parity: for several settings, run `tapegrok dump-meta` and recompute the
outer loss and its gradient with respect to every amplifier parameter in PyTorch, from the same
weights, batches and outer set:
  lookahead  the official code's first-order look-ahead (gradient held constant),
  unrolled   exact differentiation through K inner steps (autograd.grad with create_graph=True).

usage: check_meta.py TAPEGROK_BINARY WORK_DIR      (exit 77 = skipped when PyTorch is missing)"""

import os
import subprocess
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed for", sys.executable, "- skipping the meta-gradient parity test")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import Transformer, load_safetensors  # noqa: E402
from torch.nn.utils import stateless  # noqa: E402

SMALL = ["--task", "a+b", "--modulus", "23", "--layers", "1", "--width", "32", "--heads", "2",
         "--amp-hidden", "16,16", "--outer-fraction", "0.05"]
CASES = [
    ("lookahead, K=1, sgd", SMALL + ["--meta-grad", "lookahead", "--T", "1", "--inner-opt", "sgd", "--lr", "0.1"]),
    ("lookahead, K=4, adam", SMALL + ["--meta-grad", "lookahead", "--T", "4", "--inner-opt", "adam", "--lr", "0.01"]),
    ("unrolled, K=1, sgd", SMALL + ["--meta-grad", "unrolled", "--T", "1", "--inner-opt", "sgd", "--lr", "0.1"]),
    ("unrolled, K=3, sgd", SMALL + ["--meta-grad", "unrolled", "--T", "3", "--inner-opt", "sgd", "--lr", "0.1"]),
    ("unrolled, K=2, adam, c=0.2", SMALL + ["--meta-grad", "unrolled", "--T", "2", "--inner-opt", "adam", "--lr", "0.01",
                                            "--c", "0.2"]),
    ("unrolled, K=2, default model", ["--task", "a+b", "--amp-hidden", "8,8", "--meta-grad", "unrolled", "--T", "2",
                                      "--inner-opt", "adam", "--lr", "0.001"]),
]


def amplifier(weights, g, c):
    """G_phi(g) for one tensor: per-scalar MLP, softmax over the tensor, c (p g) / ||p g||."""
    h = g.reshape(-1, 1)
    n_layers = len(weights) // 2
    for i in range(n_layers):
        h = torch.nn.functional.linear(h, weights[2 * i], weights[2 * i + 1])
        if i + 1 < n_layers:
            h = torch.relu(h)
    p = torch.softmax(h.reshape(-1), dim=0)
    q = p * g.reshape(-1)
    return (c * q / q.norm()).reshape(g.shape)


def run(binary, work, name, flags):
    out = os.path.join(work, "meta_" + "".join(ch if ch.isalnum() else "_" for ch in name) + ".safetensors")
    subprocess.run([binary, "dump-meta", *flags, "--device", "cpu", "--batch", "32", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    t, meta = load_safetensors(out)
    get = lambda flag, default: flags[flags.index(flag) + 1] if flag in flags else default  # noqa: E731
    steps, lr, c = int(meta["steps"]), float(meta["lr"]), float(meta["c"])
    beta1, beta2 = float(meta["beta1"]), float(meta["beta2"])
    vocab, width = t["token_embeddings.weight"].shape
    layers = sum(1 for k in t if k.startswith("layers.") and k.endswith(".ln_1.weight"))
    model = Transformer(vocab, t["position_embeddings.weight"].shape[0], width, int(get("--heads", "4")), layers)
    names = [k for k, _ in model.named_parameters()]
    theta = [t[k].clone().requires_grad_(True) for k in names]
    amp_names = sorted([k for k in t if k.startswith("amp.mlp.")], key=lambda k: (int(k.split(".")[2]), k.endswith("bias")))
    phi = [t[k].clone().requires_grad_(True) for k in amp_names]

    def loss_at(params, ids, targets):
        # The module run on the given (possibly non-leaf) parameter tensors.
        out = stateless.functional_call(model, dict(zip(names, params)), (ids.long(),))
        return torch.nn.functional.cross_entropy(out, targets.long())

    moments = ([torch.zeros_like(p) for p in theta], [torch.zeros_like(p) for p in theta], 0)

    def update(params, grads):
        nonlocal moments
        if meta["inner_optimizer"] == "sgd":
            return [p - lr * g for p, g in zip(params, grads)]
        m, v, k = moments
        k += 1
        m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads)]
        v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads)]
        bc1, bc2 = 1 - beta1 ** k, 1 - beta2 ** k
        moments = (m, v, k)
        return [p - lr / bc1 * mi / (torch.sqrt(vi / bc2 + 1e-30) + 1e-8) for p, mi, vi in zip(params, m, v)]

    unrolled = meta["meta_grad"] == "unrolled"
    for k in range(steps):
        loss = loss_at(theta, t[f"inner_inputs.{k}"], t[f"inner_targets.{k}"])
        last = k + 1 == steps
        if unrolled:
            g = torch.autograd.grad(loss, theta, create_graph=True)
            theta = update(theta, [amplifier(phi, gi, c) for gi in g])
        elif not last:
            g = torch.autograd.grad(loss, theta)
            with torch.no_grad():
                nxt = update(theta, [amplifier(phi, gi, c) for gi in g])
            theta = [p.detach().clone().requires_grad_(True) for p in nxt]
        else:  # the official look-ahead: gradient held constant, one plain SGD step
            g = [gi.detach() for gi in torch.autograd.grad(loss, theta)]
            theta = [p.detach() - lr * amplifier(phi, gi, c) for p, gi in zip(theta, g)]
    outer = loss_at(theta, t["outer_inputs"], t["outer_targets"])
    metagrad = torch.autograd.grad(outer, phi)

    def rel(a, b):
        d = b.double().norm().item()
        return (a.double() - b.double()).norm().item() / d if d > 0 else (a.double() - b.double()).norm().item()

    err_loss = rel(t["outer_loss"], outer.detach().reshape(1))
    # The whole meta-gradient as one vector (the last layer's bias has an exactly-zero gradient,
    # softmax being shift-invariant, so per-tensor relative errors would compare rounding noise),
    # plus the worst tensor measured against the whole vector's norm.
    ours = torch.cat([t["metagrad." + k].reshape(-1).double() for k in amp_names])
    theirs = torch.cat([gk.reshape(-1).double() for gk in metagrad])
    err_grad = rel(ours, theirs)
    worst = max(((t["metagrad." + k].double() - gk.double()).norm().item() / theirs.norm().item(), k)
                for k, gk in zip(amp_names, metagrad))[1]
    ok = err_loss < 1e-5 and err_grad < 3e-4  # float32; Adam divides by sqrt(v) and magnifies rounding
    print(f"  {name:32s} outer loss rel err {err_loss:.2e}   metagrad rel err {err_grad:.2e} ({worst})"
          f"  {'ok' if ok else 'FAIL'}")
    return ok


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    print("PyTorch", torch.__version__)
    results = [run(binary, work, name, flags) for name, flags in CASES]
    print("meta-gradient parity:", "all cases agree" if all(results) else "MISMATCH")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
