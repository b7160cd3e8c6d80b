"""The statistics of experiments/seeded_table1.py (the seeded Table 1's tests of the paper's orderings)
against SciPy's independent implementations: midranks against scipy.stats.rankdata, the exact
permutation p-value of the rank sum against scipy.stats.permutation_test enumerating every relabelling
(and, without ties, against mannwhitneyu's exact distribution)."""

import itertools
import math
import os
import random
import sys

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments"))
import seeded_table1 as st  # noqa: E402


def scipy_rank_sum_p(x, y):
    """P(|rank sum of x - its mean| >= observed) over all relabellings, by SciPy."""
    n1, n = len(x), len(x) + len(y)

    def statistic(a, b):
        r = scipy_stats.rankdata(np.concatenate([a, b]))
        return abs(r[: len(a)].sum() - n1 * (n + 1) / 2)

    result = scipy_stats.permutation_test((np.array(x), np.array(y)), statistic, permutation_type="independent",
                                          n_resamples=np.inf, alternative="greater", vectorized=False)
    return result.pvalue


def samples(rng, n, ties, censored):
    pool = [rng.choice([900, 1200, 1500]) if ties else rng.randrange(500, 6000) for _ in range(n)]
    if censored:
        pool[rng.randrange(n)] = math.inf
    return pool


def test_midranks_match_scipy():
    rng = random.Random(1)
    for _ in range(50):
        values = samples(rng, rng.randrange(1, 11), ties=rng.random() < 0.5, censored=rng.random() < 0.5)
        assert st.ranks(values) == pytest.approx(list(scipy_stats.rankdata(values)))


@pytest.mark.parametrize("ties,censored", [(False, False), (True, False), (False, True), (True, True)])
def test_exact_rank_sum_p_matches_scipy_permutation_test(ties, censored):
    rng = random.Random(2 + 2 * ties + censored)
    for n1, n2 in [(5, 5), (3, 3), (5, 4), (2, 5)]:
        x, y = samples(rng, n1, ties, censored), samples(rng, n2, ties, False)
        assert st.mann_whitney_exact(x, y) == pytest.approx(scipy_rank_sum_p(x, y), rel=1e-12)


def test_without_ties_it_is_mann_whitney_exact():
    rng = random.Random(7)
    for n1, n2 in [(5, 5), (4, 6), (3, 5)]:
        values = rng.sample(range(100, 10000), n1 + n2)
        x, y = values[:n1], values[n1:]
        reference = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue
        assert st.mann_whitney_exact(x, y) == pytest.approx(reference, rel=1e-12)


def test_complete_separation_of_five_seeds_gives_the_smallest_p():
    # All of x before all of y: 2 of the C(10, 5) = 252 relabellings are as extreme (the two tails).
    assert st.mann_whitney_exact([1, 2, 3, 4, 5], [6, 7, 8, 9, math.inf]) == pytest.approx(2 / 252)
    assert math.comb(10, 5) == len(list(itertools.combinations(range(10), 5)))


def test_bootstrap_interval_of_constant_samples_is_their_difference():
    assert st.bootstrap_difference([900] * 5, [1500] * 5, resamples=200) == (-600, -600)
    low, high = st.bootstrap_difference([math.inf] * 5, [1500] * 5, resamples=200)
    assert low == high == math.inf
