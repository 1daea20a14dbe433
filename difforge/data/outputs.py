"""Write what a pipeline made to files: images, grids, .npz batches, interpolation and trajectory pictures.

Takes the pipeline's result objects by their fields (``images``, ``labels``, ``class_names``,
``frames``, ``grid()``, ...), so this data-layer module needs nothing from the pipeline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .io import make_grid, save_gif, save_image, save_images, save_npz


def default_output_dir(model, kind: str) -> Path:
    """Where a command writes for ``model`` without --out: ``runs/NAME/<kind>/<model stem>`` for a
    model file inside a run's checkpoints folder, else ``./<kind>``."""
    model = Path(model)
    if model.parent.name == "checkpoints":
        return model.parent.parent / kind / model.stem
    return Path(kind)


GRID_MAX = 256  # images per grid (per class): a grid of 100,000 images helps nobody


def beside(out_dir, name: str) -> Path:
    """``samples/ema`` + ``grid.png`` -> ``samples/ema-grid.png``: pictures about a sample folder go next
    to it, never inside, so the folder holds only samples (``difforge eval`` counts every image in it)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}-{name}"


def numbered_folder(out_dir) -> Path:
    """``out_dir`` if it is new or empty, else the first new or empty of ``out_dir-2``, ``out_dir-3``, ...
    (sampling twice into the default folder keeps both sets)."""
    out_dir = Path(out_dir)
    candidate, n = out_dir, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = out_dir.parent / f"{out_dir.name}-{n}"
    return candidate


class BatchWriter:
    """Write generated images batch by batch (:func:`difforge.pipeline.stream.generate_batches`).

    Images are saved as they come (``{class or prefix}_{i:05d}.{fmt}``, i counting across batches)
    and dropped; only what the extras need is kept: for ``grid`` the first :data:`GRID_MAX` images
    (per class), for ``npz`` every image as uint8 (N x H x W x C bytes: 1.2 GB for 100,000 64 px RGB
    images, 4x less than the sampler's float32). Grids go beside ``out_dir`` (:func:`beside`).

    A batch with ``masks`` (a joint-mask model) gets each mask written beside its image as
    ``<stem>_mask.png`` (0 / 255, always PNG). ``manifest``: the fields every line of
    ``out_dir/manifest.jsonl`` shares (:func:`difforge.data.manifest.make_line` keywords; ``seed`` is
    the first image's, image i has ``seed + i``); None writes no manifest.
    """

    def __init__(self, out_dir, fmt: str = "png", grid: bool = False, npz: bool = False, prefix: str = "sample",
                 manifest: Optional[Dict[str, Any]] = None):
        self.out_dir, self.fmt, self.grid, self.npz, self.prefix = Path(out_dir), fmt, grid, npz, prefix
        self.masks: list = []
        self.manifest = manifest
        self._t = time.perf_counter()
        self.images: list = []
        self.count = 0
        self.class_names: list = []
        self._kept: list = []  # uint8 batches kept for the npz
        self._grid: Dict[Any, list] = {}  # class index (or None) -> uint8 images for its grid
        self._labels: list = []

    def add(self, out) -> None:
        arr = out.images.numpy()
        labels = out.labels.numpy() if out.labels is not None else None
        self.class_names = list(out.class_names or [])
        paths = save_images(arr, self.out_dir, prefix=self.prefix, fmt=self.fmt, start=self.count, labels=labels,
                            class_names=self.class_names or None)
        masks = [None] * len(paths)
        if getattr(out, "masks", None) is not None:
            masks = [save_image(m.astype(np.uint8)[..., None] * 255, mask_path(p)) for p, m in zip(paths, out.masks.numpy())]
            self.masks += masks
        if self.manifest is not None:
            self._list(paths, masks, labels, arr.shape[1:3])
        self.images += paths
        self.count += len(arr)
        if self.npz:
            self._kept.append(arr.copy())
            if labels is not None:
                self._labels.append(labels.copy())
        if self.grid:
            keys = labels.tolist() if labels is not None and self.class_names else [None] * len(arr)
            for img, k in zip(arr, keys):
                if len(self._grid.setdefault(k, [])) < GRID_MAX:
                    self._grid[k].append(img.copy())

    def _list(self, paths, masks, labels, size) -> None:
        from .manifest import ManifestWriter, make_line

        if not hasattr(self, "_manifest"):
            self._manifest = ManifestWriter(self.out_dir)
        now = time.perf_counter()
        seconds, self._t = (now - self._t) / max(len(paths), 1), now
        common = dict(self.manifest)
        first = int(common.pop("seed", 0))
        for j, (p, m) in enumerate(zip(paths, masks)):
            name = self.class_names[int(labels[j])] if labels is not None and self.class_names else None
            self._manifest.add(make_line(p.name, mask=None if m is None else m.name, size=size, seed=first + self.count + j,
                                         class_name=name, seconds=seconds, **common))

    def close(self) -> Dict[str, Any]:
        """Write the grids and the ``.npz``; return what was written (images, masks, grids, npz, manifest)."""
        written: Dict[str, Any] = {"images": self.images}
        if self.masks:
            written["masks"] = self.masks
        if self.manifest is not None and self.images:
            written["manifest"] = self.out_dir / "manifest.jsonl"
        if self.grid:
            written["grids"] = []
            for k in sorted(self._grid, key=lambda k: -1 if k is None else k):
                name = "grid" if k is None else f"grid_{self.class_names[k]}"
                written["grids"].append(save_image(make_grid(np.stack(self._grid[k])), beside(self.out_dir, f"{name}.{self.fmt}")))
        if self.npz and self._kept:
            arr = np.concatenate(self._kept)
            self._kept = []
            labels = np.concatenate(self._labels) if self._labels else None
            name = f"{self.prefix}s_{len(arr)}x{arr.shape[1]}x{arr.shape[2]}x{arr.shape[3]}.npz"
            written["npz"] = save_npz(self.out_dir / name, arr, labels)
        return written


def mask_path(image_path) -> Path:
    """``dir/sample_00001.png`` -> ``dir/sample_00001_mask.png``: where an image's generated mask goes."""
    image_path = Path(image_path)
    return image_path.with_name(f"{image_path.stem}_mask.png")


def save_generated(out, out_dir, fmt: str = "png", grid: bool = False, npz: bool = False, prefix: str = "sample") -> Dict[str, Any]:
    """Write images (and optionally grids beside ``out_dir`` and an ``.npz`` in it); return what was written."""
    writer = BatchWriter(out_dir, fmt, grid, npz, prefix)
    writer.add(out)
    return writer.close()


def save_interpolation(result, out_dir, fmt: str = "png", gif: bool = False, duration_ms: int = 150) -> Dict[str, Any]:
    """Write ``frame_00000.png`` ... (lambda 0 -> 1), ``interpolation.png`` (the one-row grid of
    :meth:`Interpolation.grid`) and, with ``gif``, ``interpolation.gif`` (frames forth and back)."""
    out_dir = Path(out_dir)
    arr = result.frames.numpy()
    written: Dict[str, Any] = {"images": save_images(arr, out_dir, prefix="frame", fmt=fmt)}
    written["grid"] = save_image(result.grid(), out_dir / f"interpolation.{fmt}")
    if gif:
        loop = list(arr) + list(arr[-2:0:-1])
        written["gif"] = save_gif(loop, out_dir / "interpolation.gif", duration_ms=duration_ms)
    return written


def save_trajectory(result, out_dir, fmt: str = "png", gif: bool = False, duration_ms: int = 300) -> Dict[str, Any]:
    """Write ``trajectory.png`` (:meth:`Trajectory.grid`) and, with ``gif``, ``trajectory.gif``
    (per frame: x_t on the top row, predicted x0 below; the last frame held longer), beside
    ``out_dir`` (``samples/ema-trajectory.png``) so the sample folder holds only samples."""
    out_dir = Path(out_dir)
    written: Dict[str, Any] = {"grid": save_image(result.grid(), beside(out_dir, f"trajectory.{fmt}"))}
    if gif:
        frames = result.gif_frames()
        written["gif"] = save_gif(frames + [frames[-1]] * 3, beside(out_dir, "trajectory.gif"), duration_ms=duration_ms)
    return written


__all__ = ["BatchWriter", "beside", "mask_path", "numbered_folder", "save_generated", "save_interpolation", "save_trajectory"]
