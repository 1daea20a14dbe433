"""What an export reads: the images of a source folder with their masks, classes and manifest lines.

A source is one of

- a folder with ``manifest.jsonl`` (``difforge synth`` / ``sample`` output, see
  :mod:`difforge.data.manifest`): its lines say everything, paths relative to the folder;
- a folder of images with masks in the pairs or MVTec AD layout (:mod:`difforge.data.masks`),
  each image marked ``source: real`` with a made-up manifest line (method ``real``);
- a plain image folder (class sub-folders or flat), real, without masks: enough for ImageFolder.

Classes: an image of the class ``good`` is defect-free (its mask, if any, must be empty); an image
without a class is of :data:`DEFAULT_CLASS`. Files are not decoded here; masks are read (and
validated) by the writer, one image at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ...data.manifest import make_line, manifest_path, read_manifest
from ...data.masks import GOOD, index_masked, is_mvtec, is_pairs, oriented_size
from ...data.scan import printable, scan_folder
from ...errors import DataError

DEFAULT_CLASS = "defect"
"""The class of an image whose source names none (an unconditional model's output)."""


@dataclass
class Item:
    """One image to export: ``image`` and ``mask`` (None: no mask file) are real paths;
    ``class_name`` never None (see :data:`DEFAULT_CLASS`); ``line`` the source's manifest line."""

    image: Path
    mask: Optional[Path]
    class_name: str
    source: str
    line: Dict[str, Any]
    stem: str

    @property
    def good(self) -> bool:
        return self.class_name == GOOD


def read_source(src, expect_real: bool = False) -> List[Item]:
    """The items of ``src`` (see the module docstring); ``expect_real`` refuses a synthetic manifest (``--real``)."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DataError(f"{printable(src)} is not a folder; give a synth/sample output folder or a folder of images with masks")
    if manifest_path(src).is_file():
        items = _from_manifest(src)
        if expect_real and any(it.source != "real" for it in items):
            raise DataError(f"--real {printable(src)} holds synthetic images (its manifest says so); give it as SRC instead")
        return items
    if is_pairs(src) or is_mvtec(src):
        return _from_masked(src)
    return _from_plain(src)


def _from_manifest(src: Path) -> List[Item]:
    items = []
    for i, line in enumerate(read_manifest(src), 1):
        image = src / line["image"]
        if not image.is_file():
            raise DataError(f"{printable(manifest_path(src))}:{i}: image {line['image']} does not exist")
        mask = src / line["mask"] if line["mask"] else None
        if mask is not None and not mask.is_file():
            raise DataError(f"{printable(manifest_path(src))}:{i}: mask {line['mask']} does not exist")
        line = dict(line)
        bg = line.get("background")
        if bg and not os.path.isabs(bg):  # keep it findable from the export's folder
            line["background"] = str((src / bg).resolve())
        items.append(Item(image, mask, line["class"] or DEFAULT_CLASS, line["source"], line, image.stem))
    if not items:
        raise DataError(f"{printable(manifest_path(src))} lists no image")
    return items


def _real_line(src: Path, image: Path, mask: Optional[Path], class_name: Optional[str]) -> Dict[str, Any]:
    w, h = oriented_size(image)
    rel = lambda p: os.path.relpath(p, src)  # noqa: E731
    return make_line(rel(image), mask=None if mask is None else rel(mask), size=(h, w), seed=0, method="real",
                     source="real", class_name=class_name)


def _folder_class(path: Path, root: Path) -> Optional[str]:
    """The class sub-folder of ``path`` under ``root`` (also when it is the only one), or None for a loose file."""
    parts = path.relative_to(root).parts
    return printable(parts[0]) if len(parts) > 1 else None


def _from_masked(src: Path) -> List[Item]:
    index, mask_paths = index_masked(src)
    items = []
    for path, mask in zip(index.paths, mask_paths):
        if is_pairs(src):
            name = _folder_class(path, src / "images")
        else:  # MVTec AD: the folder is the class even when there is only one
            name = path.parent.name
        items.append(Item(path, mask, name or DEFAULT_CLASS, "real", _real_line(src, path, mask, name), path.stem))
    return items


def _from_plain(src: Path) -> List[Item]:
    index = scan_folder(src)
    items = []
    for path in index.paths:
        name = _folder_class(path, src)
        items.append(Item(path, None, name or DEFAULT_CLASS, "real", _real_line(src, path, None, name), path.stem))
    return items


__all__ = ["DEFAULT_CLASS", "Item", "read_source"]
