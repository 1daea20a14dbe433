"""Inpainting with any model: fill the white region of a mask, keep every other pixel exactly.

    out = pipe.inpaint("good.png", "mask.png", num=4, class_label="scratch")            # RePaint
    out = pipe.inpaint(img, mask, method="blend", sampler="dpm++2m", steps=20)          # fast
    out.images  # (4, H, W, C) uint8: outside the mask the source's pixels, bit for bit
    out.mask    # (H, W) bool: the pixels that may differ from the source (the mask used)

A thin mode over :meth:`Pipeline.sample_batches`: the constraint is a sampler built by
:func:`difforge.diffusion.inpainting.inpainting_sampler` (RePaint, or blend over any sampler),
guidance (CFG, a classifier, a second model) comes through the pipeline's denoiser as for
``generate``. A latent model inpaints its latents (a latent is regenerated when any pixel under it
is masked); the known pixels are pasted back in pixel space either way.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion.inpainting import METHODS, MaskConditionedNet, inpainting_sampler
from ..diffusion.samplers import get_sampler
from ..errors import DataError, UserError
from .config import SampleConfig
from .interpolate import load_source


@dataclass
class Inpainted:
    """``images`` uint8 (N, H, W, C); ``mask`` bool (H, W), the pixels that may differ from
    ``source`` (uint8 (H, W, C)); ``alpha`` float (H, W), the generated share of each pixel
    (1 in the mask, falling to 0 across a feathered edge)."""

    images: torch.Tensor
    mask: torch.Tensor
    alpha: torch.Tensor
    source: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: List[str]
    method: str

    def grid(self) -> np.ndarray:
        """One row: the source, the source with the mask shown in red, then the results."""
        src = self.source.numpy()
        shown = src.astype(np.float32)
        red = np.array([255, 0, 0] if src.shape[-1] == 3 else [255], dtype=np.float32)
        shown = np.where(self.mask.numpy()[..., None], 0.5 * shown + 0.5 * red, shown).astype(np.uint8)
        from ..data.io import make_grid

        return make_grid(np.concatenate([src[None], shown[None], self.images.numpy()]), nrow=len(self.images) + 2)

    def save(self, out_dir, fmt: str = "png") -> Dict[str, Any]:
        """Write ``inpaint_00000.png`` ... (or ``<class>_00000.png``), ``mask.png`` (0 / 255) and ``inpaint.png`` (:meth:`grid`)."""
        from ..data.io import save_image, save_images

        out_dir = Path(out_dir)
        labels = self.labels.numpy() if self.labels is not None else None
        written: Dict[str, Any] = {
            "images": save_images(self.images.numpy(), out_dir, prefix="inpaint", fmt=fmt, labels=labels, class_names=self.class_names or None)
        }
        written["mask"] = save_image(self.mask.numpy().astype(np.uint8)[..., None] * 255, out_dir / "mask.png")
        written["grid"] = save_image(self.grid(), out_dir / f"inpaint.{fmt}")
        return written


def inpaint(pipe, image, mask, num: int = 4, class_label=None, *, method: Optional[str] = None, resample: int = 10, jump: int = 10,
            feather: int = 0, config: Optional[SampleConfig] = None, seed: int = 0, seeds: Optional[Sequence[int]] = None,
            progress: bool = False, **options) -> Inpainted:
    """``num`` images that are ``image`` outside the white region of ``mask`` and generated inside.

    A mask-conditioned model (``meta["inputs"]["mask_conditioning"]``, :mod:`difforge.train.tasks.inpaint`)
    also sees the mask and the masked image; ``method`` defaults to ``blend`` for it, ``repaint`` otherwise.
    A joint-mask model (:mod:`difforge.train.tasks.joint`) gets the mask as its known mask channel.
    ``image``: a path (resized / center-cropped like training data) or uint8 (H, W, C). ``mask``:
    a path (validated, see :mod:`difforge.data.masks`; same size as the image file) or an (H, W)
    bool / uint8 array at the model's size; white (> 127) = fill. ``method``: ``repaint``
    (Lugmayr et al. 2022: DDPM steps, every ``jump`` steps back up ``jump`` steps, ``resample`` - 1
    times; about ``resample`` x ``steps`` network evaluations, see :func:`~difforge.diffusion.inpainting.repaint_evaluations`) or ``blend``
    (any ``sampler``, ``steps`` evaluations, no resampling; faster, harmonises less).
    ``feather`` > 0 regenerates a band of that many pixels around the mask too and blends it
    linearly into the source (then pixels in that band differ from the source); 0 keeps every
    pixel outside the mask bit for bit. ``class_label``, ``seed``/``seeds``, ``config`` and the
    other keywords as for :meth:`Pipeline.generate`.
    """
    from ..data.io import to_uint8

    conditioned = bool(pipe.meta.get("inputs", {}).get("mask_conditioning"))
    if method is None:  # a mask-conditioned model needs no resampling
        method = "blend" if conditioned else "repaint"
    if method not in METHODS:
        raise UserError(f"unknown inpainting method {method!r} (--method); choose {' or '.join(METHODS)}")
    for name, v, lo in (("resample", resample, 1), ("jump", jump, 1), ("feather", feather, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise UserError(f"{name} (--{name}) must be a whole number >= {lo}, got {v!r}")
    config = _config(config, method, options)
    config, opts = pipe.prepare(config, options)
    src = np.array(load_source(pipe, image))  # a writable copy
    fill = _mask(pipe, mask, image)
    if not fill.any():
        raise UserError("the mask is empty (no pixel above 127): paint the region to fill white on black")
    alpha = _feather(fill, int(feather))
    region = alpha > 0
    labels, seeds = pipe.request(num, class_label, seed, seeds)

    x0 = torch.from_numpy(src).permute(2, 0, 1)[None].float().div(127.5).sub(1.0).to(pipe.device)
    keep = ~region[None, None].to(pipe.device)
    if pipe.codec is not None:  # a latent is regenerated when any pixel under it is filled
        x0 = pipe.codec.encode(x0)
        keep = ~(F.adaptive_max_pool2d((~keep).float(), tuple(x0.shape[-2:])) > 0)
    if conditioned:  # the model sees (x_t, mask, masked image): a view of it with this request's mask
        if pipe.codec is not None:
            raise UserError("a mask-conditioned latent model is not supported")
        if pipe.prompts is not None:
            raise UserError("a mask-conditioned model with a text encoder is not supported for inpainting; use --method repaint")
        net = MaskConditionedNet(pipe.net, region[None, None].float().to(pipe.device), x0, pipe.learn_sigma)
        pipe = type(pipe)(net, pipe.meta, pipe.device, pipe.precision, pipe.source, pipe.codec, pipe.guide, pipe.class_names)
    if pipe.joint_mask:  # the generated mask channel is known everywhere: it is the request's mask
        x0 = torch.cat([x0, region[None, None].float().to(pipe.device) * 2 - 1], dim=1)
        keep = torch.cat([keep.expand(1, pipe.channels, *keep.shape[-2:]), torch.ones_like(keep)], dim=1)
    base = get_sampler(config.sampler) if method == "blend" else None
    fn = inpainting_sampler(method, x0, keep, base, int(resample), int(jump))
    x = pipe.sample_batches(seeds, labels, config, opts, progress=progress, desc=f"inpaint {method}", sampler=fn)
    x = x[:, : pipe.channels]

    made, known = to_uint8(x), torch.from_numpy(src)[None]
    if feather == 0:
        out = torch.where(region[None, :, :, None], made, known)
    else:
        a = alpha[None, :, :, None]
        out = torch.floor(a * made.float() + (1 - a) * known.float() + 0.5).clamp(0, 255).to(torch.uint8)
    return Inpainted(out, region, alpha, torch.from_numpy(src), labels, pipe.class_names, method)


def _config(config: Optional[SampleConfig], method: str, options: Dict[str, Any]) -> SampleConfig:
    """RePaint takes DDPM steps: any other sampler is refused; no step count means the default, not every step."""
    config = config or SampleConfig()
    if method == "repaint":
        asked = options.pop("sampler", None)
        if asked not in (None, "ddpm"):
            raise UserError(f"RePaint (--method repaint) takes DDPM steps; --sampler {asked} works with --method blend")
        config = config.replace(sampler="ddpm")
    if config.steps is None and options.get("steps") is None:
        config = config.replace(steps=SampleConfig().steps)
    return config


def _mask(pipe, mask, image) -> torch.Tensor:
    """The fill mask as bool (size, size) at the model's size."""
    from ..data.masks import THRESHOLD, check_binary, load_mask, read_mask, resize_mask

    size = pipe.image_size
    if isinstance(mask, (np.ndarray, torch.Tensor)):
        arr = np.asarray(mask)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.shape != (size, size):
            raise UserError(f"a mask array must be ({size}, {size}) for this model, got {arr.shape}")
        if arr.dtype != np.bool_:
            if arr.dtype != np.uint8:
                raise UserError(f"a mask array must be bool or uint8 (0 / 255), got {arr.dtype}")
            check_binary(arr, "array")
            arr = arr > THRESHOLD
        return torch.from_numpy(arr.copy())
    path = Path(mask)
    if not path.is_file():
        raise UserError(f"mask {path} does not exist; check the path")
    try:
        if isinstance(image, (str, Path)):
            return torch.from_numpy(load_mask(path, size, image=image))
        return torch.from_numpy(resize_mask(read_mask(path), size))
    except DataError as e:
        raise UserError(str(e)) from None


def _feather(fill: torch.Tensor, px: int) -> torch.Tensor:
    """Generated share per pixel: 1 in ``fill``, 1 - d / (px + 1) at chessboard distance d <= px outside, else 0."""
    alpha = fill.float()
    grown = fill.float()[None, None]
    for d in range(1, px + 1):
        grown = F.max_pool2d(grown, 3, stride=1, padding=1)
        alpha = torch.maximum(alpha, grown[0, 0] * (1.0 - d / (px + 1)))
    return alpha


__all__ = ["Inpainted", "inpaint"]
