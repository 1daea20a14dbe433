"""KID against a brute-force double loop of the unbiased MMD^2 estimator."""

import numpy as np
import pytest

from difforge.metrics.kid import kernel_inception_distance, mmd2_unbiased


def _brute_mmd2(x, y):
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_double_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5))
    y = rng.standard_normal((12, 5)) * 1.5 + 0.4
    assert mmd2_unbiased(x, y) == pytest.approx(_brute_mmd2(x, y), rel=1e-10)


def test_kid_over_full_sets_is_the_brute_force_value_with_zero_spread():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 4))
    y = rng.standard_normal((15, 4)) + 1.0
    # subset size capped at the smaller set (10): real subsets are permutations of x
    mean, std = kernel_inception_distance(x, y[:10], subsets=5, subset_size=1000)
    assert mean == pytest.approx(_brute_mmd2(x, y[:10]), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_are_reproducible_and_separate_distributions():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    far = rng.standard_normal((300, 8)) + 1.0
    same = kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert same == kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=3)
    assert abs(same[0]) < 3 * same[1] + 1e-3  # unbiased: centred on 0 for one distribution
    assert kernel_inception_distance(a, far, subsets=20, subset_size=100)[0] > 10 * abs(same[0]) + 0.01


def test_kid_needs_two_samples():
    with pytest.raises(ValueError):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))
