"""The super-resolution degradation: deterministic per seed, and each step against an independent reference."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from difforge.data.degrade import Degradation, degrade, downsample, gaussian_blur, jpeg_roundtrip
from difforge.errors import ConfigError


def images(n=2, size=16, seed=0):
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_deterministic_per_seed():
    x = images()
    deg = Degradation(4, "bicubic", blur=0.8, noise=0.1, jpeg=70)
    a = degrade(x, deg, generator=torch.Generator().manual_seed(3))
    b = degrade(x, deg, generator=torch.Generator().manual_seed(3))
    c = degrade(x, deg, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 4, 4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(degrade(x, deg.deterministic), degrade(x, deg.deterministic))  # no draws at all without noise


def test_area_is_the_block_mean():
    x = images(size=12)
    ref = x.numpy().reshape(2, 3, 3, 4, 3, 4).mean(axis=(3, 5))
    assert np.allclose(downsample(x, 4, "area").numpy(), ref, atol=1e-6)


def test_odd_size_rounds_up_by_edge_padding():
    assert downsample(images(size=13), 4, "area").shape[-1] == 4
    assert downsample(torch.zeros(1, 1, 77, 203), 4, "bicubic").shape[-2:] == (20, 51)


def test_bicubic_close_to_pillow():
    x = images(1, 32)
    u8 = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    ref = np.asarray(Image.fromarray(u8).resize((8, 8), Image.BICUBIC)).astype(np.float64)
    ours = (downsample(torch.from_numpy(u8).permute(2, 0, 1)[None].double(), 4, "bicubic")[0].permute(1, 2, 0).numpy())
    assert np.abs(ours - ref).mean() < 2.0  # of 255: the same antialiased cubic filter, different rounding / edges


def test_blur_keeps_constants_and_sums_to_one():
    c = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(c, 1.5), c, atol=1e-6)
    d = torch.zeros(1, 1, 21, 21)
    d[0, 0, 10, 10] = 1.0
    b = gaussian_blur(d, 1.0)
    assert abs(b.sum().item() - 1.0) < 1e-5 and abs(b[0, 0, 10, 11].item() / b[0, 0, 10, 10].item() - np.exp(-0.5)) < 1e-4


def test_jpeg_matches_pillow():
    x = images(1, 16)
    u8 = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=50)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    ours = ((jpeg_roundtrip(x, 50)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert np.array_equal(ours.astype(np.uint8), ref)


@pytest.mark.parametrize("bad", [dict(scale=1), dict(down="nearest"), dict(noise=-0.1), dict(jpeg=101)])
def test_bad_settings_name_the_field(bad):
    with pytest.raises(ConfigError, match=list(bad)[0]):
        Degradation(**bad).check()
