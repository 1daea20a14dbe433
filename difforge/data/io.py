"""Writing what users open: PNG/JPEG files, grids, GIFs and ``.npz`` sample batches.

Images travel as uint8 arrays in (N, H, W, C) order, the layout of PIL, numpy files and
guided-diffusion's evaluator; :func:`to_uint8` converts the models' float (N, C, H, W) in [-1, 1].
Every file is written atomically (temp file + rename), so a reader never sees half an image.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_write
from ..errors import DataError, UserError

PathLike = Union[str, os.PathLike]

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C) on the CPU.

    v = floor((x + 1) * 127.5 + 0.5) clamped to 0..255 (round half up): -1 -> 0, 1 -> 255,
    0 -> 128. NaN becomes 128 (as if 0), so one bad pixel cannot break a saved image.
    """
    if x.ndim != 4:
        raise ValueError(f"to_uint8 expects (N, C, H, W), got shape {tuple(x.shape)}")
    v = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0)
    v = torch.floor((v + 1.0) * 127.5 + 0.5).clamp_(0, 255)
    return v.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _as_nhwc(images, name: str = "images") -> np.ndarray:
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
    return arr


def make_grid(images_uint8_nhwc, nrow: Optional[int] = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N images into one (H', W', C) image, ``nrow`` images per row (default ceil(sqrt(N))).

    ``padding`` pixels of ``pad_value`` surround every tile, the outer border included:
    H' = rows * (H + padding) + padding.
    """
    arr = _as_nhwc(images_uint8_nhwc)
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    ncol = min(n, nrow) if nrow else math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        y = padding + (i // ncol) * (h + padding)
        x = padding + (i % ncol) * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    return grid


def _format_for(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot save an image as {path}: use one of the extensions {', '.join(FORMATS)}")
    return fmt


def _pil(array_hwc: np.ndarray) -> Image.Image:
    arr = np.asarray(array_hwc)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image must be uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))


def images_to_pil(images_nhwc_uint8) -> list[Image.Image]:
    """One PIL image per row of a uint8 (N, H, W, C) array; C=1 gives mode 'L'."""
    return [_pil(a) for a in _as_nhwc(images_nhwc_uint8)]


def save_image(array_hwc_uint8, path: PathLike, quality: int = 95) -> Path:
    """Save one uint8 (H, W, C) image atomically; the format follows the suffix (png/jpg/jpeg/webp/bmp).

    ``quality`` applies to JPEG and WebP. One channel is saved as grayscale ('L').
    """
    path = Path(path)
    fmt = _format_for(path)
    im = _pil(array_hwc_uint8)
    opts = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "JPEG" and im.mode == "RGBA":
        im = im.convert("RGB")
    with atomic_write(path) as tmp:
        im.save(tmp, format=fmt, **opts)
    return path


def save_images(
    images_nhwc_uint8,
    out_dir: PathLike,
    prefix: str = "img",
    fmt: str = "png",
    start: int = 0,
    labels: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> list[Path]:
    """Save each image as ``out_dir/{prefix}_{i:05d}.{fmt}``, i counting from ``start``.

    With ``labels`` and ``class_names`` the file is named after its class instead:
    ``{class}_{i:05d}.{fmt}``.
    """
    arr = _as_nhwc(images_nhwc_uint8)
    out_dir = Path(out_dir)
    ext = fmt.lower().lstrip(".")
    _format_for(Path(f"x.{ext}"))
    if labels is not None and class_names is not None:
        labels = [int(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
        if len(labels) != len(arr):
            raise ValueError(f"got {len(arr)} images but {len(labels)} labels")
        names = [class_names[k] for k in labels]
    else:
        names = [prefix] * len(arr)
    paths = []
    for j, (img, name) in enumerate(zip(arr, names)):
        paths.append(save_image(img, out_dir / f"{name}_{start + j:05d}.{ext}"))
    return paths


def save_npz(path: PathLike, images_nhwc_uint8, labels=None) -> Path:
    """Write ``arr_0`` = images uint8 (N, H, W, C) and, if given, ``arr_1`` = labels int64 (N,).

    This is the sample-batch layout that guided-diffusion's evaluator and most FID tools read.
    """
    path = Path(path)
    arrays = {"arr_0": _as_nhwc(images_nhwc_uint8)}
    if labels is not None:
        lab = (labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)).astype(np.int64)
        if lab.shape != (len(arrays["arr_0"]),):
            raise ValueError(f"labels must have shape ({len(arrays['arr_0'])},), got {lab.shape}")
        arrays["arr_1"] = lab
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def load_npz(path: PathLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read a sample batch written by :func:`save_npz` (or guided-diffusion): (images, labels or None).

    Never unpickles: object arrays are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sample file {path} does not exist; check the path")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" not in data.files:
                raise DataError(
                    f"{path} has no 'arr_0' array (found: {', '.join(data.files) or 'none'}); "
                    f"expected images as arr_0 uint8 (N, H, W, C)"
                )
            images = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data.files else None
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is not a readable .npz file ({e}); expected arrays arr_0 (and arr_1)") from e
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: arr_0 must be uint8 (N, H, W, C) with C 1 or 3, got {images.dtype} {images.shape}"
        )
    if labels is not None:
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: arr_1 must be integer labels of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    return images, labels


def save_gif(frames: Sequence[np.ndarray], path: PathLike, duration_ms: int = 200) -> Path:
    """Save uint8 (H, W, C) frames as a looping animated GIF, atomically."""
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame")
    ims = [_pil(f) for f in frames]
    path = Path(path)
    with atomic_write(path) as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return path
