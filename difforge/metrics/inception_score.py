"""Inception Score (Salimans et al. 2016): exp( E_x KL( p(y|x) || p(y) ) ).

p(y|x) is the softmax of the classifier's logits (for Inception: the 1008 TF classes, see
``inception.py``), p(y) its mean over the split. The images are cut into ``splits`` consecutive
parts (10, as the original code); the score is the mean over parts, with their standard deviation.
It is 1 when every image gets the same prediction and k when confident predictions are spread
evenly over k classes.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10) -> Tuple[float, float]:
    """(mean, std) over ``splits`` parts of (N, classes) logits; float64 throughout."""
    from scipy.special import log_softmax, rel_entr

    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"inception_score needs (N, classes) logits, got shape {z.shape}")
    p = np.exp(log_softmax(z, axis=1))
    scores = []
    for part in np.array_split(p, min(splits, len(p))):
        py = part.mean(axis=0, keepdims=True)
        kl = rel_entr(part, py).sum(axis=1).mean()  # rel_entr(0, q) = 0: confident rows are exact
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
