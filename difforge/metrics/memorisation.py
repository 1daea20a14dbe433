"""Memorisation: how many samples sit closer to a training image than training images sit to each other.

A small training set is easy to copy. For every sample take the distance d(x) to its nearest
training image; for every training image the distance to its nearest *other* training image
(leave one out). A sample is counted as memorised when d(x) is below the ``quantile`` (default
1%) of those training-to-training distances: it is nearer to a training image than almost any two
distinct training images are to each other. Exact copies give 1.0; fresh noise, or novel images of
the same distribution, give about 0 (real held-out images score about ``quantile``: the floor).

Works on any vectors: flattened pixels (default) or features of an extractor, passed in as arrays.
Distances are Euclidean, computed in float64 blocks so memory stays bounded.
"""

from __future__ import annotations

from typing import Dict

import numpy as np


def _as_vectors(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise ValueError(f"expected a batch of images or feature vectors, got shape {arr.shape}")
    return arr.reshape(len(arr), -1).astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)


def nearest_distances(queries: np.ndarray, refs: np.ndarray, exclude_self: bool = False, block: int = 256) -> np.ndarray:
    """Euclidean distance of each query row to its nearest reference row (``exclude_self``: queries are refs,
    and a row's own zero distance does not count)."""
    rn = (refs**2).sum(1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        d2 = (q**2).sum(1)[:, None] + rn[None, :] - 2.0 * q @ refs.T
        if exclude_self:
            d2[np.arange(len(q)), np.arange(start, start + len(q))] = np.inf
        out[start : start + len(q)] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def memorisation(samples, train, quantile: float = 0.01) -> Dict[str, float]:
    """``fraction`` of samples nearer to a training image than the ``quantile`` of training-to-training
    nearest distances, with that ``threshold`` and the samples' median nearest distance."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    s, t = _as_vectors(samples), _as_vectors(train)
    if len(t) < 2:
        raise ValueError("memorisation needs at least two training images")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"samples have {s.shape[1]} values each, training images {t.shape[1]}: give them at the same size")
    threshold = float(np.quantile(nearest_distances(t, t, exclude_self=True), quantile))
    d = nearest_distances(s, t)
    return {"fraction": float((d < threshold).mean()), "threshold": threshold, "median_nearest": float(np.median(d))}


def memorisation_of_folders(samples_dir, train_dir, image_size=None, quantile: float = 0.01, extractor=None,
                            progress: bool = False) -> Dict[str, float]:
    """:func:`memorisation` in pixel space of two image folders (or .npz batches), the training side
    read at the samples' size; the images are compared in one channel layout (grey -> RGB).

    With ``extractor`` (a :mod:`~difforge.metrics.features` extractor, e.g. the one FID used) the
    same measure is also taken in its feature space, as ``features``: pixel distance catches
    copies, feature distance also catches near-copies shifted by a few pixels or recoloured,
    which pixel distance does not see as close.
    """
    from ..errors import UserError
    from .evaluation import open_source
    from .sources import ImageSource

    fake, train = open_source(samples_dir, image_size, "samples"), open_source(train_dir, image_size, "training images")
    if not (isinstance(fake, ImageSource) and isinstance(train, ImageSource)):
        raise UserError("memorisation compares images: give image folders or .npz sample batches, not reference statistics")
    if train.image_size is not None and fake.image_size is not None and train.image_size != fake.image_size:
        train = open_source(train_dir, fake.image_size, "training images")

    def load(src):
        arr = np.concatenate(list(src.batches(256)))
        return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr

    fake_px, train_px = load(fake), load(train)
    result = {**memorisation(fake_px, train_px, quantile), "num_samples": fake.count, "num_train": train.count}
    if extractor is not None:
        from .features import extract

        def feats(arr, desc):
            return extract(extractor, (arr[i : i + 64] for i in range(0, len(arr), 64)), total=len(arr), desc=desc,
                           progress=progress)["pool"]

        result["features"] = {**memorisation(feats(fake_px, "sample features"), feats(train_px, "training features"), quantile),
                              "extractor": extractor.name}
    return result


__all__ = ["memorisation", "memorisation_of_folders", "nearest_distances"]
