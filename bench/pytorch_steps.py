#!/usr/bin/env python3
"""PyTorch's time per training step for the same model, task and optimizer as tapegrok's
bench_steps: the default Transformer (test/pytorch/reference_model.py), a+b mod 97, batch 512, Adam
(lr 1e-3, betas 0.9/0.98, weight decay 1e-3).

  plain      one Adam step: forward, backward, step (eager; and torch.compile where it exists)
  neuralgrok one NeuralGrok step the official code's way, amortised over T = 4: every step amplifies
             each gradient with the (128, 128) amplifier, clips to 1.0 and steps Adam; every 4th step
             first runs the look-ahead meta step on a deep copy of the model, as the official code does

usage: pytorch_steps.py [--device cpu|cuda] [--threads N] [--repeats N] [--json FILE] [--tiny]
--tiny uses a 1-layer width-32 model with batch 64 (a smoke run for machines without time to spare)."""

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "pytorch"))
from reference_model import Transformer  # noqa: E402


def data(p, n, device, generator):
    a = torch.randint(0, p, (n,), generator=generator)
    b = torch.randint(1, p, (n,), generator=generator)
    ids = torch.stack([a, b, torch.full_like(a, p), torch.full_like(a, p + 1)], 1)
    return ids.to(device), ((a + b) % p).to(device)


class Amplifier(torch.nn.Module):
    def __init__(self, hidden=(128, 128)):
        super().__init__()
        sizes = [1, *hidden]
        layers = []
        for i in range(len(hidden)):
            layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(sizes[-1], 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, g, c):
        s = self.mlp(g.reshape(-1, 1)).reshape(-1)
        q = torch.softmax(s, 0) * g.reshape(-1)
        return (c * q / q.norm()).reshape(g.shape)


def timed(fn, repeats, warmup, device):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default="")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    p, batch = 97, (64 if args.tiny else 512)
    width, layers = (32, 1) if args.tiny else (128, 2)
    dev = args.device
    ids, targets = data(p, batch, dev, gen)
    outer_ids, outer_targets = data(p, 93, dev, gen)
    rows = []

    def make():
        model = Transformer(p + 2, 4, width, 4 if width % 4 == 0 else 1, layers).to(dev)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)

    model, opt = make()

    def plain_step(m=model, o=opt):
        o.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(ids), targets).backward()
        o.step()

    rows.append({"name": "standard Adam step (eager)", "ms": 1e3 * timed(plain_step, args.repeats, args.warmup, dev)})
    if hasattr(torch, "compile"):
        try:
            cmodel, copt = make()
            compiled = torch.compile(cmodel)

            def compiled_step():
                copt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(compiled(ids), targets).backward()
                copt.step()

            rows.append({"name": "standard Adam step (torch.compile)",
                         "ms": 1e3 * timed(compiled_step, args.repeats, args.warmup + 3, dev)})
        except Exception as e:  # noqa: BLE001 - report, don't fail the comparison
            rows.append({"name": "standard Adam step (torch.compile)", "ms": None, "note": f"failed: {e}"[:120]})
    else:
        rows.append({"name": "standard Adam step (torch.compile)", "ms": None,
                     "note": f"torch {torch.__version__} has no torch.compile"})

    # NeuralGrok the official code's way.
    nmodel, nopt = make()
    amp = Amplifier((16, 16) if args.tiny else (128, 128)).to(dev)
    aopt = torch.optim.Adam(amp.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-3)
    state = {"step": 0}

    def neuralgrok_step():
        nopt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(nmodel(ids), targets).backward()
        grads = [p_.grad.detach().clone() for p_ in nmodel.parameters()]
        if state["step"] % 4 == 3:  # the meta step: look-ahead on a deep copy
            aopt.zero_grad(set_to_none=True)
            shadow = copy.deepcopy(nmodel)
            names = [n for n, _ in shadow.named_parameters()]
            new = {n: p_.detach() - 1e-3 * amp(g, 0.2) for (n, p_), g in zip(shadow.named_parameters(), grads)}
            from torch.nn.utils import stateless
            outer = torch.nn.functional.cross_entropy(
                stateless.functional_call(shadow, {n: new[n] for n in names}, (outer_ids,)), outer_targets)
            outer.backward()
            aopt.step()
        with torch.no_grad():
            for p_, g in zip(nmodel.parameters(), grads):
                p_.grad = amp(g, 0.2)
        torch.nn.utils.clip_grad_norm_(nmodel.parameters(), 1.0)
        nopt.step()
        state["step"] += 1

    block = timed(lambda: [neuralgrok_step() for _ in range(4)], max(3, args.repeats // 3), 1, dev)
    rows.append({"name": "NeuralGrok step, official code (T 4, amortised)", "ms": 1e3 * block / 4})

    print(f"PyTorch {torch.__version__} on {dev}, {torch.get_num_threads()} threads")
    for r in rows:
        ms = "n/a" if r["ms"] is None else f"{r['ms']:.2f}"
        print(f"  {r['name']:52s} {ms:>10} ms  {r.get('note', '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": dev, "threads": torch.get_num_threads(), "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
