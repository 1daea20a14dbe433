"""Exact captions for the built-in defect set: what the generator painted, in words.

Every attribute is read off what :mod:`difforge.data.builtin` produced, not guessed:

- ``material``: the surface drawn first by ``_render`` (``pick_material(rng.random(), materials)``:
  below 0.5 metal, of the default two), which :func:`material_of` repeats on a fresh generator with the image's seed (a test checks it
  against the colours of the images, so a change of the generator's draw order is caught);
- ``defect``: the class;
- ``position``, ``orientation``, ``size``: from the image's exact defect mask
  (:func:`~difforge.data.builtin.make_image_and_mask`, without its faint fringe: :func:`core_mask`): its centroid in a 3 x 3 grid, the
  principal axis of its second moments (only for elongated masks), and its area against
  per-class terciles measured on the set itself.

A caption reads ``"a large diagonal scratch at the top left on brushed steel"``; a ``good``
image ``"a clean wooden surface without defects"``. :func:`write_builtin_captions` writes them
as ``metadata.jsonl`` (with the attributes as extra fields) for ``difforge data defects --captions``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .builtin import CLASSES, DEFAULT_MATERIALS, GOOD, make_image_and_mask, pick_material
from .captions import write_metadata

MATERIALS = {"metal": "brushed steel", "wood": "wood", "concrete": "concrete"}  # the words of each surface
CLEAN = {"metal": "brushed steel", "wood": "wooden", "concrete": "concrete"}  # "a clean ... surface"
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
ORIENTATIONS = ("horizontal", "vertical", "diagonal")
SIZES = ("small", "medium", "large")
# core-mask area (fraction of the image) terciles per class, measured on 120 images per class at 32 and 64 px
SIZE_TERCILES = {"scratch": (0.05, 0.065), "inclusion": (0.05, 0.077), "crack": (0.045, 0.056), "patch": (0.235, 0.29)}
ELONGATED = 2.0  # principal-axis ratio above which a defect has an orientation


def material_of(seed: int, class_index: int, index: int, materials=DEFAULT_MATERIALS) -> str:
    """The surface of built-in image ``index`` of class ``class_index``: _render's first draw."""
    return pick_material(np.random.default_rng([seed, class_index, index]).random(), tuple(materials))


def _third(v: float) -> int:
    return 0 if v < 0.4 else (2 if v > 0.6 else 1)


def attributes(mask: np.ndarray, class_name: str, material: str) -> Dict[str, str]:
    """``material``, ``defect``, ``position``, ``orientation`` ('' for compact defects), ``size`` of one image."""
    out = {"material": material, "defect": class_name, "position": "", "orientation": "", "size": ""}
    if class_name == GOOD or not mask.any():
        return out
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    out["position"] = POSITIONS[3 * _third(cy) + _third(cx)]
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) if len(xs) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    if evals[0] <= 0 or math.sqrt(evals[1] / max(evals[0], 1e-9)) > ELONGATED:
        ang = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1])) % 180.0
        out["orientation"] = "horizontal" if ang < 22.5 or ang > 157.5 else ("vertical" if 67.5 < ang < 112.5 else "diagonal")
    lo, hi = SIZE_TERCILES.get(class_name, (0.1, 0.2))
    area = float(mask.mean())
    out["size"] = SIZES[0] if area < lo else (SIZES[2] if area > hi else SIZES[1])
    return out


def caption(attrs: Dict[str, str]) -> str:
    """The sentence of :func:`attributes`."""
    surface = MATERIALS[attrs["material"]]
    if attrs["defect"] == GOOD:
        return f"a clean {CLEAN[attrs['material']]} surface without defects"
    words = ["a", attrs["size"], attrs["orientation"], attrs["defect"]]
    return " ".join(w for w in words if w) + f" {place_phrase(attrs['position'])} on {surface}"


def place_phrase(position: str) -> str:
    """How a caption says one of :data:`POSITIONS`: "at the top left", "in the centre"."""
    return "in the centre" if position == "centre" else f"at the {position}"


def captioned_image(class_index: int, index: int, size: int, seed: int, channels: int = 3,
                    materials=DEFAULT_MATERIALS) -> Tuple[np.ndarray, Dict[str, str]]:
    """(uint8 image, attributes) of one built-in image; the image is bit for bit the set's."""
    names = (*CLASSES, GOOD)
    rng = np.random.default_rng([seed, class_index, index])
    image, _, clean = make_image_and_mask(class_index, size, rng, channels, materials)
    return image, attributes(core_mask(image, clean), names[class_index], material_of(seed, class_index, index, materials))


def core_mask(image: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Pixels the defect changed by more than 24 of 255 in some channel: the mask without the faint
    resampling fringe, so positions and sizes mean the same at every image size."""
    return (np.abs(image.astype(np.int16) - clean.astype(np.int16)) > 24).any(axis=-1)


def generate_captioned(size: int = 32, per_class: int = 200, seed: int = 0, channels: int = 3, good: bool = False,
                       materials=DEFAULT_MATERIALS):
    """``(images uint8 (N, H, W, C), labels (N,), class names, captions, attributes)``, class by class,
    the same images as :func:`~difforge.data.builtin.generate_arrays` (plus ``good`` when asked)."""
    names = list(CLASSES) + ([GOOD] if good else [])
    images = np.empty((len(names) * per_class, size, size, channels), dtype=np.uint8)
    attrs: List[Dict[str, str]] = []
    for j, (c, i) in enumerate((c, i) for c in range(len(names)) for i in range(per_class)):
        images[j], a = captioned_image(c, i, size, seed, channels, materials)
        attrs.append(a)
    labels = np.repeat(np.arange(len(names), dtype=np.int64), per_class)
    return images, labels, names, [caption(a) for a in attrs], attrs


def write_builtin_captions(out_dir, size: int, per_class: int, seed: int, channels: int = 3, masks: bool = False,
                           materials=DEFAULT_MATERIALS) -> Path:
    """``metadata.jsonl`` for a set written by :func:`~difforge.data.builtin.write_dataset` (same arguments):
    in ``out_dir`` (or ``out_dir/images`` with ``masks``), one record per image with its caption and attributes."""
    names = list(CLASSES) + ([GOOD] if masks else [])
    root = Path(out_dir) / "images" if masks else Path(out_dir)
    records = []
    for c in range(len(names)):
        for i in range(per_class):
            _, a = captioned_image(c, i, size, seed, channels, materials)
            records.append({"file_name": f"{names[c]}/{names[c]}_{i:05d}.png", "text": caption(a), **a})
    return write_metadata(root, records)


__all__ = ["MATERIALS", "ORIENTATIONS", "POSITIONS", "SIZES", "attributes", "caption", "captioned_image",
           "generate_captioned", "material_of", "place_phrase", "write_builtin_captions"]
