"""Fréchet Inception Distance (Heusel et al. 2017) and its spatial variant sFID (Nash et al. 2021).

Both fit a Gaussian to each feature set and measure

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr( (S_1 S_2)^(1/2) )

FID on the 2048-d pool features, sFID on the 2023-d spatial features (see ``inception.py``).
Everything is float64; the matrix square root is scipy's, with the usual fallback for a
near-singular product (fewer samples than dimensions): add ``eps`` to both diagonals and retry.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np


def _scipy_linalg():
    try:
        from scipy import linalg
    except ImportError as e:  # pragma: no cover - scipy is a dependency of evaluation
        from ..errors import UserError

        raise UserError("evaluation needs scipy: pip install scipy") from e
    return linalg


def statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64. Needs N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"statistics need (N >= 2, D) features, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the formula in the module docstring).

    If ``sqrtm(sigma1 @ sigma2)`` is not finite, ``eps * I`` is added to both covariances. A square
    root whose diagonal keeps an imaginary part above 1e-3 means the statistics are broken
    (NaN features, wrong pairing) and raises :class:`FloatingPointError`.
    """
    linalg = _scipy_linalg()
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's "matrix is singular" warning: handled below
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FloatingPointError(
                f"FID: the covariance product has a square root with imaginary part {np.abs(covmean.imag).max():.3g}; "
                f"the features hold NaN/inf or the statistics are corrupt"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*statistics(real), *statistics(fake))
