"""The built-in procedural industrial-defect dataset: difforge's embedded default and demo data.

Four defect classes on metal-like (brushed steel) or wood-like surfaces (or, when asked, concrete:
``materials``, see :data:`MATERIALS`):

- ``scratch``: one long, thin, straight (or very slightly bent) line, usually bright;
- ``inclusion``: one to three dark, compact round or oval blobs;
- ``crack``: a dark jagged polyline (a random walk) with one branch;
- ``patch``: a large irregular region of different colour and texture (rust, stain, bleaching).

The surface (metal or wood, its tint, brightness, streak direction and lighting) is drawn
independently of the class, so only the defect tells the classes apart. ``materials`` chooses the
surfaces an image may have, each equally likely; the default, metal and wood, is the set as it
always was (the same first draw picks the surface, so every image is unchanged). A third surface
exists for text conditioning: with two, a defect held out on one material was only ever seen on
the other, so a caption model cannot tell the word from that material; with three it has seen the
defect on two surfaces (benchmarks/text_conditioning.py). Images are drawn at 2-3x
the output resolution and reduced with Lanczos, so thin lines stay anti-aliased and visible even
at 32x32. :func:`make_image_and_mask` also gives each image's exact defect mask.
Image ``i`` of class ``c`` comes from ``numpy.random.default_rng([seed, c, i])``: it does not
depend on how many other images are made, and ``seed`` reproduces the whole set bit for bit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image

from ..atomic import atomic_write

CLASSES = ("scratch", "inclusion", "crack", "patch")
MATERIALS = ("metal", "wood", "concrete")  # every surface the generator can draw
DEFAULT_MATERIALS = ("metal", "wood")  # the built-in set's
GOOD = "good"  # the defect-free class, written with masks (class index len(CLASSES))

PathLike = Union[str, os.PathLike]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


# ----------------------------------------------------------------------------- helpers


def _supersample(size: int) -> int:
    return 3 if size <= 128 else 2


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Value noise in about [-1, 1]: a ``cells`` x ``cells`` random grid bicubically upsampled to n x n."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    out = Image.fromarray(grid, mode="F").resize((n, n), Image.BICUBIC)
    return np.asarray(out, dtype=np.float32) * 0.7


def _noise_1d(rng: np.random.Generator, length: int, smooth: int) -> np.ndarray:
    """1-D noise with unit-ish variance, box-smoothed over ``smooth`` samples."""
    x = rng.standard_normal(length + smooth).astype(np.float32)
    k = np.ones(smooth, dtype=np.float32) / math.sqrt(smooth)
    return np.convolve(x, k, mode="valid")[:length]


def _sample_line(values: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Read 1-D ``values`` at fractional indices ``coord`` (linear interpolation, clamped)."""
    return np.interp(coord.ravel(), np.arange(values.size), values).reshape(coord.shape).astype(np.float32)


def _window(lo, hi, n: int) -> tuple[slice, slice]:
    """Pixel rows/columns covering the box [lo, hi] (image-fraction coordinates, (x, y) order)."""
    x0, y0 = (max(0, min(n, int(math.floor(v * n)))) for v in lo)
    x1, y1 = (max(0, min(n, int(math.ceil(v * n)) + 1)) for v in hi)
    return slice(y0, y1), slice(x0, x1)


def _stroke(xx, yy, points: np.ndarray, widths: np.ndarray, px: float, scales=(1.0,)) -> list[np.ndarray]:
    """Coverage in [0, 1] of a polyline with per-vertex half-widths (soft, anti-aliased edge).

    Returns one coverage map per entry of ``scales`` (the widths times that scale), sharing the
    distance computation. Each segment is evaluated only inside its own bounding box, which keeps
    long random walks cheap.
    """
    n = xx.shape[0]
    covs = [np.zeros_like(xx) for _ in scales]
    for i in range(len(points) - 1):
        (ax, ay), (bx, by) = (float(v) for v in points[i]), (float(v) for v in points[i + 1])
        wa, wb = float(widths[i]), float(widths[i + 1])
        m = 1.35 * max(wa, wb) * max(scales) + 2 * px
        win = _window((min(ax, bx) - m, min(ay, by) - m), (max(ax, bx) + m, max(ay, by) + m), n)
        x, y = xx[win], yy[win]
        if x.size == 0:
            continue
        abx, aby = bx - ax, by - ay
        t = ((x - ax) * abx + (y - ay) * aby) * (1.0 / (abx * abx + aby * aby + 1e-12))
        np.clip(t, 0.0, 1.0, out=t)
        d = np.hypot(x - (ax + abx * t), y - (ay + aby * t))
        w = wa + (wb - wa) * t
        for cov, k in zip(covs, scales):
            c = (k * w - d) / (0.35 * k * w + px) + 0.5
            np.maximum(cov[win], np.clip(c, 0.0, 1.0, out=c), out=cov[win])
    return covs


