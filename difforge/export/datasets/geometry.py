"""From a binary mask to what detectors read: instances, boxes, polygons and COCO run-length codes.

An *instance* is one 8-connected component of the mask (a crack with a branch is one defect, two
separate pits are two). Coordinates are pixel-edge coordinates, as YOLO and COCO use them: pixel
(row r, column c) covers x in [c, c + 1), y in [r, r + 1), so a box is ``[x0, y0, x1, y1]`` with
x1 = last column + 1, and the mask's pixels are those whose centre lies inside a polygon.

Polygons are the outer contour of a component at level 0.5 (scikit-image's marching squares, diagonal
neighbours joined, as the 8-connected components are), which runs along pixel edges with the corners cut.
Holes are not represented (YOLO-seg and COCO polygons have none): a ring becomes a disc; COCO's RLE
(``--segmentation rle``) keeps them exactly. scikit-image and pycocotools are the ``[export]`` extra.
"""

from __future__ import annotations

import importlib
from typing import Dict, List

import numpy as np
from scipy import ndimage

from ...errors import UserError

EXTRA = "pip install 'difforge[export]'"
_EIGHT = np.ones((3, 3), dtype=bool)


def need(module: str, what: str):
    """Import ``module`` or raise the one-line error naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module.split('.')[0]}: {EXTRA}") from None


def components(mask: np.ndarray) -> List[np.ndarray]:
    """The 8-connected components of a bool (H, W) mask as bool masks, in reading order of their first pixel."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    return [labels == k for k in range(1, n + 1)]


def box(component: np.ndarray) -> List[int]:
    """``[x0, y0, x1, y1]`` in pixel-edge coordinates (x1, y1 exclusive) of a non-empty bool mask."""
    rows, cols = np.flatnonzero(component.any(axis=1)), np.flatnonzero(component.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def boxes(mask: np.ndarray) -> List[List[int]]:
    return [box(c) for c in components(mask)]


def polygon(component: np.ndarray, tolerance: float = 0.25) -> np.ndarray:
    """(K, 2) float ``x, y`` pixel-edge coordinates of the outer contour of one component (K >= 3).

    ``tolerance`` (pixels) drops vertices within that distance of the simplified outline
    (Douglas-Peucker), which removes the runs of collinear points marching squares leaves.
    """
    measure = need("skimage.measure", "polygons (--format yolo-seg, coco)")
    padded = np.pad(component, 1).astype(np.float32)
    contours = measure.find_contours(padded, 0.5, fully_connected="high")
    outer = max(contours, key=_area)  # the outer boundary encloses every hole's
    if tolerance > 0:
        outer = measure.approximate_polygon(outer, tolerance)
    if len(outer) > 3 and np.array_equal(outer[0], outer[-1]):
        outer = outer[:-1]
    # (row, col) of padded pixel centres -> x, y pixel edges: centre of pixel c is c + 0.5, minus the pad
    return np.stack([outer[:, 1] - 0.5, outer[:, 0] - 0.5], axis=1)


def _area(contour: np.ndarray) -> float:
    y, x = contour[:, 0], contour[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def rle(mask: np.ndarray) -> Dict[str, object]:
    """COCO compressed RLE of a bool (H, W) mask, JSON-ready (``counts`` as text)."""
    cmask = need("pycocotools.mask", "COCO run-length encoding (--format coco --segmentation rle)")
    code = cmask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in code["size"]], "counts": code["counts"].decode("ascii")}


__all__ = ["EXTRA", "box", "boxes", "components", "need", "polygon", "rle"]
