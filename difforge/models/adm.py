"""ADM: the UNet of improved-diffusion and guided-diffusion (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021).

Its parameter names and shapes are OpenAI's ``UNetModel``'s, so an OpenAI checkpoint loads 1:1
(see :mod:`difforge.models.convert`); the one difference is the label table, which has a null
row for classifier-free guidance (below). Layout, per level ``i`` of ``channel_mult`` (features
``image_size / 2**i`` pixels wide, ``int(num_channels * channel_mult[i])`` channels)::

    input_blocks.0        conv 3x3
    input_blocks.k        [ResBlock (+ AttentionBlock)]  x num_res_blocks, then Downsample
                          (a stride-2 conv ``op``, or a ResBlock with ``down`` if resblock_updown)
    middle_block          ResBlock, AttentionBlock, ResBlock
    output_blocks.k       [concat skip -> ResBlock (+ AttentionBlock)] x (num_res_blocks + 1),
                          then Upsample (nearest + ``conv``, or a ResBlock with ``up``)
    out                   GroupNorm, SiLU, conv 3x3 (zero-initialised)
    time_embed            Linear(num_channels, 4 num_channels), SiLU, Linear  on sinusoid(t)
    label_emb             Embedding(num_classes + 1, 4 num_channels), added to the time embedding

ResBlock = ``in_layers`` (GN, SiLU, conv), ``emb_layers`` (SiLU, Linear), ``out_layers`` (GN,
SiLU, Dropout, zero conv), ``skip_connection`` (identity or 1x1 conv); with
``use_scale_shift_norm`` the embedding acts as GN(h)(1 + scale) + shift, else it is added before
the GN. AttentionBlock = ``norm``, ``qkv`` (1x1 Conv1d), ``proj_out`` (zero 1x1 Conv1d), run through
one ``scaled_dot_product_attention`` call; ``use_new_attention_order`` picks how the qkv channels
split (False: per head [q k v], OpenAI's ``QKVAttentionLegacy``; True: [all q, all k, all v]).

Conventions that differ from OpenAI's code, on purpose:

- ``attention_resolutions`` are feature-map widths in PIXELS (16 = the 16x16 level), as
  difforge's ``unet`` and OpenAI's *command-line flag* ``--attention_resolutions 32,16,8`` use;
  OpenAI's ``UNetModel`` constructor takes downsample factors (``image_size // res``) instead.
- ``label_emb`` has ``num_classes + 1`` rows: row ``num_classes`` is the null class of
  classifier-free guidance and ``y=None`` means "null class". OpenAI trained no such row;
  ``convert`` appends one (the mean of the class rows) and marks the file as not guidance-ready.
- ``timestep_scale`` multiplies t before the sinusoid: improved-diffusion trained with
  ``rescale_timesteps`` (t * 1000 / T), so a T=4000 model needs 0.25; guided-diffusion models
  and everything trained here use 1. ``t`` is in the original 0..T-1 scale, maybe fractional.
- GroupNorm has gcd(channels, 32) groups: OpenAI's 32 whenever channels are a multiple of 32
  (every released model), and tiny test networks still work. ``num_heads_upsample``
  (deprecated upstream, used by no release), ``use_fp16`` (use autocast) and
  ``use_checkpoint`` are not options.
- ``channel_mult=None`` picks OpenAI's per-size default: 512 -> 0.5,1,1,2,2,4,4;
  256 -> 1,1,2,2,4,4; 128 -> 1,1,2,3,4; 64 -> 1,2,3,4; up to 32 (improved-diffusion's
  CIFAR) -> 1,2,2,2; other sizes take the next smaller listed size's. ``net.config`` stores the
  resolved list, so a checkpoint never depends on this rule.

Presets (:data:`PRESETS`) are registered as network names: ``adm-small`` for training here,
and the network flags of guided-diffusion's released models (``adm-imagenet64`` ...) for
``difforge convert``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .layers import (
    CrossAttention2d, attention, check_bool, check_float, check_int, check_ints, group_norm, same_layout, size_error, timestep_embedding,
    upsample_nearest2x, zero_,
)
from .text_encoder import text_condition, text_modules
from .registry import register

_NET = "adm"

OPENAI_CHANNEL_MULT = {
    512: [0.5, 1, 1, 2, 2, 4, 4],
    256: [1, 1, 2, 2, 4, 4],
    128: [1, 1, 2, 3, 4],
    64: [1, 2, 3, 4],
    32: [1, 2, 2, 2],
}
"""OpenAI's default ``channel_mult`` per image size (32 from improved-diffusion's CIFAR-10)."""


def default_channel_mult(image_size: int) -> List[float]:
    """OpenAI's ``channel_mult`` for ``image_size``, or that of the next smaller listed size."""
    fitting = [s for s in OPENAI_CHANNEL_MULT if s <= image_size] or [min(OPENAI_CHANNEL_MULT)]
    return list(OPENAI_CHANNEL_MULT[max(fitting)])


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv ``op`` (or 2x2 average pooling without parameters)."""

    def __init__(self, ch: int, use_conv: bool = True):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest neighbour, then (optionally) a 3x3 ``conv``."""

    def __init__(self, ch: int, use_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample_nearest2x(x)
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    """OpenAI's ResBlock; ``up``/``down`` resample both branches after the first GN + SiLU."""

    def __init__(self, ch: int, emb_dim: int, dropout: float, out_ch: Optional[int] = None,
                 scale_shift: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        out_ch = out_ch or ch
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(ch, False), Upsample(ch, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(ch, False), Downsample(ch, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(
            group_norm(out_ch), nn.SiLU(), nn.Dropout(dropout), zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """x + proj_out(attention(qkv(GN(x)))) over the H*W positions, as 1x1 Conv1d layers."""

    def __init__(self, ch: int, num_heads: int, new_order: bool):
        super().__init__()
        self.num_heads = num_heads
        self.new_order = new_order
        self.norm = group_norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = zero_(nn.Conv1d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat))
        heads, d = self.num_heads, c // self.num_heads
        if self.new_order:  # channels [q (heads x d), k, v]
            q, k, v = qkv.view(b, 3, heads, d, h * w).unbind(1)
        else:  # channels [head 0: q k v, head 1: q k v, ...]
            q, k, v = qkv.view(b, heads, 3, d, h * w).unbind(2)
        out = attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = self.proj_out(out.transpose(-1, -2).reshape(b, c, h * w))
        return (flat + out).reshape(b, c, h, w)


class TimestepEmbedSequential(nn.Sequential):
    """Layers in order; ResBlocks also receive the embedding (OpenAI's class of the same name)."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, ctx=None) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else (layer(h, ctx) if isinstance(layer, CrossAttention2d) else layer(h))
        return h


def _heads(ch: int, num_heads: int, num_head_channels: int) -> int:
    if num_head_channels == -1:
        if ch % num_heads:
            raise ConfigError(f"adm option num_heads={num_heads} must divide the attention channels {ch}")
        return num_heads
    if ch % num_head_channels:
        raise ConfigError(f"adm option num_head_channels={num_head_channels} must divide the attention channels {ch}")
    return ch // num_head_channels


def _mults(value: Any, image_size: int) -> List[float]:
    if value is None:
        return default_channel_mult(image_size)
    ok = isinstance(value, (list, tuple)) and len(value) > 0
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for v in value)
    if not ok:
        raise ConfigError(f"adm option channel_mult must be a non-empty list of positive numbers (or null), got {value!r}")
    return [int(v) if float(v).is_integer() else float(v) for v in value]


def trunk_options(net: str, image_size, in_channels, num_channels, num_res_blocks, channel_mult, attention_resolutions,
                  num_heads, num_head_channels, use_scale_shift_norm, resblock_updown, use_new_attention_order,
                  dropout) -> Dict[str, Any]:
    """The validated options of ADM's trunk (shared by the denoiser and the noisy classifier, whose
    encoder half is the same), with ``channel_mult`` resolved; a ConfigError names ``net``'s option."""
    image_size = check_int(net, "image_size", image_size, 1)
    channel_mult = _mults(channel_mult, image_size)
    if isinstance(num_head_channels, bool) or not isinstance(num_head_channels, int) or not (
        num_head_channels == -1 or num_head_channels >= 1
    ):
        raise ConfigError(f"{net} option num_head_channels must be -1 or an integer >= 1, got {num_head_channels!r}")
    error = size_error(f"{net} with {len(channel_mult)} levels", len(channel_mult) - 1, image_size)
    if error:
        raise ConfigError(error)
    return dict(
        image_size=image_size,
        in_channels=check_int(net, "in_channels", in_channels, 1),
        num_channels=check_int(net, "num_channels", num_channels, 1),
        num_res_blocks=check_int(net, "num_res_blocks", num_res_blocks, 1),
        channel_mult=channel_mult,
        attention_resolutions=check_ints(net, "attention_resolutions", attention_resolutions, 1, nonempty=False),
        num_heads=check_int(net, "num_heads", num_heads, 1),
        num_head_channels=num_head_channels,
        use_scale_shift_norm=check_bool(net, "use_scale_shift_norm", use_scale_shift_norm),
        resblock_updown=check_bool(net, "resblock_updown", resblock_updown),
        use_new_attention_order=check_bool(net, "use_new_attention_order", use_new_attention_order),
        dropout=check_float(net, "dropout", dropout, 0.0, 1.0),
    )


@register("adm")
class ADM(nn.Module):
    """OpenAI's UNetModel under difforge's contract: ``net(x, t, y=None) -> (B, out_channels, H, W)``.

    Args (OpenAI's flag names):
        image_size: training image size; decides where ``attention_resolutions`` apply.
        in_channels: image channels C; the output has C, or 2C with ``learn_sigma``.
        num_channels: channels of the first level (OpenAI's ``model_channels``).
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        channel_mult: per-level multipliers of num_channels; None = OpenAI's default for the size.
        attention_resolutions: feature-map widths in pixels that get attention (OpenAI's flag).
        num_heads: attention heads, used when ``num_head_channels`` is -1.
        num_head_channels: channels per head (overrides num_heads), or -1.
        use_scale_shift_norm: FiLM conditioning GN(h)(1 + scale) + shift.
        resblock_updown: resample with ResBlocks instead of a conv.
        use_new_attention_order: split qkv before heads (QKVAttention) instead of after (legacy).
        dropout: dropout in the ResBlocks.
        num_classes: 0 = unconditional; else labels 0..num_classes-1 plus the null class.
        learn_sigma: output 2C channels (eps and the variance interpolation).
        timestep_scale: t is multiplied by this before the sinusoid (improved-diffusion's
            ``rescale_timesteps`` models: 1000 / diffusion_steps).
        context_dim, text_encoder: text conditioning, as the UNet's (cross-attention after each attention block).
    """

    arch = "adm"

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        num_channels: int = 128,
        num_res_blocks: int = 2,
        channel_mult: Optional[Sequence[float]] = None,
        attention_resolutions: Sequence[int] = (16, 8),
        num_heads: int = 4,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        dropout: float = 0.0,
        num_classes: int = 0,
        learn_sigma: bool = False,
        timestep_scale: float = 1.0,
        context_dim: int = 0, text_encoder: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if isinstance(timestep_scale, bool) or not isinstance(timestep_scale, (int, float)) or timestep_scale <= 0:
            raise ConfigError(f"adm option timestep_scale must be a number > 0, got {timestep_scale!r}")
        self.config: Dict[str, Any] = dict(
            trunk_options(
                _NET, image_size, in_channels, num_channels, num_res_blocks, channel_mult, attention_resolutions, num_heads,
                num_head_channels, use_scale_shift_norm, resblock_updown, use_new_attention_order, dropout,
            ),
            num_classes=check_int(_NET, "num_classes", num_classes, 0),
            learn_sigma=check_bool(_NET, "learn_sigma", learn_sigma),
            timestep_scale=float(timestep_scale),
            context_dim=check_int(_NET, "context_dim", context_dim, 0), text_encoder=text_encoder,
        )
        image_size, channel_mult = self.config["image_size"], self.config["channel_mult"]
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.num_channels = num_channels
        self.timestep_scale = float(timestep_scale)
        self.num_levels = len(channel_mult)

        emb_dim = 4 * num_channels
        attn_res = set(self.config["attention_resolutions"])
        block = dict(dropout=float(dropout), scale_shift=use_scale_shift_norm)

        def attention(ch: int) -> List[nn.Module]:
            heads = _heads(ch, num_heads, num_head_channels)
            return [AttentionBlock(ch, heads, use_new_attention_order)] + ([CrossAttention2d(ch, context_dim, ch // heads)] if context_dim else [])

        self.time_embed = nn.Sequential(nn.Linear(num_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.text_encoder, self.text_pool = text_modules(_NET, context_dim, text_encoder, emb_dim)

        ch = int(channel_mult[0] * num_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, res = [ch], image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: List[nn.Module] = [ResBlock(ch, emb_dim, out_ch=int(mult * num_channels), **block)]
                ch = int(mult * num_channels)
                if res in attn_res:
                    layers += attention(ch)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = ResBlock(ch, emb_dim, down=True, **block) if resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skips.append(ch)
                res //= 2

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, **block), *attention(ch), ResBlock(ch, emb_dim, **block)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_dim, out_ch=int(num_channels * mult), **block)]
                ch = int(num_channels * mult)
                if res in attn_res:
                    layers += attention(ch)
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, up=True, **block) if resblock_updown else Upsample(ch))
                    res *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        """ConfigError unless ``image_size`` survives the len(channel_mult) - 1 downsamplings."""
        image_size = check_int(_NET, "image_size", image_size, 1)
        levels = len(_mults(config.get("channel_mult"), image_size))
        error = size_error(f"adm with {levels} levels", levels - 1, image_size)
        if error:
            raise ConfigError(error)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, h, w = x.shape
        div = 2 ** (self.num_levels - 1)
        if h % div or w % div:
            raise ValueError(f"adm with {self.num_levels} levels needs H and W divisible by {div}, got {h}x{w}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(timestep_embedding(t.float() * self.timestep_scale, self.num_channels))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        hs, h_, (ctx, emb) = [], x, text_condition(self, context, context_mask, emb)
        for module in self.input_blocks:
            h_ = module(h_, emb, ctx)
            hs.append(h_)
        h_ = self.middle_block(h_, emb, ctx)
        for module in self.output_blocks:
            h_ = module(torch.cat([h_, hs.pop()], dim=1), emb, ctx)
        return same_layout(self.out(h_), x)


_RELEASE = dict(num_res_blocks=2, attention_resolutions=[32, 16, 8], resblock_updown=True, use_scale_shift_norm=True,
                learn_sigma=True)

PRESETS: Dict[str, Dict[str, Any]] = {
    "adm": {},
    "adm-small": dict(num_channels=64, num_res_blocks=2, channel_mult=[1, 2, 2], attention_resolutions=[16, 8],
                      num_head_channels=32),
    # guided-diffusion's released models (README MODEL_FLAGS); class-conditional ones have 1000 classes
    "adm-imagenet64": dict(_RELEASE, image_size=64, num_channels=192, num_res_blocks=3, num_head_channels=64,
                           use_new_attention_order=True, dropout=0.1, num_classes=1000),
    "adm-imagenet128": dict(_RELEASE, image_size=128, num_channels=256, num_heads=4, num_classes=1000),
    "adm-imagenet256": dict(_RELEASE, image_size=256, num_channels=256, num_head_channels=64, num_classes=1000),
    "adm-imagenet256-uncond": dict(_RELEASE, image_size=256, num_channels=256, num_head_channels=64),
    "adm-imagenet512": dict(_RELEASE, image_size=512, num_channels=256, num_head_channels=64, num_classes=1000),
    "adm-lsun256": dict(_RELEASE, image_size=256, num_channels=256, num_head_channels=64, dropout=0.1),
}
"""Named ADM configurations, each registered as a network name; values override ADM's defaults."""

for _name, _defaults in PRESETS.items():
    if _name != "adm":
        register(_name, **_defaults)(ADM)


__all__ = ["ADM", "OPENAI_CHANNEL_MULT", "PRESETS", "default_channel_mult"]
