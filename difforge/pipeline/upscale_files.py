"""``difforge upscale``'s library half: image files in, upscaled PNGs out, PSNR/SSIM against references.

:func:`upscale_files` upscales one image or every image of a folder (not recursive, sorted by
name) with an :class:`~difforge.pipeline.upscale.Upscaler` into ``out_dir/<stem>.png``, one at a
time (a folder of any size needs one image of memory), with a progress bar over the files. With
``reference`` (a folder holding a high-res image of the same stem per input, exactly s times the
input's size) every output gets its PSNR and SSIM ([0, 1] scale, :mod:`difforge.metrics.image_quality`)
and the consistency PSNR (the output degraded again against the input), written to
``out_dir/upscale_metrics.csv`` and summarised in the returned report.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..errors import UserError
from .upscale import Upscaler, consistency, to_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class UpscaleReport:
    """What :func:`upscale_files` wrote: ``outputs`` (paths), per-image ``rows`` and the mean metrics."""

    outputs: List[Path] = field(default_factory=list)
    rows: List[Dict] = field(default_factory=list)
    metrics_csv: Optional[Path] = None

    def mean(self, key: str) -> float:
        values = [r[key] for r in self.rows if key in r and math.isfinite(r[key])]
        return float(np.mean(values)) if values else float("nan")


def input_files(path) -> List[Path]:
    """An image file, or the image files of a folder (sorted); one UserError when there are none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"--input {path} does not exist; give an image file or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise UserError(f"--input {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: Path) -> np.ndarray:
    """uint8 (h, w, C) of an image file (grey stays 1 channel, anything else RGB); one UserError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L") if im.mode in ("L", "I;16", "I", "1") else im.convert("RGB")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({e})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def png_bytes(arr: np.ndarray) -> bytes:
    """uint8 (h, w, C) -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def _reference(ref_dir: Path, stem: str) -> Optional[Path]:
    for ext in IMAGE_EXTENSIONS:
        for cand in (ref_dir / f"{stem}{ext}", ref_dir / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def measure(up: Upscaler, low: np.ndarray, high: np.ndarray, ref: Optional[np.ndarray]) -> Dict[str, float]:
    """PSNR / SSIM of ``high`` against ``ref`` (when given) and the consistency PSNR against ``low``."""
    from ..metrics.image_quality import psnr, ssim

    h = to_tensor(high, up.channels)
    row = {"consistency_psnr": round(float(consistency(to_tensor(low, up.channels), h, up.degradation)[0].clamp(max=100)), 4)}
    if ref is not None:
        r = to_tensor(ref, up.channels)
        if r.shape != h.shape:
            raise UserError(f"reference is {r.shape[-1]}x{r.shape[-2]} px but the output is {h.shape[-1]}x{h.shape[-2]} px; "
                            f"a reference must be exactly x{up.scale} the input")
        a, b = (h + 1) / 2, (r + 1) / 2
        row["psnr"] = round(float(psnr(a, b)[0].clamp(max=100)), 4)
        row["ssim"] = round(float(ssim(a, b)[0]), 5) if min(h.shape[-2:]) >= 11 else float("nan")
    return row


def upscale_files(up: Upscaler, inputs, out_dir, *, reference=None, class_label: Optional[str] = None, seed: int = 0,
                  progress: bool = True, **kwargs) -> UpscaleReport:
    """Upscale ``inputs`` (a file or folder) into ``out_dir`` (see the module docstring); ``kwargs`` go to :meth:`Upscaler.upscale_tensor`."""
    from tqdm import tqdm

    from ..atomic import atomic_write, write_bytes
    from ..data.io import to_uint8

    files = input_files(inputs)
    ref_dir = Path(reference) if reference else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise UserError(f"--reference {ref_dir} is not a folder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label = up.class_index(class_label)
    report = UpscaleReport()
    for i, path in enumerate(tqdm(files, disable=not progress, desc="upscale", unit="image", dynamic_ncols=True)):
        low = read_image(path)
        with torch.inference_mode():
            high = to_uint8(up.upscale_tensor(to_tensor(low, up.channels), label, seed=seed + i, **kwargs))[0].numpy()
        target = out_dir / f"{path.stem}.png"
        write_bytes(target, png_bytes(high))
        report.outputs.append(target)
        row = {"file": path.name, "width": high.shape[1], "height": high.shape[0]}
        ref_path = _reference(ref_dir, path.stem) if ref_dir is not None else None
        if ref_dir is not None and ref_path is None:
            raise UserError(f"--reference {ref_dir} has no image named {path.stem}.* for {path.name}")
        row.update(measure(up, low, high, read_image(ref_path) if ref_path else None))
        report.rows.append(row)
    if ref_dir is not None:
        report.metrics_csv = out_dir / "upscale_metrics.csv"
        with atomic_write(report.metrics_csv) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(report.rows[0]))
                w.writeheader()
                w.writerows(report.rows)
    return report


__all__ = ["IMAGE_EXTENSIONS", "UpscaleReport", "input_files", "measure", "png_bytes", "read_image", "upscale_files"]
