#!/usr/bin/env python3
"""PyTorch's time per training step for the same model, task and optimizer as tapegrok's
bench_steps (--sections train): the Transformer of test/pytorch/reference_model.py, a+b mod 97,
Adam (lr 1e-3, betas 0.9/0.98, weight decay 1e-3); NeuralGrok as its official code runs it
(amplifier (128, 128), c 0.2, clip 1.0, T 4, amplifier Adam lr 1e-4 wd 1e-3, look-ahead lr 1e-3,
outer set = 1% of the 9312 examples = 93).

Rows (ms per step, median of --repeats; the names the comparison pairs with tapegrok's rows):
  standard Adam step (eager)               zero_grad, forward, cross-entropy, backward, Adam step
  standard Adam step (torch.compile)       the same step with the model wrapped in torch.compile (default
                                           Inductor backend): the model's forward and, through AOTAutograd,
                                           its backward run compiled; zero_grad, cross-entropy and the Adam
                                           step stay eager, as most users run it. The first step (the
                                           compilation) is timed apart and reported in the note, never in
                                           the ms; 'n/a' where torch.compile does not exist (PyTorch 1.x)
  Grokfast-EMA step                        the plain step with Grokfast's EMA filter applied to p.grad in
                                           place before Adam: mu <- a mu + (1 - a) g (mu starts at the
                                           first g), g <- g + lambda mu; a 0.98, lambda 2
  NeuralGrok inner step                    the plain step with every gradient tensor rewritten by the
                                           amplifier (current phi, no graph), clip 1.0, Adam; no meta step
  NeuralGrok lookahead meta step alone, official code (deepcopy)
                                           one amplifier update the official code's way: copy.deepcopy of
                                           the model, each parameter of the copy deleted and replaced by the
                                           tensor theta - lr G_phi(g), outer loss, backward into phi, amplifier
                                           Adam step. g: one batch's raw gradient, computed once beforehand
  NeuralGrok lookahead meta step alone, functional (no deepcopy)
                                           the same update without the copy: theta' as a dict of tensors,
                                           the model run on them with functional_call
  NeuralGrok step, official code (T 4, amortised)
                                           4 whole steps (inner steps, the 4th preceded by the deepcopy meta
                                           step), timed as a block and divided by 4

Second order (--sections second-order; the rows of tapegrok_bench_steps --sections second-order, the
same construction on the same model sizes, reverse-over-reverse with torch.autograd.grad):
  gradient (forward + backward)            the loss's gradient in every parameter (no graph kept)
  Hessian-vector product                   g = grad(loss, create_graph=True), then grad(g . v) with v
                                           standard normal, one tensor per parameter
  hypergradient through K unrolled SGD step(s)   (K = 1, 4) theta_k+1 = theta_k - 1e-3 g_k exp(phi_i) per
                                           tensor i, each g_k with create_graph=True, then the gradient of
                                           the loss at theta_K in phi (one log-scale per parameter tensor)

The official code also recomputes the inner gradient on its copy (one more forward and backward of
the batch) before the look-ahead; these rows use the step's own gradient instead, as tapegrok does,
so both sides do the same arithmetic.

With --time-to-95 it times a whole run instead: NeuralGrok on a+b mod 97 the official code's way
(50% train / 50% test, the train part 49:1 into inner and outer sets, warm-up over 10 updates, the
deepcopy meta step every 4th step, test accuracy after every epoch) until the test accuracy reaches
95%, or --max-steps; one row with the wall seconds and the steps taken.

usage: pytorch_steps.py [--device cpu|cuda] [--threads N] [--repeats N] [--warmup N] [--json FILE] [--tiny]
                        [--sections train,second-order] [--time-to-95 [--max-steps N]]
--tiny: 1 layer, width 32, batch 64, amplifier (8, 8): a smoke run of a few seconds."""

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "pytorch"))
from reference_model import Transformer  # noqa: E402

P = 97  # a+b mod 97: a in [0, p), b in [1, p)
EXAMPLES = P * (P - 1)
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.98), 1e-3
AMP_C, AMP_LR, AMP_WEIGHT_DECAY, CLIP, T = 0.2, 1e-4, 1e-3, 1.0, 4
EMA_ALPHA, EMA_LAMBDA = 0.98, 2.0


