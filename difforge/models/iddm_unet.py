"""IDDM's default network (its ``unet``), under difforge's contract ``net(x, t, y=None) -> Tensor``.

Written from the architecture of chairc/Integrated-Design-Diffusion-Model so its checkpoints import
exactly (``difforge convert --from iddm``); the parameter names are IDDM's, so the mapping is the
identity but for the label table. Widths c, 2c, 4c, 8c (IDDM's channel list ``[_, 64, 128, 256, 512]``
is c = 64); three halvings, so the image size must be divisible by 8::

    inc   DoubleConv(C -> c)                                       size
    down1 MaxPool, DoubleConv(c, residual), DoubleConv(c -> 2c)   + t   size/2   sa1 attention
    down2                                  (2c -> 4c)              + t   size/4   sa2
    down3                                  (4c -> 4c)              + t   size/8   sa3
    bot1..3 DoubleConv 4c -> 8c -> 8c -> 4c
    up1   bilinear x2, cat(skip down2), DoubleConv(8c, residual), DoubleConv(8c -> 2c) + t   sa4
    up2   ... cat(skip down1)  (4c -> c) + t   sa5
    up3   ... cat(inc)         (2c -> c) + t   sa6
    outc  conv 1x1 (c -> C, or 2C with learn_sigma)

DoubleConv is conv3x3 (no bias), GroupNorm(1), act, conv3x3, GroupNorm(1), with ``act(x + ...)``
when residual. Blocks add ``Linear(SiLU(emb))`` per channel. Attention is 4-head self-attention
over the pixels (pre-LayerNorm, residual) and a residual LayerNorm-Linear-act-Linear feed-forward.
The time embedding is IDDM's sinusoid of the raw step ``t``, [sin, cos] of ``time_channel``
(256) features, with a class embedding *added* to it. IDDM conditions on ``y=None`` by adding
nothing; here the null class ``num_classes`` is a table row that starts at zero, so a converted
model's null row reproduces IDDM's unconditional branch exactly (its CFG dropout trained it).

Activations follow IDDM's code exactly, including its two spellings of leaky ReLU: ``leakyrelu``
is LeakyReLU(0.2) inside the blocks and SiLU after a residual sum; ``lrelu`` is the reverse pair
(SiLU inside, leaky_relu(0.01) after the sum).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .layers import attention, check_bool, check_int, same_layout
from .registry import register

_NET = "iddm-unet"
# name -> (activation inside the blocks, activation after a residual sum), as IDDM computes them
_ACTS = {
    "silu": (nn.SiLU, F.silu),
    "relu": (nn.ReLU, F.relu),
    "relu6": (nn.ReLU6, F.relu6),
    "gelu": (nn.GELU, F.gelu),
    "leakyrelu": (lambda: nn.LeakyReLU(0.2), F.silu),
    "lrelu": (nn.SiLU, F.leaky_relu),
}


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, act: str, mid: Optional[int] = None, residual: bool = False):
        super().__init__()
        mid = mid or cout
        self.residual = residual
        self.after_sum = _ACTS[act][1]
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.GroupNorm(1, mid), _ACTS[act][0](),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.GroupNorm(1, cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_sum(x + self.double_conv(x)) if self.residual else self.double_conv(x)


def _time_layer(emb: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, act: str):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cin, act, residual=True), DoubleConv(cin, cout, act))
        self.emb_layer = _time_layer(emb, cout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x) + self.emb_layer(emb)[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, act: str):
        super().__init__()
        self.conv = nn.Sequential(DoubleConv(cin, cin, act, residual=True), DoubleConv(cin, cout, act, mid=cin // 2))
        self.emb_layer = _time_layer(emb, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1)) + self.emb_layer(emb)[:, :, None, None]


class _MultiHead(nn.Module):
    """Multi-head self-attention with torch's ``nn.MultiheadAttention`` parameter layout
    (``in_proj_weight`` = [W_q; W_k; W_v], ``out_proj``), computed through SDPA."""

    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * ch, ch))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * ch))
        self.out_proj = nn.Linear(ch, ch)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        b, n, c = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


class SelfAttention(nn.Module):
    def __init__(self, ch: int, act: str, heads: int = 4):
        super().__init__()
        if ch % heads:
            raise ConfigError(f"{_NET}: attention width {ch} must be divisible by its {heads} heads; use base_channels divisible by 4")
        self.mha = _MultiHead(ch, heads)
        self.ln = nn.LayerNorm(ch)
        self.ff_self = nn.Sequential(nn.LayerNorm(ch), nn.Linear(ch, ch), _ACTS[act][0](), nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = x.flatten(2).transpose(1, 2)
        s = self.mha(self.ln(s)) + s
        s = self.ff_self(s) + s
        return s.transpose(1, 2).reshape(b, c, h, w)


def iddm_time_encoding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """IDDM's ``pos_encoding``: [sin(t w), cos(t w)] with w_i = 10000^(-2i/dim), t the raw step."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=t.device, dtype=torch.float32) / dim)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


