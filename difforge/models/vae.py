"""A convolutional VAE with a diagonal-Gaussian posterior: the encode/decode pair of latent diffusion.

Rombach et al. 2022 (LDM), sec. 3.1 and appendix G: an encoder maps an image x (C, H, W) to a
posterior q(z|x) = N(mean, diag(exp(logvar))) over z of shape (latent_channels, H/f, W/f), a
decoder maps z back to pixels, and a small KL term toward N(0, I) keeps the latent space smooth.
Diffusion then runs on z (times a measured scale factor), f^2 * C / latent_channels fewer values.

Layout, with ``levels = log2(f) + 1`` and width ``base_channels * channel_mult[i]`` at level i::

    encoder: conv_in -> per level [ResBlock x num_res_blocks, Downsample (not the last)]
             -> mid: ResBlock, Attention (optional), ResBlock -> GN, act, conv -> 2 * latent_channels
    decoder: conv_in -> mid: ResBlock, Attention (optional), ResBlock
             -> per level, deepest first [ResBlock x (num_res_blocks + 1), Upsample (not the first)]
             -> GN, act, conv -> in_channels

Attention (one ``scaled_dot_product_attention``) runs only at the lowest resolution, where it
costs (H/f * W/f)^2 per head. A VAE is not a denoiser (no ``t``, no ``y``): it is registered in
``models.registry`` with ``kind="autoencoder"``, so ``registry.build(vae.arch, **vae.config)``
rebuilds one as stored in its model file, while ``registry.available()`` and
``difforge info --networks`` keep listing the ``net(x, t, y)`` networks only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .unet import Downsample, Upsample  # the same stride-2 conv / nearest x2 + conv as the UNet
from .layers import Attention2d, check_bool, check_float, check_int, check_ints, group_norm, make_act
from . import registry

_NET = "vae"
LOGVAR_RANGE = (-30.0, 20.0)  # as LDM: keeps exp(logvar) finite in fp32


@dataclass
class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), per element of a (B, C, h, w) latent."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def __post_init__(self):
        self.logvar = self.logvar.clamp(*LOGVAR_RANGE)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z = mean + std * eps (the reparametrisation trick; gradients reach mean and logvar)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """Per-sample KL(q || N(0, I)) in nats: 0.5 * sum(mean^2 + var - 1 - logvar) over (C, h, w)."""
        terms = self.mean.float().pow(2) + self.logvar.float().exp() - 1.0 - self.logvar.float()
        return 0.5 * terms.flatten(1).sum(dim=1)


class ResBlock(nn.Module):
    """GN -> act -> conv3 -> GN -> act -> dropout -> conv3, plus a 1x1 skip when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, act: str, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_ch), make_act(act), nn.Conv2d(in_ch, out_ch, 3, padding=1),
            group_norm(out_ch), make_act(act), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _mid(ch: int, attention: bool, head_channels: int, act: str, dropout: float) -> nn.Sequential:
    parts: List[nn.Module] = [ResBlock(ch, ch, act, dropout)]
    if attention:
        parts.append(Attention2d(ch, head_channels))
    parts.append(ResBlock(ch, ch, act, dropout))
    return nn.Sequential(*parts)


def default_channel_mult(downsample: int) -> List[int]:
    """One multiplier per level: 1, 2, 4, 4, ... (f=4 -> 1,2,4; f=8 -> 1,2,4,4)."""
    levels = int(math.log2(downsample)) + 1
    return [min(2**i, 4) for i in range(levels)]


