"""Joint image+mask generation: the defect mask is one more channel the model generates.

The network is an ordinary diffusion network on C + 1 channels: the image (C channels in [-1, 1])
and its mask (0 / 1 mapped to -1 / +1). Trained with the usual objective on all C + 1 channels, it
learns the joint distribution, so every sample of a defect class comes with its own pixel mask
(the approach of Defect-Gen / AnomalyDiffusion's mask branch, done as plain extra channels).
``good`` images (empty masks) teach it that good surfaces have empty masks.

Masks: ``--masks MDIR`` (same relative paths and stems as ``--data``) or the pairs layout
(``--data ROOT/images`` with ``ROOT/masks``). The model file records ``meta["data"]["joint_mask"]
= true`` (``network.config.in_channels`` = C + 1, ``data.channels`` = C);
:class:`difforge.pipeline.Pipeline` splits the last channel off as a binary mask (> 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ...errors import ConfigError
from .base import Snapshot
from .diffusion import DiffusionTask
from .inpaint import _Widened, training_masks


class JointMaskTask(DiffusionTask):
    """Diffusion training on (image, mask) stacked as C + 1 channels."""

    name = "joint"

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        if c.latent.latent:
            raise ConfigError("joint image+mask training runs in pixel space; drop latent for it")
        self.masks = training_masks(c.data.data, data, c.data.masks, c.data)
        self.channels = int(data.images.shape[1])
        net = super().build(_Widened(data, self.channels + 1), device)
        if self.augment:
            raise ConfigError("augment does not move the masks; drop --augment for joint-mask training")
        if self.crop_size:
            raise ConfigError("--crop-p does not cut the masks; drop it for joint-mask training")
        self.meta["data"]["channels"] = self.channels
        self.meta["data"]["joint_mask"] = True
        return net

    def inputs(self, data, idx, flip, device):
        """Pixels in [-1, 1] with the mask as one more channel (-1 background, +1 defect), mirrored together."""
        x = data.images[idx].to(device).float().div_(127.5).sub_(1.0)
        m = self.masks[idx].to(device).float().mul_(2.0).sub_(1.0)
        return self.mirror(torch.cat([x, m], dim=1), flip)

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        """Samples (top rows) over their generated masks in red (bottom rows)."""
        from ...data.io import make_grid, save_image

        tc = self.config.train
        n = tc.preview_num
        labels = (torch.arange(n) % self.num_classes).sort(stable=True).values if self.num_classes else None
        out = _generate(self.pipeline(snapshot), labels, n, tc)
        imgs = out.images.numpy()
        imgs = np.repeat(imgs, 3, axis=-1) if imgs.shape[-1] == 1 else imgs
        shown = overlay(imgs, out.masks.numpy())
        path = snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}"
        save_image(make_grid(np.concatenate([imgs, shown]), nrow=n), path)
        return path

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        return {}

    def describe(self) -> str:
        return super().describe() + "; joint image+mask (the mask is one more generated channel)"


def _generate(pipe, labels, n: int, tc):
    from ...data.io import to_uint8
    from ...pipeline import SampleConfig
    from ...pipeline.results import Generated

    config = SampleConfig(steps=tc.preview_steps, batch_size=max(n, 1))
    if tc.preview_sampler:
        config = config.replace(sampler=tc.preview_sampler)
    x = pipe.sample(list(range(n)), labels, config)
    images, masks = pipe.split_mask(x)
    return Generated(to_uint8(images), labels, pipe.class_names, masks=masks)


def overlay(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) images with their bool (N, H, W) masks shown half red (grey images turn RGB)."""
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    red = np.array([255, 0, 0], dtype=np.float32)
    return np.where(masks[..., None], 0.5 * rgb + 0.5 * red, rgb).astype(np.uint8)


__all__ = ["JointMaskTask", "overlay"]
