"""Mask-conditioned diffusion training: the network learns to paint a class into a given region.

The inpainting-model recipe (latent diffusion's inpainting model): besides x_t the network sees
the fill mask and the masked clean image, 2C + 1 input channels
(:func:`difforge.diffusion.inpainting.mask_condition`), and is trained with the usual diffusion
objective on the whole image. A defect image's mask is its defect mask, so the model learns to
paint that class into the region; an image with an empty mask (a ``good`` image) gets a random
rectangle or ellipse, so it learns to continue the surface. The class label is the image's.

Data: the image+mask pairs layout of :mod:`difforge.data.masks`: ``data`` = ``ROOT/images`` and the
masks in ``ROOT/masks`` (``difforge data defects ROOT --masks`` writes it). The model file records
``meta["inputs"]["mask_conditioning"]``, which ``difforge inpaint`` uses and ``difforge sample``
refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ...diffusion.inpainting import MaskConditionedNet
from ...errors import ConfigError
from ..batches import Batch
from ..rng import StepRNG
from .base import Snapshot
from .diffusion import DiffusionTask

INPUTS = {"mask_conditioning": {"extra_channels": "C + 1", "layout": "x_t, mask (1 = fill), image * (1 - mask)"}}


class _Widened:
    """``data`` as the network builder sees it: 2C + 1 input channels."""

    def __init__(self, data, channels: int):
        self._data = data
        self.images = data.images.new_empty((0, channels, 1, 1))

    def __getattr__(self, name):
        return getattr(self._data, name)


class InpaintTask(DiffusionTask):
    """Diffusion training with (mask, masked image) as extra input channels."""

    name = "inpaint"

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        if c.latent.latent:
            raise ConfigError("mask-conditioned training runs in pixel space; drop latent for it")
        self.masks = training_masks(c.data.data, data, c.data.masks, c.data)
        self.channels = int(data.images.shape[1])
        net = super().build(_Widened(data, 2 * self.channels + 1), device)
        if self.augment:
            raise ConfigError("augment does not move the masks; drop --augment for mask-conditioned training")
        if self.crop_size:
            raise ConfigError("--crop-p does not cut the masks; drop it for mask-conditioned training")
        self.meta["data"]["channels"] = self.channels
        self.meta["inputs"] = INPUTS
        return net

    def inputs(self, data, idx, flip, device):
        """Pixels in [-1, 1] with the mask (0 / 1) as one more channel, mirrored together."""
        return self.inputs_with_mask(data, self.masks, idx, flip, device)

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        c = self.channels
        x, mask = batch.x[:, :c], batch.x[:, c:]
        drawn = random_masks(rng.rand((5,), x.device), x.shape[-1]).to(x.dtype)
        empty = mask.flatten(1).amax(1) == 0
        mask = torch.where(empty[:, None, None, None], drawn, mask)
        cond = MaskConditionedNet(net, mask, x, learn_sigma=self.config.model.learn_sigma)
        return super().loss(cond, Batch(x, batch.labels, batch.index), rng)

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        """Inpainted training images: row 1 the sources, row 2 the model's fill of their masks."""
        from ...data.io import make_grid, save_image
        from ...pipeline import Pipeline

        tc = self.config.train
        n = min(tc.preview_num, len(data.images))
        pipe = Pipeline(snapshot.net, snapshot.meta, snapshot.device, snapshot.precision)
        rows = [data.images[:n].permute(0, 2, 3, 1).numpy()]
        made = []
        for i in range(n):
            label = int(data.labels[i]) if data.labels is not None else None
            mask = self.masks[i, 0].numpy()
            if not mask.any():
                mask = random_masks(torch.full((1, 5), 0.5), mask.shape[-1])[0, 0].bool().numpy()
            out = pipe.inpaint(rows[0][i], mask, num=1, class_label=label, steps=tc.preview_steps, seed=i)
            made.append(out.images[0].numpy())
        path = snapshot.samples_dir / f"step_{step:07d}.{tc.image_format}"
        save_image(make_grid(np.concatenate([rows[0], np.stack(made)]), nrow=n), path)
        return path

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        return {}

    def describe(self) -> str:
        return super().describe() + "; mask-conditioned (inputs: x_t, mask, masked image)"


