"""Tiles: exact for a pointwise upscaler, no step at seams, a real network agrees with its untiled self away from seams."""

import torch
import torch.nn.functional as F

from difforge.models import registry
from difforge.pipeline.tiling import count_tiles, ramp, tile_starts, tiled


def nearest(scale):
    return lambda blocks, idx: F.interpolate(blocks, scale_factor=scale, mode="nearest")


def test_starts_cover_with_overlap():
    for n, tile, ov in [(40, 16, 4), (17, 16, 4), (100, 24, 8), (16, 16, 4)]:
        s = tile_starts(n, tile, ov)
        assert s[0] == 0 and s[-1] + tile == n
        assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))
    assert count_tiles(5, 5, 16, 4) == 1


def test_pointwise_function_is_exact_at_any_size():
    for h, w in [(13, 29), (5, 7), (40, 40)]:
        x = torch.randn(1, 3, h, w)
        out = tiled(nearest(4), x, 4, tile=12, overlap=4)
        assert out.shape == (1, 3, 4 * h, 4 * w)
        assert torch.allclose(out, F.interpolate(x, scale_factor=4, mode="nearest"), atol=1e-6)


def test_blend_has_no_step():
    """Each tile outputs a different constant; across a seam the blend moves by at most |a - b| / (L + 1) per pixel."""
    x = torch.zeros(1, 1, 40, 40)
    out = tiled(lambda b, idx: torch.stack([torch.full((1, 4 * b.shape[-2], 4 * b.shape[-1]), 10.0 * i) for i in idx]), x, 4, tile=16, overlap=6)
    L = 6 * 4
    biggest = 10.0 * (count_tiles(40, 40, 16, 6) - 1)
    dx = (out[..., 1:] - out[..., :-1]).abs().max().item()
    dy = (out[..., 1:, :] - out[..., :-1, :]).abs().max().item()
    assert max(dx, dy) <= biggest / (L + 1) + 1e-4
    hard = tiled(lambda b, idx: torch.stack([torch.full((1, 4 * b.shape[-2], 4 * b.shape[-1]), 10.0 * i) for i in idx]), x, 4, tile=16, overlap=0)
    assert (hard[..., 1:] - hard[..., :-1]).abs().max().item() >= 10.0  # without a ramp the seam steps (the test can fail)


def test_ramp_is_positive_and_rises_linearly():
    r = ramp(10, 4, rise=True, fall=False)
    assert torch.allclose(r[:4], torch.tensor([1, 2, 3, 4], dtype=torch.float64) / 5) and (r[4:] == 1).all()


def test_network_tiled_agrees_with_untiled_away_from_seams():
    torch.manual_seed(0)
    net = registry.build("rdn-sr", in_channels=3, scale=2, channels=8, blocks=1, layers=2, growth=4).eval()
    for p in net.tail.parameters():
        torch.nn.init.normal_(p, std=0.1)  # the zero-initialised last conv would make it plain bicubic
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        whole = net(x)
        parts = tiled(lambda b, idx: net(b), x, 2, tile=24, overlap=8)
    diff = (parts - whole).abs()[0].amax(0)
    # tiles [0, 24) and [16, 40): output pixels covered by one tile only and >= 8 input px from its cut edge
    away = torch.zeros(80, 80, dtype=torch.bool)
    for a in (slice(0, 32), slice(48, 80)):
        for b in (slice(0, 32), slice(48, 80)):
            away[a, b] = True
    assert diff[away].max() < 1e-5
    assert diff.max() < 0.5 and diff.max() > 1e-4  # near the seams the padding of the tile edge shows, smoothly blended
