"""A diffusion upsampler's conditioning: the upsampled low-res image as extra input channels, and
the noise-conditioning augmentation of cascaded diffusion (Ho et al. 2022, sec. 4.2).

The network of an upsampler (SR3, Saharia et al. 2021; guided-diffusion's ``SuperResModel``) sees
2C channels: x_t and the bicubic up-sampling of the low-res image, and predicts for x_t as usual.
:class:`LowResConditionedNet` fixes that second half, so samplers and the denoiser see a plain
``net(x_t, t, y)``.

Noise-conditioning augmentation: the low-res image z is replaced by

    z_s = cos(pi s / 2) z + sin(pi s / 2) e,   e ~ N(0, I),   s in [0, 1]

(a variance-preserving path of its own, exactly z at s = 0), and the network is told s through
its augmentation vector (``aug_labels`` of the UNet, :func:`level_features` = (s, sin(pi s / 2))).
Training draws s ~ U[0, s_max] per image; sampling picks one s. At s = 0 the features are the
zero vector, which the UNet's bias-free augmentation embedding maps to nothing, and z_0 = z: the
result equals the plain (un-augmented) path exactly.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import UserError

AUG_DIM = 2  # length of level_features


def level_features(s: torch.Tensor) -> torch.Tensor:
    """(B,) noise levels s -> (B, 2) features (s, sin(pi s / 2)): zero at s = 0."""
    s = s.float()
    return torch.stack([s, torch.sin(0.5 * math.pi * s)], dim=1)


def noise_low_res(z: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_s = cos(pi s / 2) z + sin(pi s / 2) noise, s (B,) or a number."""
    s = torch.as_tensor(s, dtype=z.dtype, device=z.device).reshape(-1, *([1] * (z.ndim - 1)))
    a = torch.cos(0.5 * math.pi * s)
    b = torch.sin(0.5 * math.pi * s)
    return torch.where(s == 0, z, a * z + b * noise.to(z.dtype))


class LowResConditionedNet(torch.nn.Module):
    """An upsampler's network seen as a plain one: ``net(x_t, t, y)`` with the upsampled low-res
    image ``low`` (B or 1, C, H, W) and the level features ``aug`` ((B or 1, AUG_DIM), or None =
    not told) fixed. The inner network takes 2C channels and outputs 2C (x2 with learned
    variance); the first C (and with ``learn_sigma`` the first C of the second half) are the
    prediction. A CFG batch of 2B repeats ``low`` and ``aug``."""

    def __init__(self, net: torch.nn.Module, low: torch.Tensor, aug: Optional[torch.Tensor] = None, learn_sigma: bool = False):
        super().__init__()
        self.net, self.low, self.aug, self.learn_sigma = net, low, aug, learn_sigma

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None, **cond) -> torch.Tensor:
        reps = x.shape[0] // self.low.shape[0]
        inp = torch.cat([x, self.low.to(x.dtype).repeat(reps, 1, 1, 1)], dim=1)
        if self.aug is not None:
            cond["aug_labels"] = self.aug.to(x.device).repeat(x.shape[0] // self.aug.shape[0], 1)
        out = self.net(inp, t, y, **cond)
        c = x.shape[1]
        if self.learn_sigma:
            half = out.shape[1] // 2
            return torch.cat([out[:, :c], out[:, half : half + c]], dim=1)
        return out[:, :c]


RESIDUAL_STD = 0.5  # the scaled residual's target spread: about that of images in [-1, 1]
RESIDUAL_MAX_SCALE = 64.0


def residual_scale(high: torch.Tensor, base: torch.Tensor) -> float:
    """k with k (high - base) of spread :data:`RESIDUAL_STD` (over a batch of training images).

    Why: x - bicubic(z) of a natural image is small (x4 bicubic's RMS error is ~0.05-0.1 on the
    [-1, 1] scale), and diffusing a signal of std 0.08 under a schedule made for std ~0.5 wastes
    most noise levels on steps where the residual is already drowned -- the same argument as the
    noise shift for larger images. The scale is measured on the user's data, as a latent model's
    scale factor is (Rombach et al. 2022, sec. 4.3.2), and stored in the model file.
    """
    std = float((high.double() - base.double()).std())
    return float(min(max(RESIDUAL_STD / max(std, 1e-8), 1.0), RESIDUAL_MAX_SCALE))


class ResidualCodec:
    """A residual upsampler's sampler space -> pixels: x = clamp(base + r / k, -1, 1).

    The sampler draws the scaled residual r = k (x - bicubic(z)) of the images whose up-sampled
    low-res ``base`` (N, C, H, W) it holds, so an untrained network (r = 0) gives exactly
    bicubic. It stands where a latent model's VAE stands in :class:`~difforge.pipeline.Pipeline`
    (``codec``): the residual is not bounded to [-1, 1], so x0 is not clipped there either.
    """

    def __init__(self, base: torch.Tensor, scale: float):
        self.base, self.scale = base, float(scale)

    def latent_shape(self, image_size: int) -> tuple:
        return (self.base.shape[1], image_size, image_size)

    def decode(self, r: torch.Tensor) -> torch.Tensor:
        return (self.base.to(r.device).float() + r.float() / self.scale).clamp(-1.0, 1.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.base.to(x.device).float()) * self.scale


def refuse_plain_sampling(meta: dict, net, source: str = "") -> None:
    """One UserError when an upsampler's network would be sampled without its low-res image."""
    if (meta.get("inputs") or {}).get("low_res") and not isinstance(net, LowResConditionedNet):
        raise UserError(f"{source or 'this model'} is a super-resolution model: it needs low-res images; "
                        f"use difforge upscale MODEL --input IMG, or sample BASE --upscale MODEL")


__all__ = ["AUG_DIM", "LowResConditionedNet", "RESIDUAL_STD", "ResidualCodec", "residual_scale", "level_features", "noise_low_res", "refuse_plain_sampling"]
