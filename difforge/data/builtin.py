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
from .surfaces import DEFAULT_MATERIALS, MATERIALS, SURFACES, blend, check_materials, pick_material, smooth_noise, window

CLASSES = ("scratch", "inclusion", "crack", "patch")
GOOD = "good"  # the defect-free class, written with masks (class index len(CLASSES))

PathLike = Union[str, os.PathLike]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


# ----------------------------------------------------------------------------- helpers


def _supersample(size: int) -> int:
    return 3 if size <= 128 else 2


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
        win = window((min(ax, bx) - m, min(ay, by) - m), (max(ax, bx) + m, max(ay, by) + m), n)
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
        blend(img, np.zeros(3, dtype=np.float32), (0.35 * strength) * shadow * (1 - cov))
        blend(img, lambda sub: np.clip(sub.mean(axis=-1, keepdims=True) + lift, 0.0, 1.0), strength * cov)
    else:
        k = rng.uniform(0.12, 0.25)
        blend(img, lambda sub: sub * k, strength * cov)


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
        win = window((cx - m, cy - m), (cx + m, cy + m), n)
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
        blend(sub, lambda s: s * 0.6, 0.35 * halo)
        blend(sub, np.array([0.25, 0.23, 0.22], dtype=np.float32) * (darkness / 0.25), 0.95 * core)
        blend(sub, np.full(3, 0.7, dtype=np.float32), 0.35 * spec * core)


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
    blend(img, lambda s: s * 0.75, 0.4 * halo)
    darkness = rng.uniform(0.05, 0.2)
    blend(img, lambda s: s * darkness, 0.97 * cov)


def _patch(img, rng, xx, yy, n, surface) -> None:
    cx, cy = rng.uniform(0.35, 0.65, size=2).tolist()
    rx, ry = rng.uniform(0.2, 0.36), rng.uniform(0.18, 0.32)
    ang = rng.uniform(0, math.pi)
    p = float(rng.choice([2.0, 3.0, 5.0]))  # ellipse-like .. rectangle-like (superellipse exponent)
    harmonics = [(k, rng.uniform(0.03, 0.09), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    edge_noise = smooth_noise(rng, n, 6)
    mottle = smooth_noise(rng, n, 10) + 0.5 * smooth_noise(rng, n, 24)
    m = 1.45 * max(rx, ry)
    win = window((cx - m, cy - m), (cx + m, cy + m), n)
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
    blend(img[win], color, rng.uniform(0.8, 0.95) * alpha)


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
    img = SURFACES[surface](rng, xx, yy, n).astype(np.float32)
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