class Sizes:
    """The model and data sizes; describe() prints them exactly as tapegrok_bench_steps does."""

    def __init__(self, tiny):
        self.layers, self.width, self.heads, self.batch = (1, 32, 4, 64) if tiny else (2, 128, 4, 512)
        self.amp_hidden = (8, 8) if tiny else (128, 128)
        self.outer = int(0.01 * EXAMPLES)  # floor, as tapegrok's split: 93

    def describe(self):
        plural = "s" if self.layers > 1 else ""
        return (f"Transformer ({self.layers} layer{plural}, d {self.width}, {self.heads} heads), a+b mod 97, "
                f"batch {self.batch}, amplifier ({','.join(map(str, self.amp_hidden))})")


def data(n, device, generator):
    a = torch.randint(0, P, (n,), generator=generator)
    b = torch.randint(1, P, (n,), generator=generator)
    ids = torch.stack([a, b, torch.full_like(a, P), torch.full_like(a, P + 1)], 1)
    return ids.to(device), ((a + b) % P).to(device)


class Amplifier(torch.nn.Module):
    """NeuralGrok's G_phi for one gradient tensor g: s = MLP(each scalar of g), p = softmax(s) over the
    tensor, g' = c (p g) / ||p g||."""

    def __init__(self, hidden):
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


def functional_call_impl():
    """(functional_call, where it came from): torch.func (2.x), functorch, else torch.nn.utils.stateless (1.13)."""
    if hasattr(torch, "func") and hasattr(torch.func, "functional_call"):
        return torch.func.functional_call, "torch.func"
    try:
        from functorch import functional_call  # noqa: PLC0415 - some functorch releases have it
        return functional_call, "functorch"
    except ImportError:
        from torch.nn.utils import stateless  # noqa: PLC0415
        return stateless.functional_call, "torch.nn.utils.stateless"


