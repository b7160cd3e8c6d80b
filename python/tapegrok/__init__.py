"""tapegrok from Python: train runs and read their metrics, load checkpoints, and use the engine's
tensors and autograd tape directly.

    import tapegrok
    run = tapegrok.train(task="a+b", method="grokfast-ema", steps=2000, seed=1)
    run.metrics["test_acc"]              # NumPy columns; pandas.DataFrame(run.metrics) takes them as they are
    model = run.load()                   # or tapegrok.load("runs/x/checkpoint.safetensors")
    model.parameters["token_embeddings.weight"]  # read-only NumPy view of the weights

    x = tapegrok.Tensor(np.ones((3, 4)), requires_grad=True)
    loss = tapegrok.sum(tapegrok.gelu(x) * x)
    loss.backward(); x.grad.numpy()

Importable from a build tree without installing: PYTHONPATH=build/python python3 -c "import tapegrok".
Engine errors are raised as tapegrok.Error (a RuntimeError) carrying the engine's message.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional



def _choose_openblas_core() -> Optional[str]:
    """The engine's executables choose OpenBLAS's kernels before it loads (SkylakeX on an AVX-512 CPU,
    where OpenBLAS can fall back to generic kernels several times slower; kernels/cpu/openblas_core.h).
    The same rule here, before the extension loads OpenBLAS, so Python and the CLI compute the same bits.
    Returns the core asked for, or None where OpenBLAS's own choice stands."""
    if not os.environ.get("OPENBLAS_THREAD_TIMEOUT"):  # idle BLAS threads sleep at once (changes no result)
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        return "SkylakeX"
    return None


_wanted_openblas_core = _choose_openblas_core()  # before NumPy, which loads the same OpenBLAS

import numpy as np  # noqa: E402

from ._tapegrok import (  # noqa: E402,F401  (the engine's own objects)
    Error,
    Model,
    Tensor,
    abs,
    add,
    argmax,
    clear_tape,
    concat,
    cross_entropy,
    div,
    embedding,
    exp,
    flush_subnormals,
    gelu,
    grad,
    hvp,
    l2_norm,
    layernorm,
    linear,
    load,
    log,
    matmul,
    mean,
    mul,
    neg,
    openblas_core,
    relu,
    reshape,
    set_flush_subnormals,
    softmax,
    sqrt,
    square,
    stablemax_cross_entropy,
    sub,
    sum,
    tape_size,
    transpose,
)
from . import _tapegrok  # noqa: E402

if _wanted_openblas_core and _tapegrok.openblas_core().lower() != _wanted_openblas_core.lower():
    import warnings  # noqa: E402

    warnings.warn(f"OpenBLAS was loaded before tapegrok and runs its {_tapegrok.openblas_core()} kernels, not "
                  f"{_wanted_openblas_core}: results differ from the CLI's in the last bits (import tapegrok "
                  "first, or set OPENBLAS_CORETYPE for both)", RuntimeWarning, stacklevel=2)

__all__ = ["train", "Run", "load", "Model", "Tensor", "Error", "train_flags", "read_metrics", "no_grad"]


class no_grad:
    """Context manager: ops inside record nothing on the tape (like torch.no_grad)."""

    def __enter__(self) -> "no_grad":
        self._guard = _tapegrok._set_grad_mode(False)
        return self

    def __exit__(self, *exc) -> None:
        del self._guard


def train_flags() -> Dict[str, Dict[str, Any]]:
    """Every setting `train` accepts, from the command line's own definitions (one list for both):
    name (as a Python keyword, dashes as underscores) -> {"flag", "default", "help", "switch"}."""
    table = {}
    for flag, default, help_text, switch in _tapegrok._train_flags():
        table[flag.replace("-", "_")] = {"flag": "--" + flag, "default": default, "help": help_text, "switch": switch}
    return table


