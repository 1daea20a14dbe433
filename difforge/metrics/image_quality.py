"""Full-reference image quality: PSNR and SSIM of reconstructions against their originals.

Both take float batches (N, C, H, W) on one scale (``data_range`` = max - min of that scale, 1
for [0, 1] images, 2 for [-1, 1], 255 for uint8 values) and return one number per image.

- PSNR = 10 log10(data_range^2 / MSE), MSE over all C*H*W values (inf for identical images).
- SSIM (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13) with their Gaussian window (sigma 1.5,
  11 x 11): per pixel

      SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
      C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range,

  with the local means, variances and covariance taken under the window (population
  statistics, no n/(n-1) correction). The mean over the pixels whose window lies fully inside
  the image, averaged over channels, is the image's SSIM. This equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=L, channel_axis=...)``: it filters the whole image and then crops the 5-pixel border
  whose windows reach into the padding, so padding never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # window radius = int(3.5 * 1.5 + 0.5) = 5 -> 11 x 11
K1, K2 = 0.01, 0.03


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of (N, ...) batches ``x`` vs ``y``: 10 log10(L^2 / MSE)."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # inf where mse == 0


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """Normalised 1-D Gaussian taps exp(-k^2 / (2 sigma^2)), k = -r..r, r = int(truncate sigma + 0.5)."""
    r = int(truncate * sigma + 0.5)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) batches (see the module docstring); H, W >= 11."""
    _check_pair(x, y)
    if x.ndim != 4:
        raise ValueError(f"ssim needs (N, C, H, W) batches, got shape {tuple(x.shape)}")
    w = gaussian_window()
    size = len(w)
    n, c, h, wd = x.shape
    if h < size or wd < size:
        raise ValueError(f"ssim needs images of at least {size}x{size} pixels (its Gaussian window), got {h}x{wd}")
    a = x.double().reshape(n * c, 1, h, wd)
    b = y.double().reshape(n * c, 1, h, wd)
    kw = w.to(a.device)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, 'valid' region only
        t = F.conv2d(t, kw.view(1, 1, size, 1))
        return F.conv2d(t, kw.view(1, 1, 1, size))

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.reshape(n, c, -1).mean(dim=(1, 2))


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images to compare must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


__all__ = ["gaussian_window", "psnr", "ssim"]
