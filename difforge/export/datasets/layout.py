"""What every export format shares: the folder it writes into, file copies, mask PNGs, class ids.

A format is a :class:`Layout` subclass with :meth:`Layout.add` (place one image, return the paths it
wrote, relative to the export's root) and :meth:`Layout.finish` (the index files: ``data.yaml``,
COCO JSON). Layouts write into the export's temporary folder; :mod:`.run` renames it into place.
"""

from __future__ import annotations

import abc
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from .items import Item


class Layout(abc.ABC):
    """One export format. ``classes`` are the defect classes in id order (``good`` is not one)."""

    name = ""
    needs_masks = True  # boxes, polygons or masks come from the masks
    splits = None  # the split names the format has (None: those asked for)

    def __init__(self, root: Path, classes: List[str], options: Dict[str, object]):
        self.root, self.classes, self.options = Path(root), list(classes), dict(options)
        self.ids = {c: i for i, c in enumerate(self.classes)}

    def split_of(self, item: Item, split: str) -> str:
        """The split folder ``item`` goes to (a format without ``val`` maps it, see MVTec)."""
        return split

    @abc.abstractmethod
    def add(self, item: Item, split: str, name: str, mask: np.ndarray, instances: List[np.ndarray]) -> Dict[str, Optional[str]]:
        """Place one image (and its mask / labels) as ``name`` in ``split``; the written paths, relative to the root."""

    def finish(self) -> List[str]:
        """Write the index files; return their paths relative to the root."""
        return []

    # helpers for the formats
    def copy_image(self, item: Item, rel: str) -> str:
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.image, dst)  # the source's bytes: a synthetic image stays bit-identical
        return rel

    def write_mask(self, mask: np.ndarray, rel: str) -> str:
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(dst, format="PNG")
        return rel

    def write_text(self, text: str, rel: str) -> str:
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        return rel


def suffix(item: Item) -> str:
    return item.image.suffix.lower()


__all__ = ["Layout", "suffix"]