def _blend(img: np.ndarray, color, alpha: np.ndarray) -> None:
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


def _lighting(rng, xx, yy) -> np.ndarray:
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
    fine = _sample_line(_noise_1d(rng, 5 * n, max(1, n // 64)), across)
    coarse = _sample_line(_noise_1d(rng, 5 * n, max(2, n // 10)), across)
    along = _smooth_noise(rng, n, 4)
    shade = 1.0 + rng.uniform(0.025, 0.05) * fine * (1.0 + 0.3 * along) + rng.uniform(0.01, 0.03) * coarse
    shade = shade + 0.03 * along
    return color * (shade * _lighting(rng, xx, yy))[..., None]


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
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) + 0.04 * _smooth_noise(rng, n, 3)
    freq = rng.uniform(5.0, 10.0)
    phase = 2 * math.pi * freq * r + rng.uniform(0, 2 * math.pi)
    phase += 0.8 * np.sin(phase * rng.uniform(0.3, 0.45) + rng.uniform(0, 2 * math.pi))
    ring = (0.5 + 0.5 * np.sin(phase)) ** rng.uniform(2.0, 4.0)
    # fine grain along the rings, and slow colour variation
    grain = _sample_line(_noise_1d(rng, 20 * n, max(1, n // 64)), (r - r.min()) * (n * 3))
    mix = np.clip(0.7 * ring + 0.12 * grain + 0.12 * _smooth_noise(rng, n, 5), 0.0, 1.0)[..., None]
    img = light * (1.0 - mix) + dark * mix
    return img * _lighting(rng, xx, yy)[..., None]


def _concrete(rng, xx, yy, n) -> np.ndarray:
    """Grey cast concrete: isotropic sand grain, lighter and darker aggregate, a few air pores and
    slow mottling -- no direction (unlike brushed steel) and no rings or brown (unlike wood)."""
    grey = rng.uniform(0.5, 0.72)
    tint = np.array([0.015, 0.008, -0.012], dtype=np.float32) * rng.uniform(0.0, 2.0) + rng.normal(0, 0.008, 3)
    color = (grey + tint).astype(np.float32)
    sand = _smooth_noise(rng, n, max(8, n // 3))  # about one cell per output pixel at 3x supersampling
    stones = _smooth_noise(rng, n, max(6, n // 10))
    aggregate = np.clip((np.abs(stones) - 0.35) / 0.12, 0.0, 1.0) * np.sign(stones)
    shade = 1.0 + rng.uniform(0.05, 0.09) * sand + rng.uniform(0.04, 0.08) * aggregate
    shade = shade + 0.05 * _smooth_noise(rng, n, 4)
    img = color * (shade * _lighting(rng, xx, yy))[..., None]
    for _ in range(int(rng.integers(4, 12))):  # air pores: small dark round holes
        r = rng.uniform(0.006, 0.016)
        cx, cy = rng.uniform(0.0, 1.0, size=2).tolist()
        win = _window((cx - 2 * r, cy - 2 * r), (cx + 2 * r, cy + 2 * r), n)
        rho = np.hypot(xx[win] - cx, yy[win] - cy) * (1.0 / r)
        _blend(img[win], lambda sub: sub * 0.45, np.clip((1.0 - rho) * 2.0 + 0.5, 0.0, 1.0))
    return img


_SURFACES: dict = {"metal": _metal, "wood": _wood, "concrete": _concrete}


def pick_material(u: float, materials=DEFAULT_MATERIALS) -> str:
    """The surface for the uniform draw ``u``: ``materials`` in equal shares (metal below 0.5 of two)."""
    return materials[min(int(u * len(materials)), len(materials) - 1)]


def check_materials(materials) -> tuple:
    """``materials`` as a tuple of known surfaces, at least one, none twice (ValueError otherwise)."""
    out = tuple(materials)
    if not out or len(set(out)) != len(out) or any(m not in MATERIALS for m in out):
        raise ValueError(f"materials must be distinct names of {', '.join(MATERIALS)}, got {', '.join(map(str, out)) or 'none'}")
    return out


# ----------------------------------------------------------------------------- defects


def _scratch(img, rng, xx, yy, n, surface) -> None:
    px = 1.0 / n
    ang = rng.uniform(0, math.pi)
    direction = np.array([math.cos(ang), math.sin(ang)])
    normal = np.array([-direction[1], direction[0]])
    length = rng.uniform(0.6, 1.0)
    centre = rng.uniform(0.3, 0.7, size=2)
    a, b = centre - 0.5 * length * direction, centre + 0.5 * length * direction
    bend = rng.uniform(-0.04, 0.04)
    s = np.linspace(0.0, 1.0, 5)[:, None]
    points = a + s * (b - a) + (4 * s * (1 - s)) * bend * normal
    hw = rng.uniform(0.018, 0.03)
    widths = hw * np.array([0.6, 0.95, 1.0, 0.95, 0.6])
    (cov,) = _stroke(xx, yy, points, widths, px)
    strength = rng.uniform(0.7, 1.0)
    if rng.random() < 0.8:  # bright: the groove's wall reflects light
        lift = rng.uniform(0.3, 0.45)
        (shadow,) = _stroke(xx, yy, points + normal * hw * 1.6, widths * 0.8, px)
        _blend(img, np.zeros(3, dtype=np.float32), (0.35 * strength) * shadow * (1 - cov))
        _blend(img, lambda sub: np.clip(sub.mean(axis=-1, keepdims=True) + lift, 0.0, 1.0), strength * cov)
    else:
        k = rng.uniform(0.12, 0.25)
        _blend(img, lambda sub: sub * k, strength * cov)


def _inclusion(img, rng, xx, yy, n, surface) -> None:
    count = int(rng.integers(1, 4))
    centres: list[np.ndarray] = []
    for _ in range(count):
        r = rng.uniform(0.05, 0.1)
        for _try in range(20):
            c = rng.uniform(0.15, 0.85, size=2)
            if all(np.hypot(*(c - o)) > 0.25 for o in centres):
                break
        centres.append(c)
        aspect = rng.uniform(1.0, 1.6)
        ang = rng.uniform(0, math.pi)
        cx, cy = float(c[0]), float(c[1])
        m = 1.7 * r * aspect
        win = _window((cx - m, cy - m), (cx + m, cy + m), n)
        dx, dy = xx[win] - cx, yy[win] - cy
        u = (dx * math.cos(ang) + dy * math.sin(ang)) * (1.0 / (r * aspect))
        v = (dy * math.cos(ang) - dx * math.sin(ang)) * (1.0 / r)
        rho = np.sqrt(u * u + v * v)
        core = np.clip((1.0 - rho) / (0.25 + 1.0 / (r * n)) + 0.5, 0.0, 1.0)
        halo = np.clip(1.0 - (rho - 1.0) / 0.6, 0.0, 1.0) * (rho > 0.8)
        darkness = rng.uniform(0.08, 0.25)
        # a tiny specular dot on the rim of the pit
        hx, hy = cx - 0.35 * r, cy - 0.35 * r
        spec = np.clip(1.0 - np.hypot(xx[win] - hx, yy[win] - hy) * (1.0 / (0.25 * r)), 0.0, 1.0)
        sub = img[win]
        _blend(sub, lambda s: s * 0.6, 0.35 * halo)
        _blend(sub, np.array([0.25, 0.23, 0.22], dtype=np.float32) * (darkness / 0.25), 0.95 * core)
        _blend(sub, np.full(3, 0.7, dtype=np.float32), 0.35 * spec * core)


def _crack(img, rng, xx, yy, n, surface) -> None:
    px = 1.0 / n

    def walk(start, heading, steps, step_len, jitter):
        pts = [np.asarray(start, dtype=np.float64)]
        for _ in range(steps):
            h = heading + rng.normal(0.0, jitter)
            pts.append(pts[-1] + step_len * rng.uniform(0.7, 1.3) * np.array([math.cos(h), math.sin(h)]))
        return np.array(pts)

    heading = rng.uniform(0, 2 * math.pi)
    centre = rng.uniform(0.35, 0.65, size=2)
    steps = int(rng.integers(10, 15))
    step_len = rng.uniform(0.055, 0.075)
    main = walk(centre, heading, steps, step_len, 0.55)
    main += centre - main.mean(axis=0)  # keep most of the walk inside the image
    hw = rng.uniform(0.014, 0.024)
    idx = np.arange(len(main))
    taper = np.minimum(1.0, np.minimum(idx, idx[::-1]) / 2.5 + 0.35)
    cov, halo = _stroke(xx, yy, main, hw * taper, px, scales=(1.0, 2.6))
    k = int(rng.integers(len(main) // 3, 2 * len(main) // 3 + 1))
    branch_heading = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
    branch = walk(main[k], branch_heading, int(rng.integers(4, 8)), step_len * 0.8, 0.5)
    np.maximum(cov, _stroke(xx, yy, branch, hw * np.linspace(0.9, 0.35, len(branch)), px)[0], out=cov)
    _blend(img, lambda s: s * 0.75, 0.4 * halo)
    darkness = rng.uniform(0.05, 0.2)
    _blend(img, lambda s: s * darkness, 0.97 * cov)


def _patch(img, rng, xx, yy, n, surface) -> None:
    cx, cy = rng.uniform(0.35, 0.65, size=2).tolist()
    rx, ry = rng.uniform(0.2, 0.36), rng.uniform(0.18, 0.32)
    ang = rng.uniform(0, math.pi)
    p = float(rng.choice([2.0, 3.0, 5.0]))  # ellipse-like .. rectangle-like (superellipse exponent)
    harmonics = [(k, rng.uniform(0.03, 0.09), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    edge_noise = _smooth_noise(rng, n, 6)
    mottle = _smooth_noise(rng, n, 10) + 0.5 * _smooth_noise(rng, n, 24)
    m = 1.45 * max(rx, ry)
    win = _window((cx - m, cy - m), (cx + m, cy + m), n)
    dx, dy = xx[win] - cx, yy[win] - cy
    u = (dx * math.cos(ang) + dy * math.sin(ang)) * (1.0 / rx)
    v = (dy * math.cos(ang) - dx * math.sin(ang)) * (1.0 / ry)
    rho = (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)
    # irregular border: low angular harmonics plus smooth noise
    phi = np.arctan2(v, u)
    wobble = sum(amp * np.sin(k * phi + ph) for k, amp, ph in harmonics)
    rho = rho * (1.0 + wobble) + 0.12 * edge_noise[win]
    alpha = np.clip((1.0 - rho) / 0.12 + 0.5, 0.0, 1.0)

    kind = rng.random()
    if surface == "metal" or kind < 0.3:
        # rust, darker than the surface (or lighter on a dark surface) so it shows in grayscale too
        bg = float(img[win].mean(axis=(0, 1)) @ _LUMA)
        target = bg - rng.uniform(0.15, 0.3) if bg > 0.45 else bg + rng.uniform(0.15, 0.25)
        rust = np.array([0.62, 0.33, 0.14], dtype=np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
        base = rust * (target / float(rust @ _LUMA))
    elif kind < 0.7:
        base = np.array([0.22, 0.22, 0.18], dtype=np.float32) * rng.uniform(0.8, 1.4)  # dark stain
    else:
        base = np.array([0.9, 0.86, 0.74], dtype=np.float32) * rng.uniform(0.9, 1.05)  # bleached
    speck = rng.standard_normal(alpha.shape).astype(np.float32)
    tex = 1.0 + 0.22 * mottle[win] + 0.06 * speck
    color = np.clip(base * tex[..., None], 0.0, 1.0)
    _blend(img[win], color, rng.uniform(0.8, 0.95) * alpha)


_DEFECTS: tuple[Callable, ...] = (_scratch, _inclusion, _crack, _patch)


# ----------------------------------------------------------------------------- public API


def make_image(class_index: int, size: int, rng: np.random.Generator, channels: int = 3, materials=DEFAULT_MATERIALS) -> np.ndarray:
    """Draw one image of class ``CLASSES[class_index]``: uint8 (size, size, channels)."""
    if not 0 <= class_index < len(CLASSES):
        raise ValueError(f"class_index must be in 0..{len(CLASSES) - 1}, got {class_index}")
    return _render(class_index, size, rng, channels, clean=False, materials=materials)[0]


def make_image_and_mask(class_index: int, size: int, rng: np.random.Generator, channels: int = 3, materials=DEFAULT_MATERIALS):
    """(image, mask, clean): the image of :func:`make_image` (bit for bit, same ``rng`` use), its
    exact defect mask and the same image without the defect; ``class_index == len(CLASSES)`` is
    a defect-free ``good`` surface (empty mask).

    The surface is rendered twice, with and without the defect, through the same resize and the
    same sensor noise, so ``mask`` (bool (size, size)) is exactly the set of pixels whose uint8
    value the defect changed in any channel: ``mask == (image != clean).any(-1)``. Lanczos
    reduction spreads a defect's edge by up to three output pixels, so the mask includes that
    faint fringe.
    """
    image, clean = _render(class_index, size, rng, channels, clean=True, materials=materials)
    return image, (image != clean).any(axis=-1), clean


def _render(class_index: int, size: int, rng: np.random.Generator, channels: int, clean: bool, materials=DEFAULT_MATERIALS):
    if not 0 <= class_index <= len(CLASSES):
        raise ValueError(f"class_index must be in 0..{len(CLASSES)} ({len(CLASSES)} = {GOOD}), got {class_index}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    n = size * _supersample(size)
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    surface = pick_material(rng.random(), check_materials(materials))
    img = _SURFACES[surface](rng, xx, yy, n).astype(np.float32)
    plain = img.copy() if clean else None
    if class_index < len(CLASSES):
        _DEFECTS[class_index](img, rng, xx, yy, n, surface)
    outs = [_reduce(img, size)] + ([_reduce(plain, size)] if clean else [])
    noise = rng.normal(0.0, 1.5, outs[0].shape).astype(np.float32)  # a little sensor noise
    gray = (lambda o: (o @ _LUMA)[..., None]) if channels == 1 else (lambda o: o)
    finished = [np.clip(gray(out + noise) + 0.5, 0, 255).astype(np.uint8) for out in outs]
    return finished if clean else (finished[0], None)


def _reduce(img: np.ndarray, size: int) -> np.ndarray:
    """Supersampled float image -> float32 (size, size, 3) in 0..255 (uint8 quantised, Lanczos-reduced)."""
    hi = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(hi, "RGB").resize((size, size), Image.LANCZOS), dtype=np.float32)


def generate_arrays(
    size: int = 64, per_class: int = 200, seed: int = 0, channels: int = 3, materials=DEFAULT_MATERIALS
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images, class by class: uint8 (N, size, size, channels), int64 labels (N,), class names."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    images = np.empty((len(CLASSES) * per_class, size, size, channels), dtype=np.uint8)
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    for j, (c, i) in enumerate((c, i) for c in range(len(CLASSES)) for i in range(per_class)):
        images[j] = make_image(c, size, np.random.default_rng([seed, c, i]), channels, materials)
    return images, labels, list(CLASSES)


def write_dataset(
    out_dir: PathLike,
    size: int = 64,
    per_class: int = 200,
    seed: int = 0,
    channels: int = 3,
    progress: bool = True,
    masks: bool = False,
    materials=DEFAULT_MATERIALS,
) -> Path:
    """Write ``out_dir/<class>/<class>_00000.png`` ... (a class-folder dataset) and return ``out_dir``.

    With ``masks``: the image+mask pairs layout of :mod:`difforge.data.masks` instead,
    ``out_dir/images/<class>/<class>_00000.png`` and the exact defect mask (0 / 255, see
    :func:`make_image_and_mask`) as ``out_dir/masks/<class>/<class>_00000.png``, plus a ``good``
    class of defect-free surfaces with empty masks. The defect images are the same either way.
    Each PNG is written atomically, so an interrupted run leaves only whole files; running it again
    rewrites identical images.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    names = list(CLASSES) + ([GOOD] if masks else [])
    jobs = [(c, i) for c in range(len(names)) for i in range(per_class)]
    for c, i in tqdm(jobs, desc="writing built-in dataset", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, c, i])
        name = f"{names[c]}/{names[c]}_{i:05d}.png"
        if masks:
            arr, mask, _ = make_image_and_mask(c, size, rng, channels, materials)
            _write_png(mask.astype(np.uint8) * 255, out_dir / "masks" / name)
            _write_png(arr[..., 0] if channels == 1 else arr, out_dir / "images" / name)
        else:
            arr = make_image(c, size, rng, channels, materials)
            _write_png(arr[..., 0] if channels == 1 else arr, out_dir / name)
    return out_dir


def _write_png(arr: np.ndarray, path: Path) -> None:
    with atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