@register(_NET)
class IDDMUNet(nn.Module):
    """IDDM's ``unet`` (see the module docstring). ``base_channels`` is IDDM's ``channel[1]``."""

    arch = _NET

    def __init__(self, image_size: int = 64, in_channels: int = 3, base_channels: int = 64, time_channel: int = 256,
                 act: str = "silu", num_classes: int = 0, learn_sigma: bool = False):
        super().__init__()
        if act not in _ACTS:
            raise ConfigError(f"{_NET} option act={act!r} is not supported; choose one of {', '.join(_ACTS)}")
        self.config: Dict[str, Any] = dict(
            image_size=check_int(_NET, "image_size", image_size, 8), in_channels=check_int(_NET, "in_channels", in_channels, 1),
            base_channels=check_int(_NET, "base_channels", base_channels, 4), time_channel=check_int(_NET, "time_channel", time_channel, 2),
            act=act, num_classes=check_int(_NET, "num_classes", num_classes, 0), learn_sigma=check_bool(_NET, "learn_sigma", learn_sigma),
        )
        self.check_image_size(image_size, self.config)
        self.in_channels, self.num_classes, self.time_channel = in_channels, num_classes, time_channel
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        c, e = base_channels, time_channel
        self.inc = DoubleConv(in_channels, c, act)
        self.down1, self.sa1 = DownBlock(c, 2 * c, e, act), SelfAttention(2 * c, act)
        self.down2, self.sa2 = DownBlock(2 * c, 4 * c, e, act), SelfAttention(4 * c, act)
        self.down3, self.sa3 = DownBlock(4 * c, 4 * c, e, act), SelfAttention(4 * c, act)
        self.bot1, self.bot2, self.bot3 = DoubleConv(4 * c, 8 * c, act), DoubleConv(8 * c, 8 * c, act), DoubleConv(8 * c, 4 * c, act)
        self.up1, self.sa4 = UpBlock(8 * c, 2 * c, e, act), SelfAttention(2 * c, act)
        self.up2, self.sa5 = UpBlock(4 * c, c, e, act), SelfAttention(c, act)
        self.up3, self.sa6 = UpBlock(2 * c, c, e, act), SelfAttention(c, act)
        self.outc = nn.Conv2d(c, self.out_channels, 1)
        if num_classes:
            self.label_emb = nn.Embedding(num_classes + 1, e)
            with torch.no_grad():
                self.label_emb.weight[num_classes].zero_()  # the null class adds nothing, as IDDM's y=None

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        if image_size % 8:
            raise ConfigError(f"{_NET} halves the image three times: image_size must be divisible by 8, got {image_size}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        emb = iddm_time_encoding(t.expand(b) if t.ndim == 0 else t, self.time_channel).to(x.dtype)
        if self.num_classes:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        x1 = self.inc(x)
        x2 = self.sa1(self.down1(x1, emb))
        x3 = self.sa2(self.down2(x2, emb))
        h = self.sa3(self.down3(x3, emb))
        h = self.bot3(self.bot2(self.bot1(h)))
        h = self.sa4(self.up1(h, x3, emb))
        h = self.sa5(self.up2(h, x2, emb))
        h = self.sa6(self.up3(h, x1, emb))
        return same_layout(self.outc(h), x)


__all__ = ["IDDMUNet", "iddm_time_encoding"]
