"""Fourier analysis of a model trained on modular arithmetic, after Nanda, Chan, Lieberum, Smith and
Steinhardt, "Progress measures for grokking via mechanistic interpretability" (ICLR 2023, arXiv 2301.05217).

Pure NumPy (matplotlib only inside the plotting functions): everything takes plain arrays, so it works on
any model's weights, activations and logits, not only tapegrok's.

    import numpy as np
    import tapegrok
    from tapegrok import analysis as fa
    model = tapegrok.load("runs/x/checkpoint.safetensors")
    data, p = model.dataset, model.dataset["modulus"]
    a, b = fa.operands(data["inputs"], data["layout"])               # [n] operands of every example
    logits = fa.to_grid(a, b, model.forward(data["inputs"]), p)      # [p, p, classes], NaN where b = 0
    labels = fa.to_grid(a, b, data["targets"], p)                    # [p, p]
    train = np.stack([a[data["train"]], b[data["train"]]], axis=1)   # [n_train, 2] (a, b) pairs
    test = np.stack([a[data["test"]], b[data["test"]]], axis=1)
    spec = fa.embedding_spectrum(model.parameters["token_embeddings.weight"], p)
    keys = fa.key_frequencies(spec).freqs
    fa.restricted_loss(logits, labels, keys, p, examples=test)
    fa.excluded_loss(logits, labels, keys, p, examples=train)
    acts = fa.to_grid(a, b, model.mlp_activations(data["inputs"])["layers.0.mlp"], p)  # [p, p, neurons]
    fa.neuron_spectrum(acts, p).clusters                             # frequency -> number of neurons

Definitions used here (in this module's words; section numbers are the paper's)
------------------------------------------------------------------------------

Frequencies. The inputs are residues a, b in Z_p. Frequency k means the waves cos(w_k x) and sin(w_k x)
with w_k = 2 pi k / p. Frequencies k and p - k give the same pair of real waves, so the distinct
frequencies are k = 1 .. floor(p / 2), plus the constant (k = 0). For even p, k = p / 2 has only a
cosine, (-1)^x, because its sine is zero at every integer.

The algorithm (section 3.1, "Fourier multiplication"). A model that has grokked a + b mod p embeds a and b
as cos/sin(w_k a), cos/sin(w_k b) for a few frequencies k, multiplies them into cos(w_k (a + b)) and
sin(w_k (a + b)) with the angle-addition identities, and reads out the logit of each answer c as a sum
over those k of terms proportional to cos(w_k (a + b - c)), which all peak together at c = a + b mod p.

Key frequencies (section 4.1; appendix C.2). The few frequencies that carry almost all of the norm of the
embedding (and of the map from neurons to logits) once the model generalises. The paper reads them off
the spectrum ("non-negligible norm", "nontrivial coefficients") without a numeric rule;
`key_frequencies` states one (a share of the largest frequency's norm, or the smallest set holding a
share of the total), so results are reproducible. For progress measures, take them once from the final
model and use that one set at every checkpoint, so that the measures are comparable across steps.

Restricted loss (section 5.1). Take the logits of every output class c as a function on the (a, b) grid
and write it in the 2-D Fourier basis (products of a wave in a and a wave in b). Keep only the constant
and, for every key frequency, the two directions cos(w_k (a + b)) and sin(w_k (a + b)); set everything
else to zero, then take the cross-entropy against the true answers. It measures how well the model does
using nothing but the Fourier-multiplication circuit. The paper counts "the 20 terms" for its five key
frequencies: the four same-frequency products cos*cos, cos*sin, sin*cos, sin*sin of each. The two (a + b)
directions lie inside those four; the other two are the (a - b) directions, which the algorithm does not
use. This module keeps the two (a + b) directions per key frequency; the two readings differ only by
the (a - b) components, which are negligible in a model that implements the algorithm. The paper does not
say which examples the restricted loss is averaged over; choose them with `examples` (on the test split it
tracks generalisation).

Excluded loss (section 5.1). The opposite ablation: subtract exactly those key-frequency (a + b)
components from the logits, keep everything else (the constant included), and take the cross-entropy on
the training examples. A memorising solution is spread over the whole Fourier domain and barely notices;
the generalising circuit loses its signal. So it rises while the circuit forms.

Neuron frequencies (section 4.3). Each MLP neuron's activation over the (a, b) grid is, for a grokked
model, mostly a degree-2 polynomial in the waves of one frequency: the constant, the linear terms
cos/sin(w_k a), cos/sin(w_k b) and the four products. A neuron belongs to frequency k's cluster when those
terms explain at least 85% of its variance (the paper's threshold).

Other progress measures (section 5.1): the Gini coefficient of the norms of the Fourier components of the
embedding and of the neuron-to-logit map (sparsity in the Fourier basis; `gini`), and the sum of squared
weights.

Missing cells: b = 0
--------------------
tapegrok's a+b, a-b, a*b data sets have a in [0, p) and b in [1, p): the b = 0 row is in neither split.
Every function that takes an (a, b) grid accepts it without that row ([p, p - 1, ...]; `b_values` says
which b each column is, by default 1 .. p - 1 for p - 1 columns) or with cells that are NaN in every entry.
Components along a set of waves are then the least-squares fit of those waves over the observed cells.
On the complete grid the waves are orthonormal and this is exactly the paper's projection. Without the
b = 0 row, every residue a + b still occurs exactly p - 1 times, so the (a + b) directions stay
orthogonal to one another and to the constant: the restricted and excluded logits are the same operator.
Only components at a key frequency that are not functions of a + b (cos(w_k a), cos(w_k (a - b)), ...) now
overlap those directions slightly, and a little of them leaks into the fit. The other
choice is to run the model on all p^2 pairs (it accepts b = 0 inputs, they are just in no split) and to
select the examples of the loss with `examples`; this is what the paper's complete grid corresponds to.

Output classes: the logits may have more classes than p (a head over the whole vocabulary, with operator
and "=" tokens). The ablations act on each class separately over the (a, b) grid, so the extra classes
are ablated alike and stay in the softmax, as in the model's own loss; pass logits[..., :p] to drop them as
the paper does.

Tasks: `task="a+b"` (the paper's) or `"a-b"`, for which the directions are cos/sin(w_k (a - b)). The
additive Fourier basis does not describe a*b mod p, whose structure is periodic in the discrete logarithm
of a and b; that re-indexing is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "fourier_basis", "fourier_basis_labels", "Spectrum", "embedding_spectrum", "logit_spectrum",
    "KeyFrequencies", "key_frequencies", "NeuronSpectrum", "neuron_spectrum", "restricted_logits",
    "excluded_logits", "full_loss", "restricted_loss", "excluded_loss", "gini", "to_grid", "operands",
    "plot_spectrum", "plot_progress_measures", "NEURON_TERMS",
]

ArrayLike = Any
Examples = Optional[ArrayLike]

# The four kinds of terms of one frequency in a function of (a, b), see neuron_spectrum.
NEURON_TERMS = ("a", "b", "a+b", "a-b")
_TASK_SIGN = {"a+b": 1, "a-b": -1}


# ----------------------------------------------------------------------------------------------------
# The basis

def _check_modulus(p: Any) -> int:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
        raise ValueError(f"p must be an integer modulus >= 2, got {p!r}")
    if p < 2:
        raise ValueError(f"p must be an integer modulus >= 2, got {p}")
    return int(p)


def fourier_basis(p: int) -> Tuple[np.ndarray, np.ndarray]:
    """The orthonormal real Fourier basis over Z_p and the frequency of each row.

    Returns (basis, freqs): basis is [p, p] with one basis vector per row, evaluated at x = 0 .. p-1, so
    `basis @ f` expands a function f on Z_p and `basis.T @ coeffs` rebuilds it; basis @ basis.T = I.
    Row 0 is the constant 1/sqrt(p). Rows 2k-1 and 2k are cos(w_k x) and sin(w_k x) scaled to norm 1, for
    k = 1 .. (p-1)//2, with w_k = 2 pi k / p. For even p the last row is the cosine of frequency p/2,
    (-1)^x / sqrt(p), which has no sine partner (sin(pi x) = 0 at every integer), so there are p rows.
    freqs is [p] ints: the frequency k of each row (0 for the constant).
    """
    p = _check_modulus(p)
    x = np.arange(p)
    rows = [np.full(p, 1.0 / np.sqrt(p))]
    freqs = [0]
    for k in range(1, (p - 1) // 2 + 1):
        angle = 2.0 * np.pi * k * x / p
        rows += [np.cos(angle) * np.sqrt(2.0 / p), np.sin(angle) * np.sqrt(2.0 / p)]
        freqs += [k, k]
    if p % 2 == 0:
        rows.append(np.where(x % 2 == 0, 1.0, -1.0) / np.sqrt(p))  # exact, unlike cos(pi x)
        freqs.append(p // 2)
    return np.stack(rows), np.array(freqs, dtype=np.int64)


def fourier_basis_labels(p: int) -> list:
    """Names of the rows of fourier_basis(p): "const", "cos 1", "sin 1", ..., for plot axes."""
    _, freqs = fourier_basis(p)
    # Odd rows are cosines, even rows sines; the lone cosine of an even p is row p - 1, also odd.
    return ["const"] + [f"{'cos' if i % 2 == 1 else 'sin'} {freqs[i]}" for i in range(1, len(freqs))]


# ----------------------------------------------------------------------------------------------------
# Spectra and key frequencies

@dataclass(frozen=True, eq=False)
class Spectrum:
    """Squared norm per frequency: power[k] is the squared norm of frequency k's components (cosine and
    sine together), k = 0 .. p//2, index 0 being the constant component; fraction[k] is its share."""

    p: int
    power: np.ndarray  # [p//2 + 1]
    source: str = ""

    @property
    def freqs(self) -> np.ndarray:  # [p//2 + 1]: 0 .. p//2
        return np.arange(len(self.power))

    @property
    def norm(self) -> np.ndarray:  # [p//2 + 1]: the norm per frequency
        return np.sqrt(self.power)

    @property
    def fraction(self) -> np.ndarray:  # [p//2 + 1]: share of the total squared norm (constant included)
        total = self.power.sum()
        return self.power / total if total > 0 else np.zeros_like(self.power)

    def __repr__(self) -> str:
        top = np.argsort(-self.power[1:], kind="stable")[:5] + 1
        shown = ", ".join(f"{k}: {self.fraction[k]:.3f}" for k in top)
        return f"Spectrum({self.source or 'p=' + str(self.p)}, p={self.p}, largest fractions {{{shown}}})"


