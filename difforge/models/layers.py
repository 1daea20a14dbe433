"""Building blocks shared by the networks: timestep embedding, activations, norms, attention.

Every block works in whichever memory layout its input has (NCHW or channels_last) and returns
the same layout, so a network keeps one layout from its first conv to its last.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .group_norm import GroupNorm

ACTIVATIONS = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "lrelu": lambda: nn.LeakyReLU(0.2),
}


def make_act(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation act={name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with gcd(channels, max_groups) groups, so any channel count works.

    64 or 96 channels keep 32 groups; 48 channels get 16 groups of 3. GroupNorm is safe under
    bf16 autocast on CPU: the kernel accumulates mean/variance in fp32 (its output equals the
    fp32 computation rounded to bf16), and it keeps channels_last input channels_last, fast
    (:class:`~difforge.models.group_norm.GroupNorm`, an ``nn.GroupNorm`` with the same state dict).
    """
    return GroupNorm(math.gcd(channels, max_groups), channels, eps=1e-5)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (ConvNeXt's), with a per-channel gain and bias.

    Unlike GroupNorm it does not pool statistics over the image, so one pixel cannot change how
    every other pixel is normalised. Why that matters: a GroupNorm network can keep magnitude
    information from its normalisation by raising one pixel's activations far above the rest
    (StyleGAN2's "droplets", Karras et al. 2020, sec. 2); a 64 px defect UNet did exactly that at an
    image corner (activation norm 31x the median in its last blocks) and drew coloured specks there.
    Fast in channels_last, where the channels of a pixel are contiguous (PyTorch's LayerNorm over
    the last dimension); an NCHW input is permuted there and back (two copies).
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.permute(0, 2, 3, 1)
        out = F.layer_norm(nhwc, (x.shape[1],), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        return same_layout(out, x)


def sampling_memory_format(net: nn.Module, precision: str = "fp32") -> torch.memory_format:
    """The layout a loaded network samples fastest in: channels_last when it has a :class:`ChannelNorm`
    (in NCHW each one costs two copies; measured, 64 px unet-tiny, 32 images, one thread on an AMX
    Xeon: bf16 6.0 s NCHW vs 3.2 s channels_last, fp32 9.6 vs 6.8 s) or runs in bf16 (oneDNN's bf16
    convolution reorders an NCHW input to NHWC and back, and :class:`GroupNorm` is fast either way:
    a GroupNorm unet-tiny at 64 px, 16 images, one AMX thread, 1.35-1.47 s NCHW vs 0.97-0.99 s; bf16 forward
    at 32 px, batch 16, channels_last / NCHW time: unet 0.61, unet-tiny 0.80, dit-s/4 0.76, cspdarkunet 0.81,
    iddm-unet 0.85, adm-small 0.97, cspdarkunet-small 1.02), else
    the plain layout (fp32 GroupNorm: channels_last pays little on AMX, 2.28-2.46 vs 2.16 s, and
    nothing on the AVX2 CPUs of models/unet.py's table)."""
    channel_norm = any(isinstance(m, ChannelNorm) for m in net.modules())
    return torch.channels_last if channel_norm or precision == "bf16" else torch.contiguous_format


NORMS = ("group", "channel")


def make_norm(kind: str, channels: int, max_groups: int = 32) -> nn.Module:
    """The normalisation layer of ``kind``: ``group`` (:func:`group_norm`) or ``channel`` (:class:`ChannelNorm`)."""
    if kind == "group":
        return group_norm(channels, max_groups)
    if kind == "channel":
        return ChannelNorm(channels)
    raise ConfigError(f"unknown norm={kind!r}; choose one of {', '.join(NORMS)}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Continuous sinusoidal embedding (Vaswani et al. 2017, sec. 3.5) of (B,) timesteps -> (B, dim).

    ``t`` may be fractional; emb = [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i / (dim/2)).
    Always computed in fp32: bf16 cannot even represent t = 999 exactly.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """t -> sinusoid(t, freq_dim) -> Linear -> act -> Linear, the conditioning vector of a block."""

    def __init__(self, freq_dim: int, dim: int, act: str = "silu"):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), make_act(act), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place (residual branches start as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def num_heads_for(channels: int, head_channels: int) -> int:
    """Heads of about ``head_channels`` each that divide ``channels`` evenly (at least one)."""
    heads = max(1, channels // head_channels)
    while channels % heads:
        heads -= 1
    return heads


FP32_ATTENTION_MAX_SCORES = 512 * 512  # query x key positions up to which CPU bf16 training attends in fp32


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None) -> torch.Tensor:
    """``scaled_dot_product_attention(q, k, v)`` in the precision that is fastest for it here.

    One exception to running in the inputs' dtype: a bf16 attention on the CPU that will be
    differentiated (training) runs in fp32 (and returns bf16) while it has at most
    :data:`FP32_ATTENTION_MAX_SCORES` scores per head. PyTorch's CPU bf16 attention backward is far
    slower than its fp32 one at the sizes a UNet attends at. Measured on an Intel Xeon with AMX
    (torch 2.13, one thread, batch 16, head dim 32, forward + backward, bf16 / fp32 time): 64 x 64
    positions 8.3x, 256 x 256 1.6x, 256 x 20 (text) 5.7x, 512 x 512 1.09x, 1024 x 1024 0.89x --
    hence the limit. Sampling (no gradient) keeps bf16, whose forward is 1.8x faster. On a GPU the
    inputs' dtype is always kept. The rule depends only on shapes, dtype and device, never on a
    timing, so a resumed run computes exactly what the first one did.
    """
    if (q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
            and q.shape[-2] * k.shape[-2] <= FP32_ATTENTION_MAX_SCORES):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class Attention2d(nn.Module):
    """Residual multi-head self-attention over the H*W positions of a feature map.

    x + proj(SDPA(q, k, v)) with q, k, v = Linear(GroupNorm(x)) split into heads of shape
    (B, heads, HW, head_dim); all heads go through one ``scaled_dot_product_attention`` call,
    softmax(q k^T / sqrt(head_dim)) v. The projections are Linear layers on the (B, HW, C) token
    view, which is free for channels_last input. ``proj`` starts at zero, so the block starts as
    the identity.
    """

    def __init__(self, channels: int, head_channels: int = 32, norm_groups: int = 32, norm: str = "group"):
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads_for(channels, head_channels)
        self.norm = make_norm(norm, channels, norm_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(tokens).view(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, head_dim)
        out = attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        out = out.transpose(1, 2).view(b, c, h, w)  # channels_last strides
        if not x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous()
        return x + out


class CrossAttention(nn.Module):
    """Multi-head attention from tokens (B, N, dim) to a text context (B, L, context_dim): the
    update proj(SDPA(q(x), k(ctx), v(ctx))), without the residual (the caller adds it).

    ``context_mask`` (B, L) bool marks real tokens (padding False); every context has at least
    one (the tokenizers always emit a start token). ``proj`` starts at zero, so a network with
    text starts as the same function as without it (Rombach et al. 2022, sec. 3.3).
    """

    def __init__(self, dim: int, context_dim: int, head_channels: int = 32):
        super().__init__()
        self.num_heads = num_heads_for(dim, head_channels)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = zero_(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask=None) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)
        k, v = self.kv(context.to(x.dtype)).view(b, context.shape[1], 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if context_mask is None else context_mask[:, None, None, :].to(torch.bool)
        out = attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention2d(nn.Module):
    """Residual cross-attention of a feature map to a text context: x + CrossAttention(GN(x), ctx).

    ``ctx`` is the pair (context (B, L, D), mask (B, L) or None), or None: no text, the identity.
    Sits after each self-attention block of the UNet and ADM when they are built with ``context_dim``.
    """

    def __init__(self, channels: int, context_dim: int, head_channels: int = 32, norm_groups: int = 32, positions: bool = False):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.attn = CrossAttention(channels, context_dim, head_channels)
        self.pos = nn.Linear(4 * len(POSITION_FREQS), channels) if positions else None

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        if ctx is None:
            return x
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        if self.pos is not None:  # where each query sits, so "at the top left" can act on the top left only
            tokens = tokens + self.pos(position_features(h, w, x.device, tokens.dtype))[None]
        out = self.attn(tokens, *ctx)
        return x + same_layout(out.transpose(1, 2).reshape(b, c, h, w), x)


POSITION_FREQS = (1.0, 2.0, 4.0, 8.0)  # x pi: the lowest tells halves apart, the highest a few pixels of an 8 x 8 map


def position_features(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h w, 4 F) Fourier features (sin, cos of pi f u for the row and the column) of every position.

    Why: a convolution's features say what is there, barely where (only zero padding leaks the
    border), so a cross-attention query could not tell the top left from the bottom right and a
    caption's position words had nothing to act on (text model position accuracy 0.17 against
    0.75 for real images, benchmarks/text_conditioning.py). The coordinates u are the pixel
    centres scaled to (-1, 1), so positions mean the same at every map size (tiles, other sizes).
    """
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    uy, ux = torch.meshgrid(ys, xs, indexing="ij")
    f = torch.tensor(POSITION_FREQS, device=device) * math.pi
    ang = torch.cat([uy.reshape(-1, 1) * f, ux.reshape(-1, 1) * f], dim=1)
    return torch.cat([ang.sin(), ang.cos()], dim=1).to(dtype)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Double H and W of (B, C, H, W) by repeating each pixel 2 x 2, in ``x``'s memory layout.

    Eagerly ``F.interpolate(x, scale_factor=2, mode="nearest")``. Under ``torch.compile`` the same
    values as a broadcast and a reshape: torch 2.13's Inductor computes the backward of
    ``upsample_nearest2d`` wrongly in bf16 on a CPU inside a whole network (the layers below the
    upsampling got no gradient at all, in the UNet and the ADM; ``benchmarks/compile_check.py``),
    while the backward of this form -- a sum over each 2 x 2 window -- is right. (A relative:
    pytorch/pytorch#170682, Inductor's bf16 nearest upsampling forward wrong on CUDA, open.)
    """
    if not torch.compiler.is_compiling():
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)
        return y.permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


def same_layout(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` in the memory layout of ``like`` (a no-op when it already is)."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return y.contiguous(memory_format=torch.channels_last)
    return y.contiguous()


__all__ = [
    "ACTIVATIONS",
    "ChannelNorm",
    "NORMS",
    "Attention2d",
    "FP32_ATTENTION_MAX_SCORES",
    "CrossAttention",
    "CrossAttention2d",
    "TimestepEmbedder",
    "attention",
    "check_bool",
    "check_float",
    "check_int",
    "check_ints",
    "coordinate_planes",
    "group_norm",
    "make_act",
    "make_norm",
    "num_heads_for",
    "position_features",
    "same_layout",
    "sampling_memory_format",
    "size_error",
    "timestep_embedding",
    "upsample_nearest2x",
    "zero_",
]


# -- option checks shared by the networks' constructors ---------------------------------------
def check_int(net: str, field: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else ConfigError naming ``net`` and ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{net} option {field} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_ints(net: str, field: str, value, minimum: int, nonempty: bool = True) -> list:
    """``value`` as a list of ints >= ``minimum`` (non-empty unless told), else ConfigError."""
    ok = isinstance(value, (list, tuple)) and (len(value) > 0 or not nonempty)
    ok = ok and all(not isinstance(v, bool) and isinstance(v, int) and v >= minimum for v in value)
    if not ok:
        kind = "non-empty " if nonempty else ""
        raise ConfigError(f"{net} option {field} must be a {kind}list of integers >= {minimum}, got {value!r}")
    return [int(v) for v in value]


def check_bool(net: str, field: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{net} option {field} must be true or false, got {value!r}")
    return value


def check_float(net: str, field: str, value, low: float, high: float, high_open: bool = True) -> float:
    """``value`` as a float in [low, high) (or [low, high]), else ConfigError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        raise ConfigError(f"{net} option {field} must be a number in [{low}, {high}{')' if high_open else ']'}, got {value!r}")
    return float(value)


def size_error(net: str, downsamplings: int, image_size: int) -> "str | None":
    """None if ``image_size`` survives ``downsamplings`` halvings, else a message naming sizes that work."""
    div = 2 ** downsamplings
    if image_size % div == 0:
        return None
    low, high = (image_size // div) * div, (image_size // div + 1) * div
    works = f"{low} or {high} would work" if low > 0 else f"{high} would work"
    return f"{net} needs an image size divisible by {div}; {works}, got {image_size}"


def coordinate_planes(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): each pixel centre's x and y scaled to (-1, 1), in ``x``'s dtype, device and layout."""
    b, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) * (2.0 / w) - 1.0
    planes = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
    return same_layout(planes[None].expand(b, 2, h, w).contiguous(), x)
