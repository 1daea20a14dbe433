"""Where evaluated images come from: an image folder, an ``.npz`` sample batch, or an array in memory.

Every source yields uint8 (N, H, W, C) batches, so a 50k-image folder is never held in RAM at
once: files are decoded batch by batch by a small thread pool, one batch ahead of the network.
Folders follow ``data/folder.py``: class sub-folders (names become class names) or flat; each
image is center-cropped to a square and resized (antialiased bicubic) to ``image_size``.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import numpy as np

from ..errors import DataError

PathLike = Union[str, os.PathLike]


@dataclass
class ImageSource:
    """A set of images to extract features from; ``batches(n)`` yields uint8 (n, H, W, C) arrays."""

    name: str
    count: int
    batches: Callable[[int], Iterator[np.ndarray]]
    image_size: Optional[int] = None  # square side when known, used to match the other side
    labels: Optional[np.ndarray] = None
    class_names: List[str] = field(default_factory=list)


def array_source(images, labels=None, class_names=None, name: str = "images") -> ImageSource:
    """Wrap uint8 (N, H, W, C) images (numpy or torch), e.g. a trainer's samples."""
    arr = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    if arr.ndim != 4 or arr.dtype != np.uint8 or arr.shape[-1] not in (1, 3):
        raise DataError(f"{name} must be uint8 (N, H, W, C) with C 1 or 3, got {arr.dtype} {arr.shape}")
    if labels is not None:
        labels = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels, dtype=np.int64)
        if labels.shape != (len(arr),):
            raise DataError(f"{name}: got {len(arr)} images but labels of shape {labels.shape}")

    def batches(n: int):
        for i in range(0, len(arr), n):
            yield arr[i : i + n]

    size = arr.shape[1] if arr.shape[1] == arr.shape[2] else None
    return ImageSource(name, len(arr), batches, size, labels, list(class_names or []) if labels is not None else [])


def probe_size(path: PathLike) -> int:
    """The shorter side of one image file (the square that :func:`data.folder.load_image` crops)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return min(im.size)
    except Exception as e:
        raise DataError(f"cannot read image {path} ({type(e).__name__}); fix or delete it") from e


def folder_source(root: PathLike, image_size: Optional[int] = None, workers: Optional[int] = None) -> ImageSource:
    """Images of a folder (class sub-folders or flat), decoded lazily at ``image_size`` (default: the first image's shorter side)."""
    from ..data.folder import load_image, scan_folder

    index = scan_folder(root)
    masks = listed_masks(index.root)
    keep = [i for i, p in enumerate(index.paths) if not is_picture_about_samples(p, index.root) and Path(p).resolve() not in masks]
    paths = [index.paths[i] for i in keep]
    if not paths:
        raise DataError(f"{root} holds only grid / trajectory pictures or masks, no samples")
    size = int(image_size or probe_size(paths[0]))
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    skipped = len(index.paths) - len(paths)

    def decode(p: Path) -> np.ndarray:
        try:
            return load_image(p, size, 3)
        except Exception as e:
            raise DataError(f"cannot read image {p} ({type(e).__name__}: {str(e).strip()[:120]}); fix or delete it") from e

    def batches(n: int):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = [pool.submit(decode, p) for p in paths[:n]]
            for start in range(0, len(paths), n):
                current = pending
                pending = [pool.submit(decode, p) for p in paths[start + n : start + 2 * n]]
                yield np.stack([f.result() for f in current])

    labels = np.asarray(index.labels, dtype=np.int64)[keep] if index.conditional else None
    dropped = sum(1 for p in index.paths if Path(p).resolve() in masks)
    skipped -= dropped
    name = str(index.root) + (f" ({skipped} grid/trajectory pictures skipped)" if skipped else "")
    name += f" ({dropped} masks listed in manifest.jsonl skipped)" if dropped else ""
    return ImageSource(name, len(paths), batches, size, labels, list(index.class_names))


# what `difforge sample --grid/--trajectory` and `interpolate` wrote inside sample folders before they went beside them
_PICTURES = re.compile(r"^(grid(_.+)?|trajectory|interpolation)\.(png|jpe?g|webp|bmp)$", re.IGNORECASE)


def listed_masks(root: Path) -> set:
    """The mask files a folder's manifest.jsonl lists (a joint-mask model's ``<stem>_mask.png``): not samples."""
    from ..data.manifest import iter_manifest, manifest_path

    if not manifest_path(root).is_file():
        return set()
    try:
        return {(Path(root) / line["mask"]).resolve() for line in iter_manifest(root) if line["mask"]}
    except DataError:  # a damaged manifest does not stop an evaluation of the images
        return set()


def is_picture_about_samples(path: Path, root: Path) -> bool:
    """A grid or trajectory picture at the top of a sample folder (old layout), not a sample to evaluate."""
    return Path(path).parent == Path(root) and bool(_PICTURES.match(Path(path).name))
