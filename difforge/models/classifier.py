"""The noisy classifier of classifier guidance: ADM's encoder half with attention pooling.

Dhariwal & Nichol 2021 (sec. 4, appendix) guide a diffusion model with p(y | x_t), a classifier
trained on noised images x_t at every t: the downsampling half of their UNet (the same
ResBlocks, attention blocks and timestep embedding as :mod:`difforge.models.adm`, reused here,
not copied), then GroupNorm, SiLU and an attention pool: the mean token of the last feature map,
together with its H*W tokens plus a learned position embedding, attends over them, and its output
is projected to the class logits. Contract: ``net(x_t, t) -> logits (B, num_classes)``; ``t`` in
the diffusion model's original 0..T-1 scale, maybe fractional (continuous sinusoid).

Parameter names follow OpenAI's ``EncoderUNetModel`` (``time_embed``, ``input_blocks``,
``middle_block``, ``out.2.{positional_embedding, qkv_proj, c_proj}``); attention_resolutions are
in pixels, as for ``adm``. Presets (registered as network names), at 32 px / 3 channels / 4 classes:

    ==================  ============================================================  =========
    name                options                                                       params
    ==================  ============================================================  =========
    classifier-tiny     width 32, mult 1,2,2, 1 block, attention 8, 32 ch/head        0.49 M
    classifier-small    width 64, mult 1,2,2, 2 blocks, attention 16,8, updown        3.3 M
    classifier          guided-diffusion's: width 128, depth 2, attention 32,16,8,    17 M
                        64 ch/head, resblock_updown, scale-shift norm
    ==================  ============================================================  =========
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .adm import AttentionBlock, Downsample, ResBlock, TimestepEmbedSequential, _heads, _mults, trunk_options
from .layers import attention, check_int, group_norm, size_error, timestep_embedding
from .registry import register

_NET = "classifier"


class AttentionPool2d(nn.Module):
    """Pool (B, C, H, W) to (B, out_dim) by attention from the mean token (CLIP / ADM style).

    tokens = [mean over H*W, the H*W positions] + positional_embedding; qkv_proj (1x1 Conv1d),
    multi-head attention with the [all q, all k, all v] channel split, c_proj; the mean token's
    output is the result.
    """

    def __init__(self, spatial: int, ch: int, num_heads: int, out_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(ch, spatial**2 + 1) / ch**0.5)
        self.qkv_proj = nn.Conv1d(ch, 3 * ch, 1)
        self.c_proj = nn.Conv1d(ch, out_dim, 1)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        if x.shape[-1] + 1 != self.positional_embedding.shape[-1]:
            side = int(round((self.positional_embedding.shape[-1] - 1) ** 0.5))
            raise ValueError(f"classifier expects a {side}x{side} final feature map (its image size), got {x.shape[-1]} positions")
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)
        heads, d, n = self.num_heads, c // self.num_heads, x.shape[-1]
        q, k, v = self.qkv_proj(x).view(b, 3, heads, d, n).unbind(1)
        out = attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, n)
        return self.c_proj(out)[:, :, 0]


@register("classifier")
class NoisyClassifier(nn.Module):
    """Time-conditioned classifier of noisy images: ``net(x_t, t) -> logits (B, num_classes)``.

    Args (adm's names): image_size, in_channels, num_channels, num_res_blocks, channel_mult
    (None = OpenAI's per-size default), attention_resolutions (pixels), num_heads /
    num_head_channels, use_scale_shift_norm, resblock_updown, use_new_attention_order, dropout as
    for :class:`~difforge.models.adm.ADM`; num_classes: the number of logits (>= 2).
    """

    arch = "classifier"

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        num_classes: int = 2,
        num_channels: int = 128,
        num_res_blocks: int = 2,
        channel_mult: Optional[Sequence[float]] = None,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_heads: int = 4,
        num_head_channels: int = 64,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config: Dict[str, Any] = dict(
            trunk_options(
                _NET, image_size, in_channels, num_channels, num_res_blocks, channel_mult, attention_resolutions, num_heads,
                num_head_channels, use_scale_shift_norm, resblock_updown, use_new_attention_order, dropout,
            ),
            num_classes=check_int(_NET, "num_classes", num_classes, 2),
        )
        image_size, channel_mult = self.config["image_size"], self.config["channel_mult"]
        self.image_size = image_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_channels = num_channels

        emb_dim = 4 * num_channels
        attn_res = set(self.config["attention_resolutions"])
        block = dict(dropout=float(dropout), scale_shift=use_scale_shift_norm)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, _heads(ch, num_heads, num_head_channels), use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(num_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = int(channel_mult[0] * num_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        res = image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: List[nn.Module] = [ResBlock(ch, emb_dim, out_ch=int(mult * num_channels), **block)]
                ch = int(mult * num_channels)
                if res in attn_res:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(channel_mult) - 1:
                down = ResBlock(ch, emb_dim, down=True, **block) if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                res //= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_dim, **block), attention(ch), ResBlock(ch, emb_dim, **block))
        pool_heads = _heads(ch, num_heads, num_head_channels)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), AttentionPool2d(res, ch, pool_heads, num_classes))

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        """ConfigError unless ``image_size`` survives the len(channel_mult) - 1 downsamplings."""
        image_size = check_int(_NET, "image_size", image_size, 1)
        levels = len(_mults(config.get("channel_mult"), image_size))
        error = size_error(f"classifier with {levels} levels", levels - 1, image_size)
        if error:
            raise ConfigError(error)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(timestep_embedding(t.float(), self.num_channels).to(self.time_embed[0].weight.dtype))
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h)


PRESETS: Dict[str, Dict[str, Any]] = {
    "classifier": {},
    "classifier-small": dict(num_channels=64, num_res_blocks=2, channel_mult=[1, 2, 2], attention_resolutions=[16, 8],
                             num_head_channels=32),
    "classifier-tiny": dict(num_channels=32, num_res_blocks=1, channel_mult=[1, 2, 2], attention_resolutions=[8],
                            num_head_channels=32, resblock_updown=False),
}
"""Named classifier sizes, each registered as a network name; values override the defaults."""

for _name, _defaults in PRESETS.items():
    if _name != "classifier":
        register(_name, **_defaults)(NoisyClassifier)


__all__ = ["AttentionPool2d", "NoisyClassifier", "PRESETS"]
