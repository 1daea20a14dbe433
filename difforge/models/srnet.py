"""The fast regression upscaler: residual dense blocks + PixelShuffle (IDDM's ``srv1`` idea).

``net(lr) -> hr``: a low-resolution image (B, C, h, w) in [-1, 1] to (B, C, s h, s w), any h, w
(no down-sampling inside, so no size constraint). Layout (Zhang et al. 2018, "Residual Dense
Network for Image Super-Resolution", sec. 3):

- a 3x3 head conv to ``channels`` features F0;
- ``blocks`` residual dense blocks: ``layers`` conv + activation layers, each seeing the block
  input and every earlier layer's output (``growth`` channels each), a 1x1 local fusion back to
  ``channels`` and a local residual;
- global fusion (1x1 over every block's output, 3x3), plus F0 (global residual);
- up-sampling: log2(s) stages of 3x3 conv to 4x channels + PixelShuffle(2) (or one PixelShuffle(s)
  for s = 3, 5, 6, 7), a 3x3 conv to C;
- plus the bicubic up-sampling of the input, so the network learns the residual (VDSR's trick,
  Kim et al. 2016): at initialisation (zeroed last conv) it *is* bicubic, and a short CPU run
  can only improve on it.

Registered as ``rdn-sr`` (and ``srv1``, IDDM's name, the same network); the registry kind is
``upscaler`` (not a ``net(x, t, y)`` denoiser), so a model file of kind ``upscaler`` names it.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import make_act, zero_
from .registry import register


def _positive(name: str, value, lo: int = 1, hi: int = 1024) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name}={value!r} must be a whole number in {lo}..{hi}")
    return value


class DenseBlock(nn.Module):
    """``layers`` densely connected conv layers, 1x1 local fusion, local residual."""

    def __init__(self, channels: int, growth: int, layers: int, act: str):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels + i * growth, growth, 3, padding=1) for i in range(layers))
        self.act = make_act(act)
        self.fuse = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + self.fuse(torch.cat(feats, dim=1))


class Upsampler(nn.Sequential):
    """x s by PixelShuffle: log2(s) stages of x2 for a power of two, else one stage of x s."""

    def __init__(self, channels: int, scale: int):
        stages = [2] * int(math.log2(scale)) if scale & (scale - 1) == 0 else [scale]
        layers = []
        for r in stages:
            layers += [nn.Conv2d(channels, channels * r * r, 3, padding=1), nn.PixelShuffle(r)]
        super().__init__(*layers)


@register("rdn-sr", kind="upscaler")
class RDNUpscaler(nn.Module):
    """Residual dense network upscaler (see the module docstring): ``net(lr) -> hr``."""

    arch = "rdn-sr"

    def __init__(self, in_channels: int = 3, scale: int = 4, channels: int = 32, blocks: int = 4, layers: int = 4,
                 growth: int = 16, act: str = "relu"):
        super().__init__()
        self.config: Dict[str, Any] = dict(
            in_channels=_positive("in_channels", in_channels, 1, 4), scale=_positive("scale", scale, 2, 8),
            channels=_positive("channels", channels), blocks=_positive("blocks", blocks, 1, 64),
            layers=_positive("layers", layers, 1, 32), growth=_positive("growth", growth), act=act,
        )
        self.scale = scale
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(DenseBlock(channels, growth, layers, act) for _ in range(blocks))
        self.fuse = nn.Sequential(nn.Conv2d(channels * blocks, channels, 1), nn.Conv2d(channels, channels, 3, padding=1))
        self.up = Upsampler(channels, scale)
        self.tail = zero_(nn.Conv2d(channels, in_channels, 3, padding=1))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        f0 = self.head(lr)
        h, outs = f0, []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        h = self.fuse(torch.cat(outs, dim=1)) + f0
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.tail(self.up(h))


register("srv1", kind="upscaler")(RDNUpscaler)  # IDDM's name of its residual-dense PixelShuffle network

__all__ = ["RDNUpscaler"]
