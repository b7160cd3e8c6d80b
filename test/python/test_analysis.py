"""tapegrok.analysis (the Fourier analysis of Nanda et al.) against independent references: np.fft for the
basis and spectra, weights, activations and logits built by hand from chosen frequencies (so the key
frequencies, shares, restricted and excluded logits are known in closed form), a naive cross-entropy, and
the double-sum form of the Gini coefficient.

Run: /usr/bin/python3 -m pytest test/python/test_analysis.py -q   (also collected by the python_module ctest)
"""

import importlib.util
import os
import sys

import numpy as np
import pytest

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "python")


def _import_analysis():
    try:
        from tapegrok import analysis  # the installed or build-tree package
        return analysis
    except ImportError:
        pass
    sys.path.insert(0, SOURCE)
    try:
        from tapegrok import analysis  # the source tree, when its package imports without the build
        return analysis
    except ImportError:
        sys.path.remove(SOURCE)  # leave no half-usable package on the path for the other tests
    # The module is pure NumPy: load the source file on its own.
    spec = importlib.util.spec_from_file_location("tapegrok_analysis_source",
                                                  os.path.join(SOURCE, "tapegrok", "analysis.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fa = _import_analysis()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def naive_cross_entropy(rows, labels):
    """-log softmax written out directly (the test logits are small enough not to need log-sum-exp)."""
    probs = np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True)
    return float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))


