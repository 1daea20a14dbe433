"""``export_dataset``: read a source, check everything, write the format into a hidden temporary
folder beside ``out`` and rename it into place, so ``out`` is either untouched or complete.

Checks come before the first write: the format's needs (masks for every format but ImageFolder,
its optional packages), the classes (``classes`` fixes the id order; a class outside it is an
error), the output folder (not empty: only with ``overwrite``; never the source or a folder holding
it). Each exported image gets a line in ``out/manifest.jsonl``: the source's line (model, seed,
sampler, ... enough to regenerate a synthetic image) with ``image`` / ``mask`` the exported files
and ``split``, ``boxes`` ([x0, y0, x1, y1] per instance), ``label``, ``format`` and ``origin`` added.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ...atomic import write_error
from ...data.manifest import MANIFEST_NAME, validate_line
from ...data.masks import oriented_size, read_mask
from ...data.scan import listing, printable
from ...errors import ConfigError, DataError, UserError
from .coco import SEGMENTATIONS, CocoLayout
from .geometry import box, components, need
from .imagefolder import ImageFolderLayout
from .items import Item, read_source
from .layout import Layout
from .mvtec import MVTecLayout
from .split import assign, parse_split
from .yolo import YoloLayout, YoloSegLayout

FORMATS: Dict[str, type] = {c.name: c for c in (MVTecLayout, YoloLayout, YoloSegLayout, CocoLayout, ImageFolderLayout)}
_NAME = re.compile(r"^[^/\\\x00-\x1f]+$")


@dataclass
class Exported:
    out: Path
    format: str
    images: int
    instances: int
    per_split: Dict[str, int]
    classes: List[str]
    index_files: List[str]


def export_dataset(src, fmt: str, out, *, split: str = "train=0.8,val=0.2", real=None, overwrite: bool = False,
                   seed: int = 0, classes: Optional[Sequence[str]] = None, segmentation: str = "polygon",
                   synthetic_split: str = "train", progress: bool = False) -> Exported:
    """Export ``src`` (and ``real``) as ``fmt`` into ``out``; see the module docstring.

    ``synthetic_split``: ``"train"`` (default) puts every synthetic image into the train split when
    the export also holds real images, so val and test are real images only and a detector's
    scores say how it does on real defects, not on the generator's; ``"all"`` splits synthetic
    images like real ones. Without real images the synthetic ones are split (there is nothing else)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r} (--format); choose {', '.join(FORMATS)}")
    if segmentation not in SEGMENTATIONS:
        raise ConfigError(f"unknown segmentation {segmentation!r} (--segmentation); choose {' or '.join(SEGMENTATIONS)}")
    fractions = parse_split(split)
    out = Path(out).expanduser().absolute()
    sources = [Path(src)] + ([Path(real)] if real is not None else [])
    _check_out(out, sources, overwrite)
    items = read_source(src) + (read_source(real, expect_real=True) if real is not None else [])
    layout_cls = FORMATS[fmt]
    names = _classes(items, classes)
    if layout_cls.needs_masks:
        _check_masks(items, fmt)
        if fmt == "yolo-seg":
            need("skimage.measure", "--format yolo-seg")
    if synthetic_split not in ("train", "all"):
        raise ConfigError(f"synthetic_split={synthetic_split!r} (--synthetic-split) must be train or all")
    splits = assign([f"{it.source}/{it.class_name}" for it in items], fractions, seed)
    if synthetic_split == "train" and any(it.source == "real" for it in items) and "train" in fractions:
        splits = ["train" if it.source != "real" else s for it, s in zip(items, splits)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        layout = layout_cls(tmp, names, {"segmentation": segmentation})
        result = _write(layout, items, splits, out, progress)
        _swap(tmp, out)
        return result
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        clear = write_error(out, e, f"{printable(out)} is unchanged") if isinstance(e, OSError) else None
        if clear is not None:
            raise clear from e
        raise


def _check_out(out: Path, sources: List[Path], overwrite: bool) -> None:
    for s in sources:
        s = s.expanduser().resolve()
        o = out.resolve()
        if o == s or o in s.parents:
            raise UserError(f"--out {printable(out)} holds the source {printable(s)}; export to another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {printable(out)} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {printable(out)} exists and is not empty; add --overwrite to replace it, or give a new folder")


def _classes(items: List[Item], classes: Optional[Sequence[str]]) -> List[str]:
    found = sorted({it.class_name for it in items if not it.good})
    for name in found:
        if not _NAME.match(name) or name in (".", ".."):
            raise DataError(f"class name {name!r} cannot be a folder name; rename the class")
    if classes is None:
        return found
    given = [c.strip() for c in classes if c.strip()]
    if len(set(given)) != len(given):
        raise ConfigError(f"--classes names a class twice: {','.join(given)}")
    unknown = [c for c in found if c not in given]
    if unknown:
        first = next(it for it in items if it.class_name == unknown[0])
        raise DataError(f"class {unknown[0]!r} (of {printable(first.image)}) is not in --classes {','.join(given)}; "
                        f"add it or leave out --classes")
    return given


def _check_masks(items: List[Item], fmt: str) -> None:
    missing = [printable(it.image) for it in items if it.mask is None and not it.good]
    if missing:
        raise DataError(f"{len(missing)} defect image(s) have no mask ({listing(missing, 3, ', ')}); --format {fmt} "
                        f"needs masks (boxes and outlines come from them): export masks with 'difforge synth', "
                        f"or use --format imagefolder")


def _mask_of(item: Item) -> np.ndarray:
    w, h = oriented_size(item.image)
    if item.mask is None:
        return np.zeros((h, w), dtype=bool)
    mask = read_mask(item.mask, (w, h), item.image)
    if item.good and mask.any():
        raise DataError(f"{printable(item.image)} is of class good but its mask {printable(item.mask)} is not empty")
    return mask


def _write(layout: Layout, items: List[Item], splits: List[str], out: Path, progress: bool) -> Exported:
    from tqdm import tqdm

    used: set = set()
    lines, per_split, instances = [], {}, 0
    for item, split in tqdm(list(zip(items, splits)), desc=f"export {layout.name}", unit="img", disable=not progress):
        mask = _mask_of(item)
        comps = components(mask)
        name = _unique(item, used, layout.split_of(item, split))
        paths = layout.add(item, split, name, mask, comps)
        where = layout.split_of(item, split)
        per_split[where] = per_split.get(where, 0) + 1
        instances += len(comps)
        line = dict(item.line)
        line.update(image=paths["image"], mask=paths.get("mask"), size=[int(mask.shape[0]), int(mask.shape[1])],
                    split=where, boxes=[box(c) for c in comps], label=paths.get("label"), format=layout.name,
                    origin={"image": printable(item.image.resolve()),
                            "mask": None if item.mask is None else printable(item.mask.resolve())})
        lines.append(validate_line(line, "export manifest"))
    index = layout.finish()
    text = "".join(json.dumps(ln, separators=(", ", ": ")) + "\n" for ln in lines)
    (layout.root / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return Exported(out, layout.name, len(items), instances, per_split, layout.classes, index)


def _unique(item: Item, used: set, split: str) -> str:
    """A file stem unique in the export: ``syn_<stem>`` / ``real_<stem>``, then the class, then a number."""
    tag = "real" if item.source == "real" else "syn"
    stem = item.stem[len(tag) + 1:] if item.stem.startswith(f"{tag}_") else item.stem  # an export exported again
    for name in (f"{tag}_{stem}", f"{tag}_{item.class_name}_{stem}"):
        if (split, name) not in used:
            break
    k = 1
    while (split, name) in used:
        name, k = f"{tag}_{item.class_name}_{stem}_{k}", k + 1
    used.add((split, name))
    return name


def _swap(tmp: Path, out: Path) -> None:
    """``tmp`` becomes ``out``; an old ``out`` is moved aside first and removed only after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["Exported", "FORMATS", "export_dataset"]
