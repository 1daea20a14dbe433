"""Images with pixel masks: the MVTec AD layout, image+mask pairs, and mask validation.

Two layouts are understood (masks are white = defect, black = background):

- **MVTec AD** ``root/train/good/*.png``, ``root/test/<type>/*.png`` and
  ``root/ground_truth/<type>/<stem>_mask.png``; ``good`` images have no mask file (empty mask).
  Classes are the folder names (``good`` and the defect types), sorted.
- **pairs** ``root/images/[<class>/]<stem>.<ext>`` with ``root/masks/[<class>/]<stem>.<ext>``
  (same relative path and stem, any image extension); class sub-folders as for
  :func:`difforge.data.scan.scan_folder`. An image of a class named ``good`` may lack its mask.
  ``difforge data defects OUT --masks`` writes this layout.

A mask must have its image's size (checked on the file, before any resize) and be binary after
thresholding at 127: a mask whose pixels are mostly clear black or white passes (anti-aliased
edges and JPEG noise are fine), one with more than :data:`MAX_UNCLEAR` of its pixels in the middle
band 32..223 is refused (a photo given as a mask). Every refusal is one :class:`DataError` line
naming the file. Masks get the images' own transform (central square, resized to ``image_size``)
and are thresholded again after resizing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError
from .folder import load_folder
from .scan import IMAGE_EXTENSIONS, FolderIndex, listing, printable, scan_folder, short

PathLike = Union[str, os.PathLike]

THRESHOLD = 127
"""A mask pixel is defect when its value is above this."""
UNCLEAR = (32, 223)
"""Mask values in this band (inclusive) are neither clearly background nor clearly defect."""
MAX_UNCLEAR = 0.05
"""Largest fraction of unclear pixels a binary mask may have (anti-aliasing, compression noise)."""
GOOD = "good"


@dataclass
class MaskedImages:
    """Decoded images with their masks: ``images`` uint8 (N, C, H, W), ``masks`` bool (N, 1, H, W),
    ``labels`` int64 (N,) indexing ``class_names``; ``mask_paths[i]`` None for a good image without one."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    mask_paths: list[Optional[Path]]
    warnings: list[str] = field(default_factory=list)


def oriented_size(path: PathLike) -> tuple[int, int]:
    """(width, height) of an image file as loaded (EXIF orientation applied), from its header."""
    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_mask(path: PathLike, size: Optional[tuple[int, int]] = None, image: Optional[PathLike] = None) -> np.ndarray:
    """A validated mask file as bool (H, W) at its own resolution.

    ``size`` (width, height), when given, is the size the mask must have (its ``image``'s, named in
    the error). Raises :class:`DataError` with one line naming the file.
    """
    path = Path(path)
    shown = printable(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"mask {shown} does not exist; check the path") from None
    except Exception as e:  # Pillow raises many kinds for a bad file
        raise DataError(f"cannot read mask {shown} ({type(e).__name__}); give a PNG of 0 (background) and 255 (defect)") from None
    h, w = arr.shape
    if size is not None and (w, h) != tuple(size):
        of = f"its image {printable(image)}" if image is not None else "the image"
        raise DataError(f"mask {shown} is {w}x{h} pixels but {of} is {size[0]}x{size[1]}; a mask must have its image's size")
    check_binary(arr, shown)
    return arr > THRESHOLD


def check_binary(arr: np.ndarray, name: str) -> None:
    """Refuse a uint8 mask with more than :data:`MAX_UNCLEAR` of its pixels in the band :data:`UNCLEAR`."""
    lo, hi = UNCLEAR
    unclear = float(((arr >= lo) & (arr <= hi)).mean()) if arr.size else 0.0
    if unclear > MAX_UNCLEAR:
        raise DataError(
            f"mask {name} is not binary: {unclear:.0%} of its pixels are between {lo} and {hi}; a mask is black (0) "
            f"background and white (255) defect, at most {MAX_UNCLEAR:.0%} of pixels in between"
        )


