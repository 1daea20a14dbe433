"""A defect-weighted diffusion loss (``--mask-weight W``): a pixel inside its image's defect mask weighs 1 + W.

Why: a defect is a small part of its image (a built-in one 17-41% of a 32 px image with its mask's fringe,
a real one often a few percent). With the plain per-pixel mean a short run
spends nearly all it learns on the surface around the defect, and draws the texture well and the
defect -- its shape, its type, where it sits -- loosely. Weighting the masked pixels moves the
network's effort to the part of the image the user collected the data for. For a text model it is what
made a caption's defect word mean the defect's shape rather than "what goes on this surface": the
defect type of combinations never trained on went from 0.26 to 0.65 (README "Text conditioning"). Images without a mask
(a ``good`` class) weigh 1 everywhere. Sampling is unchanged: the weight only says which errors
cost more in training. ``auto`` (the default) turns it on for new text runs that have masks
(:func:`choose_mask_weight`), where it was measured; class-conditional runs keep the plain mean.

The masks come from ``--masks MDIR``, the pairs layout (``--data ROOT/images`` with ``ROOT/masks``)
or, for the built-in set, from its generator (the exact painted mask of each image). They are
loaded with the images, before the EMA hold-out (:func:`difforge.train.validation.hold_out`
slices them with the images), and the task stacks them on the images as one more channel until
the loss, so every flip, crop and augmentation moves a mask with its image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..data.source import TrainingImages


TEXT_MASK_WEIGHT = 10.0
"""``mask_weight: auto`` for a new text run with masks (README "Text conditioning": measured)."""


def has_masks(dc) -> bool:
    """True when the run's images come with defect masks: the built-in set, ``--masks`` or ROOT/images + ROOT/masks."""
    if dc.data is None or dc.masks:
        return True
    return Path(dc.data).name == "images" and (Path(dc.data).parent / "masks").is_dir()


def choose_mask_weight(config, new: bool = True):
    """``config`` with ``mask_weight: auto`` settled: :data:`TEXT_MASK_WEIGHT` for a new pixel-space
    text run whose images have masks (a caption asks for a defect of a kind, at a place: weighting the
    defect's pixels is what made held-out combinations follow the caption), else 0. A resumed run
    whose config.yaml predates the setting was built without it: 0."""
    dc, mc = config.data, config.model
    if dc.mask_weight != "auto":
        return config
    on = (new and config.train.task == "diffusion" and bool(mc.text_encoder) and not config.latent.latent
          and not config.diffusion.use_kl and has_masks(dc))
    if on:
        from .logging import get_logger

        get_logger().info(f"mask weight auto: {TEXT_MASK_WEIGHT:g} (a defect pixel's loss weighs {1 + TEXT_MASK_WEIGHT:g}x in "
                          "this text run; --mask-weight 0 turns it off)")
    return config.override(mask_weight=TEXT_MASK_WEIGHT if on else 0.0)


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
    channels = dc.channels if dc.channels in (1, 3) else 3  # drawn as the images were (data/source.py)
    out = np.zeros((len(CLASSES) * per_class, 1, size, size), dtype=bool)
    for j, (c, i) in enumerate((c, i) for c in range(len(CLASSES)) for i in range(per_class)):
        rng = np.random.default_rng([dc.builtin_seed, c, i])
        out[j, 0] = make_image_and_mask(c, size, rng, channels, materials_of(dc.builtin_materials))[1]
    if len(out) != n:
        from ..errors import ConfigError

        raise ConfigError("the built-in masks do not line up with the built-in images; use a folder with --masks")
    return torch.from_numpy(out)


__all__ = ["TEXT_MASK_WEIGHT", "builtin_masks", "choose_mask_weight", "has_masks", "with_loss_masks"]
