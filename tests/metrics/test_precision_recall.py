"""Improved precision/recall on toy manifolds and against a brute-force version."""

import numpy as np
import pytest

from difforge.metrics.precision_recall import manifold_radii, precision_recall


def _brute(real, fake, k=3):
    def radii(x):
        return np.array([np.sort([np.linalg.norm(a - b) for b in x])[k] for a in x])

    def cover(points, centers, r):
        return np.mean([any(np.linalg.norm(p - c) <= rc for c, rc in zip(centers, r)) for p in points])

    return cover(fake, real, radii(real)), cover(real, fake, radii(fake))


def test_identical_sets():
    x = np.random.default_rng(0).standard_normal((60, 5))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)


def test_disjoint_far_apart_sets():
    rng = np.random.default_rng(1)
    assert precision_recall(rng.standard_normal((50, 4)), rng.standard_normal((50, 4)) + 100.0) == (0.0, 0.0)


def test_fake_covering_a_part_of_the_real_set():
    rng = np.random.default_rng(2)
    real = np.concatenate([rng.standard_normal((80, 3)), rng.standard_normal((80, 3)) + 30.0])
    fake = real[:80]  # only the first mode: realistic but not diverse
    p, r = precision_recall(real, fake)
    assert p == 1.0 and 0.4 < r < 0.6


def test_blocks_match_brute_force():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((40, 6)), rng.standard_normal((35, 6)) * 1.3 + 0.5
    assert precision_recall(real, fake, block=7) == pytest.approx(_brute(real, fake))


def test_radius_is_kth_neighbour_excluding_self():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert manifold_radii(x, k=3).tolist() == [6.0, 5.0, 3.0, 5.0, 9.0]
    with pytest.raises(ValueError):
        manifold_radii(x[:3], k=3)
