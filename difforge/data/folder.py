"""Image folders: find the images, read each one once, and hold them in RAM as uint8.

Two layouts are understood:

- **class sub-folders** ``root/<class>/**/*.png``: every non-hidden sub-folder that contains
  images (searched recursively inside it) is a class; class names are the folder names, sorted.
  Two or more classes make a *conditional* dataset. Images lying loose directly in ``root`` next
  to class folders are ignored (they are often previews or notes) and listed in
  :attr:`FolderIndex.ignored` so the caller can say so.
- **flat** ``root/*.png``: no sub-folder holds images; an *unconditional* dataset.

Hidden files and folders (name starting with ``.``) are skipped everywhere, which also skips the
``.name.tmp`` files of an interrupted atomic write.

The decoded dataset lives in RAM as one uint8 tensor of N*C*H*W bytes (10,000 RGB images at
64x64 are 123 MB; see :func:`dataset_memory_bytes`), so every file is decoded and validated
exactly once, up front, and training never touches the disk again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]

_MAX_LISTED = 10
_EXTS = ", ".join(IMAGE_EXTENSIONS)


@dataclass
class FolderIndex:
    """The image files of a folder, before decoding.

    ``labels[i]`` indexes ``class_names`` when ``conditional``; otherwise every label is 0 and
    ``class_names`` is empty. ``ignored`` lists loose images in ``root`` that a class-folder
    layout leaves out.
    """

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    conditional: bool
    ignored: list[Path] = field(default_factory=list)


@dataclass
class LoadedImages:
    """Decoded images: ``images`` uint8 (N, C, H, W) contiguous, ``labels`` int64 (N,).

    ``paths`` are the files kept (row i of ``images`` is ``paths[i]``); ``bad`` lists each
    unreadable file with the reason.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    bad: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def conditional(self) -> bool:
        return bool(self.class_names)


def dataset_memory_bytes(n: int, channels: int, size: int) -> int:
    """RAM taken by ``n`` decoded images held as uint8: n * channels * size * size bytes."""
    return int(n) * int(channels) * int(size) * int(size)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(path) and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Images anywhere below ``folder``, skipping hidden files and hidden folders; sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(p for p in (Path(dirpath) / f for f in filenames) if _is_image(p))
    return sorted(found)


def scan_folder(root: PathLike, conditional: Optional[bool] = None) -> FolderIndex:
    """Index the images of ``root`` (see the module docstring for the layouts).

    ``conditional=None`` decides from the layout (two or more class folders -> conditional);
    ``True`` demands class folders (at least two); ``False`` uses every image and ignores classes.
    Nothing is decoded here; :func:`load_folder` does that.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; pass the folder that contains the images")
    entries = sorted(p for p in root.iterdir() if not _is_hidden(p))
    loose = [p for p in entries if _is_image(p)]
    classes = [(d.name, imgs) for d in entries if d.is_dir() for imgs in [_images_under(d)] if imgs]

    if not classes:
        if not loose:
            if not entries:
                raise DataError(f"image folder {root} is empty; put images ({_EXTS}) in it or in class sub-folders")
            raise DataError(
                f"image folder {root} contains no images; accepted extensions are {_EXTS} "
                f"(directly in the folder, or in one sub-folder per class)"
            )
        if conditional:
            raise DataError(
                f"image folder {root} has no class sub-folders, so it cannot train a conditional model; "
                f"put each class in its own sub-folder ({root}/<class>/...) or pass --no-conditional"
            )
        return FolderIndex(root, loose, [0] * len(loose), [], False)

    if conditional and len(classes) < 2:
        raise DataError(
            f"image folder {root} has a single class {classes[0][0]!r}: add at least one more class "
            f"sub-folder or pass --no-conditional"
        )
    if conditional is None:
        conditional = len(classes) >= 2
    paths = [p for _, imgs in classes for p in imgs]
    if conditional:
        labels = [k for k, (_, imgs) in enumerate(classes) for _ in imgs]
        return FolderIndex(root, paths, labels, [name for name, _ in classes], True, loose)
    return FolderIndex(root, paths, [0] * len(paths), [], False, loose)


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
    with Image.open(path) as im:
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


def _short(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _reason(e: BaseException, path: Path) -> str:
    """One short line: the exception type and its first line, without the (already named) path."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_folder(
    index: FolderIndex,
    image_size: int,
    channels: int = 3,
    skip_bad: bool = False,
    progress: bool = True,
    workers: Optional[int] = None,
) -> LoadedImages:
    """Decode every file of ``index`` once into a uint8 tensor (N, C, H, W) in RAM.

    Files are decoded by a small thread pool (Pillow releases the GIL while decoding); order is
    kept. Unreadable, corrupt or truncated files are collected: unless ``skip_bad``, any of them
    raises one :class:`DataError` whose one-line message lists the first ten (paths relative to the
    folder, with the reason) and the ``--skip-bad-images`` hint; with ``skip_bad`` they are dropped and returned in
    ``bad`` for the caller to report. If no file can be read it is always an error.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    from tqdm import tqdm

    n = len(index.paths)
    if n == 0:
        raise DataError(f"image folder {index.root} has no images to load")
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
    with tqdm(total=n, desc="reading images", unit="img", disable=not progress) as bar:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, arr, reason in pool.map(decode, range(n)):
                if arr is None:
                    bad.append((index.paths[i], reason))
                else:
                    images[i] = torch.from_numpy(arr).permute(2, 0, 1)
                    ok[i] = True
                bar.update()

    if bad and (not skip_bad or len(bad) == n):
        listed = "; ".join(f"{_short(p, index.root)} ({r})" for p, r in bad[:_MAX_LISTED])
        if len(bad) > _MAX_LISTED:
            listed += f"; ... and {len(bad) - _MAX_LISTED} more"
        if len(bad) == n:
            raise DataError(f"none of the {n} images in {index.root} can be read: {listed}; check that they are image files")
        raise DataError(
            f"{len(bad)} of {n} images in {index.root} cannot be read: {listed}; "
            f"fix or delete them, or pass --skip-bad-images to train without them"
        )

    keep = np.flatnonzero(ok)
    labels = torch.tensor([index.labels[i] for i in keep], dtype=torch.int64)
    if len(keep) < n:
        images = images[torch.from_numpy(keep)].contiguous()
    return LoadedImages(images, labels, list(index.class_names), [index.paths[i] for i in keep], bad)