@registry.register(_NET, kind="autoencoder")
class AutoencoderKL(nn.Module):
    """Convolutional VAE (see the module docstring).

    Args:
        in_channels: image channels (1 or 3).
        latent_channels: channels of z.
        downsample: f, a power of two: z is (H/f, W/f).
        base_channels: width of the first level.
        channel_mult: per-level width multipliers, log2(f) + 1 of them; None = :func:`default_channel_mult`.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        attention: self-attention in the middle blocks (the lowest resolution).
        head_channels: channels per attention head.
        act: activation name (see ``layers.ACTIVATIONS``).
        dropout: dropout inside residual blocks.
    """

    arch = _NET

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        downsample: int = 8,
        base_channels: int = 32,
        channel_mult: Optional[Sequence[int]] = None,
        num_res_blocks: int = 1,
        attention: bool = True,
        head_channels: int = 32,
        act: str = "silu",
        dropout: float = 0.0,
    ):
        super().__init__()
        downsample = check_int(_NET, "downsample", downsample, 1)
        if downsample & (downsample - 1):
            raise ConfigError(f"vae option downsample must be a power of two (1, 2, 4, 8, 16), got {downsample}")
        levels = int(math.log2(downsample)) + 1
        mult = default_channel_mult(downsample) if channel_mult is None else check_ints(_NET, "channel_mult", channel_mult, 1)
        if len(mult) != levels:
            raise ConfigError(
                f"vae option channel_mult needs {levels} entries for downsample {downsample} (one per level), got {len(mult)}: {mult}"
            )
        self.config: Dict[str, Any] = dict(
            in_channels=check_int(_NET, "in_channels", in_channels, 1),
            latent_channels=check_int(_NET, "latent_channels", latent_channels, 1),
            downsample=downsample,
            base_channels=check_int(_NET, "base_channels", base_channels, 1),
            channel_mult=mult,
            num_res_blocks=check_int(_NET, "num_res_blocks", num_res_blocks, 1),
            attention=check_bool(_NET, "attention", attention),
            head_channels=check_int(_NET, "head_channels", head_channels, 1),
            act=act,
            dropout=check_float(_NET, "dropout", dropout, 0.0, 1.0),
        )
        make_act(act)  # validates the name
        self.in_channels, self.latent_channels, self.downsample = in_channels, latent_channels, downsample
        widths = [base_channels * m for m in mult]

        self.enc_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        down: List[nn.Module] = []
        ch = widths[0]
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                down.append(ResBlock(ch, w, act, dropout))
                ch = w
            if i < levels - 1:
                down.append(Downsample(ch))
        self.enc_down = nn.Sequential(*down)
        self.enc_mid = _mid(ch, attention, head_channels, act, dropout)
        self.enc_out = nn.Sequential(group_norm(ch), make_act(act), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1))

        ch = widths[-1]
        self.dec_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.dec_mid = _mid(ch, attention, head_channels, act, dropout)
        up: List[nn.Module] = []
        for i in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                up.append(ResBlock(ch, widths[i], act, dropout))
                ch = widths[i]
            if i > 0:
                up.append(Upsample(ch))
        self.dec_up = nn.Sequential(*up)
        self.dec_out = nn.Sequential(group_norm(ch), make_act(act), nn.Conv2d(ch, in_channels, 3, padding=1))

    def latent_shape(self, image_size: int) -> tuple:
        """(latent_channels, image_size / f, image_size / f) after :meth:`check_image_size`."""
        self.check_image_size(image_size, self.config)
        s = image_size // self.downsample
        return (self.latent_channels, s, s)

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        """ConfigError naming sizes that work unless ``image_size`` is a multiple of f."""
        f = int(config.get("downsample", 8))
        if image_size % f:
            low, high = (image_size // f) * f, (image_size // f + 1) * f
            works = f"{low} or {high} would work" if low > 0 else f"{high} would work"
            raise ConfigError(f"a VAE with downsample {f} needs an image size divisible by {f}; {works}, got {image_size}")

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images in [-1, 1], (B, C, H, W) -> q(z|x) over (B, latent_channels, H/f, W/f)."""
        h = self.enc_out(self.enc_mid(self.enc_down(self.enc_in(x))))
        mean, logvar = h.float().chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, h, w) -> images (B, C, h*f, w*f), about [-1, 1] (not clamped)."""
        return self.dec_out(self.dec_up(self.dec_mid(self.dec_in(z))))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None):
        """(reconstruction, posterior). With ``noise`` (standard normal, the latent's shape) the
        decoder sees the posterior sample z = mean + std * noise, as in training; without, the
        posterior mean (a deterministic reconstruction). The noise is an argument, not drawn
        here, so the caller's counter-based generator decides it (and DDP sees one forward)."""
        posterior = self.encode(x)
        z = posterior.mode() if noise is None else posterior.mean + posterior.std * noise.to(posterior.mean)
        return self.decode(z), posterior


VAE_ARCHS = {_NET: AutoencoderKL}  # the autoencoders of registry.available("autoencoder")


def build_vae(name: str = _NET, **config: Any) -> AutoencoderKL:
    """``registry.build`` for autoencoders only: ConfigError on a name that is not one, or bad options."""
    if registry.kind_of(name) != "autoencoder":
        raise ConfigError(f"unknown autoencoder {name!r}; choose one of {', '.join(registry.available('autoencoder'))}")
    return registry.build(name, **config)


__all__ = ["AutoencoderKL", "DiagonalGaussian", "VAE_ARCHS", "build_vae", "default_channel_mult"]
