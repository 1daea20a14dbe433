"""Generated images against real ones, from files: what ``difforge eval`` computes.

Each side is an image folder, an ``.npz`` of uint8 NHWC images, or (real side) a reference
``.npz``; the real side's features can be saved as a reference for the next comparison. Per-class
FID/KID when both sides carry the same class names. See :mod:`difforge.metrics.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from ..errors import UserError
from .evaluation import compute_metrics, needs, open_source, parse_metrics, prepare

MINIMUM = {"batch_size": 1, "kid_subsets": 1, "kid_subset_size": 2, "is_splits": 1, "pr_k": 1}


def compare(real, fake=None, *, metrics: Optional[str] = None, features: str = "inception", inception_weights=None,
            download: bool = False, image_size: Optional[int] = None, save_ref=None, device: str = "auto",
            precision: str = "fp32", batch_size: int = 50, kid_subsets: int = 100, kid_subset_size: int = 1000,
            is_splits: int = 10, pr_k: int = 3, seed: int = 0, per_class: bool = True, progress: bool = True,
            on_reference: Optional[Callable[[int], None]] = None) -> Optional[dict]:
    """The metrics of ``fake`` against ``real`` (a flat dict, :func:`evaluation.compute_metrics`'s
    keys plus ``real`` and ``fake``); None when there is no ``fake``.

    ``metrics``: comma-separated names (default: every metric ``features`` supports). Real folder
    images are loaded at ``image_size`` (default: the generated images' size). ``save_ref``: write
    the real side's pool features and every Gaussian the extractor gives to this ``.npz``, then
    call ``on_reference(number of images)``.
    """
    from ..runtime import resolve_device, set_threads
    from .features import load_extractor
    from .reference import save_reference

    if fake is None and save_ref is None:
        raise UserError("give --fake (the generated images), or --save-ref OUT.npz to only build a reference")
    values = {"batch_size": batch_size, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "is_splits": is_splits, "pr_k": pr_k}
    for name, low in MINIMUM.items():
        if values[name] < low:
            raise UserError(f"--{name.replace('_', '-')} must be at least {low}, got {values[name]}")
    set_threads()
    extractor = load_extractor(features, inception_weights=inception_weights, download=download,
                               device=resolve_device(device), precision=precision)
    names = parse_metrics(metrics, extractor) if fake else []

    fake_src = open_source(fake, image_size) if fake else None
    real_src = open_source(real, image_size or getattr(fake_src, "image_size", None))
    real_classes, fake_classes = class_names_of(real_src), class_names_of(fake_src)
    per_class = per_class and bool(real_classes) and sorted(real_classes) == sorted(fake_classes)

    need_real = needs(names, "real", per_class)
    if save_ref:  # a complete reference: pool features and every Gaussian the extractor can give
        need_real = {**need_real, "pool": "features", **({"spatial": "stats"} if "spatial" in extractor.outputs else {})}
    real_set = prepare(real_src, extractor, need_real, batch_size=batch_size, progress=progress, desc="real")
    if save_ref:
        save_reference(save_ref, real_set)
        if on_reference is not None:
            on_reference(real_set.count)
    if fake_src is None:
        return None
    fake_set = prepare(fake_src, extractor, needs(names, "fake", per_class), batch_size=batch_size, progress=progress, desc="fake")
    result = compute_metrics(real_set, fake_set, names, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                             is_splits=is_splits, pr_k=pr_k, seed=seed, per_class=per_class)
    return {"real": str(real), "fake": str(fake), **result}


def class_names_of(src) -> List[str]:
    """Class names of a source; of a reference file, read without loading its other arrays."""
    import numpy as np

    if isinstance(src, Path):
        with np.load(src, allow_pickle=False) as data:
            return [str(c) for c in data["class_names"]] if "class_names" in data.files and "labels" in data.files else []
    return list(getattr(src, "class_names", None) or [])
