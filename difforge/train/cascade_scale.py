"""``cascade_scale: auto``: an x4 cascade (a quarter-size model and an x4 upsampler) for a folder whose images a
quarter-size copy keeps, an x2 cascade for the rest -- decided from the training images before the run starts.

Why (issue 16, README "Which cascade: what a small copy loses"): measured in 12 minutes of the 2-core CPU, the
x4 cascade is the better one for shapes on flat backgrounds (glyphs at 64 px: 2.46-3.07x the real-vs-real distance
over four training runs, mean 2.77x, against 8.1x as x2) and the worse one for textures (the built-in defects: 5.15x against 2.75x), because a 16 px image
holds a letter but not wood grain, and the x4 upsampler alone cannot invent that grain again (on real 16 px defects
3.4x the floor; on real 16 px glyphs 1.8x). What tells the two apart is how much of an image a small copy loses:
:func:`detail_share` is the fraction of an image's grey-level variance that goes when it is reduced ``factor``-fold
(antialiased bicubic) and brought back (bicubic). A letter on a smooth background keeps its variance in the letter,
so its quarter-size copy loses 6% of it (median over the glyphs: 0.063, 90th percentile 0.092); fine grain is
variance at the finest scale, so the built-in defects lose 31% (their smoothest class, large patches, 8%; real
photographed textures -- brick, grass, gravel -- 56-66%). ``auto`` takes x4 when the median image of the folder loses
at most :data:`DETAIL_LIMIT` and x2 otherwise, textures first: an image between the two kinds gets the cascade that
was the default before the choice existed.

An x4 cascade's upsampler trains with noise-conditioning augmentation (:data:`NOISE_AUG_BY_SCALE`, ``noise_aug:
auto``): without it the x4 upsampler turns the quarter-size model's grain into speckle (glyphs: 18.7 against 2.4-3.2);
the x2 one trains without, because the textures lose with it (13.05 -> 17.7 at 0.15).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, DataConfig

DETAIL_LIMIT = 0.10  # auto picks x4 when the median image loses at most this share of its variance at a quarter size
FALLBACK_SCALE = 2  # what auto picks when the images cannot tell (none readable, all flat) or x4 does not fit the size
PROBE_IMAGES = 128  # training images the choice looks at, spread evenly over the folder (its classes in proportion)
FLAT_VARIANCE = 1.0  # grey levels^2: an image this flat has no detail to lose and is left out of the median
NOISE_AUG_BY_SCALE = {2: 0.0, 4: 0.15}  # ``noise_aug: auto`` of the cascade's upsampler, by its factor (module docstring)


def detail_share(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Per image of uint8 ``images`` (N, C, H, W), the share of its grey-level variance that a copy reduced
    ``factor``-fold and brought back to full size loses (0: the small copy holds everything; white noise: ~0.95);
    NaN for an image flatter than :data:`FLAT_VARIANCE`."""
    x = images.float().mean(1, keepdim=True)
    size, small = x.shape[-1], x.shape[-1] // factor
    reduced = F.interpolate(x, size=(small, small), mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(reduced, size=(size, size), mode="bicubic", align_corners=False)
    variance = x.flatten(1).var(1, unbiased=False)
    lost = (x - back).pow(2).flatten(1).mean(1)
    return torch.where(variance >= FLAT_VARIANCE, lost / variance.clamp_min(FLAT_VARIANCE), torch.tensor(float("nan")))


def probe_images(cfg: DataConfig, size: int, limit: int = PROBE_IMAGES) -> Optional[torch.Tensor]:
    """Up to ``limit`` training images at ``size`` px as uint8 (N, C, H, W), every k-th of the folder (or of the
    built-in set); None when none can be read. A missing folder raises its usual error; an unreadable file is left
    out here, and the load that follows names it."""
    if cfg.data is None:
        from ..config import materials_of
        from ..data.builtin import CLASSES, generate_arrays

        per_class = max(1, min(cfg.builtin_per_class, -(-limit // len(CLASSES))))
        arrays, _, _ = generate_arrays(size=size, per_class=per_class, seed=cfg.builtin_seed, channels=3,
                                       materials=materials_of(cfg.builtin_materials))
        return torch.from_numpy(arrays).permute(0, 3, 1, 2)
    from ..data.folder import load_image
    from ..data.scan import scan_folder

    paths = scan_folder(cfg.data, conditional=cfg.conditional, from_filenames=bool(cfg.labels_from_filenames)).paths
    picked = paths[:: max(1, -(-len(paths) // limit))]
    images = []
    for path in picked:
        try:
            images.append(load_image(path, size, 3))
        except Exception:  # noqa: BLE001 -- any unreadable file: the training load reports it with its reason
            continue
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) if images else None


def choose_scale(config: Config) -> Tuple[int, str]:
    """``(2 or 4, why)`` for a new cascade of ``config.data.image_size`` px with ``cascade_scale: auto``."""
    size = config.data.image_size
    if size % 8:
        return FALLBACK_SCALE, f"an x4 upsampler needs a size divisible by 8, not {size}"
    images = probe_images(config.data, size)
    shares = detail_share(images, 4) if images is not None else torch.tensor([])
    shares = shares[~torch.isnan(shares)]
    if not len(shares):
        return FALLBACK_SCALE, "no training image with detail to measure"
    median = float(shares.median())
    kept = f"a {size // 4} px copy keeps {1 - median:.0%} of the images' variation (median of {len(shares)} images)"
    if median <= DETAIL_LIMIT:
        return 4, f"{kept}: shapes, as glyphs; --cascade-scale 2 for fine texture"
    return 2, f"{kept}: fine detail, as textures; x4 from {1 - DETAIL_LIMIT:.0%}"


def noise_aug_for(config: Config) -> float:
    """``noise_aug: auto`` settled: the cascade upsampler's by its factor (:data:`NOISE_AUG_BY_SCALE`) for a
    cascade's base run, 0 for any other run (a train-sr run of its own trains without unless told)."""
    train = config.train
    if train.task == "diffusion" and train.cascade is True and train.cascade_scale != "auto":
        return NOISE_AUG_BY_SCALE[int(train.cascade_scale)]
    return 0.0


__all__ = ["DETAIL_LIMIT", "FALLBACK_SCALE", "NOISE_AUG_BY_SCALE", "PROBE_IMAGES", "choose_scale", "detail_share",
           "noise_aug_for", "probe_images"]
