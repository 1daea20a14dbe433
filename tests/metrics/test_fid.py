"""Fréchet distance against independent computations of tr((S1 S2)^(1/2))."""

import warnings

import numpy as np
import pytest
from scipy import linalg

from difforge.metrics import fid as fid_mod
from difforge.metrics.fid import fid_from_features, frechet_distance, statistics


def _direct(mu1, s1, mu2, s2):
    """The textbook formula with scipy's sqrtm and nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _symmetric(mu1, s1, mu2, s2):
    """tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))): eigh only, no sqrtm."""
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r @ s2 @ r
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.mark.parametrize("n,d", [(200, 16), (40, 16), (10, 24)])  # the last two: (near-)singular covariances
def test_matches_scipy_and_eigen_reference(n, d):
    rng = np.random.default_rng(n + d)
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.5 + 0.3
    mu1, s1 = statistics(a)
    mu2, s2 = statistics(b)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_direct(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)
    assert got == pytest.approx(_symmetric(mu1, s1, mu2, s2), rel=1e-5)
    assert got == pytest.approx(fid_from_features(a, b))


def test_near_duplicate_feature_column():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((100, 8))
    a[:, 1] = a[:, 0] + 1e-9 * rng.standard_normal(100)  # covariance rank 7 up to 1e-18
    b = rng.standard_normal((100, 8)) + 0.5
    args = (*statistics(a), *statistics(b))
    assert frechet_distance(*args) == pytest.approx(_symmetric(*args), rel=1e-6)


def test_identical_statistics_give_zero_and_shift_gives_squared_norm():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 6))
    mu, s = statistics(x)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    assert frechet_distance(mu, s, mu + 2.0, s) == pytest.approx(6 * 4.0, rel=1e-6)


def test_eps_fallback_when_sqrtm_is_not_finite(monkeypatch):
    calls = []
    real_sqrtm = linalg.sqrtm

    class FakeLinalg:
        @staticmethod
        def sqrtm(m):
            calls.append(m.copy())
            return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fid_mod, "_scipy_linalg", lambda: FakeLinalg)
    s = np.diag([1.0, 2.0, 3.0])
    got = frechet_distance(np.zeros(3), s, np.zeros(3), s, eps=1e-3)
    assert len(calls) == 2 and np.allclose(calls[1], (s + 1e-3 * np.eye(3)) @ (s + 1e-3 * np.eye(3)))
    assert got == pytest.approx(2 * 6.0 - 2 * np.sum(np.diag(s) + 1e-3), abs=1e-9)


def test_complex_square_root_is_refused(monkeypatch):
    class FakeLinalg:
        @staticmethod
        def sqrtm(m):
            return np.eye(len(m)) * (1 + 1j)

    monkeypatch.setattr(fid_mod, "_scipy_linalg", lambda: FakeLinalg)
    with pytest.raises(FloatingPointError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))


def test_mismatched_shapes_and_too_few_samples():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        statistics(np.zeros((1, 4)))
