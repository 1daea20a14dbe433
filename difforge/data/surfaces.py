"""The surfaces of the built-in defect set (brushed steel, wood, concrete) and the drawing
primitives they share with the defects (:mod:`difforge.data.builtin`).

Apart from the defects because the surfaces are what a caption calls the *material*: which ones
a set has (``materials``) is a choice of its own, and the default two keep every image of the
set as it always was -- the first draw of an image's generator picks the surface
(:func:`pick_material`: metal below 0.5 of two).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..config import BUILTIN_MATERIALS as MATERIALS  # every surface the generator can draw (the config checks names)
from ..config import known_materials

DEFAULT_MATERIALS = ("metal", "wood")  # the built-in set's


def smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Value noise in about [-1, 1]: a ``cells`` x ``cells`` random grid bicubically upsampled to n x n."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    out = Image.fromarray(grid, mode="F").resize((n, n), Image.BICUBIC)
    return np.asarray(out, dtype=np.float32) * 0.7


def noise_1d(rng: np.random.Generator, length: int, smooth: int) -> np.ndarray:
    """1-D noise with unit-ish variance, box-smoothed over ``smooth`` samples."""
    x = rng.standard_normal(length + smooth).astype(np.float32)
    k = np.ones(smooth, dtype=np.float32) / math.sqrt(smooth)
    return np.convolve(x, k, mode="valid")[:length]


def sample_line(values: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Read 1-D ``values`` at fractional indices ``coord`` (linear interpolation, clamped)."""
    return np.interp(coord.ravel(), np.arange(values.size), values).reshape(coord.shape).astype(np.float32)


def window(lo, hi, n: int) -> tuple[slice, slice]:
    """Pixel rows/columns covering the box [lo, hi] (image-fraction coordinates, (x, y) order)."""
    x0, y0 = (max(0, min(n, int(math.floor(v * n)))) for v in lo)
    x1, y1 = (max(0, min(n, int(math.ceil(v * n)) + 1)) for v in hi)
    return slice(y0, y1), slice(x0, x1)


def blend(img: np.ndarray, color, alpha: np.ndarray) -> None:
    """In place: img = img * (1 - alpha) + color * alpha, touching only the box where alpha > 0.

    ``color`` is a (3,) array, or an (H, W, 3) array / callable of the window (for colours that
    depend on the image underneath).
    """
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    win = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    a = alpha[win][..., None]
    sub = img[win]
    if callable(color):
        color = color(sub)
    elif np.ndim(color) == 3:
        color = color[win]
    sub += (color - sub) * a


# ----------------------------------------------------------------------------- surfaces


def lighting(rng, xx, yy) -> np.ndarray:
    """A slight linear gradient times a soft vignette, around 1."""
    ang = rng.uniform(0, 2 * math.pi)
    grad = 1.0 + rng.uniform(0.04, 0.14) * ((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang))
    cx, cy = rng.uniform(0.3, 0.7, size=2)
    vig = 1.0 - rng.uniform(0.05, 0.2) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    return (grad * vig).astype(np.float32)


