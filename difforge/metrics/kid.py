"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

The unbiased estimate of the squared maximum mean discrepancy between real features X and fake
features Y (m each) under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3:

    MMD^2 = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2

averaged over ``subsets`` random subsets of size ``subset_size`` drawn without replacement
(100 of 1000 by default, as the paper's code and torch-fidelity); KID is the mean, with the
standard deviation across subsets. Unlike FID it is unbiased, so it means something for small sets.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0, gamma: Optional[float] = None) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/d by default; (n, d), (m, d) -> (n, m)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased MMD^2 between equal-sized sets (the formula in the module docstring)."""
    m = len(x)
    if m < 2 or len(y) != m:
        raise ValueError(f"mmd2_unbiased needs two sets of the same size >= 2, got {len(x)} and {len(y)}")
    kxx = polynomial_kernel(x, x, **kernel)
    kyy = polynomial_kernel(y, y, **kernel)
    kxy = polynomial_kernel(x, y, **kernel)
    same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(same - 2.0 * kxy.sum() / (m * m))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0, **kernel
) -> Tuple[float, float]:
    """(mean, std) of :func:`mmd2_unbiased` over random subsets; the size is capped by the smaller set."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)], **kernel)
            for _ in range(subsets)
        ]
    )
    return float(values.mean()), float(values.std())
