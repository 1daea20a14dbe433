"""The default network: an improved-DDPM style UNet (Nichol & Dhariwal 2021, appendix A; Ho et al. 2020).

Layout, per level ``i`` of ``channel_mult`` (feature maps of ``image_size / 2**i`` pixels)::

    conv_in -> [ResBlock (+ Attention)] x num_res_blocks -> Downsample   (each output kept as a skip)
    middle:    ResBlock -> Attention -> ResBlock
    up:        [concat skip -> ResBlock (+ Attention)] x (num_res_blocks + 1) -> Upsample
    out:       GroupNorm -> act -> conv (zero-initialised)

- Conditioning: emb = MLP(sinusoid(t)) [+ Embedding(y)], fed to every ResBlock as a per-channel
  scale and shift after its second GroupNorm: GN(h) * (1 + scale) + shift (``use_scale_shift_norm``).
  ``t`` is in the original 0..T-1 scale and may be fractional. The label table has
  ``num_classes + 1`` rows; row ``num_classes`` is the learned null class of classifier-free
  guidance, and ``y=None`` on a conditional network means "null class" for every sample.
- Attention runs where the feature map is ``attention_resolutions`` pixels wide (and always in the
  middle block), multi-head with heads of about ``head_channels``, through one
  ``scaled_dot_product_attention`` call.
- The last conv of every ResBlock, the attention output projection and the output conv start at
  zero: every residual branch starts as the identity and the untrained network predicts 0.
- Accepted images: height and width divisible by ``2 ** (len(channel_mult) - 1)``; any channels.

Memory layout: the network runs in the layout of its input and weights (one layout from the
first conv to the last) and returns its input's layout; both layouts give the same numbers.
channels_last does NOT pay on an AVX2 CPU in fp32 (``benchmarks/unet_layout.py``'s docstring has the table).
The profile says why: convolutions are ~80% of a step and oneDNN's NHWC backward is 5-25%
slower than its NCHW one at these channel counts, and GroupNorm's channels_last CPU kernels are
4-8x slower than its NCHW ones. So keep NCHW on those CPUs in fp32. In bf16 on a CPU with AMX the
picture turns: oneDNN's bf16 convolution is ~2.3x faster channels_last (an NCHW input is reordered
to NHWC and back inside it), and :class:`~difforge.models.group_norm.GroupNorm` replaces PyTorch's
slow channels_last GroupNorm kernels, so a bf16 step is faster channels_last (default ``unet`` 64 px
10.4 vs 7.7 images/s, one thread). Training chooses by a probe (``channels_last: auto``,
train/autonet.py), sampling by precision (layers.sampling_memory_format).

``patch_size`` p > 1 folds p x p pixels into channels around the network (see :class:`UNet`);
at 64 px, p = 2 costs what 32 px costs (the table's 32 px column), which is why new runs from
64 px take it (train/autonet.choose_patch).

Presets (:data:`PRESETS`) are registered as network names: ``build("unet-tiny", image_size=32)``;
``net.config`` holds every option, so ``build(net.arch, **net.config)`` rebuilds any of them.
Parameters / forward GFLOPs per image at 32 and 64 px (3 channels, unconditional):

    ==========  =========================================  ===============  ===============
    name        options                                    32 px            64 px
    ==========  =========================================  ===============  ===============
    unet-tiny   base 32, mult 1,2,2, 1 block, attn 8       1.19 M / 0.50    1.14 M / 1.97
    unet-small  base 48, mult 1,2,2, 2 blocks, attn 16,8   4.10 M / 1.85    3.91 M / 6.63
    unet        base 64, mult 1,2,2,2, 2 blocks, attn 16,8 9.93 M / 3.25    9.93 M / 11.8
    ==========  =========================================  ===============  ===============
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import (
    ACTIVATIONS, NORMS, Attention2d, CrossAttention2d, TimestepEmbedder, coordinate_planes, make_act, make_norm, same_layout,
    upsample_nearest2x, zero_,
)
from .group_norm import modulated_norm
from .text_encoder import TextLayout, pooled_text, text_condition, text_modules
from .registry import register


class ResBlock(nn.Module):
    """GN -> act -> conv -> GN * (1 + scale) + shift -> act -> dropout -> conv(zero init), plus skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float, act: str,
                 norm_groups: int, scale_shift: bool, norm: str = "group"):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            make_norm(norm, in_ch, norm_groups), make_act(act), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        )
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.out_norm = make_norm(norm, out_ch, norm_groups)
        self.out_layers = nn.Sequential(
            make_act(act),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = modulated_norm(self.out_norm, h, scale, shift)  # one fused step for a channels_last GroupNorm
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(upsample_nearest2x(x))


class _Stage(nn.ModuleList):
    """Layers applied in order; ResBlocks also receive the conditioning vector, cross-attention the text."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, ctx=None) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else (layer(h, ctx) if isinstance(layer, CrossAttention2d) else layer(h))
        return h


def _fail(field: str, rule: str, value: Any) -> None:
    raise ConfigError(f"unet option {field} must be {rule}, got {value!r}")


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(field, f"an integer >= {minimum}", value)
    return int(value)


def _ints(field: str, value: Any, minimum: int, nonempty: bool) -> List[int]:
    ok = isinstance(value, (list, tuple)) and (len(value) > 0 or not nonempty)
    if ok:
        ok = all(not isinstance(v, bool) and isinstance(v, int) and v >= minimum for v in value)
    if not ok:
        _fail(field, f"a {'non-empty ' if nonempty else ''}list of integers >= {minimum}", value)
    return [int(v) for v in value]


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(field, "true or false", value)
    return value


def _size_error(levels: int, image_size: int, patch: int = 1) -> Optional[str]:
    div = patch * 2 ** (levels - 1)
    if image_size % div == 0:
        return None
    low, high = (image_size // div) * div, (image_size // div + 1) * div
    works = f"{low} or {high} would work" if low > 0 else f"{high} would work"
    what = f"unet with {levels} levels" + (f" and patch size {patch}" if patch > 1 else "")
    return f"{what} needs an image size divisible by {div}; {works}, got {image_size}"


@register("unet")
class UNet(nn.Module):
    """IDDM-style UNet: ``net(x, t, y=None, aug_labels=None) -> (B, out_channels, H, W)``.

    Args:
        image_size: the training image size; it decides where ``attention_resolutions`` apply.
        in_channels: image channels C (1 for grey, 3 for RGB, any other works).
        base_channels: channels of the first level; level i has ``base_channels * channel_mult[i]``.
        channel_mult: one multiplier per level; levels - 1 down/up-samplings.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map widths (pixels) that get self-attention.
        head_channels: channels per attention head (heads = channels // head_channels).
        dropout: dropout inside ResBlocks.
        act: activation, one of silu, gelu, relu, relu6, lrelu.
        num_classes: 0 for unconditional; else class labels 0..num_classes-1 (+ the null class).
        learn_sigma: output 2C channels (eps and the variance interpolation of improved DDPM).
        norm_groups: at most this many GroupNorm groups (gcd with the channel count is used).
        use_scale_shift_norm: condition by GN(h)(1 + scale) + shift, else by adding emb before GN.
        aug_dim: length of the augmentation label vector (EDM, Karras et al. 2022 app. D.2;
            :mod:`difforge.data.augment`); 0 = none. A bias-free, zero-initialised linear map adds it
            to the time embedding, so an absent ``aug_labels`` (sampling) is the zero vector.
        context_dim: width of text tokens; > 0 adds cross-attention (:class:`CrossAttention2d`) after
            every self-attention block, fed by ``net(..., context=, context_mask=)``; 0 = no text.
        cross_resolutions: feature-map widths that get cross-attention (default: ``attention_resolutions``;
            the middle block always has it): a finer map can say where without paying for self-attention there.
        text_encoder: options of the network's own :class:`~difforge.models.text_encoder.BuiltinTextEncoder`
            (then ``context`` may be token ids), or None.
        patch_size: p > 1 folds each p x p pixel block into channels before the first conv
            (``pixel_unshuffle``) and unfolds the output (``pixel_shuffle``), as simple diffusion
            (Hoogeboom et al. 2023) does for high resolutions: the network then works at
            ``image_size / p`` and costs about 1/p^2 as much per image, which is what lets a 64 px
            run see its data often enough in a CPU budget. Attention widths refer to the folded maps.
        cross_positions: the cross-attention queries also carry where they sit
            (:func:`~difforge.models.layers.position_features`), so position words ("at the top
            left") can place things. Off by default: in the 12-minute text benchmark it did not
            raise position accuracy (0.22 / 0.19 against 0.17 / 0.26 without; README).
        input_coords: two planes with each pixel's x and y (CoordConv, Liu et al. 2018) join the input
            of the first conv: a convolution alone barely knows where it is, so a global condition
            ("at the top left", pooled into the embedding) had nothing to multiply into a place. Off
            by default: in the 12-minute text benchmark position accuracy stayed at 0.24 / 0.23 (README).
        text_layout: g > 0 adds a g x g map per channel from the caption's words to the first conv's
            output (:class:`~difforge.models.text_encoder.TextLayout`): a place for position words;
            ``layout_rank`` r > 0: r maps spread over the channels instead (where, not what). Off by
            default: in the text benchmark position rose 0.18 -> 0.68 but defect type fell 0.90 -> 0.71.
        layout_decoder: with ``text_layout``, each decoder level also gets its own map, added to its input
            (the place said again at every scale, not only to the first features). Off by default (README).
        norm: ``group`` (GroupNorm) or ``channel`` (:class:`~difforge.models.layers.ChannelNorm`: per
            pixel, so no pixel can set the others' scale -- no "droplet" specks). GroupNorm by default:
            at 64 px ChannelNorm gave defects distance 23.7 / 11.9 against 19.1 / 16.4, glyphs 0.84 accuracy against 0.945 (README).
    """

    arch = "unet"

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16, 8),
        cross_resolutions: Optional[Sequence[int]] = None,
        head_channels: int = 32,
        dropout: float = 0.0,
        act: str = "silu",
        num_classes: int = 0,
        learn_sigma: bool = False,
        norm_groups: int = 32,
        use_scale_shift_norm: bool = True,
        aug_dim: int = 0,
        context_dim: int = 0,
        text_encoder: Optional[Dict[str, Any]] = None,
        patch_size: int = 1,
        cross_positions: bool = False,
        input_coords: bool = False,
        text_layout: int = 0,
        layout_rank: int = 0,
        layout_decoder: bool = False,
        norm: str = "group",
    ):
        super().__init__()
        channel_mult = _ints("channel_mult", channel_mult, 1, nonempty=True)
        attention_resolutions = _ints("attention_resolutions", attention_resolutions, 1, nonempty=False)
        cross_resolutions = None if cross_resolutions is None else _ints("cross_resolutions", cross_resolutions, 1, nonempty=False)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            _fail("dropout", "a number in [0, 1)", dropout)
        if act not in ACTIVATIONS:
            _fail("act", f"one of {', '.join(ACTIVATIONS)}", act)
        self.config: Dict[str, Any] = dict(
            image_size=_int("image_size", image_size, 1),
            in_channels=_int("in_channels", in_channels, 1),
            base_channels=_int("base_channels", base_channels, 1),
            channel_mult=channel_mult,
            num_res_blocks=_int("num_res_blocks", num_res_blocks, 1),
            attention_resolutions=attention_resolutions,
            cross_resolutions=cross_resolutions,
            head_channels=_int("head_channels", head_channels, 1),
            dropout=float(dropout),
            act=act,
            num_classes=_int("num_classes", num_classes, 0),
            learn_sigma=_bool("learn_sigma", learn_sigma),
            norm_groups=_int("norm_groups", norm_groups, 1),
            use_scale_shift_norm=_bool("use_scale_shift_norm", use_scale_shift_norm),
            aug_dim=_int("aug_dim", aug_dim, 0),
            context_dim=_int("context_dim", context_dim, 0),
            text_encoder=text_encoder,
            patch_size=_int("patch_size", patch_size, 1),
            cross_positions=_bool("cross_positions", cross_positions),
            input_coords=_bool("input_coords", input_coords),
            text_layout=_int("text_layout", text_layout, 0),
            layout_rank=_int("layout_rank", layout_rank, 0),
            layout_decoder=_bool("layout_decoder", layout_decoder),
            norm=norm if norm in NORMS else _fail("norm", f"one of {', '.join(NORMS)}", norm),
        )
        error = _size_error(len(channel_mult), image_size, patch_size)
        if error:
            raise ConfigError(error)

        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.num_levels = len(channel_mult)
        self.patch_size = patch_size
        self.input_coords = input_coords

        emb_dim = 4 * base_channels
        block = dict(dropout=dropout, act=act, norm_groups=norm_groups, scale_shift=use_scale_shift_norm, norm=norm)
        attn = dict(head_channels=head_channels, norm_groups=norm_groups, norm=norm)
        self.time_embed = TimestepEmbedder(base_channels, emb_dim, act)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.aug_embed = zero_(nn.Linear(aug_dim, emb_dim, bias=False)) if aug_dim else None
        self.text_encoder, self.text_pool = text_modules("unet", context_dim, text_encoder, emb_dim)
        cross = (lambda c: [CrossAttention2d(c, context_dim, head_channels, norm_groups, cross_positions)]) if context_dim else (lambda c: [])
        self.emb_act = make_act(act)
        self.input_conv = nn.Conv2d(in_channels * patch_size**2 + 2 * input_coords, base_channels, 3, padding=1)
        self.text_layout = TextLayout(context_dim, base_channels, text_layout, layout_rank) if context_dim and text_layout else None

        ch, res, skips = base_channels, image_size // patch_size, [base_channels]
        crossing = attention_resolutions if cross_resolutions is None else cross_resolutions
        attending = lambda c, r: ([Attention2d(c, **attn)] if r in attention_resolutions else []) + (cross(c) if r in crossing else [])  # noqa: E731
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, base_channels * mult, emb_dim, **block)]
                ch = base_channels * mult
                layers += attending(ch, res)
                self.down.append(_Stage(layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(_Stage([Downsample(ch)]))
                skips.append(ch)
                res //= 2

        self.middle = _Stage([ResBlock(ch, ch, emb_dim, **block), Attention2d(ch, **attn), *cross(ch),
                              ResBlock(ch, ch, emb_dim, **block)])

        self.up = nn.ModuleList()
        self.decoder_layouts = nn.ModuleDict() if context_dim and text_layout and layout_decoder else None  # keyed by level's first stage
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                if self.decoder_layouts is not None and i == 0:
                    self.decoder_layouts[str(len(self.up))] = TextLayout(context_dim, ch, text_layout, layout_rank)
                layers = [ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, **block)]
                ch = base_channels * mult
                layers += attending(ch, res)
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(_Stage(layers))

        self.out = nn.Sequential(
            make_norm(norm, ch, norm_groups), make_act(act), zero_(nn.Conv2d(ch, self.out_channels * patch_size**2, 3, padding=1))
        )

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        """ConfigError unless ``image_size`` is divisible by patch_size * 2**(levels - 1) (both from ``config``)."""
        mult = config["channel_mult"]
        patch = _int("patch_size", config.get("patch_size", 1), 1)
        error = _size_error(len(_ints("channel_mult", mult, 1, nonempty=True)), _int("image_size", image_size, 1), patch)
        if error:
            raise ConfigError(error)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None,
                aug_labels: Optional[torch.Tensor] = None, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, h, w = x.shape
        div = self.patch_size * 2 ** (self.num_levels - 1)
        if h % div or w % div:
            raise ValueError(f"unet with {self.num_levels} levels and patch size {self.patch_size} needs H and W divisible by {div}, got {h}x{w}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(t)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y)
        if self.aug_embed is not None and aug_labels is not None:  # absent = zeros = nothing added
            emb = emb + self.aug_embed(aug_labels.to(emb.dtype))
        ctx, emb = text_condition(self, context, context_mask, emb)
        emb = self.emb_act(emb)

        hs = F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x
        hs = self.input_conv(torch.cat([hs, coordinate_planes(hs)], dim=1) if self.input_coords else hs)
        pooled = pooled_text(self, context, ctx, reduce="sum").to(hs.dtype) if self.text_layout is not None and ctx is not None else None
        if pooled is not None:
            hs = hs + self.text_layout(pooled, hs.shape[-2:])
        skips = [hs]
        for stage in self.down:
            hs = stage(hs, emb, ctx)
            skips.append(hs)
        hs = self.middle(hs, emb, ctx)
        for i, stage in enumerate(self.up):
            if pooled is not None and self.decoder_layouts is not None and str(i) in self.decoder_layouts:
                hs = hs + self.decoder_layouts[str(i)](pooled, hs.shape[-2:])
            hs = stage(torch.cat([hs, skips.pop()], dim=1), emb, ctx)
        out = self.out(hs)
        return same_layout(F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out, x)


PRESETS: Dict[str, Dict[str, Any]] = {
    "unet": {},
    "unet-small": dict(base_channels=48, channel_mult=[1, 2, 2], num_res_blocks=2, attention_resolutions=[16, 8]),
    "unet-tiny": dict(base_channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[8]),
}
"""Named sizes of the UNet, each registered as a network name; values override UNet's defaults."""

for _name, _defaults in PRESETS.items():
    if _name != "unet":
        register(_name, **_defaults)(UNet)


__all__ = ["PRESETS", "UNet"]
