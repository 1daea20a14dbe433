"""Training a diffusion upsampler (``train.task = sr``; ``difforge train-sr``): SR3 / guided-diffusion style.

Per image: the high-res training image x (``image_size``) is the diffusion target; its low-res
version z = degrade(x) (:mod:`difforge.data.degrade`, settings ``sr_*`` and ``scale``, made on
the fly with the step's random draws) is optionally noised to z_s (noise-conditioning
augmentation, ``noise_aug`` = s_max > 0: s ~ U[0, s_max] per image, Ho et al. 2022; see
:mod:`difforge.diffusion.superres`), up-sampled bicubically to the high-res size and concatenated
to x_t as C more input channels. The loss is the diffusion task's (same objective, timestep
sampler, label dropout for CFG, importance weights), so class-conditional training, EMA, resume
and time budgets come with the shared loop. ``sr_val_data``: held-out PSNR / SSIM as it trains
(:mod:`~difforge.train.tasks.sr_validation`).

The model file is a diffusion model file with ``meta["inputs"]["low_res"]`` (scale, degradation,
noise augmentation); ``difforge upscale`` and the cascade (``sample --upscale``) read it, and
``difforge sample`` refuses it (it needs a low-res image).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional

import torch

from ...data.degrade import Degradation, degrade, upsample
from ...diffusion.superres import AUG_DIM, LowResConditionedNet, level_features, noise_low_res, residual_scale
from ...errors import ConfigError
from ...models import registry
from ..batches import Batch
from ..rng import StepRNG
from .base import Snapshot
from .diffusion import DiffusionTask
from .inpaint import _Widened
from .sr_validation import SRValidation


def degradation_of(config) -> Degradation:
    """The :class:`Degradation` of a config's ``sr`` section."""
    sc = config.sr
    return Degradation(sc.scale, sc.sr_down, float(sc.sr_blur), float(sc.sr_noise), int(sc.sr_jpeg)).check()


def check_sizes(config) -> None:
    size, scale = config.data.image_size, config.sr.scale
    if size % scale:
        raise ConfigError(f"image_size {size} is not divisible by scale {scale}; the low-res training images would not be whole "
                          f"(try --image-size {size - size % scale or scale * 4})")


def low_res_inputs(deg: Degradation, noise_aug: float, residual: Optional[float] = None) -> Dict:
    """``meta["inputs"]`` of an upsampler: what the extra channels are and how they were made;
    ``residual`` the scale k of a residual upsampler (it diffuses k (x - bicubic(z)))."""
    aug = {"max": noise_aug, "features": "(s, sin(pi s / 2))", "path": "cos(pi s / 2) z + sin(pi s / 2) e"} if noise_aug > 0 else None
    low = {"scale": deg.scale, "layout": "x_t, bicubic up-sampling of the low-res image", "degradation": deg.to_dict(), "noise_aug": aug}
    if residual is not None:
        low["residual"] = {"scale": residual, "what": "the sampler draws k (x - bicubic(z)); x = bicubic(z) + r / k"}
    return {"low_res": low}


