"""Run an upscaler over a large image in overlapping tiles, blended without seams, at bounded memory.

The low-res image (1, C, H, W) is cut into ``tile`` x ``tile`` blocks whose starts are
0, step, 2 step, ... and H - tile (step = tile - overlap), so neighbours share at least
``overlap`` low-res pixels. (An image smaller than a tile is edge-padded up to it, and the
padding cropped off the result.) Each block goes through ``fn`` (``batch`` blocks at a time);
the results are accumulated into the output with weights, out = sum_k w_k y_k / sum_k w_k.

A block's weight is separable, w(i, j) = r(i) r(j): along an edge it shares with a neighbour, r
rises linearly over the L = overlap x scale output pixels next to that edge as
r(i) = (i + 1) / (L + 1), and is 1 elsewhere (and along the image's own border). Every weight is
positive and continuous inside its block and near zero at a shared edge, so the normalised blend
changes by at most |y_a - y_b| / (L + 1) per pixel across a seam instead of stepping by |y_a - y_b|.
Memory: the float output and its weight sum (C + 1 values per output pixel) plus ``batch``
blocks, whatever the image size.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn.functional as F


def tile_starts(n: int, tile: int, overlap: int) -> List[int]:
    """Starts of blocks of length ``tile`` covering 0..n-1 (n >= tile) with at least ``overlap`` shared."""
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step))
    return starts + [n - tile]


def ramp(length: int, ramp_len: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D weights: 1, rising over the first ``ramp_len`` entries when ``rise``, falling over the last when ``fall``."""
    r = torch.ones(length, dtype=torch.float64)
    if ramp_len > 0:
        k = min(ramp_len, length)
        up = torch.arange(1, k + 1, dtype=torch.float64) / (ramp_len + 1)
        if rise:
            r[:k] = torch.minimum(r[:k], up)
        if fall:
            r[length - k :] = torch.minimum(r[length - k :], up.flip(0))
    return r


def tiled(fn: Callable[[torch.Tensor, List[int]], torch.Tensor], x: torch.Tensor, scale: int, tile: int, overlap: int,
          batch: int = 4, progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """``fn`` over the blocks of ``x`` (1, C, H, W), blended (see the module docstring): (1, C, sH, sW) float CPU.

    ``fn(blocks, indices)`` takes (k, C, tile, tile) and the blocks' running indices (for seeds) and
    returns (k, C, s tile, s tile). ``progress(done, total)`` after every batch of blocks.
    """
    _, c, h, w = x.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    H, W = x.shape[-2:]
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    blocks = [(i, j) for i in ys for j in xs]
    out = torch.zeros((c, H * scale, W * scale), dtype=torch.float32)
    wsum = torch.zeros((1, H * scale, W * scale), dtype=torch.float32)
    L, T = overlap * scale, tile * scale
    for start in range(0, len(blocks), batch):
        part = blocks[start : start + batch]
        inp = torch.cat([x[:, :, i : i + tile, j : j + tile] for i, j in part])
        y = fn(inp, list(range(start, start + len(part)))).float().cpu()
        for (i, j), yk in zip(part, y):
            wy = ramp(T, L, rise=i > 0, fall=i + tile < H).float()
            wx = ramp(T, L, rise=j > 0, fall=j + tile < W).float()
            wk = wy[:, None] * wx[None, :]
            out[:, i * scale : i * scale + T, j * scale : j * scale + T] += yk * wk
            wsum[:, i * scale : i * scale + T, j * scale : j * scale + T] += wk
        if progress is not None:
            progress(start + len(part), len(blocks))
    out = out / wsum
    return out[None, :, : h * scale, : w * scale]


def count_tiles(h: int, w: int, tile: int, overlap: int) -> int:
    """How many blocks :func:`tiled` runs for an h x w image."""
    return len(tile_starts(max(h, tile), tile, overlap)) * len(tile_starts(max(w, tile), tile, overlap))


__all__ = ["count_tiles", "ramp", "tile_starts", "tiled"]