def _metal(rng, xx, yy, n) -> np.ndarray:
    grey = rng.uniform(0.42, 0.72)
    tint = np.array([0.0, 0.005, 0.02], dtype=np.float32) * rng.uniform(0, 2) + rng.normal(0, 0.012, 3)
    color = (grey + tint).astype(np.float32)
    theta = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.12) if rng.random() < 0.75 else rng.uniform(0, math.pi)
    # brushing: fine streaks that vary across the brushing direction only
    across = (-math.sin(theta) * xx + math.cos(theta) * yy) * n + 2 * n
    fine = sample_line(noise_1d(rng, 5 * n, max(1, n // 64)), across)
    coarse = sample_line(noise_1d(rng, 5 * n, max(2, n // 10)), across)
    along = smooth_noise(rng, n, 4)
    shade = 1.0 + rng.uniform(0.025, 0.05) * fine * (1.0 + 0.3 * along) + rng.uniform(0.01, 0.03) * coarse
    shade = shade + 0.03 * along
    return color * (shade * lighting(rng, xx, yy))[..., None]


def _wood(rng, xx, yy, n) -> np.ndarray:
    warmth = rng.uniform(-1.0, 1.0)
    light = (np.array([0.78, 0.58, 0.36]) + warmth * np.array([0.06, 0.0, -0.06])) * rng.uniform(0.75, 1.15)
    light = light.astype(np.float32)
    dark = light * np.array([0.68, 0.6, 0.54], dtype=np.float32) * rng.uniform(0.85, 1.0)
    # growth rings around a centre far outside the image, warped by smooth noise; two ring
    # frequencies make the spacing irregular, a power makes the dark late-wood lines narrow
    ang = rng.uniform(0, 2 * math.pi)
    dist = rng.uniform(1.2, 4.0)
    cx, cy = 0.5 + dist * math.cos(ang), 0.5 + dist * math.sin(ang)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) + 0.04 * smooth_noise(rng, n, 3)
    freq = rng.uniform(5.0, 10.0)
    phase = 2 * math.pi * freq * r + rng.uniform(0, 2 * math.pi)
    phase += 0.8 * np.sin(phase * rng.uniform(0.3, 0.45) + rng.uniform(0, 2 * math.pi))
    ring = (0.5 + 0.5 * np.sin(phase)) ** rng.uniform(2.0, 4.0)
    # fine grain along the rings, and slow colour variation
    grain = sample_line(noise_1d(rng, 20 * n, max(1, n // 64)), (r - r.min()) * (n * 3))
    mix = np.clip(0.7 * ring + 0.12 * grain + 0.12 * smooth_noise(rng, n, 5), 0.0, 1.0)[..., None]
    img = light * (1.0 - mix) + dark * mix
    return img * lighting(rng, xx, yy)[..., None]


def _concrete(rng, xx, yy, n) -> np.ndarray:
    """Grey cast concrete: isotropic sand grain, lighter and darker aggregate, a few air pores and
    slow mottling -- no direction (unlike brushed steel) and no rings or brown (unlike wood)."""
    grey = rng.uniform(0.5, 0.72)
    tint = np.array([0.015, 0.008, -0.012], dtype=np.float32) * rng.uniform(0.0, 2.0) + rng.normal(0, 0.008, 3)
    color = (grey + tint).astype(np.float32)
    sand = smooth_noise(rng, n, max(8, n // 3))  # about one cell per output pixel at 3x supersampling
    stones = smooth_noise(rng, n, max(6, n // 10))
    aggregate = np.clip((np.abs(stones) - 0.35) / 0.12, 0.0, 1.0) * np.sign(stones)
    shade = 1.0 + rng.uniform(0.05, 0.09) * sand + rng.uniform(0.04, 0.08) * aggregate
    shade = shade + 0.05 * smooth_noise(rng, n, 4)
    img = color * (shade * lighting(rng, xx, yy))[..., None]
    for _ in range(int(rng.integers(4, 12))):  # air pores: small dark round holes
        r = rng.uniform(0.006, 0.016)
        cx, cy = rng.uniform(0.0, 1.0, size=2).tolist()
        win = window((cx - 2 * r, cy - 2 * r), (cx + 2 * r, cy + 2 * r), n)
        rho = np.hypot(xx[win] - cx, yy[win] - cy) * (1.0 / r)
        blend(img[win], lambda sub: sub * 0.45, np.clip((1.0 - rho) * 2.0 + 0.5, 0.0, 1.0))
    return img


SURFACES: dict = {"metal": _metal, "wood": _wood, "concrete": _concrete}


def pick_material(u: float, materials=DEFAULT_MATERIALS) -> str:
    """The surface for the uniform draw ``u``: ``materials`` in equal shares (metal below 0.5 of two)."""
    return materials[min(int(u * len(materials)), len(materials) - 1)]


def check_materials(materials) -> tuple:
    """``materials`` as a tuple of known surfaces, at least one, none twice (ValueError otherwise)."""
    out = tuple(materials)
    if not known_materials(out):
        raise ValueError(f"materials must be distinct names of {', '.join(MATERIALS)}, got {', '.join(map(str, out)) or 'none'}")
    return out


__all__ = ["DEFAULT_MATERIALS", "MATERIALS", "SURFACES", "blend", "check_materials", "lighting", "noise_1d", "pick_material",
           "sample_line", "smooth_noise", "window"]