class SuperResTask(DiffusionTask):
    """Diffusion training of x given the up-sampled degraded (and optionally noised) low-res image."""

    name = "sr"

    def check_data(self, data) -> None:
        super().check_data(data)
        check_sizes(self.config)

    def build(self, data, device: torch.device) -> torch.nn.Module:
        c = self.config
        if c.latent.latent:
            raise ConfigError("super-resolution training runs in pixel space; drop latent for it")
        if c.data.augment_p > 0:
            raise ConfigError("augment does not move the low-res input; drop --augment for super-resolution training")
        if c.data.crop_p > 0:
            raise ConfigError("--crop-p does not cut the low-res input; drop it for super-resolution training")
        self.deg = degradation_of(c)
        self.noise_aug = 0.0 if c.sr.noise_aug == "auto" else float(c.sr.noise_aug)  # auto: a cascade settles it (train/cascade_scale.py)
        if self.noise_aug > 0:
            if "aug_dim" not in registry.options(c.model.network):
                raise ConfigError(f"noise_aug needs a network with an augmentation input (unet, unet-small, unet-tiny), not {c.model.network!r}")
            c.model.network_options = dict(c.model.network_options, aug_dim=AUG_DIM)  # the level is a network input
        self.channels = int(data.images.shape[1])
        net = super().build(_Widened(data, 2 * self.channels), device)
        self.meta["data"]["channels"] = self.channels
        self.residual = self._residual_scale(data) if c.sr.sr_residual else None
        self.meta["inputs"] = low_res_inputs(self.deg, self.noise_aug, self.residual)
        self.validation = SRValidation(c, data, self.deg, self.dist, diffusion=True) if c.sr.sr_val_data else None
        return net

    def _residual_scale(self, data) -> float:
        """k of :func:`~difforge.diffusion.superres.residual_scale` on up to 256 training images (degraded without noise)."""
        hr = data.images[:256].float().div(127.5).sub(1.0)
        base = upsample(degrade(hr, self.deg.deterministic), self.deg.scale)
        return round(residual_scale(hr, base), 4)

    def conditioning(self, x: torch.Tensor, rng: StepRNG):
        """(the up-sampled, possibly noised low-res image, the level features or None, the up-sampled
        un-noised low-res image: a residual upsampler's base) of a batch."""
        s, h, w = self.deg.scale, x.shape[-2] // self.deg.scale, x.shape[-1] // self.deg.scale
        shape = (x.shape[1], h, w)
        z = degrade(x.float(), self.deg, noise=rng.randn(shape, x.device) if self.deg.noise > 0 else None)
        base = upsample(z, s).to(x.dtype)
        if self.noise_aug <= 0:
            return base, None, base
        level = rng.rand((), x.device) * self.noise_aug
        noised = noise_low_res(z, level, rng.randn(shape, x.device))
        return upsample(noised, s, clamp=False).to(x.dtype), level_features(level), base

    def loss(self, net, batch: Batch, rng: StepRNG) -> Dict[str, torch.Tensor]:
        low, aug, base = self.conditioning(batch.x, rng)
        cond = LowResConditionedNet(net, low, aug, learn_sigma=self.config.model.learn_sigma)
        if self.residual is not None:  # the diffused variable is k (x - bicubic(z)) (diffusion/superres.py ResidualCodec)
            batch = dataclasses.replace(batch, x=(batch.x - base) * self.residual)
        return super().loss(cond, batch, rng)

    def preview(self, snapshot: Snapshot, step: int, data) -> Optional[Path]:
        """Rows: the low-res inputs (nearest up-sampled), the model's upscaling, the originals."""
        from ...pipeline.upscale import Upscaler, preview_grid

        up = Upscaler.from_pipeline(self.pipeline(snapshot))
        return preview_grid(up, data, self.deg, self.config.train, snapshot.samples_dir / f"step_{step:07d}.{self.config.train.image_format}")

    def evaluate(self, snapshot: Snapshot, step: int, data) -> Dict[str, float]:
        """Held-out PSNR / SSIM with ``sr_val_data`` (:mod:`~difforge.train.tasks.sr_validation`), else nothing."""
        from ...pipeline.upscale import Upscaler

        if self.validation is None:
            return {}
        up = Upscaler.from_pipeline(self.pipeline(snapshot))
        return self.validation.evaluate(up, step, self.meta, self.config.train.preview_steps)

    def describe(self) -> str:
        d = self.deg
        extra = f"blur {d.blur:g}, " if d.blur else ""
        extra += f"noise {d.noise:g}, " if d.noise else ""
        extra += f"JPEG q{d.jpeg}, " if d.jpeg else ""
        aug = f"noise augmentation s ~ U[0, {self.noise_aug:g}]" if self.noise_aug else "no noise augmentation"
        val = f"; validation on {self.validation.source} every {self.config.train.eval_every} steps" if self.validation else ""
        res = f"residual x - bicubic(z) scaled by {self.residual:g}, " if self.residual is not None else ""
        return f"x{d.scale} diffusion upsampler ({d.down} down, {extra}{res}{aug}); " + super().describe() + val


__all__ = ["SuperResTask", "check_sizes", "degradation_of", "low_res_inputs"]