def resize_mask(mask: np.ndarray, image_size: int) -> np.ndarray:
    """bool (H, W) -> bool (image_size, image_size) by the images' transform: the central square,
    resized (bilinear over 0/255), thresholded at :data:`THRESHOLD`."""
    h, w = mask.shape
    if (w, h) == (image_size, image_size):
        return mask.copy()
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    im = im.resize((image_size, image_size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=3.0)
    return np.asarray(im) > THRESHOLD


def load_mask(path: PathLike, image_size: int, image: Optional[PathLike] = None) -> np.ndarray:
    """A mask file for an image of ``image`` (its size is checked) as bool (image_size, image_size)."""
    size = oriented_size(image) if image is not None else None
    return resize_mask(read_mask(path, size, image), image_size)


# ----------------------------------------------------------------------------- layouts


def is_mvtec(root: PathLike) -> bool:
    root = Path(root)
    return (root / "test").is_dir() and ((root / "ground_truth").is_dir() or (root / "train" / GOOD).is_dir())


def is_pairs(root: PathLike) -> bool:
    root = Path(root)
    return (root / "images").is_dir() and (root / "masks").is_dir()


def load_masked(root: PathLike, image_size: int, channels: int = 3, split: str = "all", progress: bool = False) -> MaskedImages:
    """Load ``root`` in whichever mask layout it has (pairs or MVTec AD)."""
    if is_pairs(root):
        return load_pairs(root, image_size, channels, progress=progress)
    if is_mvtec(root):
        return load_mvtec(root, image_size, channels, split=split, progress=progress)
    raise DataError(
        f"{printable(root)} has neither mask layout: give a folder with images/ and masks/ (same file names) "
        f"or an MVTec AD category (train/good, test/<type>, ground_truth/<type>/*_mask.png)"
    )


def load_pairs(root: PathLike, image_size: int, channels: int = 3, progress: bool = False) -> MaskedImages:
    """The pairs layout: ``root/images/...`` with ``root/masks/...`` of the same relative path and stem."""
    index, mask_paths = index_pairs(root)
    return _decode(index, mask_paths, image_size, channels, progress)


def index_masked(root: PathLike, split: str = "all") -> tuple[FolderIndex, list[Optional[Path]]]:
    """The image files of ``root`` (pairs or MVTec AD layout) and each one's mask file (None for a
    good image without one), undecoded: for readers that keep the files' own size (export)."""
    if is_pairs(root):
        return index_pairs(root)
    if is_mvtec(root):
        return index_mvtec(root, split)
    load_masked(root, 8)  # raises the one-line error naming both layouts
    raise AssertionError("unreachable")


def index_pairs(root: PathLike) -> tuple[FolderIndex, list[Optional[Path]]]:
    """The pairs layout's image files and their mask files (see :func:`load_pairs`)."""
    root = Path(root).expanduser()
    images_dir, masks_dir = root / "images", root / "masks"
    if not masks_dir.is_dir():
        raise DataError(f"mask folder {printable(masks_dir)} does not exist; put one mask per image there (same name)")
    index = scan_folder(images_dir)
    return index, match_masks(index, images_dir, masks_dir)


def match_masks(index: FolderIndex, images_dir: PathLike, masks_dir: PathLike) -> list[Optional[Path]]:
    """Each image's mask file in ``masks_dir``: same relative path and stem, any image extension
    (None for a ``good`` image without one); one DataError listing the images that lack a mask."""
    images_dir, masks_dir = Path(images_dir).expanduser(), Path(masks_dir).expanduser()
    if not masks_dir.is_dir():
        raise DataError(f"mask folder {printable(masks_dir)} does not exist; put one mask per image there (same name)")
    by_stem = {}
    for p in sorted(q for q in masks_dir.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS):
        by_stem.setdefault(p.relative_to(masks_dir).with_suffix(""), p)
    mask_paths, missing = [], []
    for p, label in zip(index.paths, index.labels):
        m = by_stem.get(p.relative_to(images_dir).with_suffix(""))
        if m is None and not _is_good(index, label):
            missing.append(short(p, images_dir))
        mask_paths.append(m)
    if missing:
        raise DataError(
            f"{len(missing)} image(s) in {printable(images_dir)} have no mask of the same name in {printable(masks_dir)}: "
            f"{listing(missing, sep=', ')}; add the masks (only a class named '{GOOD}' may go without)"
        )
    return mask_paths


def load_mvtec(root: PathLike, image_size: int, channels: int = 3, split: str = "all", progress: bool = False) -> MaskedImages:
    """An MVTec AD category: ``split`` ``train`` (train/good), ``test`` (test/<type>) or ``all``."""
    index, mask_paths = index_mvtec(root, split)
    return _decode(index, mask_paths, image_size, channels, progress)


def index_mvtec(root: PathLike, split: str = "all") -> tuple[FolderIndex, list[Optional[Path]]]:
    """An MVTec AD category's image files and their mask files (see :func:`load_mvtec`)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    root = Path(root).expanduser()
    found: dict[str, list[Path]] = {}
    for part in (("train",) if split == "train" else ("test",) if split == "test" else ("train", "test")):
        base = root / part
        if not base.is_dir():
            raise DataError(f"{printable(root)} is not an MVTec AD category: {part}/ is missing")
        for d in sorted(q for q in base.iterdir() if q.is_dir() and not q.name.startswith(".")):
            files = sorted(q for q in d.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS and not q.name.startswith("."))
            found.setdefault(d.name, []).extend(files)
    names = sorted(k for k, v in found.items() if v)
    if not names:
        raise DataError(f"MVTec AD category {printable(root)} has no images under train/ or test/")
    paths = [p for n in names for p in found[n]]
    labels = [k for k, n in enumerate(names) for _ in found[n]]
    mask_paths, missing = [], []
    for p, k in zip(paths, labels):
        m = None if names[k] == GOOD else root / "ground_truth" / names[k] / f"{p.stem}_mask.png"
        if m is not None and not m.is_file():
            missing.append(short(m, root))
        mask_paths.append(m)
    if missing:
        raise DataError(f"{len(missing)} mask(s) missing in {printable(root)}: {listing(missing, sep=', ')}; "
                        f"each test/<type>/X.png needs ground_truth/<type>/X_mask.png")
    index = FolderIndex(root, paths, labels, names if len(names) > 1 else [], len(names) > 1)
    return index, mask_paths


def _is_good(index: FolderIndex, label: int) -> bool:
    return bool(index.class_names) and index.class_names[label] == GOOD


def _decode(index: FolderIndex, mask_paths: list, image_size: int, channels: int, progress: bool) -> MaskedImages:
    loaded = load_folder(index, image_size, channels, progress=progress)
    masks = torch.zeros((len(index.paths), 1, image_size, image_size), dtype=torch.bool)
    for i, (p, m) in enumerate(zip(index.paths, mask_paths)):
        if m is not None:
            masks[i, 0] = torch.from_numpy(load_mask(m, image_size, image=p))
    return MaskedImages(loaded.images, masks, loaded.labels, loaded.class_names, loaded.paths, mask_paths, loaded.warnings)


__all__ = [
    "MAX_UNCLEAR", "MaskedImages", "THRESHOLD", "check_binary", "index_masked", "index_mvtec", "index_pairs", "is_mvtec",
    "is_pairs", "load_mask",
    "load_masked", "load_mvtec", "load_pairs", "match_masks", "oriented_size", "read_mask", "resize_mask",
]
