"""A defect-weighted diffusion loss (``--mask-weight W``): a pixel inside its image's defect mask weighs 1 + W.

Why: a defect is a few percent of its image's pixels. With the plain per-pixel mean a short run
spends nearly all it learns on the surface around the defect, and draws the texture well and the
defect -- its shape, its type, where it sits -- loosely. Weighting the masked pixels moves the
network's effort to the part of the image the user collected the data for. Images without a mask
(a ``good`` class) weigh 1 everywhere. Sampling is unchanged: the weight only says which errors
cost more in training.

The masks come from ``--masks MDIR``, the pairs layout (``--data ROOT/images`` with ``ROOT/masks``)
or, for the built-in set, from its generator (the exact painted mask of each image). They are
loaded with the images, before the EMA hold-out (:func:`difforge.train.validation.hold_out`
slices them with the images), and the task stacks them on the images as one more channel until
the loss, so every flip, crop and augmentation moves a mask with its image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data.source import TrainingImages


def with_loss_masks(config, data: TrainingImages) -> TrainingImages:
    """``data`` with ``masks`` (bool (N, 1, H, W)) when the run weighs them (``data.mask_weight`` > 0)."""
    dc = config.data
    if not dc.mask_weight or data.masks is not None:
        return data
    if dc.data is None:
        masks = builtin_masks(dc, len(data.images))
    else:
        from .tasks.inpaint import training_masks

        masks = training_masks(dc.data, data, dc.masks, dc)
    return dataclasses.replace(data, masks=masks)


def builtin_masks(dc, n: int) -> torch.Tensor:
    """The built-in set's masks, in :func:`~difforge.data.builtin.generate_arrays`' order (the same draws)."""
    from ..config import materials_of
    from ..data.builtin import CLASSES, make_image_and_mask

    size, per_class = dc.image_size, dc.builtin_per_class
    out = np.zeros((len(CLASSES) * per_class, 1, size, size), dtype=bool)
    for j, (c, i) in enumerate((c, i) for c in range(len(CLASSES)) for i in range(per_class)):
        rng = np.random.default_rng([dc.builtin_seed, c, i])
        out[j, 0] = make_image_and_mask(c, size, rng, materials=materials_of(dc.builtin_materials))[1]
    if len(out) != n:
        from ..errors import ConfigError

        raise ConfigError("the built-in masks do not line up with the built-in images; use a folder with --masks")
    return torch.from_numpy(out)


def pixel_weight(masks: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + ``weight`` * mask for float masks (B, 1, H, W) in {0, 1}."""
    return masks.mul(weight).add_(1.0)


__all__ = ["builtin_masks", "pixel_weight", "with_loss_masks"]
