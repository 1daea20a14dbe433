"""Feature sets and the ``.npz`` reference files that cache them.

A reference file holds what the metrics need of the real images, so they are read and run
through the network once:

======================  =========================================================================
``mu``, ``sigma``       mean (D,) and covariance (D, D) of the pool features, float64 (FID)
``mu_s``, ``sigma_s``   the same for the spatial features (sFID), when the extractor has them
``features``            the pool features themselves, float32 (N, D) (KID, precision/recall, per class)
``labels``              int64 (N,) class of each row, with ``class_names`` (unicode), when labelled
``extractor``           the extractor's name (weights included): a file is only used with the same one
======================  =========================================================================

The ``mu``/``sigma``/``mu_s``/``sigma_s`` names are those of guided-diffusion's reference batches,
which are read directly too: their ``arr_0`` images (NHWC uint8) are evaluated, and their stored
statistics (computed by the TF Inception graph) are used for FID/sFID when the extractor is the
Inception network. Nothing is ever unpickled.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError, UserError
from .fid import statistics

PathLike = Union[str, os.PathLike]
FORMAT_VERSION = 1
# guided-diffusion reference batches carry no extractor name: their statistics are TF Inception's,
# so they are used only with the published FID Inception weights
INCEPTION = "inception-v3-fid"


@dataclass
class FeatureSet:
    """Features of one image set for one extractor; ``stats`` may hold precomputed Gaussians.

    ``pool`` / ``spatial`` / ``logits`` are (N, ...) float32 arrays or None when not computed;
    ``stats`` maps ``"pool"`` / ``"spatial"`` to (mu, sigma) read from a file.
    """

    extractor: str
    count: int
    source: str = ""
    pool: Optional[np.ndarray] = None
    spatial: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    class_names: List[str] = field(default_factory=list)
    stats: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def gaussian(self, kind: str = "pool") -> Tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of ``kind`` features: stored ones when the file had them, else computed (and kept)."""
        if kind not in self.stats:
            feats = getattr(self, kind)
            if feats is None:
                raise UserError(f"{self.source or 'the image set'} has no {kind} features")
            if len(feats) < 2:
                raise UserError(f"{self.source or 'the image set'} has {len(feats)} image(s); FID needs at least 2")
            self.stats[kind] = statistics(feats)
        return self.stats[kind]

    def has(self, kind: str) -> bool:
        return getattr(self, kind) is not None or kind in self.stats

    def of_class(self, name: str) -> "FeatureSet":
        """The rows of class ``name`` (pool features only)."""
        keep = self.labels == self.class_names.index(name)
        return FeatureSet(self.extractor, int(keep.sum()), f"{self.source} [{name}]", pool=self.pool[keep])


def is_reference_file(path: PathLike) -> bool:
    """True for an ``.npz`` file that holds statistics or features rather than only images."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "mu" in data.files or "features" in data.files
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


def read_reference(path: PathLike, extractor: str) -> Tuple[FeatureSet, bool]:
    """Read a reference ``.npz``: (feature set, whether its ``arr_0`` images must still be evaluated).

    A difforge reference made with another extractor is refused. A guided-diffusion batch gives
    its stored statistics only to the Inception extractor, and always asks for its images to be
    evaluated when pool features are needed (KID, precision/recall).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "arr_0"}
            has_images = "arr_0" in data.files
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file ({e})") from e
    made_by = str(arrays["extractor"]) if "extractor" in arrays else None
    if made_by is not None and made_by != extractor:
        raise UserError(
            f"reference {path} was computed with the feature extractor {made_by}, but this run uses {extractor}; "
            f"use the same --features, or rebuild the reference from the images (--save-ref)"
        )
    stats_ok = made_by is not None or extractor == INCEPTION
    fs = FeatureSet(extractor, 0, str(path))
    for kind, (m, s) in {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}.items():
        if stats_ok and m in arrays and s in arrays:
            mu, sigma = arrays[m].astype(np.float64), arrays[s].astype(np.float64)
            if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
                raise DataError(f"{path}: {m} {mu.shape} and {s} {sigma.shape} are not a mean and its covariance")
            fs.stats[kind] = (mu, sigma)
    if "features" in arrays:
        fs.pool = arrays["features"].astype(np.float32)
        fs.count = len(fs.pool)
    if "labels" in arrays and "class_names" in arrays and fs.pool is not None:
        fs.labels = arrays["labels"].astype(np.int64)
        fs.class_names = [str(c) for c in arrays["class_names"]]
    if not fs.stats and fs.pool is None and not has_images:
        raise DataError(f"{path} holds neither images (arr_0) nor statistics (mu, sigma) nor features")
    return fs, has_images and fs.pool is None


def save_reference(path: PathLike, fs: FeatureSet) -> Path:
    """Write ``fs`` as a reference ``.npz`` (layout in the module docstring), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"--save-ref {path}: the reference file must end in .npz")
    arrays = {"difforge_reference": np.array(FORMAT_VERSION), "extractor": np.array(fs.extractor)}
    if fs.has("pool"):
        arrays["mu"], arrays["sigma"] = fs.gaussian("pool")
    if fs.has("spatial"):
        arrays["mu_s"], arrays["sigma_s"] = fs.gaussian("spatial")
    if fs.pool is not None:
        arrays["features"] = fs.pool.astype(np.float32)
        if fs.labels is not None and fs.class_names:
            arrays["labels"] = fs.labels.astype(np.int64)
            arrays["class_names"] = np.array(fs.class_names, dtype=str)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def merge(stored: FeatureSet, computed: FeatureSet) -> FeatureSet:
    """Features computed from a file's images, with the file's stored statistics taking precedence."""
    return replace(computed, stats={**computed.stats, **stored.stats}, source=stored.source)
