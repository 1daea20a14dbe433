"""How a super-resolution model's low-resolution inputs are made from high-resolution images.

The degradation of one image x (float, [-1, 1], (C, H, W)) at scale s, in this order:

1. **blur** (``blur`` = sigma > 0, in high-res pixels): a separable Gaussian, taps
   exp(-k^2 / (2 sigma^2)) for |k| <= ceil(3 sigma), normalised, reflect-padded at the borders;
2. **down** by s: ``area`` (the mean of every s x s block, exact for sizes divisible by s) or
   ``bicubic`` (Keys' a = -0.5 cubic with antialiasing, torch's ``interpolate(..., antialias=True)``,
   close to Pillow's BICUBIC resize); the low-res image is ceil(H / s) x ceil(W / s)
   (a size not divisible by s is edge-padded first);
3. **noise** (``noise`` = std > 0, on the [-1, 1] scale): additive Gaussian noise, clipped to [-1, 1];
4. **JPEG** (``jpeg`` = quality in 1..100, 0 = off): a Pillow JPEG encode / decode round trip
   of the 8-bit image (4:2:0 chroma subsampling as Pillow's default).

Steps 1, 2 and 4 are deterministic; the noise of step 3 comes from the caller's generator, so
the whole degradation is a function of (image, settings, seed). The settings are written into
the model file (``meta["inputs"]["low_res"]["degradation"]``) so that evaluation and the
consistency check (downsample the SR output, compare with the input) use the same operator.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DOWN_METHODS = ("bicubic", "area")


@dataclass(frozen=True)
class Degradation:
    """The settings of :func:`degrade` (see the module docstring)."""

    scale: int = 4
    down: str = "bicubic"
    blur: float = 0.0
    noise: float = 0.0
    jpeg: int = 0

    def check(self) -> "Degradation":
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or not 2 <= self.scale <= 8:
            raise ConfigError(f"scale={self.scale!r} must be a whole number in 2..8")
        if self.down not in DOWN_METHODS:
            raise ConfigError(f"down={self.down!r} is not allowed; choose one of {', '.join(DOWN_METHODS)}")
        for name, hi in (("blur", 10.0), ("noise", 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= hi:
                raise ConfigError(f"{name}={v!r} must be a number in [0, {hi:g}]")
        if isinstance(self.jpeg, bool) or not isinstance(self.jpeg, int) or not 0 <= self.jpeg <= 100:
            raise ConfigError(f"jpeg={self.jpeg!r} must be a JPEG quality in 1..100, or 0 for none")
        return self

    @property
    def deterministic(self) -> "Degradation":
        """The same operator without its random part (the noise): what consistency is measured with."""
        return Degradation(self.scale, self.down, self.blur, 0.0, self.jpeg)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "Degradation":
        d = dict(d or {})
        known = {k: d[k] for k in ("scale", "down", "blur", "noise", "jpeg") if k in d}
        return cls(**known).check()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (replicate for tiny images)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3.0 * sigma))
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    w = (w / w.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def downsample(x: torch.Tensor, scale: int, down: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, ceil(H / s), ceil(W / s)) by ``area`` or antialiased ``bicubic``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % scale, (-w) % scale
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    if down == "area":
        return F.avg_pool2d(x, scale)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def upsample(x: torch.Tensor, scale: int, clamp: bool = True) -> torch.Tensor:
    """Bicubic x ``scale`` (the upsampled low-res image a diffusion upsampler is conditioned on),
    clipped to [-1, 1] unless ``clamp`` is False (a noised input keeps its noise)."""
    y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return y.clamp(-1.0, 1.0) if clamp else y


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image of (B, C, H, W) in [-1, 1] through an 8-bit JPEG at ``quality`` and back."""
    from PIL import Image

    out = []
    u8 = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for img in u8:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
        out.append(torch.from_numpy(back.reshape(img.shape).copy()))
    y = torch.stack(out).permute(0, 3, 1, 2).to(x.dtype).div(127.5).sub(1.0)
    return y.to(x.device)


def degrade(x: torch.Tensor, deg: Degradation, noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The low-res version of ``x`` (B, C, H, W) in [-1, 1] under ``deg``.

    The noise of step 3 is ``noise`` (standard normal, the low-res shape) when given, else drawn
    from ``generator`` (CPU); a degradation without noise draws nothing.
    """
    y = downsample(gaussian_blur(x, deg.blur), deg.scale, deg.down)
    if deg.noise > 0:
        if noise is None:
            noise = torch.randn(y.shape, generator=generator)
        y = y + deg.noise * noise.to(y.device, y.dtype)
    y = y.clamp(-1.0, 1.0)
    if deg.jpeg:
        y = jpeg_roundtrip(y, deg.jpeg)
    return y


__all__ = ["DOWN_METHODS", "Degradation", "degrade", "downsample", "gaussian_blur", "jpeg_roundtrip", "upsample"]