def random_masks(u: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, size, size) 0/1 masks from uniforms ``u`` (B, 5): a rectangle or an ellipse (u[:, 4] < 1/2),
    centre in [0.2, 0.8], half sides / radii in [0.06, 0.25] of the image."""
    coords = (torch.arange(size, device=u.device, dtype=torch.float32) + 0.5) / size
    yy, xx = coords[None, :, None], coords[None, None, :]
    cx, cy = (0.2 + 0.6 * u[:, 0])[:, None, None], (0.2 + 0.6 * u[:, 1])[:, None, None]
    rx, ry = (0.06 + 0.19 * u[:, 2])[:, None, None], (0.06 + 0.19 * u[:, 3])[:, None, None]
    dx, dy = (xx - cx) / rx, (yy - cy) / ry
    ellipse = dx**2 + dy**2 <= 1.0
    rect = (dx.abs() <= 1.0) & (dy.abs() <= 1.0)
    return torch.where((u[:, 4] < 0.5)[:, None, None], ellipse, rect)[:, None].float()


def training_masks(data_dir: Optional[str], data, masks_dir: Optional[str] = None, data_config=None) -> torch.Tensor:
    """bool (N, 1, H, W) masks for the training images: from ``masks_dir`` (same relative paths and
    stems as ``data_dir``; ``--masks``) or else from ``ROOT/masks`` beside ``data_dir`` = ``ROOT/images``."""
    from ...data.masks import load_pairs

    if masks_dir:
        return _masks_from(data_dir, data, masks_dir, data_config)
    if not data_dir or Path(data_dir).name != "images" or not (Path(data_dir).parent / "masks").is_dir():
        raise ConfigError(
            f"mask-conditioned training needs image+mask pairs: --data ROOT/images with the masks in ROOT/masks "
            f"(difforge data defects ROOT --masks writes them); got --data {data_dir}"
        )
    size = int(data.images.shape[-1])
    pairs = load_pairs(Path(data_dir).parent, size, int(data.images.shape[1]))
    if pairs.images.shape != data.images.shape or not torch.equal(pairs.images, data.images):
        raise ConfigError(f"the masks of {Path(data_dir).parent} do not line up with the images loaded for training "
                          f"(skipped or dropped files?); fix the unreadable files and train again")
    return pairs.masks


def _masks_from(data_dir: Optional[str], data, masks_dir: str, data_config) -> torch.Tensor:
    """The masks of ``masks_dir`` matched to the files of ``data_dir`` as the training data scanned them."""
    from ...data.masks import load_mask, match_masks
    from ...data.scan import scan_folder
    from ...errors import DataError

    if not data_dir:
        raise ConfigError("--masks needs --data DIR (the built-in set: difforge data defects DIR --masks writes images/ and masks/)")
    index = scan_folder(data_dir, conditional=data_config.conditional if data_config else None,
                        from_filenames=bool(data_config.labels_from_filenames) if data_config else False)
    if len(index.paths) != len(data.images):
        raise ConfigError(f"--masks: {data_dir} has {len(index.paths)} images but {len(data.images)} were loaded "
                          f"(skipped files?); fix the unreadable files and train again")
    size = int(data.images.shape[-1])
    out = torch.zeros((len(index.paths), 1, size, size), dtype=torch.bool)
    try:
        for i, (p, m) in enumerate(zip(index.paths, match_masks(index, data_dir, masks_dir))):
            if m is not None:
                out[i, 0] = torch.from_numpy(load_mask(m, size, image=p))
    except DataError as e:
        raise ConfigError(str(e)) from None
    return out


__all__ = ["InpaintTask", "random_masks", "training_masks"]