def _flag_arguments(settings: Dict[str, Any]) -> List[str]:
    known = train_flags()
    args: List[str] = []
    for key, value in settings.items():
        if value is None:
            continue
        if key not in known:
            close = [k for k in known if k.startswith(key[:3])]
            raise TypeError(f"train(): unknown setting '{key}'" + (f" (did you mean {', '.join(close)}?)" if close else "")
                            + "; tapegrok.train_flags() lists them")
        flag = known[key]
        if flag["switch"]:
            if not isinstance(value, bool):
                raise TypeError(f"train(): '{key}' is a switch: pass True or False, not {value!r}")
            if value:
                args.append(flag["flag"])
            continue
        if isinstance(value, bool):
            raise TypeError(f"train(): '{key}' takes a value ({flag['help']}), not {value!r}")
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)  # e.g. amp_hidden=(128, 128)
        args += [flag["flag"], repr(value) if isinstance(value, float) else str(value)]
    return args


def read_metrics(run_dir: str) -> Dict[str, np.ndarray]:
    """A run's metrics.jsonl as columns: one NumPy array per scalar key (step, train_loss, test_acc,
    age_raw, ...), one entry per evaluation. The per-tensor dictionaries are in read_per_tensor_metrics."""
    records = _read_records(run_dir)
    keys = [k for k in records[0] if not isinstance(records[0][k], dict)] if records else []
    return {k: np.array([r.get(k, np.nan) for r in records]) for k in keys}


def read_per_tensor_metrics(run_dir: str) -> Dict[str, Dict[str, np.ndarray]]:
    """The per-tensor metrics (e.g. age_raw_per_tensor): key -> tensor name -> one value per evaluation."""
    records = _read_records(run_dir)
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for key in [k for k in records[0] if isinstance(records[0][k], dict)] if records else []:
        out[key] = {name: np.array([r[key].get(name, np.nan) for r in records]) for name in records[0][key]}
    return out


def _read_records(run_dir: str) -> List[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise Error(f"{path}, line {number}: {e}") from None
    return records


class Run:
    """A training run's directory: its settings, metrics, summary and checkpoint."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    @property
    def config(self) -> dict:
        """Every setting of the run (config.json)."""
        with open(os.path.join(self.run_dir, "config.json")) as f:
            return json.load(f)

    @property
    def summary(self) -> dict:
        """First steps at 95% / 99% test accuracy, final accuracies, wall time (summary.json)."""
        with open(os.path.join(self.run_dir, "summary.json")) as f:
            return json.load(f)

    @property
    def metrics(self) -> Dict[str, np.ndarray]:
        """Scalar metrics per evaluation as NumPy columns (pandas.DataFrame(run.metrics) works as is)."""
        return read_metrics(self.run_dir)

    @property
    def per_tensor_metrics(self) -> Dict[str, Dict[str, np.ndarray]]:
        return read_per_tensor_metrics(self.run_dir)

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.run_dir, "checkpoint.safetensors")

    def load(self, device: str = "cpu") -> Model:
        """The trained model (tapegrok.load of the run's checkpoint)."""
        return load(self.checkpoint, device)

    def __repr__(self) -> str:
        return f"tapegrok.Run({self.run_dir!r})"


def train(task: str = "a+b", method: str = "standard", steps: Optional[int] = None, seed: int = 0,
          run_dir: Optional[str] = None, callback: Optional[Callable[[dict], None]] = None,
          verbose: bool = False, **settings: Any) -> Run:
    """Train as `tapegrok train` does, with the same settings and defaults (tapegrok.train_flags()
    lists them; keywords are the long flag names with underscores, e.g. weight_decay=0,
    stop_at_test_acc=0.95, preset="official", resume="runs/x/checkpoint.safetensors").

    run_dir: where the run's files go (default: a new temporary directory). callback(record) is
    called after every evaluation with that evaluation's metrics record (a dict, as in metrics.jsonl),
    e.g. to update a live plot; an exception it raises stops the run, as does Ctrl-C. verbose: print
    the start and summary lines. Same seed and settings give the same bits as the command line.
    """
    if run_dir is None:
        run_dir = tempfile.mkdtemp(prefix="tapegrok-run-")
        os.rmdir(run_dir)  # train creates it; an existing directory would have to be empty of runs anyway
    settings = dict(task=task, method=method, steps=steps, seed=seed, run_dir=run_dir, **settings)
    if not settings.pop("progress", False):
        settings["no_progress"] = True
    result = _tapegrok._train(_flag_arguments(settings), callback, verbose)
    return Run(result["run_dir"])


from . import analysis  # noqa: E402,F401  (Fourier analysis of trained modular-arithmetic models)
