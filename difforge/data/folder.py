"""Image folders: read each image once and hold them all in RAM as uint8.

Finding the files (layouts, class names, links) is :mod:`difforge.data.scan`; this module decodes
them. The decoded dataset lives in RAM as one uint8 tensor of N*C*H*W bytes (10,000 RGB images at
64x64 are 123 MB; see :func:`dataset_memory_bytes`), so every file is decoded and validated
exactly once, up front, and training never touches the disk again.

A file that cannot be used (unreadable, corrupt, truncated, or so large that decoding it would
exhaust RAM: a decompression bomb) stops the load with one message listing the files, or with
``skip_bad`` is left out; what that does to the classes is decided in :mod:`difforge.data.classes`.
"""

from __future__ import annotations

import os
import re
import warnings as _warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError
from .scan import IMAGE_EXTENSIONS, MAX_LISTED, FolderIndex, listing, printable, scan_folder, short

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "FolderIndex", "ImageTooLarge", "LoadedImages",
    "dataset_memory_bytes", "load_folder", "load_image", "scan_folder",
]

PathLike = Union[str, os.PathLike]

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image decoded (100 megapixels, 300 MB as RGB); bigger files are refused unread."""


class ImageTooLarge(ValueError):
    """An image whose header declares more than :data:`MAX_IMAGE_PIXELS` pixels."""


@dataclass
class LoadedImages:
    """Decoded images: ``images`` uint8 (N, C, H, W) contiguous, ``labels`` int64 (N,).

    ``paths`` are the files kept (row i of ``images`` is ``paths[i]``); ``bad`` lists each
    unreadable file with the reason (all of them, for the run log); ``warnings`` are one-line
    messages for the user (the scan's, files skipped, classes dropped, small classes).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    bad: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def conditional(self) -> bool:
        return bool(self.class_names)


def dataset_memory_bytes(n: int, channels: int, size: int) -> int:
    """RAM taken by ``n`` decoded images held as uint8: n * channels * size * size bytes."""
    return int(n) * int(channels) * int(size) * int(size)


# ----------------------------------------------------------------------------- decoding


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit ('I;16*'), 32-bit int ('I') and float ('F') images to 8-bit 'L'.

    - 'I;16', 'I;16B', 'I;16L', 'I;16N': value / 257 (0..65535 -> 0..255).
    - 'I': treated as 16-bit (value / 257) when every value lies in 0..65535, which is how 16-bit
      PNG/TIFF data arrives; otherwise the image's own min..max is stretched to 0..255.
    - 'F': values within [0, 1] are scaled by 255; otherwise min..max is stretched. NaN -> 0.
    """
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = arr.astype(np.float32) / 257.0
    else:
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "I" and lo >= 0 and hi <= 65535:
            out = a / 257.0
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            out = a * 255.0
        else:
            out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3).

    Transparent pixels (RGBA, LA, PA, or a palette/'L'/'RGB' image with a transparency key) are
    composited onto white, the usual background of product photos; CMYK, YCbCr, LAB, HSV, '1' and
    palette images go through Pillow's own conversion.
    """
    if im.mode.startswith("I") or im.mode == "F":
        im = _high_bit_depth_to_l(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("L" if channels == 1 else "RGB")


def load_image(path: PathLike, image_size: int, channels: int, hflip: bool = False) -> np.ndarray:
    """Decode one file to uint8 (image_size, image_size, channels).

    EXIF orientation is applied, then the central square (side = the shorter side) is resized to
    ``image_size`` with antialiased bicubic filtering in one step, which equals "resize the
    shorter side, then center-crop". Raises whatever Pillow raises for a bad file;
    :func:`load_folder` turns that into a :class:`DataError`.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: refused at the header
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageTooLarge(_too_large(f"{found.group(1)} pixels" if found else "the image")) from None
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:  # checked on the header, before any pixel is decoded
            raise ImageTooLarge(_too_large(f"{w}x{h} pixels"))
        im.load()  # decode fully now: a truncated file fails here, not later
        im = ImageOps.exif_transpose(im)
        im = _to_mode(im, channels)
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    if (w, h) != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BICUBIC, box=(left, top, left + side, top + side), reducing_gap=3.0)
    if hflip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[..., None] if channels == 1 else arr


def _too_large(size: str) -> str:
    return (f"{size} is over the {MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit (a decompression bomb or an "
            f"oversized scan); downscale it")


def _reason(e: BaseException, path: Path) -> str:
    """One short line: the exception type and its first line, without the (already named) path."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = printable(text.replace(f"'{path}'", "").replace(str(path), "").strip(" :"))
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_folder(
    index: FolderIndex,
    image_size: int,
    channels: int = 3,
    skip_bad: bool = False,
    progress: bool = True,
    workers: Optional[int] = None,
    drop_empty_classes: bool = False,
) -> LoadedImages:
    """Decode every file of ``index`` once into a uint8 tensor (N, C, H, W) in RAM.

    Files are decoded by a small thread pool (Pillow releases the GIL while decoding); order is
    kept. Unreadable, corrupt, truncated or oversized files are collected: unless ``skip_bad``, any
    of them raises one :class:`DataError` whose one-line message lists the first ten (paths relative
    to the folder, with the reason) and the ``--skip-bad-images`` hint; with ``skip_bad`` they are
    dropped, returned in ``bad`` and named in ``warnings``. If no file can be read it is always an
    error. A class left without images is refused unless ``drop_empty_classes`` (see
    :func:`difforge.data.classes.settle_classes`); small classes get a warning.
    """
    from .classes import settle_classes, skipped_warning, small_data_warning

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    from tqdm import tqdm

    n = len(index.paths)
    root = printable(index.root)
    if n == 0:
        raise DataError(f"image folder {root} has no images to load")
    images = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
    ok = np.zeros(n, dtype=bool)
    bad: list[tuple[Path, str]] = []

    def decode(i: int):
        try:
            return i, load_image(index.paths[i], image_size, channels), None
        except Exception as e:  # any failure inside a decoder means the file is unusable
            return i, None, _reason(e, index.paths[i])

    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    with tqdm(total=n, desc="reading images", unit="img", disable=not progress) as bar, _warnings.catch_warnings():
        # Images between Pillow's warning size and MAX_IMAGE_PIXELS are fine; bigger ones are refused.
        _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, arr, reason in pool.map(decode, range(n)):
                if arr is None:
                    bad.append((index.paths[i], reason))
                else:
                    images[i] = torch.from_numpy(arr).permute(2, 0, 1)
                    ok[i] = True
                bar.update()

    if bad and (not skip_bad or len(bad) == n):
        listed = listing([f"{short(p, index.root)} ({r})" for p, r in bad])
        if len(bad) == n:
            raise DataError(f"none of the {n} images in {root} can be read: {listed}; check that they are image files")
        raise DataError(
            f"{len(bad)} of {n} images in {root} cannot be read: {listed}; "
            f"fix or delete them, or pass --skip-bad-images to train without them"
        )

    keep = np.flatnonzero(ok)
    warnings = list(index.warnings) + ([skipped_warning(bad, n, index.root)] if bad else [])
    names, labels, dropped = settle_classes(index, [index.labels[i] for i in keep], bad, drop_empty_classes)
    warnings += dropped + small_data_warning(names, labels)
    if len(keep) < n:
        images = images[torch.from_numpy(keep)].contiguous()
    paths = [index.paths[i] for i in keep]
    return LoadedImages(images, torch.tensor(labels, dtype=torch.int64), names, paths, bad, warnings)
