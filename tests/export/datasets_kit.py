"""Tiny sources for the dataset-export tests: built-in pairs with exact masks, and a synth-like folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from difforge.data.builtin import write_dataset
from difforge.data.manifest import make_line


def pairs_source(root: Path, size: int = 24, per_class: int = 3) -> Path:
    """``root/images/<class>/x.png`` + ``root/masks/...``: 4 defect classes and good, exact masks."""
    return write_dataset(root, size=size, per_class=per_class, seed=3, progress=False, masks=True)


def ring_mask(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    return (r < size * 0.4) & (r > size * 0.2)


def synth_source(root: Path, size: int = 20, n: int = 4) -> Path:
    """A folder like ``difforge synth`` output: images/, masks/, manifest.jsonl with synthetic lines.

    Masks: blobs, a one-pixel diagonal line, two separate squares (two instances), a ring (a hole).
    """
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    shapes = [ring_mask(size), np.eye(size, dtype=bool), np.zeros((size, size), bool), np.zeros((size, size), bool)]
    shapes[2][2:6, 3:9] = True
    shapes[2][12:17, 10:18] = True
    shapes[3][5:15, 4:12] = True
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = shapes[i % len(shapes)]
        for sub in ("images", "masks"):
            (root / sub).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"blob_{i:05d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"blob_{i:05d}.png")
        lines.append(make_line(f"images/blob_{i:05d}.png", mask=f"masks/blob_{i:05d}.png", size=(size, size), seed=100 + i,
                               method="mask-conditioned", class_name="blob", model="m.safetensors", model_sha256="ab" * 32,
                               sampler="ddim", steps=5, cfg=1.0, background="bg/good_0.png", placement={"x": i, "y": 0}))
    import json

    (root / "manifest.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    return root


def read_mask_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127
