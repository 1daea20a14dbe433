"""Evaluation: FID, sFID, KID, Inception Score and precision/recall of generated images.

- ``inception.py``: the FID InceptionV3 (pytorch-fid's weight file, loaded from disk only).
- ``features.py``: extractors (that network, or any TorchScript model) and batched extraction.
- ``fid.py``, ``kid.py``, ``inception_score.py``, ``precision_recall.py``: the metrics, in numpy float64.
- ``sources.py``: image folders / ``.npz`` batches / arrays as uint8 batches.
- ``reference.py``: cached reference statistics (``.npz``), guided-diffusion reference batches.
- ``evaluation.py``: :func:`evaluate`, the one call a trainer needs.
"""

from .evaluation import METRICS, compute_metrics, evaluate, parse_metrics, prepare
from .features import extract, load_extractor
from .fid import frechet_distance, statistics
from .inception_score import inception_score
from .kid import kernel_inception_distance
from .precision_recall import precision_recall
from .reference import FeatureSet, read_reference, save_reference

__all__ = [
    "METRICS",
    "FeatureSet",
    "compute_metrics",
    "evaluate",
    "extract",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_extractor",
    "parse_metrics",
    "precision_recall",
    "prepare",
    "read_reference",
    "save_reference",
    "statistics",
]