def timed(fn, repeats, warmup, device):
    """Median seconds of `repeats` calls of fn after `warmup` calls (the GPU synchronised around each)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class Bench:
    """Builds fresh models and optimizers of the benchmark's sizes and times the rows."""

    def __init__(self, args):
        self.args, self.dev = args, args.device
        self.sizes = Sizes(args.tiny)
        gen = torch.Generator().manual_seed(0)
        self.ids, self.targets = data(self.sizes.batch, self.dev, gen)
        self.outer_ids, self.outer_targets = data(self.sizes.outer, self.dev, gen)
        self.rows = []

    # ---- building blocks ----

    def model_and_adam(self):
        z = self.sizes
        model = Transformer(P + 2, 4, z.width, z.heads, z.layers).to(self.dev)
        return model, torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def amplifier_and_adam(self):
        amp = Amplifier(self.sizes.amp_hidden).to(self.dev)
        return amp, torch.optim.Adam(amp.parameters(), lr=AMP_LR, betas=BETAS, weight_decay=AMP_WEIGHT_DECAY)

    def forward_backward(self, model, opt, forward=None):
        opt.zero_grad(set_to_none=True)
        # `forward or model` would test the module's truth: torch.compile's wrapper defines __len__ (for
        # compiled containers) and raises TypeError for a module without one, such as the Transformer.
        F.cross_entropy((model if forward is None else forward)(self.ids), self.targets).backward()

    @staticmethod
    def amplify_and_clip(model, amp):
        """The inner step's gradient method: every p.grad <- G_phi(p.grad) (no graph), then clip to 1.0."""
        with torch.no_grad():
            for p in model.parameters():
                p.grad = amp(p.grad, AMP_C)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)

    def meta_official(self, model, amp, aopt, grads):
        """One amplifier update the official code's way: deep copy, swap each parameter of the copy for
        the plain tensor theta - lr G_phi(g) (so the copy's forward is differentiable in phi), outer
        loss, backward into phi, amplifier Adam step. grads: parameter name -> raw gradient."""
        aopt.zero_grad(set_to_none=True)
        shadow = copy.deepcopy(model)
        for prefix, module in shadow.named_modules():
            for name, param in list(module._parameters.items()):  # noqa: SLF001 - the official code's swap
                if param is None:
                    continue
                looked_ahead = param.detach() - LR * amp(grads[f"{prefix}.{name}" if prefix else name], AMP_C)
                delattr(module, name)
                setattr(module, name, looked_ahead)
        loss = F.cross_entropy(shadow(self.outer_ids), self.outer_targets)
        loss.backward()
        aopt.step()
        return loss

    def meta_functional(self, model, amp, aopt, grads, functional_call):
        """The same amplifier update without the copy: theta' as tensors, the model run functionally."""
        aopt.zero_grad(set_to_none=True)
        theta = {n: p.detach() - LR * amp(grads[n], AMP_C) for n, p in model.named_parameters()}
        loss = F.cross_entropy(functional_call(model, theta, (self.outer_ids,)), self.outer_targets)
        loss.backward()
        aopt.step()
        return loss

    def measure(self, name, make_fn, repeats=None, warmup=None, per_call=1):
        """Adds one row: ms per step of make_fn()() (built inside, so a failure becomes 'n/a' with
        its reason instead of ending the run)."""
        a = self.args
        try:
            fn = make_fn()
            s = timed(fn, a.repeats if repeats is None else repeats, a.warmup if warmup is None else warmup, self.dev)
            self.rows.append({"name": name, "ms": 1e3 * s / per_call})
        except Exception as e:  # noqa: BLE001 - report, don't fail the comparison
            self.rows.append({"name": name, "ms": None, "note": f"failed: {type(e).__name__}: {e}"[:160]})

    # ---- the rows ----

    def plain(self):
        """Plain Adam step, eager: the baseline."""
        def make():
            model, opt = self.model_and_adam()

            def step():
                self.forward_backward(model, opt)
                opt.step()
            return step
        self.measure("standard Adam step (eager)", make)

    def compiled(self):
        """Plain Adam step with the model compiled by torch.compile (PyTorch 2.x); 'n/a' with the reason
        elsewhere. Only the model is compiled: the loss, zero_grad and Adam stay eager."""
        name = "standard Adam step (torch.compile)"
        if not hasattr(torch, "compile"):
            self.rows.append({"name": name, "ms": None, "note": f"torch {torch.__version__} has no torch.compile"})
            return
        try:  # private, so optional: lets the note say whether a graph was compiled while timing
            from torch._dynamo.utils import counters  # noqa: PLC0415
            graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
        except ImportError:
            graphs = None
        info = {}

        def make():
            model, opt = self.model_and_adam()
            compiled = torch.compile(model)

            def step():
                self.forward_backward(model, opt, compiled)
                opt.step()
            start = time.perf_counter()
            step()  # compiles the forward and the backward graph
            info["compile_s"] = time.perf_counter() - start
            for _ in range(3):  # Dynamo may recompile when later calls break its guards (e.g. dynamic shapes)
                step()
            info["graphs"] = graphs() if graphs else None
            return step
        self.measure(name, make)  # then --warmup more calls, as every row
        row = self.rows[-1]
        if row["ms"] is not None:
            row["note"] = f"model compiled, Adam eager; first step (compilation) {info['compile_s']:.1f} s, not timed"
            if info["graphs"] is not None and graphs() != info["graphs"]:
                row["note"] += f"; WARNING: {graphs() - info['graphs']} graph(s) compiled while timing"

    def grokfast_ema(self):
        """Grokfast's EMA filter on p.grad in place, then Adam (the paper's formulas and defaults)."""
        def make():
            model, opt = self.model_and_adam()
            ema = {}

            def step():
                self.forward_backward(model, opt)
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        if n in ema:
                            ema[n].mul_(EMA_ALPHA).add_(p.grad, alpha=1 - EMA_ALPHA)
                        else:
                            ema[n] = p.grad.clone()
                        p.grad.add_(ema[n], alpha=EMA_LAMBDA)
                opt.step()
            return step
        self.measure("Grokfast-EMA step", make)

    def neuralgrok_inner(self):
        """NeuralGrok's inner step: amplifier on every gradient tensor, clip 1.0, Adam; no meta step."""
        def make():
            model, opt = self.model_and_adam()
            amp, _ = self.amplifier_and_adam()

            def step():
                self.forward_backward(model, opt)
                self.amplify_and_clip(model, amp)
                opt.step()
            return step
        self.measure("NeuralGrok inner step", make)

    def neuralgrok_meta(self):
        """The lookahead meta step alone, both ways, on one raw gradient computed beforehand."""
        functional_call, origin = functional_call_impl()
        for name, way in (("NeuralGrok lookahead meta step alone, official code (deepcopy)", "official"),
                          ("NeuralGrok lookahead meta step alone, functional (no deepcopy)", "functional")):
            def make(way=way):
                model, opt = self.model_and_adam()
                amp, aopt = self.amplifier_and_adam()
                self.forward_backward(model, opt)
                grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                if way == "official":
                    return lambda: self.meta_official(model, amp, aopt, grads)
                return lambda: self.meta_functional(model, amp, aopt, grads, functional_call)
            self.measure(name, make)
            if way == "functional" and self.rows[-1]["ms"] is not None:
                self.rows[-1]["note"] = f"functional_call from {origin}"

    def neuralgrok_amortised(self):
        """Whole NeuralGrok steps as the official code runs them; the meta step every T-th step."""
        def make():
            model, opt = self.model_and_adam()
            amp, aopt = self.amplifier_and_adam()
            state = {"step": 0}

            def step():
                self.forward_backward(model, opt)
                if state["step"] % T == T - 1:  # the meta step uses this step's raw gradient
                    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                    self.meta_official(model, amp, aopt, grads)
                self.amplify_and_clip(model, amp)
                opt.step()
                state["step"] += 1

            def block():
                for _ in range(T):
                    step()
            return block
        self.measure("NeuralGrok step, official code (T 4, amortised)", make,
                     repeats=max(3, self.args.repeats // 3), warmup=1, per_call=T)

    def second_order(self):
        """Gradient, Hessian-vector product and hypergradients through 1 and 4 unrolled SGD steps."""
        functional_call, _ = functional_call_impl()
        model, _ = self.model_and_adam()
        names = [n for n, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        gen = torch.Generator().manual_seed(3)
        v = [torch.randn(p.shape, generator=gen).to(self.dev) for p in params]

        def loss_at(theta):
            return F.cross_entropy(functional_call(model, dict(zip(names, theta)), (self.ids,)), self.targets)

        def gradient():
            torch.autograd.grad(loss_at(params), params)

        def hvp():
            g = torch.autograd.grad(loss_at(params), params, create_graph=True)
            torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), params)

        def hypergradient(steps):
            phi = torch.zeros(len(params), device=self.dev, requires_grad=True)
            theta = [p.detach().clone().requires_grad_() for p in params]
            for _ in range(steps):
                g = torch.autograd.grad(loss_at(theta), theta, create_graph=True)
                theta = [t - 1e-3 * gi * torch.exp(phi[i]) for i, (t, gi) in enumerate(zip(theta, g))]
            torch.autograd.grad(loss_at(theta), phi)

        # PyTorch 2.x runs nn.MultiheadAttention through scaled_dot_product_attention, whose fused CPU
        # kernel has no second derivative ("derivative for ..._flash_attention_for_cpu_backward is not
        # implemented"): second order needs its math backend, chosen here for every row alike.
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415 - PyTorch >= 2.3
            backend, note = sdpa_kernel(SDPBackend.MATH), "attention through SDPA's math backend"
        except ImportError:
            backend, note = contextlib.nullcontext(), ""
        with backend:
            self.measure("gradient (forward + backward)", lambda: gradient)
            self.measure("Hessian-vector product", lambda: hvp)
            for steps in (1, 4):
                self.measure(f"hypergradient through {steps} unrolled SGD step{'s' if steps > 1 else ''}",
                             lambda steps=steps: lambda: hypergradient(steps))
        for row in self.rows[-4:]:
            if row["ms"] is not None and note:
                row["note"] = note


def time_to_95(bench, max_steps):
    """NeuralGrok, the official code's loop, on a+b mod 97 until 95% test accuracy (or max_steps):
    a row with the wall seconds (evaluation included) and the steps taken."""
    z, dev = bench.sizes, bench.dev
    gen = torch.Generator().manual_seed(0)
    a = torch.arange(P).repeat_interleave(P - 1)
    b = torch.arange(1, P).repeat(P)
    ids = torch.stack([a, b, torch.full_like(a, P), torch.full_like(a, P + 1)], 1).to(dev)
    targets = ((a + b) % P).to(dev)
    perm = torch.randperm(EXAMPLES, generator=gen).to(dev)
    train, test = perm[:EXAMPLES // 2], perm[EXAMPLES // 2:]
    outer, inner = train[:z.outer], train[z.outer:]
    bench.outer_ids, bench.outer_targets = ids[outer], targets[outer]
    model, opt = bench.model_and_adam()
    amp, aopt = bench.amplifier_and_adam()
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda update: min(update / 10, 1))

    def test_accuracy():
        with torch.no_grad():
            correct = sum(int((model(ids[c]).argmax(-1) == targets[c]).sum()) for c in test.split(4096))
        return correct / len(test)

    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    start, step, acc = time.perf_counter(), 0, 0.0
    while step < max_steps and acc < 0.95:
        order = inner[torch.randperm(len(inner), generator=gen).to(dev)]
        for batch in order.split(z.batch):
            bench.ids, bench.targets = ids[batch], targets[batch]
            bench.forward_backward(model, opt)
            if step % T == T - 1:  # the meta step uses this step's raw gradient
                grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                bench.meta_official(model, amp, aopt, grads)
            bench.amplify_and_clip(model, amp)
            opt.step()
            warmup.step()
            step += 1
            if step >= max_steps:
                break
        acc = test_accuracy()  # after every epoch, as the official code logs
    seconds = time.perf_counter() - start
    return {"name": "NeuralGrok a+b mod 97 to 95% test accuracy, official code", "seconds": seconds, "steps": step,
            "test_acc": acc, "reached": acc >= 0.95, "ms": None,
            "note": f"{step} steps, test accuracy {acc:.4f}" + ("" if acc >= 0.95 else " (95% not reached)")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default="")
    ap.add_argument("--tiny", action="store_true", help="1 layer, width 32, batch 64, amplifier (8, 8)")
    ap.add_argument("--time-to-95", action="store_true", help="time a NeuralGrok run to 95%% test accuracy instead")
    ap.add_argument("--max-steps", type=int, default=20000, help="with --time-to-95: stop here if 95%% is not reached")
    ap.add_argument("--sections", default="train,second-order", help="train, second-order, or both")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench = Bench(args)
    # The reference model makes its positions and mask without a device; PyTorch 2.x's device context
    # puts them on the GPU. (With torch 1.13 on a GPU the rows fail and say so.)
    on_device = (torch.device(args.device) if args.device != "cpu" and hasattr(torch, "set_default_device")
                 else contextlib.nullcontext())
    with on_device:
        if args.time_to_95:
            bench.rows.append(time_to_95(bench, args.max_steps))
        else:
            rows = []
            if "train" in args.sections:
                rows += [bench.plain, bench.compiled, bench.grokfast_ema, bench.neuralgrok_inner, bench.neuralgrok_meta,
                         bench.neuralgrok_amortised]
            if "second-order" in args.sections:
                rows.append(bench.second_order)
            for row in rows:
                row()

    config = bench.sizes.describe()
    print(f"PyTorch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads — {config}")
    for r in bench.rows:
        if "seconds" in r:
            print(f"  {r['name']:64s} {r['seconds']:>10.2f} s   {r.get('note', '')}")
            continue
        ms = "n/a" if r["ms"] is None else f"{r['ms']:.2f}"
        print(f"  {r['name']:64s} {ms:>10} ms  {r.get('note', '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "python": sys.executable, "device": args.device,
                       "threads": torch.get_num_threads(), "config": config, "rows": bench.rows}, f, indent=2)


if __name__ == "__main__":
    main()
