import math

import numpy as np
import pytest
import torch

from difforge.metrics.image_quality import gaussian_window, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(seed=0, n=3, c=3, size=24):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g, dtype=torch.float64)
    # a correlated, smoother second image: structure in common, but not equal
    y = 0.6 * x + 0.4 * torch.rand(n, c, size, size, generator=g, dtype=torch.float64)
    return x, y


def test_psnr_hand_formula_and_identity():
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full((1, 1, 4, 4), 0.1)
    assert psnr(x, y, data_range=1.0).item() == pytest.approx(10 * math.log10(1 / 0.01))
    assert psnr(x, y, data_range=2.0).item() == pytest.approx(10 * math.log10(4 / 0.01))
    assert math.isinf(psnr(y, y).item())


def test_psnr_matches_scikit_image_per_image():
    x, y = _pair()
    ours = psnr(x, y, data_range=1.0)
    for i in range(len(x)):
        ref = skimage_metrics.peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("channels,data_range", [(1, 1.0), (3, 1.0), (3, 255.0)])
def test_ssim_matches_scikit_image(channels, data_range):
    x, y = _pair(seed=channels, c=channels, size=20)
    x, y = x * data_range, y * data_range
    ours = ssim(x, y, data_range=data_range)
    for i in range(len(x)):
        ref = skimage_metrics.structural_similarity(
            x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=data_range, channel_axis=0,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)
    assert 0.05 < ours.mean().item() < 0.95  # a real test: neither identical nor unrelated


def test_ssim_hand_formula_on_one_window():
    """An 11x11 image has exactly one full window: SSIM is eq. 13 with weighted sums written out."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 1, 11, 11, generator=g, dtype=torch.float64)
    y = torch.rand(1, 1, 11, 11, generator=g, dtype=torch.float64)
    k = np.arange(-5, 6)
    w1 = np.exp(-(k**2) / (2 * 1.5**2))
    w = np.outer(w1, w1)
    w /= w.sum()
    a, b = x[0, 0].numpy(), y[0, 0].numpy()
    ma, mb = (w * a).sum(), (w * b).sum()
    va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
    cab = (w * (a - ma) * (b - mb)).sum()
    c1, c2 = 0.01**2, 0.03**2
    want = (2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert ssim(x, y).item() == pytest.approx(want, abs=1e-12)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    x = torch.full((1, 1, 12, 12), 0.2, dtype=torch.float64)
    y = torch.full((1, 1, 12, 12), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), abs=1e-12)


def test_window_and_errors():
    w = gaussian_window()
    assert len(w) == 11 and w.sum().item() == pytest.approx(1.0) and torch.equal(w, w.flip(0))
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8))
