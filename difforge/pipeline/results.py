"""What a pipeline returns: generated images, interpolation frames, denoising trajectories.

Plain data (uint8 tensors, labels, the settings that made them) with ways to look at them
(``pil()``, ``grid()``); writing them to files is :mod:`difforge.data.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch


@dataclass
class Generated:
    """Images as uint8 (N, H, W, C) and their class indices (or None for an unconditional model);
    ``masks`` bool (N, H, W): a joint-mask model's generated defect masks (None for other models)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: List[str]
    masks: Optional[torch.Tensor] = None

    def pil(self):
        from ..data.io import images_to_pil

        return images_to_pil(self.images.numpy())


@dataclass
class Interpolation:
    """Frames between two ends: uint8 (K, H, W, C), frame k made with mixing weight ``lambdas[k]``.

    ``mode`` is ``"seeds"`` (frames[0] / frames[-1] are the two seeds' own samples) or
    ``"images"`` (``sources`` holds the two input images, uint8 (2, H, W, C), as the model sees
    them: resized and center-cropped). ``timesteps`` are those the sampler ran; ``class_index``
    the class it was conditioned on (None = unconditional / null class).
    """

    frames: torch.Tensor
    lambdas: List[float]
    mode: str
    sources: Optional[torch.Tensor] = None
    timesteps: List[float] = field(default_factory=list)
    class_index: Optional[int] = None

    def grid(self, padding: int = 2) -> np.ndarray:
        """One row, read left to right: [source A,] the K frames (lambda 0 -> 1)[, source B].

        The sources are the first and last *columns* (image mode only; in seed mode the first and
        last frames are the seeds' samples themselves).
        """
        from ..data.io import make_grid

        arr = self.frames.numpy()
        if self.sources is not None:
            src = self.sources.numpy()
            arr = np.concatenate([src[:1], arr, src[1:]])
        return make_grid(arr, nrow=len(arr), padding=padding)


@dataclass
class Trajectory:
    """Snapshots of a batch being denoised: F chosen sampler steps of N images.

    ``xt`` / ``x0``: uint8 (F, N, H, W, C): the state x_t after step ``steps[f]`` and the
    denoiser's prediction of x0 at that step (made at timestep ``timesteps[f]``). ``steps`` are
    strictly increasing sampler step indices, the last being the final step, so ``xt[-1]`` is the
    finished sample, equal to ``final.images``.
    """

    xt: torch.Tensor
    x0: torch.Tensor
    steps: List[int]
    timesteps: List[float]
    final: Generated

    def grid(self, padding: int = 2) -> np.ndarray:
        """Rows: for each image its x_t row, then its predicted-x0 row (2N rows); columns: the F frames."""
        from ..data.io import make_grid

        f, n = self.xt.shape[:2]
        rows = torch.stack([self.xt, self.x0], dim=0).permute(2, 0, 1, 3, 4, 5)  # (N, 2, F, H, W, C)
        return make_grid(rows.reshape(2 * n * f, *self.xt.shape[2:]).numpy(), nrow=f, padding=padding)

    def gif_frames(self, padding: int = 2) -> List[np.ndarray]:
        """One picture per frame: the N images' x_t on the top row, their predicted x0 below."""
        from ..data.io import make_grid

        n = self.xt.shape[1]
        return [make_grid(torch.cat([self.xt[k], self.x0[k]]).numpy(), nrow=n, padding=padding) for k in range(len(self.steps))]


__all__ = ["Generated", "Interpolation", "Trajectory"]
