"""Write what a pipeline made to files: images, grids, .npz batches, interpolation and trajectory pictures.

Takes the pipeline's result objects by their fields (``images``, ``labels``, ``class_names``,
``frames``, ``grid()``, ...), so this data-layer module needs nothing from the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .io import make_grid, save_gif, save_image, save_images, save_npz


def save_generated(out, out_dir, fmt: str = "png", grid: bool = False, npz: bool = False, prefix: str = "sample") -> Dict[str, Any]:
    """Write images (and optionally a grid and an ``.npz``) to ``out_dir``; return what was written."""
    out_dir = Path(out_dir)
    arr = out.images.numpy()
    labels = out.labels.numpy() if out.labels is not None else None
    written: Dict[str, Any] = {"images": save_images(arr, out_dir, prefix=prefix, fmt=fmt, labels=labels, class_names=out.class_names or None)}
    if grid:
        if labels is not None and out.class_names:
            written["grids"] = []
            for k, name in enumerate(out.class_names):
                sel = arr[labels == k]
                if len(sel):
                    written["grids"].append(save_image(make_grid(sel), out_dir / f"grid_{name}.{fmt}"))
        else:
            written["grids"] = [save_image(make_grid(arr), out_dir / f"grid.{fmt}")]
    if npz:
        written["npz"] = save_npz(out_dir / f"{prefix}s_{len(arr)}x{arr.shape[1]}x{arr.shape[2]}x{arr.shape[3]}.npz", arr, labels)
    return written


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
    (per frame: x_t on the top row, predicted x0 below; the last frame held longer)."""
    out_dir = Path(out_dir)
    written: Dict[str, Any] = {"grid": save_image(result.grid(), out_dir / f"trajectory.{fmt}")}
    if gif:
        frames = result.gif_frames()
        written["gif"] = save_gif(frames + [frames[-1]] * 3, out_dir / "trajectory.gif", duration_ms=duration_ms)
    return written


__all__ = ["save_generated", "save_interpolation", "save_trajectory"]