def rfft_power(x, p):
    """Squared norm per frequency 0..p//2 of each column of x [p, m], from np.fft.rfft, summed over m."""
    spectrum = np.abs(np.fft.rfft(x, axis=0)) ** 2  # [p//2 + 1, m]
    weight = np.full(p // 2 + 1, 2.0 / p)
    weight[0] = 1.0 / p
    if p % 2 == 0:
        weight[-1] = 1.0 / p  # the frequency p/2 has no mirror image
    return (spectrum * weight[:, None]).sum(axis=1)


def wave(k, x, p, fn=np.cos):
    return fn(2 * np.pi * k * x / p)


# ----------------------------------------------------------------------------------------------------
# basis


@pytest.mark.parametrize("p", [2, 3, 8, 23, 97])
def test_basis_is_orthonormal_and_matches_fft_power(p):
    basis, freqs = fa.fourier_basis(p)
    assert basis.shape == (p, p) and freqs.shape == (p,)
    np.testing.assert_allclose(basis @ basis.T, np.eye(p), atol=1e-12)
    np.testing.assert_allclose(basis.T @ basis, np.eye(p), atol=1e-12)
    # one constant, two rows per frequency below p/2, one lone cosine at p/2 for even p
    counts = np.bincount(freqs)
    assert counts[0] == 1 and np.all(counts[1:(p + 1) // 2] == 2)
    if p % 2 == 0:
        assert counts[p // 2] == 1
    x = np.random.default_rng(p).standard_normal((p, 3))
    by_basis = np.bincount(freqs, weights=((basis @ x) ** 2).sum(axis=1))
    np.testing.assert_allclose(by_basis, rfft_power(x, p), rtol=1e-10, atol=1e-12)


def test_basis_rows_are_cosines_then_sines():
    p = 11
    basis, _ = fa.fourier_basis(p)
    x = np.arange(p)
    np.testing.assert_allclose(basis[5], wave(3, x, p) * np.sqrt(2 / p), atol=1e-12)  # row 2k-1: cos, k = 3
    np.testing.assert_allclose(basis[6], wave(3, x, p, np.sin) * np.sqrt(2 / p), atol=1e-12)
    assert fa.fourier_basis_labels(8) == ["const", "cos 1", "sin 1", "cos 2", "sin 2", "cos 3", "sin 3", "cos 4"]


@pytest.mark.parametrize("p", [1, 0, 2.5, True, "7"])
def test_basis_rejects_bad_modulus(p):
    with pytest.raises(ValueError, match="modulus"):
        fa.fourier_basis(p)


# ----------------------------------------------------------------------------------------------------
# embedding spectrum and key frequencies


def known_embedding(p, d, keys, scales, noise, rng, extra_rows=2):
    """[p + extra_rows, d]: residue a's row = const + sum_k scale_k (cos(w_k a) u_k + sin(w_k a) v_k) + noise."""
    a = np.arange(p)[:, None]
    rows = np.tile(rng.standard_normal(d), (p, 1))  # the constant part
    for k, scale in zip(keys, scales):
        u, v = rng.standard_normal(d), rng.standard_normal(d)
        rows += scale * (wave(k, a, p) * u / np.linalg.norm(u) + wave(k, a, p, np.sin) * v / np.linalg.norm(v))
    rows += noise * rng.standard_normal((p, d))
    return np.vstack([rows, 1e3 * rng.standard_normal((extra_rows, d))])  # operator and "=" rows: ignored


def test_embedding_with_known_frequencies_gives_them_and_their_share():
    p, d, keys = 23, 16, [3, 7, 10]
    rng = np.random.default_rng(0)
    W_E = known_embedding(p, d, keys, [1.0, 0.8, 1.2], 1e-3, rng)
    spec = fa.embedding_spectrum(W_E, p)
    hand = rfft_power(W_E[:p], p)  # only the residue rows
    np.testing.assert_allclose(spec.power, hand, rtol=1e-10)
    np.testing.assert_allclose(spec.fraction.sum(), 1.0)
    mean_row = W_E[:p].mean(axis=0)
    np.testing.assert_allclose(spec.fraction[0], p * mean_row @ mean_row / np.sum(W_E[:p] ** 2), rtol=1e-10)

    found = fa.key_frequencies(spec)
    assert found.freqs.tolist() == keys
    assert found.fraction == pytest.approx(hand[keys].sum() / hand[1:].sum(), rel=1e-12)
    assert 0.999 < found.fraction < 1
    assert fa.key_frequencies(spec, mass=0.999).freqs.tolist() == keys


def test_mass_rule_takes_the_largest_frequencies_first():
    p, d = 23, 4
    a = np.arange(p)[:, None]
    W_E = np.zeros((p, d))
    for k, scale, col in [(2, 3.0, 0), (5, 2.0, 1), (9, 1.0, 2)]:  # cosines only: power scale^2 p / 2
        W_E[:, col] = scale * wave(k, a[:, 0], p)
    spec = fa.embedding_spectrum(W_E, p)
    one = fa.key_frequencies(spec, mass=0.5)
    assert one.freqs.tolist() == [2] and one.fraction == pytest.approx(9 / 14)
    two = fa.key_frequencies(spec, mass=0.9)
    assert two.freqs.tolist() == [2, 5] and two.fraction == pytest.approx(13 / 14)
    # relative norm: 1.0 / 3.0 = 0.33 of the largest norm passes 0.25, not 0.5
    assert fa.key_frequencies(spec).freqs.tolist() == [2, 5, 9]
    assert fa.key_frequencies(spec, rel_norm=0.5).freqs.tolist() == [2, 5]


def test_key_frequencies_arguments():
    spec = fa.embedding_spectrum(np.eye(7), 7)
    with pytest.raises(ValueError, match="not both"):
        fa.key_frequencies(spec, rel_norm=0.3, mass=0.9)
    with pytest.raises(ValueError, match="mass must be in"):
        fa.key_frequencies(spec, mass=1.5)
    with pytest.raises(ValueError, match="rel_norm must be in"):
        fa.key_frequencies(spec, rel_norm=0)
    with pytest.raises(ValueError, match="expected a Spectrum"):
        fa.key_frequencies(np.ones(4))
    flat = fa.key_frequencies(fa.embedding_spectrum(np.ones((7, 3)), 7))  # constant rows: nothing to choose
    assert flat.freqs.size == 0 and flat.fraction == 0.0


def test_embedding_spectrum_shape_errors():
    with pytest.raises(ValueError, match=r"2-D \[vocab, d\]"):
        fa.embedding_spectrum(np.ones(10), 7)
    with pytest.raises(ValueError, match="transposed, pass W_E.T"):
        fa.embedding_spectrum(np.ones((4, 9)), 7)  # [d, vocab]
    with pytest.raises(ValueError, match="first p = 7 rows"):
        fa.embedding_spectrum(np.ones((5, 3)), 7)
    bad = np.ones((9, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fa.embedding_spectrum(bad, 7)


# ----------------------------------------------------------------------------------------------------
# restricted and excluded logits and losses


P = 23
KEYS = [2, 5, 9]


def grid_axes(p, classes, b_values=None):
    b_values = np.arange(p) if b_values is None else np.asarray(b_values)
    a, b, c = np.meshgrid(np.arange(p), b_values, np.arange(classes), indexing="ij")
    return a, b, c


def key_terms(p, classes, keys, rng, sign=1, b_values=None):
    """Per class c < p: alpha_k cos(w_k (a +- b - c)) + beta_k sin(w_k (a +- b - c)), the paper's read-out;
    for the extra classes c >= p: random multiples of cos/sin(w_k (a +- b))."""
    a, b, c = grid_axes(p, classes, b_values)
    s = a + sign * b
    out = np.zeros(a.shape)
    for k in keys:
        alpha, beta = rng.uniform(1, 2, size=2)
        f, g = rng.standard_normal(classes), rng.standard_normal(classes)
        on_residue = c < p
        out += np.where(on_residue, alpha * wave(k, s - c, p) + beta * wave(k, s - c, p, np.sin),
                        f[c] * wave(k, s, p) + g[c] * wave(k, s, p, np.sin))
    return out


def sum_only_other_terms(p, classes, others, rng, b_values=None):
    """Terms in a + b - c at the given (non-key) frequencies."""
    a, b, c = grid_axes(p, classes, b_values)
    out = np.zeros(a.shape)
    for j in others:
        out += rng.uniform(0.5, 1.5) * wave(j, a + b - c, p)
    return out


def same_frequency_other_terms(p, classes, keys, rng):
    """Terms the ablation must treat as "other" although they use a key frequency: linear terms
    cos(w_k a), sin(w_k b), the (a - b) directions, and cross-frequency products."""
    a, b, c = grid_axes(p, classes)
    h = rng.standard_normal((4, classes))
    k0, k1 = keys[0], keys[1]
    return (h[0][c] * wave(k0, a, p) + h[1][c] * wave(k1, b, p, np.sin) + h[2][c] * wave(k0, a - b, p)
            + h[3][c] * wave(k0, a, p, np.sin) * wave(k1, b, p))


def test_restricted_and_excluded_logits_on_the_full_grid_match_hand_built_ones():
    rng = np.random.default_rng(1)
    classes = P + 2  # a head over the whole vocabulary: the operator and "=" classes stay in the softmax
    bias = rng.standard_normal(classes)[None, None, :]
    key = key_terms(P, classes, KEYS, rng)
    other = sum_only_other_terms(P, classes, [1, 4, 11], rng) + same_frequency_other_terms(P, classes, KEYS, rng)
    logits = bias + key + other
    np.testing.assert_allclose(fa.restricted_logits(logits, KEYS, P), bias + key, atol=1e-10)
    np.testing.assert_allclose(fa.excluded_logits(logits, KEYS, P), bias + other, atol=1e-10)

    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    labels = (a + b) % P
    train = rng.random((P, P)) < 0.3
    assert fa.restricted_loss(logits, labels, KEYS, P) == pytest.approx(
        naive_cross_entropy((bias + key).reshape(-1, classes), labels.ravel()), rel=1e-10)
    assert fa.excluded_loss(logits, labels, KEYS, P, examples=train) == pytest.approx(
        naive_cross_entropy((bias + other)[train], labels[train]), rel=1e-10)
    pairs = np.argwhere(train)  # the same split as (a, b) pairs
    assert fa.full_loss(logits, labels, P, examples=pairs) == pytest.approx(
        naive_cross_entropy(logits[train], labels[train]), rel=1e-10)
    assert fa.restricted_loss(logits, labels, KEYS, P, examples=pairs) == pytest.approx(
        naive_cross_entropy((bias + key)[train], labels[train]), rel=1e-10)
    # no key frequencies: restricted keeps only the per-class constant, excluded keeps everything
    np.testing.assert_allclose(fa.restricted_logits(logits, [], P), np.broadcast_to(
        logits.mean(axis=(0, 1)), logits.shape), atol=1e-10)
    np.testing.assert_allclose(fa.excluded_logits(logits, [], P), logits, atol=1e-12)


def test_without_the_b0_row_the_a_plus_b_directions_are_still_exact():
    # Every residue a + b occurs p - 1 times on the b = 1..p-1 grid, so terms in a + b - c separate exactly.
    rng = np.random.default_rng(2)
    classes = P
    b_values = np.arange(1, P)
    bias = rng.standard_normal(classes)[None, None, :]
    key = key_terms(P, classes, KEYS, rng, b_values=b_values)
    other = sum_only_other_terms(P, classes, [1, 6, 11], rng, b_values=b_values)
    logits = bias + key + other  # [p, p - 1, classes]: b = 1..p-1 by default
    np.testing.assert_allclose(fa.restricted_logits(logits, KEYS, P), bias + key, atol=1e-10)
    np.testing.assert_allclose(fa.excluded_logits(logits, KEYS, P), bias + other, atol=1e-10)

    # the same logits on the full grid with a NaN b = 0 row
    with_nan = np.full((P, P, classes), np.nan)
    with_nan[:, 1:] = logits
    restricted = fa.restricted_logits(with_nan, KEYS, P)
    assert np.all(np.isnan(restricted[:, 0]))
    np.testing.assert_allclose(restricted[:, 1:], bias + key, atol=1e-10)

    # columns in another order, named by b_values
    order = rng.permutation(P - 1)
    shuffled = fa.excluded_logits(logits[:, order], KEYS, P, b_values=b_values[order])
    np.testing.assert_allclose(shuffled, (bias + other)[:, order], atol=1e-10)

    a, b = np.meshgrid(np.arange(P), b_values, indexing="ij")
    labels = (a + b) % P
    labels_with_nan = np.full((P, P), np.nan)
    labels_with_nan[:, 1:] = labels
    test = rng.random((P, P - 1)) < 0.5
    test_pairs = np.stack([a[test], b[test]], axis=1)
    expected = naive_cross_entropy((bias + key)[test], labels[test])
    assert fa.restricted_loss(logits, labels, KEYS, P, examples=test) == pytest.approx(expected, rel=1e-10)
    assert fa.restricted_loss(with_nan, labels_with_nan, KEYS, P, examples=test_pairs) == pytest.approx(
        expected, rel=1e-10)
    assert fa.excluded_loss(with_nan, labels_with_nan, KEYS, P) == pytest.approx(
        naive_cross_entropy((bias + other).reshape(-1, classes), labels.ravel()), rel=1e-10)


def test_subtraction_uses_the_a_minus_b_directions():
    rng = np.random.default_rng(3)
    bias = rng.standard_normal(P)[None, None, :]
    key = key_terms(P, P, KEYS, rng, sign=-1)
    other = key_terms(P, P, KEYS, rng, sign=+1)  # a + b directions at the key frequencies: not the circuit
    logits = bias + key + other
    np.testing.assert_allclose(fa.restricted_logits(logits, KEYS, P, task="a-b"), bias + key, atol=1e-10)
    np.testing.assert_allclose(fa.excluded_logits(logits, KEYS, P, task="a-b"), bias + other, atol=1e-10)
    with pytest.raises(ValueError, match="discrete logarithm"):
        fa.restricted_logits(logits, KEYS, P, task="a*b")


def test_logit_spectrum_finds_the_key_frequencies_with_their_power():
    p, classes = P, P
    a, b, c = grid_axes(p, classes)
    amplitude = {3: 2.0, 8: 1.0, 10: 1.5}
    logits = sum(amp * wave(k, a + b - c, p) for k, amp in amplitude.items())
    logits = logits + 0.7 * wave(4, a, p)  # depends on a alone: not in the (a + b) spectrum
    spec = fa.logit_spectrum(logits, p)
    for k, amp in amplitude.items():  # sum over c of amp^2 |cos(w_k(a+b-c))|^2 = amp^2 p * p^2 / 2
        assert spec.power[k] == pytest.approx(amp ** 2 * p * p * p / 2, rel=1e-10)
    assert fa.key_frequencies(spec).freqs.tolist() == [3, 8, 10]
    partial = fa.logit_spectrum(logits[:, 1:], p)  # b = 1..p-1: each a + b residue p - 1 times
    for k, amp in amplitude.items():
        assert partial.power[k] == pytest.approx(amp ** 2 * p * p * (p - 1) / 2, rel=1e-10)


def test_logit_functions_reject_bad_shapes_and_arguments():
    logits = np.zeros((P, P, P))
    labels = np.zeros((P, P), dtype=int)
    with pytest.raises(ValueError, match=r"must be \[n_a, n_b, classes\]"):
        fa.restricted_logits(np.zeros((P * P, P)), KEYS, P)
    with pytest.raises(ValueError, match="labels has shape"):
        fa.restricted_loss(logits, labels[:, :-1], KEYS, P)
    with pytest.raises(ValueError, match="key frequency 12 is out of range"):
        fa.excluded_loss(logits, labels, [2, 12], P)
    with pytest.raises(ValueError, match="key frequency 0 is out of range"):
        fa.excluded_loss(logits, labels, [0], P)
    with pytest.raises(ValueError, match="repeated"):
        fa.restricted_logits(logits, [2, 2], P)
    with pytest.raises(ValueError, match="the b axis has 21 entries"):
        fa.full_loss(logits[:, :-2], labels[:, :-2], P)
    with pytest.raises(ValueError, match="b_values has shape"):
        fa.full_loss(logits[:, :-2], labels[:, :-2], P, b_values=np.arange(P))
    partly = logits.copy()
    partly[3, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"\(a=3, b=4\) is NaN in some entries only"):
        fa.full_loss(partly, labels, P)
    with pytest.raises(ValueError, match="examples mask has shape"):
        fa.full_loss(logits, labels, P, examples=np.ones((P, P - 1), dtype=bool))
    with pytest.raises(ValueError, match=r"example \(a=1, b=0\) is not on the grid"):
        fa.full_loss(logits[:, 1:], labels[:, 1:], P, examples=np.array([[1, 0]]))
    missing = logits.copy()
    missing[:, 0] = np.nan
    with pytest.raises(ValueError, match=r"\(a=0, b=0\), whose logits are missing"):
        fa.full_loss(missing, labels, P, examples=np.ones((P, P), dtype=bool))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 23\)"):
        fa.full_loss(logits, labels + P, P)
    with pytest.raises(ValueError, match="boolean mask"):
        fa.full_loss(logits, labels, P, examples=np.ones((P, P)))


# ----------------------------------------------------------------------------------------------------
# neurons


def known_neurons(p, b_values, rng):
    """[p, len(b_values), 5] activations with known frequency content (see the test for each neuron)."""
    a, b = np.meshgrid(np.arange(p), b_values, indexing="ij")
    return np.stack([
        1.5 + 2.0 * wave(3, a + b, p) + 0.5 * wave(3, a, p),  # frequency 3: a+b and a terms
        wave(7, a - b, p, np.sin) + 0.3 * wave(7, b, p, np.sin),  # frequency 7: a-b and b terms
        rng.standard_normal(a.shape),  # no structure
        np.full(a.shape, 0.1),  # constant: no variance (0.1 is not exact in binary, the centring rounds)
        wave(10, a, p) * wave(10, b, p) + 0.05 * rng.standard_normal(a.shape),  # = (cos w(a+b) + cos w(a-b)) / 2
    ], axis=2)


def test_neuron_spectrum_on_the_full_grid():
    p = P
    acts = known_neurons(p, np.arange(p), np.random.default_rng(4))
    ns = fa.neuron_spectrum(acts, p)
    half = p * p / 2  # squared norm of cos(w_k x) over the p^2 cells, for any of a, b, a+b, a-b
    terms = {name: i for i, name in enumerate(fa.NEURON_TERMS)}
    np.testing.assert_allclose(ns.term_power[0, 3], [0.25 * half, 0, 4 * half, 0], atol=1e-9)
    np.testing.assert_allclose(ns.term_power[1, 7], [0, 0.09 * half, 0, half], atol=1e-9)
    assert ns.term_power[4, 10, terms["a+b"]] == pytest.approx(half / 4, rel=0.05)
    assert ns.term_power[4, 10, terms["a-b"]] == pytest.approx(half / 4, rel=0.05)
    np.testing.assert_allclose(ns.neuron_fraction[[0, 1]], 1.0, atol=1e-12)
    assert ns.neuron_freq.tolist()[:2] == [3, 7] and ns.neuron_freq[3] == 0 and ns.neuron_freq[4] == 10
    assert ns.neuron_fraction[2] < 0.1 and ns.neuron_fraction[4] > 0.95
    assert ns.clusters == {3: 1, 7: 1, 10: 1}
    assert ns.key_freqs.tolist() == [3, 7, 10]
    np.testing.assert_allclose(ns.variance[3], 0.0, atol=1e-20)
    assert ns.spectrum.power[3] == pytest.approx(ns.term_power[:, 3].sum())


@pytest.mark.parametrize("p", [11, 10])
def test_neuron_power_2d_matches_fft2(p):
    x = np.random.default_rng(p).standard_normal((p, p, 3))
    ns = fa.neuron_spectrum(x, p)
    centred = x - x.mean(axis=(0, 1))
    power = (np.abs(np.fft.fft2(centred, axes=(0, 1))) ** 2).sum(axis=2) / (p * p)  # [p, p] by signed freq
    folded = np.zeros((p // 2 + 1, p // 2 + 1))
    for i in range(p):
        for j in range(p):
            folded[min(i, p - i), min(j, p - j)] += power[i, j]
    np.testing.assert_allclose(ns.power_2d, folded, rtol=1e-9, atol=1e-12)
    # the four kinds of terms of each frequency are its 3x3 block minus the constant
    block = folded[1:, 0] + folded[0, 1:] + np.diag(folded)[1:]
    np.testing.assert_allclose(ns.term_power.sum(axis=(0, 2))[1:], block, rtol=1e-9)


def test_neuron_spectrum_without_the_b0_row():
    p = P
    b_values = np.arange(1, p)
    acts = known_neurons(p, b_values, np.random.default_rng(5))
    ns = fa.neuron_spectrum(acts, p)  # [p, p - 1, neurons]: least-squares fits over the observed cells
    assert ns.power_2d is None
    observed = p * (p - 1) / 2  # squared norm of cos(w_k x) over the p (p - 1) cells, x = a, b, a+b or a-b
    np.testing.assert_allclose(ns.term_power[0, 3], [0.25 * observed, 0, 4 * observed, 0], rtol=1e-9, atol=1e-9)
    # sin(w b) is 0 at b = 0, so dropping that row leaves its squared norm at p * p / 2
    np.testing.assert_allclose(ns.term_power[1, 7], [0, 0.09 * p * p / 2, 0, observed], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ns.neuron_fraction[[0, 1]], 1.0, atol=1e-9)
    assert ns.clusters == {3: 1, 7: 1, 10: 1}
    with_nan = np.full((p, p, acts.shape[2]), np.nan)
    with_nan[:, 1:] = acts
    np.testing.assert_allclose(fa.neuron_spectrum(with_nan, p).fraction, ns.fraction, atol=1e-12)


def test_a_square_subset_of_the_grid_is_fitted_not_transformed():
    p = P
    acts = known_neurons(p, np.arange(p), np.random.default_rng(11))
    keep = np.arange(1, p)  # a = 1..p-1 and b = 1..p-1: square, but not every pair
    ns = fa.neuron_spectrum(acts[1:, 1:], p, a_values=keep, b_values=keep)
    assert ns.power_2d is None
    np.testing.assert_allclose(ns.neuron_fraction[[0, 1]], 1.0, atol=1e-9)
    assert ns.clusters == {3: 1, 7: 1, 10: 1}


def test_the_fitted_and_the_transformed_neuron_spectra_agree_on_the_full_grid():
    p = 13
    x = np.random.default_rng(6).standard_normal((p, p, 4))
    complete = fa.neuron_spectrum(x, p)
    fitted = fa._neuron_spectrum_fit(fa._grid(x, p, None, None, "acts", "neurons"), p, 0.85)
    np.testing.assert_allclose(fitted.term_power, complete.term_power, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.fraction, complete.fraction, rtol=1e-9, atol=1e-12)


def test_neuron_spectrum_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"acts must be \[n_a, n_b, neurons\]"):
        fa.neuron_spectrum(np.zeros((P * P, 8)), P)
    with pytest.raises(ValueError, match="threshold must be in"):
        fa.neuron_spectrum(np.zeros((P, P, 2)), P, threshold=0)
    with pytest.raises(ValueError, match="the a axis has 22 entries"):
        fa.neuron_spectrum(np.zeros((P - 1, P, 2)), P)


# ----------------------------------------------------------------------------------------------------
# Gini, grids, operands


def test_gini():
    assert fa.gini(np.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert fa.gini(np.eye(1, 8)[0]) == pytest.approx(7 / 8)
    x = np.random.default_rng(7).random(30)
    double_sum = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) * x.sum())
    assert fa.gini(x) == pytest.approx(double_sum, rel=1e-12)
    spec = fa.embedding_spectrum(np.random.default_rng(8).standard_normal((11, 5)), 11)
    assert fa.gini(spec) == pytest.approx(fa.gini(spec.norm[1:]))
    with pytest.raises(ValueError, match="non-negative"):
        fa.gini(np.array([1.0, -1.0]))


def test_to_grid_and_operands():
    a, b = np.array([0, 2, 4]), np.array([1, 3, 1])
    grid = fa.to_grid(a, b, np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), 5)
    assert grid.shape == (5, 5, 2)
    assert grid[2, 3].tolist() == [3.0, 4.0] and np.isnan(grid[0, 0]).all()
    assert np.isfinite(grid).all(axis=2).sum() == 3
    with pytest.raises(ValueError, match="occurs twice"):
        fa.to_grid(np.array([1, 1]), np.array([2, 2]), np.zeros(2), 5)
    with pytest.raises(ValueError, match="one entry per example"):
        fa.to_grid(a, b, np.zeros(4), 5)
    with pytest.raises(ValueError, match=r"b must be integers in \[0, 5\)"):
        fa.to_grid(a, b + 4, np.zeros(3), 5)

    ids = np.array([[3, 4, 97, 98], [5, 6, 97, 98]])
    assert [x.tolist() for x in fa.operands(ids, "sequence")] == [[3, 5], [4, 6]]
    assert [x.tolist() for x in fa.operands(ids[:, [0, 2, 1, 3]], "interleaved")] == [[3, 5], [4, 6]]
    assert [x.tolist() for x in fa.operands(ids[:, :2], "pair")] == [[3, 5], [4, 6]]
    with pytest.raises(ValueError, match=r"token ids \[n, 4\]"):
        fa.operands(ids[:, :3], "sequence")
    with pytest.raises(ValueError, match="layout must be one of"):
        fa.operands(ids, "tree")


# ----------------------------------------------------------------------------------------------------
# figures


def assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plots_write_png_files(tmp_path):
    spec = fa.embedding_spectrum(known_embedding(23, 8, [3, 7], [1.0, 0.5], 1e-2, np.random.default_rng(9)), 23)
    fa.plot_spectrum(spec, tmp_path / "spectrum.png")
    assert_png(tmp_path / "spectrum.png")
    neurons = fa.neuron_spectrum(known_neurons(P, np.arange(P), np.random.default_rng(10)), P)
    fa.plot_spectrum(neurons, tmp_path / "sub" / "neurons.png", title="neurons", key_freqs=neurons.key_freqs)
    assert_png(tmp_path / "sub" / "neurons.png")

    steps = [0, 100, 200, 400, 800]
    measures = {"train loss": [4.6, 0.1, 1e-3, 1e-4, 1e-5], "test loss": [4.6, 5.0, 4.0, 0.5, 1e-3],
                "restricted loss": [4.6, 4.5, 2.0, 0.1, 1e-4], "excluded loss": [4.6, 0.5, 2.0, 5.0, 6.0]}
    fa.plot_progress_measures(steps, measures, tmp_path / "progress.png", test_accuracy=[0, 0, 0.1, 0.9, 1.0],
                              title="a+b mod 23")
    assert_png(tmp_path / "progress.png")
    with pytest.raises(ValueError, match=r"measures\['test loss'\] has shape \(4,\) but steps has \(5,\)"):
        fa.plot_progress_measures(steps, {"test loss": [1, 2, 3, 4]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="test_accuracy has shape"):
        fa.plot_progress_measures(steps, measures, tmp_path / "x.png", test_accuracy=[1.0])
    with pytest.raises(ValueError, match="measures is empty"):
        fa.plot_progress_measures(steps, {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no step > 0"):
        fa.plot_progress_measures([0], {"loss": [1.0]}, tmp_path / "x.png")