def embedding_spectrum(W_E: ArrayLike, p: int) -> Spectrum:
    """Norm per frequency of the residues' embedding vectors.

    W_E: [vocab, d], one row per token, the first p rows being the residues 0 .. p-1 (tapegrok's
    "token_embeddings.weight"; for a factorised embedding pass A @ B). Only those p rows are used. Each
    column of W_E[:p] is a function on Z_p; it is expanded in fourier_basis(p) and the squared
    coefficients of each frequency (cosine and sine) are summed over the d columns. The same works for any
    matrix whose first p rows are indexed by residue, e.g. the unembedding (head) weight, or the
    neuron-to-logit map W_U W_out [vocab, neurons] from which the paper reads the key frequencies for its
    progress measures (appendix C.2).
    """
    p = _check_modulus(p)
    W = np.asarray(W_E, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W_E must be a 2-D [vocab, d] matrix, got shape {W.shape}")
    if W.shape[0] < p:
        hint = "; it looks transposed, pass W_E.T" if W.shape[1] >= p else ""
        raise ValueError(f"W_E has {W.shape[0]} rows, but its first p = {p} rows must be the residues "
                         f"0..{p - 1} (shape [vocab, d] with vocab >= p){hint}")
    rows = W[:p]  # [p, d]
    if not np.all(np.isfinite(rows)):
        raise ValueError("W_E has non-finite values in its first p rows")
    basis, freqs = fourier_basis(p)
    coeffs = basis @ rows  # [p, d]: one row per basis vector
    power = np.bincount(freqs, weights=(coeffs ** 2).sum(axis=1), minlength=p // 2 + 1)
    return Spectrum(p, power, "embedding")


class KeyFrequencies(NamedTuple):
    """The key frequencies (sorted) and the share of the non-constant squared norm they hold."""

    freqs: np.ndarray  # [n_keys] ints in 1 .. p//2
    fraction: float


def _as_spectrum(spectrum: Any) -> Spectrum:
    if isinstance(spectrum, Spectrum):
        return spectrum
    if isinstance(getattr(spectrum, "spectrum", None), Spectrum):  # NeuronSpectrum
        return spectrum.spectrum
    raise ValueError(f"expected a Spectrum (from embedding_spectrum, logit_spectrum or neuron_spectrum), "
                     f"got {type(spectrum).__name__}")


def key_frequencies(spectrum: Union[Spectrum, "NeuronSpectrum"], *, rel_norm: Optional[float] = None,
                    mass: Optional[float] = None) -> KeyFrequencies:
    """The frequencies that hold most of a spectrum's norm, and the share they hold.

    The constant (k = 0) is never a key frequency and is left out of the shares: the mean of the rows says
    nothing about how the residues differ. Two rules, one at a time:
      rel_norm (default 0.25 when neither is given): every frequency whose norm is at least rel_norm times
        the largest frequency's norm. It keeps the "non-negligible" frequencies whatever their number.
      mass: the smallest set of frequencies, largest first (ties: lower k first), holding at least that
        share of the non-constant squared norm, e.g. mass=0.9.
    fraction is the share of the non-constant squared norm the chosen frequencies hold. A spectrum without
    non-constant power (beyond rounding error) has no key frequencies (fraction 0).
    """
    spec = _as_spectrum(spectrum)
    if rel_norm is not None and mass is not None:
        raise ValueError("key_frequencies: give rel_norm or mass, not both")
    if mass is not None and not 0 < mass <= 1:
        raise ValueError(f"key_frequencies: mass must be in (0, 1], got {mass}")
    rel = 0.25 if rel_norm is None else rel_norm
    if not 0 < rel <= 1:
        raise ValueError(f"key_frequencies: rel_norm must be in (0, 1], got {rel}")
    power = spec.power[1:]  # [p//2]: frequencies 1 .. p//2
    total = float(power.sum())
    if total == 0 or total <= 1e-20 * float(spec.power.sum()):  # constant rows leave only rounding error
        return KeyFrequencies(np.zeros(0, dtype=np.int64), 0.0)
    if mass is not None:
        order = np.argsort(-power, kind="stable")
        reached = np.cumsum(power[order]) >= mass * total * (1 - 1e-12)  # the last entry always reaches it
        chosen = order[: int(np.argmax(reached)) + 1] + 1
    else:
        norm = np.sqrt(power)
        chosen = np.nonzero(norm >= rel * norm.max())[0] + 1
    chosen = np.sort(chosen).astype(np.int64)
    return KeyFrequencies(chosen, float(power[chosen - 1].sum() / total))


def gini(values: Union[ArrayLike, Spectrum]) -> float:
    """Gini coefficient of non-negative values (Hurley & Rickard's sparsity measure, as in the paper's
    section 5.1): 0 when all are equal, (n-1)/n when one of n holds everything. Given a Spectrum it uses
    the norm per frequency, constant left out."""
    if isinstance(values, Spectrum) or isinstance(getattr(values, "spectrum", None), Spectrum):
        x = _as_spectrum(values).norm[1:]
    else:
        x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("gini: no values")
    if np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError("gini: the values must be finite and non-negative (e.g. norms)")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.size
    ranks = np.arange(1, n + 1)
    return float(1.0 - 2.0 * np.sum(np.sort(x) / total * (n - ranks + 0.5) / n))


# ----------------------------------------------------------------------------------------------------
# (a, b) grids

@dataclass
class _Grid:
    p: int
    a: np.ndarray  # [n_a] the a value of each index along axis 0
    b: np.ndarray  # [n_b]
    observed: np.ndarray  # [n_a, n_b] bool: cells with values
    values: np.ndarray  # [n_a, n_b, m] float64 (NaN in missing cells)

    @property
    def complete(self) -> bool:  # every (a, b) pair of Z_p x Z_p is there
        return bool(self.observed.all()) and len(self.a) == self.p and len(self.b) == self.p


def _axis_values(values: Any, n: int, p: int, axis: str) -> np.ndarray:
    if values is None:
        if n == p:
            return np.arange(p)
        if n == p - 1 and axis == "b":
            return np.arange(1, p)
        allowed = f"{p} (every value)" + (f" or p - 1 = {p - 1} (b = 1..{p - 1})" if axis == "b" else "")
        raise ValueError(f"the {axis} axis has {n} entries; with p = {p} it must have {allowed}, "
                         f"or pass {axis}_values")
    v = np.asarray(values)
    if v.ndim != 1 or len(v) != n:
        raise ValueError(f"{axis}_values has shape {v.shape}, expected [{n}] (the {axis} of each index along "
                         f"the {axis} axis)")
    if v.size and not np.all(np.equal(np.mod(v, 1), 0)):
        raise ValueError(f"{axis}_values must be integers")
    v = v.astype(np.int64)
    if v.size and (v.min() < 0 or v.max() >= p):
        raise ValueError(f"{axis}_values must lie in [0, {p}), got values {v.min()}..{v.max()}")
    if len(np.unique(v)) != len(v):
        raise ValueError(f"{axis}_values has repeated values")
    return v


def _grid(array: ArrayLike, p: int, a_values: Any, b_values: Any, name: str, last_axis: str) -> _Grid:
    x = np.asarray(array, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"{name} must be [n_a, n_b, {last_axis}] over the (a, b) grid, got shape {x.shape}")
    if x.shape[2] == 0:
        raise ValueError(f"{name} has no {last_axis} (shape {x.shape})")
    a = _axis_values(a_values, x.shape[0], p, "a")
    b = _axis_values(b_values, x.shape[1], p, "b")
    nan = np.isnan(x)
    missing = nan.all(axis=2)  # [n_a, n_b]
    partial = nan.any(axis=2) & ~missing
    if partial.any():
        i, j = np.argwhere(partial)[0]
        raise ValueError(f"{name}: the cell (a={a[i]}, b={b[j]}) is NaN in some entries only; a missing cell "
                         f"must be NaN in all of them")
    if np.isinf(x).any():
        raise ValueError(f"{name} has infinite values")
    observed = ~missing
    if not observed.any():
        raise ValueError(f"{name}: every cell is missing (NaN)")
    return _Grid(p, a, b, observed, x)


def _check_key_freqs(key_freqs: Any, p: int) -> np.ndarray:
    if isinstance(key_freqs, KeyFrequencies):
        key_freqs = key_freqs.freqs
    k = np.asarray(key_freqs)
    if k.ndim == 0:
        k = k.reshape(1)
    if k.ndim != 1:
        raise ValueError(f"key_freqs must be a list of frequencies, got shape {k.shape}")
    if k.size and not np.all(np.equal(np.mod(k, 1), 0)):
        raise ValueError(f"key_freqs must be integers, got {k.tolist()}")
    k = k.astype(np.int64)
    bad = k[(k < 1) | (k > p // 2)]
    if bad.size:
        raise ValueError(f"key frequency {int(bad[0])} is out of range: frequencies are 1..{p // 2} for p = {p} "
                         f"(k and p - k are the same frequency)")
    if len(np.unique(k)) != len(k):
        raise ValueError(f"key_freqs has repeated frequencies: {k.tolist()}")
    return np.sort(k)


def _task_sign(task: str) -> int:
    if task not in _TASK_SIGN:
        raise ValueError(f"task must be 'a+b' or 'a-b', got {task!r} (the additive Fourier basis does not "
                         f"describe a*b mod p, whose structure lives in the discrete logarithm)")
    return _TASK_SIGN[task]


def _waves(s: np.ndarray, k: int, p: int) -> list:
    """cos and sin of w_k s over the cells (only the cosine at k = p/2, whose sine is zero)."""
    angle = 2.0 * np.pi * k * s / p
    return [np.cos(angle)] if 2 * k == p else [np.cos(angle), np.sin(angle)]


def _lstsq(design: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    if rank < design.shape[1]:
        raise ValueError(f"the observed (a, b) cells do not determine {what} (rank {rank} < "
                         f"{design.shape[1]}): too few cells")
    return coef


def _key_components(grid: _Grid, keys: np.ndarray, p: int, task: str):
    """Least-squares split of the logits over the observed cells into the constant and the key-frequency
    (a +- b) directions: (cells, constant part, key part), parts [n_cells, classes]."""
    sign = _task_sign(task)
    ai, bi = np.nonzero(grid.observed)  # [n_cells] each
    s = (grid.a[ai] + sign * grid.b[bi]) % p  # the residue a +- b of each cell
    columns = [np.ones(len(s))]
    for k in keys:
        columns += _waves(s, int(k), p)
    design = np.stack(columns, axis=1)  # [n_cells, 1 + directions]
    y = grid.values[ai, bi]  # [n_cells, classes]
    coef = _lstsq(design, y, "the key-frequency components")  # [1 + directions, classes]
    return (ai, bi), design[:, :1] @ coef[:1], design[:, 1:] @ coef[1:]


def _rebuild(grid: _Grid, cells, values: np.ndarray) -> np.ndarray:
    out = np.full(grid.values.shape, np.nan)
    out[cells] = values
    return out


def restricted_logits(logits: ArrayLike, key_freqs: Any, p: int, *, a_values: Any = None,
                      b_values: Any = None, task: str = "a+b") -> np.ndarray:
    """The logits with everything but the constant and the key frequencies' (a+b) directions removed.

    logits: [n_a, n_b, classes] over the (a, b) grid (see the module docstring for b = 0 and extra
    classes). For each class c, the function (a, b) -> logits[a, b, c] keeps its constant and its
    components along cos(w_k (a+b)) and sin(w_k (a+b)) for every k in key_freqs (a-b for task="a-b");
    the rest is set to zero. Returns the same shape, NaN in missing cells.
    """
    p = _check_modulus(p)
    grid = _grid(logits, p, a_values, b_values, "logits", "classes")
    cells, constant, key = _key_components(grid, _check_key_freqs(key_freqs, p), p, task)
    return _rebuild(grid, cells, constant + key)


def excluded_logits(logits: ArrayLike, key_freqs: Any, p: int, *, a_values: Any = None,
                    b_values: Any = None, task: str = "a+b") -> np.ndarray:
    """The logits minus their components along the key frequencies' (a+b) directions (everything else,
    the constant included, kept). Shapes as restricted_logits."""
    p = _check_modulus(p)
    grid = _grid(logits, p, a_values, b_values, "logits", "classes")
    cells, _, key = _key_components(grid, _check_key_freqs(key_freqs, p), p, task)
    return _rebuild(grid, cells, grid.values[cells] - key)


def _selected(grid: _Grid, labels: ArrayLike, examples: Examples) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid positions (i, j) and integer answers of the examples a loss is averaged over."""
    lab = np.asarray(labels)
    if lab.shape != grid.observed.shape:
        raise ValueError(f"labels has shape {lab.shape}, expected {grid.observed.shape}: one answer per (a, b) "
                         f"cell of the logits")
    if examples is None:
        chosen = grid.observed
    else:
        ex = np.asarray(examples)
        if ex.dtype == np.bool_:
            if ex.shape != grid.observed.shape:
                raise ValueError(f"the examples mask has shape {ex.shape}, expected {grid.observed.shape} "
                                 f"(the (a, b) grid of the logits)")
            chosen = ex
        elif np.issubdtype(ex.dtype, np.integer) and ex.ndim == 2 and ex.shape[1] == 2:
            # (a, b) values -> positions on the grid
            where_a = np.full(np.max(grid.a) + 1, -1)
            where_a[grid.a] = np.arange(len(grid.a))
            where_b = np.full(np.max(grid.b) + 1, -1)
            where_b[grid.b] = np.arange(len(grid.b))
            chosen = np.zeros(grid.observed.shape, dtype=bool)
            for a, b in ex:
                i = where_a[a] if 0 <= a < len(where_a) else -1
                j = where_b[b] if 0 <= b < len(where_b) else -1
                if i < 0 or j < 0:
                    raise ValueError(f"example (a={a}, b={b}) is not on the grid of the logits")
                chosen[i, j] = True
        else:
            raise ValueError(f"examples must be a boolean mask over the (a, b) grid or integer (a, b) pairs "
                             f"[n, 2], got dtype {ex.dtype} and shape {ex.shape}")
        off = chosen & ~grid.observed
        if off.any():
            i, j = np.argwhere(off)[0]
            raise ValueError(f"examples include the cell (a={grid.a[i]}, b={grid.b[j]}), whose logits are "
                             f"missing (NaN)")
    if not chosen.any():
        raise ValueError("no examples selected")
    i, j = np.nonzero(chosen)
    y = lab[i, j]
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integer answers at every selected example (NaN only in cells "
                             "that are not used)")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    classes = grid.values.shape[2]
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) (the classes of the logits), got {y.min()}..{y.max()}")
    return i, j, y


def _cross_entropy(rows: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logit rows [n, classes] against answers [n], in float64."""
    top = rows.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    return float(np.mean(log_z - rows[np.arange(len(y)), y]))


def full_loss(logits: ArrayLike, labels: ArrayLike, p: int, *, examples: Examples = None,
              a_values: Any = None, b_values: Any = None) -> float:
    """Mean cross-entropy of the unablated logits, for comparison with the ablated losses.

    logits: [n_a, n_b, classes]; labels: [n_a, n_b] true answers (float with NaN allowed in cells that are
    not used, as to_grid makes them). examples: None (every cell with logits), a boolean mask [n_a, n_b]
    (e.g. the training split) or integer (a, b) pairs [n, 2].
    """
    p = _check_modulus(p)
    grid = _grid(logits, p, a_values, b_values, "logits", "classes")
    i, j, y = _selected(grid, labels, examples)
    return _cross_entropy(grid.values[i, j], y)


def _ablated_loss(logits: ArrayLike, labels: ArrayLike, key_freqs: Any, p: int, examples: Examples,
                  a_values: Any, b_values: Any, task: str, restrict: bool) -> float:
    p = _check_modulus(p)
    grid = _grid(logits, p, a_values, b_values, "logits", "classes")
    keys = _check_key_freqs(key_freqs, p)
    i, j, y = _selected(grid, labels, examples)
    cells, constant, key = _key_components(grid, keys, p, task)
    ablated = _rebuild(grid, cells, constant + key if restrict else grid.values[cells] - key)
    return _cross_entropy(ablated[i, j], y)


def restricted_loss(logits: ArrayLike, labels: ArrayLike, key_freqs: Any, p: int, *, examples: Examples = None,
                    a_values: Any = None, b_values: Any = None, task: str = "a+b") -> float:
    """Restricted loss (paper, section 5.1): mean cross-entropy of restricted_logits over the examples.

    The ablation uses every cell with logits; the loss averages over `examples` only (None: all of them;
    the paper names no split, on the test split it tracks generalisation). Arguments as full_loss and
    restricted_logits.
    """
    return _ablated_loss(logits, labels, key_freqs, p, examples, a_values, b_values, task, restrict=True)


def excluded_loss(logits: ArrayLike, labels: ArrayLike, key_freqs: Any, p: int, *, examples: Examples = None,
                  a_values: Any = None, b_values: Any = None, task: str = "a+b") -> float:
    """Excluded loss (paper, section 5.1): mean cross-entropy of excluded_logits over the examples. The
    paper measures it on the training split: pass its mask or (a, b) pairs as `examples`. The ablation
    uses every cell with logits. Arguments as restricted_loss."""
    return _ablated_loss(logits, labels, key_freqs, p, examples, a_values, b_values, task, restrict=False)


def logit_spectrum(logits: ArrayLike, p: int, *, a_values: Any = None, b_values: Any = None,
                   task: str = "a+b") -> Spectrum:
    """Norm per frequency of the logits' (a+b) directions: power[k] is the squared norm, over the observed
    cells and all classes, of the logits' components along cos(w_k (a+b)) and sin(w_k (a+b)); power[0] is
    the constant's. It covers only the part of the logits that depends on a+b alone, which is where the
    Fourier-multiplication circuit writes (a-b for task="a-b"), so it finds the frequencies the whole model
    uses, whatever its architecture. logits: [n_a, n_b, classes] as restricted_logits."""
    p = _check_modulus(p)
    grid = _grid(logits, p, a_values, b_values, "logits", "classes")
    sign = _task_sign(task)
    ai, bi = np.nonzero(grid.observed)
    s = (grid.a[ai] + sign * grid.b[bi]) % p
    columns, freq_of_column = [np.ones(len(s))], [0]
    for k in range(1, p // 2 + 1):
        waves = _waves(s, k, p)
        columns += waves
        freq_of_column += [k] * len(waves)
    design = np.stack(columns, axis=1)  # [n_cells, p]: every function of a+b
    freq_of_column = np.array(freq_of_column)
    coef = _lstsq(design, grid.values[ai, bi], "the logits' spectrum")  # [p, classes]
    power = np.zeros(p // 2 + 1)
    for k in range(p // 2 + 1):
        cols = freq_of_column == k
        power[k] = np.sum((design[:, cols] @ coef[cols]) ** 2)
    return Spectrum(p, power, "logits (" + task + ")")


# ----------------------------------------------------------------------------------------------------
# Neurons

@dataclass(frozen=True, eq=False)
class NeuronSpectrum:
    """The frequency content of MLP neurons over the (a, b) grid (see neuron_spectrum)."""

    p: int
    term_power: np.ndarray  # [neurons, p//2 + 1, 4]: squared norm of each neuron's NEURON_TERMS per frequency
    variance: np.ndarray  # [neurons]: squared norm of each neuron's centred activations over the observed cells
    fraction: np.ndarray  # [neurons, p//2 + 1]: share of that variance explained by frequency k's terms
    power_2d: Optional[np.ndarray]  # [p//2 + 1, p//2 + 1] (freq of a, freq of b), summed over neurons; None
    #                                 unless the grid is complete
    threshold: float

    @property
    def neuron_freq(self) -> np.ndarray:  # [neurons]: best frequency of each neuron, 0 for a constant neuron
        best = np.argmax(self.fraction[:, 1:], axis=1) + 1
        return np.where(self.variance > 0, best, 0)

    @property
    def neuron_fraction(self) -> np.ndarray:  # [neurons]: the share its best frequency explains
        return self.fraction[np.arange(len(self.variance)), self.neuron_freq] * (self.variance > 0)

    @property
    def clusters(self) -> Dict[int, int]:
        """frequency -> number of neurons whose best frequency explains >= threshold of their variance."""
        member = self.neuron_fraction >= self.threshold
        freqs, counts = np.unique(self.neuron_freq[member], return_counts=True)
        return {int(k): int(n) for k, n in zip(freqs, counts)}

    @property
    def key_freqs(self) -> np.ndarray:  # the frequencies with at least one clustered neuron, sorted
        return np.array(sorted(self.clusters), dtype=np.int64)

    @property
    def spectrum(self) -> Spectrum:
        """All four kinds of terms summed over the neurons, per frequency (for key_frequencies, plots)."""
        return Spectrum(self.p, self.term_power.sum(axis=(0, 2)), "neurons")


def neuron_spectrum(acts: ArrayLike, p: int, *, a_values: Any = None, b_values: Any = None,
                    threshold: float = 0.85) -> NeuronSpectrum:
    """Frequency content of MLP neurons, as in the paper's section 4.3.

    acts: [n_a, n_b, neurons], each neuron's activation (at the answer position) for every (a, b); the
    b = 0 row may be left out (b_values, default 1..p-1 for p - 1 columns) or be NaN. Each neuron is
    centred (its mean over the observed cells removed) and, per frequency k, split into four kinds of
    terms (NEURON_TERMS), two waves each:
      "a": cos/sin(w_k a)          "a+b": cos/sin(w_k (a+b))
      "b": cos/sin(w_k b)          "a-b": cos/sin(w_k (a-b))
    The "a+b" and "a-b" waves span the four products cos(w_k a)cos(w_k b), ... (for even p at k = p/2
    there is one wave per kind and its a+b and a-b waves coincide; it is counted under "a+b").
    term_power holds the squared norm of each neuron's component of each kind; fraction[n, k] is the share
    of neuron n's variance that frequency k's eight terms explain together (the paper's "degree-2
    polynomial of one frequency"); a neuron is in frequency k's cluster when k is its best frequency and
    fraction >= threshold (the paper's 0.85). key_freqs are the frequencies with a cluster.

    On the complete grid this is the 2-D Fourier transform of every neuron, and power_2d adds up its
    squared coefficients by (frequency of a, frequency of b). With cells missing the components are
    least-squares fits over the observed cells, per frequency, and power_2d is None.
    """
    p = _check_modulus(p)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    grid = _grid(acts, p, a_values, b_values, "acts", "neurons")
    if grid.complete:
        return _neuron_spectrum_complete(grid, p, threshold)
    return _neuron_spectrum_fit(grid, p, threshold)


def _variance(centred: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Squared norm of each centred neuron [cells, neurons] -> [neurons], 0 for a constant neuron (whose
    centring leaves rounding error only)."""
    variance = (centred ** 2).sum(axis=0)
    return np.where(variance > 1e-20 * (raw ** 2).sum(axis=0), variance, 0.0)


def _neuron_spectrum_complete(grid: _Grid, p: int, threshold: float) -> NeuronSpectrum:
    basis, freqs = fourier_basis(p)
    x = grid.values - grid.values.mean(axis=(0, 1))  # [p, p, neurons], centred
    ba, bb = basis[:, grid.a], basis[:, grid.b]  # [p, p]: basis vectors at each a (b) of the grid
    coef = np.tensordot(np.tensordot(ba, x, axes=(1, 0)), bb, axes=(1, 1))  # [p(a), neurons, p(b)]
    coef = coef.transpose(0, 2, 1)  # [p(a), p(b), neurons]
    n_freq = p // 2 + 1
    square = (coef ** 2).sum(axis=2)  # [p, p]
    cell = freqs[:, None] * n_freq + freqs[None, :]
    power_2d = np.bincount(cell.ravel(), weights=square.ravel(), minlength=n_freq * n_freq).reshape(n_freq, n_freq)

    terms = np.zeros((x.shape[2], n_freq, 4))
    for k in range(1, n_freq):
        if 2 * k == p:
            c = p - 1  # the lone cosine row
            terms[:, k, 0] = coef[c, 0] ** 2
            terms[:, k, 1] = coef[0, c] ** 2
            terms[:, k, 2] = coef[c, c] ** 2
            continue
        c, s = 2 * k - 1, 2 * k  # rows cos(w_k x), sin(w_k x)
        terms[:, k, 0] = coef[c, 0] ** 2 + coef[s, 0] ** 2
        terms[:, k, 1] = coef[0, c] ** 2 + coef[0, s] ** 2
        # cos(w(a+b)) = cos cos - sin sin and sin(w(a+b)) = sin cos + cos sin, normalised: /sqrt(2)
        terms[:, k, 2] = ((coef[c, c] - coef[s, s]) ** 2 + (coef[s, c] + coef[c, s]) ** 2) / 2
        terms[:, k, 3] = ((coef[c, c] + coef[s, s]) ** 2 + (coef[s, c] - coef[c, s]) ** 2) / 2
    variance = _variance(x.reshape(-1, x.shape[2]), grid.values[grid.observed])  # [neurons]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(variance[:, None] > 0, terms.sum(axis=2) / variance[:, None], 0.0)
    return NeuronSpectrum(p, terms, variance, fraction, power_2d, threshold)


def _neuron_spectrum_fit(grid: _Grid, p: int, threshold: float) -> NeuronSpectrum:
    ai, bi = np.nonzero(grid.observed)
    a, b = grid.a[ai], grid.b[bi]  # [cells]
    y = grid.values[ai, bi]
    centred = y - y.mean(axis=0)  # [cells, neurons]; the constant column then fits to zero
    variance = _variance(centred, y)
    n_freq = p // 2 + 1
    terms = np.zeros((y.shape[1], n_freq, 4))
    fraction = np.zeros((y.shape[1], n_freq))
    for k in range(1, n_freq):
        kinds = [_waves(a, k, p), _waves(b, k, p), _waves(a + b, k, p)]
        if 2 * k != p:
            kinds.append(_waves(a - b, k, p))
        design = np.stack([np.ones(len(a))] + [w for kind in kinds for w in kind], axis=1)  # [cells, 1 + 8]
        # Normal equations: the waves are nearly orthogonal on any grid missing a row or so, and the
        # [cells, neurons] products are then formed once instead of per kind of term.
        gram = design.T @ design  # [9, 9]
        eigen = np.linalg.eigvalsh(gram)
        if eigen[0] <= 1e-10 * eigen[-1]:
            raise ValueError(f"the observed (a, b) cells do not determine the terms of frequency {k}: too few cells")
        projections = design.T @ centred  # [9, neurons]
        coef = np.linalg.solve(gram, projections)  # [9, neurons]
        col = 1
        for t, kind in enumerate(kinds):
            g = slice(col, col + len(kind))
            terms[:, k, t] = np.einsum("in,ij,jn->n", coef[g], gram[g, g], coef[g])  # squared norm of the part
            col += len(kind)
        explained = np.einsum("in,in->n", coef, projections)  # squared norm of the whole fit
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction[:, k] = np.where(variance > 0, explained / variance, 0.0)
    return NeuronSpectrum(p, terms, variance, fraction, None, threshold)


# ----------------------------------------------------------------------------------------------------
# Getting arrays into grids

def to_grid(a: ArrayLike, b: ArrayLike, values: ArrayLike, p: int) -> np.ndarray:
    """Scatter per-example values onto the (a, b) grid: a, b [n] operands, values [n] or [n, m] (logits,
    activations, answers) -> [p, p] or [p, p, m] float64, NaN in cells no example fills (b = 0 for
    tapegrok's a+b data sets)."""
    p = _check_modulus(p)
    a, b = np.asarray(a), np.asarray(b)
    v = np.asarray(values, dtype=np.float64)
    if a.ndim != 1 or b.shape != a.shape:
        raise ValueError(f"a and b must be 1-D arrays of the same length, got shapes {a.shape} and {b.shape}")
    if v.ndim == 0 or v.shape[0] != len(a):
        raise ValueError(f"values must have one entry per example ({len(a)}), got shape {v.shape}")
    for name, x in (("a", a), ("b", b)):
        if x.size and (not np.all(np.equal(np.mod(x, 1), 0)) or x.min() < 0 or x.max() >= p):
            raise ValueError(f"{name} must be integers in [0, {p})")
    a, b = a.astype(np.int64), b.astype(np.int64)
    if len(np.unique(a * p + b)) != len(a):
        raise ValueError("to_grid: some (a, b) pair occurs twice")
    out = np.full((p, p) + v.shape[1:], np.nan)
    out[a, b] = v
    return out


def operands(inputs: ArrayLike, layout: str = "sequence") -> Tuple[np.ndarray, np.ndarray]:
    """The operands (a, b) of every example of a binary task from its token ids [n, seq_len].

    tapegrok's layouts: "sequence" [a, b, op, =], "interleaved" [a, op, b, =], "pair" [a, b]; the value
    tokens are the residues themselves.
    """
    x = np.asarray(inputs)
    positions = {"sequence": (4, 0, 1), "interleaved": (4, 0, 2), "pair": (2, 0, 1)}
    if layout not in positions:
        raise ValueError(f"layout must be one of {sorted(positions)}, got {layout!r}")
    length, ia, ib = positions[layout]
    if x.ndim != 2 or x.shape[1] != length:
        raise ValueError(f"inputs must be token ids [n, {length}] for the {layout} layout of a binary task, "
                         f"got shape {x.shape}")
    return x[:, ia].astype(np.int64), x[:, ib].astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Figures

def _figure(width: float, height: float):
    # A canvas of our own: no pyplot state, no change to the session's backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Union[str, Path]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_spectrum(spectrum: Union[Spectrum, NeuronSpectrum], path: Union[str, Path], title: Optional[str] = None,
                  *, key_freqs: Any = None) -> None:
    """Bar chart of the share of the squared norm per frequency 1..p//2, key frequencies highlighted
    (key_freqs, default key_frequencies(spectrum)). Written to path (PNG unless the suffix names another
    format)."""
    spec = _as_spectrum(spectrum)
    keys = key_frequencies(spec).freqs if key_freqs is None else _check_key_freqs(key_freqs, spec.p)
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    freqs, share = spec.freqs[1:], spec.fraction[1:]
    is_key = np.isin(freqs, keys)
    ax.bar(freqs[~is_key], share[~is_key], width=0.8, color="tab:gray", label="other frequencies")
    if is_key.any():
        ax.bar(freqs[is_key], share[is_key], width=0.8, color="tab:red",
               label="key frequencies " + ", ".join(str(k) for k in keys))
    ax.set_xlim(0.3, spec.p // 2 + 0.7)
    ax.set_xlabel("frequency k  (w_k = 2πk/p)")
    ax.set_ylabel("share of the squared norm")
    ax.set_title(title if title is not None else f"Fourier spectrum of the {spec.source or 'weights'}, p = {spec.p}")
    ax.text(0.99, 0.97, f"constant: {spec.fraction[0]:.1%}", transform=ax.transAxes, ha="right", va="top",
            fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def plot_progress_measures(steps: Sequence[float], measures: Mapping[str, Sequence[float]], path: Union[str, Path],
                           test_accuracy: Optional[Sequence[float]] = None, title: Optional[str] = None) -> None:
    """Progress measures against training steps, as in the paper's figure 7: log-scaled steps, the
    measures (losses: train, test, restricted, excluded, ...) on a log axis, test accuracy (optional) on a
    second axis from 0 to 1. measures: name -> one value per step. Steps <= 0 cannot sit on a log axis and
    are left out, as are values <= 0 or NaN of a measure."""
    x = np.asarray(steps, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"steps must be a non-empty 1-D sequence, got shape {x.shape}")
    if not measures:
        raise ValueError("measures is empty: pass e.g. {'train loss': [...], 'restricted loss': [...]}")
    series = {}
    for name, values in measures.items():
        y = np.asarray(values, dtype=np.float64)
        if y.shape != x.shape:
            raise ValueError(f"measures[{name!r}] has shape {y.shape} but steps has {x.shape}: one value per step")
        series[name] = y
    accuracy = None
    if test_accuracy is not None:
        accuracy = np.asarray(test_accuracy, dtype=np.float64)
        if accuracy.shape != x.shape:
            raise ValueError(f"test_accuracy has shape {accuracy.shape} but steps has {x.shape}: one value per step")
    on_axis = x > 0
    if not on_axis.any():
        raise ValueError("no step > 0: a log-scaled step axis needs positive steps")

    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    for name, y in series.items():
        ok = on_axis & np.isfinite(y) & (y > 0)
        ax.plot(x[ok], y[ok], label=name, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if accuracy is not None:
        ax2 = ax.twinx()
        ok = on_axis & np.isfinite(accuracy)
        ax2.plot(x[ok], accuracy[ok], color="black", linestyle="--", linewidth=1.2, label="test accuracy")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("test accuracy")
        more_handles, more_labels = ax2.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best", fontsize=8)
    if title is not None:
        ax.set_title(title)
    _save(fig, path)
