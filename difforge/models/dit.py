"""DiT: a diffusion transformer with adaLN-Zero blocks (Peebles & Xie 2023, "Scalable Diffusion
Models with Transformers", sec. 3.2).

    x (B, C, H, W) -> patches of p x p -> Linear tokens (B, HW/p^2, D) + fixed 2-D sin-cos positions
    c = MLP(sinusoid(t)) [+ Embedding(y)]                                     (B, D)
    depth x block:  x += gate1 * Attn(LN(x)(1 + scale1) + shift1)
                    x += gate2 * MLP(LN(x)(1 + scale2) + shift2)      (shift, scale, gate) = Linear(SiLU(c))
    final:          Linear(LN(x)(1 + scale) + shift) -> p*p*out_channels per token -> unpatchify

- adaLN-Zero: every modulation Linear and the final Linear start at zero, so each block starts
  as the identity and the untrained network predicts 0 (DiT's ``initialize_weights``).
- Parameter names and shapes are DiT's ``models.py`` (``x_embedder.proj``, ``t_embedder.mlp.0/2``,
  ``y_embedder.embedding_table``, ``blocks.N.attn.qkv/proj``, ``blocks.N.mlp.fc1/fc2``,
  ``blocks.N.adaLN_modulation.1``, ``final_layer.linear``, ``final_layer.adaLN_modulation.1``,
  ``pos_embed``), so a DiT checkpoint loads 1:1 (:mod:`difforge.models.convert`).
- ``pos_embed`` (1, T, D) is saved with the weights, as DiT's checkpoints hold it, but it is a
  persistent *buffer*, not a parameter: it never reaches an optimizer, weight decay or the EMA
  average, and is always the sin-cos table (DiT freezes it too). An input whose patch grid is
  not the training grid (another size, non-square) gets its sin-cos table computed on the fly.
- The label table has ``num_classes + 1`` rows (row ``num_classes`` = null class of CFG), as
  DiT's LabelEmbedder with class dropout > 0; ``y=None`` means the null class. Label dropout
  itself is the trainer's job.
- Works on pixels and on VAE latents: ``in_channels`` is anything (DiT's ImageNet models: 4
  latent channels, ``image_size`` = the latent size, 32 for 256 px images).

Presets: DiT's twelve sizes registered as ``dit-s/2``, ``dit-s/4``, ``dit-s/8``, ``dit-b/2`` ...
``dit-xl/8`` (S: depth 12, D 384, 6 heads; B: 12, 768, 12; L: 24, 1024, 16; XL: 28, 1152, 16),
and the generic ``dit`` (DiT-S/2 sizes) taking depth / hidden_size / num_heads / patch_size.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..errors import ConfigError
from .layers import CrossAttention, TimestepEmbedder, attention, check_bool, check_float, check_int, same_layout
from .text_encoder import text_condition, text_modules
from .registry import register

_NET = "dit"
FREQ_DIM = 256  # DiT's frequency_embedding_size


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) fixed 2-D sin-cos positions (MAE / DiT), row-major tokens.

    The first dim/2 channels encode the column, the last dim/2 the row, each as
    [sin(pos w_k), cos(pos w_k)] with w_k = 10000^(-k / (dim/4)); computed in float64.
    """
    if dim % 4:
        raise ConfigError(f"dit option hidden_size must be divisible by 4 for 2-D sin-cos positions, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_d(cols), one_d(rows)], dim=1).float()


class PatchEmbed(nn.Module):
    """p x p patches -> D-dim tokens by a stride-p conv ``proj``: (B, C, H, W) -> (B, HW/p^2, D)."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LabelEmbedder(nn.Module):
    """Class index -> vector; ``embedding_table`` has num_classes + 1 rows (the last = null class)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` Linear -> one SDPA call -> ``proj`` Linear."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation, as DiT) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Attention and MLP, each under adaLN-Zero modulation from the conditioning vector c; with
    ``context_dim``, cross-attention to the text tokens between them (unmodulated, zero-initialised)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, context_dim: int = 0):
        super().__init__()
        self.norm_c = nn.LayerNorm(dim, eps=1e-6) if context_dim else None
        self.cross = CrossAttention(dim, context_dim, dim // num_heads) if context_dim else None
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx=None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(_modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None and ctx is not None:
            x = x + self.cross(self.norm_c(x), *ctx)
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated LayerNorm, then ``linear`` to p*p*out_channels values per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


@register("dit")
class DiT(nn.Module):
    """Diffusion transformer: ``net(x, t, y=None) -> (B, out_channels, H, W)``.

    Args:
        image_size: training size (pixels, or latent size); fixes the saved ``pos_embed`` grid.
        in_channels: input channels C (3 for RGB, 4 for SD-VAE latents, anything works).
        patch_size: p; H and W must be divisible by it. Tokens = (H / p) * (W / p).
        hidden_size: token width D (divisible by num_heads and by 4).
        depth: number of DiT blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width = int(D * mlp_ratio).
        num_classes: 0 = unconditional; else labels 0..num_classes-1 plus the null class.
        learn_sigma: output 2C channels (eps and the variance interpolation).
        context_dim, text_encoder: text conditioning by cross-attention blocks (PixArt-alpha's
            placement: after self-attention, outside adaLN), fed by ``context=``/``context_mask=``.
    """

    arch = "dit"

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        learn_sigma: bool = False,
        context_dim: int = 0,
        text_encoder: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        self.config: Dict[str, Any] = dict(
            image_size=check_int(_NET, "image_size", image_size, 1),
            in_channels=check_int(_NET, "in_channels", in_channels, 1),
            patch_size=check_int(_NET, "patch_size", patch_size, 1),
            hidden_size=check_int(_NET, "hidden_size", hidden_size, 4),
            depth=check_int(_NET, "depth", depth, 1),
            num_heads=check_int(_NET, "num_heads", num_heads, 1),
            mlp_ratio=check_float(_NET, "mlp_ratio", mlp_ratio, 1e-6, 1e6),
            num_classes=check_int(_NET, "num_classes", num_classes, 0),
            learn_sigma=check_bool(_NET, "learn_sigma", learn_sigma),
            context_dim=check_int(_NET, "context_dim", context_dim, 0),
            text_encoder=text_encoder,
        )
        if hidden_size % num_heads:
            raise ConfigError(f"dit option num_heads={num_heads} must divide hidden_size={hidden_size}")
        self.check_image_size(image_size, self.config)
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.patch_size = patch_size

        grid = image_size // patch_size
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(FREQ_DIM, hidden_size, "silu")
        self.y_embedder = LabelEmbedder(num_classes, hidden_size) if num_classes > 0 else None
        self.register_buffer("pos_embed", sincos_pos_embed(hidden_size, grid, grid)[None], persistent=True)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, context_dim) for _ in range(depth)])
        self.text_encoder, self.text_pool = text_modules(_NET, context_dim, text_encoder, hidden_size)
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier linears, N(0, 0.02) embeddings, adaLN-Zero, zero output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                       self.final_layer.linear] + [
                b.cross.proj for b in self.blocks if b.cross is not None] + [m for m in (self.text_pool,) if m is not None]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def check_image_size(cls, image_size: int, config: Dict[str, Any]) -> None:
        """ConfigError unless ``image_size`` is a multiple of ``patch_size``."""
        p = check_int(_NET, "patch_size", config.get("patch_size", 2), 1)
        image_size = check_int(_NET, "image_size", image_size, 1)
        if image_size % p:
            low, high = (image_size // p) * p, (image_size // p + 1) * p
            works = f"{low} or {high} would work" if low else f"{high} would work"
            raise ConfigError(f"dit with patch size {p} needs an image size divisible by {p}; {works}, got {image_size}")

    def _positions(self, gh: int, gw: int) -> torch.Tensor:
        if gh == gw == self.image_size // self.patch_size:
            return self.pos_embed
        return sincos_pos_embed(self.pos_embed.shape[-1], gh, gw)[None].to(self.pos_embed)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"dit with patch size {p} needs H and W divisible by {p}, got {h}x{w}")
        gh, gw = h // p, w // p
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        tokens = self.x_embedder(x) + self._positions(gh, gw).to(dtype=x.dtype)
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            c = c + self.y_embedder(y)
        ctx, c = text_condition(self, context, context_mask, c)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)
        out = self.final_layer(tokens, c)  # (B, T, p*p*C_out), each token's values ordered (p, p, C)
        out = out.view(b, gh, gw, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return same_layout(out.reshape(b, self.out_channels, h, w), x)


_SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}

PRESETS: Dict[str, Dict[str, Any]] = {
    f"dit-{size}/{patch}": dict(depth=depth, hidden_size=dim, num_heads=heads, patch_size=patch)
    for size, (depth, dim, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}
"""DiT's model sizes (Peebles & Xie 2023, table 1) x patch sizes 2, 4, 8, each a network name."""

for _name, _defaults in PRESETS.items():
    register(_name, **_defaults)(DiT)

__all__ = ["DiT", "PRESETS", "sincos_pos_embed"]
